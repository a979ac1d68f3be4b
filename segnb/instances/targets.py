"""From a semantic mask and an instance map to per-object targets (boxes, labels, masks), and back."""

from __future__ import annotations

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


def check_instance_data(data: SegmentationDataset, things: list[str]) -> None:
    """A clear error when a dataset cannot train an instance model."""
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


class InstanceSplit(Dataset):
    """A split as ``(image (3, H, W) normalised, target dict)``; flips image, mask and instances together."""

    def __init__(self, data: SegmentationDataset, split: str, transform: SegTransform, thing_ids: list[int]):
        self.split, self.transform, self.thing_ids = data[split], transform, thing_ids
        self.ignore_index = data.ignore_index

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image, mask, instances = self.split.get(index, instances=True)
        # Instances ride through the transform as a second "mask" (nearest resizing, same flip).
        stacked = mask.astype(np.int64) * 65536 + instances
        x, y = self.transform(image, stacked)
        y = y.numpy()
        semantic, ids = y // 65536, y % 65536
        padded = y == self.transform.ignore_index  # pixels padded by a random crop
        semantic[padded], ids[padded] = self.ignore_index, 0
        return x, instance_targets(semantic, ids, self.thing_ids, self.ignore_index)


def collate_instances(batch):
    """Stack the images (same size after the transform), keep the targets as a list."""
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]
