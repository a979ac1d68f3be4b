"""What CNN encoders see: stage feature maps, and Grad-CAM for a class of a segmentation output.

Grad-CAM for segmentation (Vinogradova et al., 2020): the score is the sum of
one class's logits over a region (the predicted mask of that class by
default), its gradient with respect to a stage's activations is averaged per
channel, and the ReLU of the weighted channel sum is the map.

Both run the model through :class:`segnb.infer.Inference` (its preprocessing, eval mode, the
training precision; a copy of the weights, hooks included, while ``fit()`` trains it).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from segnb.infer import Inference
from segnb.tiling import at_training_scale

__all__ = ["stage_features", "grad_cam"]


def _encoder(model: nn.Module) -> nn.Module:
    net = getattr(model, "net", model)
    encoder = getattr(net, "encoder", None)
    if encoder is None:
        raise ValueError("This model has no .encoder to inspect.")
    return encoder


def _run_encoder(encoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    out = encoder(x)
    features = out[0] if isinstance(out, tuple) else out
    return [f for f in features if f.dim() == 4 and f.data_ptr() != x.data_ptr()]  # smp's stage 0 is x


def stage_features(model: nn.Module, image, top: int = 4) -> list[dict]:
    """For each encoder stage: its stride, the channel-mean map and the ``top`` strongest channels."""
    _encoder(model)
    with Inference(model) as run:
        x = at_training_scale(model, run.batch(image))  # the scale the model was trained at
        features = [f[0].float().cpu().clone() for f in _run_encoder(_encoder(run.module), x)]
    stages = []
    for f in features:  # (C, h, w)
        energy = f.abs().mean(dim=(1, 2))
        order = torch.argsort(energy, descending=True)[:top]
        stages.append({
            "stride": x.shape[-1] // f.shape[-1],
            "channels": f.shape[0],
            "mean": f.mean(0).numpy(),
            "top_channels": order.tolist(),
            "top": f[order].numpy(),
        })
    return stages


def grad_cam(model: nn.Module, image, target_class: int, stage: int = -1,
             region: np.ndarray | None = None) -> np.ndarray:
    """Grad-CAM of ``target_class`` at an encoder ``stage``, upsampled to the image, in [0, 1].

    ``region`` (H, W) bool restricts the score to those pixels; by default the
    pixels predicted as ``target_class`` (all pixels if there are none).
    """
    _encoder(model)
    with Inference(model, grad=True) as run:  # gradients on, on the model or its copy while it trains
        x = run.batch(image)
        image_size = tuple(x.shape[-2:])
        x = at_training_scale(model, x)  # the scale the model was trained at; the map comes back to the image
        captured: dict[str, torch.Tensor] = {}
        handle = _encoder(run.module).register_forward_hook(
            lambda module, inputs, output: captured.update(out=output))
        try:
            logits = run(x)  # (1, K, H, W)
        finally:
            handle.remove()
        out = captured["out"]
        features = [f for f in (out[0] if isinstance(out, tuple) else out) if f.dim() == 4]
        activation = features[stage]
        if not activation.requires_grad:
            raise ValueError(f"stage {stage} is the input itself; choose a deeper stage.")
        if region is None:
            region_t = logits.argmax(1)[0] == target_class
            if not region_t.any():
                region_t = torch.ones_like(region_t)
        else:
            region_t = torch.as_tensor(region, dtype=torch.bool, device=logits.device)
            if tuple(region_t.shape) != tuple(x.shape[-2:]):
                region_t = F.interpolate(region_t[None, None].float(), size=x.shape[-2:], mode="nearest")[0, 0] > 0
        score = logits[0, target_class][region_t].sum()
        (grad,) = torch.autograd.grad(score, activation, allow_unused=True)
    if grad is None:
        raise ValueError(f"The decoder of this model does not use encoder stage {stage}; choose another "
                         f"stage (0 to {len(features) - 1}).")
    weights = grad[0].float().mean(dim=(1, 2))  # (C,)
    cam = F.relu((weights[:, None, None] * activation[0].detach().float()).sum(0))
    cam = F.interpolate(cam[None, None], size=image_size, mode="bilinear", align_corners=False)[0, 0]
    top = cam.max()
    return (cam / top if top > 0 else cam).cpu().numpy()
