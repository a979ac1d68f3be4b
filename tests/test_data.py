import json
import socket
import threading
import time

import numpy as np
import pytest
import torch
from conftest import closed_port as _closed_port
from conftest import shared_data
from hubcopies import foodseg103, scene_parse_150, sidewalk_semantic
from PIL import Image

import segnb
from segnb.data import SHAPES_CLASSES, load_dataset, load_shapes
from segnb.errors import DatasetError, HubUnavailableError

# ---------------------------------------------------------------- built-in shapes


def test_shapes_is_deterministic_by_seed():
    a, b, c = load_shapes(n=6, seed=1), load_shapes(n=6, seed=1), load_shapes(n=6, seed=2)
    assert np.array_equal(a["train"][0][0], b["train"][0][0])
    assert np.array_equal(a["validation"][0][1], b["validation"][0][1])
    assert not np.array_equal(a["train"][0][0], c["train"][0][0])
    # Image i depends only on (seed, i): a longer dataset starts with the same images.
    longer = load_shapes(n=20, seed=1)
    assert np.array_equal(longer["train"][3][0], a["train"][3][0])


def test_shapes_has_small_objects_large_objects_and_imbalance():
    from scipy import ndimage

    data = load_shapes(n=120, size=128, seed=0)
    assert data.class_names == SHAPES_CLASSES and data.num_classes == 7
    areas = []
    for i in range(len(data["train"])):
        _, mask = data["train"][i]
        for cls in range(3, 7):
            components, count = ndimage.label(mask == cls)
            areas += np.bincount(components.ravel())[1:].tolist()
    areas = np.array(areas)
    assert (areas < 30).sum() > 10, "small objects (a few pixels across) must be present"
    assert areas.max() > 128 * 128 / 8, "objects up to half the image must be present"
    freq = data.frequencies()
    assert freq.sum() == pytest.approx(1.0)
    assert (freq > 0).all()
    assert freq[SHAPES_CLASSES.index("ring")] < freq[SHAPES_CLASSES.index("circle")] / 3


def test_shapes_void_border_marks_only_object_outlines():
    plain = load_shapes(n=10, seed=5)
    void = load_shapes(n=10, seed=5, void_border=2)
    _, m0 = plain["train"][0]
    _, m1 = void["train"][0]
    assert 255 not in m0
    changed = m1 != m0
    assert changed.any() and (m1[changed] == 255).all()
    assert changed.mean() < 0.3
    # Void pixels sit next to a thing (class >= 3) in the plain mask.
    from scipy import ndimage

    near_thing = ndimage.binary_dilation(m0 >= 3, iterations=2)
    assert near_thing[changed].all()


def test_loader_batches_are_torch_ready(shapes_small):
    loader = shapes_small.loader("train", batch_size=4, image_size=48, seed=0)
    images, masks = next(iter(loader))
    assert images.shape == (4, 3, 48, 48) and images.dtype == torch.float32
    assert masks.shape == (4, 48, 48) and masks.dtype == torch.int64
    assert -3 < images.mean() < 3  # normalised, not 0..255
    # Masks are resized with nearest: no invented classes.
    assert set(masks.unique().tolist()) <= set(range(7)) | {255}


def test_eval_loader_is_not_augmented(shapes_small):
    loader = shapes_small.loader("validation", batch_size=2)
    first = next(iter(loader))[0]
    second = next(iter(loader))[0]
    assert torch.equal(first, second)


def test_loader_with_worker_processes(shapes_small):
    loader = shapes_small.loader("train", batch_size=8, num_workers=2, seed=0)
    total = sum(len(m) for _, m in loader)
    assert total == len(shapes_small["train"])


def test_transform_random_scale_crop_pads_mask_with_void():
    from segnb.data import SegTransform

    image = np.zeros((20, 20, 3), np.uint8)
    mask = np.ones((20, 20), np.int64)
    torch.manual_seed(0)
    t = SegTransform(size=32, train=True, scale=(1.0, 1.0), hflip=False)
    x, y = t(image, mask)
    assert x.shape == (3, 32, 32) and y.shape == (32, 32)
    t = SegTransform(size=32, train=True, scale=(0.5, 0.5), hflip=False)
    x, y = t(image, mask)
    assert (y == 255).any() and (y == 1).any()


def test_describe_and_pixel_counts_are_cached(shapes_small):
    summary = shapes_small.describe()
    assert summary["splits"] == {"train": 32, "validation": 8}
    assert set(summary["pixel_frequencies"]) == set(SHAPES_CLASSES)
    counts = shapes_small.pixel_counts()
    assert shapes_small.pixel_counts() is counts
    assert counts.sum() == sum((m != 255).sum() for _, m in (shapes_small["train"][i] for i in range(32)))


# ---------------------------------------------------------------- hub layouts


def test_sidewalk_semantic_copy(tmp_path):
    data = load_dataset(sidewalk_semantic(tmp_path / "sidewalk-semantic"))
    assert data.info["image_column"] == "pixel_values" and data.info["mask_column"] == "label"
    assert data.num_classes == 35 and data.class_names[:2] == ["unlabeled", "flat-road"]
    assert set(data.splits) == {"train", "validation"}  # seeded split of the only split
    assert len(data["train"]) + len(data["validation"]) == 6
    image, mask = data["train"][0]
    assert image.shape == (24, 32, 3) and mask.shape == (24, 32)


def test_scene_parse_150_copy_with_reduce_labels(tmp_path):
    root = scene_parse_150(tmp_path / "scene_parse_150")
    raw = load_dataset(root, num_classes=151)
    reduced = load_dataset(root, reduce_labels=True, num_classes=150)
    assert reduced.info["mask_column"] == "annotation" and set(reduced.splits) == {"train", "validation"}
    _, before = raw["train"][0]
    _, after = reduced["train"][0]
    assert (after[before == 0] == 255).all()
    assert np.array_equal(after[before > 0], before[before > 0] - 1)
    with pytest.raises(DatasetError, match="reduce_labels"):
        load_dataset(root, num_classes=150)["train"][0]


def test_foodseg103_copy_with_id2label(tmp_path):
    data = load_dataset(foodseg103(tmp_path / "FoodSeg103"))
    assert data.info["image_column"] == "image" and data.info["mask_column"] == "label"
    assert data.num_classes == 104 and data.class_names[1] == "candy"
    assert set(data.splits) == {"train", "validation"}
    assert len(data["validation"]) == 6


def test_in_memory_dataset_and_column_override():
    import datasets

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(4)]
    masks = [Image.fromarray(rng.integers(0, 3, (8, 8)).astype(np.uint8)) for _ in range(4)]
    features = datasets.Features({"photo_a": datasets.Image(), "photo_b": datasets.Image()})
    table = datasets.Dataset.from_dict({"photo_a": images, "photo_b": masks}, features=features)
    with pytest.raises(DatasetError, match="mask_column"):
        load_dataset(table)
    data = load_dataset(
        table, image_column="photo_a", mask_column="photo_b", class_names=["a", "b", "c"], val_fraction=0
    )
    assert data.num_classes == 3 and list(data.splits) == ["train"]
    assert np.array_equal(data["train"][2][1], np.asarray(masks[2]))
    assert np.array_equal(data["train"][2][0], np.asarray(images[2]))


def test_no_mask_column_lists_the_columns():
    import datasets

    table = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (4, 4))], "caption": ["a cat"]},
        features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")}),
    )
    with pytest.raises(DatasetError, match=r"No mask-like column.*'image', 'caption'"):
        load_dataset(table)


def test_unknown_column_override_is_named(tmp_path):
    root = sidewalk_semantic(tmp_path / "sw")
    with pytest.raises(DatasetError, match="mask_column='segmentation' is not a column"):
        load_dataset(root, mask_column="segmentation")


def test_corrupt_row_is_named_or_skipped():
    import datasets

    good = Image.new("RGB", (4, 4))
    mask = Image.fromarray(np.zeros((4, 4), np.uint8))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    table = datasets.Dataset.from_dict({"image": [good, good], "label": [mask, mask]}, features=features)
    table = table.cast_column("image", datasets.Image(decode=False))
    rows = table.to_list()
    rows[1]["image"] = {"bytes": b"not an image at all", "path": None}
    broken = datasets.Dataset.from_list(rows, features=datasets.Features(
        {"image": datasets.Image(decode=False), "label": datasets.Image()}
    ))
    data = load_dataset(broken, val_fraction=0, num_classes=2)
    with pytest.raises(DatasetError, match="train row 1.*on_bad_image='skip'"):
        data["train"][1]
    skipping = load_dataset(broken, val_fraction=0, num_classes=2, on_bad_image="skip")
    with pytest.warns(UserWarning, match="skipping train row 1"):
        image, _ = skipping["train"][1]
    assert image.shape == (4, 4, 3)


# ---------------------------------------------------------------- offline hub


def _blackhole_server():
    """A loopback server that accepts connections and never answers: a hub that hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, held



def test_offline_hub_id_answers_fast_with_alternatives(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match="shapes") as info:
        load_dataset("segments/sidewalk-semantic", cache_dir=str(tmp_path))
    assert time.monotonic() - start < 10
    assert "local folder" in str(info.value)


def test_hanging_hub_answers_within_ten_seconds(monkeypatch, tmp_path):
    server, _ = _blackhole_server()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        start = time.monotonic()
        with pytest.raises(HubUnavailableError, match="could not be reached"):
            load_dataset("scene_parse_150", cache_dir=str(tmp_path))
        assert time.monotonic() - start < 10
    finally:
        server.close()


def test_missing_hub_dataset_says_so(monkeypatch, tmp_path):
    import http.server

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        with pytest.raises(DatasetError, match="no public dataset 'someone/nothing-here'"):
            load_dataset("someone/nothing-here", cache_dir=str(tmp_path))
    finally:
        server.shutdown()


# ---------------------------------------------------------------- local folders


def _save(path, array, mode=None, palette=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)
    image.save(path)


def _rgb(rng, h=16, w=20):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_folder_images_masks_with_classes_txt(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        _save(tmp_path / "images" / f"{i:03d}.jpg", _rgb(rng))
        _save(tmp_path / "masks" / f"{i:03d}_mask.png", rng.integers(0, 3, (16, 20)).astype(np.uint8))
    (tmp_path / "classes.txt").write_text("road\ncar\ntree\n")
    data = load_dataset(tmp_path, val_fraction=0.4, seed=1)
    assert data.class_names == ["road", "car", "tree"]
    assert len(data["train"]) == 3 and len(data["validation"]) == 2
    assert data["train"][0][1].max() <= 2


def test_folder_per_split_subfolders_and_labels_json(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _save(tmp_path / split / "images" / f"a{i}.png", _rgb(rng))
            _save(tmp_path / split / "labels" / f"a{i}.png", rng.integers(0, 4, (16, 20)).astype(np.uint8))
    (tmp_path / "labels.json").write_text(json.dumps(["w", "x", "y", "z"]))
    data = load_dataset(tmp_path)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 3, "validation": 2}
    assert data.class_names == ["w", "x", "y", "z"]


def test_folder_camvid_siblings_palette_masks(tmp_path):
    rng = np.random.default_rng(2)
    palette = [0, 0, 0, 200, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 9)
    for split in ("train", "test"):
        for i in range(2):
            _save(tmp_path / split / f"f{i}.png", _rgb(rng))
            _save(tmp_path / f"{split}annot" / f"f{i}.png", rng.integers(0, 3, (16, 20)).astype(np.uint8), "P", palette)
    (tmp_path / "id2label.json").write_text(json.dumps({"0": "sky", "1": "car", "2": "tree"}))
    data = load_dataset(tmp_path)
    assert set(data.splits) == {"train", "test"} and data.eval_split == "test"
    assert data.palette[1].tolist() == [200, 0, 0]  # the masks' own palette


def test_folder_binary_0_255_masks_become_two_classes(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(4):
        _save(tmp_path / "image" / f"{i}.png", rng.integers(0, 256, (16, 16), dtype=np.uint8))  # grey
        _save(tmp_path / "label" / f"{i}.png", (rng.random((16, 16)) > 0.5).astype(np.uint8) * 255)
    data = load_dataset(tmp_path)
    assert data.num_classes == 2 and data.info["binary_mask"]
    image, mask = data["train"][0]
    assert image.shape == (16, 16, 3) and set(np.unique(mask)) <= {0, 1}


def test_folder_rgb_masks_with_color_map(tmp_path):
    rng = np.random.default_rng(4)
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    index = rng.integers(0, 3, (16, 20))
    for i in range(3):
        _save(tmp_path / "images" / f"{i}.png", _rgb(rng))
        _save(tmp_path / "masks" / f"{i}.png", colours[index])
    with pytest.raises(DatasetError, match="color_map"):
        load_dataset(tmp_path)
    data = load_dataset(tmp_path, color_map={(0, 0, 0): 0, (255, 0, 0): 1, (0, 255, 0): 2}, val_fraction=0)
    assert np.array_equal(data["train"][0][1], index)
    (tmp_path / "class_dict.csv").write_text("name,r,g,b\nvoid,0,0,0\nred,255,0,0\ngreen,0,255,0\n")
    data = load_dataset(tmp_path, val_fraction=0)
    assert data.class_names == ["void", "red", "green"]
    assert np.array_equal(data["train"][1][1], index)


def test_rgba_and_16_bit_images_become_rgb(tmp_path):
    rng = np.random.default_rng(5)
    _save(tmp_path / "images" / "a.png", rng.integers(0, 256, (8, 8, 4), dtype=np.uint8))
    Image.fromarray((rng.integers(0, 65535, (8, 8))).astype(np.uint16)).save(tmp_path / "images" / "b.png")
    for stem in "ab":
        _save(tmp_path / "masks" / f"{stem}.png", np.ones((8, 8), np.uint8))
    data = load_dataset(tmp_path, val_fraction=0, num_classes=2)
    for i in range(2):
        image, _ = data["train"][i]
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8


# ---------------------------------------------------------------- bad input


def test_unknown_source():
    with pytest.raises(DatasetError, match="Unknown dataset source.*'shapes'"):
        load_dataset("not a dataset!")
    with pytest.raises(DatasetError, match="No folder at"):
        load_dataset("./no/such/folder")
    with pytest.raises(DatasetError, match="not int"):
        load_dataset(3)


def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="is empty"):
        load_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"no images/masks layout.*notes.txt"):
        load_dataset(tmp_path)


def test_unpaired_files_list_the_stems(tmp_path):
    rng = np.random.default_rng(6)
    for stem in ("a", "b", "lonely_image"):
        _save(tmp_path / "images" / f"{stem}.png", _rgb(rng))
    for stem in ("a", "b", "lonely_mask"):
        _save(tmp_path / "masks" / f"{stem}.png", np.zeros((16, 20), np.uint8))
    with pytest.raises(DatasetError, match=r"\['lonely_image'\].*\['lonely_mask'\]"):
        load_dataset(tmp_path)
    with pytest.warns(UserWarning, match="Using only the pairs"):
        data = load_dataset(tmp_path, allow_unpaired=True, val_fraction=0, num_classes=1)
    assert len(data["train"]) == 2


def test_size_mismatch_names_the_file(tmp_path):
    rng = np.random.default_rng(7)
    _save(tmp_path / "images" / "ok.png", _rgb(rng))
    _save(tmp_path / "masks" / "ok.png", np.zeros((16, 20), np.uint8))
    _save(tmp_path / "images" / "bad.png", _rgb(rng))
    _save(tmp_path / "masks" / "bad.png", np.zeros((10, 10), np.uint8))
    data = load_dataset(tmp_path, val_fraction=0, num_classes=2)
    with pytest.raises(DatasetError, match=r"images/bad.png.*20x16 but its mask is 10x10"):
        data["train"][0]  # sorted: bad before ok


def test_unreadable_image_is_named(tmp_path):
    rng = np.random.default_rng(8)
    _save(tmp_path / "images" / "good.png", _rgb(rng))
    _save(tmp_path / "masks" / "good.png", np.zeros((16, 20), np.uint8))
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _save(tmp_path / "masks" / "broken.png", np.zeros((16, 20), np.uint8))
    data = load_dataset(tmp_path, val_fraction=0, num_classes=2)
    with pytest.raises(DatasetError, match=r"broken.png: cannot read this image"):
        data["train"][0]


def test_mask_values_outside_classes_name_values_and_fixes(tmp_path):
    rng = np.random.default_rng(9)
    _save(tmp_path / "images" / "a.png", _rgb(rng))
    mask = np.zeros((16, 20), np.uint8)
    mask[0, :3] = [7, 9, 255]
    _save(tmp_path / "masks" / "a.png", mask)
    (tmp_path / "classes.txt").write_text("bg\nfg\n")
    data = load_dataset(tmp_path, val_fraction=0)
    with pytest.raises(DatasetError, match=r"values \[7, 9\].*ignore_index.*reduce_labels"):
        data["train"][0]


# ---------------------------------------------------------------- real data


def test_isbi_membranes_load_as_two_classes():
    root = shared_data("isbi2012-membrane")
    data = load_dataset(root)
    assert data.num_classes == 2
    assert len(data["train"]) + len(data["validation"]) == 30
    image, mask = data["train"][0]
    assert image.shape == (512, 512, 3) and (image[..., 0] == image[..., 1]).all()  # grey -> RGB
    assert set(np.unique(mask)) == {0, 1}
    freq = data.frequencies()
    assert 0.1 < freq[0] < 0.4  # membranes are the minority


# ---------------------------------------------------------------- package


def test_segnb_exposes_load_dataset():
    assert segnb.load_dataset is load_dataset


def test_offline_hub_id_uses_the_cached_copy(monkeypatch, tmp_path):
    """A copy in the hub cache, laid out as huggingface_hub stores a downloaded repository."""
    import huggingface_hub.constants as hub_constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--segments--sidewalk-semantic"
    sidewalk_semantic(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.warns(UserWarning, match="using the cached copy"):
        data = load_dataset("segments/sidewalk-semantic", cache_dir=str(tmp_path / "datasets"))
    assert time.monotonic() - start < 10
    assert data.class_names[1] == "flat-road" and data.info["mask_column"] == "label"
    assert len(data["train"]) + len(data["validation"]) == 6
