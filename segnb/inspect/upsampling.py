"""Upsampling, looked at closely: the lectures' toy examples, transposed convolution as a matrix,
overlap counts and a checkerboard score.

- :func:`toy_upsample` applies one operator to a small input (2x2 to 4x4), as on the slides.
- :func:`conv1d_matrix` builds the matrix of a 1-D convolution; its transpose is the matrix
  of the transposed convolution (:func:`conv_transpose1d_matrix` builds that directly from
  "input gives weight for filter, sum where outputs overlap"); both agree with torch.
- :func:`overlap_map` counts how many kernel placements write each output pixel of a
  transposed convolution: uneven (1-2-4) for kernel 3 stride 2, even for kernel 4 stride 2
  (Odena, Dumoulin and Olah, Distill 2016).
- :func:`checkerboard_score` measures the spectral energy at the stride frequency of any map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from segnb.models.upsample import UPSAMPLE_KINDS, bed_of_nails

__all__ = [
    "toy_upsample", "conv1d_matrix", "conv_transpose1d_matrix", "overlap_map", "checkerboard_score",
    "decoder_activations",
]


def toy_upsample(x, kind: str, kernel: np.ndarray | None = None, kernel_size: int = 3, stride: int = 2,
                 padding: int | None = None, pool_source: np.ndarray | None = None) -> np.ndarray:
    """One operator on a small 2-D input, as drawn on the slides.

    ``kind``: ``nearest``, ``bed_of_nails``, ``max_unpool`` (positions remembered from
    ``pool_source``, the map that was max-pooled), ``bilinear``, or ``transposed``
    (``kernel`` of ones by default, so each output counts the inputs that wrote it).
    """
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))[None, None]
    if kind == "nearest":
        out = F.interpolate(t, scale_factor=stride, mode="nearest")
    elif kind == "bed_of_nails":
        out = bed_of_nails(t, stride)
    elif kind == "bilinear":
        out = F.interpolate(t, scale_factor=stride, mode="bilinear", align_corners=False)
    elif kind == "max_unpool":
        if pool_source is None:
            raise ValueError("max_unpool needs pool_source: the map whose max-pooling chose the positions.")
        source = torch.as_tensor(np.asarray(pool_source, dtype=np.float64))[None, None]
        _, where = F.max_pool2d(source, stride, stride, return_indices=True)
        if where.shape != t.shape:
            raise ValueError(f"pool_source pools to {tuple(where.shape[-2:])}, but x is {tuple(t.shape[-2:])}.")
        out = F.max_unpool2d(t, where, stride, stride, output_size=source.shape[-2:])
    elif kind == "transposed":
        k = torch.ones(kernel_size, kernel_size, dtype=torch.float64) if kernel is None else torch.as_tensor(
            np.asarray(kernel, dtype=np.float64))
        pad = (k.shape[-1] - stride) // 2 if padding is None else padding
        out = F.conv_transpose2d(t, k[None, None], stride=stride, padding=max(pad, 0))
    else:
        raise ValueError(f"kind must be nearest, bed_of_nails, max_unpool, bilinear or transposed, got {kind!r}.")
    return out[0, 0].numpy()


def conv1d_matrix(kernel, input_length: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """The matrix M with ``conv1d(x) == M @ x`` (cross-correlation, as torch computes it)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    k = len(kernel)
    out_length = (input_length + 2 * padding - k) // stride + 1
    m = np.zeros((out_length, input_length))
    for o in range(out_length):
        for j in range(k):
            i = o * stride - padding + j
            if 0 <= i < input_length:
                m[o, i] += kernel[j]
    return m


def conv_transpose1d_matrix(kernel, input_length: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """The matrix of a 1-D transposed convolution, built the way the slides explain it:
    each input value weights a copy of the kernel placed ``stride`` apart, and copies that
    overlap are summed. It equals ``conv1d_matrix(kernel, n_out, stride, padding).T``.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    k = len(kernel)
    out_length = (input_length - 1) * stride - 2 * padding + k
    m = np.zeros((out_length, input_length))
    for i in range(input_length):
        for j in range(k):
            o = i * stride - padding + j
            if 0 <= o < out_length:
                m[o, i] += kernel[j]
    return m


def overlap_map(kernel_size: int, stride: int, padding: int = 0, input_size: int | tuple[int, int] = 4) -> np.ndarray:
    """How many kernel placements of a 2-D transposed convolution write each output pixel."""
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    ones = torch.ones(1, 1, *size, dtype=torch.float64)
    kernel = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
    return F.conv_transpose2d(ones, kernel, stride=stride, padding=padding)[0, 0].numpy()


def checkerboard_score(array2d, stride: int = 2) -> float:
    """Share of a map's varying energy at the stride frequency: 0 for smooth maps, 1 for a pure checkerboard.

    The mean is removed; the 2-D power spectrum is summed at the frequencies ``k/stride``
    of the sampling rate (k = 1 .. stride-1, in either or both axes), which is where a
    pattern repeating every ``stride`` pixels puts its energy, and divided by the total.
    """
    a = np.asarray(array2d, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"checkerboard_score takes a 2-D map, got shape {a.shape}.")
    h, w = a.shape
    a = a - a.mean()
    power = np.abs(np.fft.fft2(a)) ** 2
    total = power.sum()
    if total <= 1e-12 * max(1.0, a.size):
        return 0.0
    rows = {round(k * h / stride) % h for k in range(stride)}
    cols = {round(k * w / stride) % w for k in range(stride)}
    mask = np.zeros_like(power, dtype=bool)
    for r in rows:
        for c in cols:
            if r or c:  # (0, 0) is the mean, already removed
                mask[r, c] = True
    return float(power[mask].sum() / total)


def decoder_activations(model: nn.Module, image) -> list[dict]:
    """The output of every upsampling operator in a teaching model's decoder, for one image.

    Returns per operator: its kind, the channel-mean map and its checkerboard score.
    Works on untrained models too, where transposed-convolution artifacts already show.
    The model runs through :class:`segnb.infer.Inference`; while ``fit()`` trains it, the
    hooks go on a copy of its weights.
    """
    from segnb.infer import Inference

    if not [m for m in model.modules() if type(m).__name__ == "Upsample2x"]:
        raise ValueError(f"This model has no swappable upsampling operators ({', '.join(UPSAMPLE_KINDS)}); "
                         "build a teaching model (fcn8s, segnet, unet-classic, setr-pup; an FCN with "
                         "final='stacked' to upsample all the way with the chosen operator).")
    captured = []
    with Inference(model) as run:
        ops = [m for m in run.module.modules() if type(m).__name__ == "Upsample2x"]
        handles = [op.register_forward_hook(lambda m, i, o: captured.append((m.kind, o[0].float().mean(0).cpu())))
                   for op in ops]
        try:
            run(run.batch(image))
        finally:
            for h in handles:
                h.remove()
    result = []
    for kind, mean in captured:
        mean = mean.clone().numpy()
        result.append({"kind": kind, "shape": tuple(mean.shape), "mean": mean,
                       "checkerboard": checkerboard_score(mean)})
    return result
