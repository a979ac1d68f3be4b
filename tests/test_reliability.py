"""Faults and bad inputs not covered elsewhere; docs/RELIABILITY.md maps every row to its test."""

import http.server
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_interactive import tiny_sam  # noqa: F401  (a fixture: a tiny SAM folder)

from segnb.cli import main
from segnb.data import load_dataset, load_shapes
from segnb.errors import CheckpointError, DatasetError
from segnb.models import build_model
from segnb.train import evaluate, fit

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- data


def test_huge_images_are_downscaled_with_a_warning(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (8200, 20), (10, 20, 30)).save(tmp_path / "images" / "wide.png")
    Image.new("L", (8200, 20), 1).save(tmp_path / "masks" / "wide.png")
    data = load_dataset(tmp_path, val_fraction=0, num_classes=2)
    with pytest.warns(UserWarning, match="larger than 8000 px; downscaled"):
        image, mask = data["train"][0]
    assert image.shape[1] == 8000 and mask.shape == image.shape[:2] and set(np.unique(mask)) == {1}


def test_classes_absent_from_validation_are_reported_not_averaged(tmp_path):
    data = load_shapes(n=30, size=32, seed=0)
    split = data["validation"]
    split.masks = np.where(split.masks >= 3, 0, split.masks)  # no things at all in validation
    model = build_model("fcn32s", "vgg-tiny", class_names=data.class_names)
    history = fit(model, data, epochs=1, batch_size=8, progress=False)
    assert history.stopped == "completed" and np.isfinite(history.last("val_loss"))
    report = evaluate(model, data)
    absent_rows = [row for row in report.table() if row["pixels"] == 0]
    assert len(absent_rows) >= 4 and all(row["accuracy"] is None for row in absent_rows)
    assert np.isfinite(report.miou)


COLUMN = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image_name=COLUMN, mask_name=COLUMN,
    mode=st.sampled_from(["L", "RGB", "RGBA", "I;16"]),
    mask_dtype=st.sampled_from([np.uint8, np.uint16, np.int32]),
    height=st.integers(1, 12), width=st.integers(1, 12), top=st.integers(1, 300),
)
def test_hub_adapter_on_random_columns_dtypes_sizes_and_values(image_name, mask_name, mode, mask_dtype,
                                                              height, width, top):
    """Either the data loads with every mask value valid, or a DatasetError says why; nothing else."""
    import datasets

    if image_name == mask_name:
        mask_name += "_m"
    rng = np.random.default_rng(height * 100 + width)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (height, width)).astype(np.uint16))
    else:
        image = Image.new(mode, (width, height))
    masks = [rng.integers(0, top, (height, width)).astype(mask_dtype) for _ in range(3)]
    table = datasets.Dataset.from_dict({image_name: [image] * 3, mask_name: masks},
                                       features=datasets.Features({image_name: datasets.Image(),
                                                                   mask_name: datasets.Array2D((height, width),
                                                                                              str(np.dtype(mask_dtype)))}))
    try:
        data = load_dataset(table, val_fraction=0)
        for i in range(len(data["train"])):
            picture, mask = data["train"][i]
            assert picture.shape == (height, width, 3) and picture.dtype == np.uint8
            valid = mask[mask != data.ignore_index]
            assert valid.size == 0 or (valid.min() >= 0 and valid.max() < data.num_classes)
    except DatasetError as error:
        assert str(error)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stems=st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=5, unique=True),
       size=st.tuples(st.integers(1, 10), st.integers(1, 10)), values=st.integers(1, 260),
       drop_mask=st.booleans())
def test_folder_adapter_on_random_files(tmp_path_factory, stems, size, values, drop_mask):
    root = tmp_path_factory.mktemp("folder")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(len(stems))
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(rng.integers(0, values, size).astype(np.uint8)).save(root / "masks" / f"{stem}.png")
    if drop_mask:
        (root / "masks" / f"{stems[0]}.png").unlink()
    try:
        data = load_dataset(root, val_fraction=0)
        assert not drop_mask, "a missing mask must be reported"
        for i in range(len(data["train"])):
            _, mask = data["train"][i]
            valid = mask[mask != 255]
            assert valid.size == 0 or valid.max() < data.num_classes
    except DatasetError as error:
        assert drop_mask or "mask values" in str(error) or "no mask files" in str(error)


# ---------------------------------------------------------------- network


class _HubThatSaysYes(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_trust_remote_code_is_never_turned_on_silently(monkeypatch):
    import datasets

    server = http.server.HTTPServer(("127.0.0.1", 0), _HubThatSaysYes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    calls = []

    def fake_load(path, **options):
        calls.append(options)
        raise RuntimeError("stop here")

    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setattr(datasets, "load_dataset", fake_load)
        with pytest.raises(RuntimeError, match="stop here"):
            load_dataset("someone/with-a-script")
        assert calls and "trust_remote_code" not in calls[0]
        with pytest.raises(DatasetError, match="no longer runs dataset scripts"):
            load_dataset("someone/with-a-script", trust_remote_code=True)
    finally:
        server.shutdown()


# ---------------------------------------------------------------- files


def test_torch_load_is_only_ever_used_with_weights_only():
    for path in (ROOT / "segnb").rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, f"{path}: {call}"


def test_truncated_training_checkpoint_gives_a_clear_error(tmp_path):
    data = load_shapes(n=20, size=32, seed=0)
    model = build_model("fcn32s", "vgg-tiny", class_names=data.class_names)
    fit(model, data, epochs=1, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    training = (tmp_path / "last" / "training.safetensors")
    training.write_bytes(training.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        fit(model, data, epochs=2, batch_size=8, resume=tmp_path, progress=False)
    (tmp_path / "last" / "training.json").write_text("{ half")
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        fit(model, data, epochs=2, batch_size=8, resume=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        fit(model, data, epochs=2, batch_size=8, resume=tmp_path / "nothing", progress=False)


# ---------------------------------------------------------------- servers


@pytest.mark.parametrize("command", ["lab", "studio"])
def test_servers_listen_on_loopback_with_a_token_by_default(command, monkeypatch, capsys):
    import os
    import subprocess

    seen = {}

    class Child:
        def __init__(self, args, env=None, **kwargs):
            seen["args"], seen["env"] = args, env

        def wait(self, timeout=None):
            return 0

        poll = wait

    monkeypatch.setattr(subprocess, "Popen", Child)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("SEGNB_TOKEN", raising=False)
    assert main([command]) == 0
    args = " ".join(seen["args"])
    assert "ip=127.0.0.1" in args
    out = capsys.readouterr().out
    token = re.search(r"token=(\S+)", out).group(1)
    assert len(token) >= 16 and token not in args  # not on the command line: ps would show it
    assert "--ip 0.0.0.0" in out  # says how to expose it deliberately


def test_a_bit_flipped_model_file_is_refused_by_its_checksum(tmp_path):
    """Today's main loaded a model.safetensors with one flipped bit without complaint."""
    import json

    from segnb.models import load_model, save_model

    model = build_model("unet-classic", "vgg-tiny", num_classes=3)
    folder = save_model(model, tmp_path / "m")
    meta = json.loads((folder / "model.json").read_text())
    assert len(meta["weights_sha256"]) == 64
    load_model(folder)  # intact: loads
    weights = bytearray((folder / "model.safetensors").read_bytes())
    weights[-5] ^= 0x01  # one bit in the last tensor's data: still a valid safetensors file
    (folder / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_model(folder)
    # Files saved before checksums existed still load.
    del meta["weights_sha256"]
    (folder / "model.json").write_text(json.dumps(meta))
    load_model(folder)


def test_state_snapshot_sees_a_changed_hf_cache_and_working_tree(tmp_path):
    """scripts/test compares this snapshot before and after the suite, and fails on a change."""
    import os
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    cache = tmp_path / "home" / ".cache" / "huggingface"
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    env.pop("HF_HOME_TO_WATCH", None)

    def snapshot():
        return subprocess.run(["bash", str(ROOT / "scripts" / "snapshot-state"), str(repo)], env=env,
                              capture_output=True, text=True, check=True).stdout

    first = snapshot()
    assert snapshot() == first
    (cache / "datasets" / "scene_parse_150").mkdir(parents=True)
    second = snapshot()
    assert second != first and "scene_parse_150" in second
    (repo / "notebooks" / "sidewalk-copy").mkdir(parents=True)
    (repo / "notebooks" / "sidewalk-copy" / "README.md").write_text("x")
    third = snapshot()
    assert third != second and "sidewalk-copy" in third
    script = (ROOT / "scripts" / "test").read_text()
    assert script.count("scripts/snapshot-state") == 2 and 'exit 1' in script


def test_reliability_table_names_existing_tests():
    table = (ROOT / "docs" / "RELIABILITY.md").read_text()
    names = re.findall(r"`(tests/[\w/]+\.py)::(\w+)", table)
    assert len(names) >= 25
    for file, test in names:
        source = (ROOT / file).read_text()
        assert re.search(rf"def {test}\b", source), f"{file}::{test} is named in RELIABILITY.md but does not exist"


def test_wrong_model_options_are_clear_errors():
    """Today's main: a raw TypeError for num_classes=2.5 and for an unknown teaching-model option."""
    from segnb.errors import ModelConfigError

    with pytest.raises(ModelConfigError, match="num_classes must be a whole number"):
        build_model("unet-classic", "vgg-tiny", num_classes=2.5)
    with pytest.raises(ModelConfigError, match="fcn8s with vgg-tiny: .*'foo'.*architecture options"):
        build_model("fcn8s", "vgg-tiny", num_classes=3, foo=1)


# ---------------------------------------------------------------- issue 27: environment


def test_two_clones_set_up_on_one_shared_environment_each_run_their_own_code(tmp_path):
    """Two real clones, `bash scripts/setup` in each, one shared dependency environment: a kernel
    started in each clone's notebooks/ and each clone's `segnb` command import that clone's tree.
    Before, the second setup re-pointed the shared environment's editable segnb to itself."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    shared = ROOT / ".venv" / ".segnb-shared"
    if shared.is_file():  # the environment this checkout already uses: set up in seconds
        env["SEGNB_ENV"] = shared.read_text().strip()
    clones = [tmp_path / "first", tmp_path / "second"]
    for clone in clones:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    for clone in clones:
        done = subprocess.run(["bash", "scripts/setup"], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=1200)
        assert done.returncode == 0, done.stderr[-2000:]
    for clone, other in (clones, clones[::-1]):
        kernel = subprocess.run(["../.venv/bin/python", "-c", "import segnb; print(segnb.__file__)"],
                                cwd=clone / "notebooks", env=env, capture_output=True, text=True, timeout=120)
        assert kernel.returncode == 0, kernel.stderr
        assert Path(kernel.stdout.strip()) == clone / "segnb" / "__init__.py"
        # The command, run from elsewhere: -v prints the file every module is imported from.
        command = subprocess.run([str(clone / ".venv" / "bin" / "segnb"), "--help"], cwd=tmp_path,
                                 env={**env, "PYTHONVERBOSE": "1"}, capture_output=True, text=True, timeout=120)
        assert command.returncode == 0, command.stderr[-2000:]
        assert f"{clone}/segnb/" in command.stderr and f"{other}/segnb/" not in command.stderr


# ---------------------------------------------------------------- issue 27: instances


def _instance_folder(root, ids_of=None, n=3, class_names=("bg", "cell")):
    """A folder with images/, masks/ and instances/: two cells per image (class 1, ids 1 and 2)."""
    for sub in ("images", "masks", "instances"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros((16, 20), np.uint8)
        ids = np.zeros((16, 20), np.uint16)
        mask[2:6, 2:6], ids[2:6, 2:6] = 1, 1
        mask[8:12, 10:18], ids[8:12, 10:18] = 1, 2
        if ids_of is not None:
            mask, ids = ids_of(mask, ids)
        Image.fromarray(np.full((16, 20, 3), 40 * i, np.uint8)).save(root / "images" / f"a{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"a{i}.png")
        Image.fromarray(ids).save(root / "instances" / f"a{i}.png")
    return root


def test_mask_rcnn_evaluated_on_a_dataset_with_other_classes_is_refused():
    """Before, an instance model skipped the class check and returned AP NaN (or 0) on any dataset."""
    import segnb
    from segnb.errors import SegnbError

    data = load_shapes(n=12, size=64, seed=0)
    model = build_model("maskrcnn", "test_resnet", class_names=data.class_names, things=data.things)
    other = data.with_labels(num_classes=len(data.class_names) + 1)
    with pytest.raises(SegnbError, match="predicts 7 classes but the dataset 'shapes' has 8"):
        segnb.evaluate(model, other)


def test_instance_id_255_of_a_thing_is_kept():
    """The class and the instance id ride through the transform as one number; id 255 of class 0
    equalled the padding value 255 and the object vanished from the targets."""
    from segnb.data import SegTransform
    from segnb.instances.targets import InstanceSplit

    class Split:
        name, has_instances = "train", True

        def __len__(self):
            return 1

        def get(self, index, instances=False):
            mask = np.ones((12, 12), np.int64)
            ids = np.zeros((12, 12), np.int64)
            mask[2:8, 2:8], ids[2:8, 2:8] = 0, 255  # class 0 is the thing here
            return np.zeros((12, 12, 3), np.uint8), mask, ids

    class Data:
        ignore_index = 255

        def __getitem__(self, name):
            return Split()

    _, target = InstanceSplit(Data(), "train", SegTransform(), thing_ids=[0])[0]
    assert target["labels"].tolist() == [0] and int(target["masks"].sum()) == 36
    # Halved, then padded from 6x6 to 16x16: the padding is no object, the object is still there.
    padding = SegTransform(size=16, train=True, scale=(0.5, 0.5), hflip=False)
    _, target = InstanceSplit(Data(), "train", padding, thing_ids=[0])[0]
    assert target["labels"].tolist() == [0] and 0 < int(target["masks"].sum()) <= 16


def test_coco_categories_outside_the_classes_are_counted_in_a_warning(tmp_path):
    import json

    _instance_folder(tmp_path)
    for child in (tmp_path / "instances").iterdir():
        child.unlink()
    (tmp_path / "instances").rmdir()
    images = [{"id": i, "file_name": f"a{i}.png", "height": 16, "width": 20} for i in range(3)]
    annotations = [{"id": 10 * i + k, "image_id": i, "category_id": category,
                    "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]] if k == 0 else [[10, 8, 18, 8, 18, 12, 10, 12]]}
                   for i in range(3) for k, category in enumerate((1, 7))]
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cell"},
                                                                         {"id": 7, "name": "dog"}]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    with pytest.warns(UserWarning, match=r"3 annotations have a category_id that is no class.*7 \(dog\): 3"):
        load_dataset(tmp_path, class_names=["bg", "cell"], things=["cell"], val_fraction=0)
    coco["annotations"] = [a for a in annotations if a["category_id"] == 1]
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(tmp_path, class_names=["bg", "cell"], things=["cell"], val_fraction=0)


def test_instance_maps_that_do_not_match_the_masks_are_counted_and_empty_ones_refused(tmp_path):
    import segnb

    def shifted(mask, ids):  # the second object's id drawn on background: it was dropped silently
        ids[ids == 2] = 0
        ids[12:16, 0:8] = 2
        return mask, ids

    data = load_dataset(_instance_folder(tmp_path / "shifted", shifted), class_names=["bg", "cell"],
                        things=["cell"], val_fraction=0)
    model = build_model("maskrcnn", "test_resnet", class_names=data.class_names, things=["cell"])
    with pytest.warns(UserWarning, match=r"do not match the semantic masks: 3 of 6 objects lie on no thing class.*96 of 144 thing pixels"):
        segnb.evaluate(model, data)

    def empty(mask, ids):
        return mask, np.zeros_like(ids)

    data = load_dataset(_instance_folder(tmp_path / "empty", empty), class_names=["bg", "cell"],
                        things=["cell"], val_fraction=0)
    with pytest.raises(DatasetError, match="split 'train' has no objects of the things \\['cell'\\]"):
        segnb.evaluate(model, data)
    history_before = getattr(model, "history", None)
    with pytest.raises(DatasetError, match="no objects"):
        fit(model, data, epochs=1, batch_size=2, progress=False)
    assert getattr(model, "history", None) is history_before
    # Matching maps: no warning.
    import warnings

    data = load_dataset(_instance_folder(tmp_path / "good"), class_names=["bg", "cell"], things=["cell"],
                        val_fraction=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        segnb.evaluate(model, data)


# ---------------------------------------------------------------- issue 27: inputs


def test_predict_reads_grey_rgba_16_bit_and_float_images_as_the_datasets_do():
    """Before: grey (H, W) failed in permute, RGBA with a tensor-size message, and a float image
    in 0..1 was divided by 255 a second time (a black picture to the model)."""
    import segnb
    from segnb.errors import InputError

    data = load_shapes(n=8, size=32, seed=0)
    model = build_model("fcn8s", "vgg-tiny", class_names=data.class_names)
    image = data["train"][0][0]
    grey = image.mean(2).round().astype(np.uint8)

    def probs(x):
        return segnb.predict(model, x).probs

    reference, grey_reference = probs(image), probs(np.repeat(grey[:, :, None], 3, axis=2))
    same = {
        "float 0..1": image / 255.0, "float 0..255": image.astype(np.float64), "16-bit": image.astype(np.uint16) * 257,
        "RGBA": np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=2),
        "float32 0..1 RGBA": np.concatenate([image, np.zeros((*image.shape[:2], 1), np.uint8)], 2).astype(np.float32) / 255,
    }
    for name, x in same.items():
        assert torch.allclose(probs(x), reference, atol=1e-5), name
    for name, x in {"grey": grey, "grey (H, W, 1)": grey[:, :, None], "grey float": grey / 255.0}.items():
        assert torch.allclose(probs(x), grey_reference, atol=1e-5), name
    assert not torch.allclose(reference, probs(image // 4))  # the comparison can tell images apart
    for bad, message in [(image.astype(np.float32) - 128, "float pixel values run from -128 to"),
                         (image * 2.0, "neither"), (np.full((8, 8, 3), np.nan), "NaN"),
                         (np.zeros((0, 4, 3), np.uint8), "empty"), (np.zeros((4, 4, 5), np.uint8), r"\(4, 4, 5\)"),
                         (torch.zeros(3, 8, 8, dtype=torch.uint8), "normalised float image"),
                         (np.zeros((2, 2, 2, 2, 3)), "shape")]:
        with pytest.raises(InputError, match=message):
            segnb.predict(model, bad)


def test_panoptic_merge_refuses_detection_masks_of_another_size():
    """Before, 16x16 masks against an 8x8 semantic map were reshaped into garbage."""
    from segnb.errors import InputError
    from segnb.instances.panoptic import panoptic_merge

    semantic = np.zeros((8, 8), np.int64)
    masks = np.zeros((1, 1, 16, 16), np.float32)
    masks[0, 0, :8, :8] = 1  # the top-left quarter of the 16x16 image: reshaped, it was half the map
    detections = {"masks": masks, "scores": np.array([0.9]), "labels": np.array([3])}
    with pytest.raises(InputError, match="detection masks are 16x16 but the semantic map is 8x8"):
        panoptic_merge(semantic, detections, things=[3], stuff=[0])
    detections["masks"] = masks[:, :, ::2, ::2]  # the same image at 8x8
    classes, ids = panoptic_merge(semantic, detections, things=[3], stuff=[0], min_stuff_area=1)
    assert (classes[:4, :4] == 3).all() and (ids[:4, :4] == 1).all() and (classes[4:, 4:] == 0).all()
    with pytest.raises(InputError, match="things must be a list of class ids"):
        panoptic_merge(semantic, detections, things="cell", stuff=[0])


# ---------------------------------------------------------------- issue 27: interactive tools and SAM


def _disk_picture(dtype_of=None):
    """A bright disk on a dark, noisy background, and its truth."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :64]
    truth = (yy - 24) ** 2 + (xx - 30) ** 2 < 14 ** 2
    image = np.where(truth[:, :, None], 190, 50) + rng.integers(0, 40, (48, 64, 3))
    return image.astype(np.uint8), truth


SCRIBBLES = [{"label": 1, "size": 3, "points": [30, 24, 34, 26]}, {"label": 2, "size": 3, "points": [3, 3, 60, 3]}]


def test_interactive_tools_read_16_bit_float_and_grey_images_as_the_datasets_do():
    """Before, the random walker's IoU fell from 1.0 to 0.30 on the same picture stored as 16 bits,
    graph cut to 0.50, and the click model took raw 0-65535 values."""
    from segnb.interactive import (
        ClickModel,
        RandomWalkerClicks,
        graph_cut_segment,
        iou,
        random_walker_segment,
    )

    image, truth = _disk_picture()
    stored = {"16-bit": image.astype(np.uint16) * 257, "float 0..1": image / 255.0,
              "float 0..255": image.astype(np.float32), "RGBA": np.dstack([image, np.full(truth.shape, 255, np.uint8)])}
    walker = random_walker_segment(image, SCRIBBLES) == 1
    cut = graph_cut_segment(image, SCRIBBLES)
    assert iou(walker, truth) > 0.9 and iou(cut, truth) > 0.9
    torch.manual_seed(0)
    clicks, model = [(30, 24, True)], ClickModel()
    probability = model.predict(image, clicks)
    for name, picture in stored.items():
        assert np.array_equal(random_walker_segment(picture, SCRIBBLES) == 1, walker), name
        assert np.array_equal(graph_cut_segment(picture, SCRIBBLES), cut), name
        assert np.allclose(model.predict(picture, clicks), probability, atol=1e-6), name
        assert np.array_equal(RandomWalkerClicks().predict(picture, clicks), RandomWalkerClicks().predict(image, clicks))
    grey = image.mean(2).round().astype(np.uint8)
    for picture in (grey, grey[:, :, None], grey.astype(np.uint16) * 257):
        assert np.array_equal(random_walker_segment(picture, SCRIBBLES), random_walker_segment(grey, SCRIBBLES))


def test_strokes_and_clicks_with_nan_or_huge_values_get_a_sentence():
    """Before: a NaN stroke point gave an IndexError, a brush of 1e6 px tried to allocate 58 TiB,
    and a NaN click returned an all-NaN map."""
    import time

    from segnb.errors import InputError
    from segnb.interactive import ClickModel, click_maps, random_walker_segment, rasterize_strokes

    image, truth = _disk_picture()
    with pytest.raises(InputError, match="stroke 0: its points hold NaN"):
        random_walker_segment(image, [{"label": 1, "size": 3, "points": [float("nan"), 4]}, SCRIBBLES[1]])
    with pytest.raises(InputError, match="brush size nan"):
        rasterize_strokes([{"label": 1, "size": float("nan"), "points": [1, 1]}], (8, 8))
    start = time.perf_counter()
    seeds = rasterize_strokes([{"label": 2, "size": 1e6, "points": [3, 3]}], (48, 64))
    assert (seeds == 2).all() and time.perf_counter() - start < 5  # covers the image, at once
    for click in [(float("nan"), 3, True), (3, float("inf"), True), (500, 3, True), ("a", 3, True), (1, 2)]:
        with pytest.raises(InputError, match="click 0"):
            ClickModel().predict(image, [click])
    maps = click_maps([(64, 48, True)], (48, 64))  # the far edge, as a canvas reports it: the last pixel
    assert maps[0, 47, 63] == 1 and np.isfinite(maps).all()


def test_sam_refuses_another_models_folder_pickles_and_damaged_weights(tiny_sam, tmp_path):  # noqa: F811
    """Before: a folder whose config.json was a ViT's loaded as a random SAM (0.5 everywhere, said only
    in log lines); pytorch_model.bin was unpickled; a truncated file gave a raw SafetensorError."""
    import json
    import shutil

    import transformers
    from safetensors.torch import load_file, save_file

    from segnb.errors import CheckpointError
    from segnb.interactive import SamSegmenter

    def copy(name):
        folder = tmp_path / name
        shutil.copytree(tiny_sam, folder)
        return folder

    vit = copy("vit")
    (vit / "config.json").write_text(json.dumps(transformers.ViTConfig().to_dict()))
    with pytest.raises(CheckpointError, match="describes a vit, not a SAM"):
        SamSegmenter(vit)
    pickled = copy("pickled")
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="never unpickles pytorch_model.bin") as error:
        SamSegmenter(pickled)
    assert "weights_only=False" not in str(error.value)
    truncated = copy("truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        SamSegmenter(truncated)
    state = load_file(str(tiny_sam / "model.safetensors"))
    missing = copy("missing")
    save_file({k: v for k, v in state.items() if "mask_decoder" not in k}, str(missing / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not hold the weights.*missing"):
        SamSegmenter(missing)
    extra = copy("extra")
    save_file({**state, "somewhere.else.weight": torch.zeros(2)}, str(extra / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not hold the weights.*unexpected"):
        SamSegmenter(extra)
    sam = SamSegmenter(tiny_sam)  # the intact folder still loads and answers in the image's shape
    assert sam.predict(np.full((1, 1, 3), 128, np.uint8), [(0, 0, True)]).shape == (1, 1)
    assert sam.predict(np.full((3, 5), 0.5), [(2, 1, True)]).shape == (3, 5)


# ---------------------------------------------------------------- issue 27: lessons


def test_a_lesson_restore_that_fails_keeps_the_trained_model(tmp_path):
    """Before, a restore that failed half-way (another model's weights, a dataset with other classes,
    epochs "abc") had already replaced the trained model with an untrained one; a missing key said
    only 'model' and an unknown architecture 'Invalid selection: value not found'."""
    import html
    import json

    from safetensors.torch import save_file

    from segnb.ui import Studio

    studio = Studio()
    studio.dataset.size.value = 40
    studio.dataset.load_button.click()
    studio.builder.build_button.click()
    studio.train.epochs.value = 1
    studio.train.start_button.click()
    studio.train.handle.wait(300)
    path = tmp_path / "class.json"
    studio.save_lesson(path)
    good = json.loads(path.read_text())
    model, history, data = studio.state.model, studio.state.history, studio.state.data
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    other = build_model("fcn8s", "vgg-tiny", class_names=data.class_names)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    three = tmp_path / "three"
    for sub in ("images", "masks"):
        (three / sub).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(three / "images" / f"{i}.png")
        Image.fromarray((np.arange(256).reshape(16, 16) % 3).astype(np.uint8)).save(three / "masks" / f"{i}.png")

    def edited(**changes):
        lesson = json.loads(json.dumps(good))
        for key, value in changes.items():
            where, _, name = key.rpartition("__")
            target = lesson[where] if where else lesson
            if value is None:
                del target[name]
            else:
                target[name] = value
        return lesson

    cases = {
        "other weights": (edited(weights="other.safetensors"), "does not fit the lesson's model"),
        "three classes": (edited(dataset={"source": str(three), "options": {}}), "names 7 classes but its dataset"),
        "epochs abc": (edited(train__epochs="abc"), "epochs is 'abc'; it must be a whole number"),
        "no model": (edited(model=None), "no 'model' entry"),
        "unknown arch": (edited(model__arch="nosuch"), "architecture 'nosuch' is not one the Studio builds"),
    }
    for name, (lesson, message) in cases.items():
        path.write_text(json.dumps(lesson))
        studio.load_lesson(path)
        shown = html.unescape(studio.errors.value)
        assert message in shown, (name, shown)
        assert "Invalid selection" not in shown and "not restored" in studio.lesson_status.value
        assert studio.state.model is model and studio.state.history is history and studio.state.data is data, name
        assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items()), name
    path.write_text(json.dumps(good))
    studio.load_lesson(path)  # the intact lesson still restores
    assert studio.errors.value == "" and "Restored" in studio.lesson_status.value
    assert studio.state.history is not None and studio.state.model is not model


# ---------------------------------------------------------------- issue 27: servers


@pytest.mark.parametrize("command", ["lab", "studio"])
def test_servers_print_the_port_really_served_and_refuse_bad_addresses(command, monkeypatch, capsys):
    """Before: on a busy port the server moved to the next one while the busy port's URL (with the
    token) was printed; --port 0 and 70000 were printed as given; --port -5 and --ip 999.1.1.1
    ended in a traceback."""
    import os
    import socket
    import subprocess

    started = []

    class Child:
        def __init__(self, args, env=None, **kwargs):
            started.append(args)

        def wait(self, timeout=None):
            return 0

        poll = wait

    monkeypatch.setattr(subprocess, "Popen", Child)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main([command, "--port", str(port)]) == 2
        out, err = capsys.readouterr()
        assert f"port {port} on 127.0.0.1 is in use" in err and "token=" not in out + err and not started
    assert main([command, "--port", "0"]) == 0
    out = capsys.readouterr().out
    served = int(re.search(r"http://127\.0\.0\.1:(\d+)/", out).group(1))
    args = " ".join(started[-1])
    assert served > 0 and f"port={served}" in args and "port_retries=0" in args  # never moves elsewhere
    for bad, message in [(["--port", "70000"], "not a port number"), (["--port", "-5"], "not a port number"),
                         (["--ip", "999.1.1.1"], "not an address of this machine")]:
        started.clear()
        assert main([command, *bad]) == 2
        out, err = capsys.readouterr()
        assert message in err and err.count("\n") == 1 and "Traceback" not in err and not started


# ---------------------------------------------------------------- issue 27: one adversarial set for every entry point


def _adversarial_arrays(h=12, w=10):
    """Every dtype (uint8, uint16, float 0..1, float 0..255, bool) in every shape ((H, W), (H, W, 1),
    (H, W, 3), (H, W, 4), (1, 1), empty), and arrays holding NaN and inf."""
    rng = np.random.default_rng(0)
    shapes = {"HW": (h, w), "HW1": (h, w, 1), "HW3": (h, w, 3), "HW4": (h, w, 4), "1x1": (1, 1), "empty": (0, 0)}
    makers = {
        "uint8": lambda s: rng.integers(0, 256, s).astype(np.uint8),
        "uint16": lambda s: rng.integers(0, 65536, s).astype(np.uint16),
        "float01": lambda s: rng.random(s),
        "float255": lambda s: rng.random(s) * 255,
        "bool": lambda s: rng.random(s) > 0.5,
    }
    cases = {f"{dtype} {name}": make(shape) for dtype, make in makers.items() for name, shape in shapes.items()}
    for bad in ("nan", "inf"):
        for name in ("HW", "HW3"):
            array = rng.random(shapes[name]).astype(np.float32)
            array.flat[3] = float(bad)
            cases[f"{bad} {name}"] = array
    return cases


ADVERSARIAL = _adversarial_arrays()


def _only_segnb_errors(call, name):
    """Run ``call``: it may succeed or raise a SegnbError with a sentence; anything else (a traceback
    from numpy, torch, skimage, PIL or transformers) fails the test, naming the case."""
    from segnb.errors import SegnbError

    try:
        return call()
    except SegnbError as error:
        assert len(str(error)) > 20, (name, str(error))
        return error
    except Exception as error:  # noqa: BLE001
        import traceback

        pytest.fail(f"{name}: {type(error).__name__}: {error}\n{''.join(traceback.format_tb(error.__traceback__)[-3:])}")


def _hw(array):
    return array.shape[:2]


def test_every_entry_point_takes_the_adversarial_set_or_says_why(tmp_path, tiny_sam):  # noqa: F811
    import segnb
    from segnb.instances import panoptic_quality
    from segnb.instances.panoptic import panoptic_merge
    from segnb.interactive import ClickModel, SamSegmenter, random_walker_segment

    data = load_shapes(n=8, size=16, seed=0)
    model = build_model("fcn8s", "vgg-tiny", class_names=data.class_names)
    torch.manual_seed(0)
    clicker, sam = ClickModel(), SamSegmenter(tiny_sam)
    outcomes = {}
    for name, array in ADVERSARIAL.items():
        h, w = array.shape[:2] if array.ndim >= 2 else (0, 0)
        strokes = [{"label": 1, "size": 1, "points": [0, 0]}, {"label": 2, "size": 1, "points": [w - 1, h - 1]}]
        results = {
            "predict": _only_segnb_errors(lambda a=array: segnb.predict(model, a), f"predict {name}"),
            "random walker": _only_segnb_errors(lambda a=array, s=strokes: random_walker_segment(a, s), f"walker {name}"),
            "click model": _only_segnb_errors(lambda a=array: clicker.predict(a, [(0, 0, True)]), f"clicks {name}"),
            "SAM": _only_segnb_errors(lambda a=array: sam.predict(a, [(0, 0, True)]), f"SAM {name}"),
            "panoptic_merge": _only_segnb_errors(lambda a=array, hw=(h, w): panoptic_merge(
                a, {"masks": np.ones((1, 1, *hw)), "scores": [0.9], "labels": [3]}, things=[3], stuff=[0]),
                f"panoptic_merge {name}"),
            "panoptic_merge masks": _only_segnb_errors(lambda a=array: panoptic_merge(
                np.zeros((12, 10), int), {"masks": a[None], "scores": [0.9], "labels": [3]}, things=[3], stuff=[0]),
                f"panoptic_merge masks {name}"),
            "panoptic_quality": _only_segnb_errors(lambda a=array: panoptic_quality(
                a, a, np.zeros((12, 10), int), np.zeros((12, 10), int), things=[1], stuff=[0]),
                f"panoptic_quality {name}"),
        }
        for tool in ("predict", "random walker", "click model", "SAM"):
            result = results[tool]
            if isinstance(result, Exception):
                continue
            answer = result.masks[0] if tool == "predict" else result
            assert tuple(answer.shape) == (h, w), (tool, name, answer.shape)  # the image's own size, always
            assert np.isfinite(np.asarray(answer, np.float64)).all(), (tool, name)
        outcomes[name] = {tool: "ok" if not isinstance(r, Exception) else "refused" for tool, r in results.items()}
    # What must work: every dtype in every non-empty layout, for every image tool.
    for name, seen in outcomes.items():
        dtype, shape = name.split()
        expected = "refused" if shape == "empty" or dtype in ("nan", "inf") else "ok"
        for tool in ("predict", "random walker", "click model", "SAM"):
            if tool == "random walker" and shape == "1x1" and expected == "ok":
                continue  # one pixel cannot hold two scribble labels: refused with a sentence, checked above
            assert seen[tool] == expected, (tool, name, seen[tool])


def test_load_dataset_on_a_folder_of_adversarial_files_loads_or_says_why(tmp_path):
    """The same set written as files (as PIL can store them: grey, RGB, RGBA, 16-bit, 1-bit, float TIFF;
    an empty file for the empty image), as images and as masks."""
    from PIL import Image as PILImage

    def save(array, path):
        if array.size == 0:
            path.with_suffix(".png").write_bytes(b"")
            return
        if array.dtype == bool:
            PILImage.fromarray(array[..., 0] if array.ndim == 3 else array).convert("1").save(path.with_suffix(".png"))
        elif array.dtype == np.uint16:
            PILImage.fromarray(array[..., 0] if array.ndim == 3 else array).save(path.with_suffix(".png"))
        elif np.issubdtype(array.dtype, np.floating):
            plane = array[..., 0] if array.ndim == 3 else array
            PILImage.fromarray(plane.astype(np.float32), mode="F").save(path.with_suffix(".tif"))
        else:
            PILImage.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array).save(
                path.with_suffix(".png"))

    for role in ("image", "mask"):
        for name, array in ADVERSARIAL.items():
            root = tmp_path / role / name.replace(" ", "-")
            (root / "images").mkdir(parents=True)
            (root / "masks").mkdir()
            h, w = array.shape[:2] if array.size else (12, 10)
            for i in range(3):
                if role == "image":
                    save(array, root / "images" / f"s{i}")
                    PILImage.fromarray(np.zeros((h, w), np.uint8)).save(root / "masks" / f"s{i}.png")
                else:
                    PILImage.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / "images" / f"s{i}.png")
                    save(array, root / "masks" / f"s{i}")

            def load(root=root):
                data = load_dataset(root, val_fraction=0)
                image, mask = data["train"][0]
                assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
                assert mask.shape == image.shape[:2]
                return data

            _only_segnb_errors(load, f"load_dataset with {role}s {name}")


@pytest.mark.parametrize("option", ["epochs", "batch_size", "lr", "image_size", "max_minutes"])
def test_fit_takes_the_adversarial_set_as_arguments_or_says_why(option):
    """fit's arguments given the same set (arrays of every dtype and shape, NaN, inf) and its scalars:
    a SegnbError before any step, or a run (ended here after its first step)."""
    from segnb.callbacks import Callback, StopTraining

    class FirstStep(Callback):
        def on_step_end(self, trainer):
            raise StopTraining("one step is enough here")

    data = load_shapes(n=8, size=16, seed=0)
    model = build_model("fcn8s", "vgg-tiny", class_names=data.class_names)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scalars = {"uint8 3": np.uint8(3), "uint16 2": np.uint16(2), "float 0.5": 0.5, "float 255.0": 255.0,
               "bool": True, "nan": float("nan"), "inf": float("inf"), "-1": -1, "string": "5"}
    for name, value in {**ADVERSARIAL, **scalars}.items():
        options = {"epochs": 1, "batch_size": 4, option: value}
        result = _only_segnb_errors(lambda o=options: fit(model, data, **o, callbacks=[FirstStep()], progress=False),
                                    f"fit({option}={name})")
        if isinstance(result, Exception):
            assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), (option, name)
        else:
            assert not result.stopped.startswith("failed"), (option, name, result.stopped)
            before = {k: v.clone() for k, v in model.state_dict().items()}
