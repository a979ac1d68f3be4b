"""Prepared lessons (segnb.lessons): the cache, its keys, prepare/status/load, and the shipped ISBI slices."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import segnb
from segnb import lessons
from segnb.data import isbi

ROOT = Path(__file__).resolve().parents[1]
TINY = lessons.Recipe("tiny-fcn", "04_fcn_segnet_unet", "FCN-32s, tiny", {"source": "shapes", "n": 24, "size": 32},
                      "fcn32s", "vgg-tiny", "bilinear", fit={"epochs": 1, "batch_size": 8, "lr": 1e-3},
                      fast={"data": {"n": 16}}, seconds=5)
TINY_UNET = lessons.Recipe("tiny-unet", "05_soft_masks_and_iou", "U-Net, tiny", {"source": "shapes", "n": 24, "size": 32},
                           "unet-classic", "vgg-tiny", fit={"epochs": 1, "batch_size": 8, "lr": 1e-3},
                           fast={"data": {"n": 16}}, seconds=5)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Two tiny recipes in place of the real ones, and an empty cache folder in $SEGNB_LESSONS."""
    monkeypatch.setattr(lessons, "RECIPES", {r.name: r for r in (TINY, TINY_UNET)})
    monkeypatch.setenv(lessons.ENV, str(tmp_path / "lessons"))
    monkeypatch.setattr(lessons, "_speed", lambda: lessons.REFERENCE_STEP_SECONDS)
    monkeypatch.setattr(lessons, "_TRAINED", {})
    return tmp_path / "lessons"


def no_training(*args, **kwargs):
    raise AssertionError("trained although the model is prepared")


def test_every_recipe_has_a_stable_key_and_names_a_notebook():
    assert len(lessons.RECIPES) >= 20
    for recipe in lessons.RECIPES.values():
        assert (ROOT / "notebooks" / f"{recipe.notebook}.ipynb").is_file(), recipe.name
        assert lessons.key(recipe) == lessons.key(recipe.name)
        assert lessons.key(recipe) != lessons.key(recipe, fast=True)


def test_a_code_change_retrains_only_the_models_it_touches(monkeypatch):
    before = {name: lessons.key(name) for name in lessons.RECIPES}
    real = lessons._digest
    monkeypatch.setattr(lessons, "_digest", lambda p: "changed" if p.name == "fcn.py" else real(p))
    after = {name: lessons.key(name) for name in lessons.RECIPES}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"04-fcn32s", "04-fcn16s", "04-fcn8s", "04-fcn8s-bilinear"}


def test_the_training_code_and_the_data_are_in_every_key(monkeypatch):
    before = {name: lessons.key(name) for name in lessons.RECIPES}
    real = lessons._digest
    monkeypatch.setattr(lessons, "_digest", lambda p: "changed" if p.name == "losses.py" else real(p))
    assert all(lessons.key(n) != before[n] for n in lessons.RECIPES if lessons.RECIPES[n].kind == "segmodel")
    monkeypatch.setattr(lessons, "_digest", real)
    monkeypatch.setattr(isbi, "fingerprint", lambda: "other slices")
    changed = {n for n in lessons.RECIPES if lessons.key(n) != before[n]}
    assert changed == {"06-membranes"}


def test_a_child_key_follows_its_parent(monkeypatch):
    before = lessons.key("06-student")
    teacher = lessons.RECIPES["06-teacher"]
    monkeypatch.setitem(lessons.RECIPES, "06-teacher", lessons.Recipe(**{**teacher.__dict__, "fit": {
        **teacher.fit, "epochs": teacher.fit["epochs"] + 1}}))
    assert lessons.key("06-student") != before


def test_prepare_estimates_first_then_trains_saves_and_lists(tiny):
    said = []
    records = lessons.prepare(say=said.append, progress=False)
    assert [r["name"] for r in records] == ["tiny-fcn", "tiny-unet"]
    assert said[0].startswith("segnb lessons prepare: 2 models to train (0 already prepared)")
    assert "estimated time: about" in said[1] and said[2].startswith("[1/2] tiny-fcn")
    assert "all done in" in said[-1]
    for record in records:
        folder = tiny / record["name"] / record["key"]
        assert {p.name for p in folder.iterdir()} == {"model.json", "model.safetensors", "record.json"}
        assert record["metric"] == "mIoU" and 0 <= record["score"] <= 1 and record["epochs"] == 1
        assert len(record["per_class_iou"]) == 7 and record["history"]["epochs"]
    rows = lessons.status()
    assert [r["state"] for r in rows] == ["prepared", "prepared"]
    text = lessons.format_status(rows)
    assert "2 of 2 prepared" in text and "tiny-fcn" in text and "mIoU" in text
    # nothing left to do: a second run trains nothing
    said.clear()
    assert lessons.prepare(say=said.append) == []
    assert said == [f"segnb lessons prepare: 0 models to train (2 already prepared) into {tiny}"]


def test_load_uses_the_prepared_model_without_training(tiny, monkeypatch, capsys):
    (record,) = lessons.prepare(["tiny-fcn"], say=lambda s: None, progress=False)
    monkeypatch.setattr("segnb.train.fit", no_training)
    lesson = lessons.load("tiny-fcn")
    assert lesson.prepared and lesson.record["key"] == record["key"]
    line = capsys.readouterr().out
    assert f"prepared model, trained for 1 epoch, mIoU {record['score']:.3f}" in line
    # the same weights: the prepared model predicts what it predicted when it was saved
    report = segnb.evaluate(lesson.model, lesson.data)
    assert report.miou == pytest.approx(record["score"], abs=1e-6)


def test_the_cache_folder_can_be_copied_to_another_machine(tiny, tmp_path, monkeypatch):
    lessons.prepare(["tiny-fcn"], say=lambda s: None, progress=False)
    carried = tmp_path / "usb-stick" / "lessons"
    shutil.copytree(tiny, carried)
    shutil.rmtree(tiny)
    monkeypatch.setenv(lessons.ENV, str(carried))
    monkeypatch.setattr("segnb.train.fit", no_training)
    assert lessons.load("tiny-fcn", quiet=True).prepared


def test_changed_settings_make_it_outdated_and_prepare_retrains_only_that(tiny, monkeypatch):
    lessons.prepare(say=lambda s: None, progress=False)
    changed = lessons.Recipe(**{**TINY.__dict__, "fit": {**TINY.fit, "lr": 2e-3}})
    monkeypatch.setitem(lessons.RECIPES, "tiny-fcn", changed)
    assert [r["state"] for r in lessons.status()] == ["outdated", "prepared"]
    records = lessons.prepare(say=lambda s: None, progress=False)
    assert [r["name"] for r in records] == ["tiny-fcn"]


def test_fast_mode_without_prepared_models_trains_now_and_says_how_to_see_the_real_one(tiny, capsys):
    lesson = lessons.load("tiny-fcn", fast=True)
    assert not lesson.prepared and lesson.record["fast"]
    assert len(lesson.data["train"]) + len(lesson.data["validation"]) == 16  # the fast settings
    out = capsys.readouterr().out
    assert "trained now, fast mode: 1 epoch," in out and "run `segnb lessons prepare` to see it" in out
    assert not tiny.exists() or not any(tiny.rglob("record.json"))  # a fast run is not stored
    assert lessons.find("tiny-fcn", fast=True) is None and lessons.find_all(["tiny-fcn"], fast=True) is None


def test_a_model_trained_now_in_fast_mode_is_trained_once_per_process(tiny, monkeypatch):
    first = lessons.load("tiny-fcn", fast=True, quiet=True)
    monkeypatch.setattr("segnb.train.fit", no_training)
    assert lessons.load("tiny-fcn", fast=True, quiet=True) is first
    assert lessons.load_all(["tiny-fcn"], fast=True, quiet=True)["tiny-fcn"] is first


def test_normal_mode_without_prepared_models_trains_the_full_one_and_saves_it(tiny, monkeypatch):
    lesson = lessons.load("tiny-unet", quiet=True)
    assert not lesson.prepared and "saved: next time it loads in seconds" in lesson.describe()
    monkeypatch.setattr("segnb.train.fit", no_training)
    assert lessons.load("tiny-unet", quiet=True).prepared


def test_fast_mode_prefers_the_full_model_and_load_all_never_mixes_variants(tiny, monkeypatch):
    lessons.prepare(["tiny-fcn"], say=lambda s: None, progress=False)
    lessons.prepare(["tiny-unet"], fast=True, say=lambda s: None, progress=False)
    assert not lessons.load("tiny-fcn", fast=True, quiet=True).record["fast"]
    assert lessons.load("tiny-unet", fast=True, quiet=True).describe().startswith("prepared model (fast settings)")
    assert lessons.find_all(["tiny-fcn", "tiny-unet"], fast=True) is None
    both = lessons.load_all(["tiny-fcn", "tiny-unet"], fast=True, quiet=True)
    assert [lesson.record["fast"] for lesson in both.values()] == [True, True]
    assert not both["tiny-fcn"].prepared and both["tiny-unet"].prepared


def test_a_damaged_prepared_model_is_reported_and_trained_again(tiny, capsys):
    (record,) = lessons.prepare(["tiny-fcn"], say=lambda s: None, progress=False)
    weights = tiny / "tiny-fcn" / record["key"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    lesson = lessons.load("tiny-fcn", fast=True)
    out = capsys.readouterr().out
    assert "the prepared model could not be loaded" in out and not lesson.prepared


def test_a_failing_recipe_does_not_stop_the_others(tiny, monkeypatch):
    broken = lessons.Recipe(**{**TINY.__dict__, "arch": "no-such-arch"})
    monkeypatch.setitem(lessons.RECIPES, "tiny-fcn", broken)
    monkeypatch.setattr(lessons, "_code_files", lambda recipe: [])
    with pytest.raises(RuntimeError, match="1 of 2 lessons failed"):
        lessons.prepare(say=lambda s: None, progress=False)
    assert [r["state"] for r in lessons.status()] == ["missing", "prepared"]


def test_command_line_status_and_prepare(tiny, capsys):
    assert lessons.main(["status"]) == 0
    assert "0 of 2 prepared; `segnb lessons prepare` trains the rest" in capsys.readouterr().out
    assert lessons.main(["prepare", "tiny-fcn", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "estimated time" in out and "1 of 2 prepared" in out
    assert lessons.main(["prepare", "nothing-like-it"]) == 2
    assert "no lesson named nothing-like-it" in capsys.readouterr().out
    assert lessons.main(["status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["lessons"]
    assert {r["name"]: r["state"] for r in rows} == {"tiny-fcn": "prepared", "tiny-unet": "missing"}


# -- the ISBI 2012 slices ---------------------------------------------------------------------------

def test_isbi_slices_ship_intact_and_load_as_two_classes():
    assert isbi.check() == []
    data = segnb.load_dataset("isbi2012")
    assert data.class_names == ["membrane", "cell"] and data.num_classes == 2
    assert (len(data["train"]), len(data["validation"])) == (24, 6)
    image, mask = data["train"][0]
    assert image.shape[:2] == mask.shape == (512, 512) and set(np.unique(mask)) == {0, 1}
    assert 0.15 < data.frequencies()[0] < 0.3  # membranes: about a fifth of the pixels
    assert data.provenance() == {"data_source": "isbi2012", "data_options": {}}
    assert segnb.load_dataset("isbi2012", seed=1).provenance()["data_options"] == {"seed": 1}


def test_isbi_check_finds_a_changed_or_missing_slice(tmp_path):
    copy = tmp_path / "isbi"
    shutil.copytree(isbi.ISBI_DIR, copy)
    (copy / "label" / "3.png").write_bytes(b"not a png")
    (copy / "image" / "7.png").unlink()
    problems = isbi.check(copy)
    assert problems == ["image/7.png: missing", "label/3.png: differs from the ISBI 2012 training slice (sha256)"]
    assert isbi.main([str(copy)]) == 1 and isbi.main([]) == 0


def test_isbi_terms_are_stated_beside_the_data():
    terms = " ".join((isbi.ISBI_DIR / "README.md").read_text().split())
    for needed in ("non-commercial", "Cardona", "TrakEM2", "not the MIT licence", "zhixuhao/unet", "cite"):
        assert needed in terms, needed


def test_the_wheel_ships_the_isbi_slices_and_the_lessons(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "runs", "artifacts", "site"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True)
    wheel = next(tmp_path.glob("segnb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    pngs = [n for n in names if n.startswith("segnb/data/isbi2012/") and n.endswith(".png")]
    assert len(pngs) == 60
    assert {"segnb/data/isbi2012/README.md", "segnb/data/isbi2012/SHA256SUMS", "segnb/lessons.py"} <= names
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    out = subprocess.run([sys.executable, "-m", "segnb.data.isbi"], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True)
    assert out.returncode == 0 and "OK, 30 slices and 30 labels as shipped" in out.stdout


def test_segnb_lessons_is_a_command(tiny, capsys):
    from segnb.cli import main

    assert main(["lessons", "status", "--root", str(tiny)]) == 0
    assert f"prepared lessons in {tiny}:" in capsys.readouterr().out
