"""One dataset interface, whatever the source; one job in one file: the dataset, its splits and their reports.

A :class:`SegmentationDataset` holds named :class:`Split` objects. A split
yields raw pairs ``(image, mask)``: ``image`` is ``uint8`` of shape
``(H, W, 3)`` and ``mask`` is ``int64`` of shape ``(H, W)`` holding class
indices in ``[0, num_classes)`` or ``ignore_index`` (void). Every source
(built-in shapes, hub, local folder, in-memory ``datasets.Dataset``) only has
to implement :meth:`Split._load`; checks and transforms live here once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from segnb.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_rgb_uint8
from segnb.errors import DatasetError

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from segnb.data.transform import SegTransform, TorchSplit

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Split",
    "SegmentationDataset",
    "SegTransform",
    "TorchSplit",
    "default_palette",
    "mixed_sizes",
]

def __getattr__(name: str):
    # The tensor side (segnb/data/transform.py) needs PyTorch: imported when first used, so that
    # loading and looking at a dataset does not (a Studio page opens without it, docs/CLASSROOM.md).
    if name in ("SegTransform", "TorchSplit"):
        from segnb.data import transform

        return getattr(transform, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map: well separated colours, the same in every paper's figures.

    Returns ``uint8`` of shape ``(num_classes, 3)``.
    """
    palette = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette


def mixed_sizes(split) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Two different image sizes (H, W) in ``split``, read from the files' headers where the source
    allows (:meth:`Split.image_shape`); None when every image has one size or the sizes are unknown."""
    first = None
    for index in range(len(split)):
        shape = split.image_shape(index)
        if shape is None:
            return None
        if first is None:
            first = shape
        elif shape != first:
            return first, shape
    return None


class Split:
    """A list of raw ``(image, mask)`` pairs. Sources subclass it and implement ``_load``.

    Indexing checks every pair (same size, mask values known), so a bad file is
    named when it is met, never turned into a silently wrong mask.
    """

    def __init__(self, name: str, length: int):
        self.name = name
        self._length = length
        self.num_classes: int | None = None
        self.ignore_index = 255
        self.void_values: tuple[int, ...] = ()  # stored values that also mean void (-> ignore_index)
        self.raw_histogram: np.ndarray | None = None  # pixels per stored value, once scanned

    def map_values(self, values: np.ndarray) -> np.ndarray:
        """Stored mask values -> class indices (elementwise; the loaders add their remapping)."""
        values = np.asarray(values, dtype=np.int64)
        if self.void_values:
            values = np.where(np.isin(values, self.void_values), self.ignore_index, values)
        return values

    def __len__(self) -> int:
        return self._length

    def label(self, index: int) -> str:
        """How an error names one sample: a file name or a row number."""
        return f"{self.name}[{index}]"

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name} has {len(self)} samples; index {index} is out of range.")
        index %= len(self)
        image, mask = self._load(index)
        image = to_rgb_uint8(image, self.label(index))
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[:, :, 0]
        if mask.ndim != 2:
            raise DatasetError(
                f"{self.label(index)}: the mask has shape {mask.shape}; a mask must be one class "
                "index per pixel (H, W). For colour-coded masks pass color_map={(r, g, b): class}."
            )
        if image.shape[:2] != mask.shape:
            raise DatasetError(
                f"{self.label(index)}: image is {image.shape[1]}x{image.shape[0]} but its mask is "
                f"{mask.shape[1]}x{mask.shape[0]} (width x height). Image and mask must be the same "
                "size: re-export the mask, or check that the pair belongs together."
            )
        mask = mask.astype(np.int64, copy=False)
        if self.void_values:
            mask = np.where(np.isin(mask, self.void_values), self.ignore_index, mask)
        if self.num_classes is not None:
            self._check_values(mask, index)
        return image, mask

    def image_shape(self, index: int) -> tuple[int, int] | None:
        """The (height, width) sample ``index`` decodes to, when the source tells it without decoding
        (a file's header); None when unknown."""
        return None

    # ---- instance maps (segnb.data.instance_maps reads them from folders, COCO JSON and hub columns)
    _instance_loader = None  # ``index -> (H, W) int array``: 0 = no instance, 1.. = instance ids

    def attach_instance_maps(self, loader) -> None:
        """Give this split instance maps: ``loader(index)`` returns the ``(H, W)`` id map of a sample."""
        self._instance_loader = loader

    @property
    def has_instances(self) -> bool:
        """Whether this split has an instance map for every sample."""
        return self._instance_loader is not None

    def get(self, index: int, instances: bool = False):
        """``(image, mask)``, or ``(image, mask, instance_map)`` with ``instances=True``.

        The instance map is ``int64 (H, W)``: 0 where no object is, ``1..n`` one id per object.
        """
        image, mask = self[index]
        if not instances:
            return image, mask
        if not self.has_instances:
            raise DatasetError(
                f"{self.name} has no instance maps. The built-in 'shapes' has them; a folder needs an "
                "instances/ folder (one id per object, 0 = none) or a COCO JSON file (instances.json); "
                "a hub dataset needs an instance column (instance_column=)."
            )
        index %= len(self)
        found = np.asarray(self._instance_loader(index))
        if found.ndim == 3 and found.shape[2] in (1, 3, 4):
            found = found[:, :, 0]  # grey stored as RGB: all channels equal
        if found.shape != mask.shape:
            raise DatasetError(
                f"{self.label(index)}: the instance map is {found.shape[::-1]} (width x height) but the mask "
                f"is {mask.shape[::-1]}. Instance maps must be the size of their image."
            )
        if not np.issubdtype(found.dtype, np.integer) or found.min(initial=0) < 0:
            raise DatasetError(
                f"{self.label(index)}: an instance map holds non-negative integer ids (0 = no object), "
                f"got dtype {found.dtype} with minimum {found.min()}. Save it as a 16-bit or 8-bit grey PNG."
            )
        return image, mask, found.astype(np.int64, copy=False)

    def instances(self, index: int) -> np.ndarray:
        """The instance map of sample ``index`` (see :meth:`get`)."""
        return self.get(index, instances=True)[2]

    def _check_values(self, mask: np.ndarray, index: int) -> None:
        counts = np.bincount(mask.ravel().clip(0, max(self.ignore_index, self.num_classes) + 1))
        values = np.flatnonzero(counts)
        bad = [int(v) for v in values if v >= self.num_classes and v != self.ignore_index]
        if mask.min(initial=0) < 0:
            bad.insert(0, int(mask.min()))
        if bad:
            raise DatasetError(
                f"{self.label(index)}: mask values {bad[:10]} are outside the {self.num_classes} "
                f"classes 0..{self.num_classes - 1} and are not the ignore index {self.ignore_index}. "
                "Fix: pass num_classes= (or class_names=) that covers them, ignore_index= for a void "
                "label, or reduce_labels=True if 0 means background/void (as in ADE20K)."
            )


def given_options(function, values: dict, skip: tuple[str, ...] = ("root", "source")) -> dict:
    """The keyword arguments of ``function`` that differ from their defaults (to rebuild a dataset)."""
    import inspect

    given = {}
    for name, parameter in inspect.signature(function).parameters.items():
        if name in skip or name not in values:
            continue
        if parameter.default is inspect.Parameter.empty or values[name] != parameter.default:
            given[name] = values[name]
    return given


class _FrozenList(list):
    """A list that refuses changes in place (class names are fixed once a dataset is loaded)."""

    def _refuse(self, *args, **kwargs):
        raise AttributeError(_LABEL_MESSAGE.format(name="class_names"))

    append = extend = insert = pop = remove = clear = sort = reverse = _refuse
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse


_LABEL_FIELDS = ("class_names", "ignore_index")
_LABEL_MESSAGE = (
    "data.{name} cannot be changed after loading: the splits, their checks and the cached pixel "
    "counts were built with it, so a change half-way would train and score the wrong labels. Use "
    "data = data.with_labels({name}=...) for a new dataset, or load_dataset(source, {name}=...)."
)


@dataclass
class SegmentationDataset:
    """Splits, class names, palette and pixel statistics of one segmentation dataset.

    Build it with :func:`segnb.load_dataset`. Index it by split name
    (``data["train"][0]`` is a raw ``(image, mask)`` pair) or ask for a
    ready :meth:`loader`.

    The label settings (``class_names``, ``num_classes``, ``ignore_index``) are fixed once
    built; :meth:`with_labels` returns a new dataset with other settings. ``notes`` lists, in
    plain sentences, every guess the loader made and the option that overrides it.
    ``options`` are the loader options that rebuild the dataset from ``source``.
    """

    splits: dict[str, Split]
    class_names: list[str]
    ignore_index: int = 255
    palette: np.ndarray | None = None
    source: str = ""
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    _counts: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    things: list[str] | None = None  # countable classes (instances); None = not known

    @property
    def stuff(self) -> list[str] | None:
        """Amorphous classes (sky, grass): every class that is not a thing; None when unknown."""
        return None if self.things is None else [c for c in self.class_names if c not in self.things]

    @property
    def has_instances(self) -> bool:
        return all(split.has_instances for split in self.splits.values())

    def __setattr__(self, name, value):
        if name in _LABEL_FIELDS and self.__dict__.get("_ready"):
            raise AttributeError(_LABEL_MESSAGE.format(name=name))
        super().__setattr__(name, value)

    def __post_init__(self):
        if not self.splits or all(len(s) == 0 for s in self.splits.values()):
            raise DatasetError(f"{self.source or 'dataset'}: no samples were found in any split.")
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, (int, np.integer)):
            raise DatasetError(f"ignore_index must be a whole number, got {self.ignore_index!r}.")
        self.ignore_index = int(self.ignore_index)
        self.class_names = _FrozenList(str(n) for n in self.class_names)
        if not self.class_names:
            raise DatasetError(f"{self.source or 'dataset'}: no classes (class_names is empty).")
        if self.palette is None:
            self.palette = default_palette(self.num_classes)
        self.palette = np.asarray(self.palette, dtype=np.uint8)[: self.num_classes]
        if len(self.palette) < self.num_classes:
            extra = default_palette(self.num_classes)[len(self.palette) :]
            self.palette = np.concatenate([self.palette, extra])
        for split in self.splits.values():
            split.num_classes = self.num_classes
            split.ignore_index = self.ignore_index
        unknown = [t for t in self.things or [] if t not in self.class_names]
        if unknown:
            raise DatasetError(f"things={unknown} are not class names; the classes are {self.class_names}.")
        self.__dict__["_ready"] = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @num_classes.setter
    def num_classes(self, value):
        raise AttributeError(_LABEL_MESSAGE.format(name="num_classes"))

    @property
    def has_validation(self) -> bool:
        """False when no split holds held-out labelled images: scores are then on training images."""
        return self.eval_split != self.train_split

    def with_labels(
        self,
        *,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        ignore_index: int | None = None,
    ) -> SegmentationDataset:
        """A new dataset with other label settings; this one is left unchanged.

        Every split and every cache of the new dataset uses the new settings. Pixels that
        were void stay void under a new ``ignore_index``; pixels holding the new
        ``ignore_index`` become void. When the new ``ignore_index`` is the last class (a
        void label stored as the top value), that class is dropped.
        """
        names = list(self.class_names)
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
                raise DatasetError(f"num_classes must be a whole number >= 1, got {num_classes!r}.")
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer))
        ):
            raise DatasetError(f"ignore_index must be a whole number, got {ignore_index!r}.")
        new_ignore = self.ignore_index if ignore_index is None else int(ignore_index)
        notes = list(self.notes)
        if class_names is not None:
            names = [str(n) for n in class_names]
        elif new_ignore != self.ignore_index and 0 <= new_ignore < len(names):
            if new_ignore == len(names) - 1 and num_classes is None:
                notes.append(
                    f"ignore_index={new_ignore} was the last class ({names[-1]!r}); it is now void "
                    f"and the dataset has {len(names) - 1} classes."
                )
                names = names[:-1]
            elif num_classes is None:
                raise DatasetError(
                    f"ignore_index={new_ignore} is class {names[new_ignore]!r}, in the middle of the "
                    f"{len(names)} classes. Pass class_names= (or num_classes=) as well, or load the "
                    f"dataset with load_dataset(source, ignore_index={new_ignore})."
                )
        if num_classes is not None and num_classes != len(names):
            if class_names is not None:
                raise DatasetError(f"num_classes={num_classes} but {len(names)} class names were given.")
            names = (names + [f"class_{i}" for i in range(len(names), num_classes)])[:num_classes]
        splits = {}
        for key, split in self.splits.items():
            new = copy.copy(split)
            if new_ignore != self.ignore_index:
                new.void_values = tuple(sorted({*split.void_values, self.ignore_index} - {new_ignore}))
            new.ignore_index, new.num_classes = new_ignore, len(names)
            splits[key] = new
        options = dict(self.options)
        options.update({k: v for k, v in (("class_names", class_names), ("num_classes", num_classes),
                                          ("ignore_index", ignore_index)) if v is not None})
        if class_names is not None:
            options["class_names"] = list(names)
        return SegmentationDataset(
            splits=splits, class_names=names, ignore_index=new_ignore, palette=self.palette,
            source=self.source, info=dict(self.info), notes=notes, options=options,
            things=[t for t in self.things if t in names] if self.things is not None else None,
        )

    def provenance(self) -> dict | None:
        """``{"data_source": ..., "data_options": ...}`` that rebuild this dataset, or None."""
        if not self.source or self.info.get("in_memory"):
            return None
        try:
            import json

            json.dumps(self.options)
        except (TypeError, ValueError):
            return None
        return {"data_source": self.source, "data_options": dict(self.options)}

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    @property
    def train_split(self) -> str:
        return "train" if "train" in self.splits else self.split_names[0]

    @property
    def eval_split(self) -> str:
        for name in ("validation", "val", "valid", "test"):
            if name in self.splits and len(self.splits[name]) > 0:
                return name
        return self.train_split

    def __getitem__(self, split: str) -> Split:
        try:
            return self.splits[split]
        except KeyError:
            raise KeyError(
                f"No split {split!r} in {self.source}; the splits are {self.split_names}."
            ) from None

    def pixel_counts(self, split: str | None = None) -> np.ndarray:
        """Pixels of each class in a split (void excluded), computed once and cached."""
        split = split or self.train_split
        if split not in self._counts and self[split].raw_histogram is not None:
            hist = self[split].raw_histogram  # pixels per stored value, scanned at load time
            mapped = self[split].map_values(np.arange(len(hist)))
            keep = (mapped >= 0) & (mapped < self.num_classes) & (mapped != self.ignore_index)
            outside = (hist > 0) & ~keep & (mapped != self.ignore_index)
            if outside.any():
                raise DatasetError(
                    f"{self.source}: {split} masks hold values {np.unique(mapped[outside])[:10].tolist()} "
                    f"outside the {self.num_classes} classes 0..{self.num_classes - 1} and not the ignore "
                    f"index {self.ignore_index}. Fix: pass num_classes= (or class_names=) that covers "
                    "them, ignore_index= for a void label, or reduce_labels=True if 0 means void."
                )
            self._counts[split] = np.bincount(
                mapped[keep], weights=hist[keep], minlength=self.num_classes
            )[: self.num_classes].astype(np.int64)
        if split not in self._counts:
            counts = np.zeros(self.num_classes, dtype=np.int64)
            for index in range(len(self[split])):
                _, mask = self[split][index]
                valid = mask[mask != self.ignore_index]
                counts += np.bincount(valid.ravel(), minlength=self.num_classes)[: self.num_classes]
            self._counts[split] = counts
        return self._counts[split]

    def frequencies(self, split: str | None = None) -> np.ndarray:
        """The fraction of labelled pixels of each class (sums to 1; void excluded)."""
        counts = self.pixel_counts(split).astype(np.float64)
        return counts / max(counts.sum(), 1.0)

    def torch_split(self, split: str, transform: SegTransform | None = None, **options) -> TorchSplit:
        """A torch ``Dataset`` over a split; ``options`` go to :class:`SegTransform`."""
        from segnb.data.transform import SegTransform, TorchSplit

        if transform is None:
            options.setdefault("ignore_index", self.ignore_index)
            transform = SegTransform(**options)
        return TorchSplit(self[split], transform)

    def loader(
        self,
        split: str,
        batch_size: int = 8,
        image_size: int | tuple[int, int] | None = None,
        train: bool | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        num_workers: int = 0,
        shuffle: bool | None = None,
        seed: int | None = None,
        **transform_options,
    ) -> DataLoader:
        """A DataLoader over one split.

        ``num_workers=0`` (the default) is safe everywhere, notebooks included.
        With workers, they are forked on Linux and persist across epochs.
        ``train`` defaults to ``split == data.train_split`` and switches on
        shuffling and augmentation.
        """
        import torch
        from torch.utils.data import DataLoader

        from segnb.data.transform import SegTransform

        train = (split == self.train_split) if train is None else train
        transform = SegTransform(
            size=image_size, train=train, mean=mean, std=std, ignore_index=self.ignore_index,
            **transform_options,
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return DataLoader(
            self.torch_split(split, transform),
            batch_size=batch_size,
            shuffle=train if shuffle is None else shuffle,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            drop_last=False,
            generator=generator,
        )

    def describe(self, frequencies: bool = True) -> dict:
        """A plain-dict summary: source, splits and sizes, classes, pixel frequencies."""
        summary = {
            "source": self.source,
            "splits": {name: len(split) for name, split in self.splits.items()},
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "validation": self.eval_split if self.has_validation else None,
            **self.info,
            "notes": list(self.notes),
        }
        if frequencies:
            summary["pixel_frequencies"] = {
                name: round(float(f), 6)
                for name, f in zip(self.class_names, self.frequencies(), strict=True)
            }
        return summary

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return f"SegmentationDataset({self.source!r}, {sizes}, num_classes={self.num_classes})"
