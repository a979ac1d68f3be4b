"""One registration per architecture, next to its code (in the spirit of timm's ``register_model``).

Each model file ends with a call such as::

    register_architecture(
        "segnet", "SegNet: VGG encoder, max-unpooling decoder",
        accepts=vgg_only, build=_build_segnet, pad_multiple=max_reduction,
        upsample="max_unpool", default_encoder="vgg-small",
    )

and everything that needs to know about architectures reads this table:
:func:`segnb.build_model`, :func:`segnb.list_architectures`,
:func:`segnb.list_encoders`, :func:`segnb.describe_model` and the Studio's
ModelBuilder. Adding an architecture is one new model file ending with its registration:
``segnb/models/__init__.py`` imports every module of the package, so nothing else changes.

An architecture whose code sits in a higher layer (Mask R-CNN, in ``segnb.instances``, runs its
own training and evaluation) registers itself the same way from its own module, which
:data:`PROVIDERS` names: the registry imports those modules on the first lookup. Read the
registrations through :func:`architectures` or :func:`get_architecture`, which load them.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from segnb.errors import ModelConfigError

__all__ = ["Architecture", "BuildRequest", "ARCHITECTURES", "PROVIDERS", "architectures", "register_architecture",
           "get_architecture"]

# The modules above this package's layer that register architectures, imported by name on the first
# lookup, as a plugin table. This is the inversion: segnb.models never imports their code (an import
# that would point up the layers); each of them imports this registry and registers itself.
PROVIDERS = ("segnb.instances.maskrcnn",)
_LOADED: set[str] = set()


@dataclass
class BuildRequest:
    """What a builder gets: the resolved encoder name, classes, operator, weights and options.

    A builder may set ``fixed_size`` (encoders that take one input size, e.g. Swin).
    """

    arch: str
    encoder: str
    num_classes: int
    class_names: list[str]
    upsample: str | None
    use_pretrained: bool
    timm_options: dict
    options: dict
    fixed_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class Architecture:
    """A registered architecture.

    Attributes:
        name: the key of :func:`build_model`.
        summary: one line for :func:`list_architectures`.
        group: ``"smp"``, ``"teaching"`` or ``"instance"``.
        accepts: ``accepts(encoder, upsample) -> None`` when the combination works, else the
            reason and what works instead (one sentence a user can act on).
        build: ``build(request) -> nn.Module``.
        pad_multiple: inputs are padded to a multiple of this (int), or ``f(net) -> int``.
        min_size: smallest input side the network accepts (pooling pyramids).
        upsample: the default ``upsample=`` operator, or None when the architecture has its own.
        own_encoders: encoder names the architecture provides itself (built in, no timm).
        default_encoder: the encoder used when none is given.
        wrap: wrap the network in :class:`SegModel` (semantic logits); False for models that
            are complete themselves (Mask R-CNN).
        listed: ``listed(timm_name) -> bool``, which timm names :func:`list_encoders` offers.
    """

    name: str
    summary: str
    group: str
    accepts: Callable[[str, str | None], str | None]
    build: Callable[[BuildRequest], nn.Module]
    pad_multiple: int | Callable[[nn.Module], int] = 32
    min_size: int = 0
    upsample: str | None = None
    own_encoders: tuple[str, ...] = ()
    default_encoder: str = "resnet18"
    wrap: bool = True
    listed: Callable[[str], bool] | None = None
    aliases: tuple[str, ...] = field(default=())

    def multiple_for(self, net: nn.Module) -> int:
        return self.pad_multiple(net) if callable(self.pad_multiple) else int(self.pad_multiple)


ARCHITECTURES: dict[str, Architecture] = {}
_ALIASES: dict[str, str] = {}


def register_architecture(name: str, summary: str, *, group: str, accepts, build, **settings) -> Architecture:
    """Register an architecture under ``name`` (and its ``aliases=``); returns the registration."""
    key = name.lower()
    if key in ARCHITECTURES:
        raise ValueError(f"architecture {name!r} is registered twice")
    arch = Architecture(key, summary, group, accepts, build, **settings)
    ARCHITECTURES[key] = arch
    for alias in arch.aliases:
        _ALIASES[alias.lower()] = key
    return arch


def _load_providers() -> None:
    """Import each module of :data:`PROVIDERS` once; one that fails to import says which it is."""
    for module in PROVIDERS:
        if module in _LOADED:
            continue
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(f"segnb cannot load the architectures that {module} registers: {err}") from err
        _LOADED.add(module)


def architectures() -> dict[str, Architecture]:
    """Every registration, by name: this package's files first, then those of :data:`PROVIDERS`."""
    _load_providers()
    return ARCHITECTURES


def get_architecture(name: str) -> Architecture:
    """The registration of ``name`` (or an alias); a clear error with close names otherwise."""
    _load_providers()
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key in ARCHITECTURES:
        return ARCHITECTURES[key]
    close = difflib.get_close_matches(key, [*ARCHITECTURES, *_ALIASES], n=3, cutoff=0.6)
    raise ModelConfigError(
        f"Unknown architecture {name!r}. "
        + (f"Did you mean {', '.join(repr(c) for c in close)}? " if close else "")
        + f"Choose one of: {', '.join(ARCHITECTURES)}."
    )
