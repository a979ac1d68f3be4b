"""Discovery: which encoders fit an architecture, and what a built model looks like inside."""

from __future__ import annotations

import copy
import fnmatch

import torch
import torch.nn as nn

from segnb.models.build import SegModel
from segnb.models.encoders import encoder_family
from segnb.models.registry import get_architecture

__all__ = ["list_encoders", "describe_model", "receptive_field"]


def list_encoders(arch: str = "unet", filter: str = "*", pretrained: bool = False) -> list[str]:
    """Encoder names that work with ``arch``, optionally matching a wildcard ``filter``.

    Read from the architecture's registration: its own built-in encoders first,
    then the timm names its rules accept (verified in the tests on ResNet,
    ConvNeXt, EfficientNet, MobileNet, Swin, VGG and ViT/DeiT): a plain ViT
    works only with ``dpt`` and SETR; dilated architectures (DeepLab, PAN) need
    a family with ``output_stride``; SegNet needs max-pooling (VGG).
    """
    import timm

    registration = get_architecture(arch)
    own = [n for n in registration.own_encoders if fnmatch.fnmatch(n, filter)]
    works = registration.listed or (lambda name: registration.accepts(name, None) is None)
    timm_names = timm.list_models(filter, pretrained=pretrained)
    return own + [n for n in timm_names if n not in own and works(n)]


def receptive_field(module: nn.Module, size: int = 256) -> list[int | None]:
    """Receptive field (pixels, one side) of each encoder stage, measured by gradients.

    The gradient of one centre output of a stage with respect to the input is
    non-zero exactly inside that output's receptive field (weights made positive
    on a copy, so nothing cancels). Returns None for a stage whose field is
    larger than ``size``.
    """
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


def _measured_stages(model, encoder: nn.Module) -> tuple[list[int], list[int]]:
    """Channels and strides of the encoder's stages, measured on one forward pass.

    Measured, not read from attributes: a dilated encoder (DeepLab's output_stride 8)
    keeps stride 8 in its last stages whatever its nominal pyramid says.
    """
    fixed = getattr(model, "fixed_size", None)
    multiple = int(getattr(model, "pad_multiple", 32) or 32)
    side = fixed or (max(64, 2 * multiple, getattr(model, "min_size", 0)),) * 2
    # On a copy in eval mode: the model itself keeps every module's mode and statistics, even while
    # another thread trains it (the Studio describes the model it is training).
    probe = copy.deepcopy(encoder).eval()
    weight = next(probe.parameters())
    with torch.no_grad():
        out = probe(torch.zeros(1, 3, *side, dtype=weight.dtype, device=weight.device))
    features = out[0] if isinstance(out, tuple) else out  # ours give (features, indices); smp a list
    if isinstance(features, dict):  # torchvision-style backbones
        features = list(features.values())
    features = [f for f in features if isinstance(f, torch.Tensor) and f.ndim == 4]
    channels = [int(f.shape[1]) for f in features]
    reductions = [round(side[1] / f.shape[-1]) for f in features]
    return channels, reductions


def describe_model(model: SegModel, receptive_fields: bool = False, size: int = 256) -> dict:
    """Stages (channels, stride), output stride, parameter counts, and optionally receptive fields."""
    net = getattr(model, "net", model)
    encoder = getattr(net, "encoder", None)
    stages = []
    channels, reductions = _measured_stages(model, encoder) if encoder is not None else ([], [])
    fields = [None] * len(channels)
    if receptive_fields and encoder is not None:
        try:
            fields = receptive_field(encoder, size)
        except RuntimeError:
            fields = [None] * len(channels)
    if len(fields) != len(channels):
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
        "output_stride": max(reductions) if reductions else None,  # measured
        "input_multiple": getattr(model, "pad_multiple", None),
        "parameters": total,
        "trainable_parameters": trainable,
        "encoder_parameters": enc_params,
        "decoder_parameters": total - enc_params,
        "normalisation": {"mean": list(model.mean), "std": list(model.std)},
    }
