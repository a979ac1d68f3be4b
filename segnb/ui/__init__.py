"""segnb's widgets: thin compositions over the core (``segnb``), for JupyterLab and Voila.

``Studio()`` is the whole experience in one cell; each panel also works alone.

Each name is imported when first used (PEP 562): ``from segnb.ui import Studio`` and the Studio's
first tab need no PyTorch, so a Voila page for a class opens sooner (docs/CLASSROOM.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# name -> the module that defines it
_LAZY = {
    "AttentionViewer": "segnb.ui.attention_viewer",
    "ClassicalLab": "segnb.ui.labs",
    "DatasetPicker": "segnb.ui.dataset_panel",
    "InspectPanel": "segnb.ui.inspect_panel",
    "IoUReport": "segnb.ui.labs",
    "ModelBuilder": "segnb.ui.model_panel",
    "NotebookProgress": "segnb.ui.progress",
    "NotebookRenderer": "segnb.ui.progress",
    "ResultStamp": "segnb.ui.common",
    "SharedState": "segnb.ui.common",
    "SoftMaskViewer": "segnb.ui.softmask_viewer",
    "Studio": "segnb.ui.studio",
    "TrainPanel": "segnb.ui.train_panel",
    "UpsamplingLab": "segnb.ui.labs",
}

__all__ = [
    "AttentionViewer", "ClassicalLab", "DatasetPicker", "InspectPanel", "IoUReport", "ModelBuilder",
    "NotebookProgress", "NotebookRenderer", "ResultStamp", "SharedState", "SoftMaskViewer", "Studio", "TrainPanel",
    "UpsamplingLab",
]

if TYPE_CHECKING:
    from segnb.ui.attention_viewer import AttentionViewer
    from segnb.ui.common import ResultStamp, SharedState
    from segnb.ui.dataset_panel import DatasetPicker
    from segnb.ui.inspect_panel import InspectPanel
    from segnb.ui.labs import ClassicalLab, IoUReport, UpsamplingLab
    from segnb.ui.model_panel import ModelBuilder
    from segnb.ui.progress import NotebookProgress, NotebookRenderer
    from segnb.ui.softmask_viewer import SoftMaskViewer
    from segnb.ui.studio import Studio
    from segnb.ui.train_panel import TrainPanel


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
