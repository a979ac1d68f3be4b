"""Hugging Face datasets: hub ids, local copies in hub layout, and in-memory ``datasets.Dataset``.

Column names vary between datasets (``image``/``pixel_values``,
``annotation``/``label``/``mask``/...), so the image and mask columns are
detected, and can be overridden with ``image_column=`` / ``mask_column=``.
Class names come from ``id2label.json`` (the convention of the hub's
segmentation datasets), a ``ClassLabel`` feature, the dataset card, or are
numbered.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

import numpy as np

from segnb.data.base import SegmentationDataset, Split, given_options
from segnb.data.decode import apply_lut, decode_mask, read_class_names, read_image, remap_labels
from segnb.data.guess import check_label_options, is_lossy_cell, settle_labels
from segnb.errors import DatasetError, HubUnavailableError
from segnb.hub import DEFAULT_TIMEOUT, probe_repo

__all__ = ["IMAGE_COLUMNS", "MASK_COLUMNS", "KNOWN_HUB_DATASETS", "load_hub", "detect_columns"]

IMAGE_COLUMNS = ["image", "pixel_values", "img", "images", "input", "rgb", "photo"]
MASK_COLUMNS = [
    "annotation", "label", "mask", "segmentation", "semantic_segmentation", "labels", "masks",
    "seg", "gt", "ground_truth", "label_image", "semantic", "target",
]
# A curated list for pickers and docs: id -> (options that load it well, one line about it).
KNOWN_HUB_DATASETS = {
    "segments/sidewalk-semantic": ({}, "sidewalk scenes from a delivery robot, 35 classes"),
    "scene_parse_150": ({"reduce_labels": True}, "ADE20K scene parsing, 150 classes (0 = other)"),
    "EduardoPacheco/FoodSeg103": ({}, "food images, 104 ingredient classes"),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _is_image_feature(feature) -> bool:
    return type(feature).__name__ == "Image"


def detect_columns(features, image_column: str | None = None, mask_column: str | None = None):
    """Pick the image and mask columns from a ``datasets.Features``; say which exist if unsure."""
    columns = list(features)
    for given, kind in ((image_column, "image_column"), (mask_column, "mask_column")):
        if given is not None and given not in columns:
            raise DatasetError(f"{kind}={given!r} is not a column; the columns are {columns}.")
    lower = {c.lower(): c for c in columns}
    if image_column is None:
        named = [lower[n] for n in IMAGE_COLUMNS if n in lower and lower[n] != mask_column]
        typed = [c for c in columns if _is_image_feature(features[c]) and c != mask_column]
        candidates = named or [c for c in typed if c.lower() not in MASK_COLUMNS]
        mask_named = mask_column is not None or any(n in lower for n in MASK_COLUMNS)
        if not named and len(typed) > 1 and not mask_named:
            raise DatasetError(
                f"Several image columns {typed} and none is named like an image or a mask: pass "
                "image_column='<name>' and mask_column='<name>'."
            )
        if not candidates:
            raise DatasetError(
                f"No image column found among {columns}. Pass image_column='<name>'."
            )
        image_column = candidates[0]
    if mask_column is None:
        named = [lower[n] for n in MASK_COLUMNS if n in lower and lower[n] != image_column]
        typed = [c for c in columns if _is_image_feature(features[c]) and c != image_column]
        # Prefer a mask-like name that holds images; then any other image column.
        candidates = [c for c in named if _is_image_feature(features[c])] or named or typed
        if not candidates:
            raise DatasetError(
                f"No mask-like column found among {columns} (looked for an image-typed column or one "
                f"named like {MASK_COLUMNS[:6]}...). Pass mask_column='<name>'."
            )
        if len(candidates) > 1 and not named:
            raise DatasetError(
                f"Several columns could be the mask: {candidates}. Pass mask_column='<name>' "
                f"(and image_column='{image_column}' if that is wrong)."
            )
        mask_column = candidates[0]
    return image_column, mask_column


class _HubSplit(Split):
    def __init__(self, name, table, image_column, mask_column, reduce_labels, binary,
                 color_map, ignore_index, on_bad_image):
        # Decode lazily: we read raw cells and decode them ourselves, so a corrupt row is named.
        self.table = table.cast_column(image_column, _no_decode(table.features[image_column]))
        self.table = self.table.cast_column(mask_column, _no_decode(table.features[mask_column]))
        self.image_column, self.mask_column = image_column, mask_column
        self.reduce_labels, self.binary = reduce_labels, binary
        self.color_map, self.on_bad_image = color_map, on_bad_image
        self.lut = None  # snaps lossy (JPEG) mask values to the class values
        self.rows = list(range(len(table)))  # the table rows this split serves
        self.skipped: list[int] = []  # unreadable rows, found once at load time
        super().__init__(name, len(table))
        self.ignore_index = ignore_index
        if on_bad_image == "skip":
            self._drop_bad_rows()

    def _drop_bad_rows(self) -> None:
        """Read every row once; leave out the unreadable ones, named in one warning."""
        errors = {}
        for row in self.rows:
            try:
                self._decode(row)
            except DatasetError as err:
                errors[row] = err
        if not errors:
            return
        self.skipped = sorted(errors)
        self.rows = [r for r in self.rows if r not in errors]
        self._length = len(self.rows)
        first = next(iter(errors.values()))
        if not self.rows:
            raise DatasetError(
                f"{self.name}: every one of its {len(errors)} rows is unreadable ({first}). "
                "on_bad_image='skip' needs at least one good row; check the image and mask columns."
            )
        warnings.warn(
            f"skipping {len(errors)} unreadable row(s) of {self.name}: {self.skipped[:20]} ({first}). "
            f"The split has {len(self.rows)} rows.", stacklevel=4,
        )

    def label(self, index: int) -> str:
        return f"{self.name} row {self.rows[index] if index < len(self.rows) else index}"

    def map_values(self, values):
        values = remap_labels(apply_lut(values, self.lut), self.reduce_labels, self.binary, self.ignore_index)
        return super().map_values(values)

    def _decode(self, row: int):
        cells = self.table[row]
        where = f"{self.name} row {row}"
        image = read_image(cells[self.image_column], f"{where} ({self.image_column})")
        mask = decode_mask(cells[self.mask_column], f"{where} ({self.mask_column})", self.color_map)
        return image, mask

    def raw_mask(self, index: int) -> np.ndarray:
        row = self.rows[index]
        return decode_mask(self.table[row][self.mask_column], f"{self.name} row {row} ({self.mask_column})",
                           self.color_map)

    def _load(self, index: int):
        try:
            image, mask = self._decode(self.rows[index])
        except DatasetError as err:
            raise DatasetError(f"{err} To skip unreadable rows, pass on_bad_image='skip'.") from None
        return image, remap_labels(apply_lut(mask, self.lut), self.reduce_labels, self.binary, self.ignore_index)


def _no_decode(feature):
    if _is_image_feature(feature):
        import datasets

        return datasets.Image(decode=False)
    return feature


def _class_names_from_card(readme: Path) -> list[str] | None:
    """``id2label`` or ``class_label: names:`` in a dataset card's YAML header, if any."""
    if not readme.is_file():
        return None
    text = readme.read_text(errors="replace")
    match = re.match(r"^---\n(.*?)\n---", text, re.S)
    if not match:
        return None
    import yaml

    try:
        header = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return None
    found = _find_key(header, "id2label")
    if found is None:
        names = _find_key(header, "names")
        found = names if isinstance(names, (dict, list)) else None
    if isinstance(found, dict) and found:
        mapping = {int(k): str(v) for k, v in found.items()}
        return [mapping.get(i, f"class_{i}") for i in range(max(mapping) + 1)]
    if isinstance(found, list) and found:
        return [str(v) for v in found]
    return None


def _find_key(node, key):
    if isinstance(node, dict):
        if key in node:
            return node[key]
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None


@contextlib.contextmanager
def _hub_offline():
    """Make ``datasets`` and ``huggingface_hub`` use their caches only, for this block."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _alternatives(source: str) -> str:
    return (
        f"Alternatives: connect and retry; use a copy of '{source}' saved in hub layout "
        f"(load_dataset('/path/to/copy')); a local folder of images and masks; or the built-in "
        f"offline dataset, load_dataset('shapes')."
    )


def _read_errors():
    """What reading a dataset can raise for bad or missing files (not programming errors)."""
    import datasets.exceptions

    return (OSError, ValueError, TypeError, KeyError, datasets.exceptions.DatasetsError)


def _read_local_copy(root: Path):
    """A local folder in hub layout, read into memory through a temporary cache.

    ``datasets.load_dataset(folder)`` would cache it in the Hugging Face cache under the
    folder's name, where a folder called ``scene_parse_150`` would later pass for the hub
    dataset of that name. Here nothing outlives the call but the in-memory tables.
    """
    import tempfile

    import datasets

    with tempfile.TemporaryDirectory(prefix="segnb-hub-copy-") as tmp:
        try:
            return datasets.load_dataset(str(root), cache_dir=tmp, keep_in_memory=True)
        except _read_errors() as err:
            raise DatasetError(f"{root}: could not read it as a hub-layout dataset ({err}).") from None


MARKER = "segnb-source.json"


def _rows(dataset) -> int:
    return sum(len(t) for t in dataset.values()) if hasattr(dataset, "values") else len(dataset)


def _mark_prepared_cache(dataset, source: str, revision) -> None:
    """Record next to datasets' prepared cache that it came from the hub id ``source``."""
    import datetime
    import json

    tables = dataset.values() if hasattr(dataset, "values") else [dataset]
    folders = {Path(f["filename"]).parent for t in tables for f in t.cache_files}
    for folder in folders:
        stamp = {"hub_id": source, "revision": revision,
                 "loaded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        try:
            (folder / MARKER).write_text(json.dumps(stamp))
        except OSError:  # a read-only cache: the copy then cannot be vouched for offline
            pass


def _prepared_copy_origin(dataset, source: str) -> tuple[bool, str, str]:
    """``(came from the hub id, folder, date)`` for a dataset read from datasets' prepared cache."""
    import json

    tables = dataset.values() if hasattr(dataset, "values") else [dataset]
    folders = sorted({Path(f["filename"]).parent for t in tables for f in t.cache_files})
    if not folders:
        return False, "(in memory)", "unknown date"
    folder = folders[0]
    marker = folder / MARKER
    if marker.is_file():
        stamp = json.loads(marker.read_text())
        return stamp.get("hub_id") == source, str(folder), stamp.get("loaded", "unknown date")
    info = folder / "dataset_info.json"
    checksums = json.loads(info.read_text()).get("download_checksums") or {} if info.is_file() else {}
    from_hub = bool(checksums) and all(f"datasets/{source}@" in key or f"datasets/{source}/" in key
                                       for key in checksums)
    date = _date(info if info.is_file() else folder)
    return from_hub, str(folder), date


def _date(path: Path) -> str:
    import datetime

    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    return stamp.isoformat(timespec="seconds")


def _from_cache(source: str, revision, cache_dir):
    """A cached copy that came from the hub id ``source``: ``(dataset, class names, note)``.

    First the repository snapshot in the hub cache (huggingface_hub files it under the id),
    then datasets' prepared cache, used only when it is known to come from that id. Returns
    ``(None, None, why)`` when there is none.
    """
    import datasets
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        with _hub_offline():
            snapshot = Path(snapshot_download(source, repo_type="dataset", revision=revision,
                                              local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        snapshot = None
    if snapshot is not None:
        dataset = _read_local_copy(snapshot)
        note = (f"Hub unreachable: using the cached copy of '{source}' at {snapshot} "
                f"(downloaded {_date(snapshot)}, {_rows(dataset):,} rows).")
        return dataset, read_class_names(snapshot), note
    prepared = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / source.replace("/", "___")
    if not prepared.is_dir():
        return None, None, "no cached copy was found"
    try:
        with _hub_offline():
            dataset = datasets.load_dataset(source, revision=revision, cache_dir=cache_dir)
    except _read_errors() as err:
        return None, None, f"the cached copy at {prepared} could not be read ({err})"
    from_hub, folder, date = _prepared_copy_origin(dataset, source)
    if not from_hub:
        return None, None, (
            f"a cached dataset named '{source}' at {folder} was not used: nothing shows it came from "
            "the hub (it may be a local folder of the same name)"
        )
    note = (f"Hub unreachable: using the cached copy of '{source}' at {folder} "
            f"(loaded {date}, {_rows(dataset):,} rows).")
    return dataset, None, note


def _open_hub(source: str, revision, cache_dir, timeout, trust_remote_code):
    """``(dataset, class names from files, note about a cached copy or None)``."""
    import datasets

    status = probe_repo(source, "dataset", timeout=timeout)
    if status.reachable and not status.exists:
        raise DatasetError(
            f"The Hugging Face Hub has no public dataset '{source}' ({status.detail}). Check the id "
            f"(owner/name), or log in (HF_TOKEN) for a gated or private dataset. Known segmentation "
            f"datasets: {', '.join(KNOWN_HUB_DATASETS)}."
        )
    options = dict(revision=revision, cache_dir=cache_dir)
    if trust_remote_code:  # never on by default: a dataset script is arbitrary code from the internet
        import inspect

        if "trust_remote_code" not in inspect.signature(datasets.load_dataset).parameters:
            raise DatasetError(
                f"trust_remote_code=True, but datasets {datasets.__version__} no longer runs dataset scripts. "
                f"Use a version of '{source}' converted to parquet (many hubs repos have a refs/convert/parquet "
                "revision: revision='refs/convert/parquet')."
            )
        warnings.warn(f"trust_remote_code=True: running code from the hub repository '{source}'.", stacklevel=3)
        options["trust_remote_code"] = True
    if not status.reachable:
        dataset, id2label, note = _from_cache(source, revision, cache_dir)
        if dataset is None:
            raise HubUnavailableError(
                f"Cannot load '{source}': the Hugging Face Hub is unreachable ({status.detail}) and "
                f"{note}. {_alternatives(source)}"
            )
        warnings.warn(note, stacklevel=3)
        return dataset, id2label, note
    dataset = datasets.load_dataset(source, **options)
    _mark_prepared_cache(dataset, source, revision)
    id2label = None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        path = hf_hub_download(source, "id2label.json", repo_type="dataset", revision=revision)
        id2label = read_class_names(Path(path).parent)
    except (EntryNotFoundError, LocalEntryNotFoundError):  # optional: names then come from features or the card
        id2label = None
    return dataset, id2label, None


def load_hub(
    source,
    *,
    image_column: str | None = None,
    mask_column: str | None = None,
    reduce_labels: bool = False,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    binary: bool | None = None,
    color_map=None,
    split: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    revision: str | None = None,
    cache_dir: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    trust_remote_code: bool = False,
    on_bad_image: str = "raise",
    lossy_masks: str = "auto",
    instance_column: str | None = None,
    things: list[str] | None = None,
) -> SegmentationDataset:
    """A hub id, a local directory in hub layout, or a ``datasets.Dataset``/``DatasetDict``.

    A local directory is read into memory through a temporary cache, so it never lands in
    the Hugging Face cache (where its folder name could pass for a hub id).
    An instance column (``instance_column=``, or one named ``instance``/``instances``/...)
    gives ``split.get(i, instances=True)``; ``things=`` names the countable classes.
    """
    import datasets

    from segnb.data.decode import parse_color_map

    options = given_options(load_hub, locals())
    if on_bad_image not in ("raise", "skip"):
        raise DatasetError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}.")
    check_label_options(num_classes, ignore_index, class_names)
    names_from_files = None
    notes: list[str] = []
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        dataset, label = source, "in-memory dataset"
    elif Path(str(source)).is_dir():
        root = Path(source)
        label = str(root)
        dataset = _read_local_copy(root)
        names_from_files = read_class_names(root) or _class_names_from_card(root / "README.md")
    else:
        label = str(source)
        dataset, names_from_files, cache_note = _open_hub(label, revision, cache_dir, timeout, trust_remote_code)
        if cache_note:
            notes.append(cache_note)

    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    if split is not None:
        dataset = datasets.DatasetDict({split: dataset[split]})
    first = next(iter(dataset.values()))
    image_column, mask_column = detect_columns(first.features, image_column, mask_column)
    # Keep splits that have masks (the test split of many datasets has none).
    dataset = datasets.DatasetDict({k: v for k, v in dataset.items() if mask_column in v.column_names})
    if not dataset:
        raise DatasetError(f"{label}: no split has the mask column {mask_column!r}.")
    if len(dataset) == 1 and val_fraction > 0 and len(next(iter(dataset.values()))) > 1:
        only, table = next(iter(dataset.items()))
        parts = table.train_test_split(test_size=val_fraction, seed=seed)
        dataset = datasets.DatasetDict({"train": parts["train"], "validation": parts["test"]})
        notes.append(
            f"Only one split with masks ({only!r}, {len(table)} rows): {len(parts['test'])} rows "
            f"({val_fraction:.0%}, seed={seed}) were split off as validation. Pass val_fraction= or "
            "seed= to change it."
        )
    elif len(dataset) == 1:
        only = next(iter(dataset))
        notes.append(
            f"NO VALIDATION SPLIT: only {only!r} has masks and val_fraction={val_fraction} holds "
            "none out, so every score is on the training rows. Pass val_fraction=0.2."
        )
        if val_fraction > 0:  # asked for a validation split and got none: say it loudly
            warnings.warn(f"{label}: {notes[-1]}", stacklevel=2)

    feature = first.features[mask_column]
    if class_names is None and type(feature).__name__ == "ClassLabel":
        class_names = list(feature.names)
    class_names = class_names or names_from_files
    cmap = parse_color_map(color_map)
    splits = {
        name: _HubSplit(name, table, image_column, mask_column, reduce_labels, False, cmap,
                        ignore_index, on_bad_image)
        for name, table in dataset.items()
    }
    from segnb.instances.sources import attach_hub_instances

    instance_column = attach_hub_instances(splits, instance_column)
    probe = splits.get("train") or next(iter(splits.values()))
    first_cell = probe.table[0][mask_column] if len(probe) else None
    _, binary, num_classes, guessed = settle_labels(
        probe, splits, class_names=class_names, num_classes=num_classes, ignore_index=ignore_index,
        binary=binary, reduce_labels=reduce_labels, lossy=is_lossy_cell(first_cell),
        lossy_masks=lossy_masks, palette_masks=False, color_map=cmap,
    )
    notes += guessed
    if class_names is None:
        class_names = ["background", "foreground"] if binary and num_classes == 2 else [
            f"class_{i}" for i in range(num_classes)
        ]
    if num_classes is not None and num_classes != len(class_names):
        raise DatasetError(
            f"num_classes={num_classes} but {len(class_names)} class names were found; give one of them."
        )
    return SegmentationDataset(
        splits=splits,
        class_names=class_names,
        ignore_index=ignore_index,
        source=label,
        things=things,
        info={"image_column": image_column, "mask_column": mask_column, "reduce_labels": reduce_labels,
              "binary_mask": binary, "in_memory": label == "in-memory dataset",
              "instance_column": instance_column},
        notes=notes,
        options=options,
    )


def is_hub_id(source: str) -> bool:
    return bool(HUB_ID.match(source)) and not source.startswith((".", "/", "~"))


def describe_known() -> str:
    return "\n".join(f"{k}: {v[1]}" for k, v in KNOWN_HUB_DATASETS.items())

