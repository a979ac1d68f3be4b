"""Trackers: MLflow read back with its own client; TensorBoard's HParams read back from the event files."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_model

import segnb
from segnb.callbacks import Callback, TensorBoardLogger
from segnb.trackers import MLflowLogger


class _Boom(Callback):
    def on_step_end(self, trainer):
        if trainer.step == 2:
            raise RuntimeError("boom")


def test_mlflow_gets_params_epoch_metrics_iou_table_and_model(shapes_small, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SEGNB_RUNS", str(tmp_path / "runs"))  # the default store: <runs>/mlflow.db
    model = tiny_model(shapes_small, "fcn8s")
    history = segnb.fit(model, shapes_small, epochs=2, batch_size=8, lr=3e-3, progress=False,
                        callbacks=[MLflowLogger(experiment="tests")])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tests")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["lr"] == "0.003" and params["arch"] == "fcn8s" and params["data"] == "shapes"
    assert params["data.n"] == "40" and params["batch_size"] == "8"
    (folder,) = (tmp_path / "runs").glob("*_fcn8s-vgg-tiny")  # the segnb run beside it, named in a tag
    assert run.data.tags["segnb.run"] == str(folder.resolve()) and run.info.run_name == folder.name
    miou = client.get_metric_history(run.info.run_id, "miou")
    assert [(m.step, m.value) for m in miou] == [(r["epoch"], pytest.approx(r["miou"])) for r in history.epochs]
    circle = client.get_metric_history(run.info.run_id, "iou/circle")
    k = shapes_small.class_names.index("circle")
    assert [m.value for m in circle] == [pytest.approx(r["iou"][k]) for r in history.epochs if r["iou"][k] is not None]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"iou_per_class.json", "model"} <= artifacts
    table = json.loads(open(client.download_artifacts(run.info.run_id, "iou_per_class.json", str(tmp_path))).read())
    rows = dict(zip([r[0] for r in table["data"]], [r[1] for r in table["data"]], strict=True))
    assert rows["circle"] == pytest.approx(history.epochs[-1]["iou"][k])
    saved = client.download_artifacts(run.info.run_id, "model", str(tmp_path / "dl"))
    image = shapes_small["validation"][0][0]
    assert torch.equal(segnb.predict(segnb.load_model(saved), image).masks, segnb.predict(model, image).masks)
    assert (tmp_path / "runs" / "mlartifacts").is_dir()  # artifacts beside the database, not in the cwd

    with pytest.raises(RuntimeError, match="boom"):  # a failed run reads FAILED, not FINISHED
        segnb.fit(tiny_model(shapes_small), shapes_small, epochs=1, batch_size=8, progress=False,
                  callbacks=[MLflowLogger(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}"), _Boom()])
    other = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}")
    (failed,) = other.search_runs([other.get_experiment_by_name("segnb").experiment_id])
    assert failed.info.status == "FAILED" and "boom" in failed.data.tags["segnb.stopped"]


def test_tensorboard_logger_writes_hparams_with_final_scores(shapes_small, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    history = segnb.fit(tiny_model(shapes_small), shapes_small, epochs=2, batch_size=8, lr=2e-3, progress=False,
                        callbacks=[TensorBoardLogger(tmp_path / "tb")], run=False)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(2e-3)
    assert start.hparams["arch"].string_value == "fcn32s" and start.hparams["data"].string_value == "shapes"
    assert start.hparams["batch_size"].number_value == 8
    final = {e.step: e.value for e in events.Scalars("final/miou")}
    assert list(final.values()) == [pytest.approx(history.epochs[-1]["miou"])]
