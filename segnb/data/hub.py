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

from segnb.data.base import SegmentationDataset, Split
from segnb.data.decode import decode_mask, looks_binary, read_class_names, read_image, remap_labels
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
        super().__init__(name, len(table))
        # Decode lazily: we read raw cells and decode them ourselves, so a corrupt row is named.
        self.table = table.cast_column(image_column, _no_decode(table.features[image_column]))
        self.table = self.table.cast_column(mask_column, _no_decode(table.features[mask_column]))
        self.image_column, self.mask_column = image_column, mask_column
        self.reduce_labels, self.binary = reduce_labels, binary
        self.color_map, self.on_bad_image = color_map, on_bad_image
        self.ignore_index = ignore_index
        self.skipped: list[int] = []

    def label(self, index: int) -> str:
        return f"{self.name} row {index}"

    def raw_mask(self, index: int) -> np.ndarray:
        row = self.table[index]
        return decode_mask(row[self.mask_column], f"{self.label(index)} ({self.mask_column})", self.color_map)

    def _load(self, index: int):
        row = self.table[index]
        try:
            image = read_image(row[self.image_column], f"{self.label(index)} ({self.image_column})")
            mask = decode_mask(row[self.mask_column], f"{self.label(index)} ({self.mask_column})", self.color_map)
        except DatasetError as err:
            if self.on_bad_image != "skip":
                raise DatasetError(f"{err} To skip unreadable rows, pass on_bad_image='skip'.") from None
            warnings.warn(f"skipping {self.label(index)}: {err}", stacklevel=3)
            self.skipped.append(index)
            return self._load((index + 1) % len(self))
        return image, remap_labels(mask, self.reduce_labels, self.binary, self.ignore_index)


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


def _from_cache(source: str, revision, options):
    """A cached copy: the repository snapshot in the hub cache, else datasets' prepared cache."""
    import datasets
    from huggingface_hub import snapshot_download

    try:
        with _hub_offline():
            snapshot = Path(snapshot_download(source, repo_type="dataset", revision=revision, local_files_only=True))
        return datasets.load_dataset(str(snapshot), cache_dir=options.get("cache_dir")), read_class_names(snapshot)
    except Exception:  # not in the hub cache; try the prepared arrow cache
        pass
    try:
        with _hub_offline():
            return datasets.load_dataset(source, **options), None
    except Exception:
        return None, None


def _open_hub(source: str, revision, cache_dir, timeout, trust_remote_code):
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
        dataset, id2label = _from_cache(source, revision, options)
        if dataset is None:
            raise HubUnavailableError(
                f"Cannot load '{source}': the Hugging Face Hub is unreachable ({status.detail}) and no "
                f"cached copy was found. {_alternatives(source)}"
            )
        warnings.warn(f"Hub unreachable ({status.detail}); using the cached copy of '{source}'.", stacklevel=3)
        return dataset, id2label
    dataset = datasets.load_dataset(source, **options)
    id2label = None
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(source, "id2label.json", repo_type="dataset", revision=revision)
        id2label = read_class_names(Path(path).parent)
    except Exception:  # the file is optional; names then come from features or the card
        id2label = None
    return dataset, id2label


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
    instance_column: str | None = None,
    things: list[str] | None = None,
) -> SegmentationDataset:
    """A hub id, a local directory in hub layout, or a ``datasets.Dataset``/``DatasetDict``.

    An instance column (``instance_column=``, or one named ``instance``/``instances``/...)
    gives ``split.get(i, instances=True)``; ``things=`` names the countable classes.
    """
    import datasets

    from segnb.data.decode import parse_color_map

    if on_bad_image not in ("raise", "skip"):
        raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}.")
    names_from_files = None
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        dataset, label = source, "in-memory dataset"
    elif Path(str(source)).is_dir():
        root = Path(source)
        label = str(root)
        try:
            dataset = datasets.load_dataset(str(root), cache_dir=cache_dir)
        except Exception as err:
            raise DatasetError(f"{root}: could not read it as a hub-layout dataset ({err}).") from None
        names_from_files = read_class_names(root) or _class_names_from_card(root / "README.md")
    else:
        label = str(source)
        dataset, names_from_files = _open_hub(label, revision, cache_dir, timeout, trust_remote_code)

    if isinstance(dataset, datasets.Dataset):
        dataset = datasets.DatasetDict({"train": dataset})
    if split is not None:
        dataset = datasets.DatasetDict({split: dataset[split]})
    first = next(iter(dataset.values()))
    image_column, mask_column = detect_columns(first.features, image_column, mask_column)
    # Keep splits that have masks (the test split of many datasets has none).
    dataset = datasets.DatasetDict({k: v for k, v in dataset.items() if mask_column in v.column_names})
    if list(dataset) == ["train"] and val_fraction > 0 and len(dataset["train"]) > 1:
        parts = dataset["train"].train_test_split(test_size=val_fraction, seed=seed)
        dataset = datasets.DatasetDict({"train": parts["train"], "validation": parts["test"]})

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
    probe = next(iter(splits.values()))
    sample = [probe.raw_mask(i) for i in range(min(8, len(probe)))]
    if binary is None:
        binary = class_names is None and num_classes is None and not reduce_labels and looks_binary(sample)
    for s in splits.values():
        s.binary = binary
    if class_names is None:
        if num_classes is None:
            num_classes = _infer_num_classes(probe, binary, reduce_labels, ignore_index)
        class_names = ["background", "foreground"] if binary else [f"class_{i}" for i in range(num_classes)]
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
              "binary_mask": binary, "instance_column": instance_column},
    )


def _infer_num_classes(split: _HubSplit, binary: bool, reduce_labels: bool, ignore_index: int) -> int:
    """Largest class value over up to 200 masks, plus one (pass num_classes= to be exact)."""
    top = 0
    step = max(1, len(split) // 200)
    for index in range(0, len(split), step):
        mask = remap_labels(split.raw_mask(index), reduce_labels, binary, ignore_index)
        valid = mask[mask != ignore_index]
        if valid.size:
            top = max(top, int(valid.max()))
    return top + 1


def is_hub_id(source: str) -> bool:
    return bool(HUB_ID.match(source)) and not source.startswith((".", "/", "~"))


def describe_known() -> str:
    return "\n".join(f"{k}: {v[1]}" for k, v in KNOWN_HUB_DATASETS.items())

