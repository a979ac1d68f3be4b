"""Pure rendering; one job in one file: every figure segnb draws, from arrays, with no state.

Colourise masks, overlay them, lay out grids, and build plotly figures.

Nothing here calls ``display()``: functions return arrays or ``plotly.graph_objects.Figure``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "VOID_COLOUR", "OKABE_ITO", "colorize", "overlay", "outline", "legend", "grid", "heatmap_rgb",
    "contrast_palette", "class_mean_colours", "soft_mix", "soft_view", "smooth",
    "iou_bar_figure", "confusion_figure", "curves_figure", "class_curves_figure", "size_iou_figure",
    "frequency_figure", "runs_curves_figure", "runs_iou_figure", "confusion_difference_figure", "prediction_grid",
    "prediction_grid_figure", "table_figure", "RUN_COLOURS",
]

VOID_COLOUR = (255, 255, 255)
# Okabe & Ito's colour-blind-safe set (orange, sky blue, bluish green, yellow, blue, vermillion,
# reddish purple, black): the default colours of overlays, so that masks stand out from photos.
OKABE_ITO = np.array([[230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178],
                      [213, 94, 0], [204, 121, 167], [0, 0, 0]], dtype=np.uint8)


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


def outline(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, width: int = 1,
            ignore_index: int = 255) -> np.ndarray:
    """The image with only the borders between classes drawn, each in its class's colour."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    mask = np.asarray(mask)
    edge = np.zeros(mask.shape, bool)
    for _ in range(max(1, width)):
        grown = edge.copy()
        grown[1:] |= mask[1:] != mask[:-1]
        grown[:-1] |= mask[:-1] != mask[1:]
        grown[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        grown[:, :-1] |= mask[:, :-1] != mask[:, 1:]
        edge = grown
    edge &= mask != ignore_index
    out = image[..., :3].copy()
    out[edge] = colorize(mask, palette, ignore_index=ignore_index)[edge]
    return out


def contrast_palette(num_classes: int, avoid: np.ndarray | None = None) -> np.ndarray:
    """Colour-blind-safe overlay colours (Okabe-Ito first), one per class, as (C, 3) uint8.

    With ``avoid`` (C, 3), each class's mean colour in the images, the colours are assigned
    so that each class's overlay is as far as possible from what the class already looks
    like (sky is not painted sky blue); classes beyond 8 get evenly spaced hues.
    """
    colours = [c for c in OKABE_ITO]
    for k in range(max(0, num_classes - len(colours))):
        hue = (k * 0.618034) % 1.0
        colours.append(np.array(_hsv_to_rgb(hue, 0.75, 0.9), np.uint8))
    colours = np.array(colours, np.uint8)
    if avoid is None or len(avoid) != num_classes:
        return colours[:num_classes].copy()
    from scipy.optimize import linear_sum_assignment

    distance = np.linalg.norm(np.asarray(avoid, np.float64)[:, None, :] - colours[None].astype(np.float64), axis=2)
    rows, cols = linear_sum_assignment(-distance)
    out = np.zeros((num_classes, 3), np.uint8)
    out[rows] = colours[cols]
    return out


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    import colorsys

    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def class_mean_colours(pairs, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Each class's mean RGB over ``(image, mask)`` pairs (grey where a class never appears)."""
    total = np.zeros((num_classes, 3))
    count = np.zeros(num_classes)
    for image, mask in pairs:
        image = np.asarray(image, np.float64)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        mask = np.asarray(mask)
        valid = mask != ignore_index
        m = mask[valid].astype(np.int64)
        for channel in range(3):
            total[:, channel] += np.bincount(m, image[..., channel][valid], minlength=num_classes)[:num_classes]
        count += np.bincount(m, minlength=num_classes)[:num_classes]
    means = np.full((num_classes, 3), 128.0)
    seen = count > 0
    means[seen] = total[seen] / count[seen, None]
    return means


def _tempered(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(z / T) from probabilities: p ** (1 / T), renormalised (floors at half a quantum)."""
    p = np.maximum(np.asarray(probs, np.float64), 0.5 / 255) ** (1.0 / temperature)
    return p / p.sum(axis=0, keepdims=True)


def soft_mix(image: np.ndarray, probs: np.ndarray, palette: np.ndarray, temperature: float = 1.0,
             alpha: float = 0.6) -> np.ndarray:
    """Each pixel as the probability-weighted mix of the class colours at ``temperature``, over the image.

    ``probs`` is (C, H, W). At a low temperature this tends to the argmax colours; at a high one
    unsure pixels turn into a blend (the browser view ``widgets/softmask.js`` draws the same).
    """
    p = _tempered(probs, temperature)
    colours = np.einsum("chw,ck->hwk", p, np.asarray(palette, np.float64)[: len(p), :3])
    out = np.asarray(image, np.float64)[..., :3] * (1 - alpha) + colours * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def soft_view(probs: np.ndarray, view: str, temperature: float = 1.0, class_index: int = 0) -> np.ndarray:
    """A (H, W) map in [0, 1]: ``confidence`` (max probability), ``entropy`` (divided by log C,
    so 1 = all classes equally likely) or ``class`` (one class's probability), at ``temperature``."""
    p = _tempered(probs, temperature)
    if view == "confidence":
        return p.max(axis=0)
    if view == "entropy":
        return -(p * np.log(p)).sum(axis=0) / np.log(len(p)) if len(p) > 1 else np.zeros(p.shape[1:])
    if view == "class":
        return p[class_index]
    raise ValueError(f"view must be 'confidence', 'entropy' or 'class', got {view!r}.")


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

    from segnb.metrics import normalized_confusion

    c = normalized_confusion(confusion) if normalize else np.asarray(confusion, dtype=np.float64)
    figure = go.Figure(go.Heatmap(z=c, x=list(class_names), y=list(class_names), colorscale="Viridis",
                                  zmin=0, zmax=1 if normalize else None,
                                  hovertemplate="true %{y}<br>predicted %{x}<br>%{z:.3f}<extra></extra>"))
    figure.update_layout(title=title, xaxis={"title": "predicted"}, yaxis={"title": "true", "autorange": "reversed"},
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


LOSS_KEYS = ("train_loss", "val_loss")
SCORE_KEYS = ("miou", "pixel_accuracy", "mean_accuracy")
LABELS = {"train_loss": "training loss (epoch mean)", "val_loss": "validation loss", "miou": "validation mIoU",
          "pixel_accuracy": "pixel accuracy", "mean_accuracy": "mean class accuracy"}


def smooth(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """An exponential moving average, debiased as TensorBoard's smoothing (``weight`` in [0, 1))."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def _epoch_ticks(last: float) -> dict:
    """Integer epoch ticks, at most about ten of them."""
    return {"tick0": 0, "dtick": max(1, int(np.ceil(max(last, 1) / 10))), "tickformat": "d"}


def _x_extent(planned: int | None, seen: Sequence[float]) -> float:
    """The epochs the x axis shows: all that are planned when few, else what was seen and one more
    (200 planned epochs must not squeeze the first two into the left edge)."""
    seen_last = max(seen, default=0)
    if planned and planned <= 10:
        return max(planned, seen_last)
    return max(1, int(np.ceil(seen_last)) + 1)


def curves_figure(epochs: Sequence[dict], keys: Sequence[str] = ("train_loss", "val_loss", "miou"),
                  title: str = "Training", steps: Sequence[tuple[float, float]] = (), log_loss: bool = True,
                  epochs_planned: int | None = None):
    """Losses on top (log scale by default), scores in [0, 1] below, against the epoch.

    Losses and scores never share an axis: a first validation loss of 6 would flatten an
    mIoU of 0.8 to a line at zero. ``steps`` are ``(epoch as a fraction, loss)`` points seen
    during training, drawn smoothed (and faint, raw) so that movement shows before an epoch ends.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, row_heights=[0.55, 0.45],
                           subplot_titles=("loss by epoch" + (" (log scale)" if log_loss else ""),
                                           "validation score by epoch (0 to 1)"))
    x = [r["epoch"] for r in epochs]
    if steps:
        sx, sy = [p[0] for p in steps], [p[1] for p in steps]
        figure.add_trace(go.Scatter(x=sx, y=sy, mode="lines", name="training loss (per step)",
                                    line={"color": "rgba(31,119,180,0.25)", "width": 1}, showlegend=False,
                                    hovertemplate="epoch %{x:.2f}<br>loss %{y:.4f}<extra>per step</extra>"),
                         row=1, col=1)
        figure.add_trace(go.Scatter(x=sx, y=smooth(sy), mode="lines", name="training loss (smoothed)",
                                    line={"color": "#1f77b4", "width": 2}), row=1, col=1)
    colours = {"train_loss": "#0b3c7a", "val_loss": "#d55e00", "miou": "#009e73", "pixel_accuracy": "#cc79a7",
               "mean_accuracy": "#e69f00"}
    for key in keys:
        row = 1 if key.endswith("loss") else 2
        figure.add_trace(go.Scatter(x=x, y=[r.get(key) for r in epochs], mode="lines+markers",
                                    name=LABELS.get(key, key), marker={"size": 9},
                                    line={"color": colours.get(key)}), row=row, col=1)
    last = _x_extent(epochs_planned, [*x, *(p[0] for p in steps)])
    figure.update_xaxes(range=[0, last + 0.05], **_epoch_ticks(last))
    figure.update_yaxes(type="log" if log_loss else "linear", row=1, col=1)
    figure.update_yaxes(range=[0, 1.02], row=2, col=1)
    figure.update_layout(title=title, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                         legend={"orientation": "h", "y": -0.1, "yanchor": "top"})
    return figure


def class_curves_figure(epochs: Sequence[dict], class_names: Sequence[str], palette: np.ndarray | None = None,
                        title: str = "Per-class IoU", epochs_planned: int | None = None):
    """One line per class, with a marker per epoch (one epoch is a point, not nothing): validation IoU."""
    import plotly.graph_objects as go

    colours = [None] * len(class_names) if palette is None else [c for _, c in legend(class_names, palette)]
    x = [r["epoch"] for r in epochs]
    figure = go.Figure()
    for k, (name, colour) in enumerate(zip(class_names, colours, strict=True)):
        figure.add_trace(go.Scatter(x=x, y=[r["iou"][k] for r in epochs], mode="lines+markers", name=name,
                                    line={"color": colour}, marker={"size": 9, "color": colour}))
    last = _x_extent(epochs_planned, x)
    figure.update_layout(title=title, xaxis={"title": "epoch", "range": [0.5, last + 0.5],
                                             **_epoch_ticks(last)},
                         yaxis={"range": [0, 1.02], "title": "IoU"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
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


# ---------------------------------------------------------------------------------- runs side by side

# One colour per run (Okabe-Ito without yellow and black, then Tableau's): the same run keeps its
# colour in every figure of a comparison.
RUN_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7f7f7f", "#8c564b",
               "#bcbd22", "#17becf")
X_TITLES = {"epoch": "epoch", "step": "optimizer step", "seconds": "training time (s)"}


def _run_x(records: Sequence[dict], x: str) -> list[float]:
    if x == "epoch":
        return [r["epoch"] for r in records]
    if x == "step":
        return [r.get("step") for r in records]
    if x == "seconds":
        return [float(v) for v in np.cumsum([r.get("seconds") or 0.0 for r in records])]
    raise ValueError(f"x must be 'epoch', 'step' or 'seconds', got {x!r}.")


def runs_curves_figure(histories: dict[str, Sequence[dict]], x: str = "epoch",
                       keys: Sequence[str] = ("train_loss", "val_loss", "miou"), log_loss: bool = True,
                       title: str = "Training curves"):
    """Several runs' curves on one x axis (``epoch``, ``step`` or ``seconds`` of training): losses on
    top, scores below; one colour per run (one legend entry each), solid lines for training figures
    and mIoU, dashed for validation loss, dotted and dash-dotted for the accuracies."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    losses = [k for k in keys if k.endswith("loss")]
    scores = [k for k in keys if not k.endswith("loss")]
    rows = [r for r in (losses, scores) if r]
    dashes = {"train_loss": "solid", "val_loss": "dash", "miou": "solid", "pixel_accuracy": "dot",
              "mean_accuracy": "dashdot"}
    styles = {"solid": "solid", "dash": "dashed", "dot": "dotted", "dashdot": "dash-dotted"}

    def row_title(row: list[str]) -> str:
        what = ", ".join(f"{LABELS.get(k, k)} {styles[dashes.get(k, 'solid')]}" for k in row)
        return ("loss" + (" (log scale)" if log_loss else "") if row is losses else "score (0 to 1)") + f": {what}"

    figure = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.14,
                           subplot_titles=[row_title(r) for r in rows])
    figure.update_annotations(font_size=None)  # the figure's own size (large in presentation mode)
    for k, (name, records) in enumerate(histories.items()):
        colour = RUN_COLOURS[k % len(RUN_COLOURS)]
        xs = _run_x(records, x)
        for j, key in enumerate(keys):
            row = 1 + (rows.index(scores) if key in scores else rows.index(losses))
            points = [(a, r.get(key)) for a, r in zip(xs, records, strict=True) if r.get(key) is not None]
            figure.add_trace(go.Scatter(
                x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                name=name, legendgroup=name, showlegend=j == 0, marker={"size": 7, "color": colour},
                line={"color": colour, "dash": dashes.get(key, "solid"), "width": 2.5},
                meta=LABELS.get(key, key),
                hovertemplate=f"{name}<br>{LABELS.get(key, key)}<br>{x} %{{x}}<br>%{{y:.4f}}<extra></extra>"),
                row=row, col=1)
    if losses:
        figure.update_yaxes(type="log" if log_loss else "linear", row=1, col=1)
    if scores:
        figure.update_yaxes(range=[0, 1.02], row=len(rows), col=1)
    if x == "epoch":
        last = max((r["epoch"] for records in histories.values() for r in records), default=1)
        figure.update_xaxes(**_epoch_ticks(last))
    figure.update_xaxes(title=X_TITLES.get(x, x), row=len(rows), col=1)
    figure.update_layout(title=title, margin={"l": 10, "r": 10, "t": 90, "b": 10}, height=260 + 180 * len(rows),
                         legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.12, "yanchor": "bottom"})
    return figure


def runs_iou_figure(class_names: Sequence[str], ious: dict[str, Sequence[float | None]],
                    title: str = "Per-class IoU by run"):
    """Grouped bars: per class, one bar per run (in the run's colour); absent classes are empty."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for k, (name, iou) in enumerate(ious.items()):
        if len(iou) != len(class_names):
            raise ValueError(f"run {name!r} has {len(iou)} IoU values for {len(class_names)} classes.")
        figure.add_trace(go.Bar(x=list(class_names), y=[v if v is not None else 0.0 for v in iou], name=name,
                                marker_color=RUN_COLOURS[k % len(RUN_COLOURS)],
                                text=["absent" if v is None else f"{v:.2f}" for v in iou], textposition="outside",
                                hovertemplate=f"{name}<br>%{{x}}: %{{y:.3f}}<extra></extra>"))
    figure.update_layout(title=title, barmode="group", yaxis={"range": [0, 1.1], "title": "IoU"},
                         margin={"l": 10, "r": 10, "t": 40, "b": 10},
                         legend={"orientation": "h", "y": -0.15, "yanchor": "top"})
    return figure


def confusion_difference_figure(a, b, class_names: Sequence[str], names: tuple[str, str] = ("A", "B"),
                                normalize: bool = True, title: str | None = None):
    """``b - a`` of two confusion matrices (rows = truth), row-normalised by default: blue where
    ``b`` predicts a cell more often than ``a``, red where less. On the diagonal, blue is better."""
    import plotly.graph_objects as go

    from segnb.metrics import normalized_confusion

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"The confusion matrices differ in shape: {a.shape} and {b.shape}.")
    if normalize:
        a, b = normalized_confusion(a), normalized_confusion(b)
    diff = b - a
    limit = max(float(np.abs(diff).max()), 1e-9)
    figure = go.Figure(go.Heatmap(
        z=diff, x=list(class_names), y=list(class_names), colorscale="RdBu", zmid=0, zmin=-limit, zmax=limit,
        text=[[f"{v:+.2f}" for v in row] for row in diff], texttemplate="%{text}",
        hovertemplate=f"true %{{y}}<br>predicted %{{x}}<br>{names[1]} - {names[0]}: %{{z:+.3f}}<extra></extra>"))
    figure.update_layout(title=title or (f"confusion difference{' (row shares)' if normalize else ''}<br>"
                                         f"<sup>{_wrap(names[1], 60)} minus {_wrap(names[0], 60)}</sup>"),
                         xaxis={"title": "predicted"}, yaxis={"title": "true", "autorange": "reversed"},
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return figure


ERROR_COLOUR = (255, 0, 64)
DISAGREE_COLOUR = (255, 221, 0)


def _hatch(shape: tuple[int, int], spacing: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy + xx) % spacing == 0


def _edges(mask: np.ndarray) -> np.ndarray:
    edge = np.zeros(mask.shape, bool)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    return edge


def prediction_grid(images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                    preds: dict[str, Sequence[np.ndarray]], palette: np.ndarray, ignore_index: int = 255,
                    scale: int | None = None, gap: int = 4) -> np.ndarray:
    """One row per image: the image, its truth, each run's prediction with its errors hatched in red
    and outlined, and (with two runs or more) where the runs disagree, in yellow. uint8 RGB.

    Small images are enlarged ``scale`` times (by default to about 160 px) so a projector shows them.
    """
    if not images:
        raise ValueError("prediction_grid() needs at least one image.")
    tiles = []
    for k, (image, truth) in enumerate(zip(images, truths, strict=True)):
        image, truth = np.asarray(image), np.asarray(truth)
        s = scale or max(1, int(round(160 / max(image.shape[:2]))))

        def up(a, s=s):
            return np.repeat(np.repeat(a, s, axis=0), s, axis=1)

        image_s, truth_s = up(image if image.ndim == 3 else np.repeat(image[..., None], 3, 2)), up(truth)
        row = [image_s[..., :3], overlay(image_s, truth_s, palette, 0.65, ignore_index=ignore_index)]
        valid = truth_s != ignore_index
        spacing = max(4, 2 * s)
        run_preds = [up(np.asarray(p[k])) for p in preds.values()]
        for pred in run_preds:
            tile = overlay(image_s, pred, palette, 0.65, ignore_index=ignore_index)
            wrong = (pred != truth_s) & valid
            tile[wrong & _hatch(wrong.shape, spacing)] = ERROR_COLOUR
            tile[wrong & _edges(wrong)] = ERROR_COLOUR
            row.append(tile)
        if len(run_preds) >= 2:
            differ = np.zeros(truth_s.shape, bool)
            for pred in run_preds[1:]:
                differ |= pred != run_preds[0]
            tile = (image_s[..., :3].astype(np.float32) * 0.35).astype(np.uint8)
            tile[differ] = DISAGREE_COLOUR
            row.append(tile)
        tiles.append(row)
    columns = len(tiles[0])
    heights = {t.shape[:2] for row in tiles for t in row}
    if len(heights) > 1:  # different image sizes: pad each tile to the largest
        h, w = max(a for a, _ in heights), max(b for _, b in heights)
        tiles = [[np.pad(t, ((0, h - t.shape[0]), (0, w - t.shape[1]), (0, 0)), constant_values=255) for t in row]
                 for row in tiles]
    return grid([t for row in tiles for t in row], columns=columns, gap=gap)


def prediction_grid_figure(images, truths, preds: dict[str, Sequence[np.ndarray]], palette: np.ndarray,
                           ignore_index: int = 255, indices: Sequence[int] | None = None,
                           title: str = "The same validation images, predicted by each run"):
    """:func:`prediction_grid` as a plotly figure, the columns named (image, truth, each run, disagree)."""
    import plotly.graph_objects as go

    picture = prediction_grid(images, truths, preds, palette, ignore_index=ignore_index)
    names = ["image", "truth", *preds, *(["runs disagree"] if len(preds) >= 2 else [])]
    columns = len(names)
    width = picture.shape[1]
    figure = go.Figure(go.Image(z=picture, hoverinfo="skip"))
    for k, name in enumerate(names):
        figure.add_annotation(x=(k + 0.5) * width / columns, y=-4, text=f"<b>{_wrap(name, 14)}</b>", showarrow=False,
                              yanchor="bottom", font={"size": 14})
    caption = ("red hatching: pixels the run gets wrong; yellow: where the runs disagree"
               + (f" (validation images {', '.join(map(str, indices))})" if indices is not None else ""))
    figure.add_annotation(xref="paper", yref="paper", x=0, y=0, yanchor="top", xanchor="left", yshift=-6,
                          text=caption, showarrow=False, align="left")
    figure.update_layout(title={"text": title}, xaxis={"visible": False}, yaxis={"visible": False},
                         margin={"l": 5, "r": 5, "t": 110, "b": 50},
                         height=int(120 + 700 * picture.shape[0] / max(picture.shape[1], 1)))
    return figure


def _wrap(text: str, width: int) -> str:
    """A long run name on several lines (``<br>``), broken after ``_``, ``-`` or spaces."""
    import re

    lines, line = [], ""
    for part in re.findall(r"[^_\- ]+[_\- ]?", str(text)) or [str(text)]:
        if line and len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    return "<br>".join([*lines, line]) if line else "<br>".join(lines)


def table_figure(header: Sequence[str], columns: Sequence[Sequence[str]], title: str = ""):
    """A plain table (for configuration differences) as a plotly figure."""
    import plotly.graph_objects as go

    rows = len(columns[0]) if columns else 0
    figure = go.Figure(go.Table(header={"values": [f"<b>{h}</b>" for h in header], "align": "left",
                                        "fill_color": "#e8eef5", "font": {"size": 14}},
                                cells={"values": list(columns), "align": "left", "font": {"size": 13}, "height": 26}))
    figure.update_layout(title=title, margin={"l": 10, "r": 10, "t": 40, "b": 10}, height=120 + 28 * max(rows, 1))
    return figure
