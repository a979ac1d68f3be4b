"""``fit()`` and ``lr_find()``: a :class:`TrainConfig` from the options, a run, and its loop."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np

from segnb import infer, tiling
from segnb.callbacks import Callback, install_fit_hooks
from segnb.data.base import SegmentationDataset
from segnb.train.background import TrainingHandle
from segnb.train.config import TrainConfig
from segnb.train.history import History
from segnb.train.step import NonFiniteLoss
from segnb.train.trainer import Trainer

__all__ = ["fit", "lr_find", "saved_config"]


def saved_config(resume) -> dict:
    """The options a checkpoint was trained with (empty for checkpoints older than the config)."""
    from segnb.checkpoint import load_checkpoint

    meta, _ = load_checkpoint(resume)
    return dict(meta.get("config") or {})


def fit(model, data: SegmentationDataset, epochs: int | None = None, *, callbacks: Sequence[Callback] = (),
        progress: bool | Callback = True, background: bool = False, **options) -> History | TrainingHandle:
    """Train ``model`` on ``data``'s training split, validating on its validation split every epoch.

    Every option, its default and its check live in :class:`segnb.train.TrainConfig`:

    - ``epochs`` (10 when neither it nor ``max_minutes`` is given), ``max_minutes`` (a wall-clock
      budget: the schedule is laid over it, and validation and checks take at most 5% of it; with
      both, the first limit reached ends the run, ``history.limit`` says which);
    - ``batch_size`` (8 on the CPU, 16 on a GPU), ``lr``, ``loss`` (``ce``, ``weighted_ce``, ``dice``, ``focal``, ``lovasz``,
      ``ce+dice`` or a module), ``optimizer`` (``adamw``, ``sgd`` or ``params -> optimizer``),
      ``scheduler`` (``wsd``: warm-up, the full rate, a linear decay over the last fifth; ``cosine``,
      ``constant`` or ``(step, total, lr, warmup) -> lr``), ``warmup_steps``,
      ``weight_decay``, ``grad_clip``, ``class_weight_method``, ``seed``;
    - ``precision`` (``auto``: bf16 on GPUs that have it, else fp16; fp32 on the CPU), ``device``
      (``auto``, ``cpu``, ``cuda``; under ``accelerate launch`` each process takes its own),
      ``compile`` (``torch.compile``; eager, with a warning, if it fails);
    - ``image_size``, ``augment``, ``augment_scale``, ``cache`` (``auto``, ``device``, ``ram`` or False,
      see :mod:`segnb.data.cache`), ``num_workers``, ``eval_every``;
    - ``checkpoint_dir`` (``best`` and ``last``, each with the config), ``resume`` (a checkpoint or run
      folder: the run continues with the options it was saved with, and those given here on top);
    - ``run``: where the run is recorded (:mod:`segnb.runs`): by default ``checkpoint_dir``, else a new
      folder under ``runs/`` (``$SEGNB_RUNS``); a folder; or False for none.

    Args:
        callbacks: :class:`segnb.callbacks.Callback` objects (the hook points of a run: progress, a run
            folder writer, loggers, early stopping).
        progress: True (the console bar), False, or a progress callback.
        background: train in a thread and return a :class:`TrainingHandle` at once.

    Returns:
        The :class:`History` (``history.stopped`` says why it ended), or a handle with ``background=True``.

    Raises:
        SegnbError: before any work, for a bad option (the message says how to write it), a checkpoint
            folder that cannot be written or is full, a first batch with bad values, or a model that is
            being trained already.
        Any error during training, after ``history.stopped`` was set to ``"failed: <error>"``; the
        model keeps the weights of the last completed step and the last checkpoint is intact.
    """
    if epochs is not None:
        options["epochs"] = epochs
    run = options.pop("run", None)  # where the run is recorded (segnb.runs): by default checkpoint_dir or runs/
    if options.get("resume") is not None:
        config = TrainConfig.from_dict(saved_config(options["resume"]), **options)
    else:
        config = TrainConfig.from_options(**options)
    model.trained_on = data.provenance()  # save_model records it; segnb eval defaults to it
    trainer = Trainer(model, data, config, callbacks=callbacks, progress=progress)
    if getattr(model, "task", "semantic") == "semantic":  # the input scale predict and evaluate apply
        model.training_input = tiling.training_input_of(data, config.image_size, *infer.normalisation(model),
                                                        augment_scale=config.augment_scale if config.augment else None)
    install_fit_hooks(trainer, run=run, config=trainer.config.to_dict())  # the batch size resolved
    if background:
        return TrainingHandle(trainer)
    return trainer.run()


def lr_find(model, data: SegmentationDataset, start_lr: float = 1e-6, end_lr: float = 1.0, steps: int = 60,
            batch_size: int | None = None, loss="ce", device="auto", image_size=None) -> dict:
    """Leslie Smith's range test: the loss while the learning rate grows exponentially.

    Each step is fit()'s own (:func:`segnb.train.loop.train_step`: autocast, clipping, the non-finite
    guard). The test ends at a non-finite loss or when the smoothed loss passes 4x its best;
    the suggestion, the rate where the loss falls fastest, is looked for only up to the lowest
    loss, never where it diverges. The model's weights and mode are restored afterwards.
    Returns ``lrs``, ``losses`` (smoothed, all finite) and ``suggestion``.
    """
    saved, was_training = copy.deepcopy(model.state_dict()), model.training
    trainer = Trainer(model, data, epochs=1, batch_size=batch_size, lr=start_lr, loss=loss, device=device,
                      image_size=image_size, progress=False, scheduler="constant", warmup_steps=0)
    factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    try:
        trainer.open_feed()
        trainer.model.train()
        batches = iter(trainer.train_loader)
        for i in range(steps):
            try:
                images, masks = next(batches)
            except StopIteration:
                batches = iter(trainer.train_loader)
                images, masks = next(batches)
            lr = start_lr * factor**i
            try:
                value = float(trainer.train_step(images, masks, lr))
                trainer.check_flag()
            except NonFiniteLoss:
                break  # not applied, not recorded
            smooth = 0.8 * smooth + 0.2 * value if i else value
            lrs.append(lr)
            losses.append(smooth)
            best = min(best, smooth)
            if smooth > 4 * best:
                break
    finally:
        trainer.close()
        model.load_state_dict(saved)
        model.train(was_training)
    upto = int(np.argmin(losses)) + 1 if losses else 0  # up to the lowest loss: never the diverging tail
    if upto > 2:
        slopes = np.gradient(np.array(losses[:upto]), np.log(np.array(lrs[:upto])))
        suggestion = lrs[int(np.argmin(slopes))]
    else:
        suggestion = lrs[0] if lrs else start_lr
    return {"lrs": lrs, "losses": losses, "suggestion": suggestion}
