"""SoftMaskViewer: an image with its predicted classes, and each pixel's class probabilities.

Opacity, class toggles, temperature and the hover read-out run in the browser
(``widgets/softmask.js``) from probabilities sent once as 8-bit planes, so they
answer without a kernel round trip and keep working while the kernel trains.
"""

from __future__ import annotations

import anywidget
import numpy as np
import traitlets

from segnb.ui.common import jpeg
from segnb.viz import legend
from segnb.widgets import asset

__all__ = ["SoftMaskViewer", "quantize_probs"]


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
    palette = traitlets.List([]).tag(sync=True)  # '#rrggbb' per class
    visible = traitlets.List([]).tag(sync=True)
    opacity = traitlets.Float(0.5).tag(sync=True)
    temperature = traitlets.Float(1.0).tag(sync=True)
    display_scale = traitlets.Float(1.0).tag(sync=True)

    def __init__(self, image=None, probs=None, class_names=(), palette=None, **kwargs):
        super().__init__(**kwargs)
        self.add_class("segnb-softmask-viewer")
        if image is not None and probs is not None:
            self.set_prediction(image, probs, class_names, palette)

    @traitlets.validate("opacity")
    def _valid_opacity(self, proposal):
        return float(min(1.0, max(0.0, proposal["value"])))

    @traitlets.validate("temperature")
    def _valid_temperature(self, proposal):
        if proposal["value"] <= 0:
            raise traitlets.TraitError("temperature must be positive")
        return float(proposal["value"])

    def set_prediction(self, image: np.ndarray, probs: np.ndarray, class_names=None, palette=None) -> None:
        """Show one image (uint8 H x W x 3) and its probabilities (C x H x W)."""
        probs = np.asarray(probs)
        if probs.ndim != 3 or probs.shape[1:] != np.asarray(image).shape[:2]:
            raise ValueError(f"probs must be (C, H, W) matching the image; got {probs.shape} for "
                             f"an image of {np.asarray(image).shape[:2]}.")
        names = list(class_names) if class_names else (self.class_names or [f"class_{i}" for i in range(len(probs))])
        if len(names) != len(probs):
            raise ValueError(f"{len(names)} class names for {len(probs)} probability planes.")
        with self.hold_sync():
            self.class_names = names
            if palette is not None:
                self.palette = [c for _, c in legend(names, np.asarray(palette))]
            if len(self.visible) != len(names):
                self.visible = [True] * len(names)
            self.shape = [int(probs.shape[1]), int(probs.shape[2]), int(probs.shape[0])]
            self.image = jpeg(np.asarray(image))
            self.probs = quantize_probs(probs)

    def probabilities_at(self, y: int, x: int) -> dict[str, float]:
        """What the hover read-out shows for a pixel (temperature applied), computed in Python."""
        h, w, c = self.shape
        planes = np.frombuffer(self.probs, np.uint8).reshape(c, h, w).astype(np.float64)
        p = np.maximum(planes[:, y, x], 0.5) / 255.0
        p = p ** (1.0 / self.temperature)
        p /= p.sum()
        return dict(zip(self.class_names, p.tolist(), strict=True))
