"""segnb's widgets: thin compositions over the core (``segnb``), for JupyterLab and Voila.

``Studio()`` is the whole experience in one cell; each panel also works alone.
"""

from segnb.ui.attention_viewer import AttentionViewer
from segnb.ui.common import ResultStamp, SharedState
from segnb.ui.labs import ClassicalLab, IoUReport, UpsamplingLab
from segnb.ui.panels import DatasetPicker, ModelBuilder, TrainPanel
from segnb.ui.progress import NotebookProgress, NotebookRenderer
from segnb.ui.softmask_viewer import SoftMaskViewer
from segnb.ui.studio import InspectPanel, Studio

__all__ = [
    "AttentionViewer", "ClassicalLab", "DatasetPicker", "InspectPanel", "IoUReport", "ModelBuilder",
    "NotebookProgress", "NotebookRenderer", "ResultStamp", "SharedState", "SoftMaskViewer", "Studio", "TrainPanel",
    "UpsamplingLab",
]
