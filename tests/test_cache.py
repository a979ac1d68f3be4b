"""The decoded cache and the batch augmentation on the device (issue 13)."""

import numpy as np
import pytest
import torch

from segnb.data import SegTransform, load_dataset, load_shapes
from segnb.data.augment import augment_batch, scale_shift_grid
from segnb.data.cache import (
    STATS,
    CachedBatches,
    cached_split,
    choose_cache,
    decode_split,
    estimate_bytes,
)
from segnb.data.export import export_folder
from segnb.data.preprocess import nearest_exact_index, normalize
from segnb.errors import MixedSizesError, SegnbError


@pytest.fixture(scope="module")
def small():
    return load_shapes(n=24, size=48, seed=5, void_border=1)


def test_decoded_split_equals_the_raw_pairs(small):
    split = small["train"]
    decoded = decode_split(split, None, small.ignore_index, small.num_classes)
    assert decoded.images.dtype == torch.uint8 and decoded.masks.dtype == torch.uint8
    assert decoded.images.shape == (len(split), 3, 48, 48)
    for index in (0, len(split) - 1):
        image, mask = split[index]
        np.testing.assert_array_equal(decoded.images[index].permute(1, 2, 0).numpy(), image)
        np.testing.assert_array_equal(decoded.labels(decoded.masks[index : index + 1])[0].numpy(), mask)
    assert (decoded.labels(decoded.masks) == 255).any(), "void_border=1 puts void pixels in"


def test_resized_once_like_the_transform(small):
    """The cache resizes as SegTransform does (bilinear antialiased image, nearest mask)."""
    split = small["train"]
    decoded = decode_split(split, (32, 40), small.ignore_index, small.num_classes)
    image, mask = split[3]
    x, y = SegTransform(size=(32, 40), mean=(0, 0, 0), std=(1, 1, 1))(image, mask)
    np.testing.assert_array_equal(decoded.labels(decoded.masks[3:4])[0].numpy(), y.numpy())
    assert (decoded.images[3].float() / 255 - x).abs().max() <= 1.5 / 255  # uint8 arithmetic: 1 grey level


@pytest.mark.parametrize("size_in, size_out", [(360, 96), (480, 128), (37, 37), (50, 7), (7, 50), (101, 64)])
def test_nearest_index_picks_what_interpolate_picks(size_in, size_out):
    """The cache resizes masks by indexing; F.interpolate(nearest-exact) is the reference."""
    values = torch.arange(size_in, dtype=torch.float32)[None, None, :, None]
    reference = torch.nn.functional.interpolate(values, size=(size_out, 1), mode="nearest-exact")
    np.testing.assert_array_equal(nearest_exact_index(size_in, size_out), reference[0, 0, :, 0].long().numpy())


def test_int16_masks_above_255_classes_and_a_custom_void():
    from segnb.data.base import SegmentationDataset, Split

    class Many(Split):
        def _load(self, index):
            mask = np.full((8, 8), 299, dtype=np.int64)
            mask[0, 0] = 1000  # void
            return np.zeros((8, 8, 3), np.uint8), mask

    data = SegmentationDataset({"train": Many("train", 2)}, [f"c{i}" for i in range(300)], ignore_index=1000)
    decoded = decode_split(data["train"], None, data.ignore_index, data.num_classes)
    assert decoded.masks.dtype == torch.int16
    labels = decoded.labels(decoded.masks)
    assert labels[0, 0, 0] == 1000 and labels[0, 1, 1] == 299


def test_cache_hits_and_misses(small):
    before = dict(STATS)
    first = cached_split(small["train"], 32, small.ignore_index, small.num_classes)
    again = cached_split(small["train"], 32, small.ignore_index, small.num_classes)
    other = cached_split(small["train"], 40, small.ignore_index, small.num_classes)
    assert first is again and other is not first
    assert STATS["misses"] - before["misses"] == 2 and STATS["hits"] - before["hits"] == 1


def test_choose_cache_falls_back_when_over_budget(monkeypatch):
    import segnb.data.cache as cache

    monkeypatch.setattr(cache, "available_ram", lambda: 1000 * 2**20)
    where, why = choose_cache(100 * 2**20, torch.device("cpu"))
    assert where == "ram" and "RAM" in why
    where, why = choose_cache(400 * 2**20, torch.device("cpu"))  # over 25% of 1000 MiB
    assert where is False and "decoded every epoch" in why
    assert choose_cache(400 * 2**20, torch.device("cpu"), cache="ram")[0] == "ram"
    assert choose_cache(1, torch.device("cpu"), cache=False)[0] is False
    with pytest.raises(SegnbError, match="cache must be one of"):
        choose_cache(1, torch.device("cpu"), cache="gpu")


def test_estimate_bytes_is_exact_for_a_fixed_size(small):
    decoded = decode_split(small["train"], (24, 32), small.ignore_index, small.num_classes)
    assert estimate_bytes(small["train"], (24, 32), small.num_classes) == decoded.nbytes


def test_images_of_different_sizes_need_a_size(tmp_path):
    from PIL import Image

    for i, (h, w) in enumerate([(20, 30), (24, 30)] * 3):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / "masks" / f"{i}.png")
    data = load_dataset(tmp_path, class_names=["a", "b"])
    split = data[data.split_names[0]]
    with pytest.raises(MixedSizesError, match="image_size="):  # the type fit() falls back to streaming on
        decode_split(split, None, data.ignore_index, data.num_classes)
    assert decode_split(split, 16, data.ignore_index, data.num_classes).images.shape[-2:] == (16, 16)


# ------------------------------------------------------------------ augmentation on the device
def _coded_batch(batch=6, size=48, block=12):
    """Masks of 12-px class blocks; the image's red channel encodes the class (20 * class)."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 7, (batch, size // block, size // block), generator=g)
    masks = coarse.repeat_interleave(block, 1).repeat_interleave(block, 2)
    images = torch.zeros(batch, 3, size, size, dtype=torch.uint8)
    images[:, 0] = (masks * 20).to(torch.uint8)
    images[:, 1] = 255
    return images, masks


def test_augmentation_keeps_image_and_mask_aligned():
    images, masks = _coded_batch()
    x, y = augment_batch(images, masks, scale=(0.5, 2.0), generator=torch.Generator().manual_seed(1))
    assert x.shape == (6, 3, 48, 48) and y.shape == (6, 48, 48)
    inside = x[:, 1] > 0.999  # pixels sampled wholly from inside the image
    # Interior pixels (all 3x3 neighbours of one class) carry their own class's colour.
    padded = torch.nn.functional.pad(y[:, None].float(), (1, 1, 1, 1), mode="replicate")
    neighbours = padded.unfold(2, 3, 1).unfold(3, 3, 1).reshape(6, 48, 48, 9)
    uniform = (neighbours == y[..., None].float()).all(-1) & inside & (y != 255)
    assert uniform.sum() > 2000
    decoded_class = (x[:, 0] * 255 / 20).round().long()
    assert torch.equal(decoded_class[uniform], y[uniform])
    assert ((y == 255) == ~(x[:, 1] > 0.5)).float().mean() > 0.99, "outside the image: void and black"


def test_augmentation_invents_no_class():
    masks = torch.tensor([0, 3, 7])[torch.randint(0, 3, (4, 40, 40), generator=torch.Generator().manual_seed(2))]
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    for seed in range(5):
        _, y = augment_batch(images, masks, scale=(0.4, 2.5), generator=torch.Generator().manual_seed(seed))
        assert set(y.unique().tolist()) <= {0, 3, 7, 255}


def test_each_image_of_the_batch_gets_its_own_draw():
    images, masks = _coded_batch(batch=8)
    images, masks = images[:1].repeat(8, 1, 1, 1), masks[:1].repeat(8, 1, 1)
    _, y = augment_batch(images, masks, scale=(0.5, 2.0), generator=torch.Generator().manual_seed(3))
    distinct = {tuple(m.flatten().tolist()) for m in y}
    assert len(distinct) == 8


def test_flip_only_is_an_exact_mirror():
    images, masks = _coded_batch(batch=16)
    x, y = augment_batch(images, masks, generator=torch.Generator().manual_seed(4))
    flipped = [torch.equal(y[i], masks[i].flip(-1)) for i in range(16)]
    kept = [torch.equal(y[i], masks[i]) for i in range(16)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 0 < sum(flipped) < 16
    for i in range(16):
        expected = images[i].flip(-1) if flipped[i] else images[i]
        assert torch.equal((x[i] * 255).round().to(torch.uint8), expected)


def test_normalize_matches_the_transform(small):
    image, mask = small["train"][0]
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    x, _ = SegTransform(mean=mean, std=std)(image, mask)
    ours = normalize(torch.from_numpy(image).permute(2, 0, 1)[None], mean, std)[0]
    torch.testing.assert_close(ours, x)


def test_cached_batches_cover_the_split_once_per_epoch(small):
    decoded = decode_split(small["train"], None, small.ignore_index, small.num_classes)
    batches = CachedBatches(decoded, 5, "cpu", shuffle=True, mean=(0, 0, 0), std=(1, 1, 1), seed=7)
    assert len(batches) == -(-len(decoded) // 5)

    def order(epoch):
        batches.set_epoch(epoch)
        return torch.cat([(x[:, 0] * 255).round().flatten(1)[:, :64] for x, _ in batches])

    first = order(0)
    assert len(first) == len(decoded)
    assert torch.equal(first, order(0)), "the same epoch gives the same order (resume)"
    assert not torch.equal(first, order(1))
    # Two ranks split one epoch between them without overlap.
    ranks = [CachedBatches(decoded, 5, "cpu", shuffle=True, mean=(0, 0, 0), std=(1, 1, 1), seed=7,
                           rank=r, world=2) for r in range(2)]
    seen = [torch.cat([(x[:, 0] * 255).round().flatten(1)[:, :64] for x, _ in r]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == -(-len(decoded) // 2)  # padded to equal shares
    rows = {tuple(row.tolist()) for row in torch.cat(seen)}
    assert rows == {tuple(row.tolist()) for row in first}, "together the ranks see every image"


def test_export_folder_round_trips_through_load_dataset(tmp_path, small):
    root = export_folder(small, tmp_path / "out", image_format="png")
    back = load_dataset(root)
    assert back.class_names == small.class_names
    assert len(back["train"]) == len(small["train"])
    image, mask = small["train"][2]
    image2, mask2 = back["train"][2]
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(mask, mask2)
    with pytest.raises(Exception, match="not empty"):
        export_folder(small, root)


def test_scale_shift_grid_equals_affine_grid():
    g = torch.Generator().manual_seed(0)
    sx, sy, tx, ty = (torch.rand(5, generator=g) * 2 - 1 for _ in range(4))
    theta = torch.zeros(5, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, sy, ty
    expected = torch.nn.functional.affine_grid(theta, [5, 3, 7, 9], align_corners=False)
    torch.testing.assert_close(scale_shift_grid(sx, sy, tx, ty, 7, 9), expected)
