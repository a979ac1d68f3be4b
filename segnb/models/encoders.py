"""Encoders for our teaching models: any timm backbone as a feature pyramid, or a small VGG.

Both return a list of feature maps, one per stage, finest first; the VGG
encoders also return the max-pooling indices that SegNet's decoder reuses.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from segnb.errors import ModelConfigError

__all__ = ["TimmEncoder", "VGGEncoder", "conv_block", "BUILTIN_ENCODERS", "DILATION_FAMILIES",
           "encoder_family", "is_vgg", "make_encoder", "max_reduction",
           "pyramid_problem"]

BUILTIN_ENCODERS = {"vgg-small": (16, 32, 64, 128, 256), "vgg-tiny": (8, 16, 32, 64, 64)}
# timm families whose features_only models take output_stride (dilation), as DeepLab needs.
DILATION_FAMILIES = ("resnet", "resnext", "seresnet", "seresnext", "resnest", "res2net", "regnet",
                     "efficientnet", "tf_efficientnet", "mobilenetv2", "mobilenetv3", "tf_mobilenetv3",
                     "convnext", "test_resnet", "test_efficientnet", "test_convnext", "wide_resnet",
                     "mnasnet", "dla", "hrnet", "ecaresnet", "skresnet")


def encoder_family(name: str) -> str:
    """``'vgg'``, ``'vit'`` (one stride, no pyramid), ``'swin'`` (fixed input size) or ``'cnn'``."""
    if is_vgg(name):
        return "vgg"
    base = name.split(".")[0]
    if base.startswith(("vit_", "deit", "test_vit", "eva", "beit", "flexivit", "vit")):
        return "vit"
    if base.startswith(("swin", "test_swin")):
        return "swin"
    return "cnn"


def pyramid_problem(arch: str, encoder: str, upsample: str | None) -> str | None:
    """Why ``encoder`` cannot feed a teaching decoder that needs stages at several strides, or None."""
    family = encoder_family(encoder)
    if family == "swin":
        return (f"{encoder} takes one fixed input size, which segnb's teaching models do not handle. Use it "
                "with an smp architecture (unet, fpn, upernet, ...) and image_size=, or a CNN encoder here.")
    if family == "vit":
        return (f"{arch} needs encoder stages at several strides; {encoder} is a plain ViT (one stride). "
                f"Use build_model('setr-pup', '{encoder}') or build_model('dpt', '{encoder}').")
    if upsample == "max_unpool" and family != "vgg":
        return (f"max_unpool needs max-pooling indices, and {encoder} downsamples with strided "
                "convolutions. Use encoder='vgg-small' or a timm VGG, or another upsample kind.")
    return None


def make_encoder(name: str, pretrained: bool = False, **timm_options) -> nn.Module:
    """A :class:`VGGEncoder` for VGG names (built in or timm), else a :class:`TimmEncoder`."""
    encoder_class = VGGEncoder if is_vgg(name) else TimmEncoder
    return encoder_class(name, pretrained, **timm_options)


def max_reduction(net: nn.Module) -> int:
    """The coarsest stride of ``net.encoder``: the padding multiple of the teaching models."""
    return max(net.encoder.reductions)


def conv_block(in_channels: int, out_channels: int, layers: int = 2) -> nn.Sequential:
    """``layers`` times conv 3x3 -> batch norm -> ReLU."""
    modules = []
    for i in range(layers):
        modules += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*modules)


class TimmEncoder(nn.Module):
    """A timm backbone with ``features_only=True``: stage features at strides like 2, 4, 8, 16, 32."""

    has_indices = False

    def __init__(self, name: str, pretrained: bool = False, **timm_options):
        super().__init__()
        import timm

        self.name = name
        self.body = timm.create_model(name, pretrained=pretrained, features_only=True, **timm_options)
        self.channels = list(self.body.feature_info.channels())
        self.reductions = list(self.body.feature_info.reduction())
        self.channels_last_output = getattr(self.body, "output_fmt", "NCHW") == "NHWC"

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list]:
        features = self.body(x)
        if self.channels_last_output:  # Swin and friends give (B, H, W, C)
            features = [f.permute(0, 3, 1, 2).contiguous() for f in features]
        return features, []


class VGGEncoder(nn.Module):
    """Conv blocks each followed by 2x2 max-pooling that remembers where the maxima were.

    ``forward`` returns the pre-pooling output of every block (strides 1, 2, 4, ...)
    plus the final pooled map, and the pooling indices of every block. Built-in
    widths (``vgg-small``, ``vgg-tiny``) or the convolutions of a timm VGG.
    """

    has_indices = True

    def __init__(self, name: str = "vgg-small", pretrained: bool = False, **timm_options):
        super().__init__()
        self.name = name
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        if name in BUILTIN_ENCODERS:
            if pretrained:
                raise ModelConfigError(f"{name} is built in and has no pretrained weights; use pretrained=False.")
            widths = BUILTIN_ENCODERS[name]
            blocks, previous = [], 3
            for width in widths:
                blocks.append(conv_block(previous, width))
                previous = width
            self.blocks = nn.ModuleList(blocks)
        else:
            self.blocks = nn.ModuleList(_timm_vgg_blocks(name, pretrained, **timm_options))
        self.channels = [_out_channels(b) for b in self.blocks]
        self.channels.append(self.channels[-1])
        self.reductions = [2**i for i in range(len(self.blocks) + 1)]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        features, indices = [], []
        for block in self.blocks:
            x = block(x)
            features.append(x)  # (B, C_i, H / 2**i, W / 2**i)
            x, where = self.pool(x)
            indices.append(where)
        features.append(x)  # the last pooled map, stride 2**len(blocks)
        return features, indices


def _out_channels(block: nn.Module) -> int:
    return [m for m in block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _timm_vgg_blocks(name: str, pretrained: bool, **timm_options) -> list[nn.Sequential]:
    """Split a timm VGG's ``features`` at its max-pools into blocks (the pools are ours)."""
    import timm

    model = timm.create_model(name, pretrained=pretrained, **timm_options)
    layers = getattr(model, "features", None)
    if not isinstance(layers, nn.Sequential) or not any(isinstance(m, nn.MaxPool2d) for m in layers):
        raise ModelConfigError(
            f"{name} does not downsample by max-pooling, so it has no pooling indices for "
            "max-unpooling. Use encoder='vgg-small' (built in) or a timm VGG (vgg11, vgg11_bn, vgg16_bn...)."
        )
    blocks, current = [], []
    for layer in layers:
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
        else:
            current.append(layer)
    return blocks


def is_vgg(name: str) -> bool:
    return name in BUILTIN_ENCODERS or name.split(".")[0].startswith("vgg")
