"""SegNet (Badrinarayanan, Kendall and Cipolla, TPAMI 2017).

The encoder is a VGG whose max-pools remember where each maximum came from.
The decoder mirrors it: each stage unpools with those indices (the value goes
back to its position, zeros elsewhere), then convolutions fill in the gaps.
Other upsampling operators can replace max-unpooling to compare them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segnb.errors import ModelConfigError
from segnb.models.encoders import (
    BUILTIN_ENCODERS,
    VGGEncoder,
    conv_block,
    encoder_family,
    max_reduction,
)
from segnb.models.registry import BuildRequest, register_architecture
from segnb.models.upsample import make_upsample

__all__ = ["SegNet"]


class SegNet(nn.Module):
    """SegNet on a :class:`VGGEncoder` (built-in ``vgg-small`` or a timm VGG)."""

    def __init__(self, encoder: nn.Module, num_classes: int, upsample: str = "max_unpool"):
        super().__init__()
        if not getattr(encoder, "has_indices", False):
            raise ModelConfigError(
                f"SegNet reuses the encoder's max-pooling indices; {encoder.name} downsamples without "
                "max-pooling. Use encoder='vgg-small' (built in) or a timm VGG (vgg11_bn, vgg16_bn)."
            )
        self.encoder = encoder
        widths = encoder.channels[:-1]  # one per block, finest first
        self.ups = nn.ModuleList(make_upsample(upsample, w) for w in reversed(widths))
        blocks = []
        for i in reversed(range(len(widths))):
            out = widths[i - 1] if i > 0 else widths[0]
            blocks.append(conv_block(widths[i], out))
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(widths[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, indices = self.encoder(x)
        y = features[-1]  # (B, C, H/32, W/32) for five blocks
        for up, block, where in zip(self.ups, self.blocks, reversed(indices), strict=True):
            y = block(up(y, where))
        return self.classifier(y)  # (B, K, H, W)


def _accepts(encoder: str, upsample: str | None) -> str | None:
    if encoder_family(encoder) != "vgg":
        return (f"SegNet reuses max-pooling indices, and {encoder} downsamples without max-pooling. "
                "Use encoder='vgg-small' (built in) or a timm VGG (vgg11_bn, vgg16_bn).")
    return None


def _build(request: BuildRequest) -> SegNet:
    encoder = VGGEncoder(request.encoder, request.use_pretrained, **request.timm_options)
    return SegNet(encoder, request.num_classes, upsample=request.upsample, **request.options)


register_architecture(
    "segnet", "segnb teaching model: SegNet: VGG encoder, max-unpooling decoder", group="teaching",
    accepts=_accepts, build=_build, pad_multiple=max_reduction, upsample="max_unpool",
    own_encoders=tuple(BUILTIN_ENCODERS), default_encoder="vgg-small",
    listed=lambda name: encoder_family(name) == "vgg",
)
