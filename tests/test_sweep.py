"""Sweeps on Optuna: the space, pruning, two processes on one SQLite study, the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import optuna
import pytest
from conftest import ROOT, tiny_model

import segnb
from segnb.runs import Run
from segnb.sweep import PruneCallback, SweepError, parse_space

BASE = {"data": "shapes", "data_options": {"n": 40, "size": 64, "seed": 3}, "arch": "fcn32s",
        "encoder": "vgg-tiny", "batch_size": 8, "epochs": 2}


def test_parse_space_reads_choices_ranges_and_log_ranges():
    assert parse_space(["lr=log:1e-4:1e-1", "arch=fcn32s,fcn8s", "batch_size=8:32", "augment=true,false",
                        "scale=0.5:1.5"]) == {
        "lr": ("log", 1e-4, 1e-1), "arch": ["fcn32s", "fcn8s"], "batch_size": (8, 32), "augment": [True, False],
        "scale": (0.5, 1.5)}
    for bad in ("lr", "lr=", "lr=a:b", "lr=log:1:2:3"):
        with pytest.raises(SweepError, match="NAME=|not a number"):
            parse_space([bad])


def test_bad_sweeps_are_refused_before_any_training(tmp_path):
    with pytest.raises(SweepError, match="grid needs a list"):
        segnb.sweep(BASE, {"lr": ("log", 1e-4, 1e-1)}, sampler="grid", folder=tmp_path)
    with pytest.raises(SweepError, match="sampler must be"):
        segnb.sweep(BASE, {"lr": [1e-3]}, sampler="bayes", trials=1, folder=tmp_path)
    with pytest.raises(SweepError, match="trials="):
        segnb.sweep(BASE, {"lr": ("log", 1e-4, 1e-1)}, folder=tmp_path)
    with pytest.raises(SweepError, match="0 < low < high"):
        segnb.sweep(BASE, {"lr": ("log", 0, 1e-1)}, trials=2, folder=tmp_path)
    with pytest.raises(SweepError, match="budget_minutes_per_run"):
        segnb.sweep(BASE, {"lr": [1e-3]}, trials=1, budget_minutes_per_run=0, folder=tmp_path)
    assert not list(tmp_path.iterdir())


class _Trial:
    """Optuna's trial as PruneCallback sees it: report, and a pruner that says yes from epoch 2."""

    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= 2


def test_a_pruned_trial_stops_after_its_epoch_and_its_run_says_pruned(shapes_small, tmp_path):
    trial = _Trial()
    history = segnb.fit(tiny_model(shapes_small), shapes_small, epochs=4, batch_size=8, progress=False,
                        run=tmp_path / "trial", callbacks=[PruneCallback(trial)])
    assert [step for step, _ in trial.reports] == [1, 2]
    assert [value for _, value in trial.reports] == [r["miou"] for r in history.epochs]
    assert history.stopped.startswith("pruned by the sweep at epoch 2") and len(history.epochs) == 2
    run = Run(tmp_path / "trial")
    assert run.status == "pruned" and run.model() is not None


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path):
    result = segnb.sweep(BASE, {"lr": ("log", 1e-3, 1e-1), "arch": ["fcn32s", "fcn8s"]}, trials=4,
                         budget_minutes_per_run=0.2, workers=2, folder=tmp_path, study="shared")
    assert result.storage == f"sqlite:///{tmp_path.resolve() / 'sweeps.db'}"
    study = optuna.load_study(study_name="shared", storage=result.storage)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4 and sum(result.counts().get(k, 0) for k in ("complete", "pruned")) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = segnb.runs(tmp_path, sweep="shared")
    assert len(frame) == 4
    runs = [Run(p) for p in frame["path"]]
    assert sorted(r.info["tags"]["trial"] for r in runs) == [0, 1, 2, 3]
    assert len({r.info["pid"] for r in runs}) == 2  # trained by the two worker processes
    for run in runs:  # each run holds the values Optuna chose for its trial
        trial = study.trials[run.info["tags"]["trial"]]
        assert run.config["train"]["lr"] == pytest.approx(trial.params["lr"])
        assert run.config["model"]["arch"] == trial.params["arch"]
        assert run.config["train"]["max_minutes"] == pytest.approx(0.2)
    assert result.best_run.summary["best_miou"] == pytest.approx(result.best_value)


def test_opening_a_study_waits_out_another_process_only_for_database_contention(tmp_path, monkeypatch):
    """Workers open one study at once: SQLite's "table ... already exists", "database is locked"
    (SQLAlchemy's OperationalError) or a second version row (IntegrityError) is tried again, three
    tries in all; other errors are not."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    from segnb import sweep

    errors = []  # what the next calls of optuna.create_study raise, in order

    def create_study(**kwargs):
        if errors:
            raise errors.pop(0)
        return "the study"

    monkeypatch.setattr(optuna, "create_study", create_study)
    monkeypatch.setattr(sweep.time, "sleep", lambda seconds: None)
    settings = {"study": "s", "storage": f"sqlite:///{tmp_path / 'sweeps.db'}", "sampler": "random",
                "space": {}, "prune": False, "startup_trials": 0}
    contention = OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
    version = IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))
    errors[:] = [contention, version]
    assert sweep._study(settings, seed=0) == "the study"
    errors[:] = [contention, contention, contention]
    with pytest.raises(OperationalError):
        sweep._study(settings, seed=0)
    errors[:] = [ValueError("not contention"), contention]
    with pytest.raises(ValueError):
        sweep._study(settings, seed=0)
    assert errors == [contention]  # not tried again


@pytest.mark.slow
def test_segnb_sweep_on_the_command_line_continues_a_study(tmp_path):
    command = [sys.executable, "-m", "segnb.cli", "sweep", "--data-option", "n=40", "--data-option", "size=64",
               "--arch", "fcn32s", "--set", "batch_size=8", "--set", "epochs=1", "--space", "lr=1e-3,1e-2",
               "--sampler", "grid", "--minutes-per-run", "0.2", "--out", str(tmp_path), "--study", "cli", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["study"] == "cli" and result["counts"] == {"complete": 2}
    assert Run(result["best_run"]).info["tags"]["sweep"] == "cli"
    # The same command again: the grid is done, nothing more is trained.
    again = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert json.loads(again.stdout.strip().splitlines()[-1])["counts"] == {"complete": 2}
    bad = subprocess.run([*command[:4], "--space", "lr=log:0:1", "--trials", "2"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert bad.returncode == 2 and "a log range needs 0 < low < high" in bad.stderr


def test_a_sweep_can_start_from_a_run(shapes_small, tmp_path):
    from segnb.sweep import _base_from

    segnb.fit(tiny_model(shapes_small, "fcn8s"), shapes_small, epochs=1, batch_size=8, lr=3e-3, progress=False,
              run=tmp_path / "seed-run")
    base = _base_from(tmp_path / "seed-run")
    assert base["data"] == "shapes" and base["data_options"] == {"n": 40, "size": 64, "seed": 3}
    assert base["arch"] == "fcn8s" and base["lr"] == 3e-3 and base["batch_size"] == 8
    assert "max_minutes" not in base and "device" not in base
