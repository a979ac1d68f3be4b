"""Losses for segmentation: cross-entropy (optionally class-weighted), Dice, Focal, Lovasz, CE + Dice.

Focal and Lovasz are segmentation-models-pytorch's; Dice is written here (the
same as smp's, without reading values back to the host in each step; also for one object logit,
as the click model trains it); every loss here ignores the void label. ``class_weights`` turns a dataset's pixel
frequencies into cross-entropy weights, the lectures' answer to class
imbalance: rare classes weigh more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LOSSES", "make_loss", "class_weights", "unet_weight_map"]

LOSSES = ("ce", "weighted_ce", "dice", "focal", "lovasz", "ce+dice")


def class_weights(frequencies: Sequence[float], method: str = "inverse_sqrt", max_weight: float = 50.0) -> torch.Tensor:
    """Cross-entropy weights from per-class pixel frequencies, normalised to mean 1.

    ``inverse``: 1 / f; ``inverse_sqrt``: 1 / sqrt(f) (gentler); ``median``: median(f) / f
    (median frequency balancing, Eigen and Fergus 2015). Absent classes get ``max_weight``
    before normalisation; weights are clipped to ``max_weight``.
    """
    f = np.asarray(frequencies, dtype=np.float64)
    safe = np.where(f > 0, f, np.nan)
    if method == "inverse":
        w = 1.0 / safe
    elif method == "inverse_sqrt":
        w = 1.0 / np.sqrt(safe)
    elif method == "median":
        w = np.nanmedian(safe) / safe
    else:
        raise ValueError(f"class weight method must be 'inverse', 'inverse_sqrt' or 'median', got {method!r}.")
    w = np.where(np.isnan(w), max_weight, w)
    w = np.minimum(w / np.mean(w), max_weight)
    return torch.tensor(w / w.mean(), dtype=torch.float32)


class CrossEntropy(nn.Module):
    def __init__(self, ignore_index: int = 255, weight: torch.Tensor | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean over the pixels that are not void (weighted by their class's weight), as
        ``F.cross_entropy``; a batch of void only gives 0, not NaN, without asking the host."""
        total = F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index,
                                reduction="sum")
        valid = target != self.ignore_index
        if self.weight is None:
            count = valid.sum()
        else:  # each pixel counts its class's weight (void pixels read class 0's, then count 0)
            count = (self.weight[torch.where(valid, target, 0)] * valid).sum()
        return total / count.clamp(min=1e-12)


class Dice(nn.Module):
    """Soft Dice loss, 1 - Dice per class averaged over the classes, the classes absent from the batch's
    targets counting 0 (as smp's multiclass ``DiceLoss``), void pixels left out; no host reads.

    One logit per pixel, (B, 1, H, W), is an object's logit: its sigmoid is the object's probability,
    the target is 1 on the object, and only the object's Dice counts (as smp's binary ``DiceLoss``).
    ``per_image``: the Dice of each image, averaged, so a small object weighs as much as a large one;
    otherwise the Dice of the whole batch's pixels.
    """

    def __init__(self, ignore_index: int = 255, eps: float = 1e-7, per_image: bool = False):
        super().__init__()
        self.ignore_index, self.eps, self.per_image = ignore_index, eps, per_image

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = (target != self.ignore_index).unsqueeze(1)  # (B, 1, H, W)
        if logits.shape[1] == 1:  # an object's logit
            probs = logits.float().sigmoid()  # (B, 1, H, W)
            truth = ((target.unsqueeze(1) == 1) & valid).float()
        else:
            probs = logits.float().log_softmax(1).exp()  # (B, K, H, W)
            index = torch.where(valid, target.unsqueeze(1), 0)
            truth = torch.zeros_like(probs).scatter_(1, index, 1.0) * valid  # one-hot, (B, K, H, W)
        probs = probs * valid
        dims = (2, 3) if self.per_image else (0, 2, 3)
        intersection, cardinality = (probs * truth).sum(dims), (probs + truth).sum(dims)  # (B, K) or (K,)
        dice = 2 * intersection / cardinality.clamp_min(self.eps)
        return ((1 - dice) * (truth.sum(dims) > 0)).mean()


class Sum(nn.Module):
    def __init__(self, *losses: nn.Module):
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits, target):
        return sum(loss(logits, target) for loss in self.losses)


def make_loss(name: str | nn.Module = "ce", ignore_index: int = 255, weights: torch.Tensor | None = None) -> nn.Module:
    """A loss by name (see :data:`LOSSES`), or the module given. ``weights`` are for ``weighted_ce``."""
    if isinstance(name, nn.Module):
        return name
    from segmentation_models_pytorch import losses as smp_losses

    key = name.lower().replace(" ", "")
    if key == "ce":
        return CrossEntropy(ignore_index)
    if key == "weighted_ce":
        if weights is None:
            raise ValueError("weighted_ce needs class weights: fit() derives them from the dataset's frequencies.")
        return CrossEntropy(ignore_index, weights)
    if key == "dice":
        return Dice(ignore_index)
    if key == "focal":
        return smp_losses.FocalLoss("multiclass", ignore_index=ignore_index)
    if key == "lovasz":
        return smp_losses.LovaszLoss("multiclass", ignore_index=ignore_index)
    if key == "ce+dice":
        return Sum(CrossEntropy(ignore_index), Dice(ignore_index))
    raise ValueError(f"Unknown loss {name!r}. Choose one of {list(LOSSES)}, or pass a torch module.")


def unet_weight_map(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0,
                    class_weight: np.ndarray | None = None) -> np.ndarray:
    """U-Net's pixel weights (Ronneberger et al., 2015, eq. 2) for one label map of separate objects.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))`` on background pixels, where
    ``d1`` and ``d2`` are the distances to the nearest and the second-nearest object: the narrow
    background gaps between touching objects weigh most, so the loss insists on separating them.
    ``instances`` is (H, W) with 0 for background and 1, 2, ... for the objects; ``w_c`` is
    ``class_weight[0]`` on background and ``class_weight[1]`` on objects (1 and 1 by default; the
    paper balances the class frequencies). Fewer than two objects: no border term.
    """
    from scipy import ndimage

    labels = np.asarray(instances)
    if labels.ndim != 2:
        raise ValueError(f"unet_weight_map takes one (H, W) map of object ids, got shape {labels.shape}.")
    cw = np.ones(2) if class_weight is None else np.asarray(class_weight, dtype=np.float64)
    weights = np.where(labels > 0, cw[1], cw[0]).astype(np.float64)
    ids = [i for i in np.unique(labels) if i > 0]
    if len(ids) < 2:
        return weights
    distances = np.stack([ndimage.distance_transform_edt(labels != i) for i in ids])  # (objects, H, W)
    distances.sort(axis=0)
    d1, d2 = distances[0], distances[1]
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return weights + np.where(labels == 0, border, 0.0)
