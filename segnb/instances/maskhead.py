"""What Mask R-CNN's mask head sees and says, taken from hooks on the model (nothing re-implemented).

For each detection the mask head gets a 14x14 RoIAlign crop of the FPN features inside the
box and predicts 28x28 logits per class. During training, the target is the object's mask
RoIAligned into the same box at 28x28; at inference, the 28x28 sigmoid of the detected class
is resized into the box and thresholded (0.5). A 28x28 grid stretched over a 100-pixel object
has cells of 3.6 pixels, so large objects get blocky, rounded-off outlines:
:func:`resolution_error` measures that with a perfect 28x28 mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segnb.infer import Inference

__all__ = ["MaskHeadView", "mask_head_view", "resolution_error", "paste", "mask_target"]


def mask_target(mask, box, size: int = 28) -> np.ndarray:
    """The training target of the mask head: ``mask`` (H, W) RoIAligned into ``box`` at size x size.

    torchvision's own ``project_masks_on_boxes`` (the function its loss uses).
    """
    from torchvision.models.detection.roi_heads import project_masks_on_boxes

    masks = torch.as_tensor(np.asarray(mask), dtype=torch.float32)[None]
    boxes = torch.as_tensor(np.asarray(box), dtype=torch.float32).reshape(1, 4)
    return project_masks_on_boxes(masks, boxes, torch.zeros(1, dtype=torch.long), size)[0].numpy()


def paste(soft28, box, shape) -> np.ndarray:
    """A 28x28 soft mask resized into ``box`` of an image of ``shape`` (torchvision's paste)."""
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    masks = torch.as_tensor(np.asarray(soft28), dtype=torch.float32).reshape(1, 1, *np.shape(soft28))
    boxes = torch.as_tensor(np.asarray(box), dtype=torch.float32).reshape(1, 4)
    return paste_masks_in_image(masks, boxes, tuple(shape))[0, 0].numpy()


def resolution_error(mask, size: int = 28, confident: bool = True) -> dict:
    """How far an object's outline moves after a round trip through a size x size mask (pixels).

    The object's own mask becomes the 28x28 target (a perfect mask head), is pasted back into
    its box with torchvision's paste and thresholded at 0.5. ``confident=True`` first rounds the
    28x28 mask to 0/1, as a well-trained head's sharp logits do: each 28x28 cell then covers
    ``box / 28`` pixels and the outline becomes a staircase of that step. Returns ``mean``
    (changed pixels per boundary pixel) and ``max`` (the farthest changed pixel from the true
    outline, in pixels).
    """
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    box = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    soft = mask_target(mask, box, size)
    if confident:
        soft = (soft > 0.5).astype(np.float32)
    changed = (paste(soft, box, mask.shape) > 0.5) ^ mask
    boundary = mask ^ ndimage.binary_erosion(mask)
    distance = np.maximum(ndimage.distance_transform_edt(~mask), ndimage.distance_transform_edt(mask))
    return {"mean": float(np.count_nonzero(changed) / max(np.count_nonzero(boundary), 1)),
            "max": float(distance[changed].max()) if changed.any() else 0.0,
            "cell": float(max(box[2] - box[0], box[3] - box[1]) / size)}


@dataclass
class MaskHeadView:
    """One detection as the mask head handles it (arrays are numpy).

    ``crop``: the image inside the box, RoIAligned to ``crop_size`` (what the features describe);
    ``target``: the 28x28 training target from the best-matching true object (None without one);
    ``logits``: the 28x28 logits of the detected class, from a hook on ``mask_predictor``;
    ``soft``: their sigmoid; ``pasted_soft``: ``soft`` resized into the box in the image;
    ``truth``: the matched true mask in the image (None without one).
    """

    image: np.ndarray
    box: np.ndarray
    label: int
    score: float
    crop: np.ndarray
    logits: np.ndarray
    soft: np.ndarray
    pasted_soft: np.ndarray
    target: np.ndarray | None
    truth: np.ndarray | None

    def pasted(self, threshold: float = 0.5) -> np.ndarray:
        """The mask in the image at ``threshold`` (torchvision uses 0.5)."""
        return self.pasted_soft > threshold

    def iou(self, threshold: float = 0.5) -> float | None:
        """IoU of the pasted mask at ``threshold`` with the matched true object."""
        if self.truth is None:
            return None
        pred = self.pasted(threshold)
        union = np.count_nonzero(pred | self.truth)
        return float(np.count_nonzero(pred & self.truth) / union) if union else 0.0


def mask_head_view(model, image: np.ndarray, detection: int = 0, truth_masks=None, crop_size: int = 112,
                   score_threshold: float = 0.0) -> list[MaskHeadView] | MaskHeadView:
    """Run ``model`` (a segnb Mask R-CNN) on one uint8 image and return the view of one detection.

    ``detection`` indexes the detections, most confident first (``None``: all of them).
    ``truth_masks`` (M, H, W) gives the 28x28 target and the IoU. Hooks on the detector's
    ``transform`` (the resize) and ``roi_heads.mask_predictor`` (the 28x28 logits) record what
    the model computed; they are removed afterwards.
    """
    from torchvision.ops import box_iou, roi_align

    captured = {}
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    # Through segnb's one home for inference: eval mode and back, and, while fit() trains the
    # model in another thread, a copy of its weights (the hooks go on that copy, never on the
    # model being trained).
    with Inference(model) as run:
        detector = run.module.detector
        hooks = [
            detector.roi_heads.mask_predictor.register_forward_hook(
                lambda m, i, o: captured.__setitem__("logits", o)),
            detector.transform.register_forward_hook(
                lambda m, i, o: captured.__setitem__("sizes", o[0].image_sizes)),
        ]
        try:
            (out,) = run(run.batch(image))
        finally:
            for hook in hooks:
                hook.remove()
    kept = torch.nonzero(out["scores"] >= score_threshold).flatten().cpu()  # indices into the detections
    boxes, labels, scores = out["boxes"].cpu()[kept], out["labels"].cpu()[kept], out["scores"].cpu()[kept]
    pasted = out["masks"].cpu()[kept][:, 0].numpy()
    if len(boxes) == 0:
        raise ValueError("The model found no object in this image (at this score threshold): nothing to show.")
    logits_all = captured["logits"].cpu()[kept]  # (N, T + 1, 28, 28), in torchvision's detection order
    detector_label = model.detector_labels(labels)
    h, w = image.shape[:2]
    crops = roi_align(x[None], [boxes], crop_size, aligned=True)  # (N, 3, s, s)
    truth = None if truth_masks is None else np.asarray(truth_masks, bool).reshape(-1, h, w)
    views = []
    for k in range(len(boxes)) if detection is None else [detection]:
        if not 0 <= k < len(boxes):
            raise IndexError(f"detection {k}: the model made {len(boxes)} detections.")
        logits = logits_all[k, detector_label[k]].numpy()
        target = true_mask = None
        if truth is not None and len(truth):
            true_boxes = torch.tensor([_box(m) for m in truth], dtype=torch.float32)
            best = int(box_iou(boxes[k : k + 1], true_boxes)[0].argmax())
            true_mask = truth[best]
            target = mask_target(true_mask, boxes[k].numpy())
        crop = (crops[k].permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.uint8)
        views.append(MaskHeadView(np.asarray(image), boxes[k].numpy(), int(labels[k]), float(scores[k]), crop,
                                  logits, 1 / (1 + np.exp(-logits)), pasted[k], target, true_mask))
    return views if detection is None else views[0]


def _box(mask: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if len(rows) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
