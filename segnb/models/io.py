"""Saving and loading models: safetensors weights plus a JSON spec. Nothing is unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from segnb.errors import CheckpointError
from segnb.models.build import SegModel, build_model

__all__ = ["save_model", "load_model", "read_model_info", "atomic_write", "TrainingInput", "training_input"]

FORMAT = "segnb-model/1"
RESIZE_RULE = "bilinear with antialias (image), nearest (mask)"


def _pair(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))


@dataclass(frozen=True)
class TrainingInput:
    """How a model saw its images in training: what inference applies by default.

    Attributes:
        size: the input size ``(height, width)`` every training image was resized to;
            None when the images were kept at their own size.
        source_size: the training images' own size when they all had one, else None.
        resize: the resize rule (bilinear with antialias for images).
        mean, std: the normalisation.
        zoom: the geometric centre of the random rescaling in training (``augment_scale``):
            ``augment_scale=(4, 4)`` with ``image_size=128`` on 512 px slices trains on 128 px
            crops at full resolution, so the model's scale is 4 x 128 / 512 = 1.

    ``scale`` (``zoom * size / source_size`` per axis, 1.0 at native size) is known when the
    training images had one size; a new image is then scaled by it, whatever its size,
    so objects appear as large as in training. With mixed-size training images and a
    ``size``, each image is resized to ``zoom * size``, as in training.
    """

    size: tuple[int, int] | None
    source_size: tuple[int, int] | None = None
    resize: str = RESIZE_RULE
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    zoom: float = 1.0

    @property
    def scale(self) -> tuple[float, float] | None:
        if self.source_size is None:
            return None
        size = self.size or self.source_size
        return (self.zoom * size[0] / self.source_size[0], self.zoom * size[1] / self.source_size[1])

    @property
    def run_size(self) -> tuple[int, int] | None:
        """The size a training-size image runs at: ``zoom * size``."""
        if self.size is None:
            return None
        return (max(1, round(self.size[0] * self.zoom)), max(1, round(self.size[1] * self.zoom)))

    @property
    def train_size(self) -> tuple[int, int] | None:
        """The size of the inputs the network saw: ``size``, or the images' own size."""
        return self.size or self.source_size

    def as_dict(self) -> dict:
        return {"size": list(self.size) if self.size else None,
                "source_size": list(self.source_size) if self.source_size else None,
                "scale": list(self.scale) if self.scale else None,
                "resize": self.resize, "mean": list(self.mean), "std": list(self.std), "zoom": self.zoom}

    @classmethod
    def from_dict(cls, data: dict) -> TrainingInput:
        return cls(size=_pair(data.get("size")), source_size=_pair(data.get("source_size")),
                   resize=data.get("resize", RESIZE_RULE), mean=tuple(data.get("mean", ())),
                   std=tuple(data.get("std", ())), zoom=float(data.get("zoom", 1.0)))

    def describe(self) -> str:
        if self.size is None:
            return "at the images' own size" + (f" ({self.source_size[0]}x{self.source_size[1]})"
                                                if self.source_size else "")
        text = f"at {self.size[0]}x{self.size[1]}"
        if self.zoom != 1.0:
            text += f" crops of images zoomed x{self.zoom:g}"
        return text + (f" (from {self.source_size[0]}x{self.source_size[1]})" if self.source_size else "")


def training_input(model) -> TrainingInput | None:
    """The :class:`TrainingInput` that :func:`segnb.fit` recorded on ``model`` (or that was loaded
    with it); None when unknown (a model saved before segnb recorded it, or never trained)."""
    return getattr(model, "training_input", None)

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


def atomic_write(path: Path, write, keep_suffix: bool = False) -> None:
    """Write through ``write(tmp_path)`` to a temporary file, then rename over ``path``.

    A crash or a full disk leaves the previous file intact. ``keep_suffix``: the temporary file
    ends like ``path`` (for writers that choose the format by the suffix, as torch.export.save).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix if keep_suffix else "",
                               dir=path.parent)
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
    It also holds how the model saw its images in training (``input``: size, source size and
    scale, resize rule, mean and std; see :class:`TrainingInput`), which inference applies.
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
    # None: not trained by fit() at a recorded scale (built and saved, an instance model, a hand-written
    # loop): images run at their own size. Files from before segnb recorded it have no key at all.
    record = training_input(model)
    meta["input"] = record.as_dict() if record is not None else None

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
    if spec.get("arch") == "click-unet":  # written by fit(checkpoint_dir=...) on an interactive click model
        raise CheckpointError(
            f"{folder} holds a click model's training checkpoint, which load_model does not build. Continue "
            "its training with fit(click_model, data, resume=<its checkpoint folder>); to keep a trained click "
            "model, save it with click_model.save(path) and load it with segnb.interactive.ClickModel.load(path)."
        )
    model = build_model(spec["arch"], spec["encoder"], class_names=meta["class_names"], pretrained=False,
                        upsample=spec.get("upsample"), **spec.get("options", {}))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights_path} does not match the model in {meta_path}: {err}") from None
    if meta.get("data_source"):
        model.trained_on = {"data_source": meta["data_source"], "data_options": meta.get("data_options", {})}
    if isinstance(meta.get("input"), dict):
        model.training_input = TrainingInput.from_dict(meta["input"])
    elif "input" not in meta and getattr(model, "task", "semantic") == "semantic":
        warnings.warn(f"{folder}: the size this model was trained at is unknown (saved before segnb recorded "
                      "it): images run at their own size; pass image_size=(h, w) to run it at its training size.",
                      stacklevel=2)
    return model.to(device)
