"""Clicks: click maps, the next click as the papers place it, and the click-by-click evaluation (NoC)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from segnb.interactive.scribbles import (
    BACKGROUND,
    FOREGROUND,
    random_walker_segment,
    rasterize_strokes,
)

__all__ = ["CLICK_RADIUS", "ClickReport", "RandomWalkerClicks", "click_maps", "default_classes", "evaluate_clicks",
           "first_click", "iou", "next_click", "object_masks"]

CLICK_RADIUS = 12.0  # px: a click map falls linearly from 1 at the click to 0 at this distance


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




def default_classes(data) -> list[int]:
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
    classes = default_classes(data) if classes is None else list(classes)
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
