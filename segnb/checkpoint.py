"""Training checkpoints: safetensors + JSON, written atomically, read without unpickling.

A checkpoint is a folder that :func:`segnb.load_model` can read as it is
(``model.safetensors`` + ``model.json``) plus ``training.safetensors``
(optimizer tensors, RNG state) and ``training.json`` (epoch, step, history,
optimizer settings). ``<dir>/last`` and ``<dir>/best`` are symbolic links to
complete folders: a new checkpoint is written beside the old one and the link
is swapped in one rename, so a crash or a full disk mid-write leaves the
previous checkpoint intact. :func:`prepare_directory` runs before the first
epoch: it checks that the folder can be written with room for the checkpoints,
and removes what killed writes left behind.
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

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_checkpoint", "rng_state", "restore_rng_state",
           "prepare_directory"]


def rng_state() -> dict[str, torch.Tensor]:
    """The random streams a resumed run continues: the CPU's, and each visible GPU's."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    return tensors


def restore_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    """Set the streams :func:`rng_state` saved; GPUs beyond those saved (or visible) are left alone."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(len(tensors)) if f"rng.cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available():
        count = min(len(cuda), torch.cuda.device_count())
        for i in range(count):
            torch.cuda.set_rng_state(cuda[i], i)


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
        tensors.update(rng_state())
        save_file(tensors, str(folder / "training.safetensors"))
        meta = {
            "epoch": epoch, "step": step, "history": history, "optimizer": plain,
            "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
            **(extra or {}),
        }
        (folder / "training.json").write_text(json.dumps(meta, indent=1))
        link, old = directory / tag, None
        if link.is_dir() and not link.is_symlink():
            # A copied run folder (copytree, a file manager) holds a real folder here, not a link:
            # move it aside as an ordinary hidden checkpoint so the link can take its place.
            old = directory / f".{tag}-copied-{uuid.uuid4().hex[:6]}"
            link.rename(old)
        elif link.is_symlink():
            old = link.resolve()
        tmp_link = directory / f".{tag}.link-{uuid.uuid4().hex[:6]}"
        os.symlink(folder.name, tmp_link)
        try:
            os.replace(tmp_link, link)  # the atomic swap
        finally:
            if tmp_link.is_symlink():  # never leave a dangling link behind
                tmp_link.unlink()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if old is not None and old.resolve() != folder.resolve() and old.resolve().parent == directory.resolve():
        if not any((directory / t).is_symlink() and (directory / t).resolve() == old for t in ("last", "best")):
            shutil.rmtree(old, ignore_errors=True)
    return folder


def prepare_directory(directory, model, copies: int = 3) -> Path:
    """Before the first epoch: make ``directory``, clean up after killed writes, check it is
    writable with room for ``copies`` checkpoints (``last``, ``best`` and one being written).

    A checkpoint is estimated at three times the model's weights (the weights and AdamW's two
    moments). Raises :class:`CheckpointError` saying what is wrong and what to do.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".segnb-write-test-{uuid.uuid4().hex[:6]}"
        probe.write_bytes(b"segnb")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(
            f"Checkpoints cannot be written to {directory} ({err.strerror or err}). Choose a folder you can "
            "write to (checkpoint_dir=..., or --out on the command line)."
        ) from None
    clean_orphans(directory)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    needed = copies * 3 * weights + (16 << 20)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise CheckpointError(
            f"{directory} has {free / 2**20:,.0f} MiB free, and the checkpoints of this model need about "
            f"{needed / 2**20:,.0f} MiB ({copies} checkpoints of {3 * weights / 2**20:,.0f} MiB). Free some "
            "space or choose another folder."
        )
    return directory


def clean_orphans(directory) -> list[Path]:
    """Remove hidden checkpoint folders no link points to, and dangling temporary links,
    left by writes that were killed (``kill -9``, a full disk); returns what was removed."""
    directory = Path(directory)
    kept = {(directory / t).resolve() for t in ("last", "best") if (directory / t).is_symlink()}
    removed = []
    for path in directory.iterdir():
        name = path.name
        if name.startswith((".last.link-", ".best.link-")) and path.is_symlink():
            path.unlink()
        elif name.startswith((".last-", ".best-")) and path.is_dir() and not path.is_symlink():
            if path.resolve() in kept:
                continue
            shutil.rmtree(path, ignore_errors=True)
        else:
            continue
        removed.append(path)
    return removed


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
