"""What a kind of model brings to the training loop: the small public protocol :class:`Task`.

The loop is the same for every model; a task says what differs:

- ``losses(model, images, targets)``: the loss of one batch, a tensor, or a dict of named
  terms (summed for the step; each term's epoch mean goes into the history);
- ``loaders(trainer)``: its own ``(train, eval)`` loaders, or None for the default feed
  (the decoded cache or streaming);
- ``scores(trainer)``: validation, ``(scores, figures)``: an object kept as ``trainer.scores``,
  and the plain numbers for the epoch's record;
- ``check(trainer)``: a look at the first samples before training (clear errors early);
- ``monitor``: the figure the best checkpoint follows.

:class:`SemanticTask` serves semantic segmentation; a model brings another by a
``training_task`` attribute, a function ``(model, data, loss_fn) -> Task`` (Mask R-CNN:
:class:`segnb.instances.train.InstanceTask`; the whole protocol of such a model, evaluation
and prediction included, is :class:`segnb.infer.InstanceModel`).
"""

from __future__ import annotations

from typing import Protocol

import torch

from segnb.errors import SegnbError
from segnb.evaluation import Scorer, score_batches
from segnb.infer import Inference
from segnb.metrics import scores_from_confusion

__all__ = ["Task", "SemanticTask"]


class Task(Protocol):
    monitor: str

    def check(self, trainer) -> None: ...
    def loaders(self, trainer): ...
    def losses(self, model, images, targets) -> torch.Tensor | dict[str, torch.Tensor]: ...
    def scores(self, trainer) -> tuple[object, dict]: ...


class SemanticTask:
    """Logits (B, K, H, W) against masks (B, H, W): the training loss, mIoU and the validation loss."""

    monitor = "miou"

    def __init__(self, model, data, loss_fn=None):
        self.data, self.loss_fn = data, loss_fn

    def loaders(self, trainer):
        return None  # the default feed: the decoded cache, or streaming

    def losses(self, model, images, masks) -> torch.Tensor:
        logits = model(images)  # (B, K, H, W)
        return self.loss_fn(logits, masks)

    def check(self, trainer) -> None:
        """The first training batch's values, and the model's output on one image."""
        data = self.data
        split = data.torch_split(data.train_split, trainer.transform(train=False))  # no random draws
        if len(split) == 0:
            raise SegnbError(f"The training split {data.train_split!r} is empty: nothing to train on.")
        classes, void = data.num_classes, data.ignore_index
        for index in range(min(len(split), trainer.config.batch_size)):
            image, mask = split[index]
            if not torch.isfinite(image).all():
                raise SegnbError(f"{data.train_split}[{index}]: the image holds NaN or infinite values "
                                 "after normalisation; check the image file and the model's mean and std.")
            bad = mask[(mask != void) & ((mask < 0) | (mask >= classes))].unique()
            if len(bad):
                raise SegnbError(
                    f"{data.train_split}[{index}]: mask values {bad[:10].tolist()} are outside the "
                    f"{classes} classes and are not the ignore index {void}. Load the dataset with the "
                    "classes (class_names=) or the ignore_index= that covers them.")
            if index == 0:
                with Inference(trainer.unwrapped, precision=trainer.precision) as run:
                    channels = run(run.batch(image)).shape[1]
                if channels != classes:
                    raise SegnbError(f"The model outputs {channels} classes but the dataset has {classes}; "
                                     "build it with class_names=data.class_names.")

    def scores(self, trainer) -> tuple[object, dict]:
        """Validation: scores and loss on the evaluation split, run as inference under the training
        autocast. The loss is the training loss function (weighted CE, Dice, ...), averaged over the
        images, so the two loss curves are comparable. Two host reads, however many batches."""
        data, device = self.data, trainer.device
        scorer = Scorer(data.num_classes, data.ignore_index, loss_fn=self.loss_fn)
        with Inference(trainer.unwrapped, precision=trainer.precision) as run:
            score_batches(run, trainer.eval_loader, scorer)  # at the labels' own size (protocol "full")
        confusion = trainer.accelerator.reduce(scorer.confusion_matrix(device).to(device), "sum")
        loss_sum = scorer.loss_sum if scorer.loss_sum is not None else torch.zeros(2, dtype=torch.float64)
        loss_sum = trainer.accelerator.reduce(loss_sum.to(device), "sum").cpu()
        scores = scores_from_confusion(confusion)
        figures = {"val_loss": float(loss_sum[0] / loss_sum[1].clamp(min=1)), "miou": scores.miou,
                   "pixel_accuracy": scores.pixel_accuracy, "mean_accuracy": scores.mean_accuracy,
                   "iou": scores.iou}
        return scores, figures
