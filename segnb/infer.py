"""One home for inference: every place that runs a model to look at its output goes through here.

:class:`Inference` is used by ``predict``, ``evaluate``, the validation pass of
``fit``, and everything in :mod:`segnb.inspect` (attention maps, Grad-CAM,
stage features, decoder activations). It

- applies the model's own preprocessing (:func:`normalisation` is the one place
  that looks up its mean and std);
- runs under ``torch.inference_mode`` (or with gradients, for Grad-CAM) and
  autocast at the precision the model was trained at;
- puts every submodule in eval mode and gives each its own mode back afterwards;
- returns logits for a semantic model, and one dict of detections per image for an
  instance model (Mask R-CNN, :func:`is_instance_model`, :class:`InstanceModel`);
- while ``fit()`` trains the model in another thread, works on a copy of the
  weights taken between two steps, so looking never touches the weights being
  trained: no batch-norm mode switch, no hooks, no fused-attention toggles on them.

It also keeps the list of models being trained, so a second ``fit()`` on the
same model is refused while the first runs (:func:`claim`).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable
from typing import Protocol, TypeGuard

import numpy as np
import torch
import torch.nn as nn

from segnb.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize
from segnb.device import resolve_device, resolve_precision
from segnb.errors import SegnbError
from segnb.models.io import between_steps_source

__all__ = ["Inference", "InstanceModel", "is_instance_model", "normalisation", "to_tensor", "claim", "release",
           "training_run", "AUTOCAST_DTYPES"]

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}

_RUNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> weakref to its Trainer
_PRECISION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> precision it was trained at
_LOCK = threading.Lock()


def normalisation(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The model's ``(mean, std)``: its encoder's pretraining statistics, ImageNet's if it has none."""
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if mean is None or std is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(mean), tuple(std)


class InstanceModel(Protocol):
    """What an instance model brings itself, so that the layers below its code never import it.

    ``segnb.instances`` sits above training, evaluation and prediction; the model object carries
    its own behaviour, and those layers call it, on ``task == "instance"``, by these names:

    - ``training_task``: ``(model, data, loss_fn) -> Task``, what ``fit()`` trains it with
      (:class:`segnb.train.Task`; a semantic model has none and gets ``SemanticTask``);
    - ``evaluate_split(data, split, batch_size, image_size, device, precision)``: its scores on
      one split (mask AP), what ``segnb.evaluate`` returns;
    - ``predict_images(images, batch_size, device, precision)``: its detections per image, what
      ``segnb.predict`` returns.

    :class:`segnb.instances.maskrcnn.MaskRCNNModel` is one.
    """

    task: str
    training_task: Callable

    def evaluate_split(self, data, split: str | None, batch_size: int, image_size, device,
                       precision: str | None): ...
    def predict_images(self, images, batch_size: int, device, precision: str | None) -> list: ...


def is_instance_model(model: nn.Module) -> TypeGuard[InstanceModel]:
    """True for a model that returns detections (boxes, labels, scores, masks), not logits."""
    return getattr(model, "task", "semantic") == "instance"


def to_tensor(image, mean, std) -> torch.Tensor:
    """A ``uint8`` (H, W, 3) image as a normalised float tensor (3, H, W); a tensor passes unchanged."""
    if isinstance(image, torch.Tensor):
        return image.float()
    return normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), mean, std)


# ---------------------------------------------------------------------- models being trained


def claim(model: nn.Module, trainer) -> None:
    """Mark ``model`` as being trained by ``trainer``; refuse if another run trains it now."""
    with _LOCK:
        other = training_run(model)
        if other is not None and other is not trainer:
            raise SegnbError(
                f"This model is already being trained (step {other.step} of {other.total_steps}). "
                "Two fit() calls on one model would race on the same weights: wait for the first "
                "(handle.wait()) or stop it (handle.stop(), the Stop button), or build a second model."
            )
        _RUNS[model] = weakref.ref(trainer)


def release(model: nn.Module, trainer) -> None:
    """The run is over: ``model`` is free again, and remembers the precision it was trained at."""
    with _LOCK:
        ref = _RUNS.get(model)
        if ref is not None and ref() is trainer:
            del _RUNS[model]
        _PRECISION[model] = trainer.precision


def training_run(model: nn.Module):
    """The :class:`segnb.train.Trainer` training ``model`` right now, or None."""
    ref = _RUNS.get(model)
    trainer = ref() if ref is not None else None
    return trainer if trainer is not None and trainer.active else None


def _between_steps(model: nn.Module):
    """The copy of ``model`` taken between two steps while another thread trains it, else None."""
    trainer = training_run(model)
    if trainer is not None and trainer.thread is not threading.current_thread():
        return trainer.snapshot()
    return None


between_steps_source(_between_steps)  # save_model saves this copy during a background fit


# ---------------------------------------------------------------------- inference


class Inference:
    """``with Inference(model) as run: logits = run(run.batch(image))``.

    Args:
        model: a segnb model, or any module mapping (B, 3, H, W) to logits (B, K, H, W).
        device: where to run; default: where the model's weights are.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``; default: the precision the
            model is (or was last) trained at in this process, else ``fp32``.
        grad: keep autograd on (Grad-CAM needs gradients); otherwise ``inference_mode``.

    ``run.module`` is the module that really runs: the model itself, or, while another
    thread trains it, a copy of its weights taken between two training steps. Add hooks
    or change attention settings on ``run.module`` only.
    """

    def __init__(self, model: nn.Module, device=None, precision: str | None = None, grad: bool = False):
        self.model, self.grad = model, grad
        trainer = training_run(model)
        if trainer is not None and trainer.thread is not threading.current_thread():
            self.module = trainer.snapshot()  # another thread trains the model: look at a copy
        else:
            self.module = model  # nobody trains it, or we are the training thread between two steps
        if device is not None:
            self.module = self.module.to(resolve_device(device))
        self.device = _device_of(self.module)
        if precision is None:
            precision = trainer.precision if trainer is not None else _PRECISION.get(model, "fp32")
        if precision == "fp16" and self.device.type != "cuda":
            precision = "fp32"  # trained on a GPU in fp16, looked at on the CPU
        self.precision = resolve_precision(precision, self.device)
        self.mean, self.std = normalisation(model)
        self._modes: dict[nn.Module, bool] = {}
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> Inference:
        self._modes = {m: m.training for m in self.module.modules()}
        self.module.eval()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(torch.enable_grad() if self.grad else torch.inference_mode())
        dtype = AUTOCAST_DTYPES[self.precision]
        if dtype is not None:
            self._stack.enter_context(torch.autocast(self.device.type, dtype=dtype))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        for module, mode in self._modes.items():  # each submodule gets its own mode back
            module.training = mode

    def tensor(self, image) -> torch.Tensor:
        """One image, ``uint8`` (H, W, 3) or normalised (3, H, W), as (3, H, W) on the device."""
        return to_tensor(image, self.mean, self.std).to(self.device)

    def batch(self, image) -> torch.Tensor:
        """One image as a batch (1, 3, H, W); a normalised (1, 3, H, W) tensor passes unchanged."""
        if isinstance(image, torch.Tensor) and image.dim() == 4:
            return image.float().to(self.device)
        return self.tensor(image)[None]

    @property
    def instance(self) -> bool:
        """The model is an instance model: :meth:`__call__` returns detections."""
        return is_instance_model(self.model)

    def __call__(self, x: torch.Tensor) -> torch.Tensor | list[dict]:
        """Logits (B, K, H, W) in float32. An instance model gives one dict per image instead:
        ``boxes`` (N, 4), ``labels`` (N,) in the dataset's class ids, ``scores`` (N,) and
        ``masks`` (N, 1, H, W) soft masks pasted into the image, floats in float32."""
        x = x.to(self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if self.instance:
            return [{k: v.float() if v.is_floating_point() else v for k, v in d.items()} for d in self.module(x)]
        return self.module(x).float()


def _device_of(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
