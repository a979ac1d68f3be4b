"""Offline copies of hub datasets: where a cached copy came from, and reading it without the network.

A copy in ``datasets``' prepared cache is used offline only when it is known to come from the hub
id asked for: a marker file written when it was loaded online says so.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from segnb.data.decode import read_class_names
from segnb.errors import DatasetError

__all__ = ["MARKER", "from_cache", "hub_offline", "mark_prepared_cache", "read_errors", "read_local_copy"]


@contextlib.contextmanager
def hub_offline():
    """Make ``datasets`` and ``huggingface_hub`` use their caches only, for this block."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def read_errors():
    """What reading a dataset can raise for bad or missing files (not programming errors)."""
    import datasets.exceptions

    return (OSError, ValueError, TypeError, KeyError, datasets.exceptions.DatasetsError)


def read_local_copy(root: Path):
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
        except read_errors() as err:
            raise DatasetError(f"{root}: could not read it as a hub-layout dataset ({err}).") from None


MARKER = "segnb-source.json"


def _rows(dataset) -> int:
    return sum(len(t) for t in dataset.values()) if hasattr(dataset, "values") else len(dataset)


def mark_prepared_cache(dataset, source: str, revision) -> None:
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


def prepared_copy_origin(dataset, source: str) -> tuple[bool, str, str]:
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


def from_cache(source: str, revision, cache_dir):
    """A cached copy that came from the hub id ``source``: ``(dataset, class names, note)``.

    First the repository snapshot in the hub cache (huggingface_hub files it under the id),
    then datasets' prepared cache, used only when it is known to come from that id. Returns
    ``(None, None, why)`` when there is none.
    """
    import datasets
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        with hub_offline():
            snapshot = Path(snapshot_download(source, repo_type="dataset", revision=revision,
                                              local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        snapshot = None
    if snapshot is not None:
        dataset = read_local_copy(snapshot)
        note = (f"Hub unreachable: using the cached copy of '{source}' at {snapshot} "
                f"(downloaded {_date(snapshot)}, {_rows(dataset):,} rows).")
        return dataset, read_class_names(snapshot), note
    prepared = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / source.replace("/", "___")
    if not prepared.is_dir():
        return None, None, "no cached copy was found"
    try:
        with hub_offline():
            dataset = datasets.load_dataset(source, revision=revision, cache_dir=cache_dir)
    except read_errors() as err:
        return None, None, f"the cached copy at {prepared} could not be read ({err})"
    from_hub, folder, date = prepared_copy_origin(dataset, source)
    if not from_hub:
        return None, None, (
            f"a cached dataset named '{source}' at {folder} was not used: nothing shows it came from "
            "the hub (it may be a local folder of the same name)"
        )
    note = (f"Hub unreachable: using the cached copy of '{source}' at {folder} "
            f"(loaded {date}, {_rows(dataset):,} rows).")
    return dataset, None, note
