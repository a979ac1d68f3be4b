"""Faults and bad inputs not covered elsewhere; docs/RELIABILITY.md maps every row to its test."""

import http.server
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

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
