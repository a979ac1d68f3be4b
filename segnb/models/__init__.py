"""Models: smp architectures on timm backbones and readable teaching models."""

from segnb.models.build import SegModel, build_model, list_architectures
from segnb.models.describe import describe_model, list_encoders, receptive_field
from segnb.models.io import load_model, save_model
from segnb.models.upsample import UPSAMPLE_KINDS, make_upsample

__all__ = [
    "UPSAMPLE_KINDS",
    "SegModel",
    "build_model",
    "describe_model",
    "list_architectures",
    "list_encoders",
    "load_model",
    "make_upsample",
    "receptive_field",
    "save_model",
]
