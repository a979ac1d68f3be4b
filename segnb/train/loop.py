"""The training loop, top to bottom: batches, learning rate, step, events, validation, stop.

``fit()`` builds a :class:`segnb.train.trainer.Trainer` (the run's state) and
calls :func:`run`. Everything else hangs off callbacks (progress, checkpoints,
logs, early stopping), called by name through ``trainer.notify``. Nothing here
waits for the GPU in a steady-state step: the loss stays a tensor, the
non-finite flag stays on the device (:mod:`segnb.train.step`), and the host
reads it every ``SYNC_EVERY`` steps.

How a run ends, in ``history.stopped``: ``"completed"``; a stop (Kernel >
Interrupt, ``handle.stop()``, a callback's ``StopTraining``, the time budget)
after the current step; a non-finite loss, before the bad step is applied, with
the model put back to its last good weights; out of memory, with a batch size
that fits; ``"interrupted at step N"`` when ``KeyboardInterrupt`` is raised
(the error is raised again); ``"failed: <error>"`` for any other error, raised
after the model, history and last checkpoint were made safe. A failure never
reads as success.
"""

from __future__ import annotations

import itertools
import threading
import time
import warnings

import torch

from segnb import infer
from segnb.callbacks import StopTraining
from segnb.train.budget import warmup
from segnb.train.history import History
from segnb.train.interrupt import install_sigint, restore_sigint
from segnb.train.step import (
    SYNC_EVERY,
    NonFiniteLoss,
    OutOfMemory,
    apply_update,
    largest_batch_that_fits,
)

__all__ = ["run", "train_step", "forward_loss"]


def forward_loss(t, images, targets, model=None) -> torch.Tensor:
    """The loss of one batch, the forward pass under the training autocast. A task whose loss is a
    dict of terms gets them summed here; ``t.last_terms`` keeps them (tensors) for the epoch's means."""
    if t.device.type == "cuda":
        images = images.to(memory_format=torch.channels_last)
    dtype = infer.AUTOCAST_DTYPES[t.precision]
    with torch.autocast(t.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = t.task.losses(model or t.forward_model, images, targets)
    if isinstance(loss, dict):
        t.last_terms = {name: value.detach() for name, value in loss.items()}
        loss = sum(loss.values())
    return loss


def train_step(t, images, targets, lr: float) -> torch.Tensor:
    """One step: learning rate, forward under autocast, loss, backward, clip, update. Returns the loss
    (a tensor). A non-finite loss or gradient sets the guard's flag on the device and the update is
    skipped on it; an error (a bad mask, out of memory) changes nothing either."""
    optimizer = t.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr
    while True:
        try:
            loss = forward_loss(t, images, targets)
            optimizer.zero_grad(set_to_none=True)
            t.accelerator.backward(t.scaler.scale(loss))
            break
        except BaseException as error:
            optimizer.zero_grad(set_to_none=True)
            if not t.forward_model.fall_back(error):  # compile failed (forward or backward): eager, once
                raise
    t.forward_model.proven = True
    norm = None
    if t.config.grad_clip:
        t.scaler.unscale_(optimizer)
        norm = t.accelerator.clip_grad_norm_(t.model.parameters(), t.config.grad_clip)
        if t.scaler.is_enabled():  # fp16: inf gradients are the GradScaler's to skip
            norm = None
    bad = t.guard.update(loss, norm)  # on the device: no sync
    if t.skips_on_device:  # fused AdamW/SGD skip the update (and its step count) on the flag
        apply_update(optimizer, bad, on_device=True)
    else:  # a custom optimizer, or fp16's GradScaler: the host reads the flag first
        t.check_flag()
        t.scaler.step(optimizer)
        t.scaler.update()
    return loss.detach()


def _train_epoch(t) -> torch.Tensor:
    """One pass over the training data; returns (loss * images, images) summed, on the device."""
    t.model.train()
    loader = t.train_loader
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(t.epoch)  # the same order for the same epoch, also after a resume
    if isinstance(getattr(loader, "generator", None), torch.Generator):
        loader.generator.manual_seed(t.seed + t.epoch)
    sums = torch.zeros(2, device=t.device)  # (loss * images, images)
    term_sums = {}
    for images, targets in loader:
        t.total_steps = t.budget.planned_steps(t.step)  # from the epochs, the time left, or both
        lr = t.schedule(t.step, t.total_steps, t.lr, warmup(t.config.warmup_steps, t.total_steps))
        try:
            with t._step_lock:  # inspection copies the weights between two steps, never during one
                loss = t.train_step(images, targets, lr)
        except torch.cuda.OutOfMemoryError:
            out_of_memory = True  # probed below, once this batch's graph is gone with the exception
        else:
            out_of_memory = False
        if out_of_memory:
            raise _out_of_memory(t, images, targets)
        if t.step == t.start_step:
            t.budget.first_step_done(t.step + 1)  # the rate counts from the step after the first
        t.step += 1
        t.images_seen += len(images) * t.world
        sums[0] += loss * len(images)
        sums[1] += len(images)
        for name, value in (t.last_terms or {}).items():
            term_sums[name] = term_sums.get(name, 0.0) + value * len(images)
        t.last_loss = loss
        t.elapsed = time.monotonic() - t.budget.start
        t.host_synced = t.step % SYNC_EVERY == 0  # callbacks may read tensors now: the host waits anyway
        if t.host_synced:
            t.check_flag()
        t.notify("on_step_end")
        if t.budget.out_of_time():
            t.history.limit = "time"
            t.request_stop(f"time budget of {t.max_minutes:g} min reached at step {t.step}")
        if t.stop_requested:
            break
    t.check_flag()
    t.host_synced, t.epoch_terms = True, term_sums
    return sums


def _out_of_memory(t, images, targets) -> OutOfMemory:
    fits = largest_batch_that_fits(lambda x, y: forward_loss(t, x, y), images, targets,
                                   lambda: t.optimizer.zero_grad(set_to_none=True), t._buffers)
    return OutOfMemory(len(images), "x".join(str(s) for s in images.shape[-2:]), t.step, fits)


def _validate(t, last: bool) -> dict:
    """Validation, when it is due (every ``eval_every`` epochs and at the end) and fits in the budget."""
    due = (t.epoch + 1) % t.config.eval_every == 0 or last
    if not due or (not last and not t.budget.validate_now(t.images_seen / max(t.elapsed, 1e-9) / t.world)):
        return {"val_loss": None, "miou": None}
    began = time.monotonic()
    t.scores, figures = t.task.scores(t)
    t.budget.record_eval(time.monotonic() - began)
    t.notify("on_eval_end")
    return figures


def run(t) -> History:
    """Train from ``start_epoch`` to ``epochs`` (or until the budget is spent); returns the history."""
    infer.claim(t._claimed, t)  # still ours? (two runs built at the same moment)
    t.active, t.thread = True, threading.current_thread()
    if not t.resumed:  # a resumed run continues the random stream saved in its checkpoint
        torch.manual_seed(t.seed)
    t.budget.begin()
    previous_handler = install_sigint(t)
    try:
        t.keep_good_weights()  # what a non-finite loss goes back to
        began = time.monotonic()
        t.task.check(t)  # the first batch's values, before any work
        t.budget.charge(time.monotonic() - began)
        t.notify("on_fit_start")
        t.open_feed()  # the decoded cache's cold pass (memoised), or streaming loaders
        t.notify("on_data_ready")  # the progress output says which path was taken, and why
        t.guard = t._new_guard()  # counts steps from here (a resumed run's too)
        t.budget.steps_begin(t.step)
        epochs = range(t.start_epoch, t.epochs) if t.epochs else itertools.count(t.start_epoch)
        for epoch in epochs:
            t.epoch = epoch
            t.notify("on_epoch_start")
            epoch_start, images_before = time.monotonic(), t.images_seen
            sums = _train_epoch(t)
            out_of_time = t.history.limit == "time"
            if t.stop_requested and not out_of_time:
                break
            t.sync_buffers()
            local = max(float(sums[1]), 1.0)  # this process's images: the loss terms' means are its own
            terms = {name: float(value) / local for name, value in t.epoch_terms.items()}
            sums = t.accelerator.reduce(sums, "sum")
            count = max(float(sums[1]), 1.0)
            figures = _validate(t, last=out_of_time or epoch + 1 == t.epochs)
            seconds = time.monotonic() - epoch_start
            t.history.epochs.append({
                "epoch": epoch + 1, "step": t.step, "train_loss": float(sums[0]) / count, **terms, **figures,
                "lr": t.optimizer.param_groups[0]["lr"],
                "images_per_s": (t.images_seen - images_before) / max(seconds, 1e-9), "seconds": seconds,
            })
            t.history.steps = t.step
            t.keep_good_weights()
            t.notify("on_epoch_end")
            if t.stop_requested:
                break
        else:
            t.history.limit = "epochs"
    except StopTraining as stop:
        t.request_stop(str(stop) or "stopped by a callback")
    except NonFiniteLoss as bad:
        t.request_stop(t.back_to_good_weights(bad))
    except OutOfMemory as oom:
        t.request_stop(str(oom))
        warnings.warn(str(oom), stacklevel=2)
    except KeyboardInterrupt as error:  # a second Ctrl+C, or raised by a callback: say so, then raise it
        t.failure = error
        t.stop_reason = "interrupted"
        raise
    except BaseException as error:  # a failure (SystemExit too): say so everywhere, then raise it
        t.failure = error
        t.stop_reason = f"failed: {error}" if str(error) else f"failed: {type(error).__name__}"
        if isinstance(error, Exception):
            error.add_note(f"segnb: training failed at step {t.step}; the model holds the weights of that "
                           f"step, trainer.history its {len(t.history.epochs)} completed epochs.")
        raise
    finally:
        restore_sigint(previous_handler)
        t.elapsed = time.monotonic() - t.budget.start
        t.history.steps = t.step
        if t.stop_reason == "interrupted":  # name the step training really ended at
            t.stop_reason = f"interrupted at step {t.step}"
        t.history.stopped = t.stop_reason or "completed"
        t.model.eval()
        t.close()
        _notify_end(t)
    return t.history


def _notify_end(t) -> None:
    """``on_stop`` and ``on_fit_end``: an error there is a failure too, but never hides an earlier one."""
    try:
        if t.stop_reason:
            t.notify("on_stop", t.stop_reason)
        t.notify("on_fit_end")
    except BaseException as error:
        if t.failure is not None:
            if isinstance(t.failure, Exception):
                t.failure.add_note(f"segnb: a callback failed too at the end of training: {error!r}")
            return
        t.failure = error
        interrupted = isinstance(error, KeyboardInterrupt)
        t.history.stopped = f"interrupted at step {t.step}" if interrupted else f"failed: {error or type(error).__name__}"
        raise
