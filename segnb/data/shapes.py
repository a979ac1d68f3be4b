"""The built-in dataset: procedural "things" on textured "stuff", offline and seeded.

Each image is a scene: a sky above a horizon, grass below it and, in most
images, a brick wall standing on the grass. On it lie 1 to 6 objects
(circles, squares, triangles, rings) whose sizes are drawn log-uniformly from
a few pixels to half the image, so small objects, occlusion (later objects
cover earlier ones) and class imbalance (rings are rare, circles common) are
all present and per-class IoU has a story to tell. Each class has its own
colour family with jitter, shading and noise, so a small model learns it in a
minute while the thin ring and the small triangles stay hard.

With ``void_border=w`` the pixels within ``w`` of an object's outline are
labelled 255 (void), as in PASCAL VOC.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from segnb.data.base import SegmentationDataset, Split, given_options
from segnb.errors import DatasetError

__all__ = ["SHAPES_CLASSES", "render_scene", "load_shapes"]

STUFF = ["sky", "grass", "wall"]
THINGS = ["circle", "square", "triangle", "ring"]
SHAPES_CLASSES = STUFF + THINGS
_THING_PROBABILITY = np.array([0.4, 0.3, 0.2, 0.1])
# Base colours (RGB, 0..1) of the things, jittered per object.
_THING_COLOUR = np.array([[0.95, 0.80, 0.15], [0.55, 0.20, 0.75], [0.90, 0.35, 0.15], [0.10, 0.80, 0.85]])
SHAPES_PALETTE = np.array(
    [[135, 190, 235], [60, 150, 60], [150, 75, 60], [240, 200, 40], [140, 50, 190], [230, 90, 40], [30, 200, 215]],
    dtype=np.uint8,
)


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def render_scene(rng: np.random.Generator, size: int = 128, void_border: int = 0, instances: bool = False):
    """Draw one scene. Returns ``image`` uint8 (size, size, 3) and ``mask`` uint8 (size, size).

    With ``instances=True`` also an instance map uint8 (size, size): 0 on stuff, 1..n one id per
    visible thing, numbered in drawing order (an object hidden entirely by later ones has no id).
    """
    yy, xx = _grid(size)  # (H, W) each
    image = np.empty((size, size, 3), np.float32)
    mask = np.empty((size, size), np.uint8)
    ids = np.zeros((size, size), np.uint8)

    # Stuff: sky (smooth gradient), grass (noisy), maybe a brick wall on the grass.
    horizon = int(rng.uniform(0.25, 0.65) * size)
    sky = yy < horizon
    top, bottom = rng.uniform(0.45, 0.6), rng.uniform(0.75, 0.95)
    shade = top + (bottom - top) * (yy / size)
    image[...] = np.stack([shade * 0.55, shade * 0.8, shade], axis=-1)
    mask[sky] = 0
    grass_colour = np.array([0.2, 0.55, 0.2]) * rng.uniform(0.8, 1.2)
    grass_noise = rng.standard_normal((size, size, 1), dtype=np.float32) * 0.09
    image[~sky] = (grass_colour + grass_noise[~sky] * np.array([0.6, 1.0, 0.5]))
    mask[~sky] = 1
    if rng.random() < 0.7:
        x0 = int(rng.uniform(-0.2, 0.7) * size)
        x1 = x0 + int(rng.uniform(0.25, 0.6) * size)
        y1 = horizon + int(rng.uniform(0.05, 0.25) * size)
        y0 = max(0, horizon - int(rng.uniform(0.1, 0.35) * size))
        wall = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
        brick_h = rng.integers(5, 9)
        row = (yy // brick_h).astype(np.int32)
        offset = (row % 2) * brick_h
        mortar = ((yy % brick_h) < 1) | (((xx + offset) % (2 * brick_h)) < 1)
        brick = np.where(mortar, 0.75, 1.0)[..., None] * np.array([0.6, 0.3, 0.22]) * rng.uniform(0.85, 1.15)
        image[wall] = brick[wall]
        mask[wall] = 2

    # Things: drawn back to front, so later ones occlude earlier ones.
    for number in range(1, int(rng.integers(1, 7)) + 1):
        kind = rng.choice(4, p=_THING_PROBABILITY)
        radius = float(np.exp(rng.uniform(np.log(2.5), np.log(size / 4))))  # diameter few px .. size/2
        cy, cx = rng.uniform(0, size, 2)
        # Work inside the object's bounding box only: most objects are small.
        y0, y1 = max(0, int(cy - radius) - 1), min(size, int(cy + radius) + 2)
        x0, x1 = max(0, int(cx - radius) - 1), min(size, int(cx + radius) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = yy[y0:y1, x0:x1] - cy, xx[y0:y1, x0:x1] - cx
        if kind == 0:  # circle
            region = dy * dy + dx * dx <= radius * radius
        elif kind == 1:  # square, randomly rotated
            angle = rng.uniform(0, np.pi / 2)
            u = np.abs(dx * np.cos(angle) + dy * np.sin(angle))
            v = np.abs(-dx * np.sin(angle) + dy * np.cos(angle))
            region = np.maximum(u, v) <= radius * 0.85
        elif kind == 2:  # triangle, pointing up
            region = (dy <= radius * 0.6) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
        else:  # ring
            rr = dy * dy + dx * dx
            region = (rr <= radius * radius) & (rr >= (radius * 0.6) ** 2)
            if radius < 4:
                region = rr <= radius * radius
        colour = np.clip(_THING_COLOUR[kind] + rng.normal(0, 0.06, 3), 0, 1)
        light = 1.0 - 0.25 * np.clip((dy + dx) / (2 * radius), -1, 1)  # a lit top-left
        image[y0:y1, x0:x1][region] = (light[region, None] * colour).astype(np.float32)
        mask[y0:y1, x0:x1][region] = len(STUFF) + kind
        ids[y0:y1, x0:x1][region] = number

    image += rng.standard_normal(image.shape, dtype=np.float32) * 0.02  # sensor noise
    image = (np.clip(image, 0, 1) * 255).astype(np.uint8)

    if void_border > 0:  # void outline around every thing, as in PASCAL VOC
        is_thing = mask >= len(STUFF)
        edge = np.zeros_like(is_thing)
        edge[:-1] |= (mask[:-1] != mask[1:]) & (is_thing[:-1] | is_thing[1:])
        edge[1:] |= (mask[:-1] != mask[1:]) & (is_thing[:-1] | is_thing[1:])
        edge[:, :-1] |= (mask[:, :-1] != mask[:, 1:]) & (is_thing[:, :-1] | is_thing[:, 1:])
        edge[:, 1:] |= (mask[:, :-1] != mask[:, 1:]) & (is_thing[:, :-1] | is_thing[:, 1:])
        if void_border > 1:
            from scipy import ndimage  # here: scipy costs a Studio page's first tab half a second

            edge = ndimage.binary_dilation(edge, iterations=void_border - 1)
        mask[edge] = 255
    if not instances:
        return image, mask
    present = np.unique(ids[ids > 0])
    lookup = np.zeros(8, np.uint8)
    lookup[present] = np.arange(1, len(present) + 1)
    return image, mask, lookup[ids]


class _ArraySplit(Split):
    def __init__(self, name: str, images: np.ndarray, masks: np.ndarray, first: int, ids: np.ndarray):
        super().__init__(name, len(images))
        self.images, self.masks, self.first, self.ids = images, masks, first, ids
        self.attach_instance_maps(self._instance_map)

    def _instance_map(self, index: int) -> np.ndarray:
        return self.ids[index]

    def label(self, index: int) -> str:
        return f"shapes image {self.first + index} ({self.name}[{index}])"

    def _load(self, index: int):
        return self.images[index], self.masks[index]


CACHE_ENV = "SEGNB_SHAPES_CACHE"


def _render_all(n: int, size: int, seed: int, void_border: int):
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    ids = np.empty((n, size, size), np.uint8)
    for i in range(n):
        images[i], masks[i], ids[i] = render_scene(np.random.default_rng([seed, i]), size, void_border, True)
    return images, masks, ids


def rendered_scenes(n: int, size: int, seed: int, void_border: int, folder: str | os.PathLike | None = None):
    """The scenes' images, masks and instance ids; from the folder ``$SEGNB_SHAPES_CACHE`` when it is set.

    ``segnb studio`` sets it and renders the Studio's default there once, so a class of students
    loading the built-in dataset at the same moment read it (milliseconds) instead of each drawing
    the same 400 scenes (about a CPU-second each, docs/CLASSROOM.md). The file name holds every
    option and a hash of this file's code, so a changed drawing never reads an old picture.
    """
    folder = folder or os.environ.get(CACHE_ENV)
    if not folder:
        return _render_all(n, size, seed, void_border)
    code = hashlib.sha1(Path(__file__).read_bytes()).hexdigest()[:12]
    path = Path(folder) / f"shapes-{code}-n{n}-size{size}-seed{seed}-void{void_border}.npz"
    try:
        with np.load(path) as saved:
            return saved["images"], saved["masks"], saved["ids"]
    except (OSError, KeyError, ValueError):  # not there yet, or unreadable: draw them
        pass
    arrays = _render_all(n, size, seed, void_border)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
    try:  # written whole, then renamed: another kernel never reads half a file
        np.savez(partial, images=arrays[0], masks=arrays[1], ids=arrays[2])
        os.replace(partial, path)
    except OSError:  # a cache that cannot be written only costs the drawing
        partial.unlink(missing_ok=True)
    return arrays


def load_shapes(
    n: int = 1000,
    size: int = 128,
    seed: int = 0,
    void_border: int = 0,
    val_fraction: float = 0.2,
) -> SegmentationDataset:
    """The built-in dataset: ``n`` scenes of ``size`` px; the last ``val_fraction`` are validation.

    ``data.things`` are the four shapes, ``data.stuff`` sky, grass and wall;
    ``data["train"].get(i, instances=True)`` adds each shape's instance id map.

    Image ``i`` depends only on ``(seed, i)``, so a larger ``n`` keeps the
    first images unchanged.
    """
    options = given_options(load_shapes, locals())
    for name, value in (("n", n), ("size", size), ("seed", seed), ("void_border", void_border)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise DatasetError(f"shapes: {name} must be a whole number, got {value!r}.")
    if n < 2:
        raise DatasetError(f"shapes needs n >= 2 images (one for training, one for validation), got n={n}.")
    if size < 16:
        raise DatasetError(f"shapes needs size >= 16 px, got size={size}.")
    if not 0 < val_fraction < 1:
        raise DatasetError(f"shapes: val_fraction must be between 0 and 1, got {val_fraction!r}.")
    images, masks, ids = rendered_scenes(n, size, seed, void_border)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    n_train = n - n_val
    splits = {
        "train": _ArraySplit("train", images[:n_train], masks[:n_train], 0, ids[:n_train]),
        "validation": _ArraySplit("validation", images[n_train:], masks[n_train:], n_train, ids[n_train:]),
    }
    return SegmentationDataset(
        splits=splits,
        class_names=list(SHAPES_CLASSES),
        ignore_index=255,
        palette=SHAPES_PALETTE,
        source="shapes",
        things=list(THINGS),
        info={"built_in": True, "seed": seed, "image_size": size, "void_border": void_border},
        options=options,
    )
