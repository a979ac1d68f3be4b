"""Discovery: which encoders fit an architecture, and what a built model looks like inside."""

from __future__ import annotations

import fnmatch

import torch
import torch.nn as nn

from segnb.models.build import DILATED, SMP_ARCHITECTURES, SegModel, _resolve_arch, encoder_family
from segnb.models.encoders import BUILTIN_ENCODERS

__all__ = ["list_encoders", "describe_model", "receptive_field"]

# timm families whose features_only models take output_stride (dilation), as DeepLab needs.
DILATION_FAMILIES = ("resnet", "resnext", "seresnet", "seresnext", "resnest", "res2net", "regnet",
                     "efficientnet", "tf_efficientnet", "mobilenetv2", "mobilenetv3", "tf_mobilenetv3",
                     "convnext", "test_resnet", "test_efficientnet", "test_convnext", "wide_resnet",
                     "mnasnet", "dla", "hrnet", "ecaresnet", "skresnet")


def list_encoders(arch: str = "unet", filter: str = "*", pretrained: bool = False) -> list[str]:
    """timm encoder names that work with ``arch``, optionally matching a wildcard ``filter``.

    The rules are by family, verified in the tests on ResNet, ConvNeXt,
    EfficientNet, MobileNet, Swin, VGG and ViT/DeiT: a plain ViT works only
    with ``dpt`` and SETR; dilated architectures (DeepLab, PAN) need a
    family with ``output_stride``; SegNet needs max-pooling (VGG).
    """
    import timm

    key = _resolve_arch(arch)
    names = timm.list_models(filter, pretrained=pretrained)
    builtin = [n for n in BUILTIN_ENCODERS if fnmatch.fnmatch(n, filter)]

    def works(name: str) -> bool:
        family = encoder_family(name)
        if key in SMP_ARCHITECTURES:
            if family == "vit":
                return key == "dpt"
            if key in DILATED:
                return name.startswith(DILATION_FAMILIES)
            return True
        if key.startswith("setr"):
            return family == "vit"
        if key == "segnet":
            return family == "vgg"
        return family in ("cnn", "vgg")

    found = [n for n in names if works(n)]
    if key not in SMP_ARCHITECTURES and not key.startswith("setr"):
        found = [n for n in builtin if key in ("segnet", "unet-classic") or key.startswith("fcn")] + found
    return found


def receptive_field(module: nn.Module, size: int = 256) -> list[int | None]:
    """Receptive field (pixels, one side) of each encoder stage, measured by gradients.

    The gradient of one centre output of a stage with respect to the input is
    non-zero exactly inside that output's receptive field (weights made positive
    on a copy, so nothing cancels). Returns None for a stage whose field is
    larger than ``size``.
    """
    import copy

    encoder = copy.deepcopy(module).eval().float()
    _average_instead_of_max(encoder)  # max-pool gradients reach one input only; the field is wider
    with torch.no_grad():
        for p in encoder.parameters():
            p.copy_(p.abs() + 1e-3)
    x = torch.ones(1, 3, size, size, requires_grad=True)
    out = encoder(x)
    features = out[0] if isinstance(out, tuple) else out  # ours give (features, indices); smp a list
    fields = []
    for feature in features:
        x.grad = None
        h, w = feature.shape[-2:]
        if not feature.requires_grad:  # smp's stage 0 is the input itself
            fields.append(1)
            continue
        feature[0, :, h // 2, w // 2].sum().backward(retain_graph=True)
        rows = torch.nonzero(x.grad[0].abs().sum(0).sum(1) > 0).flatten()
        if len(rows) == 0:
            fields.append(None)
            continue
        extent = int(rows.max() - rows.min() + 1)
        touches = rows.min() == 0 or rows.max() == size - 1
        fields.append(None if touches else extent)
    return fields


class _AveragePool(nn.Module):
    """An average pool with a max pool's geometry (and its ``return_indices`` signature)."""

    def __init__(self, pool: nn.MaxPool2d):
        super().__init__()
        self.pool = nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=pool.ceil_mode)
        self.return_indices = pool.return_indices

    def forward(self, x):
        out = self.pool(x)
        return (out, None) if self.return_indices else out


def _average_instead_of_max(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.MaxPool2d) and child.dilation in (1, (1, 1)):
            setattr(module, name, _AveragePool(child))
        else:
            _average_instead_of_max(child)


def describe_model(model: SegModel, receptive_fields: bool = False, size: int = 256) -> dict:
    """Stages (channels, stride), output stride, parameter counts, and optionally receptive fields."""
    net = model.net
    encoder = getattr(net, "encoder", None)
    stages = []
    if encoder is not None and hasattr(encoder, "channels") and hasattr(encoder, "reductions"):
        channels, reductions = list(encoder.channels), list(encoder.reductions)
    elif encoder is not None and hasattr(encoder, "out_channels"):  # smp encoders
        channels = list(encoder.out_channels)
        reductions = list(getattr(encoder, "_output_stride_list", None) or [2**i for i in range(len(channels))])
        if len(reductions) != len(channels):
            reductions = [2**i for i in range(len(channels))]
    else:
        channels, reductions = [], []
    fields = [None] * len(channels)
    if receptive_fields and encoder is not None:
        try:
            fields = receptive_field(encoder, size)
        except RuntimeError:
            fields = [None] * len(channels)
    for i, (c, r) in enumerate(zip(channels, reductions, strict=False)):
        stages.append({"stage": i, "channels": int(c), "stride": int(r), "receptive_field": fields[i]})
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    enc_params = sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0
    return {
        "arch": model.spec["arch"],
        "encoder": model.spec["encoder"],
        "family": encoder_family(model.spec["encoder"]),
        "num_classes": model.num_classes,
        "upsample": model.spec.get("upsample"),
        "stages": stages,
        "output_stride": max(reductions) if reductions else None,
        "input_multiple": model.pad_multiple,
        "parameters": total,
        "trainable_parameters": trainable,
        "encoder_parameters": enc_params,
        "decoder_parameters": total - enc_params,
        "normalisation": {"mean": list(model.mean), "std": list(model.std)},
    }
