"""Interactive segmentation in the browser: scribbles and clicks on the Studio's current image.

``ScribbleCanvas`` (``widgets/scribble.js``) draws in the browser and sends strokes and clicks as
compact lists; ``InteractivePanel`` turns them into a mask with one core function of
``segnb.interactive`` (random walker, click model or SAM) and shows the IoU against the ground
truth after each update.
"""

from __future__ import annotations

import html
import threading
import time

import anywidget
import ipywidgets as W
import numpy as np
import traitlets
from scipy import ndimage

from segnb import interactive as core
from segnb.ui.common import ErrorBox, SharedState, guarded, jpeg
from segnb.widgets import asset

__all__ = ["ScribbleCanvas", "InteractivePanel", "METHODS"]

METHODS = {
    "random walker": "scribbles and clicks are seeds of skimage's random walker (no weights)",
    "graph cut": "scribbles and clicks are seeds of a minimum cut (Boykov-Jolly, scipy's max-flow; no weights)",
    "click model": "a U-Net on the image + click maps, trained here on the built-in dataset",
    "SAM": "Segment Anything from a local checkpoint folder (transformers)",
}


class ScribbleCanvas(anywidget.AnyWidget):
    """A canvas over an image: foreground/background strokes, positive/negative clicks, undo, clear.

    ``strokes`` and ``clicks`` are what the user drew (see :mod:`segnb.interactive` for the
    format); set ``mask`` with :meth:`show_mask` to draw the answer.
    """

    _esm = asset("scribble.js")
    _css = asset("segnb.css")

    image = traitlets.Bytes(b"").tag(sync=True)
    image_format = traitlets.Unicode("image/jpeg").tag(sync=True)
    shape = traitlets.List([0, 0]).tag(sync=True)  # (H, W)
    strokes = traitlets.List([]).tag(sync=True)
    clicks = traitlets.List([]).tag(sync=True)
    tool = traitlets.Enum(["foreground", "background", "positive", "negative"], "foreground").tag(sync=True)
    brush = traitlets.Int(3).tag(sync=True)
    mask = traitlets.Bytes(b"").tag(sync=True)  # uint8 (H, W), 1 = object
    opacity = traitlets.Float(0.45).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    answered = traitlets.Int(0).tag(sync=True)  # counts Python's answers: the view stops saying "updating"
    display_scale = traitlets.Float(1.0).tag(sync=True)

    def __init__(self, image: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        self.add_class("segnb-scribble-canvas-widget")
        if image is not None:
            self.set_image(image)

    def set_image(self, image: np.ndarray) -> None:
        """Show a new uint8 RGB image; strokes, clicks and mask are cleared."""
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        with self.hold_sync():
            self.strokes, self.clicks, self.mask = [], [], b""
            self.shape = [int(image.shape[0]), int(image.shape[1])]
            self.image = jpeg(image, quality=92)

    def show_mask(self, mask: np.ndarray | None, status: str | None = None) -> None:
        with self.hold_sync():
            self.mask = b"" if mask is None else np.asarray(mask, np.uint8).tobytes()
            if status is not None:
                self.status = status
            self.answered += 1

    @property
    def click_list(self) -> list[tuple[int, int, bool]]:
        """The clicks as ``(x, y, positive)`` triples, in the order they were placed."""
        return [(int(c[0]), int(c[1]), bool(c[2])) for c in self.clicks]


class InteractivePanel(W.VBox):
    """Scribbles and clicks on the dataset and image chosen in the Studio, scored against the ground truth.

    The ground-truth object is the connected region of the class under the first foreground
    stroke or positive click ("object"), or that whole class ("whole class").
    """

    def __init__(self, state: SharedState | None = None, click_model: core.ClickModel | None = None):
        self.state = state or SharedState()
        self.errors = ErrorBox()
        self.click_model = click_model
        self.sam = None
        self.method = W.Dropdown(options=list(METHODS), value="random walker", description="method")
        self.method.add_class("segnb-interactive-method")
        self.target = W.Dropdown(options=["object", "whole class"], value="object", description="score on")
        self.index = W.BoundedIntText(0, min=0, max=100_000, description="image #")
        self.load_button = W.Button(description="Load image", icon="image")
        self.load_button.add_class("segnb-interactive-load")
        self.beta = W.FloatLogSlider(130, base=10, min=1, max=4, step=0.001, description="beta",
                                     readout_format=".0f")
        self.train_seconds = W.IntSlider(60, min=10, max=180, step=10, description="train (s)")
        self.train_button = W.Button(description="Train click model", icon="graduation-cap")
        self.train_button.add_class("segnb-interactive-train")
        self.train_button.layout.width = "auto"
        self.sam_path = W.Text("", placeholder="SAM checkpoint folder, or a cached hub id (facebook/sam-vit-base)",
                               description="SAM", layout=W.Layout(width="420px"))
        self.note = W.HTML(f"<i>{html.escape(METHODS['random walker'])}</i>")
        self.score = W.HTML("")
        self.score.add_class("segnb-interactive-score")
        self.canvas = ScribbleCanvas()
        self.image = self.target_mask = None
        self.valid = None
        self.last_iou: float | None = None
        self._thread: threading.Thread | None = None
        self.canvas.observe(self._on_edit, names=["strokes", "clicks"])
        self.method.observe(self._on_method, names=["value"])
        self.target.observe(lambda _: self.update(), names=["value"])
        self.beta.observe(lambda _: self.update(), names=["value"])
        self.load_button.on_click(lambda _: self.load(self.index.value))
        self.train_button.on_click(lambda _: self.train_in_background(self.train_seconds.value))
        self.state.observe(lambda _: self.load(self.state.image_index), names=["data", "image_index"])
        super().__init__([
            W.HBox([self.method, self.target, self.index, self.load_button], layout=W.Layout(flex_flow="row wrap")),
            self.note,
            W.HBox([self.beta, self.train_seconds, self.train_button, self.sam_path],
                   layout=W.Layout(flex_flow="row wrap")),
            self.errors, self.score, self.canvas,
        ])
        self.add_class("segnb-interactive-panel")
        if self.state.data is not None:
            self.load(self.state.image_index)

    # ------------------------------------------------------------------ data

    @guarded
    def load(self, index: int = 0) -> int:
        """Show image ``index`` of the evaluation split (the Studio's current image follows ``state.image_index``)."""
        data = self.state.data
        if data is None:
            raise ValueError("Load a dataset first (Dataset tab, or state.data = segnb.load_dataset('shapes')).")
        split = data[data.eval_split]
        index = min(int(index), len(split) - 1)
        self.index.value = index
        self.image, self.gt = split[index]
        self.valid = self.gt != data.ignore_index
        self.canvas.set_image(self.image)
        self.canvas.show_mask(None, f"{split.label(index)}: paint foreground and background strokes, or click.")
        self.score.value = ""
        self.last_iou = None
        return index

    def _on_method(self, change) -> None:
        self.note.value = f"<i>{html.escape(METHODS[change['new']])}</i>"
        self.canvas.tool = "foreground" if change["new"] in ("random walker", "graph cut") else "positive"
        self.update()

    def _on_edit(self, change) -> None:
        self.update()

    # --------------------------------------------------------------- answer

    def _first_seed(self) -> tuple[int, int] | None:
        """(x, y) of the earliest foreground stroke point or positive click."""
        seeds = [(s.get("t", 0), s["points"][0], s["points"][1]) for s in self.canvas.strokes
                 if s["label"] == core.FOREGROUND]
        seeds += [(c[3] if len(c) > 3 else 0, c[0], c[1]) for c in self.canvas.clicks if c[2]]
        if not seeds:
            return None
        _, x, y = min(seeds)
        return int(x), int(y)

    def target_for(self, x: int, y: int) -> np.ndarray:
        """The ground truth that the user is selecting: the object (or class) under pixel (x, y)."""
        cls = self.gt[y, x]
        region = self.gt == cls
        if self.target.value == "whole class":
            return region
        components, _ = ndimage.label(region, structure=np.ones((3, 3)))
        return components == components[y, x]

    def predict(self) -> np.ndarray | None:
        """The mask (bool H x W) from the current strokes and clicks with the chosen method, or None."""
        method = self.method.value
        clicks = self.canvas.click_list
        if method in ("random walker", "graph cut"):
            strokes = list(self.canvas.strokes) + [
                {"label": core.FOREGROUND if p else core.BACKGROUND, "size": 2, "points": [x, y]}
                for x, y, p in clicks]
            seeds = core.rasterize_strokes(strokes, self.image.shape[:2])
            labels = set(np.unique(seeds)) - {0}
            if labels == {core.FOREGROUND}:  # no background yet: the border is background, as for clicks
                border = np.zeros(seeds.shape, bool)
                border[[0, -1], :] = border[:, [0, -1]] = True
                seeds[border & (seeds == 0)] = core.BACKGROUND
            elif core.FOREGROUND not in labels:
                return None
            if method == "graph cut":
                return core.graph_cut_segment(self.image, seeds=seeds)
            return core.random_walker_segment(self.image, seeds=seeds, beta=self.beta.value) == core.FOREGROUND
        if not clicks:
            return None
        if method == "click model":
            if self.click_model is None:
                raise ValueError("No click model yet: press 'Train click model' (about a minute), "
                                 "or pass InteractivePanel(click_model=segnb.interactive.ClickModel.load(path)).")
            return self.click_model.predict(self.image, clicks) > 0.5
        if self.sam is None or self.sam.checkpoint != self.sam_path.value:
            self.sam = core.SamSegmenter(self.sam_path.value or None)
        return self.sam.predict(self.image, clicks) > 0.5

    @guarded
    def update(self) -> float | None:
        """Recompute the mask from the strokes and clicks; show it and its IoU. Returns the IoU."""
        if self.image is None:
            return None
        start = time.perf_counter()
        try:
            mask = self.predict()
        except Exception:
            self.canvas.show_mask(None, "no mask: see the message above")
            raise
        seconds = time.perf_counter() - start
        seed = self._first_seed()
        if mask is None or seed is None:
            self.last_iou = None
            self.canvas.show_mask(None, "add a foreground stroke or a positive click")
            self.score.value = ""
            return None
        target = self.target_for(*seed)
        self.last_iou = core.iou(mask, target, self.valid)
        names = self.state.data.class_names if self.state.data is not None else []
        cls = int(self.gt[seed[1], seed[0]])
        what = names[cls] if cls < len(names) else f"class {cls}"
        text = (f"IoU {self.last_iou:.3f} against the {what} {self.target.value} under your first foreground mark "
                f"· {len(self.canvas.strokes)} strokes, {len(self.canvas.clicks)} clicks · "
                f"{self.method.value} {seconds * 1000:.0f} ms")
        self.canvas.show_mask(mask, text)
        self.score.value = (f'<span class="segnb-interactive-iou" style="font-size:1.6em;font-weight:bold">'
                            f"IoU {self.last_iou:.3f}</span> <span>({html.escape(what)}, {self.target.value})</span>")
        return self.last_iou

    # ---------------------------------------------------------------- train

    def train_in_background(self, seconds: float = 60) -> threading.Thread:
        """Train the click model on the built-in dataset in a thread: the page keeps answering meanwhile."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("The click model is already training.")

        def run():
            try:
                from segnb.data import load_shapes

                data = self.state.data if self.state.data is not None and self.state.data.source == "shapes" \
                    else load_shapes(n=400)
                self.note.value = "<i>training the click model...</i>"
                model = core.train_click_model(
                    data, seconds=seconds,
                    progress=lambda step, loss: setattr(self.note, "value",
                                                        f"<i>training the click model: step {step}, loss {loss:.3f}</i>"))
                self.click_model = model
                history = model.history
                loss = history.last("train_loss")
                self.note.value = (f"<i>click model trained: {history.steps} steps in {seconds} s"
                                   f"{f' (last epoch loss {loss:.3f})' if loss is not None else ''}. "
                                   "Choose method 'click model'.</i>")
            except Exception as error:  # shown in the widget: a thread's errors vanish otherwise
                self.errors.show(error)

        self._thread = threading.Thread(target=run, name="segnb-click-train", daemon=True)
        self._thread.start()
        return self._thread
