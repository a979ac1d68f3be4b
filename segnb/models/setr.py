"""SETR (Zheng et al., CVPR 2021): a plain ViT encoder and a convolutional decoder.

The ViT cuts the image into patches (16x16 for most), so its tokens form one
grid at stride 16 with no finer stages. The *naive* head classifies each token
with 1x1 convolutions and upsamples the class scores back to the image; the
*progressive* head (PUP) alternates convolutions and x2 upsampling on
features, four times for patch 16.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from segnb.errors import ModelConfigError
from segnb.models.encoders import encoder_family
from segnb.models.registry import BuildRequest, register_architecture
from segnb.models.upsample import make_upsample

__all__ = ["SETR", "ViTEncoder"]


class ViTEncoder(nn.Module):
    """A timm ViT as a token grid: ``(B, D, H / patch, W / patch)`` from one block's output."""

    has_indices = False

    def __init__(self, name: str, pretrained: bool = False, layer: int = -1, **timm_options):
        super().__init__()
        import timm

        self.name = name
        self.vit = timm.create_model(name, pretrained=pretrained, num_classes=0,
                                     dynamic_img_size=True, **timm_options)
        if not hasattr(self.vit, "forward_intermediates") or not hasattr(self.vit, "patch_embed"):
            raise ModelConfigError(
                f"SETR needs a plain ViT (vit_*, deit_*, test_vit); {name} is not one. "
                "For a CNN or Swin, use unet, fpn or upernet."
            )
        patch = self.vit.patch_embed.patch_size
        self.patch = patch[0] if isinstance(patch, tuple) else patch
        self.layer = layer
        self.channels = [self.vit.embed_dim]
        self.reductions = [self.patch]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list]:
        index = self.layer % len(self.vit.blocks)
        (tokens,) = self.vit.forward_intermediates(x, indices=[index], output_fmt="NCHW", intermediates_only=True)
        return [tokens], []  # (B, D, H/p, W/p)


class SETR(nn.Module):
    """SETR with a ``naive`` or ``pup`` (progressive upsampling) head on a :class:`ViTEncoder`."""

    def __init__(self, encoder: ViTEncoder, num_classes: int, head: str = "pup",
                 upsample: str = "bilinear", channels: int = 128):
        super().__init__()
        if head not in ("naive", "pup"):
            raise ModelConfigError(f"SETR head must be 'naive' or 'pup', got {head!r}.")
        if upsample == "max_unpool":
            raise ModelConfigError("A ViT has no max-pooling indices, so SETR cannot max-unpool; "
                                   "pick another upsample kind.")
        self.encoder, self.head = encoder, head
        steps = max(1, round(math.log2(encoder.patch)))  # x2 steps from the patch grid to pixels
        dim = encoder.channels[0]
        if head == "naive":
            self.decode = nn.Sequential(
                nn.Conv2d(dim, channels, 1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                nn.Conv2d(channels, num_classes, 1),
            )
            self.ups = nn.ModuleList(make_upsample(upsample, num_classes) for _ in range(steps))
            self.convs = nn.ModuleList(nn.Identity() for _ in range(steps))
            self.classifier = nn.Identity()
        else:
            self.decode = nn.Identity()
            self.convs = nn.ModuleList()
            self.ups = nn.ModuleList()
            previous = dim
            for _ in range(steps):
                self.convs.append(nn.Sequential(
                    nn.Conv2d(previous, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                ))
                self.ups.append(make_upsample(upsample, channels))
                previous = channels
            self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (y,), _ = self.encoder(x)  # (B, D, H/p, W/p)
        y = self.decode(y)
        for conv, up in zip(self.convs, self.ups, strict=True):
            y = up(conv(y))
        y = self.classifier(y)
        if y.shape[-2:] != x.shape[-2:]:  # patch sizes that are not powers of two
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y  # (B, K, H, W)


def _accepts(encoder: str, upsample: str | None) -> str | None:
    if encoder_family(encoder) != "vit":
        return f"SETR is a ViT model; {encoder} is not a plain ViT. Try 'vit_tiny_patch16_224' or 'test_vit'."
    return None


def _build(request: BuildRequest) -> SETR:
    options = dict(request.options)
    encoder = ViTEncoder(request.encoder, pretrained=request.use_pretrained, layer=options.pop("layer", -1),
                         **request.timm_options)
    return SETR(encoder, request.num_classes, head=request.arch.split("-")[1], upsample=request.upsample,
                **options)


for _head, _summary in (("naive", "1x1 convolutions on ViT tokens, then upsample"),
                        ("pup", "progressive upsampling head")):
    register_architecture(
        f"setr-{_head}", f"segnb teaching model: SETR, {'naive head: ' if _head == 'naive' else ''}{_summary}",
        group="teaching", accepts=_accepts, build=_build, pad_multiple=lambda net: net.encoder.patch,
        upsample="bilinear", default_encoder="vit_tiny_patch16_224", aliases=("setr",) if _head == "pup" else (),
    )
