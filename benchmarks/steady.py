"""Steady-state timing shared by bench_fit.py and gpu_check.py: fit()'s step and a preloaded hand loop.

Both sides are timed the same way: ``warmup`` steps first (allocator, cuDNN autotuning, and with
``compile`` the compilation, timed on its own), then the device is synchronised, ``steps`` steps
run without any read back to the host, and the device is synchronised again. Images/s is
``steps x batch / seconds``. Nothing inside the timed steps waits for the device.

fit() is timed through the public API only: a callback reads the clock at two step ends
(``Callback.on_step_end``) and stops the run with :class:`segnb.callbacks.StopTraining`.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from segnb.callbacks import Callback, StopTraining

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def canonical(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


class StepClock(Callback):
    """Times fit()'s steps ``warmup + 1`` to ``warmup + steps``, then stops training.

    ``first_step_s`` is the time from the start of the first epoch to the end of the first step
    (the compilation with ``compile=True``); ``images_per_s`` the steady-state rate.
    """

    order = -100  # before progress and checkpoints

    def __init__(self, device, batch_size: int, warmup: int, steps: int):
        self.device, self.batch_size, self.warmup, self.steps = canonical(device), batch_size, warmup, steps
        self.epoch_started = self.first_step_s = self.started = self.seconds = None
        self.done = False

    def on_epoch_start(self, trainer):
        if self.epoch_started is None:
            synchronize(self.device)
            self.epoch_started = time.perf_counter()

    def on_step_end(self, trainer):
        done = trainer.step - trainer.start_step
        if done == 1:
            synchronize(self.device)
            self.first_step_s = time.perf_counter() - self.epoch_started
        if done == self.warmup:
            synchronize(self.device)
            self.started = time.perf_counter()
        elif done == self.warmup + self.steps:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.started
            self.done = True
            raise StopTraining("timed steps done")

    def result(self) -> dict:
        if not self.done:
            return {"error": "fit ended before the timed steps were done"}
        return {"images_per_s": self.steps * self.batch_size / self.seconds, "steps": self.steps,
                "seconds": self.seconds, "first_step_s": self.first_step_s}


def time_fit(model, data, *, batch_size: int, warmup: int, steps: int, device, precision: str,
             image_size, compile: bool = False, cache="device", callbacks=(), **options) -> dict:
    """fit()'s steady-state rate on data already decoded (``cache="device"``: the cold pass runs
    before the first step and is not timed); validation never runs inside the timed steps."""
    import segnb

    clock = StepClock(device, batch_size, warmup, steps)
    history = segnb.fit(model, data, epochs=10_000, batch_size=batch_size, device=device, precision=precision,
                        image_size=image_size, compile=compile, cache=cache, eval_every=10_000, progress=False,
                        callbacks=[clock, *callbacks], **options)
    return {**clock.result(), "stopped": history.stopped}


def preload(data, split: str, size, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The split decoded once, resized to ``size``, as uint8 images and int64 masks on ``device``."""
    images, masks = [], []
    part = data[split]
    for i in range(len(part)):
        image, mask = part[i]
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        images.append(F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True)
                      .round().clamp(0, 255).to(torch.uint8)[0])
        y = torch.from_numpy(mask)[None, None].float()
        masks.append(F.interpolate(y, size=tuple(size), mode="nearest-exact")[0, 0].to(torch.uint8))
    return torch.stack(images).to(device), torch.stack(masks).to(device)


class HandLoop:
    """What a user writes with the split preloaded on the device: random batches, flips, normalise,
    autocast, cross-entropy, backward, clip to 1.0, fused AdamW; channels_last on CUDA."""

    def __init__(self, model, train_x, train_y, *, batch_size: int, precision: str, device, lr: float = 1e-3,
                 compile: bool = False, ignore_index: int = 255, seed: int = 0):
        self.device = canonical(device)
        self.cuda = self.device.type == "cuda"
        self.model = model.to(self.device)
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if compile else self.model
        self.x, self.y, self.batch_size, self.ignore_index = train_x, train_y, batch_size, ignore_index
        self.dtype = DTYPES[precision]
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-4, fused=True)
        mean, std = getattr(model, "mean", (0.485, 0.456, 0.406)), getattr(model, "std", (0.229, 0.224, 0.225))
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.order, self.at = None, len(train_x)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.at + self.batch_size > len(self.x):  # a new epoch; the last partial batch is dropped
            self.order = torch.randperm(len(self.x), device=self.device, generator=self.generator)
            self.at = 0
        index = self.order[self.at:self.at + self.batch_size]
        self.at += self.batch_size
        x, y = self.x[index], self.y[index].long()
        flip = torch.rand(len(x), device=self.device, generator=self.generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        x = (x.float() / 255 - self.mean) / self.std
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def step(self) -> torch.Tensor:
        self.model.train()
        x, y = self.batch()
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            loss = F.cross_entropy(self.forward(x), y, ignore_index=self.ignore_index)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss.detach()

    def time(self, warmup: int, steps: int) -> dict:
        synchronize(self.device)
        start = time.perf_counter()
        self.step()
        synchronize(self.device)
        first = time.perf_counter() - start
        for _ in range(warmup - 1):
            self.step()
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        synchronize(self.device)
        seconds = time.perf_counter() - start
        return {"images_per_s": steps * self.batch_size / seconds, "steps": steps, "seconds": seconds,
                "first_step_s": first}


def compile_seconds(result: dict) -> float | None:
    """The first step's time less one steady step: the compilation (and first-call set-up)."""
    if "images_per_s" not in result:
        return None
    return result["first_step_s"] - result["seconds"] / result["steps"]
