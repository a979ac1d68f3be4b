"""AttentionViewer: where a ViT looks, per layer and head, with rollout and click-a-patch.

The attention of the selected layer travels to the browser once (float32,
heads x tokens x tokens); clicking a patch, switching heads and the rollout
toggle are then answered by ``widgets/attention.js`` without the kernel.
Selecting another layer sends that layer.
"""

from __future__ import annotations

import anywidget
import numpy as np
import traitlets

from segnb.inspect.attention import AttentionMaps, attention_maps
from segnb.ui.common import jpeg, png
from segnb.viz import grid, heatmap_rgb
from segnb.widgets import asset

__all__ = ["AttentionViewer"]


class AttentionViewer(anywidget.AnyWidget):
    """``AttentionViewer(model, image, input_size=224)`` for a model with a ViT backbone."""

    _esm = asset("attention.js")
    _css = asset("segnb.css")

    image = traitlets.Bytes(b"").tag(sync=True)
    image_shape = traitlets.List([0, 0]).tag(sync=True)
    thumbs = traitlets.Bytes(b"").tag(sync=True)
    attn = traitlets.Bytes(b"").tag(sync=True)
    rollout_attn = traitlets.Bytes(b"").tag(sync=True)
    grid = traitlets.List([0, 0]).tag(sync=True)
    prefix = traitlets.Int(1).tag(sync=True)
    layers = traitlets.Int(0).tag(sync=True)
    heads = traitlets.Int(0).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    head = traitlets.Int(-1).tag(sync=True)  # -1: mean over heads
    rollout = traitlets.Bool(False).tag(sync=True)
    head_fusion = traitlets.Unicode("mean").tag(sync=True)
    discard_ratio = traitlets.Float(0.0).tag(sync=True)
    query = traitlets.List([]).tag(sync=True)  # [row, col] of the clicked patch, [] = CLS
    opacity = traitlets.Float(0.55).tag(sync=True)
    display_scale = traitlets.Float(1.0).tag(sync=True)

    def __init__(self, model=None, image=None, input_size: int | None = 224, **kwargs):
        super().__init__(**kwargs)
        self.add_class("segnb-attention-viewer")
        self.maps: AttentionMaps | None = None
        self.layers_sent: list[int] = []
        if model is not None and image is not None:
            self.show(model, image, input_size)

    def show(self, model, image, input_size: int | None = 224) -> None:
        """Compute the attention of ``model`` on ``image`` and display it."""
        maps = attention_maps(model, image, input_size=input_size)
        self.maps = maps
        with self.hold_sync():
            self.layers, self.heads = maps.layers, maps.heads
            self.grid, self.prefix = list(maps.grid), maps.prefix
            self.layer = min(self.layer, maps.layers - 1)
            self.head = min(self.head, maps.heads - 1)
            self.query = []
            self.image = jpeg(np.asarray(image))
            self.image_shape = list(np.asarray(image).shape[:2])
            self.thumbs = png(self._thumbnails(maps))
            self._send_layer()
            self._send_rollout()

    @staticmethod
    def _thumbnails(maps: AttentionMaps, cell: int = 48) -> np.ndarray:
        """Layer x head grid of CLS maps (query maps of the centre patch without a CLS token)."""
        from segnb.inspect.attention import upsample_map

        tiles = []
        centre = (maps.grid[0] // 2, maps.grid[1] // 2)
        for layer in range(maps.layers):
            for head in range(maps.heads):
                values = maps.cls_map(layer, head) if maps.prefix else maps.query_map(centre, layer, head)
                tiles.append(heatmap_rgb(upsample_map(values, (cell, cell), mode="nearest")))
        return grid(tiles, columns=maps.heads, gap=1)

    @traitlets.observe("layer")
    def _on_layer(self, change) -> None:
        if self.maps is not None:
            self._send_layer()

    @traitlets.observe("head_fusion", "discard_ratio")
    def _on_rollout_options(self, change) -> None:
        if self.maps is not None:
            self._send_rollout()

    def _send_layer(self) -> None:
        self.layers_sent.append(self.layer)
        self.attn = np.ascontiguousarray(self.maps.attn[self.layer], dtype=np.float32).tobytes()

    def _send_rollout(self) -> None:
        self.rollout_attn = self.maps.rollout(self.head_fusion, self.discard_ratio).astype(np.float32).tobytes()

    def current_map(self) -> np.ndarray:
        """The map the browser draws now, computed in Python (for tests and scripts)."""
        maps = self.maps
        query = tuple(self.query) if len(self.query) == 2 else None
        if self.rollout:
            r = maps.rollout(self.head_fusion, self.discard_ratio)
            source = 0 if query is None else maps.prefix + query[0] * maps.grid[1] + query[1]
            return r[source, maps.prefix:].reshape(maps.grid)
        head = "mean" if self.head < 0 else self.head
        return maps.cls_map(self.layer, head) if query is None else maps.query_map(query, self.layer, head)
