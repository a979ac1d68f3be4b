"""Write a dataset out as a folder of image and mask files that :func:`segnb.load_dataset` reads back.

Useful to hand a dataset to another tool, and to benchmark the real input path
(JPEG decoding, PNG masks) on data anyone can make offline::

    segnb.data.export_folder(segnb.load_dataset("shapes"), "/tmp/shapes-jpeg", size=(360, 480))
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segnb.data.preprocess import resize_image, resize_mask
from segnb.errors import DatasetError

__all__ = ["export_folder"]


def export_folder(data, root, size: tuple[int, int] | None = None, image_format: str = "jpg",
                  quality: int = 90) -> Path:
    """Write ``root/<split>/images/*.jpg`` and ``root/<split>/masks/*.png`` plus ``classes.txt``.

    Args:
        data: a :class:`segnb.data.SegmentationDataset`.
        size: ``(height, width)`` to resize to (images bilinear, masks nearest); ``None`` keeps it.
        image_format: ``"jpg"`` (lossy, like most photo datasets) or ``"png"``.
    Masks are always PNG (lossless): 8-bit below 256 classes, void kept as ``data.ignore_index``.
    """
    if image_format not in ("jpg", "png"):
        raise DatasetError(f"image_format must be 'jpg' or 'png', got {image_format!r}.")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"{root} is not empty; export into a new folder so nothing is overwritten.")
    for split_name in data.split_names:
        images_dir, masks_dir = root / split_name / "images", root / split_name / "masks"
        images_dir.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        split = data[split_name]
        for index in range(len(split)):
            image, mask = split[index]
            if size is not None:
                x = resize_image(torch.from_numpy(image).permute(2, 0, 1).float(), size)  # float: then rounded
                image = x.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
                mask = resize_mask(mask, size)
            stem = f"{index:05d}"
            options = {"quality": quality} if image_format == "jpg" else {}
            Image.fromarray(image).save(images_dir / f"{stem}.{image_format}", **options)
            dtype = np.uint8 if max(data.num_classes, data.ignore_index) <= 255 else np.uint16
            Image.fromarray(mask.astype(dtype)).save(masks_dir / f"{stem}.png")
    (root / "classes.txt").write_text("\n".join(data.class_names) + "\n")
    (root / "export.json").write_text(json.dumps({"source": data.source, "ignore_index": data.ignore_index,
                                                  "size": size, "image_format": image_format}))
    return root
