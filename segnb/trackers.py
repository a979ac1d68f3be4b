"""Experiment trackers users already have: MLflow (TensorBoard's logger is in :mod:`segnb.callbacks`).

``fit(model, data, callbacks=[MLflowLogger()])`` logs the run's parameters (training options,
data source and options, model spec), each epoch's metrics (losses, mIoU, accuracies, learning
rate, ``iou/<class>``), the per-class IoU table (``iou_per_class.json``) and the model
(``model/``, loadable with :func:`segnb.load_model`). Where: ``tracking_uri=`` (any MLflow tracking
URI: a server, ``databricks``, ``sqlite:///...``, a ``file:`` store), else ``$MLFLOW_TRACKING_URI``,
else the SQLite file ``<runs folder>/mlflow.db`` with artifacts beside it in ``mlartifacts/``
(``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`` shows them). Needs
``pip install "segnb[mlflow]"``.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from segnb.callbacks import Callback
from segnb.errors import SegnbError
from segnb.runs import (
    RunRecorder,
    _config_from_trainer,
    _plain,
    default_folder,
    flatten_config,
    status_of,
)

__all__ = ["MLflowLogger", "default_tracking_uri"]


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<runs folder>/mlflow.db``."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = (default_folder() or Path("runs")).expanduser().resolve()
    return f"sqlite:///{folder / 'mlflow.db'}"


def _key(text: str) -> str:
    """An MLflow metric or parameter name (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", str(text))[:250]


class MLflowLogger(Callback):
    """Parameters, per-epoch metrics, the per-class IoU table and the model, to MLflow.

    Args:
        tracking_uri: where to log (see the module's docstring for the default).
        experiment: the MLflow experiment's name (made when missing).
        run_name: the MLflow run's name (default: the segnb run's folder name, or MLflow's own).
        log_model: also store the trained model as an artifact.
    """

    order = 96  # after the run recorder's start (order -10): it logs the same configuration and names the run folder

    def __init__(self, tracking_uri: str | None = None, experiment: str = "segnb", run_name: str | None = None,
                 log_model: bool = True, tags: dict | None = None):
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise SegnbError('MLflowLogger needs MLflow: pip install "segnb[mlflow]" (or pip install mlflow).') from None
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.log_model, self.tags = log_model, dict(tags or {})
        self.client = self.run_id = None

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        artifacts = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, not in the working folder
            artifacts = (Path(self.uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=artifacts)

    def on_fit_start(self, trainer):
        if not getattr(trainer, "is_main_process", True):
            return
        from mlflow.tracking import MlflowClient

        self.uri = self.tracking_uri or default_tracking_uri()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        recorder = next((c for c in trainer.callbacks if isinstance(c, RunRecorder) and c.info), None)
        if recorder is not None:
            config = recorder.info["config"]
        else:
            model = trainer.unwrapped
            provenance = trainer.data.provenance() or {}
            config = {"train": _config_from_trainer(trainer),
                      "data": {"source": provenance.get("data_source"), "options": provenance.get("data_options", {})},
                      "model": _plain(getattr(model, "spec", {}))}
        tags = {**self.tags, "segnb.device": str(trainer.device), "segnb.precision": trainer.precision}
        if recorder is not None:
            tags["segnb.run"] = str(recorder.path.resolve())
        run = self.client.create_run(self._experiment_id(), run_name=self.run_name or (
            recorder.path.name if recorder is not None else None), tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(_key(k), str(v)[:6000]) for k, v in flatten_config(config).items() if v is not None]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(self.run_id, params=params[start:start + 100])

    def on_epoch_end(self, trainer):
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        record = trainer.history.epochs[-1]
        now, step = int(time.time() * 1000), int(record["epoch"])
        metrics = [Metric(_key(k), float(v), now, step) for k, v in record.items()
                   if k != "epoch" and isinstance(v, (int, float)) and v == v]
        metrics += [Metric(_key(f"iou/{name}"), float(v), now, step)
                    for name, v in zip(trainer.class_names, record.get("iou") or [], strict=False) if v is not None]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_fit_end(self, trainer):
        if self.run_id is None:
            return
        history = trainer.history
        try:
            last = next((r for r in reversed(history.epochs) if r.get("iou") is not None), None)
            if last is not None:
                self.client.log_table(self.run_id, data={
                    "class": list(trainer.class_names),
                    "iou": [v if v is not None else float("nan") for v in last["iou"]],
                    "epoch": [last["epoch"]] * len(trainer.class_names)}, artifact_file="iou_per_class.json")
            if self.log_model and history.steps > 0:
                from segnb.models.io import save_model

                with tempfile.TemporaryDirectory(prefix="segnb-mlflow-") as tmp:
                    save_model(trainer.unwrapped, Path(tmp) / "model", data=trainer.data)
                    self.client.log_artifacts(self.run_id, str(Path(tmp) / "model"), "model")
        finally:
            status = status_of(history.stopped, history.limit)
            self.client.set_tag(self.run_id, "segnb.stopped", history.stopped[:5000])
            self.client.set_terminated(self.run_id, {"failed": "FAILED", "interrupted": "KILLED"}.get(status, "FINISHED"))
