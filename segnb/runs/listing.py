"""Reading runs: a :class:`Run` from its folder, and :func:`list_runs`, every run of a folder as a table.

A run still marked ``running`` whose process has ended reads as ``interrupted``; a folder that is
not a readable run is skipped with a warning naming it.
"""

from __future__ import annotations

import json
import os
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segnb.runs.record import CLICK_MODEL_FILE, RUN_FORMAT, RunError, default_folder

__all__ = ["Run", "load_run", "flatten_config", "list_runs"]


# ---------------------------------------------------------------------------------- reading runs


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname():
        return True  # another machine's run: it says itself when it ends
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, ValueError, TypeError):
        return True
    return True


def _read_info(path) -> dict:
    file = os.path.join(path, "run.json")
    try:
        with open(file, "rb") as handle:
            info = json.loads(handle.read())
    except FileNotFoundError:
        raise RunError(f"{path}: no run.json (not a run, or one whose first write never finished)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunError(f"{file} is damaged ({err})") from None
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise RunError(f"{file} is not a segnb run (format {info.get('format') if isinstance(info, dict) else None!r})")
    for key in ("name", "status", "config", "history"):
        if key not in info:
            raise RunError(f"{file} lacks {key!r}: it is half-written or damaged")
    if not isinstance(info["config"], dict) or not isinstance(info["history"], list):
        raise RunError(f"{file}: its config or history is not what a run holds")
    if info["status"] == "running" and not _alive(info.get("pid", -1), info.get("host", "")):
        info["status"] = "interrupted"
        info["stopped"] = "interrupted: the process ended without finishing the run"
    return info


class Run:
    """One run folder, read: ``info`` (run.json), and the model, scores and predictions on demand."""

    def __init__(self, path, info: dict | None = None):
        self._path = path
        self.info = info if info is not None else _read_info(path)

    @property
    def path(self) -> Path:
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    name = property(lambda self: self.info["name"])
    status = property(lambda self: self.info["status"])
    config = property(lambda self: self.info["config"])
    history = property(lambda self: self.info["history"])
    summary = property(lambda self: self.info.get("summary") or {})

    @property
    def class_names(self) -> list[str]:
        return list(self.config.get("data", {}).get("class_names") or [])

    def __repr__(self) -> str:
        miou = self.summary.get("miou")
        score = f", mIoU {miou:.3f}" if isinstance(miou, float) else ""
        return f"<Run {self.name}: {self.status}{score}>"

    def model(self, device="cpu"):
        """The trained model (``model/``), or the last checkpoint's when the model was never written."""
        from segnb.models.io import load_model

        if (self.path / "model" / CLICK_MODEL_FILE).is_file():
            from segnb.interactive import ClickModel

            return ClickModel.load(self.path / "model" / CLICK_MODEL_FILE).to(device)
        for folder in (self.path / "model", self.path / "last", self.path / "best"):
            if (folder / "model.json").is_file():
                return load_model(folder, device=device)
        raise RunError(f"{self.path} holds no model ({self.status}; {self.info.get('stopped') or 'no steps'}).")

    def scores(self) -> dict:
        file = self.path / "scores.json"
        if not file.is_file():
            raise RunError(f"{self.path} holds no final scores (it ended: {self.info.get('stopped') or self.status}).")
        return json.loads(file.read_text())

    def confusion(self) -> np.ndarray:
        return np.asarray(self.scores()["confusion"], np.int64)

    def predictions(self) -> dict:
        """``indices``, ``images``, ``truths``, ``preds`` (lists of arrays) of the preview images."""
        file = self.path / "predictions.npz"
        if not file.is_file():
            raise RunError(f"{self.path} holds no predictions (it ended: {self.info.get('stopped') or self.status}).")
        with np.load(file, allow_pickle=False) as z:
            n = len(z["indices"])
            return {"indices": z["indices"].tolist(),
                    "images": [z[f"image_{k}"] for k in range(n)],
                    "truths": [z[f"truth_{k}"].astype(np.int64) for k in range(n)],
                    "preds": [z[f"pred_{k}"].astype(np.int64) for k in range(n)]}

    def flat_config(self) -> dict:
        return flatten_config(self.config)


def load_run(path) -> Run:
    """A :class:`Run` from its folder (raises :class:`RunError` saying what is wrong)."""
    return Run(path)


def flatten_config(config: dict) -> dict:
    """One level: training options by name, ``arch``/``encoder``/... from the model spec, ``data`` and
    ``data.<option>`` from the data source."""
    out: dict = {}
    data = config.get("data") or {}
    out["data"] = data.get("source")
    for key, value in sorted((data.get("options") or {}).items()):
        out[f"data.{key}"] = _cell(value)
    for key, value in (config.get("model") or {}).items():
        if key == "options" and isinstance(value, dict):
            for k, v in value.items():
                out[f"model.{k}"] = _cell(v)
        elif key != "num_classes":
            out[key] = _cell(value)
    for key, value in (config.get("train") or {}).items():
        out[key if key not in out else f"train.{key}"] = _cell(value)
    return out


def _cell(value):
    """A value a DataFrame cell and an equality test can hold (lists as text)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


HEADLINE = ("name", "status", "started", "arch", "encoder")
SCORES = ("miou", "best_miou", "pixel_accuracy", "mean_accuracy", "val_loss", "epochs_done", "steps", "seconds")


def _scan(folder: Path) -> tuple[list[Run], dict[str, str]]:
    runs, skipped = [], {}
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return [], {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            runs.append(Run(entry.path, _read_info(entry.path)))
        except RunError as err:
            skipped[entry.path] = str(err)
    return runs, skipped


def list_runs(folder=None, *, status: str | Sequence[str] | None = None, query: str | None = None,
              all_columns: bool = False, **equals):
    """The runs in ``folder`` (default :func:`default_folder`) as a pandas DataFrame, one row each.

    Columns: name, status, start time, arch and encoder, then every configuration field whose value
    differs between the runs (all of them with ``all_columns=True``), the headline scores (last
    mIoU, best mIoU, pixel and mean accuracy, validation loss), epochs, steps, seconds, and
    ``path``. Newest first.

    Filter with ``status="completed"``, any column by value (``arch="fcn8s"``, ``lr=1e-3``), a
    pandas ``query="miou > 0.5"``, or the DataFrame itself. A folder that is not a readable run
    (damaged, half-written, not a run) is skipped with a warning naming it; ``df.attrs["skipped"]``
    maps each to the reason.
    """
    import pandas as pd

    folder = Path(folder) if folder is not None else (default_folder() or Path("runs"))
    runs, skipped = _scan(folder)
    if skipped:
        listed = "; ".join(f"{Path(p).name}: {why}" for p, why in list(skipped.items())[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"segnb.runs skipped {len(skipped)} folder(s) in {folder} that are not readable runs "
                      f"({listed}{more}).", stacklevel=2)
    rows, configs = [], []
    for run in runs:
        info, summary = run.info, run.summary
        config = run.flat_config()
        configs.append(config)
        row = {"name": info["name"], "status": info["status"], "started": info.get("started"),
               "arch": config.get("arch"), "encoder": config.get("encoder")}
        row.update(config)
        for key in SCORES:
            value = summary.get(key) if key in summary else info.get(key)
            row[key] = value
        row["sweep"] = (info.get("tags") or {}).get("sweep")
        row["path"] = str(run._path)
        rows.append(row)
    config_keys = [k for k in dict.fromkeys(k for c in configs for k in c) if k not in (*HEADLINE, *SCORES, "path")]
    frame = pd.DataFrame(rows, columns=[*HEADLINE, *config_keys, *SCORES, "sweep", "path"])
    if not all_columns and len(frame) > 1:
        drop = [k for k in config_keys if frame[k].astype(str).nunique(dropna=False) <= 1]
        frame = frame.drop(columns=drop)
    elif not all_columns:
        frame = frame[[c for c in frame.columns if c in (*HEADLINE, *SCORES, "path") or c in ("lr", "loss", "data")]]
    if "sweep" in frame and frame["sweep"].isna().all():
        frame = frame.drop(columns=["sweep"])
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        frame = frame[frame["status"].isin(wanted)]
    for key, value in equals.items():
        if key not in frame.columns:
            raise RunError(f"No column {key!r} to filter on; the columns are: {', '.join(frame.columns)} "
                           "(all_columns=True shows every configuration field).")
        frame = frame[frame[key] == value]
    if query:
        frame = frame.query(query)
    frame = frame.sort_values("started", ascending=False, kind="stable").reset_index(drop=True)
    frame.attrs["skipped"] = skipped
    frame.attrs["folder"] = str(folder)
    return frame
