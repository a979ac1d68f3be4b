"""The command line: a user's mistake gives one clear line and a non-zero exit, never a traceback.

Run in-process through ``segnb.cli.main`` (fast); the servers with a fake child process.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segnb.cli as cli
from segnb.cli import main
from segnb.data import load_dataset
from segnb.models import build_model, save_model

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data-option", "n=6", "--data-option", "size=32", "--epochs", "1", "--batch-size", "4"]


def _one_clear_line(capsys, argv) -> str:
    """Run the CLI; it must exit non-zero with a short message and no traceback."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: usage line + one error line, exit 2
        code = exit_.code
    err = capsys.readouterr().err
    assert code not in (0, None), f"{argv} exited 0; stderr: {err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("segnb"), f"{argv}: {err!r}"
    assert len(lines) <= 3, err  # the error line, and at most a note or where a default came from
    return err


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A 7-class model saved as `segnb train` saves it (with the dataset it was trained on)."""
    data = load_dataset("shapes", n=6, size=32, seed=1)
    model = build_model("unet-classic", "vgg-tiny", class_names=data.class_names)
    return save_model(model, tmp_path_factory.mktemp("m") / "model", data=data)


BAD_TRAINING = [
    ["--loss", "foo"],
    ["--lr", "nan"],
    ["--lr", "-1"],
    ["--device", "foo"],
    ["--image-size", "0"],
    ["--image-size", "-5"],
    ["--image-size", "7"],
    ["--max-minutes", "0"],
    ["--epochs", "0"],
    ["--batch-size", "x"],
    ["--scheduler", "nosuch"],
    ["--precision", "fp7"],
    ["--data-option", "foo=1"],
    ["--data-option", "n=0"],
    ["--data-option", "nokeyvalue"],
    ["--dataset", "/no/such/folder"],
    ["--arch", "nosuch"],
    ["--encoder", "vgg-tinyy"],
]


@pytest.mark.parametrize("command", ["train", "demo"])
@pytest.mark.parametrize("bad", BAD_TRAINING, ids=[" ".join(b) for b in BAD_TRAINING])
def test_training_commands_refuse_bad_values_in_one_line(command, bad, capsys, tmp_path):
    _one_clear_line(capsys, [command, *TINY, "--out", str(tmp_path / "run"), *bad])
    assert not (tmp_path / "run" / "model").exists()


def test_image_size_below_the_model_stride_names_the_minimum(capsys, tmp_path):
    err = _one_clear_line(capsys, ["train", *TINY, "--out", str(tmp_path), "--image-size", "7"])
    assert "--image-size 7" in err and "minimum" in err


BAD_EVAL = [
    ["--split", "nosuch"],
    ["--image-size", "0"],
    ["--device", "foo"],
    ["--dataset", "shapes", "--data-option", "n=0"],
    ["--data-option", "num_classes=2.5"],
    ["--dataset", "nosuch-source!"],
    ["--protocol", "paper"],
    ["--tile", "0"],
    ["--tile", "12y4"],
    ["--overlap", "1"],
    ["--tta", "vflip"],
]


@pytest.mark.parametrize("bad", BAD_EVAL, ids=[" ".join(b) for b in BAD_EVAL])
def test_eval_refuses_bad_values_in_one_line(bad, saved_model, capsys):
    _one_clear_line(capsys, ["eval", "--model", str(saved_model), *bad])


def test_eval_of_a_missing_or_damaged_model_is_one_line(tmp_path, capsys):
    _one_clear_line(capsys, ["eval", "--model", str(tmp_path / "nothing")])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{not json")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    _one_clear_line(capsys, ["eval", "--model", str(tmp_path / "bad")])


@pytest.mark.parametrize("bad", [["shapes", "n=0"], ["shapes", "foo=1"], ["shapes", "size=abc"],
                                 ["/no/such/folder"], ["shapes", "num_classes=2.5"]])
def test_datasets_show_refuses_bad_values_in_one_line(bad, capsys):
    _one_clear_line(capsys, ["datasets", "show", *bad])


def test_server_commands_refuse_bad_values_in_one_line(capsys):
    _one_clear_line(capsys, ["lab", "--port", "x"])
    _one_clear_line(capsys, ["studio", "--port", "x"])
    _one_clear_line(capsys, ["nosuch"])


def test_eval_defaults_to_the_dataset_the_model_was_trained_on(saved_model, capsys):
    meta = json.loads((saved_model / "model.json").read_text())
    assert meta["data_source"] == "shapes" and meta["data_options"] == {"n": 6, "size": 32, "seed": 1}
    assert main(["eval", "--model", str(saved_model), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["dataset"] == "shapes" and report["split"] == "validation"
    assert "from" in captured.err and "model.json" in captured.err  # says where the default came from
    # The validation split of that exact dataset (n=6, size=32): 32 * 32 pixels per image, 1 image.
    assert sum(row["pixels"] for row in report["classes"]) <= 32 * 32


def test_eval_says_its_protocol_and_takes_tiles_and_tta(saved_model, capsys):
    assert main(["eval", "--model", str(saved_model), "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["protocol"] == "full" and "each label's original size" in full["protocol_text"]
    assert main(["eval", "--model", str(saved_model), "--json", "--protocol", "resized", "--image-size", "64"]) == 0
    resized = json.loads(capsys.readouterr().out)
    pixels = sum(r["pixels"] for r in full["classes"])
    assert resized["protocol"] == "resized" and sum(r["pixels"] for r in resized["classes"]) == 4 * pixels
    assert main(["eval", "--model", str(saved_model), "--json", "--tile", "16", "--tta", "hflip,1,1.5"]) == 0
    tiled = json.loads(capsys.readouterr().out)
    assert tiled["input"]["tiled"] and tiled["input"]["tta"] == ["hflip", 1.0, 1.5]
    assert main(["eval", "--model", str(saved_model)]) == 0
    assert "protocol: full resolution" in capsys.readouterr().out


def test_export_writes_onnx_with_its_description_and_checks_parity(saved_model, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(saved_model), "--out", str(out), "--image-size", "32x48", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert out.is_file() and Path(result["description"]).is_file()
    assert result["input"]["shape"] == ["batch", 3, 32, 48] and result["max_abs_diff"] < 1e-3
    _one_clear_line(capsys, ["export", "--model", str(saved_model), "--out", str(tmp_path / "m.tflite")])
    _one_clear_line(capsys, ["export", "--model", str(saved_model), "--out", str(out), "--image-size", "x"])


def test_eval_refuses_a_dataset_with_other_classes(tmp_path, capsys):
    """Today's main scored a 12-class model on shapes with mIoU 1.000; now a clear refusal."""
    data = load_dataset("shapes", n=4, size=32)
    model = build_model("unet-classic", "vgg-tiny", num_classes=12)
    folder = save_model(model, tmp_path / "m")  # no dataset recorded: --dataset is needed
    err = _one_clear_line(capsys, ["eval", "--model", str(folder)])
    assert "--dataset" in err
    err = _one_clear_line(capsys, ["eval", "--model", str(folder), "--dataset", "shapes"])
    assert "12 classes" in err and f"{data.num_classes}" in err


def test_train_ignore_index_really_ignores_that_value(tmp_path, capsys):
    """Masks hold 0, 1, 2 and 3 = void: --ignore-index 3 gives a 3-class model, 3 is never a class."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / "d" / split / "images").mkdir(parents=True)
        (tmp_path / "d" / split / "masks").mkdir(parents=True)
        for i in range(4):
            mask = rng.integers(0, 3, (32, 32)).astype(np.uint8)
            mask[:4] = 3
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "d" / split / "images" / f"{i}.png")
            Image.fromarray(mask).save(tmp_path / "d" / split / "masks" / f"{i}.png")
    code = main(["train", "--dataset", str(tmp_path / "d"), "--ignore-index", "3", "--epochs", "1",
                 "--batch-size", "4", "--out", str(tmp_path / "run"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(result["iou"]) == ["class_0", "class_1", "class_2"]
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["data_options"]["ignore_index"] == 3 and len(meta["class_names"]) == 3
    assert meta["data_source"] == str((tmp_path / "d").resolve())


def test_train_without_validation_never_calls_training_scores_validation(tmp_path, capsys):
    folder = tmp_path / "one"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "images" / "a.png")
    Image.fromarray(np.eye(32, dtype=np.uint8)).save(folder / "masks" / "a.png")
    with pytest.warns(UserWarning, match="NO VALIDATION SPLIT"):
        code = main(["train", "--dataset", str(folder), "--epochs", "1", "--out", str(tmp_path / "run")])
    assert code == 0
    captured = capsys.readouterr()
    assert "val loss" not in captured.err and "no validation split" in captured.err
    assert "TRAINING images" in captured.out


def test_train_maskrcnn_reports_mask_ap_and_refuses_a_semantic_loss(tmp_path, capsys):
    small = ["--arch", "maskrcnn", "--encoder", "test_resnet", "--data-option", "n=8", "--data-option", "size=64",
             "--epochs", "1", "--batch-size", "4"]
    err = _one_clear_line(capsys, ["train", *small, "--out", str(tmp_path / "bad"), "--loss", "dice"])
    assert "--loss does not apply to --arch maskrcnn" in err and not (tmp_path / "bad").exists()
    assert main(["train", *small, "--out", str(tmp_path / "run"), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert 0 <= result["mask_ap50"] <= 1 and result["mask_ap"] <= result["mask_ap50"]
    assert "miou" not in result and "mIoU" not in captured.err and "mask AP50" in captured.err
    assert main(["eval", "--model", str(tmp_path / "run" / "model"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["mask_ap50"] == pytest.approx(result["mask_ap50"]) and scores["split"] == "validation"
    folder = tmp_path / "cells"  # a folder that does not say which classes are things
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "images" / f"{i}.png")
        Image.fromarray(np.eye(32, dtype=np.uint8)).save(folder / "masks" / f"{i}.png")
    err = _one_clear_line(capsys, ["train", "--arch", "maskrcnn", "--dataset", str(folder), "--out",
                                   str(tmp_path / "cells-run")])
    assert "things" in err and "--data-option" in err


def test_datasets_show_prints_the_notes(tmp_path, capsys):
    folder = tmp_path / "binary"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "images" / f"{i}.png")
        Image.fromarray((np.eye(16) * 255).astype(np.uint8)).save(folder / "masks" / f"{i}.png")
    assert main(["datasets", "show", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "note" in out and "binary=False" in out
    assert main(["datasets", "show", str(folder), "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert any("binary=False" in n for n in notes) and any("validation" in n for n in notes)


# ---------------------------------------------------------------- servers


class _FakeChild:
    def __init__(self, args, env=None, **kwargs):
        self.args, self.env = args, env
        _FakeChild.last = self

    def wait(self, timeout=None):
        return 0

    def poll(self):
        return 0


@pytest.mark.parametrize("command", ["lab", "studio"])
def test_server_token_is_never_on_the_command_line(command, monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "Popen", _FakeChild)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("SEGNB_TOKEN", "s3cret-token-from-the-environment")
    assert main([command]) == 0
    child = _FakeChild.last
    assert "s3cret-token-from-the-environment" not in " ".join(child.args)
    assert "token" not in " ".join(child.args).lower()
    assert "s3cret-token-from-the-environment" in capsys.readouterr().out  # the user gets the URL
    if command == "lab":
        assert child.env["JUPYTER_TOKEN"] == "s3cret-token-from-the-environment"
    else:
        config = child.env["JUPYTER_CONFIG_PATH"].split(os.pathsep)[0]
        assert config  # a private config folder, removed when the server ends
        assert not Path(config).exists()


def test_studio_uses_segnbs_voila_template_and_the_pool_options(monkeypatch, capsys):
    """`segnb studio` finds segnb's Voila template (a still loading message, docs/CLASSROOM.md) and
    passes the preheated pool's size and refill delay to Voila."""
    monkeypatch.setattr(subprocess, "Popen", _FakeChild)
    assert main(["studio", "--preheat", "10", "--fill-delay", "120"]) == 0
    child = _FakeChild.last
    assert "--template=segnb" in child.args
    assert {"--preheat_kernel=True", "--VoilaConfiguration.default_pool_size=10",
            "--VoilaKernelManager.fill_delay=120.0"} <= set(child.args)
    template = Path(child.env["JUPYTER_PATH"].split(os.pathsep)[0]) / "voila" / "templates" / "segnb"
    assert json.loads((template / "conf.json").read_text())["base_template"] == "lab"
    assert child.env["SEGNB_SHAPES_CACHE"]  # the built-in dataset, drawn once for every student
    macro = (template / "spinner.macro.html.j2").read_text()
    assert 'id="loading"' in macro and 'id="loading_text"' in macro and "animation:" not in macro  # no CSS animation
    assert main(["studio"]) == 0
    assert not any("preheat" in a or "fill_delay" in a for a in _FakeChild.last.args)
    with pytest.raises(SystemExit):
        main(["studio", "--fill-delay", "-1"])
    assert "--fill-delay" in capsys.readouterr().err


def test_lab_as_root_says_what_to_do_or_allows_it(monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "Popen", _FakeChild)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    _FakeChild.last = None
    assert main(["lab"]) == 2
    assert "--allow-root" in capsys.readouterr().err and _FakeChild.last is None
    assert main(["lab", "--allow-root"]) == 0
    assert "--ServerApp.allow_root=True" in _FakeChild.last.args


def test_sigterm_ends_the_server_child(tmp_path):
    """SIGTERM to `segnb lab`/`studio` must not leave Jupyter or Voila running and listening."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from segnb.cli.servers import serve; "
                               f"sys.exit(serve([sys.executable, '-c', {child!r}], None))"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.1)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    parent.wait(30)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child_pid}").exists() and time.monotonic() < deadline:
        try:
            os.waitpid(child_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        state = Path(f"/proc/{child_pid}/stat").read_text().split()[2] if Path(
            f"/proc/{child_pid}/stat").exists() else "X"
        if state == "Z":  # a zombie has ended; only its parent's bookkeeping is left
            break
        time.sleep(0.1)
    stat = Path(f"/proc/{child_pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z", "the server child survived SIGTERM"


def test_cli_module_defines_every_subcommand_tested_here():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse's own table
    assert set(commands) == {"datasets", "demo", "train", "eval", "export", "lab", "studio", "sweep", "lessons"}


def test_the_epoch_line_of_an_epoch_without_validation_says_so(capsys):
    """Under a time budget some epochs are not validated: the CLI's line says so instead of failing."""
    import types

    from segnb.cli.commands import _EpochPrinter

    history = types.SimpleNamespace(epochs=[{"epoch": 3, "train_loss": 0.5, "val_loss": None, "miou": None,
                                             "images_per_s": 20.0}])
    _EpochPrinter(0.0).on_epoch_end(types.SimpleNamespace(history=history))
    assert "epoch 3: train loss 0.500  not validated this epoch" in capsys.readouterr().err
