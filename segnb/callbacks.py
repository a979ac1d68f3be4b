"""Callbacks: what happens around the training loop without living inside it.

Nine named events, called in this order (``order`` sorts callbacks, low first):

==================  ===========================================================
``on_fit_start``    once, after the model, data and optimizer are ready
``on_data_ready``   once, when the data path is set (``trainer.data_path`` says which, and why)
``on_epoch_start``  before each epoch's first step
``on_step_end``     after each optimizer step (``trainer.last_loss`` is a tensor:
                    ``float()`` on it waits for the GPU; ``trainer.loss_value`` is
                    a float read with the non-finite flag every ``SYNC_EVERY``
                    steps, when ``trainer.host_synced`` is True)
``on_eval_end``     after each validation pass (``trainer.scores``)
``on_epoch_end``    after the epoch's record joined ``trainer.history``
``on_checkpoint``   after a checkpoint was written (``path``)
``on_stop``         when training stops early (``reason``)
``on_fit_end``      once, always, even after a stop or an error
==================  ===========================================================

A callback raises :class:`StopTraining` to end training after the current step. A
``KeyboardInterrupt`` raised in one ends it at once (``history.stopped`` says
``"interrupted at step N"``); any other error is a failure (``"failed: ..."``).

``fit()`` also adds what each function in :data:`FIT_HOOKS` returns for the run: this is how a
higher layer joins every run without the training code importing it (``segnb.runs`` registers
its run recorder here when ``segnb`` is imported).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from segnb.arithmetic import ceil_div
from segnb.progress import ConsoleRenderer, ProgressState

__all__ = [
    "EVENTS",
    "Callback",
    "StopTraining",
    "ProgressCallback",
    "CheckpointCallback",
    "EarlyStopping",
    "CSVLogger",
    "TensorBoardLogger",
    "FIT_HOOKS",
    "install_fit_hooks",
]

EVENTS = ("on_fit_start", "on_data_ready", "on_epoch_start", "on_step_end", "on_eval_end", "on_epoch_end",
          "on_checkpoint", "on_stop", "on_fit_end")


# Functions (trainer, run, config) -> Callback | None; fit() calls each with its ``run=`` option
# and its configuration (plain data) and adds the callbacks they return.
FIT_HOOKS: list = []


def install_fit_hooks(trainer, run=None, config: dict | None = None) -> None:
    """Add the callbacks of :data:`FIT_HOOKS` to ``trainer`` (fit() calls it once, before ``run()``)."""
    added = [c for c in (hook(trainer, run=run, config=config) for hook in FIT_HOOKS) if c is not None]
    if added:
        trainer.callbacks = sorted([*trainer.callbacks, *added], key=lambda c: c.order)


class StopTraining(Exception):  # noqa: N818 - a control-flow signal, as fastai's Cancel exceptions
    """Raised by a callback to end training after the current step."""


class Callback:
    """Override the events you need; each receives the trainer (see :class:`segnb.train.Trainer`)."""

    order = 0

    def on_fit_start(self, trainer): ...
    def on_data_ready(self, trainer): ...
    def on_epoch_start(self, trainer): ...
    def on_step_end(self, trainer): ...
    def on_eval_end(self, trainer): ...
    def on_epoch_end(self, trainer): ...
    def on_checkpoint(self, trainer, path): ...
    def on_stop(self, trainer, reason: str): ...
    def on_fit_end(self, trainer): ...


class ProgressCallback(Callback):
    """A progress bar with images/s and ETA, through a renderer (console by default)."""

    order = 50

    def __init__(self, renderer=None):
        self.renderer = renderer or ConsoleRenderer()
        self.state = ProgressState()

    def _sync(self, trainer, loss: bool = False):
        s = self.state
        s.done, s.total = trainer.step - trainer.start_step, trainer.total_steps - trainer.start_step
        s.epoch = trainer.epoch + 1
        s.epochs = trainer.epochs or ceil_div(trainer.total_steps, max(1, trainer.steps_per_epoch))  # time budget: planned
        s.images, s.elapsed = trainer.images_seen, trainer.elapsed
        s.device, s.precision = str(trainer.device), trainer.precision
        if loss and getattr(trainer, "loss_value", None) is not None:
            s.loss = trainer.loss_value  # read with the non-finite flag: no sync of its own

    def on_fit_start(self, trainer):
        self._sync(trainer)
        self.renderer.update(self.state, force=True)

    def on_data_ready(self, trainer):
        note = getattr(self.renderer, "note", None)
        if note is not None:
            note(f"data: {trainer.data_path}")

    def on_step_end(self, trainer):
        if hasattr(self.renderer, "due") and not self.renderer.due():
            return
        self._sync(trainer, loss=True)
        self.renderer.update(self.state)

    def on_eval_end(self, trainer):
        self.state.miou = getattr(trainer.scores, "miou", None)  # None for instance and click models
        self._sync(trainer, loss=True)
        self.renderer.update(self.state, force=True)

    def on_fit_end(self, trainer):
        self._sync(trainer)
        self.renderer.close(self.state)


class CheckpointCallback(Callback):
    """Keeps ``<directory>/last`` after every epoch and ``<directory>/best`` by a monitored figure."""

    order = 80

    def __init__(self, directory, monitor: str = "miou", mode: str = "max"):
        self.directory, self.monitor, self.mode = Path(directory), monitor, mode
        self.best = -math.inf if mode == "max" else math.inf

    def _better(self, value: float) -> bool:
        return value > self.best if self.mode == "max" else value < self.best

    def on_fit_start(self, trainer):
        if trainer.is_main_process:  # before the first epoch: writable, room enough, no leftovers
            from segnb.checkpoint import prepare_directory

            prepare_directory(self.directory, trainer.unwrapped)
        for record in trainer.history.epochs:  # resumed: remember the best so far
            value = record.get(self.monitor)
            if value is not None and not math.isnan(value) and self._better(value):
                self.best = value

    def on_epoch_end(self, trainer):
        if not trainer.is_main_process:
            return
        path = trainer.save_checkpoint(self.directory, "last")
        trainer.notify("on_checkpoint", path)
        value = trainer.history.epochs[-1].get(self.monitor)
        if value is not None and not math.isnan(value) and self._better(value):
            self.best = value
            path = trainer.save_checkpoint(self.directory, "best")
            trainer.notify("on_checkpoint", path)


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs."""

    order = 90

    def __init__(self, monitor: str = "val_loss", patience: int = 3, mode: str = "min", min_delta: float = 0.0):
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best, self.waited = None, 0

    def on_epoch_end(self, trainer):
        value = trainer.history.epochs[-1].get(self.monitor)
        if value is None:
            return
        improved = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if improved:
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            raise StopTraining(f"early stopping: {self.monitor} did not improve for {self.patience} epochs")


class CSVLogger(Callback):
    """One row per epoch in a CSV file (per-class IoU as ``iou_<class>`` columns)."""

    def __init__(self, path):
        self.path = Path(path)

    def on_epoch_end(self, trainer):
        if not trainer.is_main_process:
            return
        record = dict(trainer.history.epochs[-1])
        for name, value in zip(trainer.class_names, record.pop("iou", []), strict=False):
            record[f"iou_{name}"] = value
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(record))
            if new:
                writer.writeheader()
            writer.writerow(record)


class TensorBoardLogger(Callback):
    """Scalars per epoch (and training loss every ``every`` steps) for TensorBoard; at the end, the
    run's hyperparameters and final scores for TensorBoard's HParams tab (``hparams=False``: none)."""

    def __init__(self, log_dir, every: int = 20, hparams: bool = True):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(f"TensorBoardLogger needs the tensorboard package: pip install tensorboard ({err})") from None
        self.writer = SummaryWriter(str(log_dir))
        self.every, self.hparams = every, hparams

    def on_step_end(self, trainer):
        if trainer.is_main_process and trainer.step % self.every == 0:
            self.writer.add_scalar("train/loss_step", float(trainer.last_loss), trainer.step)

    def on_epoch_end(self, trainer):
        if not trainer.is_main_process:
            return
        record = trainer.history.epochs[-1]
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "epoch" and value is not None:
                self.writer.add_scalar(f"epoch/{key}", value, record["epoch"])
        for name, value in zip(trainer.class_names, record.get("iou", []), strict=False):
            if value is not None:
                self.writer.add_scalar(f"iou/{name}", value, record["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer):
        if self.hparams and trainer.is_main_process and trainer.history.epochs:
            scored = [r for r in trainer.history.epochs if r.get("miou") is not None]
            last = scored[-1] if scored else trainer.history.epochs[-1]
            metrics = {f"final/{k}": float(last[k]) for k in ("miou", "pixel_accuracy", "val_loss", "train_loss")
                       if isinstance(last.get(k), (int, float))}
            if scored:
                metrics["final/best_miou"] = max(r["miou"] for r in scored)
            self.writer.add_hparams(hparams_of(trainer), metrics, run_name=".")
        self.writer.close()


def hparams_of(trainer) -> dict:
    """The run's settings as TensorBoard hyperparameters (numbers, text and booleans only)."""
    config = getattr(trainer, "config", None)
    if hasattr(config, "to_dict"):  # segnb.train.TrainConfig
        values = {k: v for k, v in config.to_dict().items() if k != "extra"}
    else:
        values = {n: getattr(trainer, n, None) for n in ("epochs", "batch_size", "lr", "image_size", "seed",
                                                           "max_minutes", "grad_clip", "optimizer_name", "precision")}
    spec = getattr(trainer.unwrapped, "spec", None) or {}
    values.update({k: spec.get(k) for k in ("arch", "encoder", "upsample") if k in spec})
    values["data"] = getattr(trainer.data, "source", None)
    out = {}
    for key, value in values.items():
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif value is None:
            out[key] = "none"
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
            out[key] = "x".join(map(str, value))
        elif isinstance(value, dict) and "custom" in value:  # a loss module or function, by name
            out[key] = str(value["custom"])
        else:
            out[key] = getattr(value, "__name__", None) or type(value).__name__
    return out
