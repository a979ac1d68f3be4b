"""The tensor side of a dataset: a raw pair becomes tensors (:class:`SegTransform`), a split a
torch ``Dataset`` (:class:`TorchSplit`).

Apart from :mod:`segnb.data.base` so that loading and looking at a dataset needs no PyTorch;
``segnb.data.SegTransform`` and ``segnb.data.base.SegTransform`` import this on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset as TorchDataset

from segnb.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize, resize

if TYPE_CHECKING:
    from segnb.data.base import Split

__all__ = ["SegTransform", "TorchSplit"]


@dataclass
class SegTransform:
    """Turns a raw pair into tensors: resize or crop, flip, normalise.

    Images are resized bilinearly with antialiasing; masks always with nearest,
    so no invented class appears at a boundary. With ``train=True`` the image
    is flipped horizontally at random and, if ``scale`` is set, rescaled by a
    random factor and cropped back to ``size``.

    Args:
        size: ``(height, width)`` or one int; ``None`` keeps each image's size.
        train: apply random augmentation.
        mean, std: normalisation, matching the encoder's pretrained configuration.
        hflip: random horizontal flip when training.
        scale: range of random rescaling when training, e.g. ``(0.75, 1.5)``.
        ignore_index: the value that padded mask pixels get.
    """

    size: int | tuple[int, int] | None = None
    train: bool = False
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    hflip: bool = True
    scale: tuple[float, float] | None = None
    ignore_index: int = 255

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
        y = torch.from_numpy(mask)  # (H, W)
        size = (self.size, self.size) if isinstance(self.size, int) else self.size
        if self.train and self.scale is not None:
            factor = float(torch.empty(1).uniform_(*self.scale))
            target = size or x.shape[1:]
            scaled = (max(1, round(target[0] * factor)), max(1, round(target[1] * factor)))
            x, y = resize(x, y, scaled)
            if size is not None:
                x, y = _random_crop(x, y, size, self.ignore_index)
        elif size is not None and tuple(x.shape[1:]) != tuple(size):
            x, y = resize(x, y, size)
        if self.train and self.hflip and bool(torch.rand(()) < 0.5):
            x, y = x.flip(-1), y.flip(-1)
        return normalize(x, self.mean, self.std), y.long()


def _random_crop(x, y, size, ignore_index):
    h, w = x.shape[1:]
    th, tw = size
    if h < th or w < tw:  # pad: image with zeros, mask with void
        ph, pw = max(0, th - h), max(0, tw - w)
        x = F.pad(x, (0, pw, 0, ph))
        y = F.pad(y, (0, pw, 0, ph), value=ignore_index)
        h, w = x.shape[1:]
    top = int(torch.randint(0, h - th + 1, ()))
    left = int(torch.randint(0, w - tw + 1, ()))
    return x[:, top : top + th, left : left + tw], y[top : top + th, left : left + tw]


class TorchSplit(TorchDataset):
    """A :class:`Split` with a :class:`SegTransform`: yields ``(image (3,H,W) float, mask (H,W) long)``."""

    def __init__(self, split: Split, transform: SegTransform):
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image, mask = self.split[index]
        return self.transform(image, mask)
