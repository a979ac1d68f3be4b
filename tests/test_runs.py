"""Runs: what fit() records, segnb.runs() over good and damaged folders, segnb.compare() figures."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model

import segnb
from segnb.callbacks import Callback, StopTraining
from segnb.runs import (
    RUN_FORMAT,
    Run,
    RunError,
    compare,
    list_runs,
    load_run_set,
    preview_indices,
    save_run_set,
)


def _fit(model, data, **options):
    options.setdefault("epochs", 1)
    return segnb.fit(model, data, batch_size=8, progress=False, seed=0, **options)


@pytest.fixture(scope="module")
def two_runs(shapes_small, tmp_path_factory):
    """Two real runs on the same data, differing in the FCN's upsampling operator."""
    folder = tmp_path_factory.mktemp("runs")
    models = {}
    for name, upsample in (("bilinear", "bilinear"), ("transposed", "transposed4")):
        torch.manual_seed(0)
        model = segnb.build_model("fcn8s", "vgg-tiny", class_names=shapes_small.class_names, upsample=upsample)
        _fit(model, shapes_small, epochs=2, run=folder / name, lr=1e-2)
        models[name] = model
    return folder, models


def test_a_fit_is_a_run_with_config_code_history_scores_model_and_predictions(two_runs, shapes_small):
    folder, models = two_runs
    run = Run(folder / "bilinear")
    info = run.info
    assert info["format"] == RUN_FORMAT and info["status"] == "completed" and info["stopped"] == "completed"
    train = info["config"]["train"]
    assert train["lr"] == 1e-2 and train["epochs"] == 2 and train["batch_size"] == 8 and train["loss"] == "ce"
    assert info["config"]["data"]["source"] == "shapes"
    assert info["config"]["data"]["options"] == {"n": 40, "size": 64, "seed": 3}
    assert info["config"]["data"]["class_names"] == list(shapes_small.class_names)
    assert info["config"]["model"]["arch"] == "fcn8s" and info["config"]["model"]["upsample"] == "bilinear"
    assert info["code"]["segnb"] == segnb.__version__
    assert len(info["code"]["git_commit"]) == 40  # the tests run in a checkout
    assert info["device"] == "cpu" and info["precision"] == "fp32" and info["seconds"] > 0
    assert [r["epoch"] for r in info["history"]] == [1, 2]
    summary = run.summary
    assert summary["miou"] == pytest.approx(info["history"][-1]["miou"])
    assert len(summary["iou"]) == shapes_small.num_classes
    confusion = run.confusion()
    assert confusion.shape == (shapes_small.num_classes,) * 2
    assert confusion.sum() > 0
    # The model in the run is the trained model.
    loaded = run.model()
    image = shapes_small["validation"][0][0]
    assert torch.equal(segnb.predict(loaded, image).masks, segnb.predict(models["bilinear"], image).masks)
    # The preview: evenly spaced validation images, their truth, and the model's prediction of them.
    preview = run.predictions()
    assert preview["indices"] == preview_indices(len(shapes_small["validation"]))
    for index, image, truth, pred in zip(preview["indices"], preview["images"], preview["truths"],
                                         preview["preds"], strict=True):
        want_image, want_truth = shapes_small["validation"][index]
        assert np.array_equal(image, want_image) and np.array_equal(truth, want_truth)
        assert np.array_equal(pred, segnb.predict(models["bilinear"], want_image).masks[0].numpy())
    # Written whole: no temporary files left beside them.
    assert not [p for p in (folder / "bilinear").iterdir() if p.name.startswith(".")]


def test_runs_go_to_the_default_folder_checkpoint_dir_or_nowhere(shapes_small, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGNB_RUNS", str(tmp_path / "default"))
    _fit(tiny_model(shapes_small), shapes_small)
    (made,) = (tmp_path / "default").iterdir()
    assert made.name.endswith("_fcn32s-vgg-tiny") and (made / "run.json").is_file()
    _fit(tiny_model(shapes_small), shapes_small, checkpoint_dir=tmp_path / "ck")
    assert (tmp_path / "ck" / "run.json").is_file() and (tmp_path / "ck" / "last").is_symlink()
    _fit(tiny_model(shapes_small), shapes_small, run=False)
    monkeypatch.setenv("SEGNB_RUNS", "off")
    _fit(tiny_model(shapes_small), shapes_small)
    assert len(list((tmp_path / "default").iterdir())) == 1
    with pytest.raises(RunError, match="SEGNB_RUNS=off"):
        _fit(tiny_model(shapes_small), shapes_small, run=True)
    with pytest.raises(RunError, match="run must be"):
        _fit(tiny_model(shapes_small), shapes_small, run=3)


class _FailAt(Callback):
    def __init__(self, step, error):
        self.step, self.error = step, error

    def on_step_end(self, trainer):
        if trainer.step == self.step:
            raise self.error


def test_failed_stopped_and_killed_runs_are_marked(shapes_small, tmp_path):
    model = tiny_model(shapes_small)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _fit(model, shapes_small, epochs=3, run=tmp_path / "failed", callbacks=[_FailAt(6, RuntimeError("disk on fire"))])
    failed = Run(tmp_path / "failed")
    assert failed.status == "failed" and "disk on fire" in failed.info["stopped"]
    assert len(failed.history) == 1  # the completed epoch is kept
    assert failed.model() is not None  # and the weights of the failing step

    _fit(tiny_model(shapes_small), shapes_small, epochs=3, run=tmp_path / "stopped",
         callbacks=[_FailAt(2, StopTraining("enough"))])
    assert Run(tmp_path / "stopped").status == "stopped"

    # A process killed mid-run leaves status "running" with its pid: read back as interrupted.
    info = json.loads((tmp_path / "stopped" / "run.json").read_text())
    info.update(status="running", pid=2**22 + 12345)
    (tmp_path / "stopped" / "run.json").write_text(json.dumps(info))
    killed = Run(tmp_path / "stopped")
    assert killed.status == "interrupted" and "process ended" in killed.info["stopped"]
    info.update(pid=os.getpid())  # a live process: still running
    (tmp_path / "stopped" / "run.json").write_text(json.dumps(info))
    assert Run(tmp_path / "stopped").status == "running"


def test_a_run_record_that_cannot_be_written_never_costs_the_training(shapes_small, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RunError, match="cannot be made"):  # said before training starts
        _fit(tiny_model(shapes_small), shapes_small, run=tmp_path / "file" / "run")

    import segnb.models.io as io

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "save_model", full_disk)
    model = tiny_model(shapes_small)
    with pytest.warns(UserWarning, match="incomplete.*No space left"):
        history = _fit(model, shapes_small, epochs=2, run=tmp_path / "full")
    assert history.stopped == "completed" and len(history.epochs) == 2
    run = Run(tmp_path / "full")
    assert run.status == "completed" and "No space left" in run.info["record_problems"][0]
    assert run.predictions()["preds"]  # the other parts were written


def _fake_run(folder: Path, name: str, lr=1e-3, arch="fcn8s", miou=0.5, status="completed", epochs=3):
    """A run.json as fit() writes it (without training), for listing tests and the benchmark."""
    history = [{"epoch": e, "step": 10 * e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "miou": miou * e / epochs,
                "iou": [miou] * 3, "seconds": 2.0} for e in range(1, epochs + 1)]
    info = {"format": RUN_FORMAT, "name": name, "status": status, "stopped": status, "started": f"2026-01-01T00:{name[-2:]}:00",
            "config": {"train": {"lr": lr, "epochs": epochs, "batch_size": 16, "loss": "ce"},
                       "data": {"source": "shapes", "options": {"n": 100}, "class_names": ["a", "b", "c"]},
                       "model": {"arch": arch, "encoder": "vgg-tiny", "num_classes": 3}},
            "history": history, "summary": {"miou": miou, "best_miou": miou, "iou": [miou] * 3, "epochs_done": epochs},
            "steps": 10 * epochs, "seconds": 2.0 * epochs, "pid": 1, "host": "elsewhere"}
    (folder / name).mkdir(parents=True)
    (folder / name / "run.json").write_text(json.dumps(info))


def test_runs_lists_filters_and_skips_damaged_folders_by_name(tmp_path):
    _fake_run(tmp_path, "run-01", lr=1e-3, miou=0.4)
    _fake_run(tmp_path, "run-02", lr=1e-2, miou=0.6)
    _fake_run(tmp_path, "run-03", lr=1e-2, miou=0.7, arch="fcn32s", status="stopped")
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "run.json").write_text('{"format": "segnb-run/1", "name": "damaged", "sta')
    (tmp_path / "half").mkdir()  # killed before its first write finished: only the temporary file
    (tmp_path / "half" / ".run.json.x1y2").write_text("{")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text('{"format": "something-else"}')
    (tmp_path / "lacking").mkdir()
    (tmp_path / "lacking" / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "name": "lacking"}))
    (tmp_path / "mlflow.db").write_text("")  # files beside the runs are not runs

    with pytest.warns(UserWarning, match="skipped 4 folder") as caught:
        frame = segnb.runs(tmp_path)
    message = str(caught[0].message)
    for name in ("damaged", "half", "other", "lacking"):
        assert name in message
    assert set(frame.attrs["skipped"]) == {str(tmp_path / n) for n in ("damaged", "half", "other", "lacking")}
    assert "is damaged" in frame.attrs["skipped"][str(tmp_path / "damaged")]
    assert "half-written" in frame.attrs["skipped"][str(tmp_path / "lacking")]
    assert list(frame["name"]) == ["run-03", "run-02", "run-01"]  # newest first
    # Only what differs is shown: lr and arch differ, the loss and the data do not.
    assert {"lr", "arch", "miou", "best_miou", "status", "path"} <= set(frame.columns)
    assert "loss" not in frame.columns and "data.n" not in frame.columns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "loss" in segnb.runs(tmp_path, all_columns=True).columns
        assert list(segnb.runs(tmp_path, status="completed")["name"]) == ["run-02", "run-01"]
        assert list(segnb.runs(tmp_path, lr=1e-2, arch="fcn8s")["name"]) == ["run-02"]
        assert list(segnb.runs(tmp_path, query="miou > 0.5")["name"]) == ["run-03", "run-02"]
        with pytest.raises(RunError, match="No column 'optimiser'"):
            segnb.runs(tmp_path, optimiser="sgd")
    assert len(list_runs(tmp_path / "absent")) == 0


def test_compare_overlays_curves_bars_confusion_predictions_and_config(two_runs):
    folder, _ = two_runs
    frame = segnb.runs(folder)
    comparison = segnb.compare(frame)
    names = comparison.names
    assert sorted(names) == ["bilinear", "transposed"]
    runs = {r.name: r for r in comparison.runs}

    for x, key in (("epoch", "epoch"), ("step", "step")):
        figure = comparison.curves(x=x)
        traces = [t for t in figure.data if t.name == "bilinear" and t.meta == "validation mIoU"]
        assert list(traces[0].x) == [r[key] for r in runs["bilinear"].history]
    seconds = comparison.curves(x="seconds")
    trace = next(t for t in seconds.data if t.name == "transposed" and t.meta == "validation loss")
    assert list(trace.x) == pytest.approx(np.cumsum([r["seconds"] for r in runs["transposed"].history]))
    assert seconds.layout.xaxis2.title.text == "training time (s)"

    bars = comparison.iou()
    assert [t.name for t in bars.data] == names and bars.layout.barmode == "group"
    assert list(bars.data[0].y) == pytest.approx([v or 0.0 for v in runs[names[0]].summary["iou"]])

    diff = comparison.confusion_difference("bilinear", "transposed")
    from segnb.inspect.iou import normalized_confusion

    want = normalized_confusion(runs["transposed"].confusion()) - normalized_confusion(runs["bilinear"].confusion())
    assert np.allclose(np.asarray(diff.data[0].z), want)

    grid = comparison.predictions(max_images=3)
    picture = np.asarray(grid.data[0].z)
    assert picture.ndim == 3 and picture.shape[0] > picture.shape[1] / 5 * 3 * 0.9  # 3 rows of 5 tiles
    assert [a.text for a in grid.layout.annotations][:-1] == ["<b>image</b>", "<b>truth</b>",
                                                               *[f"<b>{n}</b>" for n in names], "<b>runs disagree</b>"]
    assert "red hatching" in grid.layout.annotations[-1].text

    table = comparison.config()
    assert list(table.index) == ["upsample"] and set(table.loc["upsample"]) == {"bilinear", "transposed4"}
    assert set(comparison.figures()) == {"curves", "iou", "config", "confusion_difference", "predictions"}
    with pytest.raises(RunError, match="x must be"):
        compare(frame, x="minutes")
    with pytest.raises(RunError, match="No run 'third'"):
        comparison.confusion_difference("bilinear", "third")
    assert len(segnb.compare([folder / "bilinear"]).runs) == 1
    assert segnb.compare(["bilinear", "transposed"], folder=folder).names == ["bilinear", "transposed"]


def test_prediction_grid_hatches_errors_and_marks_disagreement():
    from segnb.viz import DISAGREE_COLOUR, ERROR_COLOUR, prediction_grid

    image = np.full((16, 16, 3), 100, np.uint8)
    truth = np.zeros((16, 16), np.int64)
    right, wrong = truth.copy(), truth.copy()
    wrong[:8] = 1
    palette = np.array([[0, 0, 0], [0, 255, 0]], np.uint8)
    picture = prediction_grid([image], [truth], {"a": [right], "b": [wrong]}, palette, scale=1, gap=0)
    assert picture.shape == (16, 16 * 5, 3)
    tile_a, tile_b, disagree = picture[:, 32:48], picture[:, 48:64], picture[:, 64:80]
    red = np.all(tile_b == ERROR_COLOUR, axis=-1)
    assert red[:8].any() and not red[8:].any() and not np.all(tile_a == ERROR_COLOUR, axis=-1).any()
    yellow = np.all(disagree == DISAGREE_COLOUR, axis=-1)
    assert yellow[:8].all() and not yellow[8:].any()


def test_compare_refuses_runs_on_other_classes(tmp_path, two_runs):
    folder, _ = two_runs
    _fake_run(tmp_path, "run-09")
    comparison = compare([folder / "bilinear", tmp_path / "run-09"])
    with pytest.raises(RunError, match="different classes"):
        comparison.iou()
    with pytest.raises(RunError, match="no run.json"):
        compare([tmp_path / "nowhere"])


def test_a_lesson_saves_a_set_of_runs(two_runs, tmp_path):
    folder, _ = two_runs
    path = save_run_set(tmp_path / "fcn.runs.json", segnb.runs(folder), title="FCN upsampling")
    assert sorted(r.name for r in load_run_set(path)) == ["bilinear", "transposed"]
    data = json.loads(path.read_text())
    data["runs"].append(str(tmp_path / "gone"))
    path.write_text(json.dumps(data))
    with pytest.raises(RunError, match="gone"):
        load_run_set(path)


def test_a_run_from_the_command_line_is_listed_and_compared_with_the_api_runs(two_runs, tmp_path):
    from segnb.cli import main

    folder, _ = two_runs
    code = main(["train", "--dataset", "shapes", "--data-option", "n=40", "--data-option", "size=64",
                 "--arch", "fcn8s", "--encoder", "vgg-tiny", "--epochs", "1", "--batch-size", "8", "--seed", "3",
                 "--out", str(tmp_path / "cli"), "--json"])
    assert code == 0
    run = Run(tmp_path / "cli")  # the --out folder is the run: model/, checkpoints/ and run.json
    assert run.status == "completed" and run.config["data"]["options"] == {"n": 40, "size": 64, "seed": 3}
    assert (tmp_path / "cli" / "checkpoints" / "last").is_symlink()
    assert list(segnb.runs(tmp_path)["name"]) == ["cli"]
    comparison = segnb.compare([run, Run(folder / "bilinear")])
    assert len(comparison.iou().data) == 2 and comparison.predictions().data
    other = segnb.compare([run, Run(folder / "bilinear")])
    other.runs[0].info["config"]["data"]["options"] = {"n": 41}
    with pytest.raises(RunError, match="different data"):
        other.predictions()
