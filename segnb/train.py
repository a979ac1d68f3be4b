"""Training, evaluation and prediction, in one loop a student can read top to bottom.

``fit()`` is :class:`Trainer` ``.run()``: the loop in ``_train_epoch`` is the
whole algorithm (learning rate, autocast, loss, backward, clip, step), and
everything else (progress, checkpoints, logs, early stopping) hangs off
callbacks. Devices and processes come from ``accelerate``: one CPU, one GPU,
or several GPUs and nodes under ``accelerate launch`` / ``torchrun`` /
``accelerate.notebook_launcher``, with the same code.

Nothing is lost to a stop: Kernel > Interrupt (SIGINT), ``handle.stop()``, a
time budget or a callback's :class:`StopTraining` end training after the
current step; a non-finite loss stops before the bad step is applied; CUDA
out-of-memory stops with a batch size that fits. The model, the history and
the last checkpoint stay intact.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from segnb.callbacks import Callback, CheckpointCallback, ProgressCallback, StopTraining
from segnb.data.base import SegmentationDataset, SegTransform
from segnb.errors import SegnbError
from segnb.losses import class_weights, make_loss
from segnb.metrics import ConfusionMeter, Scores, confusion_matrix, scores_from_confusion

__all__ = [
    "History", "Trainer", "TrainingHandle", "fit", "evaluate", "predict", "lr_find",
    "resolve_device", "resolve_precision", "EvalReport", "Prediction",
]


@dataclass
class History:
    """Per-epoch records of plain floats (never tensors, so memory stays flat), and why training ended."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    stopped: str = ""

    def last(self, key: str, default=None):
        return self.epochs[-1].get(key, default) if self.epochs else default

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "steps": self.steps, "stopped": self.stopped}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(list(data.get("epochs", [])), int(data.get("steps", 0)), data.get("stopped", ""))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SegnbError("device='cuda' but no CUDA GPU is visible here; use device='auto' or 'cpu'.")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on GPUs that have it, ``fp16`` on older GPUs, ``fp32`` on the CPU."""
    precision = {"no": "fp32", "32": "fp32", "16": "fp16", "bfloat16": "bf16", "float16": "fp16"}.get(
        str(precision), str(precision))
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision not in ("fp32", "bf16", "fp16"):
        raise SegnbError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}.")
    if precision == "fp16" and device.type != "cuda":
        raise SegnbError("fp16 needs a CUDA GPU; on the CPU use precision='bf16' or 'fp32'.")
    return precision


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1% of ``base`` (nanoGPT's get_lr)."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


SCHEDULES = {
    "cosine": cosine_lr,
    "constant": lambda step, total, base, warmup: base * min(1.0, (step + 1) / max(1, warmup)),
}


def _accelerator(device: torch.device):
    """An ``accelerate.Accelerator`` for this device; precision stays ours (explicit autocast)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    try:
        return Accelerator(cpu=device.type == "cpu")
    except (ValueError, RuntimeError):
        # The process-wide state was made for another device (a notebook that switched):
        # outside a distributed launch it is safe to start afresh.
        if PartialState._shared_state and PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=device.type == "cpu")


class Trainer:
    """The state of one training run; :func:`fit` builds one and calls :meth:`run`.

    Callbacks read ``model``, ``optimizer``, ``history``, ``epoch``, ``step``,
    ``total_steps``, ``last_loss``, ``scores``, ``device``, ``precision``.
    """

    def __init__(self, model, data: SegmentationDataset, epochs: int = 10, batch_size: int = 16,
                 lr: float = 1e-3, loss="ce", optimizer: str | Callable = "adamw", scheduler="cosine",
                 precision: str = "auto", device="auto", callbacks: Sequence[Callback] = (),
                 image_size=None, weight_decay: float = 1e-4, grad_clip: float | None = 1.0,
                 warmup_steps: int | None = None, max_minutes: float | None = None,
                 checkpoint_dir=None, resume=None, progress: bool | Callback = True,
                 num_workers: int = 0, augment_scale: tuple[float, float] | None = None,
                 class_weight_method: str = "inverse_sqrt", seed: int = 0, augment: bool = True):
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise SegnbError(f"epochs, batch_size and lr must be positive (got {epochs}, {batch_size}, {lr}).")
        self.data, self.epochs, self.batch_size, self.lr = data, epochs, batch_size, lr
        self.image_size, self.seed, self.max_minutes = image_size, seed, max_minutes
        self.grad_clip, self.num_workers, self.augment_scale = grad_clip, num_workers, augment_scale
        self.augment = augment  # False: no random flip or rescale of training images (an ablation)
        self.class_names = list(data.class_names)
        n_model = getattr(model, "num_classes", None)
        if n_model is not None and n_model != data.num_classes:
            raise SegnbError(
                f"The model predicts {n_model} classes but the dataset has {data.num_classes}. Build it with "
                "class_names=data.class_names."
            )
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.accelerator = _accelerator(self.device)
        self.device = self.accelerator.device
        self.is_main_process = self.accelerator.is_main_process
        self.schedule = SCHEDULES[scheduler] if isinstance(scheduler, str) else scheduler
        if isinstance(scheduler, str) and scheduler not in SCHEDULES:
            raise SegnbError(f"scheduler must be one of {list(SCHEDULES)} or a function (step, total, lr, warmup) -> lr.")

        weights = None
        if loss == "weighted_ce":
            weights = class_weights(data.frequencies(), class_weight_method)
        self.loss_fn = make_loss(loss, data.ignore_index, weights).to(self.device)
        self.model = model.to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if callable(optimizer) and not isinstance(optimizer, str):
            self.optimizer = optimizer(params)
        elif optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        elif optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
        else:
            raise SegnbError(f"optimizer must be 'adamw', 'sgd' or a function params -> optimizer, got {optimizer!r}.")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

        self.train_loader = self._loader(data.train_split, train=True)
        self.eval_loader = self._eval_loader(data.eval_split)
        self.model, self.optimizer, self.train_loader = self.accelerator.prepare(
            self.model, self.optimizer, self.train_loader)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = epochs * self.steps_per_epoch
        self.warmup = warmup_steps if warmup_steps is not None else min(100, self.total_steps // 10)

        self.history = History()
        self.epoch = self.step = self.start_step = self.start_epoch = 0
        self.images_seen, self.elapsed, self.last_loss, self.scores = 0, 0.0, None, None
        self.stop_reason: str | None = None
        self._stop_event = threading.Event()
        self.checkpoint_dir = checkpoint_dir
        self.callbacks: list[Callback] = list(callbacks)
        if progress is True and self.is_main_process:
            self.callbacks.append(ProgressCallback())
        elif isinstance(progress, Callback):
            self.callbacks.append(progress)
        if checkpoint_dir is not None and not any(isinstance(c, CheckpointCallback) for c in self.callbacks):
            self.callbacks.append(CheckpointCallback(checkpoint_dir))
        self.callbacks.sort(key=lambda c: c.order)
        self.resumed = resume is not None
        if resume is not None:
            self._resume(resume)

    # ------------------------------------------------------------------ data
    def _transform(self, train: bool) -> SegTransform:
        mean, std = getattr(self.unwrapped, "mean", None), getattr(self.unwrapped, "std", None)
        options = {"mean": mean, "std": std} if mean else {}
        train = train and self.augment
        return SegTransform(size=self.image_size, train=train, ignore_index=self.data.ignore_index,
                            scale=self.augment_scale if train else None, **options)

    @property
    def unwrapped(self) -> nn.Module:
        accelerator = getattr(self, "accelerator", None)
        return accelerator.unwrap_model(self.model) if accelerator is not None else self.model

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.data.torch_split(split, self._transform(train))
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, drop_last=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          generator=generator, pin_memory=self.device.type == "cuda")

    def _eval_loader(self, split: str) -> DataLoader:
        """Each process evaluates every world-size-th image; confusion matrices are summed."""
        dataset = self.data.torch_split(split, self._transform(False))
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if world > 1:
            dataset = Subset(dataset, list(range(rank, len(dataset), world)))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    # ------------------------------------------------------------------ events
    def notify(self, event: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask training to end after the current step (thread-safe)."""
        self.stop_reason = self.stop_reason or reason
        self._stop_event.set()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory, tag: str):
        from segnb.checkpoint import save_checkpoint

        return save_checkpoint(directory, tag, self.unwrapped, self.optimizer, self.scaler,
                               self.epoch + 1, self.step, self.history.as_dict(),
                               extra={"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                                      "seed": self.seed})

    def _resume(self, path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from segnb.checkpoint import load_checkpoint
        from segnb.errors import CheckpointError

        meta, tensors = load_checkpoint(path)
        try:  # the weights straight into this model: no second model is built
            self.unwrapped.load_state_dict(load_file(str(Path(meta["folder"]) / "model.safetensors")))
        except (RuntimeError, OSError, SafetensorError) as err:
            raise CheckpointError(f"{meta['folder']} does not fit this model or is damaged: {err}") from None
        self.optimizer.load_state_dict(meta["optimizer_state"])
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        torch.set_rng_state(tensors["rng.torch"])
        self.history = History.from_dict(meta["history"])
        self.start_epoch = self.epoch = int(meta["epoch"])
        self.start_step = self.step = int(meta["step"])
        if self.start_epoch >= self.epochs:
            warnings.warn(f"The checkpoint is at epoch {self.start_epoch} of {self.epochs}: nothing left to train.",
                          stacklevel=3)

    # ------------------------------------------------------------------ the loop
    def run(self) -> History:
        """Train from ``start_epoch`` to ``epochs``; always returns the history."""
        if not self.resumed:  # a resumed run continues the random stream saved in its checkpoint
            torch.manual_seed(self.seed)
        start = time.monotonic()
        self._deadline = start + self.max_minutes * 60 if self.max_minutes else None
        previous_handler = self._install_sigint()
        try:
            self.notify("on_fit_start")
            for epoch in range(self.start_epoch, self.epochs):
                self.epoch = epoch
                self.notify("on_epoch_start")
                epoch_start, images_before = time.monotonic(), self.images_seen
                train_loss = self._train_epoch(start)
                if self._stop_event.is_set():
                    break
                self._sync_buffers()
                self.scores, val_loss = self._evaluate()
                self.notify("on_eval_end")
                seconds = time.monotonic() - epoch_start
                self.history.epochs.append({
                    "epoch": epoch + 1, "step": self.step, "train_loss": train_loss, "val_loss": val_loss,
                    "miou": self.scores.miou, "pixel_accuracy": self.scores.pixel_accuracy,
                    "mean_accuracy": self.scores.mean_accuracy, "iou": self.scores.iou,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "images_per_s": (self.images_seen - images_before) / max(seconds, 1e-9), "seconds": seconds,
                })
                self.history.steps = self.step
                self.notify("on_epoch_end")
                if self._stop_event.is_set():
                    break
        except StopTraining as stop:
            self.request_stop(str(stop) or "stopped by a callback")
        except _NonFiniteLoss as bad:
            self.request_stop(str(bad))
        except _OutOfMemory as oom:
            self.request_stop(str(oom))
            warnings.warn(str(oom), stacklevel=2)
        finally:
            self._restore_sigint(previous_handler)
            self.elapsed = time.monotonic() - start
            self.history.steps = self.step
            self.history.stopped = self.stop_reason or "completed"
            if self.stop_reason:
                self.notify("on_stop", self.stop_reason)
            self.notify("on_fit_end")
            self.model.eval()
        return self.history

    def _train_epoch(self, run_start: float) -> float:
        """One pass over the training data; returns the mean training loss."""
        model, optimizer, accelerator = self.model, self.optimizer, self.accelerator
        self._float_buffers = list(model.buffers())  # running statistics and batch counts
        model.train()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(self.epoch)
        if hasattr(self.train_loader, "generator") and self.train_loader.generator is not None:
            self.train_loader.generator.manual_seed(self.seed + self.epoch)  # same order after resume
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        loss_sum, count = torch.zeros((), device=self.device), 0
        for images, masks in self.train_loader:
            if self.device.type == "cuda":
                images = images.to(memory_format=torch.channels_last)
            lr = self.schedule(self.step, self.total_steps, self.lr, self.warmup)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # Batch-norm statistics change in the forward pass: keep them to undo a bad step.
            saved_buffers = [b.detach().clone() for b in self._float_buffers]
            try:
                with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    logits = model(images)  # (B, K, H, W)
                    loss = self.loss_fn(logits, masks)
                if not torch.isfinite(loss):  # one sync per step: the price of never applying a NaN
                    with torch.no_grad():
                        for buffer, saved in zip(self._float_buffers, saved_buffers, strict=True):
                            buffer.copy_(saved)
                    raise _NonFiniteLoss(self, loss.detach())
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(self.scaler.scale(loss))
                if self.grad_clip:
                    self.scaler.unscale_(optimizer)
                    accelerator.clip_grad_norm_(model.parameters(), self.grad_clip)
                self.scaler.step(optimizer)
                self.scaler.update()
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                raise _OutOfMemory(self, images, masks) from None
            self.step += 1
            self.images_seen += len(images) * accelerator.num_processes
            loss_sum += loss.detach() * len(images)
            count += len(images)
            self.last_loss = loss.detach()
            self.elapsed = time.monotonic() - run_start
            self.notify("on_step_end")
            if self._deadline and time.monotonic() > self._deadline:
                self.request_stop(f"time budget of {self.max_minutes:g} min reached at step {self.step}")
            if self._stop_event.is_set():
                break
        total = accelerator.reduce(torch.stack([loss_sum, torch.tensor(float(count), device=self.device)]), "sum")
        return float(total[0] / total[1].clamp(min=1))

    @torch.no_grad()
    def _sync_buffers(self) -> None:
        """Several processes: average batch-norm statistics, so every rank holds the same model."""
        if self.accelerator.num_processes == 1:
            return
        for buffer in self.unwrapped.buffers():
            if buffer.is_floating_point():
                buffer.copy_(self.accelerator.reduce(buffer.clone(), "mean"))
            else:
                buffer.copy_(self.accelerator.reduce(buffer.clone(), "sum") // self.accelerator.num_processes)

    @torch.no_grad()
    def _evaluate(self) -> tuple[Scores, float]:
        self.model.eval()
        meter = ConfusionMeter(self.data.num_classes, self.data.ignore_index)
        loss_sum = torch.zeros(2, device=self.device, dtype=torch.float64)  # (loss * pixels, pixels)
        model = self.unwrapped
        for images, masks in self.eval_loader:
            images, masks = images.to(self.device), masks.to(self.device)
            logits = model(images)
            valid = (masks != self.data.ignore_index).sum()
            if valid > 0:
                ce = F.cross_entropy(logits.float(), masks, ignore_index=self.data.ignore_index, reduction="sum")
                loss_sum += torch.stack([ce.double(), valid.double()])
            meter.update(logits, masks)
        confusion = meter.confusion if meter.confusion is not None else torch.zeros(
            self.data.num_classes, self.data.num_classes, dtype=torch.long, device=self.device)
        confusion = self.accelerator.reduce(confusion.to(self.device), "sum")
        loss_sum = self.accelerator.reduce(loss_sum, "sum")
        self.model.train()
        return scores_from_confusion(confusion), float(loss_sum[0] / loss_sum[1].clamp(min=1))

    # ------------------------------------------------------------------ interrupts
    def _install_sigint(self):
        """Kernel > Interrupt (SIGINT) ends training after the current step; a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._stop_event.is_set():
                raise KeyboardInterrupt
            self.request_stop(f"interrupted at step {self.step}")

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main interpreter
            return None

    @staticmethod
    def _restore_sigint(previous) -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class _NonFiniteLoss(Exception):
    def __init__(self, trainer: Trainer, loss: torch.Tensor):
        where = f"{trainer.checkpoint_dir}/last" if trainer.checkpoint_dir else "none (no checkpoint_dir)"
        super().__init__(
            f"non-finite loss ({float(loss)}) at step {trainer.step} (epoch {trainer.epoch + 1}); that step was "
            f"not applied, so the model keeps its last finite weights. Last good checkpoint: {where}. "
            "Try a lower lr, gradient clipping, or precision='fp32'."
        )


class _OutOfMemory(Exception):
    def __init__(self, trainer: Trainer, images: torch.Tensor, masks: torch.Tensor):
        fits = _largest_batch_that_fits(trainer, images, masks)
        size = "x".join(str(s) for s in images.shape[-2:])
        advice = (f"batch_size={fits} fits: fit(..., batch_size={fits})" if fits
                  else "even batch_size=1 does not fit: use a smaller image_size or model")
        super().__init__(
            f"CUDA out of memory at batch_size={len(images)} with {size} images at step {trainer.step}; "
            f"{advice}. The model and history are intact."
        )


def _largest_batch_that_fits(trainer: Trainer, images: torch.Tensor, masks: torch.Tensor) -> int:
    """Halve the batch until one forward and backward pass succeeds."""
    model = trainer.model
    size = len(images) // 2
    while size >= 1:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            loss = trainer.loss_fn(model(images[:size]), masks[:size])
            loss.backward()
            trainer.optimizer.zero_grad(set_to_none=True)
            return size
        except torch.cuda.OutOfMemoryError:
            trainer.optimizer.zero_grad(set_to_none=True)
            size //= 2
    return 0


class TrainingHandle:
    """A training run in a background thread: ``.stop()``, ``.wait()``, ``.history``, ``.done``."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="segnb-fit", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            self.trainer.run()
        except BaseException as err:  # kept for .wait() to re-raise in the caller's thread
            self.error = err

    @property
    def history(self) -> History:
        return self.trainer.history

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self, wait: bool = True, timeout: float | None = 60) -> History:
        """End training after the current step."""
        self.trainer.request_stop("stopped by the user")
        if wait:
            self._thread.join(timeout)
        return self.history

    def wait(self, timeout: float | None = None) -> History:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.history


def fit(model, data: SegmentationDataset, epochs: int = 10, batch_size: int = 16, lr: float = 1e-3,
        loss="ce", optimizer="adamw", scheduler="cosine", precision: str = "auto", device="auto",
        callbacks: Sequence[Callback] = (), background: bool = False, **options) -> History | TrainingHandle:
    """Train ``model`` on ``data``'s training split, validating on its validation split every epoch.

    Args:
        loss: ``ce``, ``weighted_ce`` (class weights from the dataset's pixel frequencies),
            ``dice``, ``focal``, ``lovasz``, ``ce+dice``, or a module ``(logits, target) -> loss``.
        optimizer: ``adamw``, ``sgd``, or a function ``params -> optimizer``.
        scheduler: ``cosine`` (warm-up then cosine), ``constant``, or ``(step, total, lr, warmup) -> lr``.
        precision: ``auto`` (bf16 on GPUs that have it, else fp16; fp32 on the CPU), ``bf16``,
            ``fp16`` or ``fp32``.
        device: ``auto``, ``cpu``, ``cuda``; under ``accelerate launch`` each process takes its own.
        callbacks: :class:`segnb.callbacks.Callback` objects (progress is on by default).
        background: train in a thread and return a :class:`TrainingHandle` at once.
        **options: ``image_size``, ``weight_decay``, ``grad_clip``, ``warmup_steps``,
            ``max_minutes`` (a wall-clock budget), ``checkpoint_dir`` (best and last
            checkpoints), ``resume`` (a checkpoint or run folder to continue from),
            ``progress`` (False to silence), ``num_workers``, ``augment_scale``, ``seed``,
            ``augment`` (False: no random flip or rescale of the training images).

    Returns:
        The :class:`History` (``history.stopped`` says why it ended), or a handle with ``background=True``.
    """
    trainer = Trainer(model, data, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss,
                      optimizer=optimizer, scheduler=scheduler, precision=precision, device=device,
                      callbacks=callbacks, **options)
    if background:
        return TrainingHandle(trainer)
    return trainer.run()


# ---------------------------------------------------------------------- evaluation


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


@torch.no_grad()
def evaluate(model, data: SegmentationDataset, split: str | None = None, batch_size: int = 8,
             image_size=None, device="auto") -> EvalReport:
    """Evaluate on a split (the validation split by default); see :mod:`segnb.metrics` for definitions."""
    device = resolve_device(device)
    split = split or data.eval_split
    model = model.to(device).eval()
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    transform = SegTransform(size=image_size, train=False, ignore_index=data.ignore_index,
                             **({"mean": mean, "std": std} if mean else {}))
    loader = DataLoader(data.torch_split(split, transform), batch_size=batch_size, shuffle=False)
    total = torch.zeros(data.num_classes, data.num_classes, dtype=torch.long)
    per_image, index = [], 0
    for images, masks in loader:
        pred = model(images.to(device)).argmax(1).cpu()
        for p, t in zip(pred, masks, strict=True):
            cm = confusion_matrix(p, t, data.num_classes, data.ignore_index)
            total += cm
            s = scores_from_confusion(cm)
            per_image.append({"index": index, "miou": s.miou, "pixel_accuracy": s.pixel_accuracy})
            index += 1
    per_image.sort(key=lambda r: (math.isnan(r["miou"]), r["miou"]))
    pixels = total.sum(1).tolist()
    return EvalReport(scores_from_confusion(total), list(data.class_names), pixels, per_image)


@dataclass
class Prediction:
    """Soft masks ``probs`` (N, C, H, W) and hard masks ``masks`` (N, H, W), at the input resolution."""

    probs: torch.Tensor
    masks: torch.Tensor


@torch.no_grad()
def predict(model, images, batch_size: int = 8, device="auto", temperature: float = 1.0) -> Prediction:
    """Class probabilities and argmax masks for raw images.

    ``images``: one ``uint8`` array (H, W, 3), a list of them (sizes may differ only
    if ``batch_size=1``), or an already normalised tensor (N, 3, H, W).
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    if isinstance(images, torch.Tensor):
        batch = images.float()
    else:
        arrays = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
        mean, std = getattr(model, "mean", (0.485, 0.456, 0.406)), getattr(model, "std", (0.229, 0.224, 0.225))
        transform = SegTransform(mean=mean, std=std)
        batch = torch.stack([transform(np.asarray(a), np.zeros(np.asarray(a).shape[:2], np.int64))[0]
                             for a in arrays])
    probs = []
    for chunk in batch.split(batch_size):
        logits = model(chunk.to(device)).float()
        probs.append(torch.softmax(logits / temperature, dim=1).cpu())
    probs = torch.cat(probs)
    return Prediction(probs=probs, masks=probs.argmax(1))


# ---------------------------------------------------------------------- learning-rate finder


def lr_find(model, data: SegmentationDataset, start_lr: float = 1e-6, end_lr: float = 1.0, steps: int = 60,
            batch_size: int = 16, loss="ce", device="auto", image_size=None) -> dict:
    """Leslie Smith's range test: the loss while the learning rate grows exponentially.

    The model's weights are restored afterwards. Returns ``lrs``, ``losses``
    (smoothed) and ``suggestion``: the rate where the loss falls fastest.
    """
    import copy

    saved = copy.deepcopy(model.state_dict())
    trainer = Trainer(model, data, epochs=1, batch_size=batch_size, lr=start_lr, loss=loss, device=device,
                      image_size=image_size, progress=False, scheduler="constant", warmup_steps=0)
    factor = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    try:
        trainer.model.train()
        batches = iter(trainer.train_loader)
        for i in range(steps):
            try:
                images, masks = next(batches)
            except StopIteration:
                batches = iter(trainer.train_loader)
                images, masks = next(batches)
            lr = start_lr * factor**i
            for group in trainer.optimizer.param_groups:
                group["lr"] = lr
            loss_value = trainer.loss_fn(trainer.model(images), masks)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss_value.backward()
            trainer.optimizer.step()
            value = float(loss_value.detach())
            smooth = 0.8 * smooth + 0.2 * value if i else value
            lrs.append(lr)
            losses.append(smooth)
            best = min(best, smooth)
            if not math.isfinite(value) or smooth > 4 * best:
                break
    finally:
        model.load_state_dict(saved)
    slopes = np.gradient(np.array(losses), np.log(np.array(lrs))) if len(losses) > 2 else np.array([0.0])
    suggestion = lrs[int(np.argmin(slopes))] if len(losses) > 2 else start_lr
    return {"lrs": lrs, "losses": losses, "suggestion": suggestion}
