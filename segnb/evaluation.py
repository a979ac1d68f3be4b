"""Scoring a trained model on a dataset split: :func:`evaluate`, its :class:`EvalReport`, and the
:class:`Scorer` that validation in :func:`segnb.fit` uses too.

Protocols (``protocol=``):

- ``"full"`` (the default, the field's standard: MMSegmentation, the Cityscapes and CamVid
  papers): the model runs at its input scale, its logits are upsampled bilinearly to each
  label's original size, and the argmax is scored there. Images of different sizes are each
  scored at their own size.
- ``"resized"``: the labels are resized (nearest) to the size the model runs at, and scored
  there. Cheaper, but thin and small classes score differently: not comparable with papers.

Runs the model through :class:`segnb.infer.Inference` and :mod:`segnb.tiling`; the
definitions of the scores are in :mod:`segnb.metrics`.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segnb import infer, tiling
from segnb.data.base import SegmentationDataset
from segnb.data.preprocess import check_classes, normalize, resize_image, resize_mask
from segnb.device import resolve_device
from segnb.errors import SegnbError
from segnb.infer import Inference
from segnb.metrics import Scores, scores_from_confusion
from segnb.models.io import training_input

__all__ = ["EvalReport", "evaluate", "check_classes", "Scorer", "PROTOCOLS", "check_protocol", "PROTOCOL_TEXT",
           "score_batches", "FullSizeLabels", "collate_eval", "with_original_labels"]

PROTOCOLS = ("full", "resized")
PROTOCOL_TEXT = {
    "full": "full resolution: logits upsampled bilinearly to each label's original size, then argmax",
    "resized": "resized: labels resized (nearest) to the model's input size; not comparable with papers",
}


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise SegnbError(f"protocol must be 'full' (score at each label's own size, the standard) or 'resized' "
                         f"(score at the model's input size), got {protocol!r}.")
    return protocol


@dataclass
class EvalReport:
    """Dataset-level scores, a per-class table, per-image IoU (worst first) and the confusion matrix.

    ``protocol`` says how the numbers were made (see :data:`PROTOCOL_TEXT`); ``input`` how the
    model ran (its input size, tiles, TTA)."""

    scores: Scores
    class_names: list[str]
    pixels: list[int]
    per_image: list[dict]
    protocol: str = "full"
    input: dict = field(default_factory=dict)

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
        return {"protocol": self.protocol, "protocol_text": PROTOCOL_TEXT[self.protocol], "input": self.input,
                "miou": self.scores.miou, "pixel_accuracy": self.scores.pixel_accuracy,
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
        lines.append(f"protocol: {PROTOCOL_TEXT[self.protocol]}")
        return "\n".join(lines)


class Scorer:
    """One confusion matrix over a dataset, accumulated on the device, plus per-image scores.

    :meth:`update` takes logits (or probabilities) ``(B, K, h, w)`` and labels: one tensor
    ``(B, H, W)`` or a list of ``(H, W)`` tensors of any sizes. Scores at a label size other
    than ``(h, w)`` are upsampled bilinearly to it first (the full-resolution protocol). Images
    with labels of one size are scored together: one ``bincount`` per group gives every image's
    confusion matrix at once; nothing reaches the host until :meth:`confusion_matrix` or
    :meth:`per_image`. With ``loss_fn`` the loss (on the logits at the labels' size) is summed too.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, per_image: bool = False,
                 loss_fn=None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.keep_per_image, self.loss_fn = per_image, loss_fn
        self.confusion: torch.Tensor | None = None
        self.loss_sum: torch.Tensor | None = None  # (sum of loss * images, images), float64
        self._per_image: list[torch.Tensor] = []  # (B, 2): mIoU and pixel accuracy
        self._order: list[torch.Tensor] = []
        self._seen = 0  # images so far: their default index

    @torch.no_grad()
    def update(self, scores: torch.Tensor, labels, index: torch.Tensor | None = None) -> None:
        labels = list(labels) if isinstance(labels, (list, tuple)) else labels
        if isinstance(labels, torch.Tensor):
            groups = {tuple(labels.shape[-2:]): list(range(len(labels)))}
        else:
            groups = {}
            for i, y in enumerate(labels):
                groups.setdefault(tuple(y.shape[-2:]), []).append(i)
        if index is None:
            index = torch.arange(self._seen, self._seen + len(labels))
        self._seen += len(labels)
        for size, members in groups.items():
            pick = torch.tensor(members, device=scores.device)
            if isinstance(labels, torch.Tensor):
                target = labels.to(scores.device)
            else:
                target = torch.stack([labels[i] for i in members]).to(scores.device)
            chunk = max(1, tiling._MAX_ELEMENTS // max(1, scores.shape[1] * size[0] * size[1]))
            for start in range(0, len(members), chunk):
                part = pick[start:start + chunk]
                logits = tiling.upsample_logits(scores.index_select(0, part).float(), size)
                y = target[start:start + chunk].long()
                self._add(logits.argmax(1), y)
                if self.loss_fn is not None:
                    self._add_loss(logits, y)
                if self.keep_per_image:
                    self._order.append(index[part.cpu()])

    def _add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        c, b = self.num_classes, len(pred)
        t = target.reshape(b, -1)
        if self.ignore_index is not None:
            t = torch.where(t == self.ignore_index, c, t)
        t = torch.where((t < 0) | (t > c), c, t)  # outside the classes: row C, dropped
        p = pred.reshape(b, -1).clamp(0, c)
        image = torch.arange(b, device=pred.device)[:, None] * (c + 1) ** 2
        index = (image + t * (c + 1) + p).reshape(-1)
        if index.device.type == "cpu":  # numpy's bincount is several times faster than torch's on the CPU
            counts = torch.from_numpy(np.bincount(index.numpy(), minlength=b * (c + 1) ** 2))
        else:
            counts = torch.bincount(index, minlength=b * (c + 1) ** 2)
        per = counts.reshape(b, c + 1, c + 1)[:, :c, :c]  # (B, C, C): one confusion matrix per image
        total = per.sum(0)
        self.confusion = total if self.confusion is None else self.confusion + total
        if self.keep_per_image:
            tp = per.diagonal(dim1=1, dim2=2).double()
            union = per.sum(1) + per.sum(2) - per.diagonal(dim1=1, dim2=2)
            present = union > 0
            iou = torch.where(present, tp / union.clamp(min=1), 0.0)
            miou = torch.where(present.any(1), iou.sum(1) / present.sum(1).clamp(min=1), float("nan"))
            pixels = per.sum((1, 2))
            accuracy = torch.where(pixels > 0, tp.sum(1) / pixels.clamp(min=1), float("nan"))
            self._per_image.append(torch.stack([miou, accuracy], 1))

    def _add_loss(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        loss = self.loss_fn(logits, target).double()
        counted = (target != self.ignore_index).any()  # an all-void batch has no loss
        weight = counted.double() * len(target)  # on the device: no sync
        add = torch.stack([torch.where(counted, loss, 0.0) * weight, weight])
        self.loss_sum = add if self.loss_sum is None else self.loss_sum + add

    def confusion_matrix(self, device=None) -> torch.Tensor:
        if self.confusion is None:
            return torch.zeros(self.num_classes, self.num_classes, dtype=torch.long, device=device)
        return self.confusion if device is None else self.confusion.to(device)

    def per_image(self) -> list[dict]:
        """``{"index", "miou", "pixel_accuracy"}`` for every image, worst mIoU first."""
        if not self._per_image:
            return []
        values = torch.cat(self._per_image).cpu().tolist()
        order = torch.cat(self._order).tolist()
        rows = [{"index": int(i), "miou": m, "pixel_accuracy": a} for i, (m, a) in zip(order, values, strict=True)]
        rows.sort(key=lambda r: (math.isnan(r["miou"]), r["miou"], r["index"]))
        return rows


# ---------------------------------------------------------------- validation inside fit()


@torch.no_grad()
def score_batches(run, batches, scorer: Scorer) -> Scorer:
    """Run ``batches`` of ``(images, labels)`` through ``run`` (an :class:`Inference`) into ``scorer``.

    ``images``: one tensor ``(B, 3, h, w)`` or a list of ``(3, h, w)`` of different sizes (run
    by size); ``labels``: a tensor ``(B, H, W)`` or a list of ``(H, W)``, at any size (see
    :meth:`Scorer.update`). This is :func:`segnb.fit`'s validation pass."""
    for images, labels in batches:
        if isinstance(images, torch.Tensor):
            groups = [(images, labels, None)]
        else:
            by_size: dict[tuple, list[int]] = {}
            for i, x in enumerate(images):
                by_size.setdefault(tuple(x.shape), []).append(i)
            groups = [(torch.stack([images[i] for i in members]), [labels[i] for i in members], members)
                      for members in by_size.values()]
        for x, y, _ in groups:
            logits = run(x)
            with torch.inference_mode(False):  # metric buffers stay ordinary tensors
                scorer.update(logits, y if isinstance(y, list) else y.to(logits.device))
    return scorer


class FullSizeLabels:
    """A validation transform: the image as ``transform`` makes it, the label at its original size."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image, mask):
        x, _ = self.transform(image, mask[:1, :1])  # the image path alone (the label is not resized)
        return x, torch.from_numpy(np.ascontiguousarray(mask)).long()

    def __getattr__(self, name):
        return getattr(self.transform, name)


def collate_eval(items):
    """``(images, labels)``: each stacked when all have one size, else a list."""
    images, labels = [x for x, _ in items], [y for _, y in items]
    if len({tuple(x.shape) for x in images}) == 1:
        images = torch.stack(images)
    if len({tuple(y.shape) for y in labels}) == 1:
        labels = torch.stack(labels)
    return images, labels


class _OriginalLabels:
    """Batches of a :class:`segnb.data.cache.CachedBatches` (validation: in order, not padded), each
    with its images' labels at their original size. The labels stay in host memory, compact (uint8, or
    int16 above 255 classes), and go to the device batch by batch."""

    def __init__(self, batches, stored: list[torch.Tensor]):
        self.batches, self.stored = batches, stored

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        order = self.batches._order()
        size = self.batches.batch_size
        for start, (images, _) in zip(range(0, len(order), size), self.batches, strict=False):
            picked = [self.stored[int(i)] for i in order[start:start + size]]
            if len({tuple(y.shape) for y in picked}) == 1:
                labels = self.batches.decoded.labels(torch.stack(picked).to(images.device, non_blocking=True))
            else:
                labels = [self.batches.decoded.labels(y.to(images.device)) for y in picked]
            yield images, labels


def with_original_labels(batches, split):
    """Validation batches of a decoded cache, with the labels at their original size.

    When the cache resized the images (``image_size``), the original labels are read once
    from ``split`` and kept, compact, beside it (``N x H x W`` bytes, uint8); when it did not, the
    cached labels are the original ones and ``batches`` is returned as it is."""
    from segnb.data.cache import _store_mask, mask_dtype

    decoded = batches.decoded
    cached_size = tuple(decoded.masks.shape[-2:])
    key = (decoded.ignore_index, decoded.num_classes)
    store = _ORIGINALS.setdefault(split, {})
    if key not in store:
        dtype = mask_dtype(decoded.num_classes)
        store[key] = [_store_mask(split[i][1], decoded.ignore_index, dtype) for i in range(len(split))]
    stored = store[key]
    if all(tuple(y.shape) == cached_size for y in stored):
        return batches
    return _OriginalLabels(batches, stored)


_ORIGINALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # split -> {(ignore, classes): labels}


class _EvalSplit(Dataset):
    """A split as (image at the size the model runs at, label at its own size or at that size)."""

    def __init__(self, split, record, image_size, tile, protocol: str, mean, std):
        self.split, self.record, self.image_size, self.tile = split, record, image_size, tile
        self.protocol, self.mean, self.std = protocol, mean, std

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image, mask = self.split[index]
        size, tile = tiling.plan(self.record, image.shape[:2], self.image_size, self.tile)
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        if tuple(x.shape[-2:]) != size:
            x = resize_image(x, size)
        if self.protocol == "resized" and tuple(mask.shape) != size:
            mask = resize_mask(mask, size)
        return index, normalize(x, self.mean, self.std), torch.from_numpy(np.ascontiguousarray(mask)), tile


def _collate(items):
    return items


def evaluate(model, data: SegmentationDataset, split: str | None = None, batch_size: int = 8,
             image_size=None, device="auto", precision: str | None = None, protocol: str = "full",
             tile=None, overlap: float = 0.25, tta=None) -> EvalReport:
    """Evaluate on a split (the validation split by default); see :mod:`segnb.metrics` for definitions.

    Args:
        protocol: ``"full"`` (default): logits upsampled bilinearly to each label's original size,
            argmax, scored there, as MMSegmentation and the papers do. ``"resized"``: labels
            resized (nearest) to the model's input size and scored there.
        image_size: the size the model runs at. Default: the one recorded in training
            (:class:`segnb.models.io.TrainingInput`); another one gets a one-line note.
        tile, overlap: sliding-window inference (see :func:`segnb.tiling.sliding_window`);
            automatic when an image is more than twice the training size; ``tile=False`` never.
        tta: test-time augmentation, e.g. ``("hflip",)`` or ``("hflip", 0.75, 1.0, 1.25)``.

    The model must predict exactly the dataset's classes: scoring a 12-class model on a 7-class
    dataset would leave out every pixel predicted as classes 7-11, so a mismatch is refused.

    An instance model (Mask R-CNN) gets :class:`segnb.instances.InstanceScores` instead: COCO
    mask AP, AP50 and AP75 (``mask_ap``, ``mask_ap50``, ``mask_ap75``; its ``miou`` is None).
    """
    check_classes(model, data)  # instance models too: their labels are the dataset's class ids
    if infer.is_instance_model(model):  # the model scores itself (segnb.infer.InstanceModel)
        return model.evaluate_split(data, split, batch_size, image_size, device, precision)
    check_protocol(protocol)
    tiling.check_tta(tta)
    split = split or data.eval_split
    tiling.note_size(model, image_size)
    record = training_input(model)
    scorer = Scorer(data.num_classes, data.ignore_index, per_image=True)
    tiled = False
    with Inference(model, device=resolve_device(device), precision=precision) as run:
        dataset = _EvalSplit(data[split], record, image_size, tile, protocol, run.mean, run.std)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=_collate)
        for items in loader:
            by_input: dict[tuple, list] = {}
            for item in items:
                by_input.setdefault((tuple(item[1].shape), item[3]), []).append(item)
            for (_, tile_size), group in by_input.items():
                tiled = tiled or tile_size is not None
                x = torch.stack([item[1] for item in group]).to(run.device)
                scores, _ = tiling.views(run, x, tile=tile_size, overlap=overlap, tta=tta, batch_size=batch_size)
                check_classes(scores.shape[1], data)
                with torch.inference_mode(False):  # metric buffers stay ordinary tensors
                    scorer.update(scores, [item[2] for item in group],
                                  index=torch.tensor([item[0] for item in group]))
    confusion = scorer.confusion_matrix().cpu()
    pixels = confusion.sum(1).tolist()
    how = {"image_size": list(tiling._pair(image_size, "image_size")) if image_size is not None else None,
           "training_input": record.as_dict() if record is not None else None,
           "tiled": tiled, "tta": list(tta) if tta else None}
    return EvalReport(scores_from_confusion(confusion), list(data.class_names), pixels, scorer.per_image(),
                      protocol, how)


