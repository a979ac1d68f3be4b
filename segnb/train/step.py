"""The training step's machinery, free of host synchronisation.

- :class:`Guard`: a device-side record of the first non-finite step. The step
  never asks the host whether the loss is finite; the guard keeps a flag on the
  device, which stays set once set, and :meth:`Guard.check` reads it (one sync)
  every :data:`SYNC_EVERY` steps. With several processes the flag and the loss
  are summed across ranks in the step, so every rank skips the same step and
  stops at the same one, with the same message.
- :func:`apply_update`: fused AdamW/SGD skip their update on the flag (their
  ``found_inf`` input, as under a ``GradScaler``); other optimizers make the
  host read it first.
- Batch norm: a skipped step's forward pass still moves the running statistics;
  the step does not undo that (it would cost a clone and a copy per buffer per
  step). Training stops at the next check, and the model goes back to its last
  good weights, buffers included (:class:`GoodWeights`).
- :func:`largest_batch_that_fits`: after an out-of-memory error, the batch size
  that fits, probed once the failed batch's graph is gone.
- :class:`Compiled`: ``torch.compile`` with one fallback to eager, also for an
  error raised lazily in the backward pass.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn

__all__ = ["SYNC_EVERY", "Guard", "NonFiniteLoss", "OutOfMemory", "apply_update", "GoodWeights",
           "largest_batch_that_fits", "Compiled"]

SYNC_EVERY = 25  # the host reads the non-finite flag every this many steps (and at each epoch's end)


class NonFiniteLoss(Exception):
    def __init__(self, value: float, step: int, epoch: int):
        what = f"non-finite loss ({value})" if not math.isfinite(value) else f"non-finite gradients (loss {value:.4g})"
        super().__init__(f"{what} at step {step}")
        self.what, self.value, self.step, self.epoch = what, value, step, epoch


class OutOfMemory(Exception):
    """Out of memory at ``batch_size``; ``fits`` is the largest batch that fit (0: none)."""

    def __init__(self, batch_size: int, size: str, step: int, fits: int):
        advice = (f"batch_size={fits} fits: fit(..., batch_size={fits})" if fits
                  else "even batch_size=1 does not fit: use a smaller image_size or model")
        super().__init__(f"CUDA out of memory at batch_size={batch_size} with {size} images at step {step}; "
                         f"{advice}. The model and history are intact.")


class Guard:
    """The first non-finite step, recorded on the device: ``bad`` (stays set), its step and loss."""

    def __init__(self, device: torch.device, step: int = 0, reduce=None):
        self.device, self.reduce = device, reduce  # reduce: sums a tensor over processes (None: one process)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.bad_step = torch.zeros((), dtype=torch.long, device=device)
        self.bad_loss = torch.zeros((), device=device)
        self.step = torch.full((), step, dtype=torch.long, device=device)

    def update(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> torch.Tensor:
        """Record this step (no sync); returns the flag: True when this step must change nothing."""
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss)
        if grad_norm is not None:
            bad = bad | ~torch.isfinite(grad_norm)
        if self.reduce is not None:  # several processes: any rank's bad step is everyone's
            summed = self.reduce(torch.stack([bad.float(), loss]))
            bad, loss = summed[0] > 0, summed[1] / self.reduce.world
        first = bad & ~self.bad
        self.bad_step = torch.where(first, self.step, self.bad_step)
        self.bad_loss = torch.where(first, loss, self.bad_loss)
        self.bad, self.step = bad | self.bad, self.step + 1
        return self.bad

    def check(self, epoch: int, loss: torch.Tensor | None = None) -> float | None:
        """The host reads the flag, and with it the latest ``loss``, in one copy (one sync); after a bad
        step, raises :class:`NonFiniteLoss`. Returns the loss as a float (None without one)."""
        latest = loss.detach().double().reshape(()) if loss is not None else self.bad_loss.double()
        bad, step, value, latest = torch.stack(
            [self.bad.double(), self.bad_step.double(), self.bad_loss.double(), latest]).cpu().tolist()
        if bad:
            raise NonFiniteLoss(value, int(step), epoch)
        return latest if loss is not None else None


def apply_update(optimizer, bad: torch.Tensor, on_device: bool) -> None:
    """The optimizer's step, skipped where ``bad``. Fused AdamW/SGD (``on_device``) read the flag as
    ``found_inf`` on the device; for any other optimizer the caller has read it on the host already."""
    if not on_device:
        optimizer.step()
        return
    inner = getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper: torch's own
    inner.grad_scale, inner.found_inf = None, bad.float()
    try:
        optimizer.step()
    finally:
        del inner.grad_scale, inner.found_inf


class GoodWeights:
    """A copy, on the model's own device, of the weights after the last completed epoch.

    Taken without a host sync (device-to-device copies into buffers kept from one epoch to the next).
    """

    def __init__(self, model: nn.Module):
        self.model, self.epoch = model, 0
        self.saved = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def keep(self, epoch: int) -> None:
        state = self.model.state_dict()
        torch._foreach_copy_([self.saved[k] for k in state], [v.detach() for v in state.values()])
        self.epoch = epoch

    @torch.no_grad()
    def restore(self) -> None:
        self.model.load_state_dict(self.saved)


def largest_batch_that_fits(loss_of, images, targets, zero_grad, buffers: list[torch.Tensor]) -> int:
    """Halve the batch until one forward and backward pass (``loss_of(images, targets)``) succeeds.

    Call it after the out-of-memory error was handled, outside its ``except`` block, so the failed
    batch's graph is freed first. Nothing is applied; the batch-norm statistics are put back.
    ``targets`` may be a list (an instance model's per-image targets): it is sliced like the images."""
    saved = [b.detach().clone() for b in buffers]
    size = len(images) // 2
    try:
        while size >= 1:
            try:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                loss_of(images[:size], targets[:size]).backward()
                return size
            except torch.cuda.OutOfMemoryError:
                size //= 2
        return 0
    finally:
        zero_grad()
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


class Compiled:
    """``torch.compile(model)`` when asked; falls back to eager once, with one warning, when compiling
    fails, in the forward pass or lazily in the backward pass, before a compiled step succeeded."""

    def __init__(self, model: nn.Module, enabled: bool):
        self.model, self.eager = model, model
        self.compiled = torch.compile(model) if enabled else None
        self.proven = not enabled  # a compiled step has succeeded (then errors are the model's own)

    @property
    def active(self) -> bool:
        return self.compiled is not None

    def __call__(self, *args, **kwargs):
        return (self.compiled or self.eager)(*args, **kwargs)

    def fall_back(self, error: BaseException) -> bool:
        """After ``error`` in a step: True when it was compilation's (then the step runs again eagerly)."""
        if self.compiled is None or self.proven or not isinstance(error, Exception) or isinstance(
                error, torch.cuda.OutOfMemoryError):
            return False
        warnings.warn(f"compile=True: torch.compile failed ({type(error).__name__}: {str(error)[:200]}); "
                      "training runs eagerly.", stacklevel=3)
        self.compiled = None
        return True
