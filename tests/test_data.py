import json
import socket
import threading
import time
from pathlib import Path

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


def test_shapes_cache_gives_the_same_scenes_drawn_once(tmp_path, monkeypatch):
    """With $SEGNB_SHAPES_CACHE (set by `segnb studio` for a class) the scenes are drawn once and read
    back identical; a damaged file is drawn again, never read as pictures."""
    from segnb.data import shapes

    drawn = load_shapes(n=8, size=32, seed=4, void_border=1)
    monkeypatch.setenv(shapes.CACHE_ENV, str(tmp_path))
    first = load_shapes(n=8, size=32, seed=4, void_border=1)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and "n8-size32-seed4-void1" in files[0].name
    monkeypatch.setattr(shapes, "render_scene", lambda *a, **k: pytest.fail("drawn again"))
    again = load_shapes(n=8, size=32, seed=4, void_border=1)
    for data in (first, again):
        for split in ("train", "validation"):
            for i in range(len(drawn[split])):
                assert all(np.array_equal(x, y) for x, y in zip(drawn[split].get(i, instances=True),
                                                                data[split].get(i, instances=True), strict=True))
    files[0].write_bytes(b"not a numpy file")
    monkeypatch.undo()
    monkeypatch.setenv(shapes.CACHE_ENV, str(tmp_path))
    redrawn = load_shapes(n=8, size=32, seed=4, void_border=1)
    assert np.array_equal(redrawn["train"][2][0], drawn["train"][2][0])
    assert np.load(files[0])["images"].shape == (8, 32, 32, 3)  # and the file is whole again


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
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable row\(s\) of train: \[1\]"):
        skipping = load_dataset(broken, val_fraction=0, num_classes=2, on_bad_image="skip")
    image, _ = skipping["train"][0]
    assert image.shape == (4, 4, 3)
    assert len(skipping["train"]) == 1 and skipping["train"].skipped == [1]


def test_skipping_bad_rows_never_recurses_repeats_or_grows():
    """Today's main: RecursionError on a split of only bad rows, the next row returned twice,
    and the list of skipped rows growing every epoch."""
    import datasets

    good = [Image.fromarray(np.full((4, 4, 3), i, np.uint8)) for i in range(4)]
    masks = [Image.fromarray(np.full((4, 4), i % 2, np.uint8)) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    rows = datasets.Dataset.from_dict({"image": good, "label": masks}, features=features)
    rows = rows.cast_column("image", datasets.Image(decode=False)).to_list()
    rows[1]["image"] = {"bytes": b"broken", "path": None}
    decode_off = datasets.Features({"image": datasets.Image(decode=False), "label": datasets.Image()})
    with pytest.warns(UserWarning, match="skipping 1 unreadable"):
        data = load_dataset(datasets.Dataset.from_list(rows, features=decode_off), val_fraction=0,
                            num_classes=2, on_bad_image="skip")
    split = data["train"]
    seen = [int(split[i][0][0, 0, 0]) for i in range(len(split))]
    assert seen == [0, 2, 3]  # each good row once, the bad one never
    for _ in range(3):  # three epochs
        for _ in data.loader("train", batch_size=2):
            pass
    assert split.skipped == [1]
    only_bad = [{**r, "image": {"bytes": b"broken", "path": None}} for r in rows]
    with pytest.raises(DatasetError, match="every one of its 4 rows is unreadable"):
        load_dataset(datasets.Dataset.from_list(only_bad, features=decode_off), val_fraction=0,
                     num_classes=2, on_bad_image="skip")


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


def _offline_with_cached_sidewalk(monkeypatch, tmp_path) -> str:
    """An offline hub, and a copy of segments/sidewalk-semantic in the hub cache, laid out as
    huggingface_hub stores a downloaded repository. Returns the copy's revision."""
    import huggingface_hub.constants as hub_constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "datasets--segments--sidewalk-semantic"
    sidewalk_semantic(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    return revision


def test_offline_hub_id_uses_the_cached_copy(monkeypatch, tmp_path):
    _offline_with_cached_sidewalk(monkeypatch, tmp_path)
    start = time.monotonic()
    with pytest.warns(UserWarning, match="using the cached copy"):
        data = load_dataset("segments/sidewalk-semantic", cache_dir=str(tmp_path / "datasets"))
    assert time.monotonic() - start < 10
    assert data.class_names[1] == "flat-road" and data.info["mask_column"] == "label"
    assert len(data["train"]) + len(data["validation"]) == 6


# ---------------------------------------------------------------- label settings, guesses, notes


def _folder(root, masks, suffix=".png", split=None, size=None, images=True):
    """images/ + masks/ (or split/images + split/masks) from a list of mask arrays."""
    base = root / split if split else root
    (base / "images").mkdir(parents=True, exist_ok=True)
    (base / "masks").mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(masks):
        h, w = mask.shape
        if images:
            Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(base / "images" / f"{i:03d}.png")
        if suffix in (".jpg", ".jpeg"):
            Image.fromarray(mask.astype(np.uint8)).save(base / "masks" / f"{i:03d}{suffix}", quality=75)
        else:
            stored = mask.astype(np.uint8 if mask.max() < 256 else np.uint16)
            Image.fromarray(stored).save(base / "masks" / f"{i:03d}{suffix}")
    return root


def _blobs(rng, values, n, size=48):
    masks = []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        mask = np.full((size, size), values[0], np.int64)
        for _ in range(4):
            y, x = rng.integers(0, size, 2)
            mask[(yy - y) ** 2 + (xx - x) ** 2 < rng.integers(6, 14) ** 2] = rng.choice(values[1:])
        masks.append(mask)
    return masks


def test_label_settings_cannot_change_half_way():
    """Today's main let `data.ignore_index = N` pass while the splits kept 255."""
    data = load_shapes(n=6, size=32)
    for name, value in (("ignore_index", 3), ("class_names", ["a"]), ("num_classes", 3)):
        with pytest.raises(AttributeError, match=rf"with_labels\({name}="):
            setattr(data, name, value)
    with pytest.raises(AttributeError, match="with_labels"):
        data.class_names.append("extra")
    assert data.ignore_index == 255 and data.num_classes == 7


def test_with_labels_returns_a_new_dataset_every_split_and_cache_agree():
    data = load_shapes(n=6, size=32, void_border=1)
    before = data.pixel_counts().copy()
    assert (np.concatenate([data["train"][i][1].ravel() for i in range(5)]) == 255).any()
    sky_void = data.with_labels(ignore_index=0, class_names=[f"c{i}" for i in range(7)])
    assert data.ignore_index == 255 and np.array_equal(data.pixel_counts(), before)  # unchanged
    assert sky_void.ignore_index == 0
    for split in sky_void.splits.values():
        assert split.ignore_index == 0
        _, mask = split[0]
        assert not (mask == 255).any()  # old void stays void, under the new index
    assert sky_void.pixel_counts()[0] == 0 and sky_void.pixel_counts()[1:].sum() > 0
    assert sky_void.options["ignore_index"] == 0


def test_with_labels_ignore_index_drops_a_trailing_void_class(tmp_path):
    """Masks 0, 1, 2 with 3 = void: a guessed 4th class becomes void, not class_3 with IoU 0."""
    rng = np.random.default_rng(0)
    masks = [np.where(rng.random((16, 16)) < 0.1, 3, rng.integers(0, 3, (16, 16))).astype(np.uint8)
             for _ in range(4)]
    guessed = load_dataset(_folder(tmp_path, masks))
    assert guessed.num_classes == 4
    fixed = guessed.with_labels(ignore_index=3)
    assert fixed.num_classes == 3 and fixed.ignore_index == 3
    _, mask = fixed["train"][0]
    assert set(np.unique(mask)) <= {0, 1, 2, 3}
    loaded = load_dataset(tmp_path, ignore_index=3)  # the loader option agrees
    assert loaded.num_classes == 3
    with pytest.raises(DatasetError, match="middle"):
        guessed.with_labels(ignore_index=1)


def test_jpeg_binary_masks_are_snapped_with_a_warning_that_counts_pixels(tmp_path):
    """Today's main: 0/255 JPEG masks became 255 classes with the foreground ignored as void."""
    masks = _blobs(np.random.default_rng(1), [0, 255], 6)
    with pytest.warns(UserWarning, match=r"JPEG.*snapped to the nearest of \[0, 255\]; [\d,]+ of [\d,]+ training pixels"):
        data = load_dataset(_folder(tmp_path, masks, ".jpg"), val_fraction=0)
    assert data.class_names == ["background", "foreground"]
    for i in range(len(masks)):
        _, mask = data["train"][i]
        assert set(np.unique(mask)) <= {0, 1}
        assert (mask == (masks[i] == 255)).mean() > 0.97
    assert any("JPEG" in n and "PNG" in n for n in data.notes)


def test_jpeg_masks_with_close_class_values_are_refused(tmp_path):
    """Today's main: JPEG masks of classes 0-5 became 9 classes with 7-9% of pixels wrong."""
    masks = _blobs(np.random.default_rng(2), [0, 1, 2, 3, 4, 5], 6)
    _folder(tmp_path, masks, ".jpg")
    with pytest.raises(DatasetError, match="JPEG.*Save the masks as PNG"):
        load_dataset(tmp_path, val_fraction=0)
    kept = load_dataset(tmp_path, val_fraction=0, lossy_masks="keep")
    assert any("lossy_masks='keep'" in n for n in kept.notes)


def test_binary_is_decided_from_all_masks_not_the_first_eight(tmp_path):
    """Today's main: VOC-style masks whose first 8 held only 0/255 had void merged into class 1."""
    rng = np.random.default_rng(3)
    masks = _blobs(rng, [0, 255], 8) + _blobs(rng, [0, 1, 2, 3, 255], 4)
    data = load_dataset(_folder(tmp_path, masks), val_fraction=0)
    assert data.info["binary_mask"] is False and data.num_classes == 4 and data.ignore_index == 255
    _, first = data["train"][0]
    assert set(np.unique(first)) <= {0, 255}  # 255 stayed void
    assert any("255 is read as void" in n and "ignore_index=" in n for n in data.notes)
    assert any("4 classes guessed" in n and "num_classes=" in n for n in data.notes)
    counts = data.pixel_counts()  # from the histogram read once at load time
    direct = sum(np.bincount(m[m != 255].ravel(), minlength=4) for m in masks)
    assert np.array_equal(counts, direct)


def test_16_bit_masks_with_65535_void(tmp_path):
    """Today's main: a 16-bit mask with 65535 as void became 65,536 classes."""
    rng = np.random.default_rng(4)
    masks = []
    for _ in range(4):
        mask = rng.integers(0, 3, (16, 16)).astype(np.uint16)
        mask[:3] = 65535
        masks.append(mask)
    data = load_dataset(_folder(tmp_path, masks), val_fraction=0)
    assert data.num_classes == 3
    _, mask = data["train"][0]
    assert (mask[:3] == data.ignore_index).all()
    assert any("65535" in n and "void" in n for n in data.notes)


def test_missing_validation_split_is_split_off_with_a_note(tmp_path):
    """Today's main: train/{images,masks} + val/images without masks validated on training images."""
    rng = np.random.default_rng(5)
    _folder(tmp_path, [rng.integers(0, 3, (16, 16)).astype(np.uint8) for _ in range(10)], split="train")
    (tmp_path / "val" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "val" / "images" / "x.png")
    data = load_dataset(tmp_path)
    assert data.has_validation and data.eval_split == "validation"
    assert len(data["validation"]) == 2 and len(data["train"]) == 8
    train_files = {p for p, _ in data["train"].pairs}
    assert not train_files & {p for p, _ in data["validation"].pairs}
    assert any("split off as validation" in n and "seed=0" in n for n in data.notes)
    again = load_dataset(tmp_path)
    assert [p for p, _ in again["validation"].pairs] == [p for p, _ in data["validation"].pairs]


def test_one_image_folder_says_loudly_there_is_no_validation(tmp_path):
    _folder(tmp_path, [np.eye(16, dtype=np.uint8)])
    with pytest.warns(UserWarning, match="NO VALIDATION SPLIT"):
        data = load_dataset(tmp_path)
    assert not data.has_validation and data.describe()["validation"] is None
    assert any("training images" in n for n in data.notes)


def test_a_text_file_as_the_first_mask_is_named(tmp_path):
    """Today's main raised a raw PIL.UnidentifiedImageError."""
    _folder(tmp_path, [np.eye(8, dtype=np.uint8)] * 2)
    (tmp_path / "masks" / "000.png").write_text("this is not an image")
    with pytest.raises(DatasetError, match=r"000\.png: cannot read this mask file"):
        load_dataset(tmp_path, val_fraction=0)


def test_wrong_kinds_of_options_are_refused_clearly(tmp_path):
    _folder(tmp_path, [np.eye(8, dtype=np.uint8)] * 2)
    with pytest.raises(DatasetError, match="num_classes must be a whole number"):
        load_dataset(tmp_path, num_classes=2.5)
    with pytest.raises(DatasetError, match="no option 'foo'.*options are"):
        load_dataset("shapes", foo=1)
    with pytest.raises(DatasetError, match="n >= 2"):
        load_dataset("shapes", n=0)


def test_a_local_hub_copy_never_lands_in_the_cache_under_a_hub_id(tmp_path, monkeypatch):
    """Today's main cached a folder named scene_parse_150 under that name; offline, the hub id
    then returned the test's 6 noise images with only a 'using the cached copy' warning."""
    import datasets

    copy = scene_parse_150(tmp_path / "scene_parse_150")
    cache = Path(datasets.config.HF_DATASETS_CACHE)
    before = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
    data = load_dataset(copy)
    assert len(data["train"]) == 6
    after = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
    assert after == before
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(HubUnavailableError, match="no cached copy"):
        load_dataset("scene_parse_150")
    # A copy someone put in datasets' cache under that name from a local folder is not used.
    datasets.load_dataset(str(copy), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(HubUnavailableError, match="was not used: nothing shows it came from the hub"):
        load_dataset("scene_parse_150", cache_dir=str(tmp_path / "cache"))


def test_the_cached_copy_says_which_copy(monkeypatch, tmp_path):
    revision = _offline_with_cached_sidewalk(monkeypatch, tmp_path)
    with pytest.warns(UserWarning, match=rf"cached copy of 'segments/sidewalk-semantic' at .*{revision} "
                                         r"\(downloaded \d{4}-\d\d-\d\d.*, 6 rows\)"):
        data = load_dataset("segments/sidewalk-semantic")
    assert any(revision in n and "6 rows" in n for n in data.notes)


def test_pixel_counts_from_the_histogram_still_refuse_values_outside_the_classes(tmp_path):
    masks = _blobs(np.random.default_rng(6), [0, 255], 4)
    _folder(tmp_path, masks, ".jpg")
    with pytest.warns(UserWarning, match="snapped"):
        data = load_dataset(tmp_path, val_fraction=0, class_names=["only"], binary=True)
    with pytest.raises(DatasetError, match=r"values \[1\] outside the 1 classes"):
        data.pixel_counts()


def test_two_named_classes_with_0_255_masks_read_255_as_the_second_class(tmp_path):
    """Naming the two classes of a 0/255 folder must not turn the second class into void
    (it did: the ISBI membranes then trained with every cell pixel ignored, mIoU looked fine)."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(6):
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12, 4 + i % 3 : 12] = 255
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    data = load_dataset(tmp_path, class_names=["membrane", "cell"])
    _, mask = data["train"][0]
    assert set(np.unique(mask).tolist()) == {0, 1}
    assert data.frequencies()[1] > 0.1
    assert any("255 as 'cell'" in note for note in data.notes), data.notes
    void = load_dataset(tmp_path, class_names=["membrane", "cell"], binary=False, ignore_index=255)
    assert set(np.unique(void["train"][0][1]).tolist()) <= {0, 255}
