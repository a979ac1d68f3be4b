"""Runs: every ``fit()`` with an output folder is a run; list them and compare them.

``fit()`` writes a run by default, to ``runs/<date>_<time>_<arch>-<encoder>`` (under the current
folder), or to its ``checkpoint_dir`` when one is given, or to ``run="path"``. ``run=False`` turns
it off for one call; the environment variable ``SEGNB_RUNS`` sets the folder of the default runs,
and ``SEGNB_RUNS=off`` turns the default off (the tests point it at a temporary folder).

A run folder holds:

====================  ==========================================================================
``run.json``          the full configuration (training options, data source and options, model
                      spec), the code version (package version, git commit of a checkout),
                      device, precision, times, status, history and the final scores
                      (mIoU, pixel accuracy, per-class IoU)
``scores.json``       the final :class:`segnb.metrics.Scores`, confusion matrix included
``model/``            the trained model (:func:`segnb.load_model`; a click model:
                      ``model/click.safetensors``, :meth:`segnb.interactive.ClickModel.load`)
``predictions.npz``   a fixed set of validation images (evenly spaced over the split, the same
                      for every run on the same data), their truth and this run's prediction
``best/``, ``last/``  checkpoints, when the run folder is also the ``checkpoint_dir``
====================  ==========================================================================

Every file is written whole to a temporary name and renamed over the old one, so a reader never
sees half a file. ``run.json`` is written when training starts (status ``running``), after each
epoch and at the end; a run whose process ended without finishing it (killed, a crash of the
machine) reads as ``interrupted``.

``segnb.runs(folder)`` is :func:`list_runs` (this module is callable): a pandas DataFrame, one row
per run. ``segnb.compare(runs)`` is :func:`compare`: the runs' curves, per-class IoU, confusion
difference, predictions and configuration side by side, as plotly figures from :mod:`segnb.viz`.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import socket
import subprocess
import sys
import types
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from segnb.callbacks import Callback
from segnb.errors import SegnbError

__all__ = [
    "RUN_FORMAT", "ENV", "RunRecorder", "Run", "Comparison", "default_folder", "run_recorder", "load_run",
    "list_runs", "compare", "code_version", "save_run_set", "load_run_set",
]

RUN_FORMAT = "segnb-run/1"
ENV = "SEGNB_RUNS"
OFF = {"", "0", "off", "false", "no", "none"}
PREVIEW_IMAGES = 8
SUMMARY_KEYS = ("miou", "pixel_accuracy", "mean_accuracy", "val_loss", "train_loss")
CLICK_MODEL_FILE = "click.safetensors"  # a click model's run keeps it in model/ (ClickModel.save)


class RunError(SegnbError, ValueError):
    """A run folder is missing, damaged, or not a run."""


# ---------------------------------------------------------------------------------- where runs go


def default_folder() -> Path | None:
    """The folder of the default runs: ``$SEGNB_RUNS`` or ``runs``; None when ``SEGNB_RUNS=off``."""
    value = os.environ.get(ENV, "runs")
    if value.strip().lower() in OFF:
        return None
    return Path(value).expanduser()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:40] or "model"


def readable_name(model, when: _dt.datetime | None = None) -> str:
    """``2026-12-06_013045_fcn8s-resnet18``: sorted by time, and says what was trained."""
    when = when or _dt.datetime.now()
    spec = getattr(model, "spec", None) or {}
    what = "-".join(_slug(spec[k]) for k in ("arch", "encoder") if spec.get(k)) or _slug(type(model).__name__)
    return f"{when:%Y-%m-%d_%H%M%S}_{what}"


def run_recorder(run, checkpoint_dir=None, config: dict | None = None) -> RunRecorder | None:
    """What ``fit(run=...)`` records to: the run folder's recorder, or None (no run).

    ``run``: None (the default: ``checkpoint_dir`` when given, else a new folder under
    :func:`default_folder`), False (no run), a folder, or a :class:`RunRecorder`.
    """
    if run is False:
        return None
    if isinstance(run, RunRecorder):
        recorder = run
    elif run is None or run is True:
        if checkpoint_dir is not None:
            recorder = RunRecorder(checkpoint_dir)
        else:
            parent = default_folder()
            if parent is None:
                if run is True:
                    raise RunError(f"run=True, but {ENV}=off turns the default runs folder off: give run='folder'.")
                return None
            recorder = RunRecorder(parent=parent)
    elif isinstance(run, (str, os.PathLike)):
        recorder = RunRecorder(run)
    else:
        raise RunError(f"run must be None (the default folder), False (no run), a folder or a RunRecorder; "
                       f"got {run!r}.")
    if config is not None:
        recorder.config = config
    return recorder


# ---------------------------------------------------------------------------------- writing runs


def _plain(value):
    """JSON-ready data from a configuration value (functions and modules by name)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, (os.PathLike,)):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    name = getattr(value, "__name__", None) or type(value).__name__
    return f"<{name}>"


def _write_json(path: Path, data: dict) -> None:
    from segnb.models.io import atomic_write

    text = json.dumps(data, indent=1, default=_plain)
    atomic_write(path, lambda p: p.write_text(text))


_CODE: dict | None = None


def code_version() -> dict:
    """segnb's version and, in a git checkout, its commit and whether files were changed."""
    global _CODE
    if _CODE is None:
        package = sys.modules[__name__.rpartition(".")[0]]  # segnb itself, imported before this module
        code = {"segnb": package.__version__, "python": sys.version.split()[0]}
        try:
            import torch

            code["torch"] = torch.__version__
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        root = Path(__file__).resolve().parents[1]
        if (root / ".git").exists():
            try:
                commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=5)
                dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                       capture_output=True, text=True, timeout=5)
                if commit.returncode == 0:
                    code["git_commit"] = commit.stdout.strip()
                    code["git_dirty"] = bool(dirty.stdout.strip())
            except (OSError, subprocess.SubprocessError):
                pass
        _CODE = code
    return dict(_CODE)


def preview_indices(count: int, n: int = PREVIEW_IMAGES) -> list[int]:
    """Evenly spaced indices over a split of ``count`` images: the same for every run on it."""
    if count <= 0:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, min(n, count))})


def _resized(image: np.ndarray, mask: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask at the training size (as validation saw them), or as they are."""
    if not size:
        return image, mask
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if image.shape[:2] == (h, w):
        return image, mask
    image = np.asarray(Image.fromarray(np.asarray(image, np.uint8)).resize((w, h), Image.BILINEAR))
    mask = np.asarray(Image.fromarray(np.asarray(mask).astype(np.int32)).resize((w, h), Image.NEAREST))
    return image, mask.astype(np.int64)


class RunRecorder(Callback):
    """Writes one run folder (see the module's docstring); ``fit()`` installs it.

    Args:
        path: the run folder; or None with ``parent``: a new readable name inside ``parent``.
        tags: extra facts kept in ``run.json`` (a sweep's study and trial number).
        preview: how many validation images are predicted and kept.
    """

    order = -10  # first: the record is whole before any other callback shows that training ended

    def __init__(self, path=None, parent=None, tags: dict | None = None, preview: int = PREVIEW_IMAGES):
        if path is None and parent is None:
            raise RunError("RunRecorder needs a folder (path=) or a parent folder for a new run (parent=).")
        self.path = Path(path) if path is not None else None
        self.parent = Path(parent) if parent is not None else None
        self.tags, self.preview = dict(tags or {}), preview
        self.config: dict = {}
        self.info: dict = {}
        self.active = False

    # -- events ----------------------------------------------------------------------------------
    def on_fit_start(self, trainer):
        self.active = bool(getattr(trainer, "is_main_process", True))
        if not self.active:
            return
        model, data = trainer.unwrapped, trainer.data
        now = _dt.datetime.now()
        if self.path is None:
            base = self.parent / readable_name(model, now)
            path, k = base, 1
            while path.exists():
                k += 1
                path = base.with_name(f"{base.name}_{k}")
            self.path = path
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"The run folder {self.path} cannot be made ({err.strerror or err}). Give another "
                           f"folder (fit(run='...')), or run=False for no run.") from None
        provenance = data.provenance() or {}
        spec = dict(getattr(model, "spec", None) or {"arch": type(model).__name__})
        eval_split = data[data.eval_split]
        self.info = {
            "format": RUN_FORMAT,
            "name": self.path.name,
            "status": "running",
            "stopped": "",
            "started": now.isoformat(timespec="seconds"),
            "ended": None,
            "updated": now.isoformat(timespec="seconds"),
            "seconds": None,
            "config": {
                "train": _plain(self.config or _config_from_trainer(trainer)),
                "data": {"source": provenance.get("data_source", getattr(data, "source", None)),
                         "options": _plain(provenance.get("data_options", {})),
                         "class_names": list(data.class_names), "ignore_index": int(data.ignore_index),
                         "eval_split": data.eval_split, "train_images": len(data[data.train_split]),
                         "eval_images": len(eval_split)},
                "model": _plain(spec),
            },
            "code": code_version(),
            "device": str(trainer.device),
            "device_name": _device_name(trainer.device),
            "precision": trainer.precision,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "tags": _plain(self.tags),
            "history": [],
            "steps": 0,
            "summary": {},
            "preview": {"split": data.eval_split, "indices": preview_indices(len(eval_split), self.preview)},
        }
        self._write()

    def on_epoch_end(self, trainer):
        if not self.active:
            return
        self.info["history"] = _plain(trainer.history.epochs)
        self.info["steps"] = trainer.step
        self.info["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
        self.info["summary"] = _summary(trainer.history.epochs)
        self._write()

    def on_fit_end(self, trainer):
        if not self.active or not self.info:
            return
        problems = []
        history = trainer.history
        self.info["history"] = _plain(history.epochs)
        self.info["steps"] = history.steps
        self.info["summary"] = _summary(history.epochs)
        self.info["stopped"] = history.stopped
        self.info["limit"] = history.limit
        self.info["status"] = status_of(history.stopped, history.limit)
        self.info["ended"] = _dt.datetime.now().isoformat(timespec="seconds")
        self.info["seconds"] = round(float(trainer.elapsed), 3)
        self.info["images_seen"] = int(trainer.images_seen)
        if history.steps > 0 or trainer.resumed:
            for what, write in (("the model", self._write_model), ("the scores", self._write_scores),
                                ("the predictions", self._write_predictions)):
                try:
                    write(trainer)
                except Exception as err:  # a record left incomplete never hides how training ended
                    problems.append(f"{what}: {type(err).__name__}: {err}")
        self.info["record_problems"] = problems
        try:
            self._write()
        except OSError as err:
            problems.append(f"run.json: {err}")
        if problems:
            warnings.warn(f"The run record {self.path} is incomplete ({'; '.join(problems)}); the model and "
                          "history in memory are intact.", stacklevel=2)

    # -- parts -------------------------------------------------------------------------------------
    def _write(self) -> None:
        _write_json(self.path / "run.json", self.info)

    def _write_model(self, trainer) -> None:
        from segnb.models.io import save_model

        model = trainer.unwrapped
        if getattr(model, "task", "semantic") == "click":  # its own file: weights, click radius, history
            model.save(self.path / "model" / CLICK_MODEL_FILE, history=trainer.history)
        else:
            save_model(model, self.path / "model", data=trainer.data)
        self.info["model"] = "model"

    def _write_scores(self, trainer) -> None:
        scores = trainer.scores
        if scores is None or not hasattr(scores, "as_dict"):
            return
        _write_json(self.path / "scores.json", _plain(scores.as_dict()))
        self.info["summary"]["confusion"] = "scores.json"

    def _write_predictions(self, trainer) -> None:
        from segnb.models.io import atomic_write
        from segnb.prediction import predict

        model, data = trainer.unwrapped, trainer.data
        if getattr(model, "task", "semantic") != "semantic":
            return  # an instance model's predictions are detections, a click model's need clicks
        split = data[self.info["preview"]["split"]]
        indices = self.info["preview"]["indices"]
        size = self.info["config"]["train"].get("image_size") if isinstance(self.info["config"]["train"], dict) else None
        arrays = {"indices": np.asarray(indices, np.int64)}
        pairs = [_resized(*split[i], size) for i in indices]
        if not pairs:
            return
        masks = predict(model, [p[0] for p in pairs], device=trainer.device).masks
        for k, ((image, truth), pred) in enumerate(zip(pairs, masks, strict=True)):
            arrays[f"image_{k}"] = np.asarray(image, np.uint8)
            arrays[f"truth_{k}"] = np.asarray(truth).astype(np.int16)
            arrays[f"pred_{k}"] = np.asarray(pred.cpu().numpy()).astype(np.int16)
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as file:
                np.savez_compressed(file, **arrays)

        atomic_write(self.path / "predictions.npz", write)
        self.info["predictions"] = "predictions.npz"


def _device_name(device) -> str:
    try:
        import torch

        if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_name(device)
    except Exception:  # noqa: BLE001 - a name only
        pass
    import platform

    return platform.processor() or platform.machine()


def _config_from_trainer(trainer) -> dict:
    """The training options of a trainer built without a configuration (by hand, not by fit)."""
    config = getattr(trainer, "config", None)
    if hasattr(config, "to_dict"):  # segnb.train.TrainConfig
        return _plain(config.to_dict())
    if config is not None:
        return _plain(config)
    names = ("epochs", "batch_size", "lr", "image_size", "seed", "max_minutes", "grad_clip", "augment",
             "eval_every", "optimizer_name", "precision")
    return {n: _plain(getattr(trainer, n, None)) for n in names}


def _summary(epochs: list[dict]) -> dict:
    """Headline figures: the last epoch's, and the best mIoU with its epoch."""
    summary: dict = {}
    scored = [r for r in epochs if r.get("miou") is not None]
    last = scored[-1] if scored else (epochs[-1] if epochs else {})
    for key in SUMMARY_KEYS:
        if last.get(key) is not None:
            summary[key] = last[key]
    if last.get("iou") is not None:
        summary["iou"] = last["iou"]
    for key in ("mask_ap", "mask_ap50", "first_click_iou"):  # instance models, click models
        if last.get(key) is not None:
            summary[key] = last[key]
    if scored:
        best = max(scored, key=lambda r: r["miou"] if r["miou"] == r["miou"] else -1)
        summary["best_miou"], summary["best_epoch"] = best["miou"], best["epoch"]
    summary["epochs_done"] = epochs[-1]["epoch"] if epochs else 0
    return summary


def status_of(stopped: str, limit: str = "") -> str:
    """``completed``, ``stopped``, ``pruned`` (by a sweep), ``interrupted`` or ``failed``, from
    ``history.stopped``."""
    if stopped == "completed" or limit in ("epochs", "time"):
        return "completed"
    if stopped.startswith("failed"):
        return "failed"
    if stopped.startswith("interrupted"):
        return "interrupted"
    if stopped.startswith("pruned"):
        return "pruned"
    return "stopped"


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


def _as_runs(runs, folder=None) -> list[Run]:
    """Runs from a DataFrame of :func:`list_runs`, Run objects, folders, or names in ``folder``."""
    if hasattr(runs, "columns") and "path" in getattr(runs, "columns", ()):
        items = list(runs["path"])
    elif isinstance(runs, (str, os.PathLike, Run)):
        items = [runs]
    else:
        items = list(runs)
    out = []
    base = Path(folder) if folder is not None else (default_folder() or Path("runs"))
    for item in items:
        if isinstance(item, Run):
            out.append(item)
            continue
        path = Path(item)
        if not (path / "run.json").exists() and (base / path).is_dir():
            path = base / path
        out.append(Run(path))
    if not out:
        raise RunError("No runs to compare: give a DataFrame of segnb.runs(), run folders or run names.")
    return out


# ---------------------------------------------------------------------------------- comparing runs


class Comparison:
    """Runs side by side: each method returns a plotly figure (or a DataFrame) from :mod:`segnb.viz`.

    ``curves(x=...)`` training curves on one x axis (``epoch``, ``step`` or ``seconds``);
    ``iou()`` per-class IoU as grouped bars; ``confusion_difference(a, b)``; ``predictions()`` the
    same validation images predicted by each run, errors hatched, and where the runs disagree;
    ``config()`` the configuration fields that differ (``config_figure()`` as a table figure).
    """

    def __init__(self, runs: list[Run], x: str = "epoch"):
        self.runs, self.x = runs, x
        self.names = _unique_names(runs)

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.runs)} runs: {', '.join(self.names)}>"

    def curves(self, x: str | None = None, keys: Sequence[str] = ("train_loss", "val_loss", "miou"),
               log_loss: bool = True):
        from segnb.viz import runs_curves_figure

        return runs_curves_figure({n: r.history for n, r in zip(self.names, self.runs, strict=True)},
                                  x=x or self.x, keys=keys, log_loss=log_loss)

    def _class_names(self) -> list[str]:
        names = [r.class_names for r in self.runs]
        if any(n != names[0] for n in names):
            raise RunError("These runs were trained on different classes: per-class figures compare runs on one "
                           f"dataset ({', '.join(f'{a}: {len(n)} classes' for a, n in zip(self.names, names, strict=True))}).")
        return names[0]

    def iou(self):
        from segnb.viz import runs_iou_figure

        classes = self._class_names()
        return runs_iou_figure(classes, {n: r.summary.get("iou") or [None] * len(classes)
                                         for n, r in zip(self.names, self.runs, strict=True)})

    def _pick(self, which) -> int:
        if isinstance(which, int):
            return which
        if which in self.names:
            return self.names.index(which)
        raise RunError(f"No run {which!r} here; the runs are {', '.join(self.names)}.")

    def confusion_difference(self, a=0, b=1, normalize: bool = True):
        """Run ``b``'s confusion matrix less run ``a``'s (row-normalised by default)."""
        from segnb.viz import confusion_difference_figure

        if len(self.runs) < 2:
            raise RunError("A confusion difference needs two runs.")
        i, j = self._pick(a), self._pick(b)
        classes = self._class_names()
        return confusion_difference_figure(self.runs[i].confusion(), self.runs[j].confusion(), classes,
                                           names=(self.names[i], self.names[j]), normalize=normalize)

    def predictions(self, max_images: int = 4, palette=None):
        """The same validation images, one row each: image, truth, then each run's prediction."""
        from segnb.viz import contrast_palette, prediction_grid_figure

        classes = self._class_names()
        self._check_same_data()
        previews = [r.predictions() for r in self.runs]
        if any(p["indices"] != previews[0]["indices"] for p in previews):
            raise RunError("These runs kept different validation images (different data or splits), so their "
                           "predictions cannot be shown side by side.")
        first = previews[0]
        n = min(max_images, len(first["indices"]))
        palette = contrast_palette(len(classes)) if palette is None else palette
        ignore = self.runs[0].config.get("data", {}).get("ignore_index", 255)
        return prediction_grid_figure(first["images"][:n], first["truths"][:n],
                                      {name: p["preds"][:n] for name, p in zip(self.names, previews, strict=True)},
                                      palette, ignore_index=ignore, indices=first["indices"][:n])

    def _check_same_data(self) -> None:
        data = [(r.config.get("data", {}).get("source"), json.dumps(r.config.get("data", {}).get("options"),
                                                                    sort_keys=True)) for r in self.runs]
        if any(d != data[0] for d in data):
            raise RunError("These runs were trained on different data (source or options), so their predictions of "
                           "'the same' validation images are not of the same images.")

    def config(self, all_fields: bool = False):
        """A DataFrame: one row per configuration field that differs (all with ``all_fields``), a column per run."""
        import pandas as pd

        flat = [r.flat_config() for r in self.runs]
        keys = list(dict.fromkeys(k for f in flat for k in f))
        rows = {k: [f.get(k) for f in flat] for k in keys}
        if not all_fields:
            rows = {k: v for k, v in rows.items() if len({json.dumps(x, default=str) for x in v}) > 1}
        return pd.DataFrame.from_dict(rows, orient="index", columns=self.names)

    def config_figure(self, all_fields: bool = False):
        from segnb.viz import table_figure

        table = self.config(all_fields)
        return table_figure(["field", *table.columns], [[str(i) for i in table.index],
                                                        *[[_fmt(v) for v in table[c]] for c in table.columns]],
                            title="configuration: what differs" if not all_fields else "configuration")

    def figures(self) -> dict:
        """Every figure that these runs allow (a confusion difference needs two, predictions need them kept)."""
        out = {"curves": self.curves(), "iou": self.iou(), "config": self.config_figure()}
        if len(self.runs) >= 2:
            try:
                out["confusion_difference"] = self.confusion_difference()
            except RunError:
                pass
        try:
            out["predictions"] = self.predictions()
        except RunError:
            pass
        return out

    def show(self) -> None:
        """Draw every figure (plotly's ``show``: in a notebook, under the cell)."""
        for figure in self.figures().values():
            figure.show()

    def _repr_html_(self) -> str:
        table = self.config()
        body = table.to_html() if len(table) else "<p>The runs' configurations are identical.</p>"
        return (f"<b>{len(self.runs)} runs</b>: {', '.join(self.names)}<br>{body}<p><i>.curves(), .iou(), "
                ".confusion_difference(), .predictions(), .show() for the figures.</i></p>")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _unique_names(runs: list[Run]) -> list[str]:
    names, seen = [], {}
    for run in runs:
        name = run.name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def compare(runs, x: str = "epoch", folder=None) -> Comparison:
    """Compare runs: a DataFrame of :func:`list_runs` (or part of one), run folders, :class:`Run`
    objects, or run names in ``folder``. ``x`` is the curves' axis: ``epoch``, ``step`` or ``seconds``."""
    if x not in ("epoch", "step", "seconds"):
        raise RunError(f"x must be 'epoch', 'step' or 'seconds', got {x!r}.")
    return Comparison(_as_runs(runs, folder), x=x)


# ---------------------------------------------------------------------------------- run sets (lessons)

RUN_SET_FORMAT = "segnb-run-set/1"


def save_run_set(path, runs: Iterable, title: str = "") -> Path:
    """A lesson's set of runs to compare, as JSON: the runs' folders, relative to the file when possible."""
    from segnb.models.io import atomic_write

    path = Path(path)
    folders = []
    for run in _as_runs(list(runs) if not hasattr(runs, "columns") else runs):
        try:
            folders.append(os.path.relpath(run.path.resolve(), path.resolve().parent))
        except ValueError:  # another drive
            folders.append(str(run.path.resolve()))
    text = json.dumps({"format": RUN_SET_FORMAT, "title": title, "runs": folders}, indent=1)
    atomic_write(path, lambda p: p.write_text(text))
    return path


def load_run_set(path) -> list[Run]:
    """The runs a :func:`save_run_set` file names (an error names the ones that are gone)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: cannot read this run set ({err}).") from None
    if data.get("format") != RUN_SET_FORMAT:
        raise RunError(f"{path} is not a set of runs (format {data.get('format')!r}).")
    runs, missing = [], []
    for folder in data.get("runs", []):
        full = (path.parent / folder) if not os.path.isabs(folder) else Path(folder)
        try:
            runs.append(Run(full))
        except RunError as err:
            missing.append(str(err))
    if missing:
        raise RunError(f"{path} names runs that cannot be read: {'; '.join(missing)}.")
    return runs


class _CallableModule(types.ModuleType):
    """``segnb.runs(folder)`` lists the runs (:func:`list_runs`); ``segnb.runs.compare`` etc. as usual."""

    def __call__(self, folder=None, **options):
        return list_runs(folder, **options)


sys.modules[__name__].__class__ = _CallableModule


def _fit_hook(trainer, run=None, config=None):
    return run_recorder(run, getattr(trainer, "checkpoint_dir", None), config=config)


def _register() -> None:
    from segnb.callbacks import FIT_HOOKS

    if _fit_hook not in FIT_HOOKS:
        FIT_HOOKS.append(_fit_hook)


_register()
