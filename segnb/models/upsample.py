"""The upsampling operators of the lectures, each a x2 module with one interface.

``make_upsample(kind, channels)`` returns a module whose ``forward(x, indices=None)``
doubles the spatial size of ``x`` of shape ``(B, C, H, W)`` to ``(B, C, 2H, 2W)``.
Decoders call it once per stage, so swapping ``kind`` swaps the operator everywhere.

=================  ==========================================================
``nearest``        copy each value into a 2x2 block ("unpooling" by copying)
``bilinear``       linear interpolation (align_corners=False)
``bed_of_nails``   the value at the top-left of its 2x2 block, zeros elsewhere
``max_unpool``     the value back where the encoder's max-pool found it (SegNet)
``transposed3``    learned transposed convolution, kernel 3, stride 2: uneven overlap
``transposed4``    learned transposed convolution, kernel 4, stride 2: even overlap
``resize_conv``    nearest x2 then a 3x3 convolution (Odena et al., 2016)
``pixel_shuffle``  1x1 conv to 4C channels, then depth-to-space, ICNR-initialised
=================  ==========================================================
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segnb.errors import ModelConfigError

__all__ = ["UPSAMPLE_KINDS", "LEARNED_KINDS", "make_upsample", "bed_of_nails", "icnr_"]

UPSAMPLE_KINDS = (
    "nearest", "bilinear", "bed_of_nails", "max_unpool",
    "transposed3", "transposed4", "resize_conv", "pixel_shuffle",
)
LEARNED_KINDS = ("transposed3", "transposed4", "resize_conv", "pixel_shuffle")


def bed_of_nails(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Zero insertion: ``x[i, j]`` goes to ``(factor*i, factor*j)``, every other output is 0."""
    b, c, h, w = x.shape
    out = x.new_zeros(b, c, h * factor, w * factor)
    out[:, :, ::factor, ::factor] = x
    return out


def icnr_(weight: torch.Tensor, factor: int = 2, init=nn.init.kaiming_normal_) -> torch.Tensor:
    """ICNR (Aitken et al., 2017): pixel shuffle starts out equal to nearest upsampling.

    ``weight`` has shape ``(C * factor**2, C_in, k, k)``; each group of ``factor**2``
    output channels gets the same kernel, so no checkerboard exists at initialisation.
    """
    out_channels, in_channels, kh, kw = weight.shape
    base = torch.empty(out_channels // factor**2, in_channels, kh, kw)
    init(base)
    with torch.no_grad():
        weight.copy_(base.repeat_interleave(factor**2, dim=0))
    return weight


class Upsample2x(nn.Module):
    """One x2 upsampling step; see the module docstring for the kinds."""

    def __init__(self, kind: str, channels: int):
        super().__init__()
        if kind not in UPSAMPLE_KINDS:
            raise ModelConfigError(f"Unknown upsample={kind!r}. Choose one of {list(UPSAMPLE_KINDS)}.")
        self.kind = kind
        if kind == "transposed3":  # out = (H-1)*2 - 2*1 + 3 + 1 = 2H
            self.op = nn.ConvTranspose2d(channels, channels, 3, stride=2, padding=1, output_padding=1)
        elif kind == "transposed4":  # out = (H-1)*2 - 2*1 + 4 = 2H
            self.op = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        elif kind == "resize_conv":
            self.op = nn.Conv2d(channels, channels, 3, padding=1)
        elif kind == "pixel_shuffle":
            self.op = nn.Conv2d(channels, channels * 4, 1)
            icnr_(self.op.weight)
            nn.init.zeros_(self.op.bias)
        else:
            self.op = None

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        if self.kind == "nearest":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.kind == "bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        if self.kind == "bed_of_nails":
            return bed_of_nails(x)
        if self.kind == "max_unpool":
            if indices is None:
                raise ModelConfigError(
                    "max_unpool needs the encoder's max-pooling indices, and this stage has none. "
                    "Use an encoder that downsamples by max-pooling (SegNet/U-Net with encoder="
                    "'vgg-small' or a timm VGG), or another upsample kind."
                )
            return F.max_unpool2d(x, indices, kernel_size=2, stride=2)
        if self.kind == "resize_conv":
            return self.op(F.interpolate(x, scale_factor=2, mode="nearest"))
        if self.kind == "pixel_shuffle":
            return F.pixel_shuffle(self.op(x), 2)
        return self.op(x)  # transposed convolutions

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def make_upsample(kind: str, channels: int) -> Upsample2x:
    """A x2 upsampling module of the given kind for ``channels`` feature maps."""
    return Upsample2x(kind, channels)
