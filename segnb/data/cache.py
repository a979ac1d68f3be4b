"""Decode a split once, keep it as uint8, and serve batches from RAM or straight from the GPU.

Decoding a JPEG, checking its mask and resizing it costs far more than a small
model's step. :func:`decode_split` pays it once: every pair is decoded,
checked, resized to the training size and stored as ``uint8`` images
``(N, 3, H, W)`` and ``uint8`` masks ``(N, H, W)`` (``int16`` above 255
classes), 4-8x fewer bytes than float images and int64 masks.
:func:`choose_cache` decides where the result lives:

- ``"device"``: on the training GPU, when it takes at most a share of its free
  memory. Batches are gathered by index there: no DataLoader, no workers, no
  copies from the host.
- ``"ram"``: in host memory, when it fits a share of the available RAM.
- ``False`` (streaming): a DataLoader decodes every epoch, as before; for
  datasets too large for either.

:class:`CachedBatches` then yields shuffled, augmented (on the device, see
:mod:`segnb.data.augment`) and normalised batches from such a cache.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from segnb.arithmetic import ceil_div
from segnb.data.augment import augment_batch
from segnb.data.preprocess import normalize, resize
from segnb.errors import MixedSizesError, SegnbError

__all__ = ["DecodedSplit", "decode_split", "cached_split", "choose_cache", "CachedBatches", "available_ram",
           "CACHE_CHOICES"]

CACHE_CHOICES = ("auto", "device", "ram", False)
VOID_INT16 = -1  # how void is stored in int16 masks (uint8 masks keep 255)


@dataclass
class DecodedSplit:
    """A whole split as tensors: ``images`` uint8 ``(N, 3, H, W)``, ``masks`` uint8/int16 ``(N, H, W)``.

    ``masks`` store void as 255 (uint8) or -1 (int16); :meth:`labels` turns a
    batch back into int64 class indices with the dataset's ``ignore_index``.
    """

    images: torch.Tensor
    masks: torch.Tensor
    ignore_index: int
    num_classes: int
    name: str = ""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.masks.nbytes

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device) -> DecodedSplit:
        return DecodedSplit(self.images.to(device), self.masks.to(device), self.ignore_index,
                            self.num_classes, self.name)

    def labels(self, stored: torch.Tensor) -> torch.Tensor:
        """Stored masks (uint8/int16) -> int64 class indices with ``ignore_index`` for void."""
        void = 255 if stored.dtype == torch.uint8 else VOID_INT16
        labels = stored.long()
        if void != self.ignore_index:
            labels = labels.masked_fill(stored == void, self.ignore_index)
        return labels


def mask_dtype(num_classes: int) -> torch.dtype:
    """uint8 while every class index and the void code 255 fit; int16 above 255 classes."""
    if num_classes <= 255:
        return torch.uint8
    if num_classes <= 32767:
        return torch.int16
    raise SegnbError(f"{num_classes} classes do not fit an int16 mask cache; use cache=False.")


def _store_mask(mask: np.ndarray, ignore_index: int, dtype: torch.dtype) -> torch.Tensor:
    void = 255 if dtype == torch.uint8 else VOID_INT16
    stored = np.where(mask == ignore_index, void, mask).astype(np.uint8 if dtype == torch.uint8 else np.int16)
    return torch.from_numpy(stored)


class _Decode(TorchDataset):
    """One raw pair -> (uint8 image (3, H, W), stored mask (H, W)), resized once to ``size``."""

    def __init__(self, split, size, ignore_index: int, dtype: torch.dtype):
        self.split, self.size, self.ignore_index, self.dtype = split, size, ignore_index, dtype

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int):
        image, mask = self.split[index]  # decoded and checked (values, sizes) here, once
        x = torch.from_numpy(np.require(image, requirements="W")).permute(2, 0, 1)  # (3, H, W) uint8
        if self.size is not None and tuple(x.shape[1:]) != tuple(self.size):
            # uint8 on torch's channels-last path; the mask by index, before any per-pixel work.
            x, mask = resize(x, mask, self.size)
        return x.contiguous(), _store_mask(mask, self.ignore_index, self.dtype)


def decode_split(split, size: int | tuple[int, int] | None, ignore_index: int, num_classes: int,
                 num_workers: int = 0) -> DecodedSplit:
    """Decode, check and resize every pair of ``split`` once (the cold pass).

    Args:
        split: a :class:`segnb.data.Split` (raw pairs).
        size: the training size ``(height, width)`` or one int; ``None`` keeps the images'
            own size, which must then be the same for all of them.
        num_workers: processes that decode in parallel (forked; they never touch CUDA).
    """
    size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
    decode = _Decode(split, size, ignore_index, mask_dtype(num_classes))
    if num_workers > 0:
        pairs = iter(DataLoader(decode, batch_size=None, shuffle=False, num_workers=num_workers))
    else:  # threads: PIL's decoder, numpy and torch's resize release the GIL, so the cores share the work
        threads = ThreadPoolExecutor(max_workers=decode_threads())
        pairs = threads.map(decode.__getitem__, range(len(decode)))
    images, masks = [], []
    try:
        for x, y in pairs:
            if images and x.shape != images[0].shape:
                raise MixedSizesError(
                    f"{split.name}: images have different sizes ({tuple(images[0].shape[1:])} and "
                    f"{tuple(x.shape[1:])}), so the split cannot be cached without a size. Pass "
                    "image_size=(height, width), or cache=False.")
            images.append(x)
            masks.append(y)
    finally:
        if num_workers == 0:
            threads.shutdown(cancel_futures=True)
    if not images:
        raise SegnbError(f"{split.name} is empty: nothing to cache.")
    return DecodedSplit(torch.stack(images), torch.stack(masks), ignore_index, num_classes, split.name)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decode_threads() -> int:
    """Threads for the cold pass without worker processes: the usable cores, at most 4."""
    return max(1, min(4, usable_cores()))


def available_ram() -> int:
    """Bytes of memory the system can still give (Linux MemAvailable), without psutil."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def estimate_bytes(split, size, num_classes: int) -> int:
    """The cache's size, from one decoded sample (exact when a size is given)."""
    image, _ = split[0]
    h, w = (size, size) if isinstance(size, int) else (size if size is not None else image.shape[:2])
    mask_bytes = torch.empty((), dtype=mask_dtype(num_classes)).element_size()
    return len(split) * int(h) * int(w) * (3 + mask_bytes)


def choose_cache(nbytes: int, device: torch.device, cache="auto", gpu_share: float = 0.25,
                 ram_share: float = 0.25) -> tuple[str | bool, str]:
    """Where a cache of ``nbytes`` should live, and why, in one sentence for the progress output.

    Returns ``("device" | "ram" | False, reason)``. An explicit ``cache`` is obeyed when
    it can be (``"device"`` on the CPU means RAM: the CPU's memory is the RAM).
    """
    if cache not in CACHE_CHOICES:
        raise SegnbError(f"cache must be one of {CACHE_CHOICES}, got {cache!r}.")
    megabytes = nbytes / 2**20
    if cache is False:
        return False, "cache=False: each epoch decodes the files again (DataLoader)"
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if cache == "device" or (cache == "auto" and nbytes <= gpu_share * free):
            return "device", (f"the decoded split ({megabytes:.0f} MiB as uint8) is kept on the GPU "
                              f"({free / 2**30:.1f} GiB free): batches are gathered there, no DataLoader")
    ram = available_ram()
    if cache in ("ram", "device") or nbytes <= ram_share * ram:
        return "ram", (f"the decoded split ({megabytes:.0f} MiB as uint8) is kept in RAM "
                       f"({ram / 2**30:.1f} GiB available): decoded once, not every epoch")
    return False, (f"the decoded split would take {megabytes:.0f} MiB, over {ram_share:.0%} of the "
                   f"{ram / 2**30:.1f} GiB of available RAM: files are decoded every epoch (DataLoader)")


def _canonical(device) -> torch.device:
    """A device as its tensors name it (``cuda`` -> ``cuda:0``, ``cpu:0`` -> ``cpu``): the one
    form devices are compared in (as :func:`segnb.device.canonical_device`, which sits above data)."""
    return torch.empty(0, device=device).device


class CachedBatches:
    """Batches from a :class:`DecodedSplit`: shuffled by a seeded generator, augmented and
    normalised on ``device``. Iterating gives ``(images (B, 3, H, W) float, masks (B, H, W) int64)``.

    Several processes (DDP) each take every ``world``-th index of the shuffled order, so
    each rank sees its own share and the same number of batches. With ``pad=False`` (validation)
    no index is repeated to even the shares out: every image is seen exactly once, over all ranks.
    """

    def __init__(self, decoded: DecodedSplit, batch_size: int, device, *, shuffle: bool = False,
                 augment: bool = False, hflip: bool = True, scale: tuple[float, float] | None = None,
                 mean: Sequence[float], std: Sequence[float], seed: int = 0, rank: int = 0,
                 world: int = 1, channels_last: bool = False, pad: bool = True, drop_last: bool = False):
        self.decoded, self.batch_size, self.device = decoded, batch_size, _canonical(device)
        self.shuffle, self.augment, self.hflip, self.scale = shuffle, augment, hflip, scale
        self.mean, self.std, self.seed, self.rank, self.world = mean, std, seed, rank, world
        self.channels_last, self.pad = channels_last, pad
        self.drop_last = drop_last and self._share() >= batch_size  # compile: one batch shape
        self.epoch = 0
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def _share(self) -> int:
        n = len(self.decoded)
        return ceil_div(n, self.world) if self.pad else len(range(self.rank, n, self.world))

    def __len__(self) -> int:
        if self.drop_last:
            return self._share() // self.batch_size
        return ceil_div(self._share(), self.batch_size)

    @property
    def on_device(self) -> bool:
        """The cache lives where training runs (devices compared in their canonical form)."""
        return self.decoded.device == self.device

    def set_epoch(self, epoch: int) -> None:
        """The same order for the same epoch, also after a resume."""
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.decoded)
        if self.shuffle:
            self.generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        if self.world > 1:  # pad so every rank has the same count (unless pad=False), then stride
            if self.pad:
                order = torch.cat([order, order[: (-n) % self.world]])
            order = order[self.rank :: self.world]
        return order

    def __iter__(self):
        order = self._order()
        on_device = self.on_device
        if on_device:  # the whole epoch's order moves once, not one index per batch
            order = order.to(self.device)
        generator = self._augment_generator() if self.augment else None
        end = len(self) * self.batch_size if self.drop_last else len(order)
        for start in range(0, end, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.decoded.images.index_select(0, index)  # uint8 gathered where the cache lives
            masks = self.decoded.masks.index_select(0, index)
            if not on_device:  # uint8 over the bus: 4x fewer bytes than float32
                pin = self.device.type == "cuda"
                images = (images.pin_memory() if pin else images).to(self.device, non_blocking=True)
                masks = (masks.pin_memory() if pin else masks).to(self.device, non_blocking=True)
            labels = self.decoded.labels(masks)
            if self.augment:
                images, labels = augment_batch(images, labels, hflip=self.hflip, scale=self.scale,
                                               ignore_index=self.decoded.ignore_index,
                                               generator=generator)
            images = normalize(images, self.mean, self.std)  # mean/std tensors cached per device
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels

    def _augment_generator(self) -> torch.Generator:
        """Random scales, crops and flips on the device, seeded per epoch (reproducible, resumable)."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return generator


# The cold pass happens once per (split, size, labels): later fits on the same dataset reuse it.
_DECODED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
STATS = {"hits": 0, "misses": 0}


def cached_split(split, size, ignore_index: int, num_classes: int, num_workers: int = 0) -> DecodedSplit:
    """:func:`decode_split`, memoised on the split object (in RAM) and on the label settings."""
    size = (size, size) if isinstance(size, int) else (tuple(size) if size is not None else None)
    key = (size, ignore_index, num_classes)
    store = _DECODED.setdefault(split, {})
    # Files rewritten since the split was decoded (new masks, edited images) are decoded again:
    # a split read from files names their identity (inode, size, modification and change times).
    identity = split.identity() if hasattr(split, "identity") else None
    if key in store and store[key][0] == identity:
        STATS["hits"] += 1
        return store[key][1]
    STATS["misses"] += 1
    store[key] = (identity, decode_split(split, size, ignore_index, num_classes, num_workers))
    return store[key][1]
