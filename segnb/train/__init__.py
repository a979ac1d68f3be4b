"""Training: ``fit()``, a loop a student can read, and the machinery beside it, one job per module.

==================  ============================================================
``config``          :class:`TrainConfig`: every option, its default and its check
``loop``            the loop, top to bottom: batches, lr, step, events, validation, stop
``step``            the sync-free step's machinery: non-finite guard, fused skip, fallbacks
``feed``            where batches come from: the decoded cache or streaming loaders
``budget``          learning-rate schedules and the time budget
``task``            what a kind of model brings (loss, loaders, scores): :class:`Task`
``trainer``         :class:`Trainer`, the state of one run, as callbacks see it
``background``      :class:`TrainingHandle`, a run in a background thread
``api``             :func:`fit` and :func:`lr_find`
==================  ============================================================

Devices come from ``accelerate``: one CPU, one GPU, or several GPUs and nodes
under ``accelerate launch`` / ``torchrun`` / ``accelerate.notebook_launcher``,
with the same code. Running a model to look at it (``predict``, ``evaluate``,
validation) goes through :class:`segnb.infer.Inference`.
"""

import importlib

_HOMES = {
    "resolve_device": "segnb.device", "resolve_precision": "segnb.device",
    "EvalReport": "segnb.evaluation", "check_classes": "segnb.evaluation", "evaluate": "segnb.evaluation",
    "Prediction": "segnb.prediction", "predict": "segnb.prediction",
    "fit": "segnb.train.api", "lr_find": "segnb.train.api", "TrainingHandle": "segnb.train.background",
    "SCHEDULES": "segnb.train.budget", "cosine_lr": "segnb.train.budget", "wsd_lr": "segnb.train.budget", "TrainConfig": "segnb.train.config",
    "auto_workers": "segnb.train.feed", "History": "segnb.train.history", "SYNC_EVERY": "segnb.train.step",
    "SemanticTask": "segnb.train.task", "Task": "segnb.train.task", "Trainer": "segnb.train.trainer",
}

__all__ = [
    "History", "Trainer", "TrainConfig", "TrainingHandle", "Task", "SemanticTask", "fit", "evaluate",
    "predict", "lr_find", "resolve_device", "resolve_precision", "EvalReport", "Prediction", "check_classes",
    "wsd_lr", "cosine_lr", "SCHEDULES", "SYNC_EVERY", "auto_workers",
]


def __getattr__(name: str):
    """Each name is imported from its module when first used: ``from segnb.train import TrainConfig``
    costs no torch import (the command line reads its defaults there)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'segnb.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
