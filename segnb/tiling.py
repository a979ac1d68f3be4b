"""Running a model at the scale it was trained at: input sizes, sliding windows and test-time augmentation.

Used by :func:`segnb.predict` and :func:`segnb.evaluate` (and through them by the CLI, the
Studio and the inspectors):

- :func:`plan` decides, for one image, the size the model runs at (the recorded
  :class:`segnb.models.io.TrainingInput`, or an explicit ``image_size``) and whether it runs
  whole or in tiles (automatically when the scaled image is more than :data:`AUTO_TILE` times
  the training size in height or width).
- :func:`sliding_window` runs overlapping tiles in batches and blends their logits with a
  Gaussian window (MONAI's ``sliding_window_inference``, MMSegmentation's ``mode='slide'``), so
  tile borders, where the network saw zero padding, weigh little and no seam shows.
- :func:`views` adds test-time augmentation: flips and scales, softmax probabilities averaged.

Logits are brought back to the image's (or the label's) own size bilinearly, as MMSegmentation
does before its argmax.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from segnb.errors import SegnbError
from segnb.models.io import TrainingInput, training_input

__all__ = ["AUTO_TILE", "training_input_of", "at_training_scale", "plan", "sliding_window", "views", "resize_image", "upsample_logits", "check_tta",
           "note_size"]

AUTO_TILE = 2.0  # tiled automatically above this many times the training size (height or width)
_MAX_ELEMENTS = 1 << 26  # logits upsampled to full size in chunks of at most this many floats


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise SegnbError(f"{name} must be an int or (height, width), got {value!r}.") from None
    if h < 1 or w < 1:
        raise SegnbError(f"{name} must be positive, got {value!r}.")
    return h, w


def training_input_of(data, image_size, mean, std, augment_scale=None, samples: int = 16) -> TrainingInput:
    """What :func:`segnb.fit` records: the training size, and the training images' own size when
    ``samples`` images spread over the training split all have one (their headers are all a
    decoded split gives cheaply; a set of mixed sizes shows them among so many)."""
    split = data[data.train_split]
    n = len(split)
    picks = sorted({round(i * (n - 1) / max(1, samples - 1)) for i in range(min(samples, n))})
    sizes = set()
    for i in picks:
        try:
            sizes.add(tuple(split[i][0].shape[:2]))
        except SegnbError:  # a bad file: the run names it when it meets it; the source size stays unknown
            sizes.add(None)
        if len(sizes) > 1:
            break
    source = next(iter(sizes)) if len(sizes) == 1 else None  # None too for one bad file
    size = _pair(image_size, "image_size") if image_size is not None else None
    zoom = math.sqrt(augment_scale[0] * augment_scale[1]) if augment_scale else 1.0
    return TrainingInput(size=size, source_size=source, mean=tuple(mean), std=tuple(std), zoom=zoom)


def plan(record: TrainingInput | None, hw: tuple[int, int], image_size=None, tile=None
         ) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(run_size, tile)`` for an image of size ``hw``.

    ``run_size``: ``image_size`` when given; else the image scaled by the training scale
    (the recorded ``size / source_size``); else the recorded ``size`` (training images of mixed
    sizes were each resized to it); else the image's own size (nothing recorded).

    ``tile``: ``(h, w)`` tiles as given; False for none; None (automatic): the training size,
    when ``run_size`` exceeds it :data:`AUTO_TILE` times in height or width.
    """
    if image_size is not None:
        run = _pair(image_size, "image_size")
    elif record is not None and record.scale is not None:
        sy, sx = record.scale
        run = (max(1, round(hw[0] * sy)), max(1, round(hw[1] * sx)))
    elif record is not None and record.size is not None:
        run = record.run_size
    else:
        run = (int(hw[0]), int(hw[1]))
    if tile is False:
        return run, None
    if tile is not None:
        return run, _pair(tile, "tile")
    train = record.train_size if record is not None else None
    if train is not None and (run[0] > AUTO_TILE * train[0] or run[1] > AUTO_TILE * train[1]):
        return run, train
    return run, None


def at_training_scale(model, x: torch.Tensor) -> torch.Tensor:
    """A batch (B, 3, H, W) resized to the size the model runs it at (the inspectors' input)."""
    size, _ = plan(training_input(model), tuple(x.shape[-2:]), tile=False)
    return resize_image(x, size)


def note_size(model, image_size) -> None:
    """One line when the size asked for differs from the size the model was trained at.

    (A model whose training size is unknown was noted once, when it was loaded.)"""
    record = training_input(model)
    if record is None or image_size is None or record.size is None:
        return
    h, w = _pair(image_size, "image_size")
    if (h, w) != record.size:
        warnings.warn(f"Running at {h}x{w}, not at the training size {record.size[0]}x{record.size[1]}: "
                      "objects appear at another scale than in training.", stacklevel=3)


def check_tta(tta) -> tuple[bool, tuple[float, ...]]:
    """``tta`` as ``(hflip, scales)``: ``("hflip",)``, ``("hflip", 0.75, 1.0, 1.25)``, ``(0.5, 1.0)``."""
    if tta in (None, False, ()):
        return False, (1.0,)
    if isinstance(tta, str):
        tta = (tta,)
    flip, scales = False, []
    for item in tta:
        if item == "hflip":
            flip = True
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and 0.1 <= item <= 8 and math.isfinite(item):
            scales.append(float(item))
        else:
            raise SegnbError(f"tta takes 'hflip' and scale factors between 0.1 and 8, e.g. ('hflip', 0.75, 1.0, "
                             f"1.25); got {item!r}.")
    return flip, tuple(scales) or (1.0,)


def resize_image(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Images (B, 3, H, W) resized as in training: bilinear with antialias."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Logits (B, K, h, w) to (B, K, H, W), bilinear (``align_corners=False``), as MMSegmentation does."""
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def window(tile: tuple[int, int], kind: str = "gaussian", device=None) -> torch.Tensor:
    """The blending weights of one tile (th, tw): a Gaussian with sigma 1/8 of the tile (MONAI's
    default), ``linear`` (a pyramid), or ``constant`` (plain averaging, which shows seams)."""
    def axis(n: int) -> torch.Tensor:
        t = (torch.arange(n, dtype=torch.float32, device=device) + 0.5) / n - 0.5  # (-0.5, 0.5)
        if kind == "gaussian":
            return torch.exp(-0.5 * (t / 0.125) ** 2)
        if kind == "linear":
            return 1.0 - 2.0 * t.abs() + 1.0 / n
        if kind == "constant":
            return torch.ones(n, device=device)
        raise SegnbError(f"window must be 'gaussian', 'linear' or 'constant', got {kind!r}.")
    w = axis(tile[0])[:, None] * axis(tile[1])[None, :]
    return (w / w.max()).clamp(min=1e-4)


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]  # the last tile flush with the border


def sliding_window(run, x: torch.Tensor, tile, overlap: float = 0.25, blend: str = "gaussian",
                   batch_size: int = 8) -> torch.Tensor:
    """Logits (B, K, H, W) of images ``x`` (B, 3, H, W) from overlapping ``tile`` s blended smoothly.

    Tiles advance by ``tile * (1 - overlap)``; the last one in each row and column is flush with
    the border, and an image smaller than a tile is run whole in that direction. Tiles of all
    images go through the model ``batch_size`` at a time; the model pads each as it needs
    (its padding multiple), so any tile size works.
    """
    if not 0 <= overlap < 1:
        raise SegnbError(f"overlap is the fraction two neighbouring tiles share, in [0, 1); got {overlap!r}.")
    th, tw = _pair(tile, "tile")
    b, _, h, w = x.shape
    th, tw = min(th, h), min(tw, w)
    sy, sx = max(1, int(th * (1 - overlap))), max(1, int(tw * (1 - overlap)))
    boxes = [(i, top, left) for i in range(b) for top in _starts(h, th, sy) for left in _starts(w, tw, sx)]
    weight = window((th, tw), blend, device=x.device)
    out = total = None
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start:start + batch_size]
        logits = run(torch.stack([x[i, :, t:t + th, c:c + tw] for i, t, c in chunk]))  # (n, K, th, tw)
        if out is None:
            out = torch.zeros(b, logits.shape[1], h, w, device=logits.device, dtype=torch.float32)
            total = torch.zeros(b, 1, h, w, device=logits.device, dtype=torch.float32)
        for (i, t, c), y in zip(chunk, logits, strict=True):
            out[i, :, t:t + th, c:c + tw] += y.float() * weight
            total[i, :, t:t + th, c:c + tw] += weight
    return out / total


def _forward(run, x, tile, overlap, blend, batch_size):
    if tile is None:
        return run(x)
    return sliding_window(run, x, tile, overlap, blend, batch_size)


def views(run, x: torch.Tensor, out_size: Sequence[int] | None = None, *, tile=None, overlap: float = 0.25,
          tta=None, temperature: float = 1.0, blend: str = "gaussian", batch_size: int = 8
          ) -> tuple[torch.Tensor, bool]:
    """Scores of images ``x`` (B, 3, h, w), already at the size the model runs at, at ``out_size``.

    Without ``tta``: ``(logits, False)``, upsampled bilinearly to ``out_size``. With ``tta``:
    ``(probabilities, True)``, the softmax (at ``temperature``) averaged over the flips and
    scales, each view's logits upsampled to ``out_size`` first. Tiles (``tile``) work with both;
    at a scale other than 1 the tile keeps its size, so a larger view has more tiles.
    """
    out_size = tuple(out_size) if out_size is not None else tuple(x.shape[-2:])
    flip, scales = check_tta(tta)
    if not tta:
        return upsample_logits(_forward(run, x, tile, overlap, blend, batch_size), out_size), False
    probs = None
    count = 0
    h, w = x.shape[-2:]
    for scale in scales:
        xs = resize_image(x, (max(1, round(h * scale)), max(1, round(w * scale))))
        for flipped in (False, True) if flip else (False,):
            inp = xs.flip(-1) if flipped else xs
            logits = _forward(run, inp, tile, overlap, blend, batch_size)
            if flipped:
                logits = logits.flip(-1)
            p = torch.softmax(upsample_logits(logits, out_size) / temperature, dim=1)
            probs = p if probs is None else probs + p
            count += 1
    return probs / count, True
