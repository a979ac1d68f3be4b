"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015), with a swappable upsampling operator.

Each decoder stage upsamples, concatenates the encoder features of the same
stride (the skip connection) and convolves. On a VGG-style encoder the skips
are the block outputs before pooling, as in the paper; on a timm backbone they
are its stage features (strides 2 to 32) and a last stage returns to stride 1.

``unet-classic`` pads its convolutions, so every skip has the size of the
decoder map it joins and the output has the input's size. The paper's
convolutions are unpadded: each 3x3 convolution loses a one-pixel border, a
572x572 tile gives a 388x388 output, and each encoder map is cropped to the
centre before it is concatenated. :class:`ValidUNet` is that layout, crops
included (:func:`center_crop`, :func:`valid_unet_sizes`); it is small and meant
for showing the sizes, not for training on the built-in data.
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

__all__ = ["UNet", "ValidUNet", "center_crop", "valid_unet_sizes"]


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre ``size`` of ``x`` (..., H, W); an odd surplus goes to the bottom and right."""
    h, w = x.shape[-2:]
    if size[0] > h or size[1] > w:
        raise ModelConfigError(f"cannot crop a {h}x{w} map to {size[0]}x{size[1]}.")
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top: top + size[0], left: left + size[1]]


def valid_unet_sizes(size: int, depth: int = 4) -> dict[str, list[int]]:
    """Map sides of the paper's unpadded U-Net for a ``size`` x ``size`` input tile.

    Returns ``encoder`` (each level's side after its two convolutions, the skip before cropping),
    ``decoder`` (each level's side after its up-convolution, what the skip is cropped to) and
    ``output``. Raises ``ModelConfigError`` when a pooling would meet an odd side (the paper picks
    tile sizes, such as 572, for which every pooling is exact).
    """
    encoder, side = [], size
    for level in range(depth + 1):
        side -= 4  # two unpadded 3x3 convolutions
        if side <= 0:
            raise ModelConfigError(f"a {size} px tile is too small for an unpadded U-Net of depth {depth}.")
        encoder.append(side)
        if level < depth:
            if side % 2:
                raise ModelConfigError(f"a {size} px tile meets an odd side ({side}) before pooling at "
                                       f"level {level}; choose a size such as 572 or 188.")
            side //= 2
    decoder = []
    for _ in range(depth):
        side *= 2  # 2x2 up-convolution
        decoder.append(side)
        side -= 4
    return {"encoder": encoder, "decoder": decoder, "output": [side]}


class ValidUNet(nn.Module):
    """The paper's U-Net layout: unpadded 3x3 convolutions, 2x2 up-convolutions and cropped skips.

    ``width`` channels at the first level, doubled at each of ``depth`` poolings (the paper: 64 and 4).
    The output is smaller than the input: ``valid_unet_sizes(size, depth)["output"]``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 8, depth: int = 4):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3), nn.ReLU(inplace=True))

        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(block(in_channels if i == 0 else widths[i - 1], widths[i]) for i in range(depth + 1))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.merge = nn.ModuleList(block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < self.depth:
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = up(x)
            x = merge(torch.cat([center_crop(skip, tuple(x.shape[-2:])), x], dim=1))
        return self.classifier(x)


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
