"""Mask AP (torchmetrics' COCO evaluation) and Panoptic Quality (ours, checked against torchmetrics)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["InstanceScores", "mask_ap", "panoptic_quality"]


@dataclass
class InstanceScores:
    """Validation scores of an instance model. ``miou`` is None: no semantic mIoU is measured."""

    mask_ap: float
    mask_ap50: float
    mask_ap75: float
    images: int
    miou: None = None


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
    """Panoptic Quality (Kirillov et al., 2019): PQ = SQ x RQ, overall and per class.

    A segment is one (class, instance id) region; stuff classes have one segment per image.
    Predicted and true segments of the same class match when their IoU exceeds 0.5 (so each
    matches at most once). Over a class: ``SQ`` is the mean IoU of the matches (true positives),
    ``RQ = TP / (TP + FP/2 + FN/2)``. Pixels labelled ``ignore_index`` in the truth are left out;
    a predicted segment that is more than half void is not counted as a false positive.

    All four maps are ``(N, H, W)`` or ``(H, W)`` integer arrays. Returns ``pq``, ``sq``, ``rq``
    (means over the classes that appear) and ``per_class`` ``{class_id: {pq, sq, rq, tp, fp, fn}}``.
    """
    ps, pi, ts, ti = (np.asarray(a) for a in (pred_semantic, pred_instances, true_semantic, true_instances))
    if ps.ndim == 2:
        ps, pi, ts, ti = ps[None], pi[None], ts[None], ti[None]
    things, stuff = list(things), list(stuff)
    stats = {c: {"tp": 0, "fp": 0, "fn": 0, "iou": 0.0} for c in things + stuff}
    for p_sem, p_ins, t_sem, t_ins in zip(ps, pi, ts, ti, strict=True):
        void = t_sem == ignore_index
        p_key = _segments(p_sem, p_ins, things, stuff)
        t_key = _segments(t_sem, t_ins, things, stuff)
        for c in stats:
            preds = [k for k in np.unique(p_key) if k >= 0 and k // 65536 == c]
            trues = [k for k in np.unique(t_key) if k >= 0 and k // 65536 == c]
            matched_p, matched_t = set(), set()
            for t in trues:
                t_region = t_key == t
                for p in preds:
                    if p in matched_p:
                        continue
                    p_region = (p_key == p) & ~void
                    inter = np.count_nonzero(t_region & p_region)
                    if inter == 0:
                        continue
                    iou = inter / np.count_nonzero(t_region | p_region)
                    if iou > 0.5:
                        stats[c]["tp"] += 1
                        stats[c]["iou"] += iou
                        matched_p.add(p)
                        matched_t.add(t)
                        break
            stats[c]["fn"] += len(trues) - len(matched_t)
            for p in preds:
                if p in matched_p:
                    continue
                p_region = p_key == p
                if np.count_nonzero(p_region & void) > 0.5 * np.count_nonzero(p_region):
                    continue  # mostly on void: neither right nor wrong
                stats[c]["fp"] += 1
    per_class = {}
    for c, s in stats.items():
        if s["tp"] + s["fp"] + s["fn"] == 0:
            continue  # the class appears nowhere: left out of the means
        sq = s["iou"] / s["tp"] if s["tp"] else 0.0
        rq = s["tp"] / (s["tp"] + 0.5 * s["fp"] + 0.5 * s["fn"])
        per_class[c] = {"pq": sq * rq, "sq": sq, "rq": rq, "tp": s["tp"], "fp": s["fp"], "fn": s["fn"]}
    mean = {k: float(np.mean([v[k] for v in per_class.values()])) if per_class else float("nan")
            for k in ("pq", "sq", "rq")}
    return {**mean, "per_class": per_class}


def _segments(semantic: np.ndarray, instances: np.ndarray, things, stuff) -> np.ndarray:
    """One integer key per segment: ``class * 65536 + id`` (id 0 for stuff); -1 elsewhere."""
    key = np.full(semantic.shape, -1, np.int64)
    for c in stuff:
        key[semantic == c] = c * 65536
    for c in things:
        region = (semantic == c) & (instances > 0)
        key[region] = c * 65536 + instances[region]
    return key
