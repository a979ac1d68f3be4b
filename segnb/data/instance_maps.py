"""Instance maps: an ``instances/`` folder of id maps, COCO polygons / RLE in JSON, or a hub dataset's column.

- ``instances/`` (next to ``masks/``, or ``<split>/instances``): one grey PNG per image, paired
  by stem like the masks; 0 = no object, 1..n = one id per object (8 or 16 bit).
- A COCO-style JSON file (``instances.json``, ``annotations.json``, or
  ``instances_<split>.json``): ``images`` (``id``, ``file_name``, ``height``, ``width``) and
  ``annotations`` (``image_id``, ``segmentation`` as polygons, uncompressed RLE
  ``{"counts": [...], "size": [h, w]}`` or compressed RLE strings); each annotation becomes
  one instance id. Smaller objects are drawn last so they stay visible where masks overlap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segnb.data.columns import no_decode
from segnb.data.decode import decode_mask
from segnb.errors import DatasetError

__all__ = ["attach_hub_instances", "attach_instances", "coco_instance_map", "decode_rle"]

INSTANCE_DIRS = ["instances", "instance", "instance_maps", "instance_ids"]
COCO_NAMES = ["instances.json", "annotations.json", "coco.json"]


def decode_rle(counts, size) -> np.ndarray:
    """A COCO run-length encoding (a list of runs, or the compressed string) as a bool (H, W) mask.

    Runs alternate background and foreground, starting with background, in column-major order.
    """
    h, w = int(size[0]), int(size[1])
    if isinstance(counts, (str, bytes)):
        counts = _rle_from_string(counts.decode() if isinstance(counts, bytes) else counts)
    runs = np.asarray(counts, np.int64)
    if runs.sum() != h * w:
        raise DatasetError(f"an RLE of size {h}x{w} must cover {h * w} pixels; its runs add up to {runs.sum()}.")
    values = np.zeros(len(runs), bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape(w, h).T  # column-major


def _rle_from_string(text: str) -> list[int]:
    """COCO's compressed counts (pycocotools' ``rleFrString``): 5 bits per char, deltas from 2 back."""
    counts, p = [], 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _polygons(polygons, h: int, w: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("1", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        points = [(float(polygon[i]), float(polygon[i + 1])) for i in range(0, len(polygon) - 1, 2)]
        if len(points) >= 3:
            draw.polygon(points, fill=1, outline=1)
    return np.asarray(canvas, bool)


def coco_instance_map(annotations: list[dict], h: int, w: int, label: str = "") -> np.ndarray:
    """One image's annotations as an instance map (uint16, 0 = none), largest drawn first."""
    out = np.zeros((h, w), np.uint16)
    masks = []
    for number, ann in enumerate(annotations, start=1):
        seg = ann.get("segmentation")
        try:
            if isinstance(seg, list):
                region = _polygons(seg, h, w)
            elif isinstance(seg, dict) and "counts" in seg:
                region = decode_rle(seg["counts"], seg.get("size", (h, w)))
            else:
                raise DatasetError("segmentation must be polygons [[x0, y0, x1, y1, ...]] or an RLE dict")
        except (ValueError, TypeError, IndexError) as err:
            raise DatasetError(f"{label}: annotation {ann.get('id', number)} has an unreadable segmentation "
                               f"({err}).") from None
        if region.shape != (h, w):
            raise DatasetError(f"{label}: annotation {ann.get('id', number)} is {region.shape[::-1]} but its "
                               f"image is {(w, h)} (width x height).")
        masks.append((int(region.sum()), number, region))
    for _, number, region in sorted(masks, key=lambda m: -m[0]):
        out[region] = number
    return out


def _find(root: Path, split_folder: Path | None, split: str, names: list[str]) -> Path | None:
    for folder in [p for p in (split_folder, root / split if split else None, root) if p is not None]:
        if not folder.is_dir():
            continue
        children = {c.name.lower(): c for c in folder.iterdir()}
        for name in names:
            if name in children:
                found = children[name]
                if found.is_dir() and split and (found / split).is_dir() and folder == root:
                    return found / split
                return found
    return None


def attach_instances(root: Path, splits: dict, instances=None) -> bool:
    """Give each split of a folder dataset its instance maps, if the folder has any; True when found.

    ``instances`` names the folder or JSON file explicitly (relative to ``root`` or absolute).
    """
    found_any = False
    for name, split in splits.items():
        image_dir = split.pairs[0][0].parent
        split_folder = image_dir.parent if image_dir.parent != root else None
        if instances is not None:
            source = Path(instances).expanduser()
            source = source if source.is_absolute() else root / source
            if not source.exists():
                raise DatasetError(f"instances={str(instances)!r}: no such folder or JSON file under {root}.")
        else:
            source = _find(root, split_folder, name, INSTANCE_DIRS) or _find(
                root, split_folder, name, [f"instances_{name}.json", *COCO_NAMES])
        if source is None:
            continue
        split.attach_instance_maps(_from_folder(source, split) if source.is_dir() else _from_coco(source, split))
        found_any = True
    return found_any


def _from_folder(folder: Path, split):
    from PIL import Image

    files = {p.stem: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".png", ".tif", ".tiff")}
    stems = [image.stem for image, _ in split.pairs]
    missing = [s for s in stems if s not in files and f"{s}_instances" not in files]
    if missing:
        raise DatasetError(f"{folder}: {len(missing)} images have no instance map {missing[:10]}. Instance maps "
                           "pair with images by stem (image.png -> instances/image.png), 0 = no object.")

    def load(index: int) -> np.ndarray:
        stem = stems[index]
        path = files.get(stem) or files[f"{stem}_instances"]
        try:
            with Image.open(path) as im:
                array = np.asarray(im)
        except OSError as err:
            raise DatasetError(f"{path}: cannot read the instance map ({err}).") from None
        if array.ndim == 3:
            if not (array[..., :1] == array[..., : min(3, array.shape[2])]).all():
                raise DatasetError(f"{path}: an instance map is one id per pixel (grey); this one is colour. "
                                   "Save the ids as an 8- or 16-bit grey PNG.")
            array = array[..., 0]
        return array

    return load


def _from_coco(path: Path, split):
    try:
        coco = json.loads(path.read_text())
        images = {im["id"]: im for im in coco["images"]}
        annotations = coco["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations'): {err}.") from None
    by_stem = {Path(im["file_name"]).stem: im for im in images.values()}
    per_image: dict = {}
    for ann in annotations:
        per_image.setdefault(ann.get("image_id"), []).append(ann)
    stems = [image.stem for image, _ in split.pairs]
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} images are not listed in its 'images' {missing[:10]} "
                           "(matched by file name without extension).")

    def load(index: int) -> np.ndarray:
        info = by_stem[stems[index]]
        return coco_instance_map(per_image.get(info["id"], []), int(info["height"]), int(info["width"]),
                                 f"{path.name} {info['file_name']}")

    return load


HUB_INSTANCE_COLUMNS = ["instance", "instances", "instance_map", "instance_mask", "instance_ids", "instance_id"]


def attach_hub_instances(splits: dict, instance_column: str | None = None) -> str | None:
    """Give hub splits their instance maps from an instance column (named, or found by its name).

    Returns the column used, or None. A named column that a split lacks is an error.
    """
    column = instance_column
    for name, split in splits.items():
        columns = split.table.column_names
        if column is None:
            lower = {c.lower(): c for c in columns}
            column = next((lower[c] for c in HUB_INSTANCE_COLUMNS if c in lower), None)
            if column is None:
                return None
        if column not in columns:
            raise DatasetError(f"instance_column={column!r} is not a column of split {name!r}; its columns are "
                               f"{columns}.")
        table = split.table.cast_column(column, no_decode(split.table.features[column]))

        def load(index: int, table=table, split=split, column=column) -> np.ndarray:
            return decode_mask(table[index][column], f"{split.label(index)} ({column})")

        split.attach_instance_maps(load)
    return column
