"""``build_model``: every smp architecture on timm backbones, plus our teaching models.

A thin factory in the manner of ``timm.create_model``: look the architecture up
by name, check that the combination can work (and say why not, and what does),
build, and wrap the network in :class:`SegModel`, which pads any input to a
size the network accepts and crops the logits back.
"""

from __future__ import annotations

import difflib
import math
import pickle
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from segnb.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from segnb.errors import HubUnavailableError, ModelConfigError
from segnb.models.encoders import encoder_family
from segnb.models.registry import BuildRequest, architectures, get_architecture
from segnb.models.upsample import UPSAMPLE_KINDS

__all__ = [
    "SegModel",
    "build_model",
    "list_architectures",
    "encoder_family",
    "check_combination",
    "resolve_arch",
    "resolve_encoder",
]


def list_architectures(group: str | None = None) -> dict[str, str]:
    """Every architecture name ``build_model`` takes, with one line about it.

    ``group`` keeps one kind: ``"smp"``, ``"teaching"`` or ``"instance"``.
    """
    order = {"smp": 0, "teaching": 1, "instance": 2}
    ranked = sorted(architectures().values(), key=lambda a: order.get(a.group, 3))  # stable within a group
    return {arch.name: arch.summary for arch in ranked if group in (None, arch.group)}


def __getattr__(name: str):
    # The old module-level table, now read from the registry.
    if name == "SMP_ARCHITECTURES":
        return {k: a.summary for k, a in architectures().items() if a.group == "smp"}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def resolve_arch(arch: str) -> str:
    """The registered name of ``arch`` (aliases such as ``deeplab`` resolved); a clear error otherwise."""
    return get_architecture(arch).name


def _all_own_encoders() -> dict[str, list[str]]:
    owners: dict[str, list[str]] = {}
    for arch in architectures().values():
        for name in arch.own_encoders:
            owners.setdefault(name, []).append(arch.name)
    return owners


def resolve_encoder(encoder: str) -> str:
    """A timm model name (``tu-`` prefix dropped) or a built-in encoder; close names suggested otherwise."""
    import timm

    name = encoder[3:] if encoder.startswith("tu-") else encoder
    owners = _all_own_encoders()
    if name in owners:
        return name
    if not timm.is_model(name.split(".")[0]):
        close = difflib.get_close_matches(name, [*owners, *timm.list_models()], n=5, cutoff=0.6)
        raise ModelConfigError(
            f"Unknown encoder {encoder!r}: not a timm model nor one built into segnb. "
            + (f"Did you mean {close}? " if close else "")
            + "See segnb.list_encoders(arch, filter='resnet*')."
        )
    return name


def _normalisation(encoder: str) -> tuple[tuple, tuple]:
    if encoder in _all_own_encoders():
        return IMAGENET_MEAN, IMAGENET_STD
    import timm

    cfg = timm.models.get_pretrained_cfg(encoder)
    if cfg is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(cfg.mean), tuple(cfg.std)


def check_combination(arch: str, encoder: str, upsample: str | None) -> None:
    """Raise :class:`ModelConfigError` saying why ``arch`` cannot use ``encoder``/``upsample``, and what can.

    ``arch`` and ``encoder`` are resolved names (:func:`resolve_arch`, :func:`resolve_encoder`).
    """
    registration = get_architecture(arch)
    if upsample is not None and upsample not in UPSAMPLE_KINDS:
        raise ModelConfigError(f"Unknown upsample={upsample!r}. Choose one of {list(UPSAMPLE_KINDS)}.")
    owners = _all_own_encoders().get(encoder)
    if owners and encoder not in registration.own_encoders:
        raise ModelConfigError(
            f"{encoder} is built into segnb's {', '.join(owners)}; {arch} takes "
            + (f"{', '.join(registration.own_encoders)} or " if registration.own_encoders else "")
            + "timm encoders (resnet18, convnext_tiny, ...)."
        )
    if upsample is not None and registration.upsample is None and registration.group != "smp":
        raise ModelConfigError(f"{arch} has no swappable upsampling operator; leave upsample=None.")
    problem = registration.accepts(encoder, upsample)
    if problem:
        raise ModelConfigError(problem)


def _pretrained_source(encoder: str, pretrained) -> tuple[bool, dict]:
    """Decide how to get weights: ``(use_pretrained, extra timm options)``; never waits long."""
    if pretrained is False or pretrained is None:
        return False, {}
    if isinstance(pretrained, (str, Path)) and str(pretrained) != "auto":
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelConfigError(f"pretrained={str(pretrained)!r}: no such weights file.")
        if path.suffix != ".safetensors":
            path = _pickle_to_safetensors(path)
        return True, {"pretrained_cfg_overlay": {"file": str(path)}}
    if encoder in _all_own_encoders():
        if pretrained == "auto":
            return False, {}
        raise ModelConfigError(f"{encoder} is built in and has no pretrained weights; use pretrained=False.")
    import timm

    from segnb.network_check import probe_repo

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


def build_model(
    arch: str,
    encoder: str | None = None,
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
            ``tu-`` prefixes are accepted) or a built-in ``vgg-small`` / ``vgg-tiny``; None
            takes the architecture's default (``resnet18`` for most).
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
    registration = get_architecture(arch)
    key = registration.name
    name = resolve_encoder(encoder if encoder is not None else registration.default_encoder)
    if class_names is None:
        if num_classes is None:
            raise ModelConfigError("Give num_classes= (or class_names=): the number of output classes.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise ModelConfigError(f"num_classes must be a whole number, got {num_classes!r}.")
        class_names = [f"class_{i}" for i in range(num_classes)]
    elif num_classes is not None and num_classes != len(class_names):
        raise ModelConfigError(f"num_classes={num_classes} but {len(class_names)} class names were given.")
    class_names = list(class_names)
    num_classes = len(class_names)
    if num_classes < 1:
        raise ModelConfigError("A model needs at least one class.")
    check_combination(key, name, upsample)
    use_pretrained, timm_options = _pretrained_source(name, pretrained)
    build_options = dict(options)
    if registration.group == "teaching":
        build_options.pop("image_size", None)
    request = BuildRequest(key, name, num_classes, class_names, upsample or registration.upsample,
                           use_pretrained, timm_options, build_options)
    try:
        net = registration.build(request)
    except TypeError as err:  # an option this architecture does not take
        raise ModelConfigError(f"{key} with {name}: {err}. Check the architecture options.") from None
    spec = {"arch": key, "encoder": name, "num_classes": num_classes, "upsample": upsample,
            "options": _jsonable(options)}
    mean, std = _normalisation(name)
    if not registration.wrap:
        net.spec, net.class_names, net.mean, net.std = spec, class_names, mean, std
        return net
    return SegModel(net, spec, class_names, mean, std, pad_multiple=registration.multiple_for(net),
                    min_size=registration.min_size, fixed_size=request.fixed_size)


def _pickle_to_safetensors(path: Path) -> Path:
    """Read a torch pickle with ``weights_only=True`` (tensors only, nothing executed) into safetensors.

    timm would otherwise unpickle the file itself, objects and all. A file holding anything
    but tensors stops with :func:`_pickle_message`, never with torch's advice to unpickle it.
    """
    import hashlib
    import tempfile

    from safetensors.torch import save_file

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's weights_only refusal of pickled code is this type
        raise ModelConfigError(_pickle_message(path)) from None
    except (RuntimeError, EOFError, OSError) as err:
        message = str(err).split("\n")[0]
        raise ModelConfigError(f"pretrained={str(path)!r} cannot be read as weights ({message}).") from None
    for key in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelConfigError(
            f"pretrained={str(path)!r} holds no state dict of tensors. Pass a .safetensors file of the "
            "encoder's weights (timm's own names, e.g. conv1.weight)."
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"segnb-weights-{digest}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    return target


def _pickle_message(path) -> str:
    return (
        f"pretrained={str(path)!r} is a pickle file holding more than tensors. segnb never "
        "unpickles arbitrary objects: a pickle can run any code when it is loaded. Convert it once, "
        "where you trust the file: `sd = torch.load(path, weights_only=True)` for a plain state dict "
        "(or the trusted tool that made it), then `safetensors.torch.save_file(sd, "
        "'weights.safetensors')`, and pass that .safetensors file."
    )


def _jsonable(options: dict) -> dict:
    import json

    try:
        json.dumps(options)
    except TypeError as err:
        raise ModelConfigError(f"Model options must be plain values (numbers, strings, lists): {err}.") from None
    return dict(options)
