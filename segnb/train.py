"""Training and evaluation, in one loop a student can read top to bottom.

This first version trains on one device (CUDA when present, else CPU), with
bf16 autocast on CUDA, cross-entropy that ignores the void label, AdamW and a
cosine schedule. Interrupting (Kernel > Interrupt, Ctrl-C) or a wall-clock
budget ends training after the current step: the model and history are kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from segnb.data.base import SegmentationDataset
from segnb.metrics import ConfusionMeter, Scores

__all__ = ["History", "fit", "evaluate", "resolve_device"]


@dataclass
class History:
    """Plain floats per epoch (never tensors, so memory does not grow), and why training ended."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    stopped: str = ""

    def last(self, key: str, default=None):
        return self.epochs[-1].get(key, default) if self.epochs else default


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, num_classes: int, ignore_index: int = 255,
             device: str | torch.device = "auto") -> tuple[Scores, float]:
    """Dataset-level scores (see :mod:`segnb.metrics`) and the mean loss over ``loader``."""
    device = resolve_device(device)
    model.eval()
    meter = ConfusionMeter(num_classes, ignore_index)
    loss_sum, pixels = torch.zeros((), device=device), 0
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), masks, ignore_index=ignore_index, reduction="sum")
        pixels += int((masks != ignore_index).sum())
        meter.update(logits, masks)
    return meter.compute(), float(loss_sum) / max(pixels, 1)


def fit(
    model: torch.nn.Module,
    data: SegmentationDataset,
    epochs: int = 5,
    batch_size: int = 16,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    image_size: int | None = None,
    device: str | torch.device = "auto",
    max_minutes: float | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    seed: int = 0,
) -> History:
    """Train ``model`` on ``data``'s training split, evaluating on its validation split each epoch.

    Returns a :class:`History`. Kernel interrupt or ``max_minutes`` end training
    after the current step; ``history.stopped`` says why.
    """
    torch.manual_seed(seed)
    device = resolve_device(device)
    model.to(device)
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    norm = {"mean": mean, "std": std} if mean else {}
    train_loader = data.loader(data.train_split, batch_size, image_size, train=True, seed=seed, **norm)
    val_loader = data.loader(data.eval_split, batch_size, image_size, train=False, **norm)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total_steps = epochs * len(train_loader)
    warmup = min(100, total_steps // 10)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    deadline = time.monotonic() + max_minutes * 60 if max_minutes else None
    history = History()

    try:
        for epoch in range(epochs):
            model.train()
            start, seen, loss_sum = time.monotonic(), 0, torch.zeros((), device=device)
            for images, masks in train_loader:
                images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
                for group in optimizer.param_groups:
                    group["lr"] = _lr_at(history.steps, total_steps, lr, warmup)
                with autocast:
                    logits = model(images)  # (B, K, H, W)
                loss = F.cross_entropy(logits.float(), masks, ignore_index=data.ignore_index)
                if not torch.isfinite(loss):
                    history.stopped = f"non-finite loss at step {history.steps}"
                    raise StopIteration
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                history.steps += 1
                seen += len(images)
                loss_sum += loss.detach() * len(images)
                if deadline and time.monotonic() > deadline:
                    history.stopped = f"time budget of {max_minutes:g} min reached"
                    break
            scores, val_loss = evaluate(model, val_loader, data.num_classes, data.ignore_index, device)
            record = {
                "epoch": epoch + 1,
                "train_loss": float(loss_sum) / max(seen, 1),
                "val_loss": val_loss,
                "miou": scores.miou,
                "pixel_accuracy": scores.pixel_accuracy,
                "iou": scores.iou,
                "images_per_s": seen / max(time.monotonic() - start, 1e-9),
            }
            history.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if history.stopped:
                break
    except StopIteration:
        pass
    except KeyboardInterrupt:
        history.stopped = f"interrupted at step {history.steps}"
    if not history.stopped:
        history.stopped = "completed"
    model.eval()
    return history
