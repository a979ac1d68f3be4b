"""Interactive segmentation: the user's scribbles or clicks steer the mask.

Three ways, from no learning to a large pretrained model:

- **Scribbles -> random walker** (:func:`random_walker_segment`): foreground and background
  strokes are seeds; every other pixel takes the label of the seed a random walker starting
  there most probably reaches first, walking more easily between similar pixels
  (``skimage.segmentation.random_walker``; no weights).
- **Clicks -> a click-conditioned network** (:class:`ClickModel`): an smp U-Net whose input is
  the image plus two click maps (positive, negative), 5 channels, trained in about a minute on
  the built-in dataset with simulated clicks (:func:`train_click_model`: ``segnb.fit`` with the
  model's own task, :class:`ClickTask`).
- **Clicks -> SAM** (:class:`SamSegmenter`), through transformers' ``SamModel`` and a local
  checkpoint folder; offline without one it says which files to give.

Strokes travel as a compact list, not as pictures::

    {"label": 1, "size": 4, "points": [x0, y0, x1, y1, ...]}   # label 1 = foreground, 2 = background

``size`` is the brush radius in image pixels; ``points`` are image coordinates (x = column,
y = row) of one polyline. Clicks are ``(x, y, positive)`` triples.

Evaluation follows the interactive-segmentation papers (Xu et al. 2016, "Deep interactive object
selection"; RITM, Sofiiuk et al. 2022): the first click is at the object's most interior pixel
(farthest from its boundary); each next click is at the most interior pixel of the larger error
region (missed object pixels give a positive click, wrongly taken pixels a negative one). NoC@85
is the number of clicks needed to reach IoU 0.85, counted as ``max_clicks`` when never reached.
"""

from __future__ import annotations

from segnb.interactive.click_model import ClickModel, ClickSampling, ClickTask, train_click_model
from segnb.interactive.clicks import (
    ClickReport,
    RandomWalkerClicks,
    click_maps,
    evaluate_clicks,
    first_click,
    iou,
    next_click,
    object_masks,
)
from segnb.interactive.sam import SAM_FILES, SamSegmenter
from segnb.interactive.scribbles import (
    BACKGROUND,
    FOREGROUND,
    check_strokes,
    graph_cut_segment,
    random_walker_segment,
    rasterize_strokes,
    scribbles_from_mask,
)

__all__ = [
    "FOREGROUND", "BACKGROUND", "check_strokes", "rasterize_strokes", "random_walker_segment", "graph_cut_segment",
    "scribbles_from_mask", "click_maps", "first_click", "next_click", "object_masks", "iou",
    "ClickModel", "ClickSampling", "ClickTask", "train_click_model", "RandomWalkerClicks", "ClickReport", "evaluate_clicks",
    "SamSegmenter", "SAM_FILES",
]
