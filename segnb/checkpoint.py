"""Training checkpoints: safetensors + JSON, written atomically, read without unpickling.

A checkpoint is a folder that :func:`segnb.load_model` can read as it is
(``model.safetensors`` + ``model.json``) plus ``training.safetensors``
(optimizer tensors, RNG state) and ``training.json`` (epoch, step, history,
optimizer settings). ``<dir>/last`` and ``<dir>/best`` are symbolic links to
complete folders: a new checkpoint is written beside the old one and the link
is swapped in one rename, so a crash or a full disk mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from segnb.errors import CheckpointError
from segnb.models.io import save_model

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoint"]


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        plain_values = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                plain_values[key] = value
        plain["state"][str(index)] = plain_values
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state = {int(i): dict(v) for i, v in plain["state"].items()}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(directory, tag: str, model, optimizer, scaler, epoch: int, step: int,
                    history: dict, extra: dict | None = None) -> Path:
    """Write ``<directory>/<tag>`` (``last`` or ``best``) atomically; returns the real folder."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    folder = directory / f".{tag}-{step:08d}-{uuid.uuid4().hex[:6]}"
    try:
        save_model(model, folder)
        tensors, plain = _flatten_optimizer(optimizer.state_dict())
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, rng in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = rng
        save_file(tensors, str(folder / "training.safetensors"))
        meta = {
            "epoch": epoch, "step": step, "history": history, "optimizer": plain,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            **(extra or {}),
        }
        (folder / "training.json").write_text(json.dumps(meta, indent=1))
        link = directory / tag
        tmp_link = directory / f".{tag}.link-{uuid.uuid4().hex[:6]}"
        old = link.resolve() if link.is_symlink() else None
        os.symlink(folder.name, tmp_link)
        os.replace(tmp_link, link)  # the atomic swap
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if old is not None and old != folder.resolve() and old.parent == directory.resolve():
        if not any((directory / t).is_symlink() and (directory / t).resolve() == old for t in ("last", "best")):
            shutil.rmtree(old, ignore_errors=True)
    return folder


def resolve_checkpoint(path) -> Path:
    """A checkpoint folder from a run directory (its ``last``), a ``last``/``best`` link, or a folder."""
    path = Path(path)
    if (path / "last" / "training.json").is_file():
        return (path / "last").resolve()
    if (path / "training.json").is_file():
        return path.resolve()
    raise CheckpointError(
        f"{path}: no checkpoint here (expected training.json, or a run folder with last/). "
        "Give the --out folder of an earlier run, or its last/ or best/ folder."
    )


def load_checkpoint(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(training meta, tensors)`` of a checkpoint; the model itself loads with ``load_model``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_checkpoint(path)
    try:
        meta = json.loads((folder / "training.json").read_text())
        tensors = load_file(str(folder / "training.safetensors"))
    except (json.JSONDecodeError, SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{folder} is truncated or damaged ({err}); use another checkpoint.") from None
    meta["optimizer_state"] = _unflatten_optimizer(tensors, meta["optimizer"])
    meta["folder"] = str(folder)
    return meta, tensors
