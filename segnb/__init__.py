"""segnb: semantic segmentation for research and teaching, in JupyterLab and in scripts.

The core (this package, minus ``segnb.ui``) never imports ipywidgets or IPython.
"""

from segnb.data import SegmentationDataset, load_dataset

__version__ = "0.1.0"
__all__ = ["SegmentationDataset", "load_dataset", "__version__"]
