"""Pure rendering: colourise masks, overlay them, lay out grids, and build plotly figures.

Nothing here calls ``display()``: functions return arrays or ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "VOID_COLOUR", "colorize", "overlay", "legend", "grid", "heatmap_rgb",
    "iou_bar_figure", "confusion_figure", "curves_figure", "class_curves_figure", "size_iou_figure",
    "frequency_figure",
]

VOID_COLOUR = (255, 255, 255)


def colorize(mask: np.ndarray, palette: np.ndarray, void_colour=VOID_COLOUR, ignore_index: int = 255) -> np.ndarray:
    """Class indices (H, W) -> uint8 RGB (H, W, 3) with the dataset's palette; void in ``void_colour``."""
    mask = np.asarray(mask)
    palette = np.asarray(palette, dtype=np.uint8)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = palette[:256]
    lut[ignore_index % 256] = void_colour
    return lut[np.clip(mask, 0, 255).astype(np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
            visible: Sequence[int] | None = None, ignore_index: int = 255) -> np.ndarray:
    """The image with coloured classes blended in at ``alpha``; only ``visible`` classes if given."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}.")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    colours = colorize(mask, palette, ignore_index=ignore_index).astype(np.float32)
    weight = np.full(mask.shape, alpha, np.float32)
    weight[np.asarray(mask) == ignore_index] = 0.0
    if visible is not None:
        weight[~np.isin(mask, list(visible))] = 0.0
    out = image.astype(np.float32) * (1 - weight[..., None]) + colours * weight[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def legend(class_names: Sequence[str], palette: np.ndarray) -> list[tuple[str, str]]:
    """``[(name, '#rrggbb'), ...]`` for labels next to a picture."""
    return [(name, "#" + "".join(f"{int(v):02x}" for v in palette[i][:3])) for i, name in enumerate(class_names)]


def grid(images: Sequence[np.ndarray], columns: int = 4, gap: int = 2, fill: int = 255) -> np.ndarray:
    """Equal-sized RGB images side by side in rows of ``columns``, separated by ``gap`` pixels."""
    if not images:
        raise ValueError("grid() needs at least one image.")
    images = [np.repeat(i[..., None], 3, axis=2) if i.ndim == 2 else i for i in map(np.asarray, images)]
    h, w = images[0].shape[:2]
    if any(i.shape[:2] != (h, w) for i in images):
        raise ValueError("grid() needs images of one size; resize them first.")
    rows = (len(images) + columns - 1) // columns
    cols = min(columns, len(images))
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), fill, np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = image[..., :3]
    return out


def heatmap_rgb(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """A 2-D map -> uint8 RGB with a perceptual dark-blue-to-yellow ramp (for attention, entropy)."""
    v = np.asarray(values, dtype=np.float64)
    lo = np.nanmin(v) if vmin is None else vmin
    hi = np.nanmax(v) if vmax is None else vmax
    t = np.clip((v - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(v)
    stops = np.array([[48, 18, 59], [65, 105, 225], [35, 170, 140], [170, 220, 50], [250, 235, 40]], np.float64)
    position = t * (len(stops) - 1)
    index = np.minimum(position.astype(int), len(stops) - 2)
    frac = (position - index)[..., None]
    rgb = stops[index] * (1 - frac) + stops[index + 1] * frac
    return np.nan_to_num(rgb).round().astype(np.uint8)


def iou_bar_figure(class_names: Sequence[str], iou: Sequence[float | None], sort: bool = False, title: str = "Per-class IoU"):
    """Horizontal bars of per-class IoU (absent classes shown as empty), optionally sorted, worst first."""
    import plotly.graph_objects as go

    rows = list(zip(class_names, iou, strict=True))
    if sort:
        rows.sort(key=lambda r: -1 if r[1] is None else r[1])
    names = [r[0] for r in rows]
    values = [r[1] if r[1] is not None else 0.0 for r in rows]
    text = ["absent" if r[1] is None else f"{r[1]:.3f}" for r in rows]
    figure = go.Figure(go.Bar(x=values, y=names, orientation="h", text=text, textposition="auto"))
    figure.update_layout(title=title, xaxis={"range": [0, 1], "title": "IoU"}, yaxis={"autorange": "reversed"},
                         margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=max(200, 28 * len(names) + 80))
    return figure


def confusion_figure(confusion, class_names: Sequence[str], normalize: bool = True, title: str = "Confusion"):
    """Heatmap of the confusion matrix, rows = truth, columns = prediction (row-normalised by default)."""
    import plotly.graph_objects as go

    from segnb.inspect.iou import normalized_confusion

    c = normalized_confusion(confusion) if normalize else np.asarray(confusion, dtype=np.float64)
    figure = go.Figure(go.Heatmap(z=c, x=list(class_names), y=list(class_names), colorscale="Viridis",
                                  zmin=0, zmax=1 if normalize else None,
                                  hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.3f}<extra></extra>"))
    figure.update_layout(title=title, xaxis={"title": "predicted"}, yaxis={"title": "true", "autorange": "reversed"},
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def curves_figure(epochs: Sequence[dict], keys: Sequence[str] = ("train_loss", "val_loss", "miou"),
                  title: str = "Training"):
    """Lines of history records (``History.epochs``) against the epoch number."""
    import plotly.graph_objects as go

    figure = go.Figure()
    x = [r["epoch"] for r in epochs]
    for key in keys:
        figure.add_trace(go.Scatter(x=x, y=[r.get(key) for r in epochs], mode="lines+markers", name=key))
    figure.update_layout(title=title, xaxis={"title": "epoch"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def class_curves_figure(epochs: Sequence[dict], class_names: Sequence[str], palette: np.ndarray | None = None,
                        title: str = "Per-class IoU"):
    """One line per class: its validation IoU (``record["iou"]``) against the epoch number."""
    import plotly.graph_objects as go

    colours = [None] * len(class_names) if palette is None else [c for _, c in legend(class_names, palette)]
    x = [r["epoch"] for r in epochs]
    figure = go.Figure()
    for k, (name, colour) in enumerate(zip(class_names, colours, strict=True)):
        figure.add_trace(go.Scatter(x=x, y=[r["iou"][k] for r in epochs], mode="lines", name=name,
                                    line={"color": colour}))
    figure.update_layout(title=title, xaxis={"title": "epoch"}, yaxis={"range": [0, 1]},
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def size_iou_figure(bins: Sequence[dict], title: str = "IoU by object size (pixels)"):
    """Bars of mean IoU per object-size bin (``segnb.inspect.iou_by_object_size``), with object counts."""
    import plotly.graph_objects as go

    labels = [f"< {b['max_area']:g}" if np.isfinite(b["max_area"]) else f">= {b['min_area']:g}" for b in bins]
    figure = go.Figure(go.Bar(x=labels, y=[b["mean_iou"] or 0 for b in bins],
                              text=[f"{b['objects']} objects" for b in bins]))
    figure.update_layout(title=title, yaxis={"range": [0, 1], "title": "mean IoU"},
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


def frequency_figure(class_names: Sequence[str], frequencies: Sequence[float], palette: np.ndarray | None = None,
                     title: str = "Pixel share per class"):
    """Bars of per-class pixel frequencies, in the dataset's colours."""
    import plotly.graph_objects as go

    colours = None if palette is None else [c for _, c in legend(class_names, palette)]
    figure = go.Figure(go.Bar(x=list(class_names), y=list(frequencies), marker_color=colours))
    figure.update_layout(title=title, yaxis={"tickformat": ".0%"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure
