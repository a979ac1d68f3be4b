"""The state of one training run: model, optimizer, data feed, callbacks, and how it ended.

:class:`Trainer` sets a run up from a :class:`segnb.train.config.TrainConfig`
and holds what callbacks read; the loop itself is :func:`segnb.train.loop.run`.
Callbacks read ``model``, ``optimizer``, ``history``, ``epoch``, ``step``,
``total_steps``, ``last_loss`` (a tensor), ``scores``, ``device``,
``precision``, ``config``, ``data_path`` and ``failure`` (the exception, once
training failed).

While it lives and has not ended, it holds its model: a second run on the same
model is refused, and :class:`segnb.infer.Inference` looks at :meth:`snapshot`
copies taken between two steps.
"""

from __future__ import annotations

import copy
import json
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from segnb import infer
from segnb.arithmetic import ceil_div
from segnb.callbacks import Callback, CheckpointCallback, ProgressCallback
from segnb.data.base import SegmentationDataset
from segnb.data.preprocess import check_classes
from segnb.device import canonical_device, resolve_device, resolve_precision
from segnb.infer import normalisation
from segnb.losses import class_weights, make_loss
from segnb.train import feed as feeds
from segnb.train.budget import SCHEDULES, Budget
from segnb.train.config import TrainConfig
from segnb.train.history import History
from segnb.train.step import Compiled, GoodWeights, Guard, NonFiniteLoss
from segnb.train.task import SemanticTask

__all__ = ["Trainer"]


def _accelerator(device: torch.device):
    """An ``accelerate.Accelerator`` for this device. Precision stays ours (explicit autocast):
    ``mixed_precision="no"``, whatever ``accelerate launch`` or ``ACCELERATE_MIXED_PRECISION`` say,
    so accelerate adds no GradScaler of its own."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    try:
        return Accelerator(cpu=device.type == "cpu", mixed_precision="no")
    except (ValueError, RuntimeError):
        # The process-wide state was made for another device or precision (a notebook that switched):
        # outside a distributed launch it is safe to start afresh.
        if PartialState._shared_state and PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=device.type == "cpu", mixed_precision="no")


class _SumOverRanks:
    """Sums a tensor over processes on the device (an all-reduce: no host sync on GPUs)."""

    def __init__(self, world: int):
        self.world = world

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor


class Trainer:
    """One run of ``fit()``: build it with a config (or the same keyword options as ``fit``), then
    :meth:`run` (:func:`segnb.train.loop.run`)."""

    def __init__(self, model, data: SegmentationDataset, config: TrainConfig | None = None, *,
                 callbacks: Sequence[Callback] = (), progress: bool | Callback = True, **options):
        self.config = config = config.replace(**options) if config is not None and options else (
            config or TrainConfig.from_options(**options))
        # Refuse a second run on this model while one trains it (active from the end of __init__).
        self.active, self.thread, self._claimed = False, None, model
        infer.claim(model, self)
        self.data = data
        self.num_workers = feeds.auto_workers() if config.num_workers == "auto" else config.num_workers
        self.class_names = list(data.class_names)
        check_classes(model, data, remedy="Build it with class_names=data.class_names.")
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.accelerator = _accelerator(self.device)
        self.device = canonical_device(self.accelerator.device)  # accelerate says "cuda"; its tensors "cuda:0"
        self.config = config = config.for_device(self.device)  # the batch size, when None
        self.epochs, self.batch_size, self.lr, self.seed = config.epochs, config.batch_size, config.lr, config.seed
        self.max_minutes = config.max_minutes
        self.is_main_process = self.accelerator.is_main_process
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.schedule = SCHEDULES[config.scheduler] if isinstance(config.scheduler, str) else config.scheduler

        weights = class_weights(data.frequencies(), config.class_weight_method) if config.loss == "weighted_ce" else None
        self.loss_fn = make_loss(config.loss, data.ignore_index, weights).to(self.device)
        make_task = getattr(model, "training_task", None) or SemanticTask
        self.task = make_task(model, data, self.loss_fn)
        self.model = model.to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer, self.optimizer_name = self._optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        # The update is skipped on the device flag when the optimizer can (fused); otherwise the
        # host reads the flag every step (a custom optimizer, or fp16 with its GradScaler).
        self.skips_on_device = (getattr(self.optimizer, "_step_supports_amp_scaling", False)
                                and not self.scaler.is_enabled())

        # How data reaches the model: the task's own loaders, a decoded cache, or streaming workers.
        self.drop_last = config.compile  # a compiled model sees one batch shape
        own = self.task.loaders(self)
        if own is not None:
            self.feed = feeds.Feed(False, "the model's own loaders (per-object targets): decoded every epoch", *own)
        else:
            self.feed = feeds.plan_feed(data, config, self.device)
            if not self.feed.cache:
                self.feed.train, self.feed.eval = self._stream()
        if self.feed.train is not None:
            self.model, self.optimizer, self.feed.train = self.accelerator.prepare(
                self.model, self.optimizer, self.feed.train)
        else:  # decoded in run(), so that a bad file is a failure of the run; batches never go through prepare
            self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.steps_per_epoch = feeds.steps_per_epoch(self.feed, len(data[data.train_split]), config.batch_size,
                                                     self.world, self.drop_last)
        self.forward_model = Compiled(self.model, config.compile)
        self.compile = config.compile
        self._buffers = list(self.model.buffers())
        self.budget = Budget(config.epochs, self.steps_per_epoch, config.max_minutes,
                             eval_images=ceil_div(len(data[data.eval_split]), self.world))
        self.total_steps = self.budget.planned_steps(0)

        self.history = History(protocol=self.config.protocol)
        self.epoch = self.step = self.start_step = self.start_epoch = 0
        self.images_seen, self.elapsed, self.last_loss, self.last_terms, self.scores = 0, 0.0, None, None, None
        self.host_synced = False  # the host has just read the device (a flag check): reading tensors is free
        self.loss_value: float | None = None  # last_loss as read with the flag, every SYNC_EVERY steps
        self.stop_reason: str | None = None
        self.failure: BaseException | None = None
        self._stop_event = threading.Event()
        self._step_lock = threading.RLock()  # held during a step: snapshots are taken between steps
        self._snapshot: tuple[int, nn.Module] | None = None
        self.guard = self._new_guard()
        self.good = None  # the weights of the last completed epoch (set when the run starts)
        self.checkpoint_dir = config.checkpoint_dir
        self.callbacks: list[Callback] = list(callbacks)
        if progress is True and self.is_main_process:
            self.callbacks.append(ProgressCallback())
        elif isinstance(progress, Callback):
            self.callbacks.append(progress)
        if config.checkpoint_dir is not None and not any(isinstance(c, CheckpointCallback) for c in self.callbacks):
            self.callbacks.append(CheckpointCallback(config.checkpoint_dir, monitor=self.task.monitor))
        for callback in self.callbacks:  # the best checkpoint follows the task's figure (mask AP50 for Mask R-CNN)
            if isinstance(callback, CheckpointCallback) and callback.monitor == "miou":
                callback.monitor = self.task.monitor
        self.callbacks.sort(key=lambda c: c.order)
        self.resumed = config.resume is not None
        if self.resumed:
            self._resume(config.resume)
        self.active = True

    # ------------------------------------------------------------------ set-up
    def _optimizer(self):
        config, params = self.config, [p for p in self.model.parameters() if p.requires_grad]
        # Fused AdamW/SGD take a device-side "skip this update" flag (found_inf): no host sync per step.
        fused = all(p.is_floating_point() and p.device.type in ("cuda", "cpu") for p in params) or None
        if callable(config.optimizer):
            return config.optimizer(params), getattr(config.optimizer, "__name__", "custom")
        if config.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused), "adamw"
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay,
                               fused=fused), "sgd"

    def _new_guard(self) -> Guard:
        return Guard(self.device, self.step, _SumOverRanks(self.world) if self.world > 1 else None)

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return normalisation(self.unwrapped)

    def transform(self, train: bool):
        mean, std = normalisation(self.unwrapped)
        return feeds.transform(self.data, self.config, mean, std, train)

    def _stream(self):
        mean, std = normalisation(self.unwrapped)
        return feeds.stream_loaders(self.data, self.config, self.device, mean, std, self.num_workers, self.rank,
                                    self.world, self.drop_last)

    def open_feed(self) -> None:
        """The decoded cache's cold pass (memoised), once; streaming loaders are ready already."""
        if self.feed.train is not None:
            return
        mean, std = normalisation(self.unwrapped)
        self.feed = feeds.open_feed(self.feed, self.data, self.config, self.device, mean, std, self.num_workers,
                                    self.rank, self.world, self.drop_last)
        if not self.feed.cache:  # mixed sizes: streaming after all
            self.feed.train = self.accelerator.prepare(self.feed.train)

    # What callbacks and the Studio read.
    @property
    def train_loader(self):
        return self.feed.train

    @property
    def eval_loader(self):
        return self.feed.eval

    @property
    def cache(self):
        return self.feed.cache

    @property
    def data_path(self) -> str:
        return self.feed.why

    @property
    def unwrapped(self) -> nn.Module:
        accelerator = getattr(self, "accelerator", None)
        return accelerator.unwrap_model(self.model) if accelerator is not None else self.model

    # ------------------------------------------------------------------ the run
    def run(self) -> History:
        """Train (see :func:`segnb.train.loop.run`); returns the history, or raises after a failure."""
        from segnb.train.loop import run

        return run(self)

    def train_step(self, images, targets, lr: float) -> torch.Tensor:
        """One step (:func:`segnb.train.loop.train_step`), as fit() and :func:`lr_find` take it."""
        from segnb.train.loop import train_step

        return train_step(self, images, targets, lr)

    def check_flag(self) -> None:
        """The host reads the non-finite flag (one sync). After a bad step, the step count goes back to
        it (the skipped steps did not happen) and :class:`NonFiniteLoss` is raised."""
        try:
            self.loss_value = self.guard.check(self.epoch, self.last_loss)  # read with the flag: no extra sync
        except NonFiniteLoss as bad:
            self.images_seen -= (self.step - bad.step) * self.batch_size * self.world
            self.step = bad.step
            raise

    def notify(self, event: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask training to end after the current step (thread-safe)."""
        self.stop_reason = self.stop_reason or reason
        self._stop_event.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_event.is_set()

    def close(self) -> None:
        """The run is over: the model may be trained again, and no snapshot is kept."""
        self.active, self._snapshot = False, None
        infer.release(self._claimed, self)

    def snapshot(self) -> nn.Module:
        """A copy of the model taken between two steps (kept until the next step), for inspection."""
        with self._step_lock:
            if self._snapshot is None or self._snapshot[0] != self.step:
                model = copy.deepcopy(self.unwrapped)
                for parameter in model.parameters():
                    parameter.grad = None
                self._snapshot = (self.step, model)
            return self._snapshot[1]

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Several processes: average batch-norm statistics, so every rank holds the same model."""
        if self.world == 1:
            return
        with self._step_lock:
            for buffer in self.unwrapped.buffers():
                if buffer.is_floating_point():
                    buffer.copy_(self.accelerator.reduce(buffer.clone(), "mean"))
                else:
                    buffer.copy_(self.accelerator.reduce(buffer.clone(), "sum") // self.world)

    def back_to_good_weights(self, bad: NonFiniteLoss) -> str:
        """After a non-finite loss: the model goes back to its last good weights (batch-norm statistics
        included); the message says which, and which checkpoint really exists."""
        with self._step_lock:
            self.good.restore()
        when = f"after epoch {self.good.epoch}" if self.good.epoch else "from before training started"
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

    def keep_good_weights(self) -> None:
        if self.good is None:
            self.good = GoodWeights(self.unwrapped)
        self.good.keep(len(self.history.epochs) and self.history.epochs[-1]["epoch"])

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, directory, tag: str):
        from segnb.checkpoint import save_checkpoint

        return save_checkpoint(directory, tag, self.unwrapped, self.optimizer, self.scaler,
                               self.epoch + 1, self.step, self.history.as_dict(),
                               extra={"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                                      "seed": self.seed, "optimizer_name": self.optimizer_name,
                                      "config": self.config.to_dict()})

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
        self.guard = self._new_guard()
        if self.epochs is not None and self.start_epoch >= self.epochs:
            warnings.warn(f"The checkpoint is at epoch {self.start_epoch} of {self.epochs}: nothing left to train.",
                          stacklevel=3)
