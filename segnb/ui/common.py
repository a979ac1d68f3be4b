"""Shared pieces of the widgets: picture encoding, error boxes, and the Studio's shared state."""

from __future__ import annotations

import functools
import html
import io
import json
import logging
import traceback

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import traitlets
from PIL import Image

__all__ = ["png", "jpeg", "ErrorBox", "guarded", "SharedState", "ResultStamp", "image_widget", "legend_html",
           "PlotView", "row_of", "note", "strip_labels", "show_strip"]

log = logging.getLogger("segnb.ui")


def png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 (H, W) or (H, W, 3/4) -> PNG bytes (fast compression: masks are flat)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def jpeg(array: np.ndarray, quality: int = 85) -> bytes:
    """uint8 RGB -> JPEG bytes: photos travel 20x smaller than as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array[..., :3])).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def image_widget(array: np.ndarray | None = None, width: int | None = None, css_class: str | None = None) -> W.Image:
    """A PNG picture at its own size (at most the output's width), not stretched across a panel."""
    widget = W.Image(format="png", value=png(array) if array is not None else b"")
    widget.layout.align_self = "flex-start"  # in a VBox, ipywidgets would stretch it to the full width

    def hide_when_empty(change=None):  # an empty Image is a broken-image icon in the browser
        widget.layout.display = "" if widget.value else "none"

    widget.observe(hide_when_empty, names=["value"])
    hide_when_empty()
    if width:
        widget.layout.width = f"{width}px"
    if css_class:
        widget.add_class(css_class)
    return widget


def legend_html(class_names, palette) -> str:
    from segnb.viz import legend

    items = "".join(
        f'<span style="margin-right:10px;white-space:nowrap"><span style="display:inline-block;width:12px;'
        f'height:12px;background:{colour};border:1px solid #888;margin-right:4px;vertical-align:middle"></span>'
        f"{html.escape(name)}</span>"
        for name, colour in legend(class_names, palette)
    )
    return f'<div class="segnb-legend">{items}</div>'


PLOTLY_MIME = "application/vnd.plotly.v1+json"


class PlotView(W.Output):
    """A plotly chart that is redrawn whole: ``draw(figure)`` shows a new ``go.Figure``.

    The figure travels as plotly's own MIME bundle in an Output widget, so each draw is one
    small message that the front-end renders from scratch. Measured in Chromium (tests/e2e),
    plotly's FigureWidget was not reliable here: edits to traces that existed at first render,
    and charts first rendered in a hidden Studio tab, stayed empty in the page while Python held
    the data; and every FigureWidget ships plotly's 4.7 MiB front-end bundle as its own state and,
    through anywidget's file watcher, is never freed. The size is fixed in pixels, since
    a chart rendered in a hidden tab cannot measure its box; paired charts go in ``row_of``,
    which wraps them on narrow screens.
    """

    def __init__(self, title: str = "", height: int = 280, width: int = 460, css_class: str | None = None,
                 empty: str = ""):
        super().__init__(layout=W.Layout(width=f"{width}px", min_width=f"{width}px"))
        self.title, self.height, self.width = title, height, width
        self.presenting = False
        self.empty = empty or f"The {title} chart appears here."
        if css_class:
            self.add_class(css_class)
        self.clear()

    def clear(self, text: str | None = None) -> None:
        """No chart, and a line of text saying what will appear (no empty axes that mean nothing)."""
        self.figure = None
        message = html.escape(text or self.empty)
        bundle = {"text/html": f'<div class="segnb-placeholder">{message}</div>', "text/plain": message}
        self.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    def present(self, on: bool) -> None:
        """Presentation mode: 22-px text, and a chart 30 % larger (two still fit side by side in 1280 px)."""
        self.presenting = on
        scale = 1.3 if on else 1.0
        self.layout.width = self.layout.min_width = f"{round(self.width * scale)}px"
        if self.figure is not None:
            self.draw(self.figure)

    def draw(self, figure: go.Figure) -> None:
        """Show ``figure`` in place of the current one (safe from any thread)."""
        scale = 1.3 if self.presenting else 1.0
        if not hasattr(figure, "_segnb_height"):
            figure._segnb_height = figure.layout.height or self.height
        figure.update_layout(width=round(self.width * scale), height=min(560, round(figure._segnb_height * scale)),
                             font={"size": 22 if self.presenting else None})
        self.figure = figure
        bundle = {PLOTLY_MIME: json.loads(figure.to_json()), "text/plain": f"<plotly figure: {self.title}>"}
        self.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    @property
    def data(self):
        """The traces on show (``figure.data``; empty before the first chart)."""
        return () if self.figure is None else self.figure.data


def show_strip(widget: W.Image, labels_widget: W.HTML, tiles, labels, gap: int = 4) -> None:
    """A row of equal tiles in ``widget`` with a caption over each in ``labels_widget``; small tiles
    are shown twice their size (pixelated), so that a caption fits over each."""
    from segnb.viz import grid

    width = tiles[0].shape[1]
    scale = 2 if width < 200 else 1
    widget.value = png(grid(tiles, columns=len(tiles), gap=gap))
    widget.layout.width = f"{(width + gap) * len(tiles) * scale - gap * scale}px"
    widget.add_class("segnb-pixelated")
    labels_widget.value = strip_labels(labels, width * scale, gap * scale)


def strip_labels(labels, tile_width: int, gap: int = 4) -> str:
    """Captions above a row of equal tiles (a ``viz.grid`` of one row), one centred over each."""
    cells = "".join(f'<span class="segnb-strip-label" style="width:{tile_width}px;margin-right:{gap}px">'
                    f"{html.escape(str(text))}</span>" for text in labels)
    return f'<div class="segnb-strip-labels" style="display:flex;align-items:flex-end">{cells}</div>'


def note(text: str, css_class: str = "segnb-note") -> str:
    """A line of explanatory HTML (escaped)."""
    return f'<div class="{css_class}">{html.escape(text)}</div>'


def row_of(*widgets) -> W.HBox:
    """Widgets side by side that wrap onto the next line when the output area is narrow."""
    return W.HBox(list(widgets), layout=W.Layout(flex_flow="row wrap"))


# Arguments as the core's messages spell them -> the controls' own wording.
CONTROL_WORDING = [
    (r"pretrained\s*=\s*'?auto'?", "Pretrained: auto"),
    (r"pretrained\s*=\s*False", "Pretrained: no"),
    (r"pretrained\s*=\s*True", "Pretrained: yes"),
    (r"pretrained\s*=\s*'([^']*)'", r"Pretrained: \1"),
    (r"\bimage_size\s*=?", "image size"),
    (r"\bbatch_size\s*=?", "batch size"),
    (r"\bnum_classes\b", "number of classes"),
    (r"class_names\s*=\s*data\.class_names", "the dataset loaded in the Dataset tab"),
    (r"\bupsample\s*=\s*'?([\w-]+)'?", r"Upsample: \1"),
    (r"\blr\b", "learning rate"),
]


def user_message(error: BaseException) -> str:
    """An error as a person reads it: its message in the controls' words, never a Python type name."""
    import re

    text = str(error).strip()
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    if not text:
        return ("Something went wrong that segnb did not expect; the details are in the log "
                "(logging.getLogger('segnb.ui')).")
    if isinstance(error, MemoryError):
        return "Out of memory: choose a smaller image size, batch size or model."
    for pattern, words in CONTROL_WORDING:
        text = re.sub(pattern, words, text)
    return text


def user_error(error: BaseException) -> ValueError:
    """``raise user_error(e) from None``: the same message in the controls' words, logged in full."""
    log.debug("%s", "".join(traceback.format_exception(error)))
    return ValueError(user_message(error))


class ErrorBox(W.HTML):
    """Shows an error inside the widget that raised it (observers' errors vanish otherwise)."""

    def __init__(self, **kwargs):
        super().__init__(value="", **kwargs)
        self.add_class("segnb-error")
        self.last_error: BaseException | None = None

    def show(self, error: BaseException) -> None:
        self.last_error = error
        message = html.escape(user_message(error))
        self.value = f'<div style="color:var(--jp-error-color1,#d32f2f);white-space:pre-wrap">{message}</div>'

    def clear(self) -> None:
        self.last_error = None
        self.value = ""


def guarded(method):
    """Run a widget handler; any exception goes to ``self.errors`` (an ErrorBox) and the log."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            self.errors.clear()
            return method(self, *args, **kwargs)
        except Exception as error:  # shown to the user, in the widget
            log.debug("%s", traceback.format_exc())
            self.errors.show(error)
            return None

    return wrapper


class SharedState(traitlets.HasTraits):
    """What the Studio's tabs share, in one place: the dataset, the model, the training run.

    Every result a panel shows belongs to one ``key`` = (dataset, model, run). ``key``
    changes whenever a new dataset is loaded, a model is built (even with the same spec: its
    weights are new) or a training run starts; a panel observes it (``names=["key"]``) and
    clears or marks its results, most simply with a :class:`ResultStamp`. A new panel joins by
    observing ``key`` too.
    """

    data = traitlets.Any(allow_none=True)
    data_spec = traitlets.Dict()
    model = traitlets.Any(allow_none=True)
    model_spec = traitlets.Dict()
    history = traitlets.Any(allow_none=True)
    seed = traitlets.Int(0)
    image_index = traitlets.Int(0)
    run = traitlets.Int(0)  # training runs started on the current model (0: untrained)
    key = traitlets.Dict()  # {"dataset": ..., "model": ..., "run": ...}: what results belong to
    overlay_palette = traitlets.Any(allow_none=True)  # (C, 3) uint8, contrasting colours for overlays
    palette_source = traitlets.Enum(("contrast", "dataset"), "contrast")
    class_names = traitlets.List([])  # the dataset's classes, as the user renamed them

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._models = self._datasets = 0
        self._update_key()

    @traitlets.observe("data")
    def _on_data(self, change) -> None:
        data = change["new"]
        self._datasets += 1
        if data is not None:
            from segnb.viz import class_mean_colours, contrast_palette

            split = data[data.train_split]
            pairs = [split[i] for i in range(min(8, len(split)))]
            means = class_mean_colours(pairs, data.num_classes, data.ignore_index)
            self.overlay_palette = contrast_palette(data.num_classes, means)
            self.class_names = list(data.class_names)
        else:
            self.overlay_palette = None
            self.class_names = []
        self._update_key()

    @traitlets.observe("model")
    def _on_model(self, change) -> None:
        self._models += 1
        self.run = 0
        self.history = None
        self._update_key()

    @traitlets.observe("run")
    def _on_run(self, change) -> None:
        self._update_key()

    def _update_key(self) -> None:
        self.key = {"dataset": self.dataset_name(), "model": self.model_name(), "run": self.run_name()}

    def dataset_name(self) -> str:
        data = self.data
        if data is None:
            return "no dataset"
        source = self.data_spec.get("source") or data.source or "dataset"
        n = sum(len(v) for v in data.splits.values())
        return f"{source} ({n} images) #{self._datasets}"

    def model_name(self) -> str:
        model = self.model
        if model is None:
            return "no model"
        spec = getattr(model, "spec", {}) or self.model_spec
        return f"{spec.get('arch', '?')} on {spec.get('encoder', '?')} #{self._models}"

    def run_name(self) -> str:
        return "untrained" if self.run == 0 else f"run {self.run}"

    def palette(self) -> np.ndarray | None:
        """The colours overlays use now: the contrasting ones, or the dataset's own."""
        if self.data is None:
            return None
        if self.palette_source == "dataset" or self.overlay_palette is None:
            return self.data.palette
        return self.overlay_palette

    def names(self) -> list[str]:
        """The class names to show (as renamed in the DatasetPicker)."""
        if self.data is None:
            return []
        return list(self.class_names) if len(self.class_names) == self.data.num_classes else list(self.data.class_names)


def describe_key(key: dict) -> str:
    return " · ".join(html.escape(str(key.get(k, ""))) for k in ("dataset", "model", "run"))


class ResultStamp(W.HTML):
    """A line above a panel's results naming what they belong to; marks them when that changes.

    ``stamp()`` when new results are drawn (they belong to ``state.key`` now); ``clear()``
    when they are removed. When ``state.key`` moves on, the line turns into a warning and the
    results box given as ``box`` gets the CSS class ``segnb-stale`` (dimmed, struck through),
    so that no old number stays on screen unmarked.
    """

    def __init__(self, state: SharedState, box: W.Widget | None = None, again: str = "run it again"):
        super().__init__(value="")
        self.state, self.box, self.again = state, box, again
        self.key: dict | None = None
        self.add_class("segnb-stamp")
        state.observe(lambda _: self._draw(), names=["key"])

    @property
    def stale(self) -> bool:
        return self.key is not None and self.key != self.state.key

    def stamp(self) -> None:
        self.key = dict(self.state.key)
        self._draw()

    def clear(self) -> None:
        self.key = None
        self._draw()

    def _draw(self) -> None:
        if self.key is None:
            self.value = ""
        elif self.stale:
            changed = [k for k in ("dataset", "model", "run") if self.key.get(k) != self.state.key.get(k)]
            what = {"dataset": "dataset", "model": "model", "run": "training run"}[changed[0]]
            self.value = (f'<div class="segnb-stale-note">&#9888; These results belong to the previous {what} '
                          f"({describe_key(self.key)}). {html.escape(self.again)} for the current one.</div>")
        else:
            self.value = f'<div class="segnb-current-note">results for: {describe_key(self.key)}</div>'
        if self.box is not None:
            if self.stale:
                self.box.add_class("segnb-stale")
            else:
                self.box.remove_class("segnb-stale")
