"""SoftMaskViewer: an image with its predicted classes, and each pixel's class probabilities.

The view (a soft probability-weighted mix of class colours, the most likely class, outlines,
or a confidence, entropy or one-class heatmap with a colour bar), opacity, class toggles,
temperature and the hover read-out run in the browser (``widgets/softmask.js``) from
probabilities sent once as 8-bit planes, so they answer without a kernel round trip and keep
working while the kernel trains. :meth:`SoftMaskViewer.render_array` computes the same picture
in Python.
"""

from __future__ import annotations

import anywidget
import numpy as np
import traitlets

from segnb.ui.common import jpeg
from segnb.viz import (
    class_mean_colours,
    colorize,
    contrast_palette,
    heatmap_rgb,
    legend,
    outline,
    soft_view,
)
from segnb.widgets import asset

__all__ = ["SoftMaskViewer", "quantize_probs", "VIEWS"]

VIEWS = ("soft", "classes", "outline", "confidence", "entropy", "class")


def quantize_probs(probs: np.ndarray) -> bytes:
    """(C, H, W) probabilities -> uint8 bytes, probability x 255, class-major."""
    p = np.asarray(probs, dtype=np.float32)
    return np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8).tobytes()


class SoftMaskViewer(anywidget.AnyWidget):
    """``SoftMaskViewer(image, probs, class_names, palette)``; then ``set_prediction(image, probs)``."""

    _esm = asset("softmask.js")
    _css = asset("segnb.css")

    image = traitlets.Bytes(b"").tag(sync=True)
    image_format = traitlets.Unicode("image/jpeg").tag(sync=True)
    probs = traitlets.Bytes(b"").tag(sync=True)
    shape = traitlets.List([0, 0, 0]).tag(sync=True)  # (H, W, C)
    class_names = traitlets.List([]).tag(sync=True)
    palette = traitlets.List([]).tag(sync=True)  # '#rrggbb' per class: the overlay colours
    dataset_palette = traitlets.List([]).tag(sync=True)  # the dataset's own colours
    palette_source = traitlets.Enum(("contrast", "dataset"), "contrast").tag(sync=True)
    visible = traitlets.List([]).tag(sync=True)
    view = traitlets.Enum(VIEWS, "soft").tag(sync=True)
    view_class = traitlets.Int(0).tag(sync=True)
    opacity = traitlets.Float(0.65).tag(sync=True)
    temperature = traitlets.Float(1.0).tag(sync=True)
    display_scale = traitlets.Float(1.0).tag(sync=True)
    max_height = traitlets.Int(0).tag(sync=True)  # CSS pixels the picture may take (0: no limit)

    def __init__(self, image=None, probs=None, class_names=(), palette=None, overlay_palette=None, **kwargs):
        super().__init__(**kwargs)
        self.add_class("segnb-softmask-viewer")
        if image is not None and probs is not None:
            self.set_prediction(image, probs, class_names, palette, overlay_palette)

    @traitlets.validate("opacity")
    def _valid_opacity(self, proposal):
        return float(min(1.0, max(0.0, proposal["value"])))

    @traitlets.validate("temperature")
    def _valid_temperature(self, proposal):
        if proposal["value"] <= 0:
            raise traitlets.TraitError("temperature must be positive")
        return float(proposal["value"])

    def set_prediction(self, image: np.ndarray, probs: np.ndarray, class_names=None, palette=None,
                       overlay_palette=None) -> None:
        """Show one image (uint8 H x W x 3) and its probabilities (C x H x W).

        ``palette`` is the dataset's own colours; ``overlay_palette`` the colours drawn by default
        (without one, colour-blind-safe colours chosen to stand out from this image's classes).
        """
        probs = np.asarray(probs)
        if probs.ndim != 3 or probs.shape[1:] != np.asarray(image).shape[:2]:
            raise ValueError(f"probs must be (C, H, W) matching the image; got {probs.shape} for "
                             f"an image of {np.asarray(image).shape[:2]}.")
        names = list(class_names) if class_names else (self.class_names or [f"class_{i}" for i in range(len(probs))])
        if len(names) != len(probs):
            raise ValueError(f"{len(names)} class names for {len(probs)} probability planes.")
        if overlay_palette is None and (names != list(self.class_names) or len(self.palette) != len(names)):
            seen = class_mean_colours([(np.asarray(image), probs.argmax(axis=0))], len(names))
            overlay_palette = contrast_palette(len(names), seen)
        with self.hold_sync():
            self.class_names = names
            if palette is not None:
                self.dataset_palette = [c for _, c in legend(names, np.asarray(palette))]
            if overlay_palette is not None:
                self.palette = [c for _, c in legend(names, np.asarray(overlay_palette))]
            if self.view_class >= len(names):
                self.view_class = 0
            if len(self.visible) != len(names):
                self.visible = [True] * len(names)
            self.shape = [int(probs.shape[1]), int(probs.shape[2]), int(probs.shape[0])]
            self.image = jpeg(np.asarray(image))
            self.probs = quantize_probs(probs)

    def clear(self) -> None:
        """Show nothing (the picture belonged to a model or dataset that is gone)."""
        with self.hold_sync():
            self.probs = b""
            self.image = b""
            self.shape = [0, 0, 0]

    def planes(self) -> np.ndarray:
        """The probabilities on show, (C, H, W) float, as the browser has them (8-bit)."""
        h, w, c = self.shape
        return np.frombuffer(self.probs, np.uint8).reshape(c, h, w).astype(np.float64) / 255.0

    def render_array(self, image: np.ndarray) -> np.ndarray:
        """The picture the browser draws for the current view, computed in Python (uint8 H x W x 3)."""
        p = self.planes()
        hexes = self.dataset_palette if self.palette_source == "dataset" and self.dataset_palette else self.palette
        palette = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in hexes], np.float64)
        image = np.asarray(image, np.float64)[..., :3]
        alpha = self.opacity
        if self.view in ("confidence", "entropy", "class"):
            colours = heatmap_rgb(soft_view(p, self.view, self.temperature, self.view_class), 0.0, 1.0)
            out = image * (1 - alpha) + colours * alpha
        elif self.view == "soft":
            t = np.maximum(p, 0.5 / 255) ** (1.0 / self.temperature)
            t /= t.sum(axis=0, keepdims=True)
            shown = t * np.array([v is not False for v in self.visible], np.float64)[:, None, None]
            mass = shown.sum(axis=0)
            colours = np.einsum("chw,ck->hwk", shown, palette) / np.maximum(mass, 1e-12)[..., None]
            a = (alpha * mass)[..., None]
            out = image * (1 - a) + colours * a
        else:
            mask = p.argmax(axis=0)
            if self.view == "outline":
                return outline(image.astype(np.uint8), mask, palette.astype(np.uint8))
            out = image * (1 - alpha) + colorize(mask, palette.astype(np.uint8)) * alpha
        return np.clip(out, 0, 255).astype(np.uint8)

    def probabilities_at(self, y: int, x: int) -> dict[str, float]:
        """What the hover read-out shows for a pixel (temperature applied), computed in Python."""
        h, w, c = self.shape
        planes = np.frombuffer(self.probs, np.uint8).reshape(c, h, w).astype(np.float64)
        p = np.maximum(planes[:, y, x], 0.5) / 255.0
        p = p ** (1.0 / self.temperature)
        p /= p.sum()
        return dict(zip(self.class_names, p.tolist(), strict=True))
