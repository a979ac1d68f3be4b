"""Tiramisu: FC-DenseNet-56, 67 and 103 (Jegou et al., "The One Hundred Layers Tiramisu", 2017).

A U-shaped network built from DenseNet's dense blocks. In a dense block every
layer (BN, ReLU, 3x3 conv, dropout) sees the concatenation of the block's input
and all earlier layers' outputs, and adds ``growth`` new channels.

- Down path: a 3x3 conv to 48 channels, then five times a dense block whose
  output (input + new channels) is kept as the skip, and a *transition down*
  (BN, ReLU, 1x1 conv, dropout, 2x2 max-pool).
- Bottleneck: a dense block at stride 32.
- Up path: a *transition up* (3x3 transposed conv, stride 2) upsamples only the
  channels the previous dense block *added* (not its input, or the channel
  count would explode), concatenates the skip of the same stride, and runs a
  dense block. A 1x1 conv gives the class scores.

=============  ======  ==========================  ==========
variant        growth  layers per block             parameters (paper; ours, 7 classes)
=============  ======  ==========================  ==========
fc-densenet56  12      4 everywhere                 1.5 M; 1.38 M
fc-densenet67  16      5 everywhere                 3.5 M; 3.46 M
fc-densenet103 16      4 5 7 10 12 | 15 | 12 10 7 5 4  9.4 M; 9.32 M
=============  ======  ==========================  ==========

``upsample=`` swaps the transition up (the paper's is ``transposed3``). Our counts are
measured by ``sum(p.numel() for p in build_model("tiramisu", v, num_classes=7).parameters())``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segnb.errors import ModelConfigError
from segnb.models.registry import register_architecture
from segnb.models.upsample import make_upsample

__all__ = ["Tiramisu", "TIRAMISU_VARIANTS"]

# name: (growth rate, layers of the five down blocks, bottleneck layers); the up path mirrors the down path.
TIRAMISU_VARIANTS = {
    "fc-densenet56": (12, (4, 4, 4, 4, 4), 4),
    "fc-densenet67": (16, (5, 5, 5, 5, 5), 5),
    "fc-densenet103": (16, (4, 5, 7, 10, 12), 15),
}


class DenseLayer(nn.Sequential):
    """BN -> ReLU -> 3x3 conv (``growth`` channels) -> dropout."""

    def __init__(self, in_channels: int, growth: int, dropout: float):
        super().__init__(
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, growth, 3, padding=1, bias=True), nn.Dropout2d(dropout),
        )


class DenseBlock(nn.Module):
    """``layers`` dense layers; returns the input and all new maps, or only the new maps."""

    def __init__(self, in_channels: int, growth: int, layers: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth, growth, dropout) for i in range(layers))
        self.new_channels = growth * layers
        self.out_channels = in_channels + self.new_channels

    def forward(self, x: torch.Tensor, only_new: bool = False) -> torch.Tensor:
        new = []
        for layer in self.layers:
            y = layer(x)  # (B, growth, H, W)
            x = torch.cat([x, y], dim=1)  # every later layer sees all earlier ones
            new.append(y)
        return torch.cat(new, dim=1) if only_new else x


class TransitionDown(nn.Sequential):
    """BN -> ReLU -> 1x1 conv -> dropout -> 2x2 max-pool: halves the resolution, keeps the channels."""

    def __init__(self, channels: int, dropout: float):
        super().__init__(
            nn.BatchNorm2d(channels), nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1),
            nn.Dropout2d(dropout), nn.MaxPool2d(2),
        )


class TiramisuEncoder(nn.Module):
    """The down path: first conv, then dense block + transition down, five times.

    ``forward`` returns the skips (strides 1, 2, 4, 8, 16) and the pooled map (stride 32),
    like the other encoders, so ``describe_model`` and the receptive-field tools read it.
    """

    has_indices = False

    def __init__(self, variant: str, dropout: float = 0.2, first_channels: int = 48):
        super().__init__()
        growth, down, _ = TIRAMISU_VARIANTS[variant]
        self.name = variant
        self.first = nn.Conv2d(3, first_channels, 3, padding=1)
        self.blocks, self.downs = nn.ModuleList(), nn.ModuleList()
        channels = first_channels
        self.channels = []
        for layers in down:
            block = DenseBlock(channels, growth, layers, dropout)
            channels = block.out_channels
            self.blocks.append(block)
            self.downs.append(TransitionDown(channels, dropout))
            self.channels.append(channels)
        self.channels.append(channels)
        self.reductions = [2**i for i in range(len(down) + 1)]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list]:
        x = self.first(x)
        features = []
        for block, down in zip(self.blocks, self.downs, strict=True):
            x = block(x)
            features.append(x)  # skip at stride 2**i
            x = down(x)
        features.append(x)  # (B, C, H/32, W/32)
        return features, []


class Tiramisu(nn.Module):
    """FC-DenseNet: :class:`TiramisuEncoder`, bottleneck dense block, transitions up with skips."""

    def __init__(self, num_classes: int, variant: str = "fc-densenet56", upsample: str = "transposed3",
                 dropout: float = 0.2):
        super().__init__()
        if variant not in TIRAMISU_VARIANTS:
            raise ModelConfigError(f"Unknown Tiramisu variant {variant!r}; choose one of {list(TIRAMISU_VARIANTS)}.")
        if upsample == "max_unpool":
            raise ModelConfigError(
                "Tiramisu's transition up upsamples the channels a dense block added, which were never "
                "max-pooled, so max_unpool has no indices to use. Pick another upsample kind."
            )
        growth, down, bottleneck = TIRAMISU_VARIANTS[variant]
        self.encoder = TiramisuEncoder(variant, dropout)
        self.bottleneck = DenseBlock(self.encoder.channels[-1], growth, bottleneck, dropout)
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        previous_new = self.bottleneck.new_channels
        for i, layers in enumerate(reversed(down)):
            skip = self.encoder.channels[len(down) - 1 - i]
            self.ups.append(make_upsample(upsample, previous_new))  # the transition up
            block = DenseBlock(previous_new + skip, growth, layers, dropout)
            self.blocks.append(block)
            previous_new = block.new_channels
        self.classifier = nn.Conv2d(self.blocks[-1].out_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, _ = self.encoder(x)
        skips, y = features[:-1], features[-1]
        y = self.bottleneck(y, only_new=True)  # (B, growth * layers, H/32, W/32)
        last = len(self.blocks) - 1
        for i, (up, block, skip) in enumerate(zip(self.ups, self.blocks, reversed(skips), strict=True)):
            y = torch.cat([up(y), skip], dim=1)  # upsample the new maps only, then the skip
            y = block(y, only_new=i < last)  # the last block keeps everything for the classifier
        return self.classifier(y)  # (B, K, H, W)


def _accepts(encoder: str, upsample: str | None) -> str | None:
    if encoder not in TIRAMISU_VARIANTS:
        return (f"Tiramisu builds its own dense-block encoder; give encoder= one of {list(TIRAMISU_VARIANTS)} "
                f"instead of {encoder!r}.")
    if upsample == "max_unpool":
        return "Tiramisu has no max-pooling indices for the maps it upsamples; pick another upsample kind."
    return None


register_architecture(
    "tiramisu", "segnb teaching model: Tiramisu (FC-DenseNet-56/67/103): dense blocks, concatenating skips",
    group="teaching", accepts=_accepts, pad_multiple=32, upsample="transposed3",
    build=lambda r: Tiramisu(r.num_classes, r.encoder, upsample=r.upsample, **r.options),
    own_encoders=tuple(TIRAMISU_VARIANTS), default_encoder="fc-densenet56", listed=lambda name: False,
    aliases=("fc-densenet", "fcdensenet"),
)
