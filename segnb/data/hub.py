"""Hugging Face datasets: hub ids, local copies in hub layout, and in-memory ``datasets.Dataset``.

Column names vary between datasets (``image``/``pixel_values``,
``annotation``/``label``/``mask``/...), so the image and mask columns are
detected, and can be overridden with ``image_column=`` / ``mask_column=``.
Class names come from ``id2label.json`` (the convention of the hub's
segmentation datasets), a ``ClassLabel`` feature, the dataset card, or are
numbered.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from segnb.data.base import SegmentationDataset, given_options
from segnb.data.columns import detect_columns
from segnb.data.decode import read_class_names
from segnb.data.guess import check_label_options, is_lossy_cell, settle_labels
from segnb.data.hub_cache import from_cache, mark_prepared_cache, read_local_copy
from segnb.data.hub_split import HubSplit
from segnb.data.instance_maps import attach_hub_instances
from segnb.errors import DatasetError, HubUnavailableError
from segnb.network_check import DEFAULT_TIMEOUT, probe_repo

__all__ = ["KNOWN_HUB_DATASETS", "is_hub_id", "load_hub"]

# A curated list for pickers and docs: id -> (options that load it well, one line about it).
KNOWN_HUB_DATASETS = {
    "segments/sidewalk-semantic": ({}, "sidewalk scenes from a delivery robot, 35 classes"),
    "scene_parse_150": ({"reduce_labels": True}, "ADE20K scene parsing, 150 classes (0 = other)"),
    "EduardoPacheco/FoodSeg103": ({}, "food images, 104 ingredient classes"),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


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


def _alternatives(source: str) -> str:
    return (
        f"Alternatives: connect and retry; use a copy of '{source}' saved in hub layout "
        f"(load_dataset('/path/to/copy')); a local folder of images and masks; or the built-in "
        f"offline dataset, load_dataset('shapes')."
    )


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
        dataset, id2label, note = from_cache(source, revision, cache_dir)
        if dataset is None:
            raise HubUnavailableError(
                f"Cannot load '{source}': the Hugging Face Hub is unreachable ({status.detail}) and "
                f"{note}. {_alternatives(source)}"
            )
        warnings.warn(note, stacklevel=3)
        return dataset, id2label, note
    dataset = datasets.load_dataset(source, **options)
    mark_prepared_cache(dataset, source, revision)
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
        dataset = read_local_copy(root)
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
        name: HubSplit(name, table, image_column, mask_column, reduce_labels, False, cmap,
                        ignore_index, on_bad_image)
        for name, table in dataset.items()
    }
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
