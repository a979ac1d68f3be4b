"""``build_model``: every smp architecture on timm backbones, plus our teaching models.

A thin factory in the manner of ``timm.create_model``: look the architecture up
by name, check that the combination can work (and say why not, and what does),
build, and wrap the network in :class:`SegModel`, which pads any input to a
size the network accepts and crops the logits back.
"""

from __future__ import annotations

import difflib
import math
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from segnb.data.base import IMAGENET_MEAN, IMAGENET_STD
from segnb.errors import HubUnavailableError, ModelConfigError
from segnb.models.encoders import BUILTIN_ENCODERS, TimmEncoder, VGGEncoder, is_vgg
from segnb.models.upsample import UPSAMPLE_KINDS

__all__ = [
    "SMP_ARCHITECTURES",
    "TEACHING_ARCHITECTURES",
    "SegModel",
    "build_model",
    "list_architectures",
    "encoder_family",
]

SMP_ARCHITECTURES = {
    "unet": "Unet", "unetplusplus": "UnetPlusPlus", "manet": "MAnet", "linknet": "Linknet",
    "fpn": "FPN", "pspnet": "PSPNet", "deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3Plus",
    "pan": "PAN", "upernet": "UPerNet", "segformer": "Segformer", "dpt": "DPT",
}
TEACHING_ARCHITECTURES = {
    "fcn32s": "FCN-32s: stride-32 scores upsampled x32",
    "fcn16s": "FCN-16s: + stride-16 skip",
    "fcn8s": "FCN-8s: + stride-8 skip",
    "segnet": "SegNet: VGG encoder, max-unpooling decoder",
    "unet-classic": "U-Net: concatenating skips, swappable upsampling",
    "setr-naive": "SETR, naive head: 1x1 convolutions on ViT tokens, then upsample",
    "setr-pup": "SETR, progressive upsampling head",
}
# Minimum input side for architectures whose pooling pyramids need room.
MIN_SIZE = {"pan": 128, "pspnet": 64}
DILATED = ("deeplabv3", "deeplabv3plus", "pan")
ALIASES = {"unet++": "unetplusplus", "deeplab": "deeplabv3plus", "fcn": "fcn8s", "setr": "setr-pup",
           "fcn-8s": "fcn8s", "fcn-16s": "fcn16s", "fcn-32s": "fcn32s"}


def list_architectures() -> dict[str, str]:
    """Every architecture name ``build_model`` takes, with one line about it."""
    names = {k: f"segmentation-models-pytorch {v}" for k, v in SMP_ARCHITECTURES.items()}
    names.update({k: f"segnb teaching model: {v}" for k, v in TEACHING_ARCHITECTURES.items()})
    return names


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


class SegModel(nn.Module):
    """A segmentation network with what is needed to use, describe and save it.

    ``forward(x)`` takes ``(B, 3, H, W)`` of any size and returns logits
    ``(B, num_classes, H, W)``: the input is zero-padded (bottom and right)
    to a multiple of ``pad_multiple`` and at least ``min_size``, and the
    logits are cropped back.
    """

    def __init__(self, net: nn.Module, spec: dict, class_names: list[str], mean, std,
                 pad_multiple: int, min_size: int = 0, fixed_size: tuple[int, int] | None = None):
        super().__init__()
        self.net = net
        self.spec = dict(spec)
        self.class_names = list(class_names)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.pad_multiple, self.min_size, self.fixed_size = pad_multiple, min_size, fixed_size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.fixed_size is not None and (h, w) != self.fixed_size:
            y = self.net(F.interpolate(x, size=self.fixed_size, mode="bilinear", align_corners=False))
            return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        m = self.pad_multiple
        ph = max(self.min_size, math.ceil(h / m) * m) - h
        pw = max(self.min_size, math.ceil(w / m) * m) - w
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        y = self.net(x)
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y[..., :h, :w]

    def extra_repr(self) -> str:
        return f"arch={self.spec['arch']!r}, encoder={self.spec['encoder']!r}, classes={self.num_classes}"


def _resolve_arch(arch: str) -> str:
    key = ALIASES.get(arch.lower(), arch.lower())
    if key in SMP_ARCHITECTURES or key in TEACHING_ARCHITECTURES:
        return key
    raise ModelConfigError(
        f"Unknown architecture {arch!r}. Choose one of: {', '.join(list_architectures())}."
    )


def _resolve_encoder(encoder: str) -> str:
    import timm

    name = encoder[3:] if encoder.startswith("tu-") else encoder
    if name in BUILTIN_ENCODERS:
        return name
    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise ModelConfigError(
            f"Unknown encoder {encoder!r}: not a timm model. "
            + (f"Did you mean {close}? " if close else "")
            + "See segnb.list_encoders(arch, filter='resnet*')."
        )
    return name


def _normalisation(encoder: str) -> tuple[tuple, tuple]:
    if encoder in BUILTIN_ENCODERS:
        return IMAGENET_MEAN, IMAGENET_STD
    import timm

    cfg = timm.models.get_pretrained_cfg(encoder)
    if cfg is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(cfg.mean), tuple(cfg.std)


def _check_combination(arch: str, encoder: str, upsample: str | None) -> None:
    family = encoder_family(encoder)
    if upsample is not None and upsample not in UPSAMPLE_KINDS:
        raise ModelConfigError(f"Unknown upsample={upsample!r}. Choose one of {list(UPSAMPLE_KINDS)}.")
    if arch in SMP_ARCHITECTURES:
        if upsample is not None:
            raise ModelConfigError(
                f"upsample= swaps the operator of segnb's teaching models ({', '.join(TEACHING_ARCHITECTURES)}); "
                f"smp's {arch} has its own decoder. For smp U-Net use decoder_interpolation='bilinear'."
            )
        if family == "vit" and arch != "dpt":
            raise ModelConfigError(
                f"{arch} needs a feature pyramid (strides 4 to 32), but {encoder} is a plain ViT with one "
                "stride-16 token grid (smp says 'Unsupported model downsampling pattern'). Use "
                f"build_model('dpt', '{encoder}') or build_model('setr-pup', '{encoder}'), or a "
                "hierarchical encoder (resnet, convnext, efficientnet, swin) with this architecture."
            )
        if encoder in BUILTIN_ENCODERS:
            raise ModelConfigError(f"{encoder} is built into segnb's teaching models; smp's {arch} takes timm encoders.")
        if arch in DILATED and family in ("vgg", "swin", "vit"):
            raise ModelConfigError(
                f"{arch} replaces the last strides of its encoder by dilation (output_stride 8 or 16), "
                f"and {encoder} cannot do that. Use an encoder with dilation support: resnet*, "
                "resnext*, efficientnet*, mobilenetv3*, convnext*, regnet*; or fpn/upernet with this one."
            )
        return
    if family == "swin":
        raise ModelConfigError(
            f"{encoder} takes one fixed input size, which segnb's teaching models do not handle. Use it "
            "with an smp architecture (unet, fpn, upernet, ...) and image_size=, or a CNN encoder here."
        )
    if arch.startswith("setr") and family != "vit":
        raise ModelConfigError(f"SETR is a ViT model; {encoder} is not a plain ViT. Try 'vit_tiny_patch16_224' or 'test_vit'.")
    if arch == "segnet" and family != "vgg":
        raise ModelConfigError(
            f"SegNet reuses max-pooling indices, and {encoder} downsamples without max-pooling. "
            "Use encoder='vgg-small' (built in) or a timm VGG (vgg11_bn, vgg16_bn)."
        )
    if arch.startswith("fcn") or arch == "unet-classic":
        if family == "vit":
            raise ModelConfigError(
                f"{arch} needs encoder stages at several strides; {encoder} is a plain ViT (one stride). "
                f"Use build_model('setr-pup', '{encoder}') or build_model('dpt', '{encoder}')."
            )
        if upsample == "max_unpool" and family != "vgg":
            raise ModelConfigError(
                f"max_unpool needs max-pooling indices, and {encoder} downsamples with strided "
                "convolutions. Use encoder='vgg-small' or a timm VGG, or another upsample kind."
            )


def _pretrained_source(encoder: str, pretrained) -> tuple[bool, dict]:
    """Decide how to get weights: ``(use_pretrained, extra timm options)``; never waits long."""
    if pretrained is False or pretrained is None:
        return False, {}
    if isinstance(pretrained, (str, Path)) and str(pretrained) != "auto":
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelConfigError(f"pretrained={str(pretrained)!r}: no such weights file.")
        return True, {"pretrained_cfg_overlay": {"file": str(path)}}
    if encoder in BUILTIN_ENCODERS:
        if pretrained == "auto":
            return False, {}
        raise ModelConfigError(f"{encoder} is built in and has no pretrained weights; use pretrained=False.")
    import timm

    from segnb.hub import probe_repo

    cfg = timm.models.get_pretrained_cfg(encoder)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        message = f"timm has no pretrained weights for {encoder}."
        if pretrained == "auto":
            warnings.warn(message + " Using random initialisation.", stacklevel=4)
            return False, {}
        raise ModelConfigError(message + " Use pretrained=False, or a weights file path.")
    cached = _cached_weights(hub_id)
    if cached:
        return True, {"pretrained_cfg_overlay": {"file": cached}}
    status = probe_repo(hub_id, "model")
    if status.reachable and status.exists:
        return True, {}
    message = (
        f"Pretrained weights for {encoder} ({hub_id}) are not cached and the Hugging Face Hub "
        f"cannot be reached ({status.detail})."
    )
    if pretrained == "auto":
        warnings.warn(message + " Using RANDOM initialisation: expect slower training.", stacklevel=4)
        return False, {}
    raise HubUnavailableError(
        message + " Alternatives: pretrained='auto' (falls back to random weights with a warning), "
        "pretrained=False, or pretrained='/path/to/weights.safetensors'."
    )


def _cached_weights(hub_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    repo, _, revision = hub_id.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _build_smp(arch, encoder, num_classes, use_pretrained, timm_options, options):
    import segmentation_models_pytorch as smp

    options = dict(options)
    fixed = None
    if encoder_family(encoder) == "swin":
        size = options.pop("image_size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        timm_options = {**timm_options, "img_size": size}
        fixed = size
    else:
        options.pop("image_size", None)
    if encoder_family(encoder) == "vit":  # accept any multiple of the patch size, not only 224
        timm_options = {**timm_options, "dynamic_img_size": True}
    try:
        net = smp.create_model(
            arch, encoder_name=f"tu-{encoder}", encoder_weights=True if use_pretrained else None,
            classes=num_classes, **timm_options, **options,
        )
    except TypeError as err:
        raise ModelConfigError(f"{arch} with {encoder}: {err}. Check the architecture options.") from None
    except (AssertionError, ValueError) as err:
        raise ModelConfigError(f"{arch} cannot use the encoder {encoder} ({err or type(err).__name__}).") from None
    multiple = 32
    if arch == "dpt":  # its reassemble stage halves the token grid once: two patches per step
        patch = getattr(getattr(getattr(net.encoder, "model", None), "patch_embed", None), "patch_size", (16,))
        multiple = 2 * patch[0]
    return net, multiple, MIN_SIZE.get(arch, 0), fixed


def _build_teaching(arch, encoder, num_classes, upsample, use_pretrained, timm_options, options):
    from segnb.models.fcn import FCN
    from segnb.models.segnet import SegNet
    from segnb.models.setr import SETR, ViTEncoder
    from segnb.models.unet import UNet

    options = dict(options)
    options.pop("image_size", None)
    if arch.startswith("setr"):
        enc = ViTEncoder(encoder, pretrained=use_pretrained, layer=options.pop("layer", -1), **timm_options)
        net = SETR(enc, num_classes, head=arch.split("-")[1], upsample=upsample or "bilinear", **options)
        return net, enc.patch, 0, None
    encoder_class = VGGEncoder if is_vgg(encoder) else TimmEncoder
    enc = encoder_class(encoder, use_pretrained, **timm_options)
    try:
        if arch == "segnet":
            net = SegNet(enc, num_classes, upsample=upsample or "max_unpool", **options)
        elif arch == "unet-classic":
            net = UNet(enc, num_classes, upsample=upsample or "transposed4", **options)
        else:
            net = FCN(enc, num_classes, variant=int(arch[3:-1]), upsample=upsample or "transposed4", **options)
    except TypeError as err:  # an option the teaching model does not take
        raise ModelConfigError(f"{arch} with {encoder}: {err}. Check the architecture options.") from None
    return net, max(enc.reductions), 0, None


def build_model(
    arch: str,
    encoder: str = "resnet18",
    num_classes: int | None = None,
    pretrained: bool | str = False,
    upsample: str | None = None,
    class_names: list[str] | None = None,
    **options,
) -> SegModel:
    """Build a segmentation model.

    Args:
        arch: one of :func:`list_architectures`: the twelve smp architectures (``unet``,
            ``fpn``, ``deeplabv3plus``, ``segformer``, ``dpt``, ...) or a teaching model
            (``fcn32s``, ``fcn16s``, ``fcn8s``, ``segnet``, ``unet-classic``, ``setr-naive``,
            ``setr-pup``).
        encoder: a timm model name (``resnet18``, ``convnext_tiny``, ``vit_tiny_patch16_224``;
            ``tu-`` prefixes are accepted) or a built-in ``vgg-small`` / ``vgg-tiny``.
        num_classes: output classes (or give ``class_names``).
        pretrained: ``False``; ``True`` (timm's hub weights, a clear error within seconds when
            offline); ``"auto"`` (hub weights, else random with a warning); or a path to a
            ``.safetensors`` file of encoder weights.
        upsample: the x2 operator of a teaching model's decoder, one of
            :data:`segnb.models.upsample.UPSAMPLE_KINDS`.
        class_names: names of the classes, stored with the model.
        **options: passed to the architecture (e.g. ``decoder_channels``, ``encoder_depth``,
            ``head`` options); ``image_size`` sets the input size of fixed-size encoders (Swin).

    Raises:
        ModelConfigError: the combination cannot work; the message says why and what does.
    """
    key = _resolve_arch(arch)
    name = _resolve_encoder(encoder)
    if class_names is None:
        if num_classes is None:
            raise ModelConfigError("Give num_classes= (or class_names=): the number of output classes.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise ModelConfigError(f"num_classes must be a whole number, got {num_classes!r}.")
        class_names = [f"class_{i}" for i in range(num_classes)]
    elif num_classes is not None and num_classes != len(class_names):
        raise ModelConfigError(f"num_classes={num_classes} but {len(class_names)} class names were given.")
    num_classes = len(class_names)
    if num_classes < 1:
        raise ModelConfigError("A model needs at least one class.")
    _check_combination(key, name, upsample)
    use_pretrained, timm_options = _pretrained_source(name, pretrained)
    if key in SMP_ARCHITECTURES:
        net, multiple, min_size, fixed = _build_smp(key, name, num_classes, use_pretrained, timm_options, options)
    else:
        net, multiple, min_size, fixed = _build_teaching(
            key, name, num_classes, upsample, use_pretrained, timm_options, options
        )
    mean, std = _normalisation(name)
    spec = {"arch": key, "encoder": name, "num_classes": num_classes, "upsample": upsample,
            "options": _jsonable(options)}
    return SegModel(net, spec, class_names, mean, std, pad_multiple=multiple, min_size=min_size, fixed_size=fixed)


def _jsonable(options: dict) -> dict:
    import json

    try:
        json.dumps(options)
    except TypeError as err:
        raise ModelConfigError(f"Model options must be plain values (numbers, strings, lists): {err}.") from None
    return dict(options)
