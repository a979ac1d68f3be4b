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

__all__ = ["png", "jpeg", "ErrorBox", "guarded", "SharedState", "image_widget", "legend_html", "PlotView", "row_of"]

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

    def __init__(self, title: str = "", height: int = 280, width: int = 460, css_class: str | None = None):
        super().__init__(layout=W.Layout(width=f"{width}px", min_width=f"{width}px", min_height=f"{height}px"))
        self.title, self.height, self.width = title, height, width
        if css_class:
            self.add_class(css_class)
        self.draw(go.Figure(layout={"title": title}))

    def draw(self, figure: go.Figure) -> None:
        """Show ``figure`` in place of the current one (safe from any thread)."""
        figure.update_layout(width=self.width, height=figure.layout.height or self.height)
        self.figure = figure
        bundle = {PLOTLY_MIME: json.loads(figure.to_json()), "text/plain": f"<plotly figure: {self.title}>"}
        self.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)

    @property
    def data(self):
        """The traces on show (``figure.data``)."""
        return self.figure.data


def row_of(*widgets) -> W.HBox:
    """Widgets side by side that wrap onto the next line when the output area is narrow."""
    return W.HBox(list(widgets), layout=W.Layout(flex_flow="row wrap"))


class ErrorBox(W.HTML):
    """Shows an error inside the widget that raised it (observers' errors vanish otherwise)."""

    def __init__(self, **kwargs):
        super().__init__(value="", **kwargs)
        self.add_class("segnb-error")
        self.last_error: BaseException | None = None

    def show(self, error: BaseException) -> None:
        self.last_error = error
        message = html.escape(f"{type(error).__name__}: {error}")
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
    """What the Studio's tabs share: the dataset, the model, the last training history."""

    data = traitlets.Any(allow_none=True)
    data_spec = traitlets.Dict()
    model = traitlets.Any(allow_none=True)
    model_spec = traitlets.Dict()
    history = traitlets.Any(allow_none=True)
    seed = traitlets.Int(0)
    image_index = traitlets.Int(0)
