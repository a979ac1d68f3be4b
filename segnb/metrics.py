"""Segmentation metrics: one confusion matrix first, every figure derived from it.

Definitions (libraries disagree, so here they are):

- ``confusion[t, p]`` counts pixels of true class ``t`` predicted as ``p``;
  pixels whose target is ``ignore_index`` (void, 255) are not counted.
- IoU of class c = TP / (TP + FP + FN), with TP, FP and FN **summed over the
  whole dataset** (not averaged per image).
- mIoU = mean of the per-class IoU over the classes **present**: those with
  TP + FP + FN > 0, i.e. that occur in the targets or the predictions.
  A class that never appears anywhere is left out rather than counted as 0 or 1.
- pixel accuracy = trace / total; mean class accuracy = mean over classes
  present in the targets of TP / (TP + FN); frequency-weighted IoU = sum of
  IoU weighted by each class's share of target pixels; Dice/F1 of class c =
  2 TP / (2 TP + FP + FN).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["confusion_matrix", "ConfusionMeter", "Scores", "normalized_confusion", "scores_from_confusion"]


_local = threading.local()


def _scratch(n: int, device: torch.device) -> torch.Tensor:
    """A reusable int64 buffer for the CPU (fresh 40 MB allocations cost more than the arithmetic)."""
    if device.type != "cpu":
        return torch.empty(n, dtype=torch.long, device=device)
    buffer = getattr(_local, "buffer", None)
    if buffer is None or buffer.numel() < n:
        buffer = _local.buffer = torch.empty(n, dtype=torch.long)
    return buffer[:n]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """``(num_classes, num_classes)`` int64 counts, rows = target, columns = prediction.

    ``pred`` and ``target`` hold class indices of the same shape (any shape).
    One ``bincount`` over ``target * (C + 1) + pred`` does the whole job
    without boolean masking: values outside ``[0, num_classes)`` (the ignore
    index among them) land in rows or a column beyond the classes, which are
    dropped. On a GPU this stays on the device with no host synchronisation (a fixed-size scatter);
    on the CPU numpy's bincount is used, several times faster than torch's there.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape.")
    c = num_classes
    t = target.reshape(-1).long()
    p = pred.reshape(-1).to(device=t.device, dtype=torch.long)
    if ignore_index is not None and 0 <= ignore_index < c:
        t = torch.where(t == ignore_index, c, t)
    if t.device.type == "cpu":
        # A range check is cheap here (numpy: the tensors are on the host already); in the usual
        # case (argmax predictions, a void label such as 255) the index needs one multiply-add.
        t_np, p_np = t.numpy(), p.numpy()
        t_min, t_max = (int(t_np.min()), int(t_np.max())) if t_np.size else (0, 0)
        p_min, p_max = (int(p_np.min()), int(p_np.max())) if p_np.size else (0, 0)
        if t_min >= 0 and p_min >= 0 and p_max <= c and t_max < 1 << 16:
            index = torch.mul(t, c + 1, out=_scratch(t.numel(), t.device)).add_(p)
            counts = np.bincount(index.numpy(), minlength=(c + 1) * (max(t_max, c) + 1))
            return torch.from_numpy(counts[: c * (c + 1)]).reshape(c, c + 1)[:, :c].contiguous()
    t = torch.where(t < 0, c, t).clamp(max=c)  # outside the classes: row C, dropped
    p = torch.where(p < 0, c, p).clamp(max=c)  # column C, dropped
    index = t * (c + 1) + p  # (N,) in [0, (C + 1)**2)
    # A fixed-size scatter, not bincount: bincount reads the index's min and max back to the host.
    counts = torch.zeros((c + 1) ** 2, dtype=torch.long, device=index.device)
    counts.scatter_add_(0, index, torch.ones_like(index))
    return counts.reshape(c + 1, c + 1)[:c, :c].contiguous()


@dataclass
class Scores:
    """Every figure derived from one confusion matrix (plain Python floats and lists)."""

    confusion: list[list[int]]
    iou: list[float | None]
    dice: list[float | None]
    accuracy: list[float | None]
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    fw_iou: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _div(num: torch.Tensor, den: torch.Tensor) -> list[float | None]:
    return [float(n / d) if d > 0 else None for n, d in zip(num.tolist(), den.tolist(), strict=True)]


def scores_from_confusion(confusion: torch.Tensor) -> Scores:
    """Per-class IoU, Dice and accuracy, mIoU, pixel accuracy, mean accuracy, fwIoU (see module doc)."""
    cm = confusion.detach().to("cpu", torch.float64)
    tp = cm.diag()
    target_total = cm.sum(1)  # TP + FN
    pred_total = cm.sum(0)  # TP + FP
    union = target_total + pred_total - tp
    iou = _div(tp, union)
    dice = _div(2 * tp, target_total + pred_total)
    accuracy = _div(tp, target_total)
    present = [v for v in iou if v is not None]
    seen = [v for v in accuracy if v is not None]
    total = float(cm.sum())
    weights = target_total / max(total, 1.0)
    fw = sum(float(w) * v for w, v in zip(weights.tolist(), iou, strict=True) if v is not None)
    return Scores(
        confusion=confusion.detach().cpu().long().tolist(),
        iou=iou,
        dice=dice,
        accuracy=accuracy,
        miou=sum(present) / len(present) if present else float("nan"),
        pixel_accuracy=float(tp.sum()) / total if total else float("nan"),
        mean_accuracy=sum(seen) / len(seen) if seen else float("nan"),
        fw_iou=fw if total else float("nan"),
    )


class ConfusionMeter:
    """A confusion matrix accumulated batch by batch on the predictions' device.

    ``update`` takes logits ``(B, C, H, W)`` or class indices ``(B, H, W)``;
    nothing is copied to the host until :meth:`compute`.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion: torch.Tensor | None = None

    def reset(self) -> None:
        self.confusion = None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(1)
        batch = confusion_matrix(pred, target.to(pred.device), self.num_classes, self.ignore_index)
        self.confusion = batch if self.confusion is None else self.confusion + batch
        return batch

    def compute(self) -> Scores:
        if self.confusion is None:
            self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        return scores_from_confusion(self.confusion)


def normalized_confusion(confusion) -> np.ndarray:
    """Each row divided by its total: row t says where the pixels of class t went (rows of zeros stay 0)."""
    c = np.asarray(confusion, dtype=np.float64)
    totals = c.sum(1, keepdims=True)
    return np.divide(c, totals, out=np.zeros_like(c), where=totals > 0)
