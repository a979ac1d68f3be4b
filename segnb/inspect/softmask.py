"""Soft masks: per-class probabilities and what can be read from them.

Everything takes logits or probabilities of shape (C, H, W) (one image) as
numpy arrays or tensors and returns numpy arrays, fast enough to recompute on
every slider move (see benchmarks/bench_inspect.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "soft_mask", "hard_mask", "threshold_mask", "entropy_map", "margin_map", "Calibration",
    "calibration", "roi_soft_mask",
]


def _tensor(array) -> torch.Tensor:
    return array.detach().float().cpu() if isinstance(array, torch.Tensor) else torch.from_numpy(
        np.asarray(array, dtype=np.float32))


def soft_mask(logits, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities ``softmax(logits / T)`` over axis 0; T > 1 softens, T < 1 sharpens."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    return torch.softmax(_tensor(logits) / temperature, dim=0).numpy()


def hard_mask(probs) -> np.ndarray:
    """The argmax class of each pixel, (H, W)."""
    return np.asarray(probs).argmax(0)


def threshold_mask(probs, class_index: int, threshold: float = 0.5) -> np.ndarray:
    """Pixels whose probability of ``class_index`` reaches ``threshold`` (bool, H x W)."""
    return np.asarray(probs)[class_index] >= threshold


def entropy_map(probs) -> np.ndarray:
    """Per-pixel entropy in nats: 0 when certain, log C for uniform probabilities."""
    p = _tensor(probs)
    return (-(p * torch.log(p.clamp_min(1e-12))).sum(0)).numpy()


def margin_map(probs) -> np.ndarray:
    """Top-1 minus top-2 probability per pixel: small where the model hesitates between two classes."""
    top2 = torch.topk(_tensor(probs), 2, dim=0).values
    return (top2[0] - top2[1]).numpy()


@dataclass
class Calibration:
    """Reliability-diagram data over pixels: per confidence bin, mean confidence, accuracy, count."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    ece: float


def calibration(probs, target, bins: int = 10, ignore_index: int = 255) -> Calibration:
    """Expected calibration error over pixels: sum over bins of |accuracy - confidence| x share.

    ``probs`` (C, H, W) or (N, C, H, W); ``target`` (H, W) or (N, H, W).
    """
    p = _tensor(probs)
    t = torch.as_tensor(np.asarray(target))
    if p.dim() == 3:
        p, t = p[None], t[None]
    confidence, predicted = p.max(1)  # (N, H, W)
    valid = t != ignore_index
    confidence, correct = confidence[valid].double(), (predicted[valid] == t[valid]).double()
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = torch.clamp((confidence * bins).long(), max=bins - 1)
    counts = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.bincount(index, weights=confidence, minlength=bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=bins)
    safe = counts.clamp(min=1)
    conf, acc = conf_sum / safe, acc_sum / safe
    total = counts.sum().clamp(min=1)
    ece = float(((acc - conf).abs() * counts / total).sum())
    empty = counts == 0
    return Calibration(edges, np.where(empty, np.nan, conf.numpy()), np.where(empty, np.nan, acc.numpy()),
                       counts.long().numpy(), ece)


def roi_soft_mask(probs, box: tuple[int, int, int, int], class_index: int, resolution: int = 28,
                  threshold: float = 0.5) -> dict:
    """The Mask R-CNN route on one region: a ``resolution`` x ``resolution`` soft mask of the box,
    resized back to the box and thresholded.

    ``box`` is (x0, y0, x1, y1) in pixels, x1 and y1 exclusive. Returns the small soft
    mask, the soft mask at box size, and the binary mask pasted into the full image.
    """
    p = _tensor(probs)
    _, h, w = p.shape
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box} is empty inside the {w}x{h} image.")
    crop = p[class_index, y0:y1, x0:x1][None, None]
    small = F.interpolate(crop, size=(resolution, resolution), mode="bilinear", align_corners=False)
    back = F.interpolate(small, size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)[0, 0]
    full = np.zeros((h, w), dtype=bool)
    full[y0:y1, x0:x1] = (back >= threshold).numpy()
    return {"small": small[0, 0].numpy(), "soft": back.numpy(), "mask": full}
