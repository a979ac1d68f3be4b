"""Implement-it exercises; one job in one file: a catalogue of checkers, each beside its cases and hints.

The student writes the operator or the metric, a checker says whether it is right.

``check(name, student_fn)`` runs ``student_fn`` on a handful of small cases and compares its result
with segnb's own solution. It prints, and returns, either "correct" or the first case that went
wrong: the inputs of that case, the first position where the result differs (the value there and
the value expected there), and, where the mistake is a typical one, a hint about its cause. It never
prints a whole expected result and never the solution's code.

>>> from segnb.exercises import check, EXERCISES
>>> sorted(EXERCISES)[:3]
['attention_one_query', 'bilinear_kernel', 'bilinear_sample']

Each exercise states its signature in :data:`EXERCISES` (``describe(name)`` prints it). Inputs are
NumPy arrays (``float64`` or ``int64``); a student may return NumPy arrays, Python numbers, lists or
torch tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["EXERCISES", "CheckResult", "Exercise", "check", "describe"]


# ----------------------------------------------------------------------------- the solutions


def _transposed_conv1d(x, w, stride):
    n, k = len(x), len(w)
    out = np.zeros((n - 1) * stride + k)
    for i, value in enumerate(x):
        out[i * stride: i * stride + k] += value * w
    return out


def _conv_matrix(w, n, stride):
    k = len(w)
    rows = (n - k) // stride + 1
    m = np.zeros((rows, n))
    for r in range(rows):
        m[r, r * stride: r * stride + k] = w
    return m


def _max_unpool(values, indices, shape):
    out = np.zeros(shape)
    out.reshape(-1)[np.asarray(indices).reshape(-1)] = np.asarray(values).reshape(-1)
    return out


def _bilinear_kernel(factor):
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    t = np.arange(size)
    one_d = 1 - np.abs(t - centre) / factor
    return np.outer(one_d, one_d)


def _confusion(truth, pred, num_classes, void):
    keep = truth != void
    return np.bincount(num_classes * truth[keep] + pred[keep], minlength=num_classes**2).reshape(num_classes, -1)


def _iou_miou(truth, pred, num_classes, void):
    c = _confusion(truth, pred, num_classes, void).astype(float)
    tp = np.diag(c)
    union = c.sum(0) + c.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return iou, float(np.nanmean(iou))


def _dice(truth, pred):
    a, b = truth.astype(bool), pred.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _attention_one_query(q, keys, values):
    scores = keys @ q / np.sqrt(len(q))
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()
    return weights @ values, weights


def _bilinear_sample(feature, y, x):
    h, w = feature.shape
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    dy, dx = y - y0, x - x0
    return float((1 - dy) * (1 - dx) * feature[y0, x0] + (1 - dy) * dx * feature[y0, x1]
                 + dy * (1 - dx) * feature[y1, x0] + dy * dx * feature[y1, x1])


def _pq_pair(pred, truth):
    a, b = pred.astype(bool), truth.astype(bool)
    iou = (a & b).sum() / max((a | b).sum(), 1)
    if iou > 0.5:  # a match: one true positive
        return float(iou), float(iou), 1.0
    return 0.0, 0.0, 0.0  # one false positive and one false negative: RQ = 0 / (0 + 1/2 + 1/2)


def _potts_energy(labels, probs, beta):
    data_cost = -np.log(np.take_along_axis(probs, labels[None], 0)[0]).sum()
    pairs = (labels[1:] != labels[:-1]).sum() + (labels[:, 1:] != labels[:, :-1]).sum()
    return float(data_cost + beta * pairs)


def _center_crop(skip, size):
    h, w = skip.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return skip[..., top: top + size[0], left: left + size[1]]


# ----------------------------------------------------------------------------- the cases


def _rng(seed):
    return np.random.default_rng(seed)


def _cases_transposed_conv():
    r = _rng(1)
    return [((np.array([1.0, 2.0]), np.array([1.0, 1.0, 1.0]), 2), "two inputs, a box kernel"),
            ((np.array([3.0, -1.0, 2.0]), np.array([1.0, 2.0, 3.0]), 1), "stride 1"),
            ((r.normal(size=4), r.normal(size=3), 2), "random, kernel 3, stride 2"),
            ((r.normal(size=5), r.normal(size=4), 3), "random, kernel 4, stride 3"),
            ((r.normal(size=3), r.normal(size=2), 2), "kernel 2, stride 2: no overlap")]


def _cases_conv_matrix():
    r = _rng(2)
    return [((np.array([1.0, 2.0, 3.0]), 5, 1), "kernel 3 on 5 inputs, stride 1"),
            ((np.array([1.0, 2.0, 3.0]), 5, 2), "kernel 3 on 5 inputs, stride 2"),
            ((r.normal(size=4), 10, 2), "random kernel 4 on 10 inputs, stride 2"),
            ((r.normal(size=2), 6, 3), "random kernel 2 on 6 inputs, stride 3")]


def _pool_case(seed, h, w):
    import torch
    import torch.nn.functional as F

    r = _rng(seed)
    source = torch.tensor(r.permutation(h * w).reshape(1, 1, h, w), dtype=torch.float64)
    pooled, idx = F.max_pool2d(source, 2, return_indices=True)
    return (pooled[0, 0].numpy(), idx[0, 0].numpy().astype(np.int64), (h, w))


def _cases_max_unpool():
    return [(_pool_case(3, 4, 4), "4x4 pooled to 2x2"), (_pool_case(4, 6, 4), "6x4 pooled to 3x2"),
            (_pool_case(5, 8, 8), "8x8 pooled to 4x4")]


def _cases_bilinear_kernel():
    return [((2,), "factor 2"), ((3,), "factor 3 (odd)"), ((4,), "factor 4"), ((8,), "factor 8")]


def _label_case(seed, shape, k, void_share):
    r = _rng(seed)
    truth = r.integers(0, k, size=shape)
    pred = np.where(r.random(shape) < 0.6, truth, r.integers(0, k, size=shape))
    truth = np.where(r.random(shape) < void_share, 255, truth)
    pred = np.where(truth == 255, r.integers(0, k, size=shape), pred)  # void pixels still get a prediction
    return truth.astype(np.int64), pred.astype(np.int64)


def _cases_miou():
    cases = []
    truth, pred = _label_case(6, (6, 6), 3, 0.0)
    cases.append(((truth, pred, 3, 255), "3 classes, no void"))
    truth, pred = _label_case(7, (8, 8), 3, 0.25)
    cases.append(((truth, pred, 3, 255), "3 classes, a quarter void"))
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 255, 255], [0, 0, 0, 0]])
    pred = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [2, 2, 2, 2], [0, 0, 0, 0]])
    cases.append(((truth, pred, 3, 255), "class 2 absent from the truth, predicted only on void"))
    truth, pred = _label_case(8, (10, 10), 4, 0.1)
    truth[truth == 3] = 1
    pred[pred == 3] = 2  # class 3 appears nowhere
    cases.append(((truth, pred, 4, 255), "4 classes, class 3 neither true nor predicted"))
    return cases


def _cases_dice():
    a = np.zeros((6, 6), int)
    a[1:4, 1:4] = 1
    b = np.zeros((6, 6), int)
    b[2:5, 2:5] = 1
    r = _rng(9)
    return [((a, b), "two shifted squares"), ((a, a.copy()), "identical masks"),
            ((a, np.zeros_like(a)), "empty prediction"),
            ((np.zeros_like(a), np.zeros_like(a)), "both masks empty"),
            (((r.random((8, 8)) < 0.4).astype(int), (r.random((8, 8)) < 0.5).astype(int)), "random masks")]


def _cases_attention():
    r = _rng(10)
    return [((np.array([1.0, 0.0]), np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
              np.array([[1.0], [2.0], [3.0]])), "d=2, three keys"),
            ((r.normal(size=4), r.normal(size=(5, 4)) * 3, r.normal(size=(5, 3))), "d=4, five keys"),
            ((r.normal(size=16), r.normal(size=(7, 16)) * 2, r.normal(size=(7, 2))), "d=16, seven keys")]


def _cases_bilinear_sample():
    f = np.arange(12, dtype=float).reshape(3, 4) ** 1.5
    r = _rng(11)
    g = r.normal(size=(5, 5))
    return [((f, 1.0, 2.0), "on a pixel centre"), ((f, 0.5, 1.25), "between four pixels"),
            ((f, 1.75, 0.2), "closer to the lower row"), ((g, 3.3, 0.6), "random map"),
            ((g, 4.0, 4.0), "the last pixel")]


def _cases_pq_pair():
    def square(top, left, side, shape=(10, 10)):
        m = np.zeros(shape, int)
        m[top: top + side, left: left + side] = 1
        return m

    return [((square(2, 2, 4), square(2, 2, 4)), "identical segments"),
            ((square(2, 2, 4), square(2, 3, 4)), "shifted by one pixel"),
            ((square(0, 0, 4), square(0, 2, 4)), "IoU exactly 1/3"),
            ((square(0, 0, 6), square(0, 0, 3, (10, 10)) | square(0, 3, 3)), "IoU exactly 1/2: no match"),
            ((square(1, 1, 5), square(1, 1, 4)), "IoU 16/25")]


def _cases_center_crop():
    r = _rng(12)
    return [((r.normal(size=(2, 8, 8)), (4, 4)), "8x8 to 4x4"),
            ((r.normal(size=(1, 9, 7)), (4, 4)), "odd differences: 9x7 to 4x4"),
            ((r.normal(size=(3, 64, 64)), (56, 56)), "the paper's 64 -> 56"),
            ((r.normal(size=(1, 5, 5)), (5, 5)), "nothing to crop")]


def _cases_potts():
    def soft(seed, k, h, w):
        p = _rng(seed).random((k, h, w)) + 0.05
        return p / p.sum(0)

    r = _rng(13)
    labels = np.array([[0, 0, 1], [0, 1, 1]])
    return [((labels, soft(14, 2, 2, 3), 0.0), "beta 0: the data cost alone"),
            ((labels, soft(15, 2, 2, 3), 1.0), "a 2x3 labelling, beta 1"),
            ((r.integers(0, 3, (5, 6)), soft(16, 3, 5, 6), 0.5), "random 5x6, three classes, beta 0.5"),
            ((np.zeros((4, 4), int), soft(17, 2, 4, 4), 2.0), "one class everywhere: no differing pairs")]


# ----------------------------------------------------------------------------- typical mistakes


def _mistakes_transposed_conv():
    def no_accumulate(x, w, stride):  # overwrites where copies overlap
        n, k = len(x), len(w)
        out = np.zeros((n - 1) * stride + k)
        for i, value in enumerate(x):
            out[i * stride: i * stride + k] = value * w
        return out

    def gather(x, w, stride):  # a strided convolution's loop, not its transpose
        return np.convolve(np.repeat(x, stride), w[::-1], mode="full")[: (len(x) - 1) * stride + len(w)]

    return [(no_accumulate, "Where two copies of the kernel overlap the output must be their sum: use `+=`, "
                            "not `=`."),
            (gather, "Each input value scales a whole copy of the kernel, placed `stride` samples after the "
                     "previous one (a scatter), rather than each output reading a window of inputs.")]


def _mistakes_conv_matrix():
    def flipped(w, n, stride):
        return _conv_matrix(np.asarray(w)[::-1], n, stride)

    def transposed(w, n, stride):
        return _conv_matrix(w, n, stride).T

    return [(flipped, "Deep-learning 'convolution' is a correlation: the kernel is not flipped, row r holds "
                      "w[0], w[1], ... from column r*stride on."),
            (transposed, "Return the convolution's matrix, one row per output (shape (outputs, n)); its "
                         "transpose is the transposed convolution.")]


def _mistakes_max_unpool():
    def row_major_swap(values, indices, shape):
        out = np.zeros(shape)
        idx = np.asarray(indices).reshape(-1)
        rows, cols = idx % shape[0], idx // shape[0]
        out[rows, cols] = np.asarray(values).reshape(-1)
        return out

    def top_left(values, indices, shape):
        out = np.zeros(shape)
        out[::2, ::2] = values
        return out

    return [(row_major_swap, "The indices are flat and row-major: row = index // width, column = index % width."),
            (top_left, "That is bed-of-nails unpooling; max-unpooling puts each value where the index says the "
                       "maximum was.")]


def _mistakes_bilinear_kernel():
    def centred_wrong(factor):
        size = 2 * factor - factor % 2
        t = np.arange(size)
        one_d = 1 - np.abs(t - size // 2) / factor
        return np.outer(one_d, one_d)

    def not_normalised(factor):
        size = 2 * factor - factor % 2
        centre = factor - 1 if size % 2 == 1 else factor - 0.5
        one_d = factor - np.abs(np.arange(size) - centre)
        return np.outer(one_d, one_d)

    return [(centred_wrong, "The centre of an even-sized kernel lies between two taps (at factor - 0.5), "
                            "so the kernel is symmetric."),
            (not_normalised, "Divide the distance by the factor: a tap one output pixel from the centre gets "
                             "weight 1 - 1/factor, and the 1-D weights lie in (0, 1].")]


def _mistakes_miou():
    def void_counted(truth, pred, num_classes, void):
        t = np.where(truth == void, 0, truth)
        return _iou_miou(t, pred, num_classes, -1)

    def absent_as_zero(truth, pred, num_classes, void):
        iou, _ = _iou_miou(truth, pred, num_classes, void)
        iou = np.nan_to_num(iou, nan=0.0)
        return iou, float(iou.mean())

    def pixel_accuracy(truth, pred, num_classes, void):
        c = _confusion(truth, pred, num_classes, void).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(c.sum(1) > 0, np.diag(c) / c.sum(1), np.nan)
        return acc, float(np.nanmean(acc))

    return [(void_counted, "Void pixels must be left out entirely: drop them before counting, in the truth and "
                           "in the prediction."),
            (absent_as_zero, "A class with an empty union (neither true nor predicted) has no IoU: give it NaN "
                             "and leave it out of the mean (np.nanmean)."),
            (pixel_accuracy, "IoU divides the true positives by the union, TP + FP + FN, not by the class's true "
                             "pixels (that is per-class accuracy).")]


def _mistakes_dice():
    def iou(truth, pred):
        a, b = truth.astype(bool), pred.astype(bool)
        union = (a | b).sum()
        return 1.0 if union == 0 else float((a & b).sum() / union)

    def no_two(truth, pred):
        a, b = truth.astype(bool), pred.astype(bool)
        return float((a & b).sum() / max(a.sum() + b.sum(), 1))

    def nan_when_empty(truth, pred):
        a, b = truth.astype(bool), pred.astype(bool)
        total = a.sum() + b.sum()
        return float("nan") if total == 0 else float(2 * (a & b).sum() / total)

    return [(nan_when_empty, "When both masks are empty they agree perfectly: return 1.0 there instead of "
                             "dividing 0 by 0."),
            (iou, "That is IoU. Dice counts the overlap twice over the sum of the two areas: 2|A∩B| / (|A| + |B|)."),
            (no_two, "Without the factor 2, identical masks score 0.5: Dice is 2|A∩B| / (|A| + |B|).")]


def _mistakes_attention():
    def unscaled(q, keys, values):
        s = keys @ q
        w = np.exp(s - s.max())
        w /= w.sum()
        return w @ values, w

    def no_softmax(q, keys, values):
        s = keys @ q / np.sqrt(len(q))
        w = s / s.sum()
        return w @ values, w

    return [(unscaled, "Scale the scores by 1/sqrt(d) (d = the query's length) before the softmax."),
            (no_softmax, "The weights come from a softmax of the scores: exponentiate, then normalise to sum 1 "
                         "(they must all be positive).")]


def _mistakes_bilinear_sample():
    def nearest(feature, y, x):
        h, w = feature.shape
        return float(feature[min(int(round(y)), h - 1), min(int(round(x)), w - 1)])

    def swapped(feature, y, x):
        h, w = feature.shape
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
        dy, dx = y - y0, x - x0
        return float(dy * dx * feature[y0, x0] + dy * (1 - dx) * feature[y0, x1]
                     + (1 - dy) * dx * feature[y1, x0] + (1 - dy) * (1 - dx) * feature[y1, x1])

    return [(nearest, "Rounding to the nearest pixel is what RoIPool's quantisation does; RoIAlign weighs the four "
                      "neighbours by their distance."),
            (swapped, "A neighbour's weight grows as the point gets closer to it: (1 - dy) * (1 - dx) for the "
                      "top-left one, with dy = y - floor(y).")]


def _mistakes_pq_pair():
    def always_iou(pred, truth):
        a, b = pred.astype(bool), truth.astype(bool)
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        return iou, iou, 1.0

    def at_least_half(pred, truth):
        a, b = pred.astype(bool), truth.astype(bool)
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        return (iou, iou, 1.0) if iou >= 0.5 else (0.0, 0.0, 0.0)

    return [(at_least_half, "The matching rule is IoU strictly greater than 0.5 (that makes matches unique); "
                            "exactly 0.5 is no match."),
            (always_iou, "Two segments match only when their IoU is above 0.5; otherwise the pair is a false "
                         "positive and a false negative, and PQ is 0.")]


def _mistakes_potts():
    def both_ways(labels, probs, beta):
        data_cost = -np.log(np.take_along_axis(probs, labels[None], 0)[0]).sum()
        pairs = (labels[1:] != labels[:-1]).sum() + (labels[:, 1:] != labels[:, :-1]).sum()
        return float(data_cost + 2 * beta * pairs)

    def diagonals(labels, probs, beta):
        extra = (labels[1:, 1:] != labels[:-1, :-1]).sum() + (labels[1:, :-1] != labels[:-1, 1:]).sum()
        return _potts_energy(labels, probs, beta) + beta * float(extra)

    def no_log(labels, probs, beta):
        data_cost = -np.take_along_axis(probs, labels[None], 0)[0].sum()
        pairs = (labels[1:] != labels[:-1]).sum() + (labels[:, 1:] != labels[:, :-1]).sum()
        return float(data_cost + beta * pairs)

    return [(both_ways, "Count each pair of neighbours once: compare each pixel with the one below and the one to "
                        "its right only."),
            (diagonals, "The Potts model here uses the 4 neighbours (up, down, left, right), not the diagonals."),
            (no_log, "The data cost of a pixel is minus the log of the probability of its label, not minus the "
                     "probability.")]


def _mistakes_center_crop():
    def from_corner(skip, size):
        return skip[..., : size[0], : size[1]]

    def round_up(skip, size):
        h, w = skip.shape[-2:]
        top, left = (h - size[0] + 1) // 2, (w - size[1] + 1) // 2
        return skip[..., top: top + size[0], left: left + size[1]]

    return [(from_corner, "Crop the centre, not the top-left corner: the encoder map has lost the same border on "
                          "every side."),
            (round_up, "When the difference is odd, put the extra row or column at the bottom and right: "
                       "top = (H - h) // 2.")]


# ----------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Exercise:
    """One implement-it exercise: its signature, the solution, the cases and the typical mistakes."""

    name: str
    signature: str
    task: str
    solution: Callable
    cases: Callable[[], list]
    mistakes: Callable[[], list] = field(default=lambda: [])
    outputs: Sequence[str] = ("result",)
    atol: float = 1e-6


EXERCISES: dict[str, Exercise] = {e.name: e for e in [
    Exercise("transposed_conv1d", "transposed_conv1d(x, w, stride) -> array of length (len(x)-1)*stride + len(w)",
             "1-D transposed convolution as a scatter: each input value adds a scaled copy of the kernel to the "
             "output, stride samples after the previous copy (no padding).",
             _transposed_conv1d, _cases_transposed_conv, _mistakes_transposed_conv),
    Exercise("conv_matrix", "conv_matrix(w, n, stride) -> array (outputs, n)",
             "The matrix M of the 1-D strided convolution (a correlation, no padding) of n inputs with kernel w: "
             "conv(x) = M @ x, and the transposed convolution is M.T @ y.",
             _conv_matrix, _cases_conv_matrix, _mistakes_conv_matrix),
    Exercise("max_unpool", "max_unpool(values, indices, shape) -> array of the given shape",
             "Max-unpooling: put each pooled value back at the flat (row-major) index its max-pool recorded; "
             "zeros elsewhere.", _max_unpool, _cases_max_unpool, _mistakes_max_unpool),
    Exercise("bilinear_kernel", "bilinear_kernel(factor) -> array (2*factor - factor % 2, same)",
             "The kernel of a transposed convolution with stride `factor` that performs bilinear interpolation "
             "(FCN's initialisation): the outer product of a 1-D triangle of half-width `factor`.",
             _bilinear_kernel, _cases_bilinear_kernel, _mistakes_bilinear_kernel),
    Exercise("miou", "miou(truth, pred, num_classes, void) -> (iou per class with NaN where undefined, mIoU)",
             "Per-class IoU and mIoU through a confusion matrix: leave void pixels out, IoU = TP / (TP + FP + FN), "
             "NaN for a class with an empty union, mIoU = the mean over the defined classes.",
             _iou_miou, _cases_miou, _mistakes_miou, outputs=("iou per class", "mIoU")),
    Exercise("dice", "dice(truth, pred) -> float", "Dice of two binary masks, 2|A∩B| / (|A| + |B|); 1.0 when both "
             "are empty.", _dice, _cases_dice, _mistakes_dice),
    Exercise("attention_one_query", "attention_one_query(q, keys, values) -> (output, weights)",
             "Scaled dot-product attention of one query q (d,) over keys (n, d) and values (n, m): weights = "
             "softmax(keys @ q / sqrt(d)), output = weights @ values.",
             _attention_one_query, _cases_attention, _mistakes_attention, outputs=("output", "weights")),
    Exercise("bilinear_sample", "bilinear_sample(feature, y, x) -> float",
             "RoIAlign's sample: the bilinear interpolation of a 2-D map at a real-valued point (y, x), with "
             "feature[i, j] at (i, j), inside the map.",
             _bilinear_sample, _cases_bilinear_sample, _mistakes_bilinear_sample),
    Exercise("pq_pair", "pq_pair(pred, truth) -> (PQ, SQ, RQ)",
             "Panoptic quality of one predicted and one true segment of the same class: a match when IoU > 0.5 "
             "(TP), otherwise one FP and one FN; SQ = mean IoU of the matches (0 without any), RQ = "
             "TP / (TP + FP/2 + FN/2), PQ = SQ * RQ.",
             _pq_pair, _cases_pq_pair, _mistakes_pq_pair, outputs=("PQ", "SQ", "RQ")),
    Exercise("potts_energy", "potts_energy(labels, probs, beta) -> float",
             "Energy of a labelling (H, W) under a Potts model: the sum over pixels of -log(probs[label, y, x]) "
             "(probs is (K, H, W)) plus beta for every pair of 4-neighbours with different labels, each pair "
             "counted once.", _potts_energy, _cases_potts, _mistakes_potts),
    Exercise("center_crop", "center_crop(skip, size) -> array (..., size[0], size[1])",
             "U-Net's crop of an encoder map (..., H, W) to the decoder's smaller (h, w): the centre, with "
             "top = (H - h) // 2 and left = (W - w) // 2.",
             _center_crop, _cases_center_crop, _mistakes_center_crop),
]}


# ----------------------------------------------------------------------------- checking


@dataclass
class CheckResult:
    """What :func:`check` found: ``passed`` and the message it printed."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return self.message


def _as_array(value):
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=float)


def _as_outputs(value, n: int) -> list:
    if n == 1:
        return [value]
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise TypeError(f"return {n} values as a tuple")
    return list(value)


def _short(value) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 16:
            return np.array2string(value, precision=3, suppress_small=True, separator=", ").replace("\n", "")
        return f"array of shape {value.shape}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


def _difference(got, expected, atol: float) -> str | None:
    """None when equal; otherwise where and how ``got`` first differs (one value, never the whole result)."""
    try:
        g = _as_array(got)
    except (TypeError, ValueError) as error:
        return f"could not read the result as numbers ({error})"
    e = _as_array(expected)
    if g.shape != e.shape:
        return f"shape {g.shape}, expected shape {e.shape}"
    same = np.isclose(g, e, atol=atol, rtol=1e-6, equal_nan=True)
    if same.all():
        return None
    where = tuple(int(i) for i in np.argwhere(~same)[0])
    at = f" at index {where}" if where else ""
    return f"{g[where]:.6g}{at}, expected {e[where]:.6g} there"


def _typical_mistake(exercise: Exercise, args, got) -> str | None:
    """The hint of the first typical mistake whose result equals the student's on this case."""
    for mistake, hint in exercise.mistakes():
        try:
            theirs = _as_outputs(mistake(*args), len(exercise.outputs))
        except Exception:  # a mistake that cannot run on this case does not match it
            continue
        if all(_difference(g, t, exercise.atol) is None for g, t in zip(got, theirs, strict=True)):
            return hint
    return None


def describe(name: str) -> str:
    """The exercise's signature and task, as a string."""
    exercise = _exercise(name)
    return f"{exercise.signature}\n{exercise.task}"


def _exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"No exercise {name!r}. The exercises: {', '.join(sorted(EXERCISES))}.")
    return EXERCISES[name]


def check(name: str, student_fn: Callable, *, quiet: bool = False) -> CheckResult:
    """Run ``student_fn`` on exercise ``name``'s cases; print and return whether it is right.

    On the first failing case it says which case, shows that case's inputs, the first position where
    the result differs (the value there against the one expected there) and, when the result is a
    typical mistake, a hint. It never prints a whole expected result.
    """
    exercise = _exercise(name)
    cases = exercise.cases()
    outputs = exercise.outputs
    for number, (args, label) in enumerate(cases, start=1):
        expected = _as_outputs(exercise.solution(*[a.copy() if isinstance(a, np.ndarray) else a for a in args]),
                               len(outputs))
        head = f"✗ {name}: wrong on case {number} of {len(cases)} ({label}).\n  inputs: " + \
            ", ".join(_short(a) for a in args)
        try:
            result = student_fn(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
            got = _as_outputs(result, len(outputs))
        except Exception as error:  # the student's code: any error is reported, not raised
            message = f"{head}\n  your function raised {type(error).__name__}: {error}"
            return _report(name, False, message, quiet)
        for output, g, e in zip(outputs, got, expected, strict=True):
            problem = _difference(g, e, exercise.atol)
            if problem is not None:
                what = f"your {output}" if len(outputs) > 1 else "your result"
                message = f"{head}\n  {what}: {problem}"
                hint = _typical_mistake(exercise, args, got)
                if hint:
                    message += f"\n  hint: {hint}"
                return _report(name, False, message, quiet)
    return _report(name, True, f"✓ {name}: correct on all {len(cases)} cases.", quiet)


def _report(name: str, passed: bool, message: str, quiet: bool) -> CheckResult:
    if not quiet:
        print(message)
    return CheckResult(name, passed, message)
