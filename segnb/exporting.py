"""Exporting a semantic model for deployment (``segnb.export``): ONNX (``.onnx``) or ``torch.export`` (``.pt2``).

The exported graph takes what a deployment has at hand: RGB images as float32 in ``[0, 1]``,
``(N, 3, H, W)`` at the size it was exported for (the training size by default), and returns
logits ``(N, K, H, W)``. The model's mean/std normalisation is **inside** the graph: a runtime
that feeds it plain pixels gets the right answer, and no file beside it can be lost or
mismatched. A JSON file beside it (``model.onnx.json``) says what the graph expects and
returns: class names, input size, the normalisation already applied, and how the model was
trained (:class:`segnb.models.io.TrainingInput`). Upsampling to the image's own size and argmax
are left to the caller, as they depend on the image.

:func:`check_export` compares the file with eager PyTorch on random images (onnxruntime on the
CPU for ONNX; tolerance: ``atol=1e-3`` and ``rtol=1e-3`` on the logits).

ONNX export needs the ``export`` extra: ``pip install "segnb[export]"`` (onnx, onnxscript,
onnxruntime).

Architectures that cannot be exported (:data:`NOT_EXPORTABLE`) are refused with the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from segnb import infer
from segnb.data.preprocess import normalize
from segnb.errors import SegnbError
from segnb.models.io import atomic_write, training_input

__all__ = ["export", "check_export", "Exportable", "NOT_EXPORTABLE", "TOLERANCE"]

TOLERANCE = {"atol": 1e-3, "rtol": 1e-3}
DEFAULT_SIZE = (256, 256)

# arch -> why it cannot be exported (tests/test_inference.py checks that each one really fails).
NOT_EXPORTABLE: dict[str, str] = {}


class Exportable(nn.Module):
    """``model`` with its normalisation in front: float32 RGB in [0, 1] -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.mean, self.std = infer.normalisation(model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(images, self.mean, self.std))  # constants in the exported graph


def _size(model, image_size) -> tuple[int, int]:
    if image_size is None:
        fixed = getattr(model, "fixed_size", None)
        record = training_input(model)
        image_size = fixed or (record.train_size if record is not None and record.train_size else DEFAULT_SIZE)
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(v) for v in image_size)
    if h < 1 or w < 1:
        raise SegnbError(f"image_size must be positive, got {image_size!r}.")
    return h, w


def _format(path: Path, format: str | None) -> str:
    fmt = format or {".onnx": "onnx", ".pt2": "torch.export"}.get(path.suffix.lower())
    if fmt not in ("onnx", "torch.export"):
        raise SegnbError(f"{path}: export writes .onnx (ONNX) or .pt2 (torch.export); give one of those suffixes, "
                         "or format='onnx' / 'torch.export'.")
    return fmt


def export(model, path, image_size=None, format: str | None = None, opset: int = 18, check: bool = True) -> Path:
    """Write ``model`` to ``path`` (``.onnx`` or ``.pt2``) and its description beside it (``<path>.json``).

    Args:
        image_size: ``(h, w)`` the graph takes; default: the training size recorded with the
            model (its fixed size for fixed-size encoders), else 256x256. The batch size is free.
        format: ``"onnx"`` or ``"torch.export"``; default: from the suffix.
        opset: the ONNX opset.
        check: compare the file with eager PyTorch on two random images (:func:`check_export`)
            and raise if they differ by more than :data:`TOLERANCE`.

    Returns the path written. Raises :class:`SegnbError` for an instance model or an
    architecture in :data:`NOT_EXPORTABLE` (with the reason), or a missing ``onnx``.
    """
    path = Path(path)
    fmt = _format(path, format)
    if infer.is_instance_model(model):
        raise SegnbError("export takes semantic models; Mask R-CNN's detections (a variable number of boxes) are "
                         "not exported by segnb. torchvision documents exporting its detection models to ONNX.")
    arch = getattr(model, "spec", {}).get("arch")
    if arch in NOT_EXPORTABLE:
        raise SegnbError(f"{arch} cannot be exported: {NOT_EXPORTABLE[arch]}")
    h, w = _size(model, image_size)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    wrapped = Exportable(model).to(device)
    modes = {m: m.training for m in model.modules()}
    wrapped.eval()
    example = torch.rand(2, 3, h, w, device=device)
    try:
        with torch.no_grad():
            if fmt == "onnx":
                _onnx(wrapped, example, path, opset)
            else:
                program = torch.export.export(wrapped, (example,), dynamic_shapes=({0: torch.export.Dim("batch",
                                                                                                       max=1024)},))
                atomic_write(path, lambda tmp: torch.export.save(program, str(tmp)), keep_suffix=True)
    except SegnbError:
        raise
    except Exception as error:  # the exporters' own errors are long; say what failed first
        raise SegnbError(f"Exporting {arch or type(model).__name__} to {fmt} failed: {type(error).__name__}: "
                         f"{str(error).splitlines()[0][:300]}") from error
    finally:
        for module, mode in modes.items():
            module.training = mode
    record = training_input(model)
    info = {
        "format": fmt,
        "input": {"name": "images", "shape": ["batch", 3, h, w], "dtype": "float32",
                  "range": "RGB in [0, 1]"},
        "output": {"name": "logits", "shape": ["batch", getattr(model, "num_classes", None), h, w]},
        "normalisation": {"mean": list(wrapped.mean), "std": list(wrapped.std), "applied": "inside the graph"},
        "class_names": list(getattr(model, "class_names", [])),
        "spec": getattr(model, "spec", None),
        "training_input": record.as_dict() if record is not None else None,
        "postprocess": "upsample the logits bilinearly to the image's size, then argmax over classes",
    }
    atomic_write(path.with_name(path.name + ".json"), lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
    if check:
        check_export(path, model, image_size=(h, w))
    return path


def _onnx(wrapped, example, path: Path, opset: int) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxscript  # noqa: F401
    except ImportError:
        raise SegnbError("ONNX export needs onnx and onnxscript: pip install 'segnb[export]' "
                         "(or export to .pt2 with torch.export, which needs nothing more).") from None
    batch = torch.export.Dim("batch", max=1024)

    def write(tmp: Path) -> None:
        torch.onnx.export(wrapped, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                          opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},), external_data=False,
                          verbose=False)

    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        atomic_write(path, write, keep_suffix=True)



def _run_file(path: Path, images: torch.Tensor) -> torch.Tensor:
    if path.suffix.lower() == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise SegnbError("Checking an ONNX file needs onnxruntime: pip install 'segnb[export]'.") from None
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    program = torch.export.load(str(path))
    with torch.no_grad():
        return program.module()(images)


def check_export(path, model, image_size=None, n: int = 2, seed: int = 0) -> float:
    """The largest absolute difference between the file's logits and eager PyTorch's (CPU, fp32) on
    ``n`` random images; raises :class:`SegnbError` beyond :data:`TOLERANCE`."""
    path = Path(path)
    h, w = _size(model, image_size)
    images = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))
    reference_model = Exportable(model)
    modes = {m: m.training for m in model.modules()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        reference_model.cpu().eval()
        with torch.no_grad():
            expected = reference_model(images)
    finally:
        model.to(device)
        for module, mode in modes.items():
            module.training = mode
    got = _run_file(path, images)
    if got.shape != expected.shape:
        raise SegnbError(f"{path}: the exported model returns {tuple(got.shape)}, eager PyTorch {tuple(expected.shape)}.")
    diff = float((got - expected).abs().max())
    if not np.allclose(got.numpy(), expected.numpy(), **TOLERANCE):
        raise SegnbError(f"{path}: the exported model differs from eager PyTorch by up to {diff:.2e} "
                         f"(tolerance atol={TOLERANCE['atol']}, rtol={TOLERANCE['rtol']}).")
    return diff
