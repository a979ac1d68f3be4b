"""Interactive segmentation: the user's scribbles or clicks steer the mask.

Three ways, from no learning to a large pretrained model:

- **Scribbles -> random walker** (:func:`random_walker_segment`): foreground and background
  strokes are seeds; every other pixel takes the label of the seed a random walker starting
  there most probably reaches first, walking more easily between similar pixels
  (``skimage.segmentation.random_walker``; no weights).
- **Clicks -> a click-conditioned network** (:class:`ClickModel`): an smp U-Net whose input is
  the image plus two click maps (positive, negative), 5 channels, trained in about a minute on
  the built-in dataset with simulated clicks (:func:`train_click_model`).
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

import math
import re
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.morphology import skeletonize

__all__ = [
    "FOREGROUND", "BACKGROUND", "check_strokes", "rasterize_strokes", "random_walker_segment", "graph_cut_segment",
    "scribbles_from_mask", "click_maps", "first_click", "next_click", "object_masks", "iou",
    "ClickModel", "train_click_model", "RandomWalkerClicks", "ClickReport", "evaluate_clicks",
    "SamSegmenter", "SAM_FILES",
]

FOREGROUND, BACKGROUND = 1, 2
CLICK_RADIUS = 12.0  # px: a click map falls linearly from 1 at the click to 0 at this distance


# ---------------------------------------------------------------------------------- strokes


def check_strokes(strokes, shape: tuple[int, int] | None = None) -> list[dict]:
    """Validate a list of strokes; returns them as plain dicts. Raises ValueError saying what is wrong."""
    if strokes is None:
        return []
    checked = []
    for i, stroke in enumerate(strokes):
        if not isinstance(stroke, dict) or not {"label", "points"} <= set(stroke):
            raise ValueError(f"stroke {i} must be a dict with 'label' and 'points' (and 'size'), got {stroke!r}.")
        label, size, points = int(stroke["label"]), float(stroke.get("size", 1)), list(stroke["points"])
        if label < 1:
            raise ValueError(f"stroke {i} has label {label}; labels start at 1 (1 = foreground, 2 = background).")
        if size < 0:
            raise ValueError(f"stroke {i} has a negative brush size {size}.")
        if len(points) < 2 or len(points) % 2:
            raise ValueError(f"stroke {i}: 'points' must be a flat list x0, y0, x1, y1, ... of even length, "
                             f"got {len(points)} numbers.")
        checked.append({"label": label, "size": size, "points": [float(p) for p in points]})
    return checked


def _disk(radius: float) -> np.ndarray:
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return yy * yy + xx * xx <= radius * radius


def rasterize_strokes(strokes, shape: tuple[int, int]) -> np.ndarray:
    """Paint strokes into an int32 seed map of ``shape`` (0 = unlabelled); later strokes paint over earlier ones.

    Each polyline is drawn one pixel wide (``skimage.draw.line``), then widened with a disk of
    the brush radius. Points outside the image are clipped to it.
    """
    h, w = shape
    seeds = np.zeros((h, w), np.int32)
    for stroke in check_strokes(strokes):
        xy = np.asarray(stroke["points"]).reshape(-1, 2)
        xy = np.rint(np.clip(xy, 0, [w - 1, h - 1])).astype(int)
        path = np.zeros((h, w), bool)
        path[xy[0, 1], xy[0, 0]] = True
        for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:], strict=True):
            rr, cc = draw_line(y0, x0, y1, x1)
            path[rr, cc] = True
        if stroke["size"] >= 1:
            # Dilate only the stroke's bounding box (+ radius): most strokes are small.
            r = int(math.floor(stroke["size"]))
            rows, cols = np.nonzero(path)
            y0, y1 = max(0, rows.min() - r), min(h, rows.max() + r + 1)
            x0, x1 = max(0, cols.min() - r), min(w, cols.max() + r + 1)
            path[y0:y1, x0:x1] = ndimage.binary_dilation(path[y0:y1, x0:x1], structure=_disk(stroke["size"]))
        seeds[path] = stroke["label"]
    return seeds


def _as_float_image(image: np.ndarray) -> tuple[np.ndarray, int | None]:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3]
        if (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all():
            image = image[..., 0]  # a grey picture stored as RGB: one channel is enough
    data = image.astype(np.float64)
    if image.dtype == np.uint8:
        data /= 255.0
    return data, (-1 if data.ndim == 3 else None)


def random_walker_segment(image: np.ndarray, strokes=None, seeds: np.ndarray | None = None, beta: float = 130.0,
                          sigma: float = 0.0, tol: float = 1e-3, return_probability: bool = False,
                          denoise: float = 0.0, mode: str = "cg_j") -> np.ndarray:
    """A mask from scribbles with ``skimage.segmentation.random_walker`` (no weights, any image).

    Args:
        image: (H, W) or (H, W, 3), uint8 or float.
        strokes: the compact stroke list (see the module docstring), or give ``seeds`` instead.
        seeds: an int seed map (0 unlabelled, 1 foreground, 2 background, ...).
        beta: how strongly intensity edges stop the walker (skimage's default 130; noisy
            pictures such as electron micrographs want more, e.g. 2000).
        sigma: smooth the image with a Gaussian of this width (px) first (0: no smoothing),
            so noise inside a region does not look like an edge.
        denoise: total-variation denoising of this weight first
            (``skimage.restoration.denoise_tv_chambolle``; 0: none): it flattens the texture
            inside regions and keeps their edges sharp, where a Gaussian blurs both.
        return_probability: return the (K, H, W) probabilities of each label instead.
        mode: skimage's solver: ``"cg_j"`` (conjugate gradients to ``tol``, fast) or ``"bf"``
            (a direct sparse solve: exact, a little slower on 512 x 512, more memory on large
            images). At high beta the two differ: on a membrane slice with beta 8000, ``cg_j``
            at tol 1e-3 labels about 1% of the pixels otherwise than the exact solution.

    Returns:
        (H, W) int labels: 1 where foreground wins, and so on for each seed label
        (for foreground/background scribbles, ``mask == FOREGROUND`` is the object).

    Raises:
        ValueError: no seeds, or only one label (the walker needs at least two to compete).
    """
    from skimage.segmentation import random_walker

    data, channel_axis = _as_float_image(image)
    if denoise > 0:
        from skimage.restoration import denoise_tv_chambolle

        data = denoise_tv_chambolle(data, weight=denoise, channel_axis=channel_axis)
    if sigma > 0:
        data = ndimage.gaussian_filter(data, (sigma, sigma, 0) if channel_axis is not None else sigma)
    if seeds is None:
        seeds = rasterize_strokes(strokes, data.shape[:2])
    seeds = np.asarray(seeds, np.int32)
    if seeds.shape != data.shape[:2]:
        raise ValueError(f"seeds are {seeds.shape} but the image is {data.shape[:2]}.")
    labels = np.unique(seeds[seeds > 0])
    if len(labels) < 2:
        names = {FOREGROUND: "foreground", BACKGROUND: "background"}
        have = ", ".join(names.get(int(v), str(v)) for v in labels) or "nothing"
        raise ValueError(f"The random walker needs scribbles of at least two labels (foreground and background); "
                         f"it got {have}. Paint some of the other label too.")
    with warnings.catch_warnings():
        # skimage warns when the conjugate-gradient solution leaves [0, 1] by more than tol; the
        # panel answers at interactive speed with it, and mode="bf" is there for exact answers.
        warnings.filterwarnings("ignore", "The probability range is outside", UserWarning)
        result = random_walker(data, seeds, beta=beta, mode=mode, tol=tol, channel_axis=channel_axis,
                               return_full_prob=return_probability)
    return result if return_probability else result.astype(np.int32)


def _cut_graph(image, strokes, seeds, smoothness, beta, bins, sigma):
    """The s-t graph of :func:`graph_cut_segment`: (CSR integer capacities, source, sink)."""
    from scipy.sparse import coo_matrix

    data, channel_axis = _as_float_image(image)
    if sigma > 0:
        data = ndimage.gaussian_filter(data, (sigma, sigma, 0) if channel_axis is not None else sigma)
    pixels = data.reshape(data.shape[0], data.shape[1], -1)
    h, w, _ = pixels.shape
    if seeds is None:
        seeds = rasterize_strokes(strokes, (h, w))
    seeds = np.asarray(seeds)
    fg, bg = seeds == FOREGROUND, seeds == BACKGROUND
    if not fg.any() or not bg.any():
        raise ValueError("The graph cut needs foreground and background scribbles; paint both.")
    index = np.arange(h * w).reshape(h, w)
    diffs = [((pixels[:, 1:] - pixels[:, :-1]) ** 2).sum(-1), ((pixels[1:] - pixels[:-1]) ** 2).sum(-1)]
    if beta is None:
        beta = 1.0 / (2 * max(1e-12, float(np.mean(np.concatenate([d.ravel() for d in diffs])))))
    scale = 100.0
    pairs = [(index[:, :-1], index[:, 1:], diffs[0]), (index[:-1], index[1:], diffs[1])]
    rows, cols, caps = [], [], []
    for a, b, d in pairs:
        weight = np.rint(scale * smoothness * np.exp(-beta * d)).astype(np.int64).ravel()
        rows += [a.ravel(), b.ravel()]
        cols += [b.ravel(), a.ravel()]
        caps += [weight, weight]
    # region terms: -log colour frequency among each label's seeds
    quantised = np.minimum((np.clip(pixels, 0, 1) * bins).astype(np.int64), bins - 1)
    code = np.zeros((h, w), np.int64)
    for c in range(quantised.shape[-1]):
        code = code * bins + quantised[..., c]
    n_codes = bins ** quantised.shape[-1]
    cost = {}
    for name, region in (("fg", fg), ("bg", bg)):
        histogram = np.bincount(code[region], minlength=n_codes).astype(np.float64) + 1.0
        cost[name] = -np.log(histogram[code] / histogram.sum())
    infinite = np.int64(scale * (smoothness * 4 + cost["fg"].max() + cost["bg"].max()) + 1)
    to_source = np.where(fg, infinite, np.where(bg, 0, np.rint(scale * cost["bg"]))).astype(np.int64).ravel()
    to_sink = np.where(bg, infinite, np.where(fg, 0, np.rint(scale * cost["fg"]))).astype(np.int64).ravel()
    source, sink = h * w, h * w + 1
    every = np.arange(h * w)
    rows += [np.full(h * w, source), every]
    cols += [every, np.full(h * w, sink)]
    caps += [to_source, to_sink]
    rows, cols, caps = np.concatenate(rows), np.concatenate(cols), np.concatenate(caps)
    keep = caps > 0
    graph = coo_matrix((caps[keep], (rows[keep], cols[keep])), shape=(h * w + 2, h * w + 2)).tocsr()
    graph.sum_duplicates()
    return graph, source, sink


def graph_cut_segment(image: np.ndarray, strokes=None, seeds: np.ndarray | None = None, smoothness: float = 50.0,
                      beta: float | None = None, bins: int = 16, sigma: float = 0.0) -> np.ndarray:
    """A foreground mask from scribbles by a minimum s-t cut (Boykov and Jolly's interactive graph cut).

    Each pixel is a node joined to its 4 neighbours by ``smoothness * exp(-beta * |I_p - I_q|^2)``
    (cutting between similar pixels is expensive), to the source by the cost of calling it
    background and to the sink by the cost of calling it foreground: ``-log`` of its colour's
    frequency among the foreground (background) seed pixels, in a ``bins``-per-channel histogram.
    Seed pixels are tied to their label by an infinite capacity. The maximum flow is
    ``scipy.sparse.csgraph.maximum_flow`` (Dinic's algorithm, integer capacities: the costs are
    scaled by 100 and rounded); the foreground is what the source still reaches in the residual
    graph. ``beta`` defaults to ``1 / (2 mean |I_p - I_q|^2)``, as in GrabCut.

    Returns:
        (H, W) bool: True where the cut puts the foreground.
    """
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    graph, source, sink = _cut_graph(image, strokes, seeds, smoothness, beta, bins, sigma)
    h, w = np.asarray(image).shape[:2]
    flow = maximum_flow(graph, source, sink).flow
    residual = (graph - flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    mask = np.zeros(h * w + 2, bool)
    mask[reached] = True
    return mask[: h * w].reshape(h, w)


def _longest_path(pixels: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest geodesic path in a set of 8-connected pixels (two breadth-first searches)."""

    def bfs(start):
        parent = {start: None}
        queue, last = deque([start]), start
        while queue:
            last = queue.popleft()
            y, x = last
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    q = (y + dy, x + dx)
                    if q in pixels and q not in parent:
                        parent[q] = last
                        queue.append(q)
        return last, parent

    end_a, _ = bfs(next(iter(pixels)))
    end_b, parent = bfs(end_a)
    path, node = [], end_b
    while node is not None:
        path.append(node)
        node = parent[node]
    return path


def _centre_line_pieces(region: np.ndarray, min_length: int) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """The pieces of a region's centre line between its junctions, each at least ``min_length`` px long.

    The centre line is the skeleton; a junction is a skeleton pixel with three or more skeleton
    neighbours, and cutting the skeleton around every junction leaves one piece per branch (for
    membranes: one piece per membrane between two cell corners).
    """
    skeleton = skeletonize(region)
    neighbours = ndimage.convolve(skeleton.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - 1
    junctions = skeleton & (neighbours >= 3)
    pieces = skeleton & ~ndimage.binary_dilation(junctions, structure=np.ones((3, 3)))
    labelled, _ = ndimage.label(pieces, structure=np.ones((3, 3)))
    found = [(box, labelled[box] == i) for i, box in enumerate(ndimage.find_objects(labelled), start=1)]
    return [(box, piece) for box, piece in found if piece.sum() >= min_length]


def _polyline(path, box, step: int) -> list[float]:
    """Every ``step``-th pixel of a path (and its last one) as a flat x0, y0, x1, y1, ... list in image coordinates."""
    keep = path[::step] + ([path[-1]] if (len(path) - 1) % step else [])
    return [float(v) for y, x in keep for v in (x + box[1].start, y + box[0].start)]


def scribbles_from_mask(mask: np.ndarray, labels: dict[int, int] | None = None, size: int = 2, margin: int = 2,
                        min_area: int = 30, strokes_per_region: int = 1, step: int = 4,
                        ignore_index: int = 255, trace=(), trace_min_length: int = 10) -> list[dict]:
    """Scribbles a careful user might draw, derived from a ground-truth mask (for tests and benchmarks).

    Each class is eroded by ``size + margin`` so a brush of radius ``size`` stays inside it; every
    connected part left with at least ``min_area`` pixels is skeletonised and gets the longest
    path along its skeleton as one polyline (a stroke through its middle), keeping every
    ``step``-th point. ``strokes_per_region > 1`` adds the longest paths of what remains of the
    skeleton. Regions of at least ``min_area`` pixels left without such a part get a one-pixel
    stroke along their own middle line, and thin classes (less than a fifth of the class survives
    erosion, e.g. membranes) are skeletonised without erosion.

    The classes in ``trace`` are traced as an annotator traces membranes instead: one stroke
    along each piece of the class's centre line between two junctions (each membrane between two
    cell corners) that is at least ``trace_min_length`` pixels long, not eroded.

    Args:
        labels: ground-truth class -> stroke label, e.g. ``{1: FOREGROUND, 0: BACKGROUND}``
            (default: class 1 is foreground, every other class background).
    """
    mask = np.asarray(mask)
    if labels is None:
        labels = {int(c): (FOREGROUND if c == 1 else BACKGROUND) for c in np.unique(mask) if c != ignore_index}
    strokes = []
    for cls, stroke_label in labels.items():
        region_all = mask == cls
        if cls in trace:
            for box, piece in _centre_line_pieces(region_all, trace_min_length):
                path = _longest_path({(int(r), int(c)) for r, c in zip(*np.nonzero(piece), strict=True)})
                strokes.append({"label": int(stroke_label), "size": float(size), "points": _polyline(path, box, step)})
            continue
        eroded = ndimage.binary_erosion(region_all, structure=_disk(size + margin), border_value=1)
        if eroded.sum() < 0.2 * region_all.sum():  # a thin class: follow its centre line instead
            eroded = region_all
        components, _ = ndimage.label(eroded, structure=np.ones((3, 3)))
        boxes = ndimage.find_objects(components)
        parts = [(box, components[box] == i, size) for i, box in enumerate(boxes, start=1)]
        parts = [(box, part, brush) for box, part, brush in parts if part.sum() >= min_area]
        # regions left without a part (erosion removed them, or left too little): a one-pixel
        # stroke along their own middle line
        kept = np.zeros_like(region_all)
        for box, part, _ in parts:
            kept[box] |= part
        regions, _ = ndimage.label(region_all, structure=np.ones((3, 3)))
        for i, box in enumerate(ndimage.find_objects(regions), start=1):
            part = regions[box] == i
            if part.sum() >= min_area and not kept[box][part].any():
                parts.append((box, part, 0))
        for box, part, brush in parts:
            skeleton = skeletonize(part)
            for _ in range(strokes_per_region):
                rows, cols = np.nonzero(skeleton)
                if len(rows) == 0:
                    break  # (a skeleton of one pixel gives a dot)
                path = _longest_path({(int(r), int(c)) for r, c in zip(rows, cols, strict=True)})
                strokes.append({"label": int(stroke_label), "size": float(brush), "points": _polyline(path, box, step)})
                # the next stroke of this region goes where this one's brush did not reach
                drawn = np.zeros_like(skeleton)
                drawn[tuple(np.transpose(path))] = True
                skeleton &= ~ndimage.binary_dilation(drawn, structure=_disk(4 * size + 2))
    return strokes


# ----------------------------------------------------------------------------------- clicks


def click_maps(clicks, shape: tuple[int, int], radius: float = CLICK_RADIUS) -> np.ndarray:
    """(2, H, W) float32 maps of positive and negative clicks: 1 at a click, falling to 0 at ``radius`` px."""
    h, w = shape
    maps = np.zeros((2, h, w), np.float32)
    if not clicks:
        return maps
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for x, y, positive in clicks:
        d = np.sqrt((yy - float(y)) ** 2 + (xx - float(x)) ** 2)
        channel = 0 if positive else 1
        np.maximum(maps[channel], np.clip(1.0 - d / radius, 0.0, 1.0), out=maps[channel])
    return maps


def _most_interior(region: np.ndarray) -> tuple[int, int, float]:
    """(y, x, distance) of the pixel farthest from the region's boundary (the image edge counts as boundary)."""
    padded = np.pad(region, 1)
    distance = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(y), int(x), float(distance[y, x])


def first_click(target: np.ndarray) -> tuple[int, int, bool]:
    """The first simulated click: the object's most interior pixel, as ``(x, y, True)``."""
    target = np.asarray(target, bool)
    if not target.any():
        raise ValueError("The target object is empty: there is nothing to click on.")
    y, x, _ = _most_interior(target)
    return x, y, True


def next_click(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None):
    """The next simulated click: the most interior pixel of the larger error region.

    Missed object pixels (false negatives) give a positive click, wrongly selected pixels (false
    positives) a negative one. Returns ``(x, y, positive)``, or None when there is no error.
    """
    prediction, target = np.asarray(prediction, bool), np.asarray(target, bool)
    valid = np.ones_like(target) if valid is None else np.asarray(valid, bool)
    fn, fp = target & ~prediction & valid, prediction & ~target & valid
    if not fn.any() and not fp.any():
        return None
    yn, xn, dn = _most_interior(fn) if fn.any() else (0, 0, -1.0)
    yp, xp, dp = _most_interior(fp) if fp.any() else (0, 0, -1.0)
    return (xn, yn, True) if dn >= dp else (xp, yp, False)


def iou(prediction: np.ndarray, target: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Intersection over union of two binary masks (pixels outside ``valid`` are not counted)."""
    prediction, target = np.asarray(prediction, bool), np.asarray(target, bool)
    if valid is not None:
        prediction, target = prediction & valid, target & valid
    union = (prediction | target).sum()
    return float((prediction & target).sum() / union) if union else 1.0


def object_masks(mask: np.ndarray, classes, min_area: int = 1) -> list[np.ndarray]:
    """The objects of a semantic mask: each connected region (8-connected) of each class in ``classes``."""
    objects = []
    for cls in classes:
        components, n = ndimage.label(np.asarray(mask) == cls, structure=np.ones((3, 3)))
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        objects += [components == i for i in range(1, n + 1) if sizes[i] >= min_area]
    return objects


# ------------------------------------------------------------------------------ click model


class ClickModel:
    """An smp U-Net on 5 channels (RGB + positive + negative click maps) -> one object logit.

    ``predict(image, clicks)`` returns the object probability (H, W) for one uint8 RGB image and
    a list of ``(x, y, positive)`` clicks.
    """

    def __init__(self, net: torch.nn.Module | None = None, encoder: str = "tu-mobilenetv3_small_050",
                 click_radius: float = CLICK_RADIUS):
        if net is None:
            import segmentation_models_pytorch as smp

            net = smp.Unet(encoder, encoder_weights=None, in_channels=5, classes=1,
                           decoder_channels=(64, 32, 16, 16, 8))
        self.net, self.encoder, self.click_radius = net, encoder, click_radius
        self.history: list[float] = []

    @staticmethod
    def inputs(images: np.ndarray, maps: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 images + (B, 2, H, W) click maps -> (B, 5, H, W) network input."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return torch.cat([x, torch.from_numpy(maps)], dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32  # the U-Net needs sides divisible by 32
        y = self.net(F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x)
        return y[:, 0, :h, :w]

    @torch.no_grad()
    def predict_batch(self, images: np.ndarray, clicks_per_image) -> np.ndarray:
        """(B, H, W, 3) images and one click list per image -> (B, H, W) object probabilities."""
        self.net.eval()
        maps = np.stack([click_maps(c, images.shape[1:3], self.click_radius) for c in clicks_per_image])
        return torch.sigmoid(self.logits(self.inputs(images, maps))).numpy()

    def predict(self, image: np.ndarray, clicks) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"ClickModel.predict takes one RGB image (H, W, 3), got {image.shape}.")
        return self.predict_batch(image[None], [list(clicks)])[0]

    def save(self, path) -> Path:
        """Weights as safetensors, with the format, encoder, click radius and history in its metadata."""
        import json

        from safetensors.torch import save_file

        path = Path(path)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(path), metadata={"format": "segnb-click-model/1", "encoder": self.encoder,
                                              "click_radius": json.dumps(self.click_radius),
                                              "history": json.dumps(self.history)})
        return path

    @classmethod
    def load(cls, path) -> ClickModel:
        """A click model saved by :meth:`save` (never unpickled: safetensors holds tensors only)."""
        import json

        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No click model at {path}.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as error:  # truncated or foreign files
            raise ValueError(f"{path} is not a segnb click model (saved by ClickModel.save): {error}") from None
        if meta.get("format") != "segnb-click-model/1":
            raise ValueError(f"{path} is not a segnb click model (saved by ClickModel.save).")
        model = cls(encoder=meta["encoder"], click_radius=json.loads(meta["click_radius"]))
        model.net.load_state_dict(state)
        model.history = list(json.loads(meta.get("history", "[]")))
        return model


def _sample_clicks(rng: np.random.Generator, target: np.ndarray, max_extra: int = 4) -> list[tuple]:
    """Training clicks for one object: an interior positive click, then a few random ones around it."""
    distance = ndimage.distance_transform_edt(np.pad(target, 1))[1:-1, 1:-1]
    inner = np.argwhere(distance >= max(1.0, 0.4 * distance.max()))
    y, x = inner[rng.integers(len(inner))]
    clicks = [(int(x), int(y), True)]
    near = ndimage.binary_dilation(target, iterations=12) & ~target
    for positive, pool in ((True, np.argwhere(distance >= 2)), (False, np.argwhere(near))):
        for _ in range(rng.integers(0, max_extra + 1) if len(pool) else 0):
            y, x = pool[rng.integers(len(pool))]
            clicks.append((int(x), int(y), positive))
    return clicks


def _crop(image, target, size, rng):
    h, w = target.shape
    if h <= size and w <= size:
        return image, target
    ys, xs = np.nonzero(target)
    i = rng.integers(len(ys))
    y0 = int(np.clip(ys[i] - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, h - size))
    x0 = int(np.clip(xs[i] - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, w - size))
    return image[y0:y0 + size, x0:x0 + size], target[y0:y0 + size, x0:x0 + size]


def train_click_model(data, steps: int = 600, seconds: float | None = 120.0, batch_size: int = 8,
                      crop: int = 64, lr: float = 3e-3, classes=None, min_area: int = 30, seed: int = 0,
                      iterative: float = 0.5, model: ClickModel | None = None, progress=None,
                      clock=time.perf_counter) -> ClickModel:
    """Train a :class:`ClickModel` on a dataset's training split with simulated clicks.

    Each sample is one object (a connected region of a class in ``classes``; for the built-in
    shapes, the four thing classes), cropped to ``crop`` px around it, with an interior positive
    click and up to four random positive/negative clicks near it. With probability ``iterative``
    the current model first predicts from those clicks and one more click is added at its
    largest error (as at evaluation time), the iterative training of RITM.

    Stops after ``steps`` steps or ``seconds`` seconds, whichever comes first; the learning rate
    decays (cosine) over that same budget. ``clock`` measures the seconds: wall time by default;
    ``time.process_time`` counts the CPU time of this process instead, which on a machine shared
    with other jobs is what one free core would have taken (with one torch thread).
    ``progress(step, loss)`` is called every 20 steps.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    split = data[data.train_split]
    classes = _default_classes(data) if classes is None else list(classes)
    pool = []
    for index in range(len(split)):
        image, mask = split[index]
        for target in object_masks(mask, classes, min_area):
            pool.append((index, target))
    if not pool:
        raise ValueError(f"No objects of classes {classes} with at least {min_area} pixels in the training split.")
    model = model or ClickModel()
    optimiser = torch.optim.AdamW(model.net.parameters(), lr=lr, weight_decay=1e-4)
    start = clock()
    for step in range(steps):
        # cosine decay over whichever budget (steps or seconds) runs out first, after 20 warm-up steps
        done = max(step / steps, (clock() - start) / seconds if seconds else 0.0)
        for group in optimiser.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        images, targets, clicks = [], [], []
        for _ in range(batch_size):
            index, target = pool[rng.integers(len(pool))]
            image, target = _crop(split[index][0], target, crop, rng)
            if rng.random() < 0.5:  # flips: the shapes are lit from the top-left; keep the model general
                image, target = image[:, ::-1], target[:, ::-1]
            images.append(image)
            targets.append(target)
            clicks.append(_sample_clicks(rng, target) if target.any() else [])
        images, targets = np.stack(images), np.stack(targets)
        if iterative and rng.random() < iterative:
            probs = model.predict_batch(images, clicks)
            for b in range(batch_size):
                click = next_click(probs[b] > 0.5, targets[b])
                if click is not None:
                    clicks[b] = clicks[b] + [click]
        model.net.train()
        maps = np.stack([click_maps(c, images.shape[1:3], model.click_radius) for c in clicks])
        logits = model.logits(model.inputs(images, maps))
        y = torch.from_numpy(targets.astype(np.float32))
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum((1, 2)) + 1) / (p.sum((1, 2)) + y.sum((1, 2)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        model.history.append(loss.item())
        if progress is not None and step % 20 == 0:
            progress(step, model.history[-1])
        if seconds is not None and clock() - start > seconds:
            break
    model.net.eval()
    return model


def _default_classes(data) -> list[int]:
    from segnb.data.shapes import STUFF

    if data.source == "shapes":
        return list(range(len(STUFF), data.num_classes))  # the things, not the sky, grass or wall
    return list(range(1, data.num_classes)) if data.num_classes > 1 else [0]


class RandomWalkerClicks:
    """Clicks as random-walker seeds: a disk of ``radius`` px per click, the image border as background
    while there is no negative click (the walker needs two labels). A baseline with no training."""

    def __init__(self, radius: int = 3, beta: float = 130.0):
        self.radius, self.beta = radius, beta

    def predict(self, image: np.ndarray, clicks) -> np.ndarray:
        h, w = np.asarray(image).shape[:2]
        strokes = [{"label": FOREGROUND if positive else BACKGROUND, "size": self.radius, "points": [x, y]}
                   for x, y, positive in clicks]
        seeds = rasterize_strokes(strokes, (h, w))
        if not (seeds == BACKGROUND).any():
            border = np.zeros((h, w), bool)
            border[[0, -1], :] = border[:, [0, -1]] = True
            seeds[border & (seeds == 0)] = BACKGROUND
        if not (seeds == FOREGROUND).any():
            return np.zeros((h, w), np.float32)
        return (random_walker_segment(image, seeds=seeds, beta=self.beta) == FOREGROUND).astype(np.float32)

    def predict_batch(self, images, clicks_per_image) -> np.ndarray:
        return np.stack([self.predict(i, c) for i, c in zip(images, clicks_per_image, strict=True)])


@dataclass
class ClickReport:
    """IoU after each simulated click, per object, and the number of clicks to reach each threshold."""

    ious: np.ndarray  # (objects, max_clicks): IoU after click 1, 2, ...
    thresholds: tuple[float, ...] = (0.85, 0.90)
    excluded: int = 0  # objects left out for being smaller than min_area
    min_area: int = 0
    seconds: float = 0.0
    noc: dict = field(default_factory=dict)

    def __post_init__(self):
        k = self.ious.shape[1]
        for t in self.thresholds:
            reached = self.ious >= t
            # clicks to reach t; max_clicks when it is never reached (the papers' convention)
            clicks = np.where(reached.any(1), reached.argmax(1) + 1, k)
            self.noc[t] = float(clicks.mean()) if len(clicks) else float("nan")

    @property
    def curve(self) -> np.ndarray:
        """Mean IoU after 1, 2, ... clicks."""
        return self.ious.mean(0)

    def summary(self) -> str:
        nocs = ", ".join(f"NoC@{round(t * 100)} {v:.2f}" for t, v in self.noc.items())
        return (f"{len(self.ious)} objects (>= {self.min_area} px; {self.excluded} smaller left out): {nocs}; "
                f"mean IoU after 1/3/5 clicks {self.curve[0]:.3f}/{self.curve[min(2, len(self.curve) - 1)]:.3f}/"
                f"{self.curve[min(4, len(self.curve) - 1)]:.3f}")


def evaluate_clicks(predictor, data, split: str | None = None, max_clicks: int = 10, min_area: int = 100,
                    classes=None, limit: int | None = None, thresholds=(0.85, 0.90), batch: int = 32) -> ClickReport:
    """Simulate clicks on every object of a split and record the IoU after each click.

    ``predictor`` has ``predict_batch(images, clicks_per_image)`` returning probabilities
    (:class:`ClickModel`, :class:`RandomWalkerClicks`, :class:`SamSegmenter`). The mask is
    ``probability > 0.5``. Objects below ``min_area`` pixels are left out and counted in
    ``report.excluded``. ``limit`` uses only the first images of the split.
    """
    start = time.perf_counter()
    split_data = data[split or data.eval_split]
    classes = _default_classes(data) if classes is None else list(classes)
    n = len(split_data) if limit is None else min(limit, len(split_data))
    items, excluded = [], 0
    for index in range(n):
        image, mask = split_data[index]
        everything = object_masks(mask, classes, 1)
        valid = mask != data.ignore_index
        for target in everything:
            if target.sum() >= min_area:
                items.append((image, target, valid))
            else:
                excluded += 1
    ious = np.zeros((len(items), max_clicks))
    for lo in range(0, len(items), batch):
        chunk = items[lo:lo + batch]
        images = np.stack([c[0] for c in chunk])
        clicks = [[first_click(c[1])] for c in chunk]
        for k in range(max_clicks):
            probs = predictor.predict_batch(images, clicks)
            for b, (_, target, valid) in enumerate(chunk):
                pred = probs[b] > 0.5
                ious[lo + b, k] = iou(pred, target, valid)
                click = next_click(pred, target, valid)
                clicks[b] = clicks[b] + ([click] if click is not None else [])
    return ClickReport(ious=ious, thresholds=tuple(thresholds), excluded=excluded, min_area=min_area,
                       seconds=time.perf_counter() - start)


# -------------------------------------------------------------------------------------- SAM

SAM_FILES = ("config.json", "model.safetensors (or pytorch_model.bin)",
             "preprocessor_config.json (or processor_config.json)")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "facebook/sam-vit-base"


def _sam_folder(checkpoint, cache_dir=None) -> Path:
    """The local folder of a SAM checkpoint: a folder, a file in it, or a hub id already in the local cache.

    Never touches the network: a hub id is looked up with ``local_files_only=True``, so an absent
    checkpoint is said at once instead of after the hub client's retries.
    """
    if checkpoint is None or str(checkpoint).strip() == "":
        raise FileNotFoundError(SamSegmenter._missing("no checkpoint folder was given"))
    text = str(checkpoint).strip()
    path = Path(text).expanduser()
    if path.is_file():
        return path.parent  # a file inside the checkpoint folder (e.g. model.safetensors) names the folder
    if path.is_dir():
        return path
    if not _HUB_ID.fullmatch(text):
        raise FileNotFoundError(SamSegmenter._missing(f"there is no folder at {path}"))
    from huggingface_hub import constants, snapshot_download

    try:
        return Path(snapshot_download(text, cache_dir=cache_dir, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and any other sign that it is not in the cache
        cache = cache_dir or constants.HF_HUB_CACHE
        raise FileNotFoundError(
            f"SAM checkpoint {text!r} is neither a local folder nor in the Hugging Face cache ({cache}), and "
            f"segnb never downloads: download it once where there is internet (hf download {text}), or give "
            f"the path of a folder holding {', '.join(SAM_FILES)}.") from None


class SamSegmenter:
    """Segment Anything from clicks and boxes, through transformers' ``SamModel`` and a local checkpoint.

    ``SamSegmenter("path/to/sam-vit-base")`` takes a folder laid out as the hub repository
    ``facebook/sam-vit-base`` (``config.json``, ``model.safetensors``, ``preprocessor_config.json``);
    ``SamSegmenter("facebook/sam-vit-base")`` takes that repository from the local Hugging Face
    cache (``cache_dir``, default the hub's), where ``hf download facebook/sam-vit-base`` put it.
    segnb never downloads: without the checkpoint it raises a FileNotFoundError at once that says
    what to give. transformers is optional: ``pip install "segnb[sam]"`` (or ``transformers``).
    The image embedding (the expensive part) is computed once per image and reused for each prompt.
    """

    def __init__(self, checkpoint, device: str = "cpu", cache_dir=None):
        path = _sam_folder(checkpoint, cache_dir)
        weights = [p for p in ("model.safetensors", "pytorch_model.bin") if (path / p).is_file()]
        missing = [] if (path / "config.json").is_file() else ["config.json"]
        if not weights:
            missing.append("model.safetensors (or pytorch_model.bin)")
        if not any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
            missing.append("preprocessor_config.json")
        if missing:
            raise FileNotFoundError(self._missing(f"{path} lacks {', '.join(missing)}"))
        try:
            from transformers import SamModel, SamProcessor
        except ImportError as error:
            raise ImportError("SAM needs the transformers package, which is not installed: "
                              f'pip install transformers, or pip install "segnb[sam]" ({error}).') from None
        self.checkpoint, self.path, self.device = str(checkpoint), path, torch.device(device)
        self.model = SamModel.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.processor = SamProcessor.from_pretrained(path, local_files_only=True)
        self._cache_key, self._cache = None, None

    @staticmethod
    def _missing(why: str) -> str:
        return (f"SAM needs a local checkpoint folder and {why}. Give the folder of a copy of a hub "
                f"SAM repository such as facebook/sam-vit-base, holding {', '.join(SAM_FILES)}, or the id "
                "of one already in the Hugging Face cache (segnb runs offline and downloads nothing). "
                "Without SAM, use ClickModel or random_walker_segment.")

    @torch.no_grad()
    def predict(self, image: np.ndarray, clicks=(), box=None) -> np.ndarray:
        """Object probability (H, W) for one RGB uint8 image from ``(x, y, positive)`` clicks and/or a box.

        ``box`` is ``(x0, y0, x1, y1)`` in image pixels (SAM's box prompt). With neither clicks
        nor a box the answer is all zeros.
        """
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        clicks = list(clicks or [])
        if not clicks and box is None:
            return np.zeros(image.shape[:2], np.float32)
        prompts = {}
        if clicks:
            prompts["input_points"] = [[[[float(x), float(y)] for x, y, _ in clicks]]]
            prompts["input_labels"] = [[[int(bool(p)) for _, _, p in clicks]]]
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"A box is (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {tuple(box)}.")
            prompts["input_boxes"] = [[[x0, y0, x1, y1]]]
        inputs = self.processor(images=image, return_tensors="pt", **prompts)
        key = (image.shape, hash(image.tobytes()))
        if key != self._cache_key:
            self._cache = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device))
            self._cache_key = key
        given = {k: inputs[k].to(self.device) for k in ("input_points", "input_labels", "input_boxes") if k in inputs}
        outputs = self.model(image_embeddings=self._cache, multimask_output=False, **given)
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu(),
            binarize=False)
        return torch.sigmoid(masks[0][0, 0]).numpy().astype(np.float32)

    def predict_batch(self, images, clicks_per_image) -> np.ndarray:
        return np.stack([self.predict(i, c) for i, c in zip(images, clicks_per_image, strict=True)])
