"""How long one training step of a model takes: a forward and backward pass, timed."""

from __future__ import annotations

import time

import torch
import torch.nn as nn

__all__ = ["step_seconds"]


def step_seconds(model: nn.Module, height: int, width: int, batch_size: int, timed: int = 2) -> float:
    """Seconds one training step (forward and backward) takes on ``batch_size`` images of ``height x width``.

    Timed on ``min(batch_size, timed)`` random images where the model's weights are (the first pass
    warms up, the second is timed) and scaled to ``batch_size``. The model's mode and gradients are
    as they were afterwards, BatchNorm statistics included; its weights never change (no optimiser step).
    """
    batch = max(1, min(batch_size, timed))
    parameter = next(model.parameters())
    x = torch.randn(batch, 3, height, width, device=parameter.device, dtype=parameter.dtype)
    modes = {m: m.training for m in model.modules()}
    buffers = [(b, b.clone()) for b in model.buffers()]  # BatchNorm's running statistics move in train mode
    model.train()
    try:
        for _ in range(2):
            start = time.perf_counter()
            model.zero_grad(set_to_none=True)
            model(x).float().mean().backward()
            seconds = time.perf_counter() - start
    finally:
        model.zero_grad(set_to_none=True)
        for module, mode in modes.items():
            module.training = mode
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    return seconds * batch_size / batch
