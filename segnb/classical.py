"""Classical segmentation, scored like the deep models.

``segment(image, method, **params)`` returns a label map of segments (not yet
classes): k-means on colour or colour + position, mean-shift, SLIC superpixels
merged over their region adjacency graph, marker-based watershed on the
gradient, and Felzenszwalb's graph method. :func:`label_segments` turns
segments into classes by Hungarian matching against a ground truth, so that a
classical method and a U-Net sit in one table (:func:`score_segments`).
:func:`mrf_smooth` is ICM on a Potts MRF over a model's soft mask.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from segnb.metrics import Scores, confusion_matrix, scores_from_confusion

__all__ = ["METHODS", "compare", "segment", "label_segments", "score_segments", "mrf_smooth"]

METHODS = ("kmeans", "kmeans_xy", "meanshift", "slic", "watershed", "felzenszwalb")


def _float_image(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    a = a[..., :3]
    return a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)


def _kmeans(image, k: int, position_weight: float, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    h, w, _ = image.shape
    features = image.reshape(-1, 3)
    if position_weight > 0:
        yy, xx = np.mgrid[0:h, 0:w]
        xy = np.stack([yy.ravel() / max(h, w), xx.ravel() / max(h, w)], axis=1) * position_weight
        features = np.concatenate([features, xy], axis=1)
    model = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(features)
    return model.labels_.reshape(h, w)


def _meanshift(image, bandwidth: float | None, max_samples: int, seed: int) -> np.ndarray:
    from sklearn.cluster import MeanShift, estimate_bandwidth

    h, w, _ = image.shape
    features = image.reshape(-1, 3)
    rng = np.random.default_rng(seed)
    sample = features[rng.choice(len(features), size=min(max_samples, len(features)), replace=False)]
    bandwidth = bandwidth or max(estimate_bandwidth(sample, quantile=0.2, random_state=seed), 1e-3)
    model = MeanShift(bandwidth=bandwidth, bin_seeding=True).fit(sample)
    return model.predict(features).reshape(h, w)


def _slic(image, n_segments: int, compactness: float, merge_threshold: float | None) -> np.ndarray:
    from skimage import graph
    from skimage.segmentation import slic

    labels = slic(image, n_segments=n_segments, compactness=compactness, start_label=0)
    if merge_threshold is None:
        return labels
    rag = graph.rag_mean_color(image, labels, mode="distance")  # adjacent superpixels, colour distance
    return graph.cut_threshold(labels, rag, merge_threshold)


def _watershed(image, markers: int, compactness: float) -> np.ndarray:
    from skimage.color import rgb2gray
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    gradient = sobel(rgb2gray(image))
    # Markers: the flattest places, one per connected low-gradient region, the largest first.
    low = gradient < np.quantile(gradient, 0.3)
    labels, count = ndimage.label(low)
    if count > markers:
        sizes = ndimage.sum(low, labels, index=np.arange(1, count + 1))
        keep = np.argsort(sizes)[::-1][:markers] + 1
        labels = np.where(np.isin(labels, keep), labels, 0)
    return watershed(gradient, labels, compactness=compactness) - 1


def segment(image, method: str = "slic", seed: int = 0, **params) -> np.ndarray:
    """Segments of an image (uint8 or float RGB): an int label map (H, W), labels from 0.

    Methods and their parameters (defaults in brackets):
        ``kmeans``: ``k`` [4]; ``kmeans_xy``: ``k`` [4], ``position_weight`` [0.5];
        ``meanshift``: ``bandwidth`` [estimated], ``max_samples`` [3000];
        ``slic``: ``n_segments`` [200], ``compactness`` [10], ``merge_threshold`` [0.08 or None];
        ``watershed``: ``markers`` [30], ``compactness`` [0.001];
        ``felzenszwalb``: ``scale`` [100], ``sigma`` [0.8], ``min_size`` [20].
    """
    img = _float_image(image)
    if method == "kmeans":
        labels = _kmeans(img, params.pop("k", 4), 0.0, seed)
    elif method == "kmeans_xy":
        labels = _kmeans(img, params.pop("k", 4), params.pop("position_weight", 0.5), seed)
    elif method == "meanshift":
        labels = _meanshift(img, params.pop("bandwidth", None), params.pop("max_samples", 3000), seed)
    elif method == "slic":
        labels = _slic(img, params.pop("n_segments", 200), params.pop("compactness", 10.0),
                       params.pop("merge_threshold", 0.08))
    elif method == "watershed":
        labels = _watershed(img, params.pop("markers", 30), params.pop("compactness", 0.001))
    elif method == "felzenszwalb":
        from skimage.segmentation import felzenszwalb

        labels = felzenszwalb(img, scale=params.pop("scale", 100), sigma=params.pop("sigma", 0.8),
                              min_size=params.pop("min_size", 20))
    else:
        raise ValueError(f"Unknown method {method!r}. Choose one of {list(METHODS)}.")
    if params:
        raise TypeError(f"{method} does not take {sorted(params)}; see segnb.classical.segment's docstring.")
    _, dense = np.unique(labels, return_inverse=True)  # labels 0 .. S-1
    return dense.reshape(labels.shape)


def label_segments(segments: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Segments -> classes by Hungarian matching on pixel overlap with the ground truth.

    Segments and classes are matched one to one to maximise the overlapping pixels; a
    segment left without a partner (more segments than classes) takes the class it
    overlaps most. This is an oracle labelling: it says how good the segments could be.
    """
    segments, target = np.asarray(segments), np.asarray(target)
    n = int(segments.max()) + 1
    valid = target != ignore_index
    overlap = np.zeros((n, num_classes), np.int64)
    np.add.at(overlap, (segments[valid], target[valid]), 1)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = overlap.argmax(1)
    mapping[rows] = cols
    return mapping[segments]


def score_segments(segments: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> Scores:
    """Scores (as for a model) of segments after :func:`label_segments`."""
    pred = label_segments(segments, target, num_classes, ignore_index)
    return scores_from_confusion(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(np.asarray(target)),
                                                  num_classes, ignore_index))


def mrf_smooth(probs, beta: float = 1.0, iterations: int = 5) -> np.ndarray:
    """ICM on a Potts MRF: each pixel takes the class minimising
    ``-log p(class) + beta * (number of 4-neighbours with another class)``. Returns (H, W) labels.
    """
    p = np.asarray(probs, dtype=np.float64)
    unary = -np.log(np.clip(p, 1e-9, 1.0))  # (C, H, W)
    labels = unary.argmin(0)
    c = p.shape[0]
    for _ in range(iterations):
        onehot = np.eye(c, dtype=np.float64)[labels].transpose(2, 0, 1)  # (C, H, W)
        same = np.zeros_like(onehot)
        same[:, 1:] += onehot[:, :-1]
        same[:, :-1] += onehot[:, 1:]
        same[:, :, 1:] += onehot[:, :, :-1]
        same[:, :, :-1] += onehot[:, :, 1:]
        neighbours = np.zeros(labels.shape)
        neighbours[1:] += 1
        neighbours[:-1] += 1
        neighbours[:, 1:] += 1
        neighbours[:, :-1] += 1
        energy = unary + beta * (neighbours[None] - same)
        new = energy.argmin(0)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def compare(data, methods=METHODS, images: int = 8, split: str | None = None, model=None,
            params: dict | None = None) -> list[dict]:
    """One table: each classical method (and optionally a trained ``model``) on the same images.

    Classical segments are labelled by :func:`label_segments` (an oracle, the best those
    segments allow); the model's argmax is used as it is. Scores are dataset-level over
    the images, as for :func:`segnb.train.evaluate`.
    """
    import time

    split = split or data.eval_split
    pairs = [data[split][i] for i in range(min(images, len(data[split])))]
    rows = []
    for method in methods:
        confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.long)
        start = time.perf_counter()
        for image, target in pairs:
            segments = segment(image, method, **(params or {}).get(method, {}))
            pred = label_segments(segments, target, data.num_classes, data.ignore_index)
            confusion += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), data.num_classes,
                                          data.ignore_index)
        scores = scores_from_confusion(confusion)
        rows.append({"method": method, "miou": scores.miou, "pixel_accuracy": scores.pixel_accuracy,
                     "iou": scores.iou, "seconds_per_image": (time.perf_counter() - start) / len(pairs)})
    if model is not None:
        from segnb.data.preprocess import check_classes
        from segnb.prediction import predict

        check_classes(model, data)  # a model for other classes would have pixels dropped silently
        confusion = torch.zeros(data.num_classes, data.num_classes, dtype=torch.long)
        start = time.perf_counter()
        for image, target in pairs:
            pred = predict(model, image).masks[0]
            confusion += confusion_matrix(pred, torch.from_numpy(target), data.num_classes, data.ignore_index)
        scores = scores_from_confusion(confusion)
        name = f"{model.spec['arch']} ({model.spec['encoder']})" if hasattr(model, "spec") else "model"
        rows.append({"method": name, "miou": scores.miou, "pixel_accuracy": scores.pixel_accuracy,
                     "iou": scores.iou, "seconds_per_image": (time.perf_counter() - start) / len(pairs)})
    return rows
