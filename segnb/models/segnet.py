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
from segnb.models.encoders import conv_block
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
