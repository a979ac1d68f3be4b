"""The twelve segmentation-models-pytorch architectures on timm backbones, registered here."""

from __future__ import annotations

from segnb.errors import ModelConfigError
from segnb.models.encoders import DILATION_FAMILIES, encoder_family
from segnb.models.registry import BuildRequest, register_architecture

__all__ = ["SMP_ARCHITECTURES", "DILATED"]

SMP_ARCHITECTURES = {
    "unet": "Unet", "unetplusplus": "UnetPlusPlus", "manet": "MAnet", "linknet": "Linknet",
    "fpn": "FPN", "pspnet": "PSPNet", "deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3Plus",
    "pan": "PAN", "upernet": "UPerNet", "segformer": "Segformer", "dpt": "DPT",
}
# Minimum input side for architectures whose pooling pyramids need room.
MIN_SIZE = {"pan": 128, "pspnet": 64}
DILATED = ("deeplabv3", "deeplabv3plus", "pan")
ALIASES = {"unetplusplus": ("unet++",), "deeplabv3plus": ("deeplab",)}


def _accepts(arch: str):
    def accepts(encoder: str, upsample: str | None) -> str | None:
        family = encoder_family(encoder)
        if upsample is not None:
            return (f"upsample= swaps the operator of segnb's teaching models (fcn*, segnet, unet-classic, "
                    f"setr-*, tiramisu); smp's {arch} has its own decoder. For smp U-Net use "
                    "decoder_interpolation='bilinear'.")
        if family == "vit" and arch != "dpt":
            return (f"{arch} needs a feature pyramid (strides 4 to 32), but {encoder} is a plain ViT with one "
                    "stride-16 token grid (smp says 'Unsupported model downsampling pattern'). Use "
                    f"build_model('dpt', '{encoder}') or build_model('setr-pup', '{encoder}'), or a "
                    "hierarchical encoder (resnet, convnext, efficientnet, swin) with this architecture.")
        if arch in DILATED and (family != "cnn" or not encoder.startswith(DILATION_FAMILIES)):
            return (f"{arch} replaces the last strides of its encoder by dilation (output_stride 8 or 16), "
                    f"and {encoder} cannot do that. Use an encoder with dilation support: resnet*, "
                    "resnext*, efficientnet*, mobilenetv3*, convnext*, regnet*; or fpn/upernet with this one.")
        return None

    return accepts


def _build(request: BuildRequest):
    import segmentation_models_pytorch as smp

    arch, encoder = request.arch, request.encoder
    options, timm_options = dict(request.options), dict(request.timm_options)
    if encoder_family(encoder) == "swin":
        size = options.pop("image_size", 224)
        request.fixed_size = (size, size) if isinstance(size, int) else tuple(size)
        timm_options["img_size"] = request.fixed_size
    else:
        options.pop("image_size", None)
    if encoder_family(encoder) == "vit":  # accept any multiple of the patch size, not only 224
        timm_options["dynamic_img_size"] = True
    try:
        return smp.create_model(
            arch, encoder_name=f"tu-{encoder}", encoder_weights=True if request.use_pretrained else None,
            classes=request.num_classes, **timm_options, **options,
        )
    except TypeError as err:
        raise ModelConfigError(f"{arch} with {encoder}: {err}. Check the architecture options.") from None
    except (AssertionError, ValueError) as err:
        raise ModelConfigError(f"{arch} cannot use the encoder {encoder} ({err or type(err).__name__}).") from None


def _dpt_multiple(net) -> int:
    """DPT's reassemble stage halves the token grid once: two patches per step."""
    patch = getattr(getattr(getattr(net.encoder, "model", None), "patch_embed", None), "patch_size", (16,))
    return 2 * patch[0]


for _name, _cls in SMP_ARCHITECTURES.items():
    register_architecture(
        _name, f"segmentation-models-pytorch {_cls}", group="smp", accepts=_accepts(_name), build=_build,
        pad_multiple=_dpt_multiple if _name == "dpt" else 32, min_size=MIN_SIZE.get(_name, 0),
        aliases=ALIASES.get(_name, ()),
    )
