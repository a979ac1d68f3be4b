"""Training Mask R-CNN with ``segnb.train.fit``: the same loop, progress, callbacks, checkpoints and Stop.

:class:`InstanceTask` is what Mask R-CNN brings to the loop through the public
:class:`segnb.train.Task` protocol: its batches (images and per-object
targets), its loss (torchvision's loss dict: the loop sums it for the step and
logs each term), and its validation (mask AP, run through
:class:`segnb.infer.Inference`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader

from segnb.errors import SegnbError
from segnb.infer import Inference
from segnb.instances.metrics import InstanceScores, mask_ap
from segnb.instances.targets import InstanceSplit, check_instance_data, collate_instances
from segnb.train.feed import stream_loaders

__all__ = ["InstanceTask", "Instances", "LOSS_TERMS", "evaluate_instances", "predict_instances"]

LOSS_TERMS = ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask")


class InstanceTask:
    """The :class:`segnb.train.Task` of models whose training forward returns a loss dict.

    Each epoch's history gets the mean of every loss term (``loss_objectness`` and
    ``loss_rpn_box_reg`` from the RPN, ``loss_classifier`` and ``loss_box_reg`` from the box
    head, ``loss_mask`` from the mask head), ``mask_ap``, ``mask_ap50`` and ``mask_ap75``.
    ``val_loss`` is NaN: torchvision computes its losses only in training mode. The best
    checkpoint is chosen by ``mask_ap50``.
    """

    monitor = "mask_ap50"
    own_loss = "Mask R-CNN's own (RPN objectness and box, box classifier and regression, mask BCE)"

    def __init__(self, model, data, loss_fn=None):
        check_instance_data(data, getattr(model, "things", data.class_names),
                            splits=dict.fromkeys([data.train_split, data.eval_split]))
        self.data, self.device = data, None
        self.thing_ids = list(getattr(model, "thing_ids", range(data.num_classes)))

    def _split(self, split: str, transform) -> InstanceSplit:
        return InstanceSplit(self.data, split, transform, self.thing_ids)

    def loaders(self, trainer):
        """Per-object targets need their own batches (segnb.instances.targets): no decoded cache."""
        config = trainer.config
        if config.cache not in ("auto", False):
            raise SegnbError("Mask R-CNN trains from its own per-object batches: use cache=False (or 'auto').")
        workers = 0 if config.num_workers == "auto" else trainer.num_workers
        mean, std = trainer.normalisation()
        self.device = trainer.device
        return stream_loaders(self.data, config, trainer.device, mean, std, workers, trainer.rank, trainer.world,
                              trainer.drop_last, dataset=self._split, collate_fn=collate_instances)

    def losses(self, model, images, targets) -> dict[str, torch.Tensor]:
        targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
        return model(images, targets)  # torchvision's loss dict

    def check(self, trainer) -> None:
        """The first training samples decode into finite images and per-object targets (Mask R-CNN
        returns detections, not logits, so the semantic output check does not apply)."""
        dataset = self._split(self.data.train_split, trainer.transform(train=False))
        if len(dataset) == 0:
            raise SegnbError(f"The training split {self.data.train_split!r} is empty: nothing to train on.")
        for index in range(min(len(dataset), trainer.config.batch_size)):
            image, target = dataset[index]  # bad instance maps raise a DatasetError naming the file here
            if not torch.isfinite(image).all():
                raise SegnbError(f"{self.data.train_split}[{index}]: the image holds NaN or infinite values "
                                 "after normalisation; check the image file and the model's mean and std.")

    def scores(self, trainer) -> tuple[InstanceScores, dict]:
        """Mask AP on the evaluation split, run as inference under the training autocast."""
        with Inference(trainer.unwrapped, precision=trainer.precision) as run:
            predictions, targets = _detect(run, trainer.eval_loader)
        scores = mask_ap(predictions, targets)
        return scores, {"val_loss": float("nan"), "mask_ap": scores.mask_ap, "mask_ap50": scores.mask_ap50,
                        "mask_ap75": scores.mask_ap75}


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
