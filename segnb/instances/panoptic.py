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

from segnb.errors import InputError

__all__ = ["panoptic_merge", "colour_panoptic", "instances_from_detections", "label_map"]


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def class_ids(values, what: str) -> list[int]:
    """``things`` or ``stuff`` as a list of class ids (whole numbers); an :class:`InputError` otherwise."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InputError(f"{what} must be a list of class ids (ints), e.g. [3, 4]; got {values!r}.")
    out = []
    for value in values:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number != value or number < 0:
            raise InputError(f"{what} must be a list of class ids (whole numbers >= 0); {value!r} is not one.")
        out.append(number)
    return out


def label_map(a, what: str, batched: bool = False) -> np.ndarray:
    """A class or instance map as int64: ``(H, W)`` (or ``(N, H, W)`` with ``batched``) of
    non-negative whole numbers; bool is 0/1. Anything else is an :class:`InputError` naming ``what``."""
    array = _numpy(a)
    shapes = "(H, W) or (N, H, W)" if batched else "(H, W)"
    if array.ndim not in ((2, 3) if batched else (2,)) or array.size == 0:
        raise InputError(f"{what} must be a non-empty {shapes} map of ids; got shape {array.shape}.")
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not (array == np.round(array)).all():
            raise InputError(f"{what} must hold whole-number ids; it holds NaN, inf or fractions "
                             "(class scores? take .argmax first).")
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{what} must be an integer map of ids; got dtype {array.dtype}.")
    if array.min() < 0:
        raise InputError(f"{what} holds negative ids ({int(array.min())}); ids are 0 or more.")
    return array.astype(np.int64)


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
    things, stuff = set(class_ids(things, "things")), set(class_ids(stuff, "stuff"))
    if not isinstance(detections, dict):  # segnb.predict's Instances: its soft masks are the probabilities
        detections = {"masks": detections.soft, "scores": detections.scores, "labels": detections.labels}
    logits = _numpy(semantic)
    if logits.ndim == 3 and np.issubdtype(logits.dtype, np.floating) and logits.size:
        if not np.isfinite(logits).all():
            raise InputError("the semantic logits (K, H, W) hold NaN or infinite values.")
        semantic = logits.argmax(0)
    semantic = label_map(semantic, "the semantic map (class ids (H, W), or float logits (K, H, W))")
    h, w = semantic.shape
    classes = np.full((h, w), void, np.int64)
    ids = np.zeros((h, w), np.int64)
    try:
        scores, labels = _numpy(detections["scores"]).reshape(-1), _numpy(detections["labels"]).reshape(-1)
        masks = _numpy(detections["masks"])
    except (KeyError, TypeError) as err:
        raise InputError(f"detections need masks, scores and labels (Mask R-CNN's output for one image, or "
                         f"segnb.predict's Instances): {err!r}.") from None
    n = len(scores)
    if len(labels) != n:
        raise InputError(f"detections have {n} scores but {len(labels)} labels.")
    if not np.isfinite(scores.astype(np.float64)).all():
        raise InputError("detection scores hold NaN or infinite values.")
    if n == 0:
        masks = np.zeros((0, h, w))
    else:
        if masks.ndim == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.ndim != 3 or masks.shape[0] != n:
            raise InputError(f"detection masks must be (N, 1, H, W) or (N, H, W) with N = {n} detections; got "
                             f"{masks.shape}.")
        if masks.shape[1:] != (h, w):
            raise InputError(
                f"the detection masks are {masks.shape[1]}x{masks.shape[2]} but the semantic map is {h}x{w} "
                "(height x width): they must come from the same image at the same size. Predict both "
                "on the same image, or resize one to the other first (masks bilinearly, classes nearest).")
        if masks.dtype != bool and not np.isfinite(masks.astype(np.float64)).all():
            raise InputError("detection masks hold NaN or infinite values.")
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
