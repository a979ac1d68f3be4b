"""Panoptic segmentation: a semantic model's stuff plus an instance model's things, and a picture.

:func:`panoptic_merge` follows the heuristic of Kirillov et al. (CVPR 2019): detections,
most confident first, claim their pixels (mask probability above ``mask_threshold``);
a detection that lost more than ``overlap`` of its mask to earlier ones is dropped; the
remaining pixels take the semantic model's class when it is a stuff class; pixels the
semantic model calls a thing but no detection covers, and stuff regions smaller than
``min_stuff_area``, become void.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["panoptic_merge", "colour_panoptic", "instances_from_detections"]


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def panoptic_merge(semantic, detections: dict, things, stuff, score_threshold: float = 0.5,
                   mask_threshold: float = 0.5, overlap: float = 0.5, min_stuff_area: int = 16,
                   void: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Merge a semantic map with one image's detections into ``(classes, instance_ids)``.

    Args:
        semantic: ``(H, W)`` class ids (or ``(K, H, W)`` logits, argmax taken).
        detections: Mask R-CNN output for one image: ``masks`` (N, 1, H, W) probabilities,
            ``scores`` (N,), ``labels`` (N,) in the dataset's class ids; or the
            :class:`segnb.instances.train.Instances` that ``segnb.predict`` returns.
        things, stuff: class ids.

    Returns:
        ``classes`` int64 (H, W) with ``void`` where nothing is claimed, and ``instance_ids``
        int64 (H, W): 1..n for each kept detection, 0 on stuff and void.
    """
    if not isinstance(detections, dict):  # segnb.predict's Instances: its soft masks are the probabilities
        detections = {"masks": detections.soft, "scores": detections.scores, "labels": detections.labels}
    semantic = _numpy(semantic)
    if semantic.ndim == 3:
        semantic = semantic.argmax(0)
    h, w = semantic.shape
    classes = np.full((h, w), void, np.int64)
    ids = np.zeros((h, w), np.int64)
    masks = _numpy(detections["masks"]).reshape(-1, h, w) if len(detections["scores"]) else np.zeros((0, h, w))
    scores, labels = _numpy(detections["scores"]), _numpy(detections["labels"])
    next_id = 1
    for k in np.argsort(-scores, kind="stable"):
        if scores[k] < score_threshold or int(labels[k]) not in things:
            continue
        region = masks[k] > mask_threshold
        area = np.count_nonzero(region)
        free = region & (ids == 0)
        if area == 0 or np.count_nonzero(free) < (1 - overlap) * area:
            continue  # mostly hidden by more confident detections
        classes[free], ids[free] = int(labels[k]), next_id
        next_id += 1
    for c in stuff:
        region = (semantic == c) & (ids == 0)
        if np.count_nonzero(region) >= min_stuff_area:
            classes[region] = c
    return classes, ids


def instances_from_detections(detections: dict, shape, score_threshold: float = 0.5,
                              mask_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Things only: ``(classes, ids)`` from detections, 0 / 0 where no detection is (no stuff)."""
    classes, ids = panoptic_merge(np.zeros(shape, np.int64), detections,
                                  things=set(int(v) for v in _numpy(detections["labels"])), stuff=[],
                                  score_threshold=score_threshold, mask_threshold=mask_threshold, void=0)
    return classes, ids


def colour_panoptic(image, classes, ids, palette, void: int = 255, alpha: float = 0.6,
                    outline: bool = True) -> np.ndarray:
    """An overlay where stuff takes its class colour and every instance its own colour.

    Each instance's colour is its class colour shifted by a hue step per instance id, so two
    touching circles differ and a circle still looks like a circle's colour; instance outlines
    are drawn white. Returns uint8 (H, W, 3).
    """
    image = np.asarray(image, np.float32)
    classes, ids = _numpy(classes), _numpy(ids)
    palette = np.asarray(palette, np.float32)
    colours = np.zeros(image.shape, np.float32)
    known = classes != void
    colours[known] = palette[np.clip(classes[known], 0, len(palette) - 1)]
    rng = np.random.default_rng(0)
    for i in np.unique(ids[ids > 0]):
        region = ids == i
        base = palette[int(np.bincount(classes[region]).argmax()) % len(palette)]
        shift = rng.uniform(-90, 90, 3)
        colours[region] = np.clip(base + shift, 0, 255)
    out = image.copy()
    out[known] = (1 - alpha) * image[known] + alpha * colours[known]
    if outline:
        edge = np.zeros(ids.shape, bool)
        edge[:-1] |= ids[:-1] != ids[1:]
        edge[1:] |= ids[:-1] != ids[1:]
        edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
        edge[:, 1:] |= ids[:, :-1] != ids[:, 1:]
        out[edge & ((ids > 0) | np.roll(ids > 0, 1, 0) | np.roll(ids > 0, 1, 1))] = 255
    return np.clip(out, 0, 255).astype(np.uint8)
