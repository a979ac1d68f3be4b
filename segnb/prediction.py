"""Class probabilities and masks for raw images: :func:`predict` and its :class:`Prediction`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segnb import infer, tiling
from segnb.data.preprocess import to_rgb_uint8
from segnb.device import resolve_device
from segnb.errors import InputError, SegnbError
from segnb.infer import Inference, to_tensor
from segnb.models.io import training_input

__all__ = ["Prediction", "predict"]


@dataclass
class Prediction:
    """Soft masks ``probs`` (N, C, H, W) and hard masks ``masks`` (N, H, W), at the input resolution.

    When the images' sizes differ, ``probs`` and ``masks`` are lists of (C, H, W) and (H, W) tensors.
    """

    probs: torch.Tensor | list[torch.Tensor]
    masks: torch.Tensor | list[torch.Tensor]


def predict(model, images, batch_size: int = 8, device="auto", temperature: float = 1.0,
            precision: str | None = None, image_size=None, tile=None, overlap: float = 0.25, tta=None,
            blend: str = "gaussian") -> Prediction:
    """Class probabilities and argmax masks for raw images, at each image's own resolution.

    ``images``: one image array, a list of them (of any sizes: images of one size are batched
    together), or an already normalised float tensor (N, 3, H, W) / (3, H, W). An array may be
    grey (H, W) or (H, W, 1), RGB (H, W, 3) or RGBA (H, W, 4, alpha dropped), of any dtype, read
    as the datasets read images (:func:`segnb.data.base.to_rgb_uint8`): uint8 0..255, 16-bit
    0..65535, float 0..1 (or 0..255 when a value exceeds 1); anything else is refused. The
    model's own mean and std are applied; it runs in eval mode and gets its mode back (see
    :class:`Inference`).

    Each image runs at the model's training scale (recorded by :func:`segnb.fit`, see
    :class:`segnb.models.io.TrainingInput`), and the logits are upsampled bilinearly back to the
    image's size. ``image_size=(h, w)`` runs it at another size (with a one-line note).

    Args:
        tile: sliding-window inference with tiles of ``(h, w)`` at the model's scale, blended with
            a smooth window (``blend``: ``"gaussian"`` or ``"linear"``); ``overlap`` is the share
            two neighbours have. Default: automatic, with the training size as tile, when the
            scaled image is more than twice the training size; ``tile=False``: never.
        tta: test-time augmentation: ``("hflip",)``, ``("hflip", 0.75, 1.0, 1.25)``, ...; the
            softmax probabilities of the views are averaged.

    An instance model (Mask R-CNN) gives a list with one :class:`segnb.instances.train.Instances`
    per image instead: ``boxes``, ``labels``, ``scores``, ``masks`` (bool) and ``soft``.
    """
    images = _inputs(images)
    if infer.is_instance_model(model):  # the model predicts itself (segnb.infer.InstanceModel)
        if temperature != 1.0:
            raise SegnbError("temperature= scales a semantic model's logits; an instance model has none. "
                             "Leave it out (filter detections by their scores instead).")
        return model.predict_images(images, batch_size, device, precision)
    if not temperature > 0:
        raise SegnbError(f"temperature must be positive, got {temperature!r}.")
    tiling.check_tta(tta)
    tensors = images
    tiling.note_size(model, image_size)
    record = training_input(model)
    probs: list[torch.Tensor | None] = [None] * len(tensors)
    with Inference(model, device=resolve_device(device), precision=precision) as run:
        tensors = [to_tensor(t, run.mean, run.std) for t in tensors]
        by_size: dict[tuple, list[int]] = {}
        for i, t in enumerate(tensors):
            by_size.setdefault(tuple(t.shape), []).append(i)
        for shape, indices in by_size.items():
            size, tile_size = tiling.plan(record, shape[-2:], image_size, tile)
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                x = tiling.resize_image(torch.stack([tensors[i] for i in chunk]).to(run.device), size)
                scores, soft = tiling.views(run, x, shape[-2:], tile=tile_size, overlap=overlap, tta=tta,
                                            temperature=temperature, blend=blend, batch_size=batch_size)
                p = scores if soft else torch.softmax(scores / temperature, dim=1)
                for i, one in zip(chunk, p.cpu(), strict=True):
                    probs[i] = one
    probs = [p.clone() for p in probs]  # ordinary tensors, free to change outside inference mode
    if len(by_size) == 1:
        stacked = torch.stack(probs)
        return Prediction(probs=stacked, masks=stacked.argmax(1))
    return Prediction(probs=probs, masks=[p.argmax(0) for p in probs])


def _inputs(images) -> list:
    """``predict``'s images as a list of ``uint8`` (H, W, 3) arrays and normalised float (3, H, W) tensors."""
    if isinstance(images, torch.Tensor):
        if images.dim() not in (3, 4):
            raise InputError(f"a tensor given to predict is taken as normalised images (N, 3, H, W) or (3, H, W); "
                             f"this one is {tuple(images.shape)}. Give raw pixels as a numpy array instead.")
        items = list(images) if images.dim() == 4 else [images]
    elif isinstance(images, np.ndarray) and images.ndim in (2, 3):
        items = [images]  # one image: grey (H, W), or (H, W, C)
    elif isinstance(images, np.ndarray) and images.ndim != 4:
        raise InputError(f"predict takes one image (H, W) / (H, W, C), a batch (N, H, W, C) or a list of images; "
                         f"got an array of shape {images.shape}.")
    elif isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise InputError(f"predict takes image arrays (or a list of them), not {type(images).__name__}; read a "
                         "file with np.asarray(PIL.Image.open(path)).")
    else:
        items = list(images)
    if not items:
        raise InputError("predict was given no images.")
    out = []
    for i, item in enumerate(items):
        label = f"image {i}" if len(items) > 1 else "the image"
        if isinstance(item, torch.Tensor):
            if item.dim() != 3 or item.shape[0] != 3 or not item.is_floating_point() or item.numel() == 0:
                raise InputError(
                    f"{label}: a tensor is taken as a normalised float image (3, H, W); got {item.dtype} "
                    f"{tuple(item.shape)}. Give raw pixels as a numpy array (uint8, 16-bit or float 0..1) instead.")
            if not torch.isfinite(item).all():
                raise InputError(f"{label}: the tensor holds NaN or infinite values.")
            out.append(item.float())
        else:
            out.append(to_rgb_uint8(np.asarray(item), label, InputError))
    return out
