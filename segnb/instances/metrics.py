"""Mask AP (torchmetrics' COCO evaluation) and Panoptic Quality (torchmetrics' ``PanopticQuality``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segnb.errors import InputError

__all__ = ["InstanceScores", "mask_ap", "panoptic_quality"]


@dataclass
class InstanceScores:
    """Scores of an instance model: COCO mask AP (IoU 0.50:0.95), AP50 and AP75 over ``images``.

    ``miou`` is None: no semantic mIoU is measured, and none is pretended.
    """

    mask_ap: float
    mask_ap50: float
    mask_ap75: float
    images: int
    miou: None = None

    def as_dict(self) -> dict:
        return {"mask_ap": self.mask_ap, "mask_ap50": self.mask_ap50, "mask_ap75": self.mask_ap75,
                "images": self.images}

    def format(self) -> str:
        return (f"mask AP {self.mask_ap:.3f}   mask AP50 {self.mask_ap50:.3f}   mask AP75 {self.mask_ap75:.3f}"
                f"   ({self.images} images; COCO mask average precision, not mIoU)")


def _boolean(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    if masks.ndim == 4:  # torchvision's (N, 1, H, W) soft masks
        masks = masks[:, 0]
    return masks > threshold if masks.is_floating_point() else masks.bool()


def mask_ap(predictions: list[dict], targets: list[dict], threshold: float = 0.5) -> InstanceScores:
    """COCO mask AP (IoU 0.50:0.95), AP50 and AP75 with torchmetrics' ``MeanAveragePrecision``.

    ``predictions``: dicts with ``masks`` ((N, 1, H, W) soft or (N, H, W) boolean), ``scores``,
    ``labels``; ``targets``: dicts with ``masks`` (M, H, W) and ``labels``. Needs pycocotools
    (a segnb dependency), which torchmetrics uses for mask IoU.
    """
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(iou_type="segm")
    preds = [{"masks": _boolean(p["masks"], threshold).cpu(), "scores": p["scores"].float().cpu(),
              "labels": p["labels"].cpu()} for p in predictions]
    truth = [{"masks": _boolean(t["masks"]).cpu(), "labels": t["labels"].cpu()} for t in targets]
    metric.update(preds, truth)
    result = metric.compute()

    def value(key):  # torchmetrics gives -1 where nothing could be scored (no objects at all)
        v = float(result[key])
        return float("nan") if v < 0 else v

    return InstanceScores(value("map"), value("map_50"), value("map_75"), len(targets))


def panoptic_quality(pred_semantic, pred_instances, true_semantic, true_instances, things, stuff,
                     ignore_index: int = 255) -> dict:
    """Panoptic Quality (Kirillov et al., 2019): PQ = SQ x RQ, overall and per class, by torchmetrics.

    A segment is one (class, instance id) region; stuff classes have one segment per image.
    Predicted and true segments of the same class match when their IoU exceeds 0.5 (so each
    matches at most once). Over a class: ``SQ`` is the mean IoU of the matches (true positives),
    ``RQ = TP / (TP + FP/2 + FN/2)``. Pixels labelled ``ignore_index`` in the truth are left out;
    a predicted segment that is more than half void is not counted as a false positive; as in the
    COCO panoptic API, pixels of a true segment predicted as nothing are left out of its union.

    All four maps are ``(N, H, W)`` or ``(H, W)`` integer arrays, as :func:`panoptic_merge` and the
    datasets give them: class ids and instance ids (0 on stuff). A pixel of a thing class with
    instance id 0 belongs to no object: it is void. Predicted pixels of any class outside
    ``things`` and ``stuff`` (``panoptic_merge``'s void) are not segments.

    This converts the maps to torchmetrics' ``(N, H, W, 2)`` pairs and runs its
    ``PanopticQuality`` (``return_sq_and_rq``, ``return_per_class``). Returns ``pq``, ``sq``,
    ``rq`` (means over the classes that appear) and ``per_class``
    ``{class_id: {pq, sq, rq, tp, fp, fn}}`` for the classes that appear.
    """
    from torchmetrics.detection import PanopticQuality

    from segnb.instances.panoptic import class_ids

    things, stuff = sorted(set(class_ids(things, "things"))), sorted(set(class_ids(stuff, "stuff")))
    if set(things) & set(stuff) or not things + stuff:
        raise InputError(f"things {things} and stuff {stuff} must be two disjoint lists of class ids, not both empty.")
    if ignore_index in things or ignore_index in stuff:
        raise InputError(f"ignore_index {ignore_index} is also a class of things or stuff; pick another value.")
    metric = PanopticQuality(things=set(things), stuffs=set(stuff), return_sq_and_rq=True, return_per_class=True,
                             allow_unknown_preds_category=True)
    predicted = _pairs(pred_semantic, pred_instances, things, ignore_index)
    truth = _pairs(true_semantic, true_instances, things, ignore_index)
    if predicted.shape != truth.shape:
        raise InputError(f"the predicted maps are {tuple(predicted.shape[:-1])} but the true maps "
                         f"{tuple(truth.shape[:-1])}: score maps of the same images at the same size.")
    metric.update(predicted, truth)
    values = metric.compute().reshape(-1, 3)  # (classes, [pq, sq, rq]): things, then stuff, each sorted
    counts = [metric.true_positives, metric.false_positives, metric.false_negatives]
    per_class = {}
    for k, c in enumerate(things + stuff):
        tp, fp, fn = (int(n[k]) for n in counts)
        if tp + fp + fn:  # a class that appears nowhere is left out of the means
            pq, sq, rq = (float(v) for v in values[k])
            per_class[c] = {"pq": pq, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}
    mean = {k: float(np.mean([v[k] for v in per_class.values()])) if per_class else float("nan")
            for k in ("pq", "sq", "rq")}
    return {**mean, "per_class": per_class}


def _pairs(semantic, instances, things, void: int) -> torch.Tensor:
    """Our maps as torchmetrics' (N, H, W, 2) ``(class, instance)`` pairs: instance 0 on stuff,
    and a thing pixel with no instance id becomes ``void``."""
    from segnb.instances.panoptic import label_map

    semantic = torch.as_tensor(label_map(semantic, "a class map", batched=True))
    instances = torch.as_tensor(label_map(instances, "an instance map", batched=True))
    if semantic.ndim == 2:
        semantic, instances = semantic[None], instances[None]
    if semantic.shape != instances.shape:
        raise InputError(f"class map {tuple(semantic.shape)} and instance map {tuple(instances.shape)} differ.")
    is_thing = torch.isin(semantic, torch.tensor(things, dtype=torch.long))
    semantic = torch.where(is_thing & (instances == 0), void, semantic)
    return torch.stack([semantic, torch.where(is_thing, instances, 0)], -1)
