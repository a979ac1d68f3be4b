"""segnb: semantic segmentation for research and teaching, in JupyterLab and in scripts.

The core (this package, minus ``segnb.ui``) never imports ipywidgets or IPython.
"""

from segnb.data import SegmentationDataset, load_dataset
from segnb.models import (
    SegModel,
    build_model,
    describe_model,
    list_architectures,
    list_encoders,
    load_model,
    save_model,
)

__version__ = "0.1.0"
__all__ = [
    "SegModel",
    "SegmentationDataset",
    "__version__",
    "build_model",
    "describe_model",
    "list_architectures",
    "list_encoders",
    "load_dataset",
    "load_model",
    "save_model",
]
