"""Where and at which precision a model runs: one canonical device, named one way.

Below both training and inference, so each resolves devices the same way. A
device is compared only in its canonical form, the one its tensors report:
``cuda`` becomes ``cuda:<current device>`` and ``cpu:0`` becomes ``cpu``.
``torch.device("cuda:0") == torch.device("cuda")`` is False, so comparing
spellings sends a cache that is on the GPU down the host path.
"""

from __future__ import annotations

import torch

from segnb.errors import SegnbError

__all__ = ["resolve_device", "resolve_precision", "canonical_device", "same_device"]


def canonical_device(device: str | torch.device) -> torch.device:
    """``device`` as a tensor on it names it: with an index where the backend has one (``cuda:0``),
    without one where it has none (``cpu``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
    if device.type == "cpu":
        return torch.device("cpu")
    return torch.empty(0, device=device).device


def same_device(a: str | torch.device, b: str | torch.device) -> bool:
    return canonical_device(a) == canonical_device(b)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the GPU if there is one, else the CPU; always in canonical form."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise SegnbError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SegnbError("device='cuda' but no CUDA GPU is visible here; use device='auto' or 'cpu'.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SegnbError(f"device={str(device)!r} but only {torch.cuda.device_count()} GPU(s) are visible here.")
    return canonical_device(device)


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
