"""Models: smp architectures on timm backbones and readable teaching models."""

import importlib
import pkgutil

from segnb.models.build import SegModel, build_model, list_architectures
from segnb.models.describe import describe_model, list_encoders, receptive_field
from segnb.models.io import load_model, save_model
from segnb.models.registry import architectures, register_architecture
from segnb.models.upsample import UPSAMPLE_KINDS, make_upsample

__all__ = [
    "ARCHITECTURES",
    "UPSAMPLE_KINDS",
    "SegModel",
    "build_model",
    "describe_model",
    "list_architectures",
    "list_encoders",
    "load_model",
    "make_upsample",
    "receptive_field",
    "register_architecture",
    "save_model",
]

# Each architecture file registers itself (segnb/models/registry.py) when imported: import every
# module of this package, so a new architecture is one new file with its registration. Those of a
# higher layer (registry.PROVIDERS) are imported by the registry on its first lookup.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def __getattr__(name: str):
    # ARCHITECTURES is read through the registry, so it holds its providers' architectures too.
    if name == "ARCHITECTURES":
        return architectures()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
