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
}

__all__ = [
    "SegModel",
    "SegmentationDataset",
    "__version__",
    "build_model",
    "describe_model",
    "evaluate",
    "fit",
    "list_architectures",
    "list_encoders",
    "load_dataset",
    "load_model",
    "lr_find",
    "predict",
    "save_model",
]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from segnb.data import SegmentationDataset, load_dataset
    from segnb.evaluation import evaluate
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
    "infer", "inspect", "instances", "interactive", "losses", "metrics", "models", "network_check",
    "prediction", "progress", "train", "ui", "viz",
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
