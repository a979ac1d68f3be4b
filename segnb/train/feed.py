"""How batches reach the model: a decoded cache (on the training device or in RAM), or streaming.

:func:`plan_feed` decides, before training, where the decoded splits will live
and says why in one line (``trainer.data_path``); :func:`open_feed` builds the
loaders at the start of the run, so that a file that fails to decode is a
failure of the run. Images of different sizes without an ``image_size`` cannot
be cached; then the files stream through DataLoader workers, and the line says so.
Training batches are dropped short (``drop_last``) under ``compile=True``, so the
compiled model always sees one shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Subset, default_collate

from segnb.arithmetic import ceil_div
from segnb.data.base import SegTransform, mixed_sizes
from segnb.data.cache import CachedBatches, cached_split, choose_cache, estimate_bytes, usable_cores
from segnb.errors import MixedSizesError
from segnb.evaluation import FullSizeLabels, collate_eval, with_original_labels

__all__ = ["Feed", "auto_workers", "plan_feed", "open_feed", "stream_loaders", "steps_per_epoch"]


def auto_workers() -> int:
    """DataLoader workers: one per CPU core this process may use, less one for the training loop,
    at most 8; none below 3 cores (a single worker only adds the cost of passing tensors over)."""
    workers = min(8, usable_cores() - 1)
    return workers if workers >= 2 else 0


@dataclass
class Feed:
    """Where the data lives (``cache``: ``"device"``, ``"ram"`` or False), why, and the two loaders."""

    cache: str | bool
    why: str
    train: object = None
    eval: object = None


def plan_feed(data, config, device: torch.device) -> Feed:
    if config.cache is False:
        return Feed(*choose_cache(0, device, False))
    nbytes = sum(estimate_bytes(data[name], config.image_size, data.num_classes)
                 for name in {data.train_split, data.eval_split} if len(data[name]))
    return Feed(*choose_cache(nbytes, device, config.cache))


def steps_per_epoch(feed: Feed, n_train: int, batch_size: int, world: int, drop_last: bool) -> int:
    if feed.train is not None:
        return len(feed.train)
    share = ceil_div(n_train, world)
    return max(1, share // batch_size) if drop_last and share >= batch_size else ceil_div(share, batch_size)


def transform(data, config, mean, std, train: bool) -> SegTransform:
    train = train and config.augment  # augment=False: the training images as they are, shuffled
    return SegTransform(size=config.image_size, train=train, ignore_index=data.ignore_index,
                        scale=config.augment_scale if train else None, mean=mean, std=std)


def stream_loaders(data, config, device, mean, std, workers: int, rank: int, world: int, drop_last: bool,
                   dataset=None, collate_fn=None) -> tuple[DataLoader, DataLoader]:
    """DataLoaders that decode the files every epoch. ``dataset(split, transform)`` builds a split
    (default: the dataset's own torch split); each process evaluates every world-size-th image."""
    if config.image_size is None and config.batch_size > 1:  # before any step: a batch is one size
        for name in dict.fromkeys([data.train_split, data.eval_split]):
            found = mixed_sizes(data[name])
            if found is not None:
                raise MixedSizesError(_mixed_message(name, *found, config.batch_size))
    custom_collate = collate_fn is not None  # an instance model's own batches
    collate_fn = _one_size(collate_fn or default_collate, config.batch_size)
    dataset = dataset or data.torch_split
    train_set = dataset(data.train_split, transform(data, config, mean, std, train=True))
    generator = torch.Generator().manual_seed(config.seed)
    train = DataLoader(train_set, batch_size=config.batch_size, shuffle=True,
                       drop_last=drop_last and len(train_set) >= config.batch_size * world,
                       num_workers=workers, persistent_workers=workers > 0, generator=generator,
                       pin_memory=device.type == "cuda", collate_fn=collate_fn)
    eval_transform = transform(data, config, mean, std, train=False)
    eval_collate = collate_fn
    if not custom_collate and config.protocol == "full":  # semantic: labels at their own size, in lists
        eval_transform, eval_collate = FullSizeLabels(eval_transform), collate_eval
    eval_set = dataset(data.eval_split, eval_transform)
    if world > 1:
        eval_set = Subset(eval_set, list(range(rank, len(eval_set), world)))
    evaluation = DataLoader(eval_set, batch_size=config.batch_size, shuffle=False, num_workers=workers,
                            collate_fn=eval_collate)
    return train, evaluation


def _mixed_message(split: str, first, other, batch_size: int) -> str:
    return (f"The {split} images have different sizes ({first[0]}x{first[1]} and {other[0]}x{other[1]}, "
            f"height x width) and batch_size={batch_size} puts several in one batch, which must be one size. "
            "Pass image_size=(height, width) (every image and mask resized to it; masks with nearest), "
            "or batch_size=1 (segnb train: --image-size N).")


def _one_size(collate, batch_size: int):
    """``collate`` that names the fix when a batch holds images of several sizes (sources whose sizes
    are not known before decoding), instead of torch's 'stack expects each tensor to be equal size'."""

    def batches(items):
        try:
            return collate(items)
        except RuntimeError as err:
            shapes = sorted({tuple(item[0].shape[-2:]) for item in items})
            if len(shapes) < 2:
                raise
            raise MixedSizesError(_mixed_message("training or validation", shapes[0], shapes[1], batch_size)) from err

    return batches


def open_feed(feed: Feed, data, config, device, mean, std, workers: int, rank: int, world: int,
              drop_last: bool) -> Feed:
    """The cold pass, once: decode, check and resize both splits (memoised on the dataset); batches
    then come from :class:`CachedBatches`. Falls back to streaming for images of mixed sizes."""
    try:
        train, val = (cached_split(data[name], config.image_size, data.ignore_index, data.num_classes, workers)
                      for name in (data.train_split, data.eval_split))
    except MixedSizesError:
        why = ("the images have different sizes and no image_size was given, so they cannot be cached: files "
               "are decoded every epoch (DataLoader); pass image_size=(h, w) to cache")
        return Feed(False, why, *stream_loaders(data, config, device, mean, std, workers, rank, world, drop_last))
    if feed.cache == "device":
        train, val = train.to(device), val.to(device)
    common = dict(mean=mean, std=std, seed=config.seed, rank=rank, world=world, channels_last=device.type == "cuda")
    evaluation = CachedBatches(val, config.batch_size, device, pad=False, **common)
    if config.protocol == "full":  # scored at the labels' original size
        evaluation = with_original_labels(evaluation, data[data.eval_split])
    return Feed(feed.cache, feed.why,
                CachedBatches(train, config.batch_size, device, shuffle=True, augment=config.augment,
                              scale=config.augment_scale, drop_last=drop_last, **common),
                evaluation)
