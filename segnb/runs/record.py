"""Writing a run: where runs go, their names, and the :class:`RunRecorder` that ``fit()`` installs.

The run folder's files are described in :mod:`segnb.runs`; this module writes them (each whole, to a
temporary name renamed over the old one), and holds what reading them needs too: the format,
:class:`RunError`, :func:`default_folder` and :func:`status_of`.
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
import warnings
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from segnb.callbacks import Callback
from segnb.errors import SegnbError

__all__ = [
    "RUN_FORMAT", "ENV", "RunError", "RunRecorder", "default_folder", "readable_name", "run_recorder",
    "code_version", "preview_indices", "status_of",
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
        package = sys.modules[__name__.partition(".")[0]]  # segnb itself, imported before this module
        code = {"segnb": package.__version__, "python": sys.version.split()[0]}
        try:
            import torch

            code["torch"] = torch.__version__
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        root = Path(__file__).resolve().parents[2]
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
    """Writes one run folder (see :mod:`segnb.runs`); ``fit()`` installs it.

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
                "train": _own_loss(_plain(self.config or _config_from_trainer(trainer)), trainer),
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


def _own_loss(train, trainer):
    """A task that brings its own loss (``own_loss``: the click model's, Mask R-CNN's) is not reached by
    fit's ``loss`` option: the record names what was really minimised, not the option's unused default."""
    own = getattr(getattr(trainer, "task", None), "own_loss", None)
    return {**train, "loss": own} if own and isinstance(train, dict) and "loss" in train else train


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

