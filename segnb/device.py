"""Where and at which precision a model runs: one canonical device, named one way.

Below both training and inference, so each resolves devices the same way.
"""

from __future__ import annotations

import torch

from segnb.errors import SegnbError

__all__ = ["resolve_device", "resolve_precision"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SegnbError("device='cuda' but no CUDA GPU is visible here; use device='auto' or 'cpu'.")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on GPUs that have it, ``fp16`` on older GPUs, ``fp32`` on the CPU."""
    precision = {"no": "fp32", "32": "fp32", "16": "fp16", "bfloat16": "bf16", "float16": "fp16"}.get(
        str(precision), str(precision))
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision not in ("fp32", "bf16", "fp16"):
        raise SegnbError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}.")
    if precision == "fp16" and device.type != "cuda":
        raise SegnbError("fp16 needs a CUDA GPU; on the CPU use precision='bf16' or 'fp32'.")
    return precision
