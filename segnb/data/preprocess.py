"""One preprocessing path for every model input: normalise, resize an image with its mask, check classes.

The transform (:class:`segnb.data.SegTransform`), the training cache and its GPU augmentation,
inference (:class:`segnb.infer.Inference`) and the click model all call these, so an image is
prepared the same way wherever it goes:

- :func:`normalize`: ``(x - mean) / std`` per channel, ``uint8`` scaled to ``[0, 1]`` first. The
  mean and std tensors are made once per device and dtype and kept, so a batch on a GPU never
  waits for a small copy from Python lists.
- :func:`resize`: the image bilinearly (antialiased), the mask with nearest by index
  (:func:`nearest_exact_index`, the rows and columns ``F.interpolate(mode="nearest-exact")``
  picks), so no invented class appears at a boundary.
- :func:`to_rgb_uint8`: grey, RGBA, bool, 16-bit and float images as ``uint8`` RGB, by one rule for
  what each dtype's values mean (float 0..1, or 0..255 when a value exceeds 1; ambiguous ones refused).
- :func:`check_classes`: a model (or a count of logits) and a dataset must have the same classes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from segnb.errors import DatasetError, SegnbError

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "check_classes", "nearest_exact_index", "normalize", "resize",
           "resize_image", "resize_mask", "to_rgb_uint8"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb_uint8(image: np.ndarray, label: str = "image", error: type[Exception] = DatasetError) -> np.ndarray:
    """Grey, grey+alpha, RGBA, bool, 16-bit and float images become ``uint8`` RGB ``(H, W, 3)``.

    The value range is read from the dtype and the values, the same way everywhere in segnb
    (datasets, ``predict``, the interactive tools): uint8 is 0..255; bool is 0/255; other
    integer types are 0..255 when no value exceeds 255, else 16-bit 0..65535; floats are 0..1
    when no value exceeds 1, else 0..255. A float image with values below 0 or above 255
    (already normalised, or another scale), NaN or inf, an empty image and negative integers are
    refused with ``error``: the scale is ambiguous, and a guess would be silently wrong.
    """
    array = np.asarray(image)
    if array.size == 0:
        raise error(f"{label}: the image is empty (shape {array.shape}); an image has at least one pixel.")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.integer):
            low, top = int(array.min()), int(array.max())
            if low < 0 or top > 65535:
                raise error(f"{label}: integer pixel values run from {low} to {top}; images are 0..255 (8-bit) "
                            "or 0..65535 (16-bit). Rescale it to one of those first.")
            scale = 65535 if top > 255 else 255
            array = (array.astype(np.float32) * (255.0 / scale)).round().astype(np.uint8)
        elif np.issubdtype(array.dtype, np.floating):
            if not np.isfinite(array).all():
                raise error(f"{label}: the image holds NaN or infinite values; replace them (np.nan_to_num) "
                            "or fix where the image comes from.")
            low, top = float(array.min()), float(array.max())
            if low < 0 or top > 255:
                raise error(
                    f"{label}: float pixel values run from {low:.3g} to {top:.3g}. A float image is 0..1, or "
                    "0..255 when a value exceeds 1; this one is neither (already normalised?). Rescale it "
                    "to 0..1, or give a normalised torch tensor (3, H, W) to predict.")
            scale = 255.0 if top <= 1.0 else 1.0
            array = np.clip(array.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
        else:
            raise error(f"{label}: cannot read an image of dtype {array.dtype}; use uint8, uint16, bool or float.")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] in (1, 2):  # grey, grey + alpha
        array = np.repeat(array[:, :, :1], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:  # RGBA: drop alpha
        array = array[:, :, :3]
    elif array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):  # CHW
        array = to_rgb_uint8(np.moveaxis(array, 0, 2), label, error)
    if array.ndim != 3 or array.shape[2] != 3:
        raise error(
            f"{label}: expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {array.shape}."
        )
    return np.ascontiguousarray(array)


@functools.lru_cache(maxsize=64)
def _statistics(mean: tuple[float, ...], std: tuple[float, ...], device, dtype):
    """``(mean, std)`` as ``(C, 1, 1)`` tensors on ``device``: made once, never changed in place."""
    import torch

    return (torch.tensor(mean, dtype=dtype, device=device).view(-1, 1, 1),
            torch.tensor(std, dtype=dtype, device=device).view(-1, 1, 1))


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel of ``(C, H, W)`` or ``(B, C, H, W)``; ``uint8`` is scaled to [0, 1] first."""
    import torch

    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images
    if torch.compiler.is_compiling() or _is_fake(x):
        # Traced (torch.export, compile): constants of this graph, never kept in the cache, where a
        # traced tensor would outlive its trace and reach eager code.
        m = torch.tensor(tuple(map(float, mean)), dtype=x.dtype, device=x.device).view(-1, 1, 1)
        s = torch.tensor(tuple(map(float, std)), dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - m) / s
    m, s = _statistics(tuple(map(float, mean)), tuple(map(float, std)), x.device, x.dtype)
    return (x - m) / s


def _is_fake(x) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return is_fake(x)


def nearest_exact_index(size_in: int, size_out: int) -> np.ndarray:
    """Source rows (or columns) of a nearest resize, as ``F.interpolate(mode="nearest-exact")`` picks them."""
    scale = size_in / size_out
    return np.minimum(np.floor((np.arange(size_out) + 0.5) * scale).astype(np.int64), size_in - 1)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``(3, H, W)`` image resized bilinearly with antialiasing, in its own dtype.

    ``uint8`` takes torch's channels-last path (about 25x faster than float, within one grey level).
    """
    import torch
    import torch.nn.functional as F

    size = (int(size[0]), int(size[1]))
    x = image[None]
    if image.dtype == torch.uint8:
        x = x.contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0].contiguous()


def resize_mask(mask, size: tuple[int, int]):
    """A ``(H, W)`` mask (numpy or tensor) resized with nearest, by index: every value is one it had."""
    rows = nearest_exact_index(mask.shape[0], int(size[0]))
    columns = nearest_exact_index(mask.shape[1], int(size[1]))
    if isinstance(mask, np.ndarray):
        return mask[rows[:, None], columns[None, :]]
    import torch

    rows_t = torch.from_numpy(rows).to(mask.device)
    columns_t = torch.from_numpy(columns).to(mask.device)
    return mask[rows_t[:, None], columns_t[None, :]]


def resize(image: torch.Tensor, mask, size: tuple[int, int]):
    """An image ``(3, H, W)`` and its mask ``(H, W)`` resized to ``size`` together (:func:`resize_image`,
    :func:`resize_mask`)."""
    return resize_image(image, size), resize_mask(mask, size)


def check_classes(model, data, remedy: str | None = None) -> None:
    """Refuse a model (or a class count, e.g. of its logits) whose classes are not the dataset's.

    Scoring or training a 12-class model on a 7-class dataset would leave out every pixel of
    classes 7-11 without a word. ``remedy`` replaces the default advice on what to do.
    """
    model_classes = model if isinstance(model, int) else getattr(model, "num_classes", None)
    if model_classes is None or model_classes == data.num_classes:
        return
    remedy = remedy or ("Evaluate on the dataset the model was trained on, or train a model for this one "
                        "(build_model(..., class_names=data.class_names)).")
    raise SegnbError(f"The model predicts {model_classes} classes but the dataset {data.source!r} has "
                     f"{data.num_classes}: its scores would silently leave out pixels. {remedy}")
