"""Scribbles: strokes as seeds for the random walker or a graph cut, and scribbles simulated from a mask."""

from __future__ import annotations

import math
import warnings
from collections import deque

import numpy as np
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.morphology import skeletonize

__all__ = ["BACKGROUND", "FOREGROUND", "check_strokes", "graph_cut_segment", "random_walker_segment",
           "rasterize_strokes", "scribbles_from_mask"]

FOREGROUND, BACKGROUND = 1, 2


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
