"""Attention maps of ViT backbones: per layer and head, CLS and query maps, rollout.

``attention_maps(model, image)`` runs one forward pass with timm's
``AttentionExtract``. timm computes attention with a fused kernel that never
materialises the attention matrix, so the maps cannot be read while it is on:
this module switches fused attention off on each attention module for the
duration of the call and restores it after (``result.fused_was_on`` says
whether it had been on). The model runs through :class:`segnb.infer.Inference`:
while ``fit()`` trains it, the switch and the hooks land on a copy of its
weights, never on the model being trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from segnb.infer import Inference
from segnb.tiling import at_training_scale

__all__ = ["AttentionMaps", "attention_maps", "find_vit", "rollout", "upsample_map"]


def find_vit(model: nn.Module) -> nn.Module:
    """The timm ViT inside a model (SETR, smp's DPT, or a timm ViT itself)."""
    for module in model.modules():
        if hasattr(module, "blocks") and hasattr(module, "patch_embed"):
            if any(hasattr(getattr(b, "attn", None), "qkv") for b in module.blocks):
                return module
    names = type(model).__name__
    raise ValueError(
        f"No ViT found in this {names}: attention maps need a ViT/DeiT backbone (SETR, DPT, or a timm "
        "ViT). Swin's windowed attention is not supported; for CNN backbones use segnb.inspect.grad_cam."
    )


@dataclass
class AttentionMaps:
    """Attention of every layer and head for one image.

    ``attn`` has shape (layers, heads, tokens, tokens); rows sum to 1 (softmax over keys).
    The first ``prefix`` tokens are CLS/register tokens; the rest form a ``grid`` of patches.
    """

    attn: np.ndarray
    grid: tuple[int, int]
    prefix: int
    patch: int
    input_size: tuple[int, int]
    fused_was_on: bool

    @property
    def layers(self) -> int:
        return self.attn.shape[0]

    @property
    def heads(self) -> int:
        return self.attn.shape[1]

    def _fuse(self, layer: int, head: int | str) -> np.ndarray:
        a = self.attn[layer]
        if head == "mean":
            return a.mean(0)
        if head == "max":
            return a.max(0)
        if head == "min":
            return a.min(0)
        return a[int(head)]

    def cls_map(self, layer: int = -1, head: int | str = "mean") -> np.ndarray:
        """Where the CLS token attends: one value per patch, shape ``grid``."""
        if self.prefix == 0:
            raise ValueError("This ViT has no CLS token; use query_map() with a patch instead.")
        row = self._fuse(layer, head)[0, self.prefix:]
        return row.reshape(self.grid)

    def query_map(self, query: tuple[int, int], layer: int = -1, head: int | str = "mean",
                  pixel: bool = False) -> np.ndarray:
        """Where one patch (row, col) attends, or a pixel (y, x) of the input with ``pixel=True``."""
        r, c = query
        if pixel:
            r, c = min(r // self.patch, self.grid[0] - 1), min(c // self.patch, self.grid[1] - 1)
        if not (0 <= r < self.grid[0] and 0 <= c < self.grid[1]):
            raise ValueError(f"patch ({r}, {c}) is outside the {self.grid[0]}x{self.grid[1]} grid.")
        token = self.prefix + r * self.grid[1] + c
        return self._fuse(layer, head)[token, self.prefix:].reshape(self.grid)

    def rollout(self, head_fusion: str = "mean", discard_ratio: float = 0.0, upto: int | None = None) -> np.ndarray:
        """Attention rollout over the first ``upto`` layers (all by default); see :func:`rollout`."""
        layers = self.attn[: upto or self.layers]
        return rollout(layers, head_fusion, discard_ratio)


def rollout(attn: np.ndarray, head_fusion: str = "mean", discard_ratio: float = 0.0) -> np.ndarray:
    """Attention rollout (Abnar and Zuidema, 2020).

    ``attn`` is (layers, heads, tokens, tokens). Per layer: fuse heads (mean, max or
    min), drop the ``discard_ratio`` weakest entries of each row (never the diagonal),
    add the identity for the residual connection, renormalise rows, and multiply the
    layers together. Returns (tokens, tokens); rows sum to 1.
    """
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}.")
    if not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}.")
    tokens = attn.shape[-1]
    result = np.eye(tokens)
    eye = np.eye(tokens, dtype=bool)
    for layer in attn:
        a = fuse[head_fusion](layer, axis=0).astype(np.float64)  # (T, T)
        if discard_ratio > 0:
            k = int(tokens * discard_ratio)
            if k:
                cut = np.partition(a, k - 1, axis=1)[:, k - 1 : k]  # per-row threshold
                a = np.where((a <= cut) & ~eye, 0.0, a)
        a = 0.5 * a + 0.5 * np.eye(tokens)
        a /= a.sum(axis=1, keepdims=True)
        result = a @ result
    return result


def upsample_map(values: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """A patch-grid map (h, w) resized to an image size (H, W)."""
    t = torch.as_tensor(np.ascontiguousarray(values), dtype=torch.float32)[None, None]
    options = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=tuple(size), mode=mode, **options)[0, 0].numpy()


def attention_maps(model: nn.Module, image, input_size: int | tuple[int, int] | None = None) -> AttentionMaps:
    """Attention per layer and head for one image.

    Args:
        model: a segnb model with a ViT encoder (SETR, DPT) or a timm ViT.
        image: ``uint8`` (H, W, 3) or a normalised tensor (3, H, W) / (1, 3, H, W).
        input_size: resize the image to this before the ViT (e.g. 224, the size ViT-tiny was
            trained at); default: the size the model was trained at (``fit`` records it), else
            the image's size, rounded down to whole patches.
    """
    from timm.utils import AttentionExtract

    find_vit(model)  # a clear error before anything runs
    with Inference(model) as run:
        vit = find_vit(run.module)  # the model, or the copy of its weights while it trains
        x = run.batch(image) if input_size is not None else at_training_scale(model, run.batch(image))
        attn, size, patch, fused = _extract(AttentionExtract, vit, x, input_size)
    prefix = getattr(vit, "num_prefix_tokens", 1)
    grid = (size[0] // patch, size[1] // patch)
    return AttentionMaps(attn, grid, prefix, patch, size, any(fused))


def _extract(attention_extract, vit: nn.Module, x: torch.Tensor, input_size):
    """One forward pass of ``vit`` with fused attention off and hooks on; both undone after."""
    patch = vit.patch_embed.patch_size
    patch = patch[0] if isinstance(patch, tuple) else patch
    if input_size is not None:
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    else:
        size = (max(patch, x.shape[-2] // patch * patch), max(patch, x.shape[-1] // patch * patch))
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    modules = [b.attn for b in vit.blocks]
    fused = [getattr(m, "fused_attn", False) for m in modules]
    extractor = None
    try:
        for m in modules:  # visibly off: the fused kernel never forms the attention matrix
            m.fused_attn = False
        names = [f"blocks.{i}.attn.attn_drop" for i in range(len(modules))]
        extractor = attention_extract(vit, names=names, method="hook")
        found = extractor(x)
        attn = np.stack([found[n][0].float().cpu().numpy() for n in names])  # (L, heads, T, T)
    finally:
        for m, flag in zip(modules, fused, strict=True):
            m.fused_attn = flag
        if extractor is not None and extractor.hooks is not None:
            for handle in extractor.hooks._handles:
                handle.remove()
    return attn, size, patch, fused
