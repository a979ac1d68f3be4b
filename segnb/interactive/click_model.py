"""The click model: an smp U-Net on the image plus two click maps, trained on simulated clicks."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from segnb.data.preprocess import normalize
from segnb.infer import Inference
from segnb.interactive.clicks import (
    CLICK_RADIUS,
    click_maps,
    default_classes,
    next_click,
    object_masks,
)

__all__ = ["ClickModel", "train_click_model"]

# The click model's own input scale: [0, 1] less 0.5 (saved click models expect it).
CLICK_MEAN, CLICK_STD = (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)

class ClickModel:
    """An smp U-Net on 5 channels (RGB + positive + negative click maps) -> one object logit.

    ``predict(image, clicks)`` returns the object probability (H, W) for one uint8 RGB image and
    a list of ``(x, y, positive)`` clicks.
    """

    def __init__(self, net: torch.nn.Module | None = None, encoder: str = "tu-mobilenetv3_small_050",
                 click_radius: float = CLICK_RADIUS):
        if net is None:
            import segmentation_models_pytorch as smp

            net = smp.Unet(encoder, encoder_weights=None, in_channels=5, classes=1,
                           decoder_channels=(64, 32, 16, 16, 8))
        self.net, self.encoder, self.click_radius = net, encoder, click_radius
        self.history: list[float] = []

    @staticmethod
    def inputs(images: np.ndarray, maps: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 images + (B, 2, H, W) click maps -> (B, 5, H, W) network input."""
        x = normalize(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2), CLICK_MEAN, CLICK_STD)
        return torch.cat([x, torch.from_numpy(maps)], dim=1)

    def logits(self, x: torch.Tensor, net: torch.nn.Module | None = None) -> torch.Tensor:
        """(B, 5, H, W) inputs -> (B, H, W) object logits of ``net`` (default: this model's)."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32  # the U-Net needs sides divisible by 32
        y = (net or self.net)(F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x)
        return y[:, 0, :h, :w]

    def predict_batch(self, images: np.ndarray, clicks_per_image) -> np.ndarray:
        """(B, H, W, 3) images and one click list per image -> (B, H, W) object probabilities."""
        maps = np.stack([click_maps(c, images.shape[1:3], self.click_radius) for c in clicks_per_image])
        with Inference(self.net) as run:  # eval mode and no autograd; every module's mode back afterwards
            x = self.inputs(images, maps).to(run.device)
            return torch.sigmoid(self.logits(x, run.module)).float().cpu().numpy()

    def predict(self, image: np.ndarray, clicks) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"ClickModel.predict takes one RGB image (H, W, 3), got {image.shape}.")
        return self.predict_batch(image[None], [list(clicks)])[0]

    def save(self, path) -> Path:
        """Weights as safetensors, with the format, encoder, click radius and history in its metadata."""
        import json

        from safetensors.torch import save_file

        path = Path(path)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(path), metadata={"format": "segnb-click-model/1", "encoder": self.encoder,
                                              "click_radius": json.dumps(self.click_radius),
                                              "history": json.dumps(self.history)})
        return path

    @classmethod
    def load(cls, path) -> ClickModel:
        """A click model saved by :meth:`save` (never unpickled: safetensors holds tensors only)."""
        import json

        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"No click model at {path}.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as error:  # truncated or foreign files
            raise ValueError(f"{path} is not a segnb click model (saved by ClickModel.save): {error}") from None
        if meta.get("format") != "segnb-click-model/1":
            raise ValueError(f"{path} is not a segnb click model (saved by ClickModel.save).")
        model = cls(encoder=meta["encoder"], click_radius=json.loads(meta["click_radius"]))
        model.net.load_state_dict(state)
        model.history = list(json.loads(meta.get("history", "[]")))
        return model


def _sample_clicks(rng: np.random.Generator, target: np.ndarray, max_extra: int = 4) -> list[tuple]:
    """Training clicks for one object: an interior positive click, then a few random ones around it."""
    distance = ndimage.distance_transform_edt(np.pad(target, 1))[1:-1, 1:-1]
    inner = np.argwhere(distance >= max(1.0, 0.4 * distance.max()))
    y, x = inner[rng.integers(len(inner))]
    clicks = [(int(x), int(y), True)]
    near = ndimage.binary_dilation(target, iterations=12) & ~target
    for positive, pool in ((True, np.argwhere(distance >= 2)), (False, np.argwhere(near))):
        for _ in range(rng.integers(0, max_extra + 1) if len(pool) else 0):
            y, x = pool[rng.integers(len(pool))]
            clicks.append((int(x), int(y), positive))
    return clicks


def _crop(image, target, size, rng):
    h, w = target.shape
    if h <= size and w <= size:
        return image, target
    ys, xs = np.nonzero(target)
    i = rng.integers(len(ys))
    y0 = int(np.clip(ys[i] - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, h - size))
    x0 = int(np.clip(xs[i] - size // 2 + rng.integers(-size // 4, size // 4 + 1), 0, w - size))
    return image[y0:y0 + size, x0:x0 + size], target[y0:y0 + size, x0:x0 + size]


def train_click_model(data, steps: int = 600, seconds: float | None = 120.0, batch_size: int = 8,
                      crop: int = 64, lr: float = 3e-3, classes=None, min_area: int = 30, seed: int = 0,
                      iterative: float = 0.5, model: ClickModel | None = None, progress=None,
                      clock=time.perf_counter) -> ClickModel:
    """Train a :class:`ClickModel` on a dataset's training split with simulated clicks.

    Each sample is one object (a connected region of a class in ``classes``; for the built-in
    shapes, the four thing classes), cropped to ``crop`` px around it, with an interior positive
    click and up to four random positive/negative clicks near it. With probability ``iterative``
    the current model first predicts from those clicks and one more click is added at its
    largest error (as at evaluation time), the iterative training of RITM.

    Stops after ``steps`` steps or ``seconds`` seconds, whichever comes first; the learning rate
    decays (cosine) over that same budget. ``clock`` measures the seconds: wall time by default;
    ``time.process_time`` counts the CPU time of this process instead, which on a machine shared
    with other jobs is what one free core would have taken (with one torch thread).
    ``progress(step, loss)`` is called every 20 steps.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    split = data[data.train_split]
    classes = default_classes(data) if classes is None else list(classes)
    pool = []
    for index in range(len(split)):
        image, mask = split[index]
        for target in object_masks(mask, classes, min_area):
            pool.append((index, target))
    if not pool:
        raise ValueError(f"No objects of classes {classes} with at least {min_area} pixels in the training split.")
    model = model or ClickModel()
    optimiser = torch.optim.AdamW(model.net.parameters(), lr=lr, weight_decay=1e-4)
    start = clock()
    for step in range(steps):
        # cosine decay over whichever budget (steps or seconds) runs out first, after 20 warm-up steps
        done = max(step / steps, (clock() - start) / seconds if seconds else 0.0)
        for group in optimiser.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        images, targets, clicks = [], [], []
        for _ in range(batch_size):
            index, target = pool[rng.integers(len(pool))]
            image, target = _crop(split[index][0], target, crop, rng)
            if rng.random() < 0.5:  # flips: the shapes are lit from the top-left; keep the model general
                image, target = image[:, ::-1], target[:, ::-1]
            images.append(image)
            targets.append(target)
            clicks.append(_sample_clicks(rng, target) if target.any() else [])
        images, targets = np.stack(images), np.stack(targets)
        if iterative and rng.random() < iterative:
            probs = model.predict_batch(images, clicks)
            for b in range(batch_size):
                click = next_click(probs[b] > 0.5, targets[b])
                if click is not None:
                    clicks[b] = clicks[b] + [click]
        model.net.train()
        maps = np.stack([click_maps(c, images.shape[1:3], model.click_radius) for c in clicks])
        logits = model.logits(model.inputs(images, maps))
        y = torch.from_numpy(targets.astype(np.float32))
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum((1, 2)) + 1) / (p.sum((1, 2)) + y.sum((1, 2)) + 1)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        model.history.append(loss.item())
        if progress is not None and step % 20 == 0:
            progress(step, model.history[-1])
        if seconds is not None and clock() - start > seconds:
            break
    return model
