"""Training, evaluation and prediction, in one loop a student can read top to bottom.

``fit()`` is :class:`Trainer` ``.run()``: the loop in ``_train_epoch`` is the
whole algorithm (learning rate, autocast, loss, backward, clip, step), and
everything else (progress, checkpoints, logs, early stopping) hangs off
callbacks. Devices and processes come from ``accelerate``: one CPU, one GPU,
or several GPUs and nodes under ``accelerate launch`` / ``torchrun`` /
``accelerate.notebook_launcher``, with the same code.

Nothing is lost to a stop: Kernel > Interrupt (SIGINT), ``handle.stop()``, a
time budget or a callback's :class:`StopTraining` end training after the
current step; a non-finite loss stops before the bad step is applied and puts
the model back to its weights of the last completed epoch; CUDA out-of-memory
stops with a batch size that fits. Any other error is a failure:
``history.stopped`` says ``"failed: <error>"`` and the error is raised, after
the model, history and last checkpoint were made safe. A failure never reads
as success.

The training step (:meth:`Trainer.train_step`) is one function, shared by the
loop and :func:`lr_find`. Running the model to look at it (``predict``,
``evaluate``, validation) goes through :class:`segnb.infer.Inference`.
"""

from __future__ import annotations

import copy
import itertools
import json
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
from torch.utils.data import DataLoader, Subset

from segnb import infer
from segnb.callbacks import (
    Callback,
    CheckpointCallback,
    ProgressCallback,
    StopTraining,
    install_fit_hooks,
)
from segnb.data.base import SegmentationDataset, SegTransform
from segnb.data.cache import (
    CACHE_CHOICES,
    CachedBatches,
    cached_split,
    choose_cache,
    estimate_bytes,
    usable_cores,
)
from segnb.device import resolve_device, resolve_precision
from segnb.errors import SegnbError
from segnb.evaluation import EvalReport, check_classes, evaluate
from segnb.infer import Inference, normalisation
from segnb.losses import class_weights, make_loss
from segnb.metrics import ConfusionMeter, Scores, scores_from_confusion
from segnb.prediction import Prediction, predict

__all__ = [
    "History", "Trainer", "TrainingHandle", "fit", "evaluate", "predict", "lr_find",
    "resolve_device", "resolve_precision", "EvalReport", "Prediction", "check_classes",
]


@dataclass
class History:
    """Per-epoch records of plain floats (never tensors, so memory stays flat), and why training ended."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    stopped: str = ""
    limit: str = ""  # the limit that ended the run: "epochs" or "time" ("" when something else did)

    def last(self, key: str, default=None):
        return self.epochs[-1].get(key, default) if self.epochs else default

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "steps": self.steps, "stopped": self.stopped, "limit": self.limit}

    @classmethod
    def from_dict(cls, data: dict) -> History:
        return cls(list(data.get("epochs", [])), int(data.get("steps", 0)), data.get("stopped", ""),
                   data.get("limit", ""))


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


def auto_workers() -> int:
    """DataLoader workers: one per CPU core this process may use, less one for the training loop,
    at most 8; none below 3 cores (a single worker only adds the cost of passing tensors over)."""
    workers = min(8, usable_cores() - 1)
    return workers if workers >= 2 else 0


SYNC_EVERY = 25  # the host reads the non-finite flag every this many steps (and at each epoch's end)


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
    ``total_steps``, ``last_loss``, ``scores``, ``device``, ``precision``, and
    ``failure`` (the exception, once training failed).

    While it lives and has not ended, it holds its model: a second run on the same model
    is refused, and :class:`segnb.infer.Inference` looks at :meth:`snapshot` copies.
    """

    def __init__(self, model, data: SegmentationDataset, epochs: int | None = 10, batch_size: int = 16,
                 lr: float = 1e-3, loss="ce", optimizer: str | Callable = "adamw", scheduler="cosine",
                 precision: str = "auto", device="auto", callbacks: Sequence[Callback] = (),
                 image_size=None, weight_decay: float = 1e-4, grad_clip: float | None = 1.0,
                 warmup_steps: int | None = None, max_minutes: float | None = None,
                 checkpoint_dir=None, resume=None, progress: bool | Callback = True,
                 num_workers: int | str = "auto", augment_scale: tuple[float, float] | None = None,
                 class_weight_method: str = "inverse_sqrt", seed: int = 0, cache="auto",
                 augment: bool = True, eval_every: int = 1, compile: bool = False):
        if epochs is None and not max_minutes:
            raise SegnbError("Give epochs=, max_minutes= (a time budget), or both.")
        if (epochs is not None and epochs < 1) or batch_size < 1 or lr <= 0 or eval_every < 1:
            raise SegnbError(f"epochs, batch_size, lr and eval_every must be positive (got {epochs}, {batch_size}, "
                             f"{lr}, {eval_every}).")
        if max_minutes is not None and not max_minutes > 0:
            raise SegnbError(f"max_minutes must be a positive number of minutes, got {max_minutes!r}.")
        if cache not in CACHE_CHOICES:
            raise SegnbError(f"cache must be one of {CACHE_CHOICES}, got {cache!r}.")
        # Refuse a second run on this model while one trains it (active from the end of __init__).
        self.active, self.thread, self._claimed = False, None, model
        infer.claim(model, self)
        self.data, self.epochs, self.batch_size, self.lr = data, epochs, batch_size, lr
        self.image_size, self.seed, self.max_minutes = image_size, seed, max_minutes
        self.num_workers = auto_workers() if num_workers == "auto" else int(num_workers)
        self.grad_clip, self.augment_scale, self.augment = grad_clip, augment_scale, augment
        self.eval_every, self.warmup_steps = eval_every, warmup_steps
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
        if isinstance(scheduler, str) and scheduler not in SCHEDULES:
            raise SegnbError(f"Unknown scheduler {scheduler!r}: use one of {', '.join(SCHEDULES)}, or a function "
                             "(step, total_steps, lr, warmup) -> lr.")
        self.schedule = SCHEDULES[scheduler] if isinstance(scheduler, str) else scheduler

        weights = None
        if loss == "weighted_ce":
            weights = class_weights(data.frequencies(), class_weight_method)
        self.loss_fn = make_loss(loss, data.ignore_index, weights).to(self.device)
        self.model = model.to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        params = [p for p in self.model.parameters() if p.requires_grad]
        # Fused AdamW/SGD take a device-side "skip this update" flag (found_inf): no host sync per step.
        fused = all(p.is_floating_point() and p.device.type in ("cuda", "cpu") for p in params)
        if callable(optimizer) and not isinstance(optimizer, str):
            self.optimizer = optimizer(params)
        elif optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
        elif optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay,
                                             fused=fused or None)
        else:
            raise SegnbError(f"optimizer must be 'adamw', 'sgd' or a function params -> optimizer, got {optimizer!r}.")
        self.optimizer_name = optimizer if isinstance(optimizer, str) else getattr(optimizer, "__name__", "custom")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        # The update is skipped on the device flag when the optimizer can (fused); otherwise the
        # host reads the flag every step (a custom optimizer, or fp16 with its GradScaler).
        self.skips_on_device = (getattr(self.optimizer, "_step_supports_amp_scaling", False)
                                and not self.scaler.is_enabled())

        # How data reaches the model: a decoded cache (on the GPU or in RAM), or streaming workers.
        self.cache, self.data_path = self._choose_data_path(cache)
        self.train_loader = self.eval_loader = None
        if not self.cache:
            self._stream_loaders()
            self.model, self.optimizer, self.train_loader = self.accelerator.prepare(
                self.model, self.optimizer, self.train_loader)
            self.steps_per_epoch = len(self.train_loader)
        else:  # decoded in run(), so that a bad file is a failure of the run; batches never go through prepare
            self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
            world = self.accelerator.num_processes
            share = -(-len(data[data.train_split]) // world)
            self.steps_per_epoch = -(-share // batch_size)
        self.forward_model = self.model
        self.compile = compile
        if compile:
            self.forward_model = torch.compile(self.model)
        self._buffers = list(self.model.buffers())  # batch-norm statistics: restored when a step fails
        self._deadline = self._steps_started = None
        self.total_steps = self._planned_steps()
        self.warmup = self._warmup()

        self.history = History()
        self.epoch = self.step = self.start_step = self.start_epoch = 0
        self.images_seen, self.elapsed, self.last_loss, self.scores = 0, 0.0, None, None
        self.stop_reason: str | None = None
        self.failure: Exception | None = None
        self._stop_event = threading.Event()
        self._step_lock = threading.RLock()  # held during a step: snapshots are taken between steps
        self._snapshot: tuple[int, nn.Module] | None = None
        self._reset_flag()
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
        self.active = True

    # ------------------------------------------------------------------ data
    def _choose_data_path(self, cache) -> tuple[str | bool, str]:
        """Where the decoded splits live ("device", "ram") or False (streaming), and why, in one line."""
        if cache is False:
            return choose_cache(0, self.device, False)
        data = self.data
        nbytes = sum(estimate_bytes(data[name], self.image_size, data.num_classes)
                     for name in {data.train_split, data.eval_split} if len(data[name]))
        return choose_cache(nbytes, self.device, cache)

    def _prepare_data(self) -> None:
        """The cold pass, once: decode, check and resize both splits (memoised on the dataset);
        then batches come from :class:`CachedBatches`. Images of different sizes without an
        ``image_size`` cannot be stacked: then the files stream through workers, and the line says so."""
        if self.train_loader is not None:
            return
        data, size = self.data, self.image_size
        try:
            train, val = (cached_split(data[name], size, data.ignore_index, data.num_classes, self.num_workers)
                          for name in (data.train_split, data.eval_split))
        except SegnbError as err:
            if "different sizes" not in str(err):
                raise
            self.cache = False
            self.data_path = ("the images have different sizes and no image_size was given, so they cannot be "
                              "cached: files are decoded every epoch (DataLoader); pass image_size=(h, w) to cache")
            self._stream_loaders()
            self.train_loader = self.accelerator.prepare(self.train_loader)
            return
        if self.cache == "device":
            train, val = train.to(self.device), val.to(self.device)
        mean, std = normalisation(self.unwrapped)
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        common = dict(mean=mean, std=std, seed=self.seed, rank=rank, world=world,
                      channels_last=self.device.type == "cuda")
        self.train_loader = CachedBatches(train, self.batch_size, self.device, shuffle=True, augment=self.augment,
                                          scale=self.augment_scale, **common)
        self.eval_loader = CachedBatches(val, self.batch_size, self.device, pad=False, **common)

    def _stream_loaders(self) -> None:
        self.train_loader = self._loader(self.data.train_split, train=True)
        self.eval_loader = self._eval_loader(self.data.eval_split)

    def _transform(self, train: bool) -> SegTransform:
        mean, std = normalisation(self.unwrapped)
        train = train and self.augment  # augment=False: the training images as they are, shuffled
        return SegTransform(size=self.image_size, train=train, ignore_index=self.data.ignore_index,
                            scale=self.augment_scale if train else None, mean=mean, std=std)

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
                                      "seed": self.seed, "optimizer_name": self.optimizer_name})

    def _resume(self, path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from segnb.checkpoint import load_checkpoint, restore_rng_state
        from segnb.errors import CheckpointError

        meta, tensors = load_checkpoint(path)
        saved_groups = meta["optimizer_state"]["param_groups"]
        if [set(g) - {"params"} for g in saved_groups] != [set(g) - {"params"} for g in self.optimizer.param_groups]:
            saved = meta.get("optimizer_name", "another optimizer")
            raise CheckpointError(
                f"{meta['folder']} was written with optimizer {saved!r}, and this run uses "
                f"{self.optimizer_name!r}: its state does not fit. Resume with optimizer={saved!r}, "
                "or start a fresh run (no resume) to switch optimizers.")
        try:  # the weights straight into this model: no second model is built
            self.unwrapped.load_state_dict(load_file(str(Path(meta["folder"]) / "model.safetensors")))
        except (RuntimeError, OSError, SafetensorError) as err:
            raise CheckpointError(f"{meta['folder']} does not fit this model or is damaged: {err}") from None
        self.optimizer.load_state_dict(meta["optimizer_state"])
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        restore_rng_state(tensors)  # the CPU and, where saved, every GPU's random stream
        self.history = History.from_dict(meta["history"])
        self.start_epoch = self.epoch = int(meta["epoch"])
        self.start_step = self.step = int(meta["step"])
        if self.epochs is not None and self.start_epoch >= self.epochs:
            warnings.warn(f"The checkpoint is at epoch {self.start_epoch} of {self.epochs}: nothing left to train.",
                          stacklevel=3)

    # ------------------------------------------------------------------ the loop
    def run(self) -> History:
        """Train from ``start_epoch`` to ``epochs``; returns the history, or raises after a failure."""
        infer.claim(self._claimed, self)  # still ours? (two runs built at the same moment)
        self.active, self.thread = True, threading.current_thread()
        if not self.resumed:  # a resumed run continues the random stream saved in its checkpoint
            torch.manual_seed(self.seed)
        start = time.monotonic()
        self._deadline = start + self.max_minutes * 60 if self.max_minutes else None
        previous_handler = self._install_sigint()
        try:
            self._keep_good_weights()  # what a non-finite loss goes back to
            self._check_first_batch()
            self.notify("on_fit_start")
            self._prepare_data()  # the decoded cache's cold pass (memoised), or streaming loaders
            self.notify("on_data_ready")  # the progress output says which path was taken, and why
            self._steps_started = (time.monotonic(), self.step)  # the time budget's schedule counts from here
            self._reset_flag()  # counts steps from here (a resumed run's too)
            epochs = range(self.start_epoch, self.epochs) if self.epochs else itertools.count(self.start_epoch)
            for epoch in epochs:
                self.epoch = epoch
                self.notify("on_epoch_start")
                epoch_start, images_before = time.monotonic(), self.images_seen
                train_loss = self._train_epoch(start)
                out_of_time = self.history.limit == "time"
                if self._stop_event.is_set() and not out_of_time:
                    break
                self._sync_buffers()
                last = out_of_time or epoch + 1 == self.epochs
                if (epoch + 1) % self.eval_every == 0 or last:  # validation every eval_every epochs, and at the end
                    self.scores, val_loss = self._evaluate()
                    self.notify("on_eval_end")
                    figures = {"val_loss": val_loss, **self._epoch_scores()}
                else:
                    figures = {"val_loss": None, "miou": None}
                seconds = time.monotonic() - epoch_start
                self.history.epochs.append({
                    "epoch": epoch + 1, "step": self.step, "train_loss": train_loss, **figures,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "images_per_s": (self.images_seen - images_before) / max(seconds, 1e-9), "seconds": seconds,
                })
                self.history.steps = self.step
                self._keep_good_weights()
                self.notify("on_epoch_end")
                if self._stop_event.is_set():
                    break
            else:
                self.history.limit = "epochs"
        except StopTraining as stop:
            self.request_stop(str(stop) or "stopped by a callback")
        except _NonFiniteLoss as bad:
            self.request_stop(self._back_to_good_weights(bad))
        except _OutOfMemory as oom:
            self.request_stop(str(oom))
            warnings.warn(str(oom), stacklevel=2)
        except Exception as error:  # a failure: say so everywhere, then raise it
            self.failure = error
            self.stop_reason = f"failed: {error}" if str(error) else f"failed: {type(error).__name__}"
            error.add_note(f"segnb: training failed at step {self.step}; the model holds the weights of that "
                           f"step, trainer.history its {len(self.history.epochs)} completed epochs.")
            raise
        finally:
            self._restore_sigint(previous_handler)
            self.elapsed = time.monotonic() - start
            self.history.steps = self.step
            if self.stop_reason == "interrupted":  # name the step training really ended at
                self.stop_reason = f"interrupted at step {self.step}"
            self.history.stopped = self.stop_reason or "completed"
            self.model.eval()
            self.close()
            self._notify_end()
        return self.history

    def _notify_end(self) -> None:
        """``on_stop`` and ``on_fit_end``: an error there is a failure too, but never hides an earlier one."""
        try:
            if self.stop_reason:
                self.notify("on_stop", self.stop_reason)
            self.notify("on_fit_end")
        except Exception as error:
            if self.failure is not None:
                self.failure.add_note(f"segnb: a callback failed too at the end of training: {error!r}")
                return
            self.failure = error
            self.history.stopped = f"failed: {error}"
            raise

    def close(self) -> None:
        """The run is over: the model may be trained again, and no snapshot is kept."""
        self.active, self._snapshot = False, None
        infer.release(self._claimed, self)

    def _train_epoch(self, run_start: float) -> float:
        """One pass over the training data; returns the mean training loss.

        Nothing here waits for the GPU: the loss stays a tensor, and the host reads the
        non-finite flag only every ``SYNC_EVERY`` steps and at the end (:meth:`_check_flag`)."""
        model, accelerator = self.model, self.accelerator
        model.train()
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(self.epoch)  # the same order for the same epoch, also after a resume
        if isinstance(getattr(self.train_loader, "generator", None), torch.Generator):
            self.train_loader.generator.manual_seed(self.seed + self.epoch)
        loss_sum, count = torch.zeros((), device=self.device), 0
        for images, masks in self.train_loader:
            self.total_steps = self._planned_steps()  # from the epochs, the time left, or both
            lr = self.schedule(self.step, self.total_steps, self.lr, self._warmup())
            try:
                with self._step_lock:  # inspection copies the weights between two steps, never during one
                    loss = self.train_step(images, masks, lr)
            except torch.cuda.OutOfMemoryError:
                raise _OutOfMemory(self, images, masks) from None
            self.step += 1
            self.images_seen += len(images) * accelerator.num_processes
            loss_sum += loss * len(images)
            count += len(images)
            self.last_loss = loss
            self.elapsed = time.monotonic() - run_start
            if self.step % SYNC_EVERY == 0:
                self._check_flag()
            self.notify("on_step_end")
            if self._deadline and time.monotonic() > self._deadline:
                self.history.limit = "time"
                self.request_stop(f"time budget of {self.max_minutes:g} min reached at step {self.step}")
            if self._stop_event.is_set():
                break
        self._check_flag()
        total = accelerator.reduce(torch.stack([loss_sum, torch.tensor(float(count), device=self.device)]), "sum")
        return float(total[0] / total[1].clamp(min=1))

    def _planned_steps(self) -> int:
        """How many steps the run will take: from ``epochs``; with a time budget, from the steps done
        so far and the time left (the fewer of the two), so the schedule ends when the time runs out."""
        by_epochs = self.epochs * self.steps_per_epoch if self.epochs else None
        if not self._deadline or not self._steps_started:
            return by_epochs or 10 * self.steps_per_epoch  # a time budget's first guess, before any step
        began, first_step = self._steps_started
        now, done = time.monotonic(), self.step - first_step
        if done == 0 or now <= began:
            return by_epochs or 10 * self.steps_per_epoch
        # Whole steps that still fit in the time left: none in the last one, so it runs at the final lr.
        by_time = self.step + math.floor(done / (now - began) * max(0.0, self._deadline - now))
        return max(self.step, min(by_epochs, by_time) if by_epochs else by_time)

    def _warmup(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else min(100, self.total_steps // 10)

    def train_step(self, images: torch.Tensor, masks: torch.Tensor, lr: float) -> torch.Tensor:
        """One step: learning rate, forward under autocast, loss, backward, clip, update.

        ``fit()`` and :func:`lr_find` both use it. It never waits for the GPU. A non-finite loss
        sets a flag on the device (``self._bad``), which stays set: from then on no step changes
        anything. The optimizer skips its update on it (fused AdamW/SGD read it as ``found_inf``,
        as under a GradScaler), and the batch-norm statistics the forward pass moved are put back
        with ``torch.where``. The host reads the flag every few steps (:meth:`_check_flag`) and
        stops, naming the first bad step. An error (a bad mask, out of memory) changes nothing
        either. Returns the loss (a tensor).
        """
        optimizer = self.optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        saved_buffers = [b.detach().clone() for b in self._buffers]
        try:
            loss = self._forward_loss(images, masks)
            optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(self.scaler.scale(loss))
            bad = ~torch.isfinite(loss.detach())  # on the device: no sync
            if self.grad_clip:
                self.scaler.unscale_(optimizer)
                norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                if not self.scaler.is_enabled():  # fp16: inf gradients are the GradScaler's to skip
                    bad = bad | ~torch.isfinite(norm)  # also what another process's bad loss did to ours
            first = bad & ~self._bad  # this is the first bad step: remember its number and loss
            self._bad_step = torch.where(first, self._device_step, self._bad_step)
            self._bad_loss = torch.where(first, loss.detach().float(), self._bad_loss)
            bad = bad | self._bad  # and it stays set: no later step changes anything either
            self._bad, self._device_step = bad, self._device_step + 1
            if not self.skips_on_device:  # a custom optimizer, or fp16's GradScaler: the host reads the flag
                self._check_flag()
        except BaseException:
            optimizer.zero_grad(set_to_none=True)
            self._restore_buffers(saved_buffers)
            raise
        if self.skips_on_device:  # fused AdamW/SGD: the update (and its step count) is skipped on the flag
            inner = getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper: torch's own
            inner.grad_scale, inner.found_inf = None, bad.float()
            try:
                optimizer.step()
            finally:
                del inner.grad_scale, inner.found_inf
        else:
            self.scaler.step(optimizer)
            self.scaler.update()
        with torch.no_grad():  # a bad step leaves batch norm as it was
            for buffer, old in zip(self._buffers, saved_buffers, strict=True):
                buffer.copy_(torch.where(bad, old, buffer))
        return loss.detach()

    def _reset_flag(self) -> None:
        """The device-side record of the first non-finite loss (none yet)."""
        self._bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self._bad_step = torch.zeros((), dtype=torch.long, device=self.device)
        self._bad_loss = torch.zeros((), device=self.device)
        self._device_step = torch.full((), self.step, dtype=torch.long, device=self.device)

    def _check_flag(self) -> None:
        """The host reads the non-finite flag (one sync): after a bad step, training stops there.
        The skipped steps after it did not happen: the step count goes back to the bad step's."""
        if bool(self._bad):
            value, step = float(self._bad_loss), int(self._bad_step)
            self.images_seen -= (self.step - step) * self.batch_size * self.accelerator.num_processes
            self.step = step
            raise _NonFiniteLoss(value, step, self.epoch)

    def _forward_loss(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The loss of one batch, the forward pass under the training autocast."""
        if self.device.type == "cuda":
            images = images.to(memory_format=torch.channels_last)
        dtype = infer.AUTOCAST_DTYPES[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            # The compiled model when compile=True worked (semantic models only), else the model itself.
            model = self._run_model if self.forward_model is not self.model else self.model
            return self._step_loss(model, images, masks)

    def _run_model(self, images: torch.Tensor) -> torch.Tensor:
        """The model, compiled when ``compile=True``; a compilation that fails falls back to eager, once."""
        if self.forward_model is self.model:
            return self.model(images)
        try:
            return self.forward_model(images)
        except Exception as error:  # torch.compile raises at the first call, before anything runs
            if getattr(self, "_compiled_once", False):
                raise
            warnings.warn(f"compile=True: torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                          "training runs eagerly.", stacklevel=2)
            self.forward_model, self.compile = self.model, False
            return self.model(images)
        finally:
            self._compiled_once = True

    @torch.no_grad()
    def _restore_buffers(self, saved: list[torch.Tensor]) -> None:
        for buffer, value in zip(self._buffers, saved, strict=True):
            buffer.copy_(value)

    # ------------------------------------------------------------------ safety nets
    def _check_first_batch(self) -> None:
        """Before the first epoch: the first training batch's values, and the model's output on it."""
        split = self.data.torch_split(self.data.train_split, self._transform(False))  # no random draws
        if len(split) == 0:
            raise SegnbError(f"The training split {self.data.train_split!r} is empty: nothing to train on.")
        classes, void = self.data.num_classes, self.data.ignore_index
        for index in range(min(len(split), self.batch_size)):
            image, mask = split[index]
            if not torch.isfinite(image).all():
                raise SegnbError(f"{self.data.train_split}[{index}]: the image holds NaN or infinite values "
                                 "after normalisation; check the image file and the model's mean and std.")
            bad = mask[(mask != void) & ((mask < 0) | (mask >= classes))].unique()
            if len(bad):
                raise SegnbError(
                    f"{self.data.train_split}[{index}]: mask values {bad[:10].tolist()} are outside the "
                    f"{classes} classes and are not the ignore index {void}. Load the dataset with the "
                    "classes (class_names=) or the ignore_index= that covers them.")
            if index == 0:
                with Inference(self.unwrapped, precision=self.precision) as run:
                    channels = run(run.batch(image)).shape[1]
                if channels != classes:
                    raise SegnbError(f"The model outputs {channels} classes but the dataset has {classes}; "
                                     "build it with class_names=data.class_names.")

    def _keep_good_weights(self) -> None:
        """A copy in memory of the weights after the last completed epoch (the start, before the first)."""
        self._good_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.unwrapped.state_dict().items()}
        self._good_epoch = len(self.history.epochs) and self.history.epochs[-1]["epoch"]

    def _back_to_good_weights(self, bad: _NonFiniteLoss) -> str:
        """After a non-finite loss: the model goes back to its last good weights; the message says
        which, and which checkpoint really exists."""
        with self._step_lock:
            self.unwrapped.load_state_dict(self._good_weights)
        when = f"after epoch {self._good_epoch}" if self._good_epoch else "from before training started"
        last = Path(self.checkpoint_dir) / "last" if self.checkpoint_dir is not None else None
        if last is not None and (last / "training.json").is_file():
            epoch = json.loads((last / "training.json").read_text()).get("epoch")
            saved = f"Last good checkpoint: {last} (epoch {epoch})."
        elif last is not None:
            saved = "No checkpoint was written yet (the first is written when an epoch ends)."
        else:
            saved = "No checkpoint was written (no checkpoint_dir)."
        return (f"{bad.what} at step {bad.step} (epoch {bad.epoch + 1}); that step was not "
                f"applied, and the model was put back to its weights {when}. {saved} "
                "Try a lower lr, gradient clipping, or precision='fp32'.")

    def snapshot(self) -> nn.Module:
        """A copy of the model taken between two steps (kept until the next step), for inspection."""
        with self._step_lock:
            if self._snapshot is None or self._snapshot[0] != self.step:
                model = copy.deepcopy(self.unwrapped)
                for parameter in model.parameters():
                    parameter.grad = None
                self._snapshot = (self.step, model)
            return self._snapshot[1]

    # Hooks that segnb.instances.train.InstanceTrainer overrides (Mask R-CNN: a loss dict, mask AP).
    def _step_loss(self, model, images, masks) -> torch.Tensor:
        logits = model(images)  # (B, K, H, W)
        return self.loss_fn(logits, masks)

    def _probe_loss(self, images, masks) -> torch.Tensor:
        """The loss of a trial batch (the out-of-memory probe): nothing is recorded or applied."""
        return self._forward_loss(images, masks)

    def _epoch_scores(self) -> dict:
        return {"miou": self.scores.miou, "pixel_accuracy": self.scores.pixel_accuracy,
                "mean_accuracy": self.scores.mean_accuracy, "iou": self.scores.iou}

    @torch.no_grad()
    def _sync_buffers(self) -> None:
        """Several processes: average batch-norm statistics, so every rank holds the same model."""
        if self.accelerator.num_processes == 1:
            return
        with self._step_lock:
            for buffer in self.unwrapped.buffers():
                if buffer.is_floating_point():
                    buffer.copy_(self.accelerator.reduce(buffer.clone(), "mean"))
                else:
                    buffer.copy_(self.accelerator.reduce(buffer.clone(), "sum") // self.accelerator.num_processes)

    def _evaluate(self) -> tuple[Scores, float]:
        """Validation: scores and loss on the evaluation split (the cached one when cached), run as
        inference under the training autocast. The loss is the training loss function (weighted CE,
        Dice, ...), averaged over the images, so the two loss curves are comparable."""
        meter = ConfusionMeter(self.data.num_classes, self.data.ignore_index)
        loss_sum = torch.zeros(2, device=self.device, dtype=torch.float64)  # (loss * images, images)
        with Inference(self.unwrapped, precision=self.precision) as run:
            for images, masks in self.eval_loader:
                logits = run(images)
                with torch.inference_mode(False):  # metric buffers stay ordinary tensors
                    masks = masks.to(run.device)
                    loss = self.loss_fn(logits, masks).double()
                    counted = (masks != self.data.ignore_index).any()  # an all-void batch has no loss
                    weight = counted.double() * len(masks)  # on the device: no sync
                    loss_sum += torch.stack([torch.where(counted, loss, 0.0) * weight, weight])
                    meter.update(logits, masks)
        confusion = meter.confusion if meter.confusion is not None else torch.zeros(
            self.data.num_classes, self.data.num_classes, dtype=torch.long, device=self.device)
        confusion = self.accelerator.reduce(confusion.to(self.device), "sum")
        loss_sum = self.accelerator.reduce(loss_sum, "sum")
        return scores_from_confusion(confusion), float(loss_sum[0] / loss_sum[1].clamp(min=1))

    # ------------------------------------------------------------------ interrupts
    def _install_sigint(self):
        """Kernel > Interrupt (SIGINT) ends training after the current step; a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return None
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a process that ignores interrupts
            return None  # (nohup, a shell's background job) keeps ignoring them

        def handler(signum, frame):
            if self._stop_event.is_set():
                raise KeyboardInterrupt
            self.request_stop("interrupted")  # named "interrupted at step N" when training has ended

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main interpreter
            return None

    @staticmethod
    def _restore_sigint(previous) -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class _NonFiniteLoss(Exception):
    def __init__(self, value: float, step: int, epoch: int):
        what = f"non-finite loss ({value})" if not math.isfinite(value) else f"non-finite gradients (loss {value:.4g})"
        super().__init__(f"{what} at step {step}")
        self.what = what
        self.value, self.step, self.epoch = value, step, epoch


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
    """Halve the batch until one forward (the training step's, under its autocast) and backward
    pass succeeds. Nothing is applied, and the batch-norm statistics are put back. ``masks``
    may be a list (an instance model's per-image targets): it is sliced like the images."""
    saved_buffers = [b.detach().clone() for b in trainer._buffers]
    size = len(images) // 2
    try:
        while size >= 1:
            try:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                trainer._probe_loss(images[:size], masks[:size]).backward()
                return size
            except torch.cuda.OutOfMemoryError:
                size //= 2
        return 0
    finally:
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer._restore_buffers(saved_buffers)


class TrainingHandle:
    """A training run in a background thread: ``.stop()``, ``.wait()``, ``.history``, ``.done``,
    ``.status`` (``"running"`` or how it ended) and ``.failed`` (then ``.error`` is the exception)."""

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

    @property
    def failed(self) -> bool:
        return self.done and self.error is not None

    @property
    def status(self) -> str:
        """``"running"``, or ``history.stopped``: ``"completed"``, ``"stopped by the user"``, ``"failed: ..."``."""
        return "running" if not self.done else self.history.stopped

    def __repr__(self) -> str:
        return f"<TrainingHandle {self.status}, step {self.trainer.step} of {self.trainer.total_steps}>"

    def stop(self, wait: bool = True, timeout: float | None = 60) -> History:
        """End training after the current step; ``history.stopped`` says how it ended
        (``"failed: ..."`` if it had failed before)."""
        self.trainer.request_stop("stopped by the user")
        if wait:
            self._thread.join(timeout)
        return self.history

    def wait(self, timeout: float | None = None) -> History:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.history


def fit(model, data: SegmentationDataset, epochs: int | None = None, batch_size: int = 16, lr: float = 1e-3,
        loss="ce", optimizer="adamw", scheduler="cosine", precision: str = "auto", device="auto",
        callbacks: Sequence[Callback] = (), background: bool = False, **options) -> History | TrainingHandle:
    """Train ``model`` on ``data``'s training split, validating on its validation split every epoch.

    Args:
        epochs: passes over the training data; 10 when neither it nor ``max_minutes`` is given.
            With ``max_minutes`` alone, training runs until the budget is spent and the schedule
            (warm-up, cosine decay) is laid over that time; with both, the first limit reached sets
            it. ``history.limit`` says which ended the run.
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
            ``progress`` (False to silence), ``num_workers`` (``"auto"``: the CPU count less one,
            for streaming and the first decoding pass), ``augment`` (False: no random flips or
            scaling), ``augment_scale``, ``seed``, ``cache`` (``"auto"``, ``"device"``, ``"ram"`` or
            False: where the decoded splits live, see :mod:`segnb.data.cache`), ``eval_every``
            (validate every n epochs, and after the last), ``compile`` (``torch.compile`` the model;
            eager, with a warning, if it fails), ``run`` (where the run is recorded, see
            :mod:`segnb.runs`: by default ``checkpoint_dir``, else a new folder under ``runs/``;
            ``run=False`` for none).

    Returns:
        The :class:`History` (``history.stopped`` says why it ended), or a handle with ``background=True``.

    Raises:
        SegnbError: before training, for bad options, a checkpoint folder that cannot be written or
            is full, a first batch with bad values, or a model that is being trained already.
        Any error during training, after ``history.stopped`` was set to ``"failed: <error>"``; the
        model keeps the weights of the last completed step and the last checkpoint is intact.
    """
    model.trained_on = data.provenance()  # save_model records it; segnb eval defaults to it
    if epochs is None and not options.get("max_minutes"):
        epochs = 10
    run = options.pop("run", None)
    trainer_class = getattr(model, "trainer_class", Trainer)  # Mask R-CNN brings its own (segnb.instances)
    trainer = trainer_class(model, data, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss,
                            optimizer=optimizer, scheduler=scheduler, precision=precision, device=device,
                            callbacks=callbacks, **options)
    config = dict(epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, optimizer=optimizer, scheduler=scheduler,
                  precision=precision, device=device, **{k: v for k, v in options.items() if k != "progress"})
    install_fit_hooks(trainer, run=run, config=config)  # the run record (segnb.runs), by default
    if background:
        return TrainingHandle(trainer)
    return trainer.run()


# ---------------------------------------------------------------------- learning-rate finder


def lr_find(model, data: SegmentationDataset, start_lr: float = 1e-6, end_lr: float = 1.0, steps: int = 60,
            batch_size: int = 16, loss="ce", device="auto", image_size=None) -> dict:
    """Leslie Smith's range test: the loss while the learning rate grows exponentially.

    Each step is fit()'s own :meth:`Trainer.train_step` (autocast, clipping, the non-finite
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
        trainer._prepare_data()
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
                trainer._check_flag()
            except _NonFiniteLoss:
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
