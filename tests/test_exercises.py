"""The implement-it exercises' checkers: a right solution passes, typical wrong ones fail with a useful message.

The right solutions here are written independently of segnb.exercises (mostly with torch's own
operators), so a mistake in the checker's solution fails these tests.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segnb.exercises import EXERCISES, check, describe

# ----------------------------------------------------------------------------- right solutions


def transposed_conv1d(x, w, stride):
    out = F.conv_transpose1d(torch.tensor(x)[None, None], torch.tensor(w)[None, None], stride=stride)
    return out[0, 0].numpy()


def conv_matrix(w, n, stride):
    eye = torch.eye(n, dtype=torch.float64)[:, None, :]  # n one-hot inputs
    return F.conv1d(eye, torch.tensor(w)[None, None], stride=stride)[:, 0, :].T.numpy()


def max_unpool(values, indices, shape):
    return F.max_unpool2d(torch.tensor(values)[None, None], torch.tensor(indices)[None, None], 2,
                          output_size=shape)[0, 0].numpy()


def bilinear_kernel(factor):
    size = 2 * factor - factor % 2
    c = (size - 1) / 2
    t = torch.arange(size, dtype=torch.float64)
    one = 1 - (t - c).abs() / factor
    return torch.outer(one, one)  # a torch tensor: the checker accepts it


def miou(truth, pred, num_classes, void):
    keep = truth != void
    ious = []
    for k in range(num_classes):
        a, b = (truth == k) & keep, (pred == k) & keep
        union = (a | b).sum()
        ious.append((a & b).sum() / union if union else float("nan"))
    ious = np.array(ious, dtype=float)
    return ious, np.nanmean(ious)


def dice(truth, pred):
    a, b = truth > 0, pred > 0
    return 1.0 if not (a.any() or b.any()) else 2 * (a & b).sum() / (a.sum() + b.sum())


def attention_one_query(q, keys, values):
    w = torch.softmax(torch.tensor(keys) @ torch.tensor(q) / len(q) ** 0.5, dim=0)
    return (w @ torch.tensor(values)).numpy(), w.numpy()


def bilinear_sample(feature, y, x):
    # grid_sample with align_corners=True maps -1..1 onto the first..last pixel centre
    h, w = feature.shape
    grid = torch.tensor([[[[2 * x / (w - 1) - 1, 2 * y / (h - 1) - 1]]]], dtype=torch.float64)
    return float(F.grid_sample(torch.tensor(feature)[None, None], grid, align_corners=True)[0, 0, 0, 0])


def pq_pair(pred, truth):
    inter, union = np.logical_and(pred, truth).sum(), np.logical_or(pred, truth).sum()
    iou = inter / union
    tp = iou > 0.5
    sq = iou if tp else 0.0
    rq = tp / (tp + 0.5 * (not tp) + 0.5 * (not tp))
    return sq * rq, sq, rq


def center_crop(skip, size):
    h, w = skip.shape[-2:]
    dy, dx = h - size[0], w - size[1]
    return skip[..., dy // 2: h - (dy - dy // 2), dx // 2: w - (dx - dx // 2)]


def potts_energy(labels, probs, beta):
    h, w = labels.shape
    energy = 0.0
    for y in range(h):
        for x in range(w):
            energy -= np.log(probs[labels[y, x], y, x])
            if y + 1 < h and labels[y + 1, x] != labels[y, x]:
                energy += beta
            if x + 1 < w and labels[y, x + 1] != labels[y, x]:
                energy += beta
    return energy


RIGHT = {"potts_energy": potts_energy, "transposed_conv1d": transposed_conv1d, "conv_matrix": conv_matrix, "max_unpool": max_unpool,
         "bilinear_kernel": bilinear_kernel, "miou": miou, "dice": dice,
         "attention_one_query": attention_one_query, "bilinear_sample": bilinear_sample, "pq_pair": pq_pair,
         "center_crop": center_crop}

# ----------------------------------------------------------------------------- typical wrong ones
# (name, wrong function, words the message must contain)


def _tc_overwrite(x, w, stride):
    out = np.zeros((len(x) - 1) * stride + len(w))
    for i, v in enumerate(x):
        out[i * stride: i * stride + len(w)] = v * w
    return out


def _tc_ignores_stride(x, w, stride):
    return np.convolve(x, w)


def _tc_flipped(x, w, stride):
    return transposed_conv1d(x, w[::-1].copy(), stride)


def _cm_flipped(w, n, stride):
    return conv_matrix(w[::-1].copy(), n, stride)


def _cm_transposed(w, n, stride):
    return conv_matrix(w, n, stride).T


def _cm_no_stride(w, n, stride):
    return conv_matrix(w, n, 1)


def _mu_transposed(values, indices, shape):
    out = np.zeros(shape)
    idx = indices.reshape(-1)
    out[idx % shape[0], idx // shape[0]] = values.reshape(-1)
    return out


def _mu_bed_of_nails(values, indices, shape):
    out = np.zeros(shape)
    out[::2, ::2] = values
    return out


def _mu_nearest(values, indices, shape):
    return np.kron(values, np.ones((2, 2)))


def _bk_off_centre(factor):
    size = 2 * factor - factor % 2
    one = 1 - np.abs(np.arange(size) - size // 2) / factor
    return np.outer(one, one)


def _bk_unnormalised(factor):
    size = 2 * factor - factor % 2
    one = factor - np.abs(np.arange(size) - (size - 1) / 2)
    return np.outer(one, one)


def _bk_box(factor):
    return np.ones((2 * factor - factor % 2,) * 2) / factor**2


def _mi_void_as_class0(truth, pred, num_classes, void):
    return miou(np.where(truth == void, 0, truth), pred, num_classes, -1)


def _mi_absent_zero(truth, pred, num_classes, void):
    ious, _ = miou(truth, pred, num_classes, void)
    ious = np.nan_to_num(ious)
    return ious, ious.mean()


def _mi_accuracy(truth, pred, num_classes, void):
    keep = truth != void
    acc = np.array([((pred == k) & (truth == k) & keep).sum() / max(((truth == k) & keep).sum(), 1)
                    if ((truth == k) & keep).any() else np.nan for k in range(num_classes)])
    return acc, np.nanmean(acc)


def _di_iou(truth, pred):
    a, b = truth > 0, pred > 0
    return 1.0 if not (a | b).any() else (a & b).sum() / (a | b).sum()


def _di_no_two(truth, pred):
    a, b = truth > 0, pred > 0
    return (a & b).sum() / max(a.sum() + b.sum(), 1)


def _di_empty_zero(truth, pred):
    a, b = truth > 0, pred > 0
    with np.errstate(invalid="ignore"):
        return 2 * (a & b).sum() / (a.sum() + b.sum())  # NaN when both are empty


def _at_unscaled(q, keys, values):
    w = torch.softmax(torch.tensor(keys) @ torch.tensor(q), dim=0)
    return (w @ torch.tensor(values)).numpy(), w.numpy()


def _at_linear(q, keys, values):
    s = keys @ q / np.sqrt(len(q))
    w = s / s.sum()
    return w @ values, w


def _at_weights_only(q, keys, values):
    _, w = attention_one_query(q, keys, values)
    return w


def _bs_nearest(feature, y, x):
    return float(feature[int(round(y)), int(round(x))])


def _bs_swapped(feature, y, x):  # each neighbour weighted by the distance to it, not by the closeness
    h, w = feature.shape
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    dy, dx = y - y0, x - x0
    return (dy * dx * feature[y0, x0] + dy * (1 - dx) * feature[y0, x1]
            + (1 - dy) * dx * feature[y1, x0] + (1 - dy) * (1 - dx) * feature[y1, x1])


def _bs_floor(feature, y, x):
    return float(feature[int(y), int(x)])


def _pq_always(pred, truth):
    iou = np.logical_and(pred, truth).sum() / np.logical_or(pred, truth).sum()
    return iou, iou, 1.0


def _pq_ge(pred, truth):
    iou = np.logical_and(pred, truth).sum() / np.logical_or(pred, truth).sum()
    return (iou, iou, 1.0) if iou >= 0.5 else (0.0, 0.0, 0.0)


def _pq_one_value(pred, truth):
    return pq_pair(pred, truth)[0]


def _cc_corner(skip, size):
    return skip[..., : size[0], : size[1]]


def _cc_round_up(skip, size):
    h, w = skip.shape[-2:]
    t, left = (h - size[0] + 1) // 2, (w - size[1] + 1) // 2
    return skip[..., t: t + size[0], left: left + size[1]]


def _cc_resize(skip, size):
    return F.interpolate(torch.tensor(skip)[None], size=tuple(size), mode="bilinear")[0].numpy()


def _po_twice(labels, probs, beta):
    return potts_energy(labels, probs, 2 * beta)


def _po_diagonals(labels, probs, beta):
    extra = (labels[1:, 1:] != labels[:-1, :-1]).sum() + (labels[1:, :-1] != labels[:-1, 1:]).sum()
    return potts_energy(labels, probs, beta) + beta * extra


def _po_likelihood(labels, probs, beta):  # the probability instead of its log
    return potts_energy(labels, np.exp(probs), beta)


WRONG = [
    ("potts_energy", _po_twice, "each pair of neighbours once"),
    ("potts_energy", _po_diagonals, "not the diagonals"),
    ("potts_energy", _po_likelihood, "minus the log"),
    ("transposed_conv1d", _tc_overwrite, "`+=`"),
    ("transposed_conv1d", _tc_ignores_stride, "shape"),
    ("transposed_conv1d", _tc_flipped, "expected"),
    ("conv_matrix", _cm_flipped, "not flipped"),
    ("conv_matrix", _cm_transposed, "one row per output"),
    ("conv_matrix", _cm_no_stride, "shape"),
    ("max_unpool", _mu_transposed, "row-major"),
    ("max_unpool", _mu_bed_of_nails, "bed-of-nails"),
    ("max_unpool", _mu_nearest, "expected"),
    ("bilinear_kernel", _bk_off_centre, "symmetric"),
    ("bilinear_kernel", _bk_unnormalised, "Divide the distance"),
    ("bilinear_kernel", _bk_box, "expected"),
    ("miou", _mi_void_as_class0, "Void pixels"),
    ("miou", _mi_absent_zero, "np.nanmean"),
    ("miou", _mi_accuracy, "TP + FP + FN"),
    ("dice", _di_iou, "That is IoU"),
    ("dice", _di_no_two, "factor 2"),
    ("dice", _di_empty_zero, "both masks are empty"),
    ("attention_one_query", _at_unscaled, "sqrt(d)"),
    ("attention_one_query", _at_linear, "softmax"),
    ("attention_one_query", _at_weights_only, "return 2 values"),
    ("bilinear_sample", _bs_nearest, "RoIPool"),
    ("bilinear_sample", _bs_swapped, "(1 - dy) * (1 - dx)"),
    ("bilinear_sample", _bs_floor, "expected"),
    ("pq_pair", _pq_always, "above 0.5"),
    ("pq_pair", _pq_ge, "strictly greater"),
    ("pq_pair", _pq_one_value, "return 3 values"),
    ("center_crop", _cc_corner, "centre"),
    ("center_crop", _cc_round_up, "(H - h) // 2"),
    ("center_crop", _cc_resize, "expected"),
]


def test_every_exercise_has_a_right_solution_and_three_wrong_ones_here():
    assert set(RIGHT) == set(EXERCISES)
    for name in EXERCISES:
        assert sum(w[0] == name for w in WRONG) >= 3, name


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_a_right_solution_passes(name, capsys):
    result = check(name, RIGHT[name])
    assert result.passed and bool(result), result.message
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("name,wrong,words", WRONG, ids=[f"{n}-{w.__name__.lstrip('_')}" for n, w, _ in WRONG])
def test_a_typical_wrong_solution_fails_with_a_useful_message(name, wrong, words, capsys):
    result = check(name, wrong)
    assert not result.passed and not bool(result)
    assert result.message.startswith(f"✗ {name}: wrong on case")
    assert "inputs:" in result.message
    assert words in result.message, result.message
    assert result.message in capsys.readouterr().out


def test_the_message_shows_one_difference_never_the_whole_answer():
    result = check("transposed_conv1d", lambda x, w, stride: np.zeros((len(x) - 1) * stride + len(w)), quiet=True)
    expected = transposed_conv1d(np.array([1.0, 2.0]), np.array([1.0, 1.0, 1.0]), 2)  # case 1
    assert "0 at index (0,), expected 1 there" in result.message
    assert np.array2string(expected, separator=", ") not in result.message


def test_an_error_in_the_student_code_is_reported_not_raised():
    def broken(truth, pred, num_classes, void):
        return np.bincount(truth.ravel())[void]

    result = check("miou", broken, quiet=True)
    assert not result.passed and "your function raised IndexError" in result.message


def test_a_result_of_the_wrong_kind_is_reported():
    result = check("dice", lambda truth, pred: "high", quiet=True)
    assert not result.passed and "could not read the result as numbers" in result.message


def test_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="transposed_conv1d"):
        check("transposed_convolution", transposed_conv1d)
    assert "sqrt(d)" in describe("attention_one_query")


def test_every_exercise_is_set_in_a_notebook_and_every_check_names_one():
    import re
    from pathlib import Path

    import nbformat

    used = {}
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            for name in re.findall(r"check\(\"(\w+)\"", cell.source):
                used.setdefault(name, set()).add((path.stem, cell.cell_type))
    assert set(used) <= set(EXERCISES), set(used) - set(EXERCISES)
    for name in EXERCISES:
        kinds = {kind for _, kind in used.get(name, ())}
        # the task (markdown, with the student's template) and the hidden answer that runs the checker
        assert kinds == {"markdown", "code"}, (name, used.get(name))
