"""Reading images and masks from files, PIL objects and arrays, the way they come in the wild."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segnb.errors import DatasetError

__all__ = ["MAX_SIDE", "apply_lut", "read_image", "decode_mask", "read_class_names", "parse_color_map"]

MAX_SIDE = 8000
Image.MAX_IMAGE_PIXELS = None  # we downscale huge images ourselves, with a warning


def _open(obj, label: str) -> Image.Image | np.ndarray:
    if isinstance(obj, (str, Path)):
        try:
            image = Image.open(obj)
            image.load()
            return image
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise DatasetError(
                f"{label}: cannot read this image file ({err}). Replace or remove it; it may be "
                "truncated or not an image."
            ) from None
    if isinstance(obj, Mapping) and ("bytes" in obj or "path" in obj):  # a datasets Image cell
        import io

        source = io.BytesIO(obj["bytes"]) if obj.get("bytes") else obj.get("path")
        return _open(source, label) if not isinstance(source, io.BytesIO) else _open_bytes(source, label)
    return obj


def _open_bytes(buffer, label: str) -> Image.Image:
    try:
        image = Image.open(buffer)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{label}: cannot decode the image bytes ({err}).") from None


def _shrink(image: Image.Image, label: str, resample) -> Image.Image:
    if max(image.size) <= MAX_SIDE:
        return image
    scale = MAX_SIDE / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    warnings.warn(
        f"{label}: {image.size[0]}x{image.size[1]} px is larger than {MAX_SIDE} px; "
        f"downscaled to {size[0]}x{size[1]}.",
        stacklevel=3,
    )
    return image.resize(size, resample)


def read_image(obj, label: str = "image") -> np.ndarray:
    """A file path, PIL image, datasets cell or array -> array (grey, RGB, RGBA or 16-bit as stored)."""
    image = _open(obj, label)
    if isinstance(image, Image.Image):
        image = _shrink(image, label, Image.Resampling.BILINEAR)
        if image.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
            image = image.convert("RGB")
        return np.array(image)  # writable (torch warns on a read-only array)
    return np.asarray(image)


def parse_color_map(color_map) -> dict[tuple[int, int, int], int]:
    """``{(r, g, b): class}`` from a dict, a list of colours (index = class) or a CamVid-style CSV path."""
    if color_map is None:
        return {}
    if isinstance(color_map, (str, Path)):
        rows = [line.split(",") for line in Path(color_map).read_text().splitlines()[1:] if line.strip()]
        return {(int(r[-3]), int(r[-2]), int(r[-1])): i for i, r in enumerate(rows)}
    if isinstance(color_map, Mapping):
        return {tuple(int(c) for c in key): int(value) for key, value in color_map.items()}
    return {tuple(int(c) for c in colour): i for i, colour in enumerate(color_map)}


def decode_mask(obj, label: str = "mask", color_map: Mapping | None = None) -> np.ndarray:
    """Any stored mask -> integer array ``(H, W)`` of the stored values.

    Palette PNGs give their indices; grey and 16-bit masks their values; RGB
    masks are decoded with ``color_map`` (required unless R = G = B).
    """
    mask = _open(obj, label)
    if isinstance(mask, Image.Image):
        mask = _shrink(mask, label, Image.Resampling.NEAREST)
        if mask.mode == "PA":
            mask = mask.convert("P")
        if mask.mode in ("RGBA", "LA"):
            mask = mask.convert(mask.mode[:-1])
        mask = np.asarray(mask)
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim == 3 and mask.shape[2] in (3, 4):
        rgb = mask[:, :, :3].astype(np.int64)
        if color_map:
            codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
            out = np.full(codes.shape, -1, np.int64)
            for (r, g, b), cls in color_map.items():
                out[codes == ((r << 16) | (g << 8) | b)] = cls
            if (out < 0).any():
                unknown = np.unique(rgb[out < 0].reshape(-1, 3), axis=0)[:5].tolist()
                raise DatasetError(
                    f"{label}: colours {unknown} are not in the colour map. Add them to color_map= "
                    "(map void colours to 255)."
                )
            return out
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0]
        raise DatasetError(
            f"{label}: this mask is colour-coded RGB. Pass color_map={{(r, g, b): class_index, ...}}, "
            "a list of colours, or a CSV of name,r,g,b (as CamVid's class_dict.csv)."
        )
    if mask.dtype == bool:
        mask = mask.astype(np.uint8)
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all(np.isfinite(mask)) or not np.all(mask == np.round(mask)):
            raise DatasetError(f"{label}: mask values must be whole numbers (class indices).")
        mask = mask.astype(np.int64)
    return mask


def read_class_names(directory: Path) -> list[str] | None:
    """Class names from ``id2label.json``, ``labels.json`` or ``classes.txt`` in a folder, if any."""
    for name in ("id2label.json", "labels.json"):
        path = directory / name
        if path.is_file():
            data = json.loads(path.read_text())
            if isinstance(data, Mapping):
                if "id2label" in data:
                    data = data["id2label"]
                mapping = {int(k): str(v) for k, v in data.items()}
                return [mapping.get(i, f"class_{i}") for i in range(max(mapping) + 1)]
            return [str(v) for v in data]
    path = directory / "classes.txt"
    if path.is_file():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return None


def remap_labels(mask: np.ndarray, reduce_labels: bool, binary: bool, ignore_index: int) -> np.ndarray:
    """Stored values -> class indices.

    ``binary``: a 0/255 mask becomes 0/1. ``reduce_labels``: 0 (background
    or "other", as in ADE20K) becomes ``ignore_index`` and every other value
    drops by one.
    """
    mask = mask.astype(np.int64, copy=False)
    if binary:
        mask = np.where(mask == 255, 1, mask)
    if reduce_labels:
        void = mask == ignore_index
        mask = np.where(mask == 0, ignore_index, mask - 1)
        mask[void] = ignore_index
    return mask


def apply_lut(mask: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """Stored values through a lookup table (values past its end are kept)."""
    if lut is None:
        return mask
    mask = np.asarray(mask, dtype=np.int64)
    inside = (mask >= 0) & (mask < len(lut))
    return np.where(inside, lut[np.clip(mask, 0, len(lut) - 1)], mask)
