"""The Runs tab in plain Python: list, tick to compare, live updates, open in Inspect, run sets, lessons."""

from __future__ import annotations

import json
import time

import pytest
import torch

import segnb
from segnb.ui.common import SharedState
from segnb.ui.runs import RunsPanel


def _fit(data, folder, upsample, epochs=1):
    torch.manual_seed(0)
    model = segnb.build_model("fcn8s", "vgg-tiny", class_names=data.class_names, upsample=upsample)
    segnb.fit(model, data, epochs=epochs, batch_size=8, progress=False, run=folder)
    return model


@pytest.fixture(scope="module")
def runs_folder(shapes_small, tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    _fit(shapes_small, folder / "bilinear", "bilinear")
    _fit(shapes_small, folder / "transposed", "transposed4")
    return folder


def test_tick_two_runs_to_compare_them(runs_folder):
    panel = RunsPanel(SharedState(), folder=runs_folder, poll_seconds=0)
    assert len(panel.rows.children) == 2 and "<b>2</b> runs" in panel.summary.value
    assert panel.curves.figure is None and panel.predictions.value == b""
    boxes = {b.description: b for b in panel._boxes.values()}
    boxes["bilinear"].value = True
    assert {t.legendgroup for t in panel.curves.data} == {"bilinear"}
    assert "Tick a second run" in str(panel.confusion.outputs)
    boxes["transposed"].value = True
    assert {t.legendgroup for t in panel.curves.data} == {"bilinear", "transposed"}
    assert [t.name for t in panel.iou.data] == ["bilinear", "transposed"]
    assert panel.confusion.figure is not None and "transposed minus bilinear" in panel.confusion.figure.layout.title.text
    assert panel.predictions.value[:4] == b"\x89PNG" and "runs disagree" in panel.predictions_caption.value
    assert "upsample" in panel.config.value and "transposed4" in panel.config.value
    panel.x_axis.value = "seconds"
    assert panel.curves.figure.layout.xaxis2.title.text == "training time (s)"
    boxes["bilinear"].value = False
    assert {t.legendgroup for t in panel.curves.data} == {"transposed"}


def test_the_list_follows_the_folder_live(shapes_small, tmp_path):
    panel = RunsPanel(SharedState(), folder=tmp_path, poll_seconds=0.2)
    try:
        assert "No runs" in panel.summary.value
        _fit(shapes_small, tmp_path / "new", "bilinear")  # as the Train tab or another notebook would
        deadline = time.monotonic() + 20
        while len(panel.rows.children) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(panel.rows.children) == 1, "the watcher lists a run written meanwhile"
        panel.select(["new"])
        info = json.loads((tmp_path / "new" / "run.json").read_text())
        info["history"].append({**info["history"][-1], "epoch": 2, "miou": 0.99})  # an epoch ends
        (tmp_path / "new" / "run.json").write_text(json.dumps(info))
        deadline = time.monotonic() + 20
        while len(panel.curves.data[-1].x) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(panel.curves.data[-1].x) == [1, 2], "the ticked run's curves grow with its epochs"
        (tmp_path / "broken").mkdir()
        (tmp_path / "broken" / "run.json").write_text("{")
        assert panel.poll() and "skipped: broken" in panel.summary.value
    finally:
        panel.close()
    assert panel._stop.is_set()


def test_open_a_run_in_the_studio_and_keep_a_set_for_a_lesson(runs_folder, tmp_path):
    from segnb.ui.studio import Studio

    studio = Studio()
    studio.runs.folder.value = str(runs_folder)
    studio.runs._stop.set()  # no watcher thread in this test
    path = next(p for p, r in studio.runs.runs.items() if r.name == "transposed")
    studio.runs.open_run(path)
    assert not studio.runs.errors.value
    assert studio.state.model is not None and studio.state.model.spec["upsample"] == "transposed4"
    assert studio.state.data is not None and studio.state.data.source == "shapes"  # the run's dataset, loaded
    assert len(studio.state.history.epochs) == 1
    assert studio.tab_names[studio.tabs.selected_index] == "Inspect"
    assert studio.inspect.stamp.key is not None  # Show ran on the opened model
    studio.runs.select(["bilinear", "transposed"])
    saved = studio.runs.save_set(tmp_path / "fcn.json")
    assert len(json.loads(saved.read_text())["runs"]) == 2
    studio.runs.select([])
    studio.runs.load_set(tmp_path / "fcn.json")
    assert sorted(studio.runs.runs[p].name for p in studio.runs.selected) == ["bilinear", "transposed"]
    lesson = studio.lesson()
    assert len(lesson["runs"]["selected"]) == 2 and lesson["runs"]["folder"] == str(runs_folder)
    studio.runs.select([])
    with pytest.raises(ValueError, match="No run 'nothing'"):
        studio.runs.select(["nothing"])


def test_a_run_trained_in_the_train_tab_appears_in_the_runs_tab(shapes_small, tmp_path, monkeypatch):
    from segnb.ui.studio import Studio

    monkeypatch.setenv("SEGNB_RUNS", str(tmp_path))
    studio = Studio()
    studio.state.data = shapes_small
    studio.state.model = segnb.build_model("fcn32s", "vgg-tiny", class_names=shapes_small.class_names)
    panel = studio.runs
    panel._stop.set()  # the state's history, not the watcher, brings it here
    assert not panel.rows.children
    studio.train.epochs.value = 1
    studio.train.batch_size.value = 8
    studio.train.start().wait()
    deadline = time.monotonic() + 30
    while studio.state.history is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(panel.rows.children) == 1
    (run,) = panel.runs.values()
    assert run.status == "completed" and run.name.endswith("_fcn32s-vgg-tiny")
