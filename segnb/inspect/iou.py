"""IoU reports: per-class table, row-normalised confusion, IoU by object size, boundary IoU.

IoU favours large objects: one missed small object barely moves a class's
IoU. :func:`iou_by_object_size` shows it by scoring each ground-truth object
(a connected component) on its own and binning the objects by area.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from segnb.metrics import normalized_confusion, scores_from_confusion

__all__ = ["per_class_table", "normalized_confusion", "iou_by_object_size", "boundary_iou", "SIZE_BINS"]

# Areas in pixels: COCO's small / medium / large split, with the smallest split again.
SIZE_BINS = (0, 64, 32**2, 96**2, np.inf)


def per_class_table(confusion, class_names: list[str]) -> list[dict]:
    """One row per class: IoU, Dice, accuracy, target pixels, predicted pixels."""
    confusion = np.asarray(confusion)
    scores = scores_from_confusion(torch.as_tensor(confusion))
    return [
        {"class": name, "iou": iou, "dice": dice, "accuracy": acc,
         "pixels": int(confusion[i].sum()), "predicted": int(confusion[:, i].sum())}
        for i, (name, iou, dice, acc) in enumerate(zip(class_names, scores.iou, scores.dice, scores.accuracy,
                                                       strict=True))
    ]


def iou_by_object_size(preds, targets, classes, bins=SIZE_BINS, margin: int = 2,
                       ignore_index: int = 255) -> list[dict]:
    """Mean IoU of ground-truth objects, binned by their area.

    An object is a connected component (8-connectivity) of one class in a target
    mask. Its IoU is |object and predicted-as-class| / |object or (predicted-as-class
    within ``margin`` pixels of the object)|, so a missed object scores 0 and a
    prediction spilling around it is penalised, while other objects of the same class
    elsewhere in the image do not count against it.

    Args:
        preds, targets: (H, W) arrays or lists of them.
        classes: the class indices to score (e.g. the "thing" classes).
    """
    if isinstance(preds, np.ndarray) and preds.ndim == 2:
        preds, targets = [preds], [targets]
    structure = np.ones((3, 3), bool)
    edges = list(bins)
    per_bin: list[list[float]] = [[] for _ in range(len(edges) - 1)]
    for pred, target in zip(preds, targets, strict=True):
        pred, target = np.asarray(pred), np.asarray(target)
        for cls in classes:
            components, count = ndimage.label(target == cls, structure=structure)
            if count == 0:
                continue
            predicted = (pred == cls) & (target != ignore_index)
            slices = ndimage.find_objects(components)
            for label, box in enumerate(slices, start=1):
                grown = tuple(slice(max(0, s.start - margin - 1), s.stop + margin + 1) for s in box)
                obj = components[grown] == label
                near = ndimage.binary_dilation(obj, iterations=margin) if margin else obj
                p = predicted[grown] & near
                inter = np.logical_and(obj, p).sum()
                union = np.logical_or(obj, p).sum()
                area = int(obj.sum())
                b = int(np.searchsorted(edges, area, side="right") - 1)
                per_bin[min(max(b, 0), len(per_bin) - 1)].append(inter / union if union else 0.0)
    return [
        {"min_area": edges[i], "max_area": edges[i + 1], "objects": len(values),
         "mean_iou": float(np.mean(values)) if values else None}
        for i, values in enumerate(per_bin)
    ]


def _band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` of its contour (mask minus its erosion)."""
    eroded = ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return mask & ~eroded


def boundary_iou(pred, target, num_classes: int, width: int = 2, ignore_index: int = 255) -> list[float | None]:
    """Boundary IoU per class (Cheng et al., CVPR 2021): IoU restricted to bands along the contours."""
    pred, target = np.asarray(pred), np.asarray(target)
    valid = target != ignore_index
    result: list[float | None] = []
    for cls in range(num_classes):
        g = _band(target == cls, width) & valid
        p = _band(pred == cls, width) & valid
        union = np.logical_or(g, p).sum()
        result.append(float(np.logical_and(g, p).sum() / union) if union else None)
    return result
