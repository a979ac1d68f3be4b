"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell, CVPR 2015).

The classifier is a 1x1 convolution over feature maps, so the network takes
images of any size. FCN-32s upsamples the stride-32 class scores by 32 in one
go; FCN-16s first adds scores from the stride-16 features, FCN-8s also from
the stride-8 features: the skips bring back the detail that the coarse map
lost. Every x2 step uses the chosen upsampling operator.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segnb.errors import ModelConfigError
from segnb.models.encoders import BUILTIN_ENCODERS, make_encoder, max_reduction, pyramid_problem
from segnb.models.registry import BuildRequest, register_architecture
from segnb.models.upsample import make_upsample

__all__ = ["FCN"]


class FCN(nn.Module):
    """FCN on any encoder with stride-8, 16 and 32 stages.

    Args:
        encoder: a :class:`TimmEncoder` or :class:`VGGEncoder`.
        num_classes: output channels.
        variant: 32, 16 or 8.
        upsample: the x2 operator (see :mod:`segnb.models.upsample`); not max_unpool,
            since class-score maps have no pooling indices.
        hidden: channels of the convolutionised fully-connected layers (fc6, fc7).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, variant: int = 8,
                 upsample: str = "transposed4", hidden: int = 256):
        super().__init__()
        if variant not in (8, 16, 32):
            raise ModelConfigError(f"FCN variant must be 32, 16 or 8, got {variant}.")
        if upsample == "max_unpool":
            raise ModelConfigError(
                "FCN upsamples class-score maps, which have no max-pooling indices, so max_unpool "
                "cannot work here. Use SegNet for max-unpooling, or pick another upsample kind."
            )
        stage = {r: i for i, r in enumerate(encoder.reductions)}
        missing = [r for r in (8, 16, 32) if r not in stage]
        if missing:
            raise ModelConfigError(
                f"FCN needs encoder stages at strides 8, 16 and 32; {encoder.name} has strides "
                f"{encoder.reductions}. Use a CNN backbone (resnet18, convnext_tiny, vgg-small...)."
            )
        self.encoder, self.variant, self.stage = encoder, variant, stage
        c32 = encoder.channels[stage[32]]
        self.fc = nn.Sequential(  # fc6 and fc7, convolutionised
            nn.Conv2d(c32, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout2d(0.1),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
        )
        self.score32 = nn.Conv2d(hidden, num_classes, 1)
        self.score16 = nn.Conv2d(encoder.channels[stage[16]], num_classes, 1) if variant <= 16 else None
        self.score8 = nn.Conv2d(encoder.channels[stage[8]], num_classes, 1) if variant == 8 else None
        steps = {32: 5, 16: 4, 8: 3}[variant]  # x2 steps after the last fusion
        fuse_steps = {32: 0, 16: 1, 8: 2}[variant]
        self.fuse_up = nn.ModuleList(make_upsample(upsample, num_classes) for _ in range(fuse_steps))
        self.final_up = nn.ModuleList(make_upsample(upsample, num_classes) for _ in range(steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, _ = self.encoder(x)
        score = self.score32(self.fc(features[self.stage[32]]))  # (B, K, H/32, W/32)
        if self.score16 is not None:
            score = self.fuse_up[0](score) + self.score16(features[self.stage[16]])  # (B, K, H/16, W/16)
        if self.score8 is not None:
            score = self.fuse_up[1](score) + self.score8(features[self.stage[8]])  # (B, K, H/8, W/8)
        for up in self.final_up:
            score = up(score)
        return score  # (B, K, H, W)


def _accepts(encoder: str, upsample: str | None) -> str | None:
    if upsample == "max_unpool":
        return ("FCN upsamples class-score maps, which have no max-pooling indices, so max_unpool "
                "cannot work here. Use SegNet for max-unpooling, or pick another upsample kind.")
    return pyramid_problem("FCN", encoder, upsample)


def _build(request: BuildRequest) -> FCN:
    encoder = make_encoder(request.encoder, request.use_pretrained, **request.timm_options)
    variant = int(request.arch[3:-1])
    return FCN(encoder, request.num_classes, variant=variant, upsample=request.upsample, **request.options)


for _variant, _summary in ((32, "stride-32 scores upsampled x32"), (16, "+ stride-16 skip"),
                           (8, "+ stride-8 skip")):
    register_architecture(
        f"fcn{_variant}s", f"segnb teaching model: FCN-{_variant}s: {_summary}", group="teaching",
        accepts=_accepts, build=_build, pad_multiple=max_reduction, upsample="transposed4",
        own_encoders=tuple(BUILTIN_ENCODERS), aliases=(f"fcn-{_variant}s",) + (("fcn",) if _variant == 8 else ()),
    )
