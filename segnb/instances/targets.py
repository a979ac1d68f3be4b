"""From a semantic mask and an instance map to per-object targets (boxes, labels, masks), and back."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from segnb.data.base import SegmentationDataset, SegTransform
from segnb.errors import DatasetError

__all__ = ["instance_targets", "InstanceSplit", "collate_instances", "check_instance_data"]


def instance_targets(mask, instances, thing_ids, ignore_index: int = 255) -> dict:
    """One dict per image, as torchvision's detectors take it.

    Args:
        mask: semantic class ids ``(H, W)``.
        instances: instance ids ``(H, W)``, 0 = no object.
        thing_ids: semantic ids of the countable classes; instances of other classes are skipped.

    Returns:
        ``boxes`` float (N, 4) as x0, y0, x1, y1 (pixel edges), ``labels`` int64 (N,) semantic ids
        (each object's majority class, void pixels ignored), ``masks`` uint8 (N, H, W).
    """
    mask = torch.as_tensor(np.asarray(mask)).long()
    instances = torch.as_tensor(np.asarray(instances)).long()
    ids = [int(i) for i in torch.unique(instances) if i > 0]
    boxes, labels, masks = [], [], []
    for i in ids:
        region = instances == i
        classes = mask[region]
        classes = classes[classes != ignore_index]
        if classes.numel() == 0:
            continue
        label = int(torch.mode(classes).values)
        if label not in thing_ids:
            continue
        rows = torch.nonzero(region.any(1)).flatten()
        cols = torch.nonzero(region.any(0)).flatten()
        boxes.append([float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)])
        labels.append(label)
        masks.append(region.to(torch.uint8))
    h, w = mask.shape
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=torch.uint8),
    }


def check_instance_data(data: SegmentationDataset, things: list[str], splits=None) -> None:
    """A clear error when a dataset cannot train or score an instance model, and a warning with counts
    when its instance maps disagree with its semantic masks.

    ``splits`` (default: every split) are read once each: a split without a single object of
    ``things`` is refused (its mask AP would be NaN); objects that lie on no thing class (a
    mismatched map, a COCO annotation of another class) and thing pixels without an object
    are counted in one warning per split.
    """
    missing = [name for name, split in data.splits.items() if not split.has_instances]
    if missing:
        raise DatasetError(
            f"{data.source}: the splits {missing} have no instance maps, which Mask R-CNN needs. The built-in "
            "'shapes' has them; a folder needs instances/ (one id per object) or a COCO JSON; a hub dataset "
            "an instance column (instance_column=)."
        )
    unknown = [t for t in things if t not in data.class_names]
    if unknown:
        raise DatasetError(f"things {unknown} are not classes of {data.source}: {data.class_names}.")
    thing_ids = [data.class_names.index(t) for t in things]
    for name in splits if splits is not None else list(data.splits):
        survey = survey_instances(data[name], thing_ids, data.ignore_index)
        if survey["objects"] == 0:
            raise DatasetError(
                f"{data.source}: split {name!r} has no objects of the things {list(things)} in its "
                f"{survey['images']} instance maps ({survey['dropped']} ids lie on other classes), so mask AP "
                "would be NaN and there is nothing to learn. Check that the instance maps belong to these "
                "masks, and that things= names the classes the objects are drawn with.")
        problems = []
        if survey["dropped"]:
            problems.append(f"{survey['dropped']} of {survey['dropped'] + survey['objects']} objects lie on no "
                            "thing class (or only on void) in the semantic masks and are left out")
        if survey["uncovered"] > 0.05 * max(survey["thing_pixels"], 1):
            problems.append(f"{survey['uncovered']:,} of {survey['thing_pixels']:,} thing pixels belong to "
                            "no object")
        if survey["disagree"] > 0.05 * max(survey["object_pixels"], 1):
            problems.append(f"{survey['disagree']:,} of {survey['object_pixels']:,} object pixels have "
                            "another class than their object")
        if problems:
            warnings.warn(
                f"{data.source}, split {name!r}: the instance maps do not match the semantic masks: "
                f"{'; '.join(problems)}. Each object's class is read from the semantic mask under it: check "
                "that each instance map belongs to its mask and that things= lists the objects' classes.",
                stacklevel=3)


def survey_instances(split, thing_ids, ignore_index: int = 255) -> dict:
    """Counts over a split's instance maps against its masks, read once and kept on the split:
    ``objects`` (of a thing class), ``dropped`` (ids on no thing class, or only on void),
    ``thing_pixels``, ``uncovered`` (thing pixels without an id), ``object_pixels`` and
    ``disagree`` (object pixels of a class other than their object's)."""
    key = (tuple(thing_ids), ignore_index)
    cache = split.__dict__.setdefault("_instance_survey", {})
    if key in cache:
        return cache[key]
    things = np.asarray(sorted(thing_ids), np.int64)
    totals = dict.fromkeys(("objects", "dropped", "thing_pixels", "uncovered", "object_pixels", "disagree"), 0)
    for index in range(len(split)):
        _, mask, ids = split.get(index, instances=True)
        is_thing = np.isin(mask, things)
        totals["thing_pixels"] += int(is_thing.sum())
        totals["uncovered"] += int((is_thing & (ids == 0)).sum())
        inside = ids > 0
        object_ids = np.unique(ids[inside])
        valid = inside & (mask != ignore_index)
        width = int(mask[valid].max(initial=0)) + 1
        pairs, counts = np.unique(ids[valid] * width + mask[valid], return_counts=True)
        owner, cls = pairs // width, pairs % width
        order = np.lexsort((-counts, owner))  # per object, its most frequent class first
        first = np.ones(len(order), bool)
        first[1:] = owner[order][1:] != owner[order][:-1]
        labels = cls[order][first]
        kept = np.isin(labels, things)
        totals["objects"] += int(kept.sum())
        totals["dropped"] += len(object_ids) - int(kept.sum())
        per_object = np.add.reduceat(counts[order], np.flatnonzero(first)) if len(order) else np.zeros(0, int)
        totals["object_pixels"] += int(per_object[kept].sum())
        totals["disagree"] += int((per_object - counts[order][first])[kept].sum())
    totals["images"] = len(split)
    cache[key] = totals
    return totals


class InstanceSplit(Dataset):
    """A split as ``(image (3, H, W) normalised, target dict)``; flips image, mask and instances together."""

    def __init__(self, data: SegmentationDataset, split: str, transform: SegTransform, thing_ids: list[int]):
        # The semantic class and instance id ride through the transform as one number; its padding
        # value is -1, which no (class, id) pair can be (with 255, instance id 255 of class 0 was
        # taken for padding and dropped).
        self.split, self.transform, self.thing_ids = data[split], dataclasses.replace(transform, ignore_index=-1), thing_ids
        self.ignore_index = data.ignore_index

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image, mask, instances = self.split.get(index, instances=True)
        # Instances ride through the transform as a second "mask" (nearest resizing, same flip).
        if instances.max(initial=0) > 65535:
            raise DatasetError(f"{self.split.label(index)}: instance ids go up to {instances.max()}; at most "
                               "65535 objects per image are supported (a 16-bit instance map).")
        stacked = mask.astype(np.int64) * 65536 + instances
        x, y = self.transform(image, stacked)
        y = y.numpy()
        semantic, ids = y // 65536, y % 65536
        padded = y == -1  # pixels padded by a random crop
        semantic[padded], ids[padded] = self.ignore_index, 0
        return x, instance_targets(semantic, ids, self.thing_ids, self.ignore_index)


def collate_instances(batch):
    """Stack the images (same size after the transform), keep the targets as a list."""
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]
