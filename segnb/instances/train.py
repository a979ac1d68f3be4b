"""Training Mask R-CNN with ``segnb.train.fit``: the same loop, progress, callbacks, checkpoints and Stop.

:class:`InstanceTrainer` changes only what differs from semantic segmentation:
the batches (images and per-object targets), the loss (torchvision's loss dict,
summed for the step; each term is logged), and validation (mask AP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from segnb.callbacks import CheckpointCallback
from segnb.errors import SegnbError
from segnb.infer import Inference
from segnb.instances.metrics import InstanceScores, mask_ap
from segnb.instances.targets import InstanceSplit, check_instance_data, collate_instances
from segnb.train import Trainer

__all__ = ["InstanceTrainer", "Instances", "LOSS_TERMS", "evaluate_instances", "predict_instances"]

LOSS_TERMS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


class InstanceTrainer(Trainer):
    """A :class:`segnb.train.Trainer` for models whose training forward returns a loss dict.

    Each epoch's history gets the mean of every loss term (``loss_objectness`` and
    ``loss_rpn_box_reg`` from the RPN, ``loss_classifier`` and ``loss_box_reg`` from the box
    head, ``loss_mask`` from the mask head), ``mask_ap``, ``mask_ap50`` and ``mask_ap75``.
    ``val_loss`` is NaN: torchvision computes its losses only in training mode. The best
    checkpoint is chosen by ``mask_ap50``.
    """

    def __init__(self, model, data, *args, **kwargs):
        check_instance_data(data, getattr(model, "things", data.class_names),
                            splits=dict.fromkeys([data.train_split, data.eval_split]))
        self._thing_ids = list(getattr(model, "thing_ids", range(data.num_classes)))
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_count = 0
        # Per-object targets need their own batches (segnb.instances.targets): no decoded cache.
        if kwargs.get("cache", "auto") not in ("auto", False):
            raise SegnbError("Mask R-CNN trains from its own per-object batches: use cache=False (or 'auto').")
        kwargs["cache"] = False
        kwargs.setdefault("num_workers", 0)
        super().__init__(model, data, *args, **kwargs)
        for callback in self.callbacks:
            if isinstance(callback, CheckpointCallback) and callback.monitor == "miou":
                callback.monitor = "mask_ap50"

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = InstanceSplit(self.data, split, self._transform(train), self._thing_ids)
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, drop_last=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=generator, collate_fn=collate_instances)

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = InstanceSplit(self.data, split, self._transform(False), self._thing_ids)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if world > 1:
            dataset = Subset(dataset, list(range(rank, len(dataset), world)))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                          collate_fn=collate_instances)

    def _check_first_batch(self) -> None:
        """Before the first epoch: the first training samples decode into finite images and
        per-object targets (Mask R-CNN returns detections, not logits, so the semantic output
        check of :class:`Trainer` does not apply)."""
        dataset = InstanceSplit(self.data, self.data.train_split, self._transform(False), self._thing_ids)
        if len(dataset) == 0:
            raise SegnbError(f"The training split {self.data.train_split!r} is empty: nothing to train on.")
        for index in range(min(len(dataset), self.batch_size)):
            image, target = dataset[index]  # bad instance maps raise a DatasetError naming the file here
            if not torch.isfinite(image).all():
                raise SegnbError(f"{self.data.train_split}[{index}]: the image holds NaN or infinite values "
                                 "after normalisation; check the image file and the model's mean and std.")

    def _step_loss(self, model, images, targets) -> torch.Tensor:
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        terms = model(images, targets)  # torchvision's loss dict
        for name, value in terms.items():  # weighted by images, like train_loss
            self._term_sums[name] = self._term_sums.get(name, 0.0) + value.detach() * len(images)
        self._term_count += len(images)
        self.last_terms = terms
        return sum(terms.values())

    def _probe_loss(self, images, targets) -> torch.Tensor:
        """The out-of-memory probe's trial batch: its loss terms are not logged."""
        saved = dict(self._term_sums), self._term_count
        try:
            return super()._probe_loss(images, targets)
        finally:
            self._term_sums, self._term_count = saved

    def _train_epoch(self, run_start: float) -> float:
        self._term_sums, self._term_count = {}, 0
        return super()._train_epoch(run_start)

    def _evaluate(self) -> tuple[InstanceScores, float]:
        """Mask AP on the evaluation split, run as inference under the training autocast."""
        with Inference(self.unwrapped, precision=self.precision) as run:
            predictions, targets = _detect(run, self.eval_loader)
        return mask_ap(predictions, targets), float("nan")

    def _epoch_scores(self) -> dict:
        scores = self.scores
        terms = {name: float(total / max(self._term_count, 1)) for name, total in self._term_sums.items()}
        return {**terms, "mask_ap": scores.mask_ap, "mask_ap50": scores.mask_ap50, "mask_ap75": scores.mask_ap75}


def _detect(run: Inference, loader: DataLoader) -> tuple[list[dict], list[dict]]:
    """Detections and targets of every batch of ``loader``, on the CPU, as ordinary tensors."""
    predictions, targets = [], []
    for images, truth in loader:
        predictions += [{k: v.cpu() for k, v in p.items()} for p in run(images)]
        targets += truth
    with torch.inference_mode(False):  # the metric's own tensors stay ordinary ones
        return [{k: v.clone() for k, v in p.items()} for p in predictions], targets


def evaluate_instances(model, data, split: str | None = None, batch_size: int = 8, image_size=None,
                       device="auto", precision: str | None = None) -> InstanceScores:
    """Mask AP, AP50 and AP75 of an instance model on one split (the validation split by default).

    ``segnb.evaluate`` calls this for an instance model. The scores are named ``mask_ap*``: they
    are COCO mask average precision, not a semantic mIoU (``scores.miou`` is None)."""
    from segnb.data.base import SegTransform
    from segnb.device import resolve_device

    split = split or data.eval_split
    check_instance_data(data, getattr(model, "things", data.class_names), splits=[split])
    with Inference(model, device=resolve_device(device), precision=precision) as run:
        transform = SegTransform(size=image_size, train=False, mean=run.mean, std=run.std,
                                 ignore_index=data.ignore_index)
        loader = DataLoader(InstanceSplit(data, split, transform, list(model.thing_ids)), batch_size=batch_size,
                            collate_fn=collate_instances)
        predictions, targets = _detect(run, loader)
    return mask_ap(predictions, targets)


@dataclass
class Instances:
    """The objects an instance model found in one image, most confident first.

    ``boxes`` (N, 4) float as x0, y0, x1, y1 in pixels, ``labels`` (N,) the dataset's class ids,
    ``scores`` (N,), ``masks`` (N, H, W) bool (``soft`` > ``mask_threshold``) and ``soft`` (N, H, W)
    the mask probabilities, all at the input image's resolution.
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor
    soft: torch.Tensor

    def __len__(self) -> int:
        return len(self.scores)


def predict_instances(model, images, batch_size: int = 8, device="auto", precision: str | None = None,
                      score_threshold: float | None = None, mask_threshold: float = 0.5) -> list[Instances]:
    """One :class:`Instances` per image: what ``segnb.predict`` returns for an instance model.

    ``images``: one ``uint8`` array (H, W, 3), a list of them (any sizes), or a normalised tensor
    (N, 3, H, W) / (3, H, W). ``score_threshold`` keeps the detections scoring at least that
    (default: all that the model returns, i.e. above its own ``box_score_thresh``).
    """
    from segnb.device import resolve_device
    from segnb.infer import to_tensor

    if isinstance(images, torch.Tensor):
        images = list(images.float()) if images.dim() == 4 else [images.float()]
    elif isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    results = []
    with Inference(model, device=resolve_device(device), precision=precision) as run:
        tensors = [to_tensor(image, run.mean, run.std) for image in images]
        for start in range(0, len(tensors), batch_size):
            chunk = tensors[start : start + batch_size]
            if len({tuple(t.shape) for t in chunk}) == 1:
                outputs = run(torch.stack(chunk))
            else:  # images of several sizes: one at a time
                outputs = [d for t in chunk for d in run(t[None])]
            results += [{k: v.cpu() for k, v in d.items()} for d in outputs]
    found = []
    with torch.inference_mode(False):
        for d in results:
            keep = d["scores"] >= score_threshold if score_threshold is not None else slice(None)
            soft = d["masks"][keep][:, 0].clone()
            found.append(Instances(d["boxes"][keep].clone(), d["labels"][keep].clone(), d["scores"][keep].clone(),
                                   soft > mask_threshold, soft))
    return found
