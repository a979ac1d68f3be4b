"""FCN-32s, FCN-16s and FCN-8s (Long, Shelhamer and Darrell, CVPR 2015).

The classifier is a 1x1 convolution over feature maps, so the network takes
images of any size. FCN-32s upsamples the stride-32 class scores by 32 in one
step; FCN-16s first adds scores from the stride-16 features, FCN-8s also from
the stride-8 features: the skips bring back the detail that the coarse map
lost.

Upsampling as in the paper:
- each x2 step before a fusion uses the chosen operator (``upsample=``); the
  default, a k4s2 transposed convolution, starts as bilinear interpolation and
  is learned, as in the paper;
- the last step, from the final stride (32, 16 or 8) to the image, is one
  transposed convolution initialised to bilinear interpolation
  (:class:`BilinearUpsample`). ``final="bilinear"`` (the default) keeps it
  fixed, as the paper's models did in practice; ``final="learned"`` trains it;
  ``final="stacked"`` replaces it with x2 steps of the chosen operator, left
  at their default initialisation (random for the learned kinds), to study an
  operator on its own (checkerboards); this was segnb's FCN before it
  followed the paper.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from segnb.errors import ModelConfigError
from segnb.models.encoders import BUILTIN_ENCODERS, make_encoder, max_reduction, pyramid_problem
from segnb.models.registry import BuildRequest, register_architecture
from segnb.models.upsample import make_upsample

__all__ = ["FCN", "FINAL_KINDS", "BilinearUpsample", "bilinear_kernel"]

FINAL_KINDS = ("bilinear", "learned", "stacked")


def bilinear_kernel(factor: int) -> torch.Tensor:
    """The ``(k, k)`` kernel, ``k = 2 * factor - factor % 2``, of a stride-``factor`` transposed
    convolution that interpolates bilinearly: the outer product of a triangle of half-width ``factor``."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    one_d = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    return torch.outer(one_d, one_d)


class BilinearUpsample(nn.Module):
    """Upsampling by an integer ``factor`` with a transposed convolution initialised to bilinear interpolation.

    Each class map gets :func:`bilinear_kernel`; when ``learnable``, the weights between different
    channels exist too and start at zero.
    The input is first padded by one pixel, replicating its border, and the transposed convolution's
    padding crops the result, so that at initialisation the output equals
    ``F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)`` everywhere, the
    borders included. ``learnable=False`` freezes the weights (FCN's last step in practice).
    """

    def __init__(self, channels: int, factor: int, learnable: bool = False):
        super().__init__()
        if factor < 2:
            raise ModelConfigError(f"BilinearUpsample needs a factor of at least 2, got {factor}.")
        self.factor, self.learnable = factor, learnable
        size = 2 * factor - factor % 2
        # Fixed: one kernel per channel (groups=channels), the same result for far less work. Learned: a
        # full channels x channels kernel, as in the paper, that starts with zeros between channels.
        self.op = nn.ConvTranspose2d(channels, channels, size, stride=factor, groups=1 if learnable else channels,
                                     padding=(3 * factor - factor % 2) // 2, bias=False)
        with torch.no_grad():
            self.op.weight.zero_()
            kernel = bilinear_kernel(factor)
            for c in range(channels):
                self.op.weight[c, c if learnable else 0] = kernel
        self.op.weight.requires_grad_(learnable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(F.pad(x, (1, 1, 1, 1), mode="replicate"))

    def extra_repr(self) -> str:
        return f"factor={self.factor}, learnable={self.learnable}"


def _bilinear_init_(up: nn.Module) -> None:
    """Start a k4s2 transposed convolution (``Upsample2x`` of kind transposed4) as bilinear x2, as FCN does."""
    op = getattr(up, "op", None)
    if isinstance(op, nn.ConvTranspose2d) and op.kernel_size == (4, 4) and op.stride == (2, 2):
        with torch.no_grad():
            op.weight.zero_()
            for c in range(min(op.in_channels, op.out_channels)):
                op.weight[c, c] = bilinear_kernel(2)
            if op.bias is not None:
                op.bias.zero_()


class FCN(nn.Module):
    """FCN on any encoder with stride-8, 16 and 32 stages.

    Args:
        encoder: a :class:`TimmEncoder` or :class:`VGGEncoder`.
        num_classes: output channels.
        variant: 32, 16 or 8.
        upsample: the x2 operator (see :mod:`segnb.models.upsample`); not max_unpool,
            since class-score maps have no pooling indices.
        hidden: channels of the convolutionised fully-connected layers (fc6, fc7).
        final: the last step to the image: ``"bilinear"`` (a fixed bilinear transposed convolution,
            the paper's practice), ``"learned"`` (the same, trained) or ``"stacked"`` (x2 steps of
            ``upsample``).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, variant: int = 8,
                 upsample: str = "transposed4", hidden: int = 256, final: str = "bilinear"):
        super().__init__()
        if variant not in (8, 16, 32):
            raise ModelConfigError(f"FCN variant must be 32, 16 or 8, got {variant}.")
        if final not in FINAL_KINDS:
            raise ModelConfigError(f"FCN final= must be one of {list(FINAL_KINDS)}, got {final!r}.")
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
        self.final = final
        self.fuse_up = nn.ModuleList(make_upsample(upsample, num_classes) for _ in range(fuse_steps))
        if final == "stacked":
            self.final_up = nn.ModuleList(make_upsample(upsample, num_classes) for _ in range(steps))
        else:
            self.final_up = nn.ModuleList([BilinearUpsample(num_classes, 2**steps, learnable=final == "learned")])
        for up in self.fuse_up:
            _bilinear_init_(up)

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
