"""Saving and loading models: safetensors weights plus a JSON spec. Nothing is unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from segnb.errors import CheckpointError
from segnb.models.build import SegModel, build_model

__all__ = ["save_model", "load_model", "read_model_info", "atomic_write"]

FORMAT = "segnb-model/1"

# While another thread trains a model, its weights change mid-step (batch-norm statistics move in
# the forward pass, parameters at the optimizer step). segnb.infer registers here the function
# that gives the copy taken between two steps (or None when nobody else trains the model).
_between_steps = []


def between_steps_source(function) -> None:
    """Register ``function(model) -> copy or None``: what :func:`save_model` saves while a model trains."""
    _between_steps[:] = [function]


def _consistent(model):
    for function in _between_steps:
        copy = function(model)
        if copy is not None:
            return copy
    return model


def atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temporary file, then rename over ``path``.

    A crash or a full disk leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(model: SegModel, path, extra: dict | None = None, data=None) -> Path:
    """Save to a folder ``path`` holding ``model.safetensors`` and ``model.json``.

    The JSON holds the sha256 of the weights (checked on load) and, when known, the dataset
    the model was trained on (``data_source``, ``data_options``): from ``data`` or from
    ``model.trained_on``, which :func:`segnb.fit` sets. ``segnb eval`` uses it as its default.
    """
    from safetensors.torch import save_file

    folder = Path(path)
    # During a background fit: the weights from between two steps, never half a step's.
    state = {k: v.detach().contiguous().cpu().clone() for k, v in _consistent(model).state_dict().items()}
    trained_on = data.provenance() if data is not None else getattr(model, "trained_on", None)
    meta = {
        "format": FORMAT,
        "spec": model.spec,
        "class_names": model.class_names,
        "normalisation": {"mean": list(model.mean), "std": list(model.std)},
        **(trained_on or {}),
        **(extra or {}),
    }

    def write_weights(tmp: Path) -> None:
        save_file(state, str(tmp))
        meta["weights_sha256"] = sha256(tmp)

    atomic_write(folder / "model.safetensors", write_weights)
    atomic_write(folder / "model.json", lambda p: p.write_text(json.dumps(meta, indent=2)))
    return folder


def read_model_info(path) -> dict:
    """The JSON written next to a saved model (spec, classes, dataset, checksum)."""
    meta_path = Path(path) / "model.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{Path(path)}: expected model.json and model.safetensors (saved by segnb.save_model).")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path} is damaged or not a segnb model file ({err}).") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} is damaged or not a segnb model file (not a JSON object).")
    return meta


def load_model(path, device: str | torch.device = "cpu") -> SegModel:
    """Rebuild a model saved by :func:`save_model` (or a checkpoint folder) exactly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    meta_path, weights_path = folder / "model.json", folder / "model.safetensors"
    if not meta_path.is_file() or not weights_path.is_file():
        raise CheckpointError(f"{folder}: expected model.json and model.safetensors (saved by segnb.save_model).")
    try:
        meta = json.loads(meta_path.read_text())
        spec = meta["spec"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path} is damaged or not a segnb model file ({err}).") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights_path} is truncated or damaged ({err}); use another checkpoint.") from None
    expected = meta.get("weights_sha256")  # absent in files saved before checksums: still loaded
    if expected is not None and sha256(weights_path) != expected:
        raise CheckpointError(
            f"{weights_path} does not match the checksum in {meta_path}: the weights were changed or "
            "damaged after saving (a bit flip, a partial copy). Copy the model folder again, or use "
            "another checkpoint."
        )
    model = build_model(spec["arch"], spec["encoder"], class_names=meta["class_names"], pretrained=False,
                        upsample=spec.get("upsample"), **spec.get("options", {}))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights_path} does not match the model in {meta_path}: {err}") from None
    if meta.get("data_source"):
        model.trained_on = {"data_source": meta["data_source"], "data_options": meta.get("data_options", {})}
    return model.to(device)
