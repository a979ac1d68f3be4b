"""Inspection as pure functions: arrays in, arrays out, no widgets.

- attention: :func:`attention_maps` (per layer and head), CLS and query maps, :func:`rollout`.
- features: :func:`stage_features`, :func:`grad_cam` for CNN backbones.
- upsampling: :func:`toy_upsample`, :func:`conv1d_matrix`, :func:`conv_transpose1d_matrix`,
  :func:`overlap_map`, :func:`checkerboard_score`, :func:`decoder_activations`.
- soft masks: :func:`soft_mask`, :func:`entropy_map`, :func:`margin_map`, :func:`calibration`,
  :func:`roi_soft_mask`.
- IoU reports: :func:`per_class_table`, :func:`normalized_confusion`, :func:`iou_by_object_size`,
  :func:`boundary_iou`.
"""

from segnb.inspect.attention import AttentionMaps, attention_maps, find_vit, rollout, upsample_map
from segnb.inspect.features import grad_cam, stage_features
from segnb.inspect.iou import (
    boundary_iou,
    iou_by_object_size,
    normalized_confusion,
    per_class_table,
)
from segnb.inspect.softmask import (
    Calibration,
    calibration,
    entropy_map,
    hard_mask,
    margin_map,
    roi_soft_mask,
    soft_mask,
    threshold_mask,
)
from segnb.inspect.upsampling import (
    checkerboard_score,
    conv1d_matrix,
    conv_transpose1d_matrix,
    decoder_activations,
    overlap_map,
    toy_upsample,
)

__all__ = [
    "AttentionMaps", "Calibration", "attention_maps", "boundary_iou", "calibration", "checkerboard_score",
    "conv1d_matrix", "conv_transpose1d_matrix", "decoder_activations", "entropy_map", "find_vit", "grad_cam",
    "hard_mask", "iou_by_object_size", "margin_map", "normalized_confusion", "overlap_map", "per_class_table",
    "roi_soft_mask", "rollout", "soft_mask", "stage_features", "threshold_mask", "toy_upsample", "upsample_map",
]
