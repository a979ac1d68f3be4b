"""The click model: an smp U-Net on the image plus two click maps, trained on simulated clicks by ``fit()``.

:class:`ClickModel` is the network. :class:`ClickTask` is what it brings to the training loop
(the :class:`segnb.train.Task` protocol, as Mask R-CNN brings its own): batches of object
crops with simulated clicks, BCE + Dice on the object logit with the iterative clicks of RITM,
and the mean IoU after one click on a fixed sample of validation objects. So the click model
trains through :func:`segnb.train.fit` like every other model, with its progress, Stop,
history and run record; :func:`train_click_model` is ``fit`` with the click model's options.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset

from segnb.callbacks import Callback
from segnb.data.preprocess import to_rgb_uint8
from segnb.errors import DatasetError, InputError, SegnbError
from segnb.infer import Inference, to_tensor
from segnb.interactive.clicks import (
    CLICK_RADIUS,
    ClickReport,
    click_maps,
    default_classes,
    first_click,
    next_click,
    object_masks,
)
from segnb.losses import Dice
from segnb.train.history import History

__all__ = ["ClickModel", "ClickSampling", "ClickTask", "CLICK_FIT", "train_click_model"]

# The click model's own input scale: [0, 1] less 0.5 (saved click models expect it).
CLICK_MEAN, CLICK_STD = (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)
FORMAT = "segnb-click-model/2"  # /1: the same weights, with the step losses of the old loop as history
# fit()'s options as the click model trains (train_click_model's defaults; the others are fit's own).
CLICK_FIT = {"batch_size": 8, "lr": 3e-3, "weight_decay": 1e-4, "warmup_steps": 20}
# Validation: the first objects of the validation split of at least this many pixels (as
# evaluate_clicks: smaller ones cannot reach a high IoU), each scored after one click.
VALIDATION_OBJECTS, VALIDATION_MIN_AREA = 64, 100


@dataclass
class ClickSampling:
    """How the training samples are drawn (see :class:`ClickObjects`).

    Args:
        crop: side of the square crop around each object, in pixels.
        iterative: the share of samples that get one more click at the current model's largest error.
        classes: the classes whose connected regions are objects (default: the dataset's things;
            for the built-in shapes, the four thing classes).
        min_area: objects smaller than this many pixels are not trained on.
        extra_clicks: at most this many random positive, and as many negative, clicks per sample.
    """

    crop: int = 64
    iterative: float = 0.5
    classes: list[int] | None = None
    min_area: int = 30
    extra_clicks: int = 4


class ClickModel(nn.Module):
    """An smp U-Net on 5 channels (RGB + positive + negative click maps) -> one object logit.

    ``predict(image, clicks)`` returns the object probability (H, W) for one uint8 RGB image and
    a list of ``(x, y, positive)`` clicks. ``fit(model, data)`` trains it with :class:`ClickTask`
    (``training_task``) and the model's ``sampling``; ``history`` is its last training's.
    """

    task = "click"  # neither class logits nor detections: predict, evaluate and run records tell it apart
    mean, std = CLICK_MEAN, CLICK_STD
    class_names = ("background", "object")

    def __init__(self, net: nn.Module | None = None, encoder: str = "tu-mobilenetv3_small_050",
                 click_radius: float = CLICK_RADIUS, sampling: ClickSampling | None = None):
        super().__init__()
        if net is None:
            import segmentation_models_pytorch as smp

            net = smp.Unet(encoder, encoder_weights=None, in_channels=5, classes=1,
                           decoder_channels=(64, 32, 16, 16, 8))
        self.net, self.encoder, self.click_radius = net, encoder, click_radius
        self.sampling = sampling or ClickSampling()
        self.history = History()

    @property
    def spec(self) -> dict:
        """What a run records of the model: network, click radius and how its samples are drawn."""
        return {"arch": "click-unet", "encoder": self.encoder, "click_radius": self.click_radius,
                "sampling": asdict(self.sampling)}

    @property
    def training_task(self):
        """What ``fit()`` trains this model with (:class:`segnb.train.Task`): :class:`ClickTask`."""
        return functools.partial(ClickTask, sampling=self.sampling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 5, H, W) inputs (:meth:`inputs`) -> (B, 1, H, W) object logits."""
        h, w = x.shape[-2:]
        ph, pw = (-h) % 32, (-w) % 32  # the U-Net needs sides divisible by 32
        y = self.net(F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x)
        return y[:, :, :h, :w]

    def inputs(self, images: torch.Tensor, clicks_per_image) -> torch.Tensor:
        """(B, 3, H, W) normalised images + one click list per image -> (B, 5, H, W) network input."""
        maps = np.stack([click_maps(c, tuple(images.shape[-2:]), self.click_radius) for c in clicks_per_image])
        return torch.cat([images, torch.from_numpy(maps).to(images.device, images.dtype)], dim=1)

    def predict_batch(self, images: np.ndarray, clicks_per_image) -> np.ndarray:
        """(B, H, W, 3) images and one click list per image -> (B, H, W) object probabilities.

        Images of any dtype and layout are read as the datasets read them
        (:func:`segnb.data.preprocess.to_rgb_uint8`: 16-bit, float 0..1, grey, RGBA)."""
        images = [to_rgb_uint8(image, f"image {i}", InputError) for i, image in enumerate(images)]
        if len({image.shape for image in images}) > 1:
            raise InputError("predict_batch takes images of one size; call predict for each image instead.")
        with Inference(self) as run:  # eval mode and no autograd; every module's mode back afterwards
            x = torch.stack([run.tensor(image) for image in images])  # (B, 3, H, W)
            return torch.sigmoid(run(self.inputs(x, clicks_per_image))[:, 0]).cpu().numpy()

    def predict(self, image: np.ndarray, clicks) -> np.ndarray:
        """The object probability (H, W) for one image (any dtype: see :meth:`predict_batch`)."""
        return self.predict_batch([image], [list(clicks or [])])[0]

    def save(self, path, history: History | None = None) -> Path:
        """Weights as safetensors, with the format, encoder, click radius and training history (``history``,
        by default the model's own) in its metadata."""
        from safetensors.torch import save_file

        from segnb.models.io import atomic_write

        path = Path(path)
        state = {k: v.detach().contiguous().cpu() for k, v in self.net.state_dict().items()}
        meta = {"format": FORMAT, "encoder": self.encoder, "click_radius": json.dumps(self.click_radius),
                "history": json.dumps((history or self.history).as_dict())}
        atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))
        return path

    @classmethod
    def load(cls, path) -> ClickModel:
        """A click model saved by :meth:`save`, now or before it trained through ``fit()`` (never
        unpickled: safetensors holds tensors only)."""
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
        if meta.get("format") not in (FORMAT, "segnb-click-model/1"):
            raise ValueError(f"{path} is not a segnb click model (saved by ClickModel.save).")
        model = cls(encoder=meta["encoder"], click_radius=json.loads(meta["click_radius"]))
        model.net.load_state_dict(state)
        saved = json.loads(meta.get("history", "[]"))
        model.history = History.from_dict(saved) if isinstance(saved, dict) else _step_losses(saved)
        return model


def _step_losses(losses: list[float]) -> History:
    """The history of a model saved before it trained through ``fit()``: its step losses, as one epoch."""
    if not losses:
        return History()
    return History(epochs=[{"epoch": 1, "step": len(losses), "train_loss": float(np.mean(losses))}],
                   steps=len(losses), stopped="completed")


# ---------------------------------------------------------------------------------- samples


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


def _crop(image: np.ndarray, target: np.ndarray, size: int, centre: tuple[int, int]):
    """The ``size`` x ``size`` window around ``centre`` (y, x), kept inside the image; a smaller image is
    padded (black, not the object) to that size, so every sample of a batch has one size."""
    h, w = target.shape
    y0 = int(np.clip(centre[0] - size // 2, 0, max(0, h - size)))
    x0 = int(np.clip(centre[1] - size // 2, 0, max(0, w - size)))
    image, target = image[y0:y0 + size, x0:x0 + size], target[y0:y0 + size, x0:x0 + size]
    ph, pw = size - target.shape[0], size - target.shape[1]
    if ph or pw:
        image, target = np.pad(image, ((0, ph), (0, pw), (0, 0))), np.pad(target, ((0, ph), (0, pw)))
    return image, target


class ClickObjects(Dataset):
    """Item ``i``: object ``i`` of ``objects`` (image index, mask) in a crop, with its clicks.

    Training: a crop of ``sampling.crop`` px around a random pixel of the object, flipped left to
    right half of the time (the shapes are lit from the top left: the model stays general); an
    interior positive click and up to ``sampling.extra_clicks`` random positive and negative ones;
    and ``iterate``, true for a share ``sampling.iterative`` of the samples. The random draws come
    from ``(seed, epoch, i)``: the same for the same seed, new each epoch (``set_epoch``, which the
    training loop calls). Validation (``train=False``): a crop centred on the object and the first
    click of the papers (its most interior pixel); nothing random.

    Returns ``(image, target)``: the normalised image (3, crop, crop) and
    ``{"mask": (crop, crop) int64 0/1, "clicks": [(x, y, positive), ...], "iterate": bool}``.
    """

    def __init__(self, split, objects: list[tuple[int, np.ndarray]], sampling: ClickSampling, mean, std,
                 seed: int = 0, train: bool = True):
        self.split, self.objects, self.sampling = split, objects, sampling
        self.mean, self.std, self.seed, self.train, self.epoch = mean, std, seed, train, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.objects)

    def __getitem__(self, i: int):
        index, target = self.objects[i]
        image, size = self.split[index][0], self.sampling.crop
        ys, xs = np.nonzero(target)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            k = rng.integers(len(ys))
            dy, dx = rng.integers(-(size // 4), size // 4 + 1, size=2)
            image, target = _crop(image, target, size, (ys[k] + dy, xs[k] + dx))
            if rng.random() < 0.5:
                image, target = image[:, ::-1], target[:, ::-1]
            clicks = _sample_clicks(rng, target, self.sampling.extra_clicks)
            iterate = bool(rng.random() < self.sampling.iterative)
        else:
            image, target = _crop(image, target, size, ((ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2))
            clicks, iterate = [first_click(target)], False
        mask = torch.from_numpy(np.ascontiguousarray(target, dtype=np.int64))
        return to_tensor(image, self.mean, self.std), {"mask": mask, "clicks": clicks, "iterate": iterate}


def _collate(items):
    images, targets = zip(*items, strict=True)
    return torch.stack(images), list(targets)


def _objects(split, classes, min_area: int, limit: int | None = None) -> list[tuple[int, np.ndarray]]:
    """(image index, mask) of each object of ``split`` (its first ``limit`` when given)."""
    found = []
    for index in range(len(split)):
        found += [(index, target) for target in object_masks(split[index][1], classes, min_area)]
        if limit is not None and len(found) >= limit:
            return found[:limit]
    return found


# ---------------------------------------------------------------------------------- the task


class ClickTask:
    """The click model's :class:`segnb.train.Task`.

    - ``loaders``: batches of object crops with simulated clicks (:class:`ClickObjects`), each
      training object once per epoch in a shuffled order; validation: the first
      :data:`VALIDATION_OBJECTS` objects of the validation split of at least
      :data:`VALIDATION_MIN_AREA` pixels, each centred in a crop, with one click.
    - ``losses``: first the iterative training of RITM: the samples marked ``iterate`` are
      predicted by the current model (eval mode, no gradients, through
      :class:`segnb.infer.Inference`) and get one more click at its largest error, as at
      evaluation time; then BCE and Dice (:class:`segnb.losses.Dice`, per image) on the object
      logit, two terms whose epoch means go into the history (``bce``, ``dice``).
    - ``scores``: ``first_click_iou``, the mean IoU after one click on the validation objects
      (``monitor``), and ``val_loss`` (BCE + Dice on them); ``trainer.scores`` is a
      :class:`ClickReport` of those IoUs.
    """

    monitor = "first_click_iou"
    own_loss = "bce + dice (BCE and per-image Dice on the object logit)"

    def __init__(self, model: ClickModel, data, loss_fn=None, sampling: ClickSampling | None = None):
        self.model, self.data = model, data
        self.sampling = sampling or ClickSampling()
        self.classes = default_classes(data) if self.sampling.classes is None else list(self.sampling.classes)
        self.dice = Dice(per_image=True)
        self.train_set: ClickObjects | None = None

    def loaders(self, trainer):
        config, data, sampling = trainer.config, self.data, self.sampling
        if config.cache not in ("auto", False):
            raise SegnbError("The click model trains on object crops drawn for each epoch: use cache=False "
                             "(or 'auto').")
        train_split, eval_split = data[data.train_split], data[data.eval_split]
        objects = _objects(train_split, self.classes, sampling.min_area)
        if not objects:
            raise DatasetError(f"No objects of classes {self.classes} with at least {sampling.min_area} pixels "
                               f"in the training split {data.train_split!r}: nothing to train the click model on.")
        validation = _objects(eval_split, self.classes, max(VALIDATION_MIN_AREA, sampling.min_area),
                              VALIDATION_OBJECTS)
        mean, std = trainer.normalisation()
        self.train_set = ClickObjects(train_split, objects, sampling, mean, std, seed=config.seed)
        workers = 0 if config.num_workers == "auto" else trainer.num_workers
        train = DataLoader(self.train_set, batch_size=config.batch_size, shuffle=True,
                           generator=torch.Generator().manual_seed(config.seed), num_workers=workers,
                           drop_last=trainer.drop_last and len(objects) >= config.batch_size * trainer.world,
                           collate_fn=_collate)
        evaluation = DataLoader(ClickObjects(eval_split, validation, sampling, mean, std, train=False),
                                batch_size=config.batch_size, collate_fn=_collate)
        return train, evaluation

    def losses(self, model, images: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        masks = torch.stack([t["mask"] for t in targets]).to(images.device)  # (B, H, W)
        clicks = [list(t["clicks"]) for t in targets]
        again = [b for b, t in enumerate(targets) if t["iterate"]]
        if again:
            self._click_at_errors(images[again], masks[again], [clicks[b] for b in again])
        logits = model(self.model.inputs(images, clicks))  # (B, 1, H, W)
        return self._terms(logits, masks)

    def _click_at_errors(self, images: torch.Tensor, masks: torch.Tensor, clicks: list[list]) -> None:
        """One more click on each sample, at the current model's largest error (the lists grow in place)."""
        with Inference(self.model) as run:
            wrong = (run(self.model.inputs(images, clicks))[:, 0] > 0).cpu().numpy()
        for prediction, target, sample in zip(wrong, masks.bool().cpu().numpy(), clicks, strict=True):
            click = next_click(prediction, target)
            if click is not None:
                sample.append(click)

    def _terms(self, logits: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"bce": F.binary_cross_entropy_with_logits(logits[:, 0].float(), masks.float()),
                "dice": self.dice(logits, masks)}

    def check(self, trainer) -> None:
        """The first training samples decode into finite images (a bad file is named before any step)."""
        for i in range(min(len(self.train_set), trainer.config.batch_size)):
            image, _ = self.train_set[i]
            if not torch.isfinite(image).all():
                raise SegnbError(f"Training object {i} (image {self.train_set.objects[i][0]} of "
                                 f"{self.data.train_split!r}) holds NaN or infinite values after normalisation.")

    def scores(self, trainer) -> tuple[ClickReport, dict]:
        """The IoU after one click on each validation object, and BCE + Dice on them. All ranks score the
        same objects: no sums across processes."""
        ious, loss_sum, count = [], torch.zeros((), dtype=torch.float64), 0
        with Inference(trainer.unwrapped, precision=trainer.precision) as run:
            for images, targets in trainer.eval_loader:
                masks = torch.stack([t["mask"] for t in targets]).to(run.device)
                logits = run(self.model.inputs(images.to(run.device), [t["clicks"] for t in targets]))
                loss_sum += sum(self._terms(logits, masks).values()).double().cpu() * len(images)
                count += len(images)
                selected, truth = logits[:, 0] > 0, masks.bool()
                ious.append((selected & truth).sum((1, 2)) / (selected | truth).sum((1, 2)).clamp(min=1))
        ious = torch.cat(ious).double().cpu().numpy() if ious else np.zeros(0)
        report = ClickReport(ious=ious[:, None], min_area=VALIDATION_MIN_AREA)
        return report, {"val_loss": float(loss_sum) / count if count else float("nan"),
                        "first_click_iou": float(ious.mean()) if len(ious) else float("nan")}


# ---------------------------------------------------------------------------------- training


class _ReportSteps(Callback):
    """Calls ``report(step, loss)`` whenever the loop has read the loss (every ``SYNC_EVERY`` steps)."""

    def __init__(self, report):
        self.report = report

    def on_step_end(self, trainer):
        if trainer.host_synced and trainer.loss_value is not None:
            self.report(trainer.step, trainer.loss_value)


def train_click_model(data, *, epochs: int | None = None, seconds: float | None = 120.0,
                      batch_size: int = CLICK_FIT["batch_size"], crop: int = 64, lr: float = CLICK_FIT["lr"],
                      classes=None, min_area: int = 30, seed: int = 0, iterative: float = 0.5,
                      model: ClickModel | None = None, progress=True, callbacks=(), **options) -> ClickModel:
    """Train a :class:`ClickModel` on a dataset's training split with simulated clicks: ``fit()`` with
    :class:`ClickTask` and the click model's options (:data:`CLICK_FIT`).

    Each sample is one object (a connected region of a class in ``classes``) cropped to ``crop`` px
    around it, with an interior positive click and up to four random positive and negative clicks
    near it; with probability ``iterative`` the current model first predicts from those clicks and
    one more click is added at its largest error (RITM's iterative training). See :class:`ClickTask`.

    Args:
        epochs: passes over the training objects; None: as many as ``seconds`` allow.
        seconds: the time budget in wall-clock seconds (fit's ``max_minutes``; the learning rate
            decays over it); None: ``epochs`` alone (fit's 10 when neither is given).
        batch_size, lr, seed: fit's options, with the click model's defaults; ``seed`` also sets a
            new model's initial weights and every sample's random draws.
        crop, classes, min_area, iterative: :class:`ClickSampling`.
        model: a click model to train further (default: a new one).
        progress: fit's (True: the progress bar; False; a callback), or a function ``(step, loss)``
            called every 25 steps.
        callbacks, options: fit's (``device``, ``run``, ``precision``, ``grad_clip``, ``warmup_steps``, ...).

    Returns:
        The model; ``model.history`` is fit's :class:`segnb.train.History` (``stopped`` says how it
        ended; each epoch's ``train_loss``, ``bce``, ``dice``, ``val_loss`` and ``first_click_iou``).
    """
    from segnb.train.api import fit

    torch.manual_seed(seed)  # a new model's initial weights
    model = model if model is not None else ClickModel()
    model.sampling = ClickSampling(crop=crop, iterative=iterative, classes=None if classes is None else list(classes),
                                   min_area=min_area)
    if callable(progress) and not isinstance(progress, Callback):
        callbacks, progress = [*callbacks, _ReportSteps(progress)], False
    options = {**CLICK_FIT, **options, "batch_size": batch_size, "lr": lr, "seed": seed}
    if seconds is not None:
        options["max_minutes"] = seconds / 60
    model.history = fit(model, data, epochs, callbacks=callbacks, progress=progress, **options)
    return model
