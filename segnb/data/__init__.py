"""Datasets: the built-in shapes, Hugging Face hub ids and copies, local folders, in-memory datasets."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from segnb.data.base import SegmentationDataset, Split, default_palette
from segnb.data.folder import load_folder
from segnb.data.hub import KNOWN_HUB_DATASETS, is_hub_id, load_hub
from segnb.data.shapes import SHAPES_CLASSES, load_shapes
from segnb.errors import DatasetError

__all__ = [
    "KNOWN_HUB_DATASETS",
    "SHAPES_CLASSES",
    "SegmentationDataset",
    "SegTransform",
    "Split",
    "TorchSplit",
    "default_palette",
    "load_dataset",
    "load_folder",
    "load_hub",
    "load_shapes",
]

HUB_FILE_SUFFIXES = {".parquet", ".arrow"}

if TYPE_CHECKING:
    from segnb.data.transform import SegTransform, TorchSplit


def __getattr__(name: str):
    # The tensor side needs PyTorch: imported on first use, so loading and looking at a dataset does
    # not (a Studio page opens without it, docs/CLASSROOM.md).
    if name in ("SegTransform", "TorchSplit"):
        from segnb.data import transform

        return getattr(transform, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _is_hub_layout(root: Path) -> bool:
    """A local copy of a hub dataset repository: parquet or arrow shards (in data/ or at the top)."""
    for folder in (root, root / "data"):
        if folder.is_dir() and any(p.suffix in HUB_FILE_SUFFIXES for p in folder.rglob("*")):
            return True
    return False


def load_dataset(source, **options) -> SegmentationDataset:
    """Load a segmentation dataset from any source into one :class:`SegmentationDataset`.

    Args:
        source: ``"shapes"`` (built-in, offline); ``"isbi2012"`` (the 30 ISBI 2012 membrane slices
            shipped with segnb, see :mod:`segnb.data.isbi` for their terms); a Hugging Face hub id such as
            ``"segments/sidewalk-semantic"``; a local directory, either a copy of a hub
            dataset repository (parquet/arrow shards, README card, ``id2label.json``) or a
            folder of images and masks; or an in-memory ``datasets.Dataset``/``DatasetDict``.
        **options: passed to the loader of that source: :func:`load_shapes`
            (``n``, ``size``, ``seed``, ``void_border``, ``val_fraction``), :func:`load_hub`
            (``image_column``, ``mask_column``, ``reduce_labels``, ``class_names``, ...) or
            :func:`load_folder` (``class_names``, ``color_map``, ``binary``, ...).

    Raises:
        DatasetError: the source is unknown or unreadable; the message says how to fix it.
        HubUnavailableError: a hub id while offline with no cached copy (within seconds).
    """
    # An in-memory datasets.Dataset means `datasets` is imported already; importing it here for the
    # check would cost every other source (the built-in shapes in a Studio page) a second.
    datasets = sys.modules.get("datasets")
    in_memory = datasets is not None and isinstance(source, (datasets.Dataset, datasets.DatasetDict))
    if in_memory:
        return _call(load_hub, source, options)
    if not isinstance(source, (str, Path)):
        raise DatasetError(
            f"load_dataset() takes a name, a path or a datasets.Dataset, not {type(source).__name__}."
        )
    text = str(source)
    if text == "shapes":
        labels = {k: options.pop(k) for k in ("class_names", "num_classes", "ignore_index") if k in options}
        data = _call(load_shapes, None, options)
        return data.with_labels(**labels) if labels else data  # with_labels records them
    if text == "isbi2012":
        from segnb.data.isbi import load_isbi

        return _call(load_isbi, None, options)
    path = Path(text).expanduser()
    if path.is_dir():
        loader = load_hub if _is_hub_layout(path) else load_folder
        data = _call(loader, path, options)
        data.source = str(path.resolve())  # so a saved model finds it again from any folder
        return data
    if path.exists():
        raise DatasetError(f"{path} is a file; give the folder that holds the images and masks.")
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1:
        raise DatasetError(f"No folder at {path}. Check the path (relative to {Path.cwd()}).")
    if is_hub_id(text):
        return _call(load_hub, text, options)
    raise DatasetError(
        f"Unknown dataset source {text!r}. Use 'shapes' or 'isbi2012' (built-in, offline), a Hugging Face id like "
        f"{', '.join(repr(k) for k in KNOWN_HUB_DATASETS)}, or a local folder path."
    )


def _call(loader, source, options: dict):
    """``loader(source, **options)``, refusing options it does not take with the list it does."""
    parameters = inspect.signature(loader).parameters
    known = [n for n, p in parameters.items() if p.kind == p.KEYWORD_ONLY or (
        p.kind == p.POSITIONAL_OR_KEYWORD and n not in ("source", "root"))]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DatasetError(
            f"{loader.__name__}() has no option {', '.join(map(repr, unknown))}; its options are: "
            f"{', '.join(known)}."
        )
    return loader(**options) if source is None else loader(source, **options)
