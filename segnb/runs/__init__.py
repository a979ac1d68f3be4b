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

import sys
import types

from segnb.runs.comparison import Comparison, compare, load_run_set, save_run_set
from segnb.runs.listing import Run, flatten_config, list_runs, load_run
from segnb.runs.record import (
    ENV,
    RUN_FORMAT,
    RunError,
    RunRecorder,
    code_version,
    default_folder,
    preview_indices,
    readable_name,
    run_recorder,
    status_of,
)
from segnb.runs.record import _config_from_trainer as _config_from_trainer  # for segnb.trackers
from segnb.runs.record import _plain as _plain  # for segnb.trackers

__all__ = [
    "RUN_FORMAT", "ENV", "RunRecorder", "Run", "Comparison", "default_folder", "run_recorder", "load_run",
    "list_runs", "compare", "code_version", "save_run_set", "load_run_set",
    "RunError", "flatten_config", "preview_indices", "readable_name", "status_of",
]


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
