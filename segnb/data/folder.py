"""A local folder of image files and mask files, in the layouts people actually use.

Recognised layouts (folder names are case-insensitive):

- ``images/`` + ``masks/`` (or ``labels/``, ``annotations/``, ``gt/``; singular too, as ISBI's
  ``image/`` + ``label/``), optionally with split subfolders (``images/train``, ``masks/train``);
- per-split folders, each holding images and masks (``train/images``, ``train/masks``, ...);
- sibling folders as in SegNet's CamVid: ``train/`` + ``trainannot/`` (or ``train_labels/``,
  ``train_masks/``).

Images and masks pair by file stem (a mask may add ``_mask``, ``_label``, ``_L``...).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from segnb.data.base import SegmentationDataset, Split, given_options
from segnb.data.decode import (
    apply_lut,
    decode_mask,
    parse_color_map,
    read_class_names,
    read_image,
    remap_labels,
)
from segnb.data.guess import LOSSY_SUFFIXES, check_label_options, settle_labels
from segnb.data.instance_maps import attach_instances
from segnb.errors import DatasetError

__all__ = ["load_folder", "find_layout"]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
IMAGE_DIRS = ["images", "image", "imgs", "img", "jpegimages", "rgb", "inputs"]
MASK_DIRS = [
    "masks", "mask", "labels", "label", "annotations", "annotation", "gt", "groundtruth",
    "ground_truth", "segmentationclass", "segmentations", "targets",
]
SPLITS = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
          "validation": "validation", "test": "test", "testing": "test"}
MASK_SUFFIXES = ["_mask", "_masks", "_label", "_labels", "_gt", "_seg", "_annotation", "_L", "-mask", "-label"]


def _child(parent: Path, names: list[str]) -> Path | None:
    children = {c.name.lower(): c for c in parent.iterdir() if c.is_dir()}
    for name in names:
        if name in children:
            return children[name]
    return None


def _split_dirs(parent: Path) -> dict[str, Path]:
    return {SPLITS[c.name.lower()]: c for c in sorted(parent.iterdir()) if c.is_dir() and c.name.lower() in SPLITS}


def find_layout(root: Path) -> dict[str, tuple[Path, Path]]:
    """``{split: (image_dir, mask_dir)}`` for a folder, or a DatasetError that says what was found."""
    layout: dict[str, tuple[Path, Path]] = {}
    for split, folder in _split_dirs(root).items():
        images, masks = _child(folder, IMAGE_DIRS), _child(folder, MASK_DIRS)
        if images and masks:
            layout[split] = (images, masks)
            continue
        siblings = [f"{folder.name}annot", f"{folder.name}_annot", f"{folder.name}_labels",
                    f"{folder.name}_label", f"{folder.name}labels", f"{folder.name}_masks",
                    f"{folder.name}_mask", f"{folder.name}_gt"]
        sibling = _child(root, [s.lower() for s in siblings])
        if sibling:
            layout[split] = (folder, sibling)
    if layout:
        return layout
    images, masks = _child(root, IMAGE_DIRS), _child(root, MASK_DIRS)
    if images and masks:
        image_splits, mask_splits = _split_dirs(images), _split_dirs(masks)
        common = [s for s in image_splits if s in mask_splits]
        if common:
            return {s: (image_splits[s], mask_splits[s]) for s in common}
        return {"": (images, masks)}
    found = sorted(c.name + ("/" if c.is_dir() else "") for c in root.iterdir())[:20]
    raise DatasetError(
        f"{root}: no images/masks layout found (it holds {found or 'nothing'}). Use images/ + masks/ "
        "(or labels/, annotations/), per-split folders train/images + train/masks, or CamVid-style "
        "train/ + trainannot/."
    )


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _mask_stem(path: Path) -> str:
    stem = path.stem
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _pair(image_dir: Path, mask_dir: Path, allow_unpaired: bool) -> list[tuple[Path, Path]]:
    images, masks = _files(image_dir), _files(mask_dir)
    if not images:
        raise DatasetError(f"{image_dir}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    if not masks:
        raise DatasetError(f"{mask_dir}: no mask files ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    by_stem = {}
    for mask in masks:
        by_stem.setdefault(mask.stem, mask)
        by_stem.setdefault(_mask_stem(mask), mask)
    pairs = [(image, by_stem[image.stem]) for image in images if image.stem in by_stem]
    used = {m for _, m in pairs}
    lonely_images = [i.stem for i in images if i.stem not in by_stem]
    lonely_masks = [m.stem for m in masks if m not in used]
    if lonely_images or lonely_masks:
        message = (
            f"{image_dir} and {mask_dir}: {len(lonely_images)} images have no mask "
            f"{lonely_images[:10]} and {len(lonely_masks)} masks have no image {lonely_masks[:10]}. "
            "Images and masks pair by file stem (masks may add _mask or _label)."
        )
        if not allow_unpaired or not pairs:
            raise DatasetError(message + " Pass allow_unpaired=True to use only the pairs.")
        warnings.warn(message + " Using only the pairs.", stacklevel=3)
    return pairs


class _FileSplit(Split):
    def __init__(self, name, pairs, root, reduce_labels, binary, color_map, ignore_index):
        super().__init__(name, len(pairs))
        self.pairs, self.root = pairs, root
        self.reduce_labels, self.binary, self.color_map = reduce_labels, binary, color_map
        self.ignore_index = ignore_index
        self.lut = None  # snaps lossy (JPEG) mask values to the class values

    def map_values(self, values):
        values = remap_labels(apply_lut(values, self.lut), self.reduce_labels, self.binary, self.ignore_index)
        return super().map_values(values)

    def label(self, index: int) -> str:
        image, mask = self.pairs[index]
        return f"{image.relative_to(self.root)} / {mask.relative_to(self.root)}"

    def raw_mask(self, index: int) -> np.ndarray:
        return decode_mask(self.pairs[index][1], str(self.pairs[index][1]), self.color_map)

    def _load(self, index: int):
        image_path, mask_path = self.pairs[index]
        image = read_image(image_path, str(image_path))
        mask = apply_lut(decode_mask(mask_path, str(mask_path), self.color_map), self.lut)
        return image, remap_labels(mask, self.reduce_labels, self.binary, self.ignore_index)


def load_folder(
    root,
    *,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    reduce_labels: bool = False,
    binary: bool | None = None,
    color_map=None,
    val_fraction: float = 0.2,
    seed: int = 0,
    allow_unpaired: bool = False,
    lossy_masks: str = "auto",
    instances=None,
    things: list[str] | None = None,
) -> SegmentationDataset:
    """Load a local folder of images and masks (see the module docstring for layouts).

    Without a validation split (no ``val/`` with masks), a seeded ``val_fraction`` of the
    training pairs is split off, and ``data.notes`` says so. JPEG masks are snapped to their
    class values with a warning, or refused where that cannot be right (``lossy_masks``).
    Instance maps come from an ``instances/`` folder or a COCO JSON file when there is one
    (``instances=`` names it; see :mod:`segnb.data.instance_maps`); ``things=`` names the
    countable classes (``data.things``).
    """
    options = given_options(load_folder, locals())
    check_label_options(num_classes, ignore_index, class_names)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder.")
    if not any(root.iterdir()):
        raise DatasetError(f"{root} is empty: put images in {root}/images and masks in {root}/masks.")
    layout = find_layout(root)
    cmap = parse_color_map(color_map if color_map is not None else _class_dict(root))
    pairs = {split: _pair(images, masks, allow_unpaired) for split, (images, masks) in layout.items()}
    notes: list[str] = []
    if list(pairs) == [""]:
        pairs["train"] = pairs.pop("")
    held_out = [s for s in pairs if s != "train"]
    if "train" in pairs and not held_out:
        everything = pairs["train"]
        order = np.random.default_rng(seed).permutation(len(everything))
        n_val = round(len(everything) * val_fraction) if len(everything) > 1 else 0
        n_val = min(max(n_val, 1 if val_fraction > 0 and len(everything) > 1 else 0), len(everything) - 1)
        pairs["train"] = [everything[i] for i in sorted(order[n_val:])]
        if n_val:
            pairs["validation"] = [everything[i] for i in sorted(order[:n_val])]
            notes.append(
                f"No validation split with masks was found: {n_val} of the {len(everything)} training "
                f"pairs ({val_fraction:.0%}, seed={seed}) were split off as validation. Pass "
                "val_fraction= or seed= to change it, or add val/images + val/masks."
            )
        else:
            notes.append(
                f"NO VALIDATION SPLIT: no val/ folder with masks, and {len(everything)} training "
                f"pair(s) with val_fraction={val_fraction} leave none to hold out. Every score is on "
                "the training images. Add val/images + val/masks, or more images."
            )
            if val_fraction > 0:  # asked for a validation split and got none: say it loudly
                warnings.warn(f"{root}: {notes[-1]}", stacklevel=2)
    splits = {name: _FileSplit(name, p, root, reduce_labels, False, cmap, ignore_index) for name, p in pairs.items()}
    has_instances = attach_instances(root, splits, instances)
    probe = splits.get("train") or next(iter(splits.values()))

    first_mask = _open_mask(probe.pairs[0][1])
    palette = None
    if first_mask.mode == "P" and first_mask.getpalette():
        palette = np.array(first_mask.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
    lossy = any(m.suffix.lower() in LOSSY_SUFFIXES for p in pairs.values() for _, m in p)
    known_names = class_names or read_class_names(root) or _class_dict_names(root)
    _, binary, num_classes, guessed = settle_labels(
        probe, splits, class_names=known_names, num_classes=num_classes, ignore_index=ignore_index,
        binary=binary, reduce_labels=reduce_labels, lossy=lossy, lossy_masks=lossy_masks,
        palette_masks=first_mask.mode == "P", color_map=cmap,
    )
    notes += guessed

    class_names = known_names
    if class_names is None and cmap:
        class_names = [f"class_{i}" for i in range(max(v for v in cmap.values() if v != ignore_index) + 1)]
    if class_names is None:
        class_names = ["background", "foreground"] if binary and num_classes == 2 else [
            f"class_{i}" for i in range(num_classes)
        ]
    if num_classes is not None and num_classes != len(class_names):
        raise DatasetError(f"num_classes={num_classes} but {len(class_names)} class names were given.")
    return SegmentationDataset(
        splits=splits,
        class_names=list(class_names),
        ignore_index=ignore_index,
        palette=palette,
        source=str(root),
        things=things,
        info={"layout": {k: [str(a), str(b)] for k, (a, b) in layout.items()}, "binary_mask": binary,
              "instances": has_instances},
        notes=notes,
        options=options,
    )


def _open_mask(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, SyntaxError, ValueError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise DatasetError(
            f"{path}: cannot read this mask file ({type(err).__name__}: {err}). Replace or remove "
            "it; it may be truncated or not an image."
        ) from None


def _class_dict(root: Path):
    path = root / "class_dict.csv"
    return path if path.is_file() else None


def _class_dict_names(root: Path) -> list[str] | None:
    path = _class_dict(root)
    if path is None:
        return None
    return [line.split(",")[0].strip() for line in path.read_text().splitlines()[1:] if line.strip()]

