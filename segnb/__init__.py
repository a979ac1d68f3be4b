"""segnb: semantic segmentation for research and teaching, in JupyterLab and in scripts.

The core (this package, minus ``segnb.ui``) never imports ipywidgets or IPython.

The names below are imported when first used (PEP 562), not by ``import segnb``: a Studio page
shows its first tab without PyTorch, so a class of students opening it at once on one machine
does not wait for ten kernels to import it (docs/CLASSROOM.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it
_LAZY = {
    "SegmentationDataset": "segnb.data",
    "load_dataset": "segnb.data",
    "SegModel": "segnb.models",
    "build_model": "segnb.models",
    "describe_model": "segnb.models",
    "list_architectures": "segnb.models",
    "list_encoders": "segnb.models",
    "load_model": "segnb.models",
    "save_model": "segnb.models",
    "fit": "segnb.train",
    "lr_find": "segnb.train",
    "evaluate": "segnb.evaluation",
    "predict": "segnb.prediction",
    "export": "segnb.exporting",  # the module is not segnb.export: that name is the function
    "compare": "segnb.runs",
}

__all__ = [
    "SegModel",
    "SegmentationDataset",
    "__version__",
    "build_model",
    "compare",
    "describe_model",
    "evaluate",
    "export",
    "fit",
    "list_architectures",
    "list_encoders",
    "load_dataset",
    "load_model",
    "lr_find",
    "predict",
    "runs",
    "save_model",
    "sweep",
]

# Every fit() records a run (segnb.runs registers its recorder with the training code here; numpy
# and the standard library only). segnb.runs(folder) lists the runs: the module is callable.
from segnb import runs  # noqa: E402

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from segnb.data import SegmentationDataset, load_dataset
    from segnb.evaluation import evaluate
    from segnb.exporting import export
    from segnb.models import (
        SegModel,
        build_model,
        describe_model,
        list_architectures,
        list_encoders,
        load_model,
        save_model,
    )
    from segnb.prediction import predict
    from segnb.train import fit, lr_find


# The subpackages and modules a user may reach as attributes after ``import segnb`` (segnb.data, ...).
_MODULES = (
    "arithmetic", "callbacks", "checkpoint", "classical", "cli", "data", "device", "errors", "evaluation",
    "exercises", "exporting", "infer", "inspect", "instances", "interactive", "lessons", "losses", "metrics",
    "models", "network_check", "prediction", "progress", "runs", "sweep", "tiling", "train", "trackers", "ui",
    "viz", "widgets",
)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, *_MODULES})
