"""Scoring a trained model on a dataset split: :func:`evaluate` and its :class:`EvalReport`.

Runs the model through :class:`segnb.infer.Inference`; the definitions of the scores are in
:mod:`segnb.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from segnb import infer
from segnb.data.base import SegmentationDataset, SegTransform
from segnb.data.preprocess import check_classes
from segnb.device import resolve_device
from segnb.infer import Inference
from segnb.metrics import Scores, confusion_matrix, scores_from_confusion

__all__ = ["EvalReport", "evaluate", "check_classes"]



@dataclass
class EvalReport:
    """Dataset-level scores, a per-class table, per-image IoU (worst first) and the confusion matrix."""

    scores: Scores
    class_names: list[str]
    pixels: list[int]
    per_image: list[dict]

    @property
    def miou(self) -> float:
        return self.scores.miou

    def table(self) -> list[dict]:
        return [
            {"class": name, "iou": iou, "dice": dice, "accuracy": acc, "pixels": px}
            for name, iou, dice, acc, px in zip(self.class_names, self.scores.iou, self.scores.dice,
                                                 self.scores.accuracy, self.pixels, strict=True)
        ]

    def as_dict(self) -> dict:
        return {"miou": self.scores.miou, "pixel_accuracy": self.scores.pixel_accuracy,
                "mean_accuracy": self.scores.mean_accuracy, "fw_iou": self.scores.fw_iou,
                "classes": self.table(), "confusion": self.scores.confusion, "per_image": self.per_image}

    def format(self) -> str:
        width = max(len(n) for n in self.class_names + ["class"])
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'Dice':>6}  {'pixels':>10}"]
        for row in self.table():
            iou = "   -  " if row["iou"] is None else f"{row['iou']:6.3f}"
            dice = "   -  " if row["dice"] is None else f"{row['dice']:6.3f}"
            lines.append(f"{row['class']:<{width}}  {iou}  {dice}  {row['pixels']:>10,}")
        lines.append(f"{'mIoU':<{width}}  {self.scores.miou:6.3f}   pixel accuracy {self.scores.pixel_accuracy:.3f}")
        return "\n".join(lines)


def evaluate(model, data: SegmentationDataset, split: str | None = None, batch_size: int = 8,
             image_size=None, device="auto", precision: str | None = None) -> EvalReport:
    """Evaluate on a split (the validation split by default); see :mod:`segnb.metrics` for definitions.

    The model must predict exactly the dataset's classes: scoring a 12-class model on a 7-class
    dataset would leave out every pixel predicted as classes 7-11, so a mismatch is refused.

    An instance model (Mask R-CNN) gets :class:`segnb.instances.InstanceScores` instead: COCO
    mask AP, AP50 and AP75 (``mask_ap``, ``mask_ap50``, ``mask_ap75``; its ``miou`` is None).
    """
    if infer.is_instance_model(model):
        from segnb.instances.train import evaluate_instances

        return evaluate_instances(model, data, split, batch_size, image_size, device, precision)
    split = split or data.eval_split
    check_classes(model, data)
    total = torch.zeros(data.num_classes, data.num_classes, dtype=torch.long)
    per_image, index = [], 0
    with Inference(model, device=resolve_device(device), precision=precision) as run:
        transform = SegTransform(size=image_size, train=False, ignore_index=data.ignore_index,
                                 mean=run.mean, std=run.std)
        loader = DataLoader(data.torch_split(split, transform), batch_size=batch_size, shuffle=False)
        for images, masks in loader:
            logits = run(images)  # (B, K, H, W)
            check_classes(logits.shape[1], data)
            with torch.inference_mode(False):  # metric buffers stay ordinary tensors
                for p, t in zip(logits.argmax(1).cpu(), masks, strict=True):
                    cm = confusion_matrix(p, t, data.num_classes, data.ignore_index)
                    total += cm
                    s = scores_from_confusion(cm)
                    per_image.append({"index": index, "miou": s.miou, "pixel_accuracy": s.pixel_accuracy})
                    index += 1
    per_image.sort(key=lambda r: (math.isnan(r["miou"]), r["miou"]))
    pixels = total.sum(1).tolist()
    return EvalReport(scores_from_confusion(total), list(data.class_names), pixels, per_image)


