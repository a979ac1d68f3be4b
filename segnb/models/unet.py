"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015), with a swappable upsampling operator.

Each decoder stage upsamples, concatenates the encoder features of the same
stride (the skip connection) and convolves. On a VGG-style encoder the skips
are the block outputs before pooling, as in the paper; on a timm backbone they
are its stage features (strides 2 to 32) and a last stage returns to stride 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segnb.errors import ModelConfigError
from segnb.models.encoders import (
    BUILTIN_ENCODERS,
    conv_block,
    make_encoder,
    max_reduction,
    pyramid_problem,
)
from segnb.models.registry import BuildRequest, register_architecture
from segnb.models.upsample import make_upsample

__all__ = ["UNet"]


class UNet(nn.Module):
    """U-Net with concatenating skips on a :class:`TimmEncoder` or :class:`VGGEncoder`."""

    def __init__(self, encoder: nn.Module, num_classes: int, upsample: str = "transposed4",
                 decoder_channels: tuple[int, ...] | None = None):
        super().__init__()
        reductions = list(encoder.reductions)
        if len(set(reductions)) < len(reductions):
            raise ModelConfigError(
                f"U-Net needs encoder stages at increasing strides; {encoder.name} has strides "
                f"{reductions} (a plain ViT keeps one stride). Use build_model('setr', ...) or "
                "build_model('dpt', ...) for a ViT, or a hierarchical backbone here."
            )
        if upsample == "max_unpool" and not encoder.has_indices:
            raise ModelConfigError(
                f"max_unpool needs max-pooling indices; {encoder.name} downsamples with strided "
                "convolutions. Use encoder='vgg-small' or a timm VGG, or another upsample kind."
            )
        self.encoder = encoder
        self.vgg_style = encoder.has_indices
        if self.vgg_style:  # skips: block outputs at strides 1, 2, 4, 8; bottom: stride 16
            skips = encoder.channels[:-2]
            bottom = encoder.channels[-2]
        else:  # skips: stages at strides 2 .. 16; bottom: stride 32; then one more step to 1
            skips = encoder.channels[:-1]
            bottom = encoder.channels[-1]
        n = len(skips)
        widths = list(decoder_channels or [max(16, c) for c in skips])
        if len(widths) != n:
            raise ModelConfigError(f"decoder_channels needs {n} values for {encoder.name}, got {len(widths)}.")
        self.ups, self.blocks, self.match = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        previous = bottom
        for i in reversed(range(n)):
            # Max-unpooling puts each channel back with its own indices: match the skip's channels.
            if upsample == "max_unpool" and previous != skips[i]:
                self.match.append(nn.Conv2d(previous, skips[i], 1))
                previous = skips[i]
            else:
                self.match.append(nn.Identity())
            self.ups.append(make_upsample(upsample, previous))
            self.blocks.append(conv_block(previous + skips[i], widths[i]))
            previous = widths[i]
        self.final_up = None if self.vgg_style else make_upsample(upsample, previous)
        self.final_block = None if self.vgg_style else conv_block(previous, previous)
        self.classifier = nn.Conv2d(previous, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, indices = self.encoder(x)
        if self.vgg_style:
            skips, y = features[:-2], features[-2]
            where = indices[: len(skips)]
        else:
            skips, y = features[:-1], features[-1]
            where = [None] * len(skips)
        stages = zip(self.match, self.ups, self.blocks, reversed(skips), reversed(where), strict=True)
        for match, up, block, skip, idx in stages:
            y = up(match(y), idx)  # (B, C, 2h, 2w)
            y = block(torch.cat([y, skip], dim=1))
        if self.final_up is not None:
            y = self.final_block(self.final_up(y))
        return self.classifier(y)  # (B, K, H, W)


def _build(request: BuildRequest) -> UNet:
    encoder = make_encoder(request.encoder, request.use_pretrained, **request.timm_options)
    return UNet(encoder, request.num_classes, upsample=request.upsample, **request.options)


register_architecture(
    "unet-classic", "segnb teaching model: U-Net: concatenating skips, swappable upsampling", group="teaching",
    accepts=lambda encoder, upsample: pyramid_problem("unet-classic", encoder, upsample), build=_build,
    pad_multiple=max_reduction, upsample="transposed4", own_encoders=tuple(BUILTIN_ENCODERS),
)
