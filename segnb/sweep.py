"""Sweeps on Optuna: try variants of one configuration, prune the hopeless ones, keep every run.

``segnb.sweep(base, space, trials=6, budget_minutes_per_run=0.5)`` (this module is callable) trains
one model per trial: the ``base`` configuration with the values Optuna picks from ``space``, each
within its time budget. Every trial is a run (:mod:`segnb.runs`), tagged with the sweep's name and
the trial's number, in ``folder``; ``segnb.runs(folder, sweep=name)`` lists them and
``segnb.compare`` draws them. Each epoch's validation score is reported to Optuna, and a
``MedianPruner`` stops a trial whose score is below the median of the earlier trials at the same
epoch (the run reads ``pruned``).

The study lives in a database: by default the SQLite file ``<folder>/sweeps.db``. Several processes
share one study when they name the same study and storage: ``workers=2`` starts two here, and the
same ``segnb sweep`` command on several machines against one database server
(``--storage postgresql://user@host/db``, Optuna's RDB storage) shares the trials between them.
SQLite serves the processes of one machine (a file on a network share does not lock reliably).

``base``: a dict of ``data`` (``"shapes"``, a hub id or a folder), ``data_options``, the model
(``arch``, ``encoder``, ``upsample``, ``pretrained``), and any ``fit()`` option (``lr``,
``batch_size``, ``loss``, ``image_size``, ``epochs``, ...); or a run (folder or :class:`Run`),
whose configuration is used. ``space`` maps the same names (``data.<option>`` for a data option)
to a list of choices, a ``(low, high)`` range, or ``("log", low, high)`` for a log-uniform one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

from segnb.callbacks import Callback, StopTraining
from segnb.errors import SegnbError
from segnb.runs import Run, RunRecorder, default_folder, list_runs

__all__ = ["sweep", "SweepResult", "SweepError", "parse_space", "PruneCallback", "MODEL_KEYS", "SAMPLERS"]

MODEL_KEYS = ("arch", "encoder", "upsample", "pretrained")
DATA_KEYS = ("data", "data_options")
SAMPLERS = ("tpe", "random", "grid")
DEFAULT_BASE = {"data": "shapes", "data_options": {}, "arch": "fcn8s", "encoder": "vgg-tiny"}


class SweepError(SegnbError, ValueError):
    """A sweep's configuration, search space or storage is not usable."""


def _optuna():
    try:
        import optuna
    except ImportError:
        raise SweepError('Sweeps need Optuna: pip install "segnb[sweep]" (or pip install optuna).') from None
    return optuna


# ---------------------------------------------------------------------------------- the space


def parse_space(items) -> dict:
    """``["lr=log:1e-4:1e-1", "arch=fcn32s,fcn8s", "batch_size=8:32"]`` (the command line's form)
    -> ``{"lr": ("log", 1e-4, 1e-1), "arch": ["fcn32s", "fcn8s"], "batch_size": (8, 32)}``."""
    space = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name or not text:
            raise SweepError(f"{item!r}: write NAME=a,b,c (choices), NAME=low:high or NAME=log:low:high.")
        parts = text.split(":")
        if parts[0] == "log" and len(parts) == 3:
            space[name] = ("log", _number(parts[1], item), _number(parts[2], item))
        elif len(parts) == 2:
            space[name] = (_number(parts[0], item), _number(parts[1], item))
        elif len(parts) == 1:
            space[name] = [_value(v) for v in text.split(",")]
        else:
            raise SweepError(f"{item!r}: write NAME=a,b,c (choices), NAME=low:high or NAME=log:low:high.")
    return space


def _number(text: str, item: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise SweepError(f"{item!r}: {text!r} is not a number.") from None


def _value(text: str):
    """A choice from the command line: a number, true/false/none, or text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    try:
        return _number(text, text)
    except SweepError:
        return text.strip()


def _check_space(space: dict, sampler: str) -> dict:
    if not isinstance(space, dict) or not space:
        raise SweepError("space must be a dict of at least one name -> choices, (low, high) or ('log', low, high).")
    checked = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            if not spec:
                raise SweepError(f"space[{name!r}] is an empty list of choices.")
            checked[name] = list(spec)
        elif isinstance(spec, tuple) and len(spec) == 3 and spec[0] == "log":
            low, high = spec[1:]
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 < low < high):
                raise SweepError(f"space[{name!r}] = {spec!r}: a log range needs 0 < low < high.")
            checked[name] = spec
        elif isinstance(spec, tuple) and len(spec) == 2:
            low, high = spec
            if not (isinstance(low, (int, float)) and isinstance(high, (int, float)) and low < high):
                raise SweepError(f"space[{name!r}] = {spec!r}: a range needs two numbers, low < high.")
            checked[name] = spec
        else:
            raise SweepError(f"space[{name!r}] = {spec!r}: give a list of choices, (low, high) or "
                             "('log', low, high).")
        if sampler == "grid" and not isinstance(checked[name], list):
            raise SweepError(f"A grid needs a list of values for every name; space[{name!r}] is a range. Use "
                             "sampler='tpe' or 'random' for ranges, or list the values.")
    return checked


def _suggest(trial, space: dict) -> dict:
    params = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            # Optuna stores choices as JSON-able scalars: lists and dicts go in as their JSON text.
            choices = [json.dumps(c) if isinstance(c, (list, dict)) else c for c in spec]
            value = trial.suggest_categorical(name, choices)
            params[name] = json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value
        elif spec[0] == "log":
            params[name] = trial.suggest_float(name, spec[1], spec[2], log=True)
        elif isinstance(spec[0], int) and isinstance(spec[1], int):
            params[name] = trial.suggest_int(name, spec[0], spec[1])
        else:
            params[name] = trial.suggest_float(name, spec[0], spec[1])
    return params


# ---------------------------------------------------------------------------------- configurations


def _base_from(base) -> dict:
    """A base configuration from a dict, or from a run (its data, model and training options)."""
    if isinstance(base, (str, os.PathLike, Run)):
        run = base if isinstance(base, Run) else Run(base)
        config = run.config
        data, model = config.get("data", {}), config.get("model", {})
        out = {"data": data.get("source"), "data_options": dict(data.get("options") or {}),
               **{k: model[k] for k in MODEL_KEYS if k in model}}
        skip = {"callbacks", "resume", "checkpoint_dir", "run", "max_minutes", "background", "device", "extra"}
        out.update({k: v for k, v in (config.get("train") or {}).items()
                    if k not in skip and not (isinstance(v, str) and v.startswith("<"))
                    and not (isinstance(v, dict) and "custom" in v)})
        return out
    if not isinstance(base, dict):
        raise SweepError(f"base must be a dict of settings or a run folder, got {type(base).__name__}.")
    return {**DEFAULT_BASE, **base}


def _trial_config(base: dict, params: dict) -> dict:
    config = json.loads(json.dumps(base, default=str))  # a deep copy of plain data
    config.setdefault("data_options", {})
    for name, value in params.items():
        if name.startswith("data."):
            config["data_options"][name[5:]] = value
        else:
            config[name] = value
    return config


_DATA: dict = {}


def _dataset(config: dict):
    """The trial's dataset, loaded once per process for each source and options."""
    from segnb.data import load_dataset

    key = json.dumps([config["data"], config.get("data_options", {})], sort_keys=True, default=str)
    if key not in _DATA:
        _DATA[key] = load_dataset(config["data"], **config.get("data_options", {}))
    return _DATA[key]


class PruneCallback(Callback):
    """Reports each validation score to the Optuna trial; stops the run when the pruner says so."""

    order = 85  # after the checkpoint of the epoch

    def __init__(self, trial, metric: str = "miou", prune: bool = True):
        self.trial, self.metric, self.prune = trial, metric, prune
        self.pruned_at: int | None = None
        self.best = -math.inf

    def on_epoch_end(self, trainer):
        record = trainer.history.epochs[-1]
        value = record.get(self.metric)
        if value is None or value != value:  # not validated this epoch, or NaN
            return
        self.best = max(self.best, value)
        self.trial.report(value, record["epoch"])
        if self.prune and self.trial.should_prune():
            self.pruned_at = record["epoch"]
            raise StopTraining(f"pruned by the sweep at epoch {record['epoch']}: {self.metric} {value:.3f} is below "
                               "the median of the earlier trials at that epoch")


def _objective(settings: dict):
    optuna = _optuna()
    space, base = settings["space"], settings["base"]
    folder, name, metric = Path(settings["folder"]), settings["study"], settings["metric"]

    def objective(trial):
        if trial.number >= settings["trials"]:  # another worker took the last trial meanwhile
            trial.set_user_attr("over_budget", True)
            trial.study.stop()
            raise _OverBudget(f"trial {trial.number} is beyond the sweep's {settings['trials']} trials")
        import torch

        from segnb.models import build_model
        from segnb.train import fit

        params = _suggest(trial, space)
        config = _trial_config(base, params)
        data = _dataset(config)
        seed = int(config.get("seed", 0))
        torch.manual_seed(seed)
        model_options = dict(config.get("model_options") or {})
        model = build_model(config["arch"], config["encoder"], class_names=data.class_names,
                            pretrained=config.get("pretrained", False), upsample=config.get("upsample"),
                            **model_options)
        train = {k: v for k, v in config.items() if k not in (*MODEL_KEYS, *DATA_KEYS, "model_options")}
        train.setdefault("epochs", None)
        train["max_minutes"] = settings["budget"]
        recorder = RunRecorder(folder / f"{name}_trial{trial.number:03d}",
                               tags={"sweep": name, "trial": trial.number, "params": params})
        pruner = PruneCallback(trial, metric, settings["prune"])
        trial.set_user_attr("run", str(recorder.path))
        fit(model, data, run=recorder, callbacks=[pruner], progress=settings["progress"], **train)
        if pruner.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at epoch {pruner.pruned_at}")
        if pruner.best == -math.inf:
            raise SweepError(f"trial {trial.number} never validated ({metric} is missing): set eval_every=1 or a "
                             "longer budget.")
        return pruner.best

    return objective


class _OverBudget(Exception):
    pass


def _storage(url: str):
    optuna = _optuna()
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Several processes on one file: wait for a lock rather than fail at once.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.storages.RDBStorage(url)


def _sampler(kind: str, space: dict, seed: int | None):
    optuna = _optuna()
    if kind == "grid":
        return optuna.samplers.GridSampler(space, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=2)


def _study(settings: dict, seed: int | None):
    optuna = _optuna()
    from sqlalchemy.exc import (  # optuna's RDB storage is built on SQLAlchemy
        IntegrityError,
        OperationalError,
    )

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=settings["startup_trials"], n_warmup_steps=1)
              if settings["prune"] else optuna.pruners.NopPruner())
    for attempt in range(3):  # two processes creating the tables of a new file at the same moment
        try:
            return optuna.create_study(study_name=settings["study"], storage=_storage(settings["storage"]),
                                       sampler=_sampler(settings["sampler"], settings["space"], seed), pruner=pruner,
                                       direction="maximize", load_if_exists=True)
        except (OperationalError, IntegrityError):  # another process made the tables (or their version row)
            # first: "table ... already exists", "UNIQUE constraint failed: alembic_version", "database is locked"
            if attempt == 2:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def _work(settings: dict, worker: int = 0) -> None:
    """One worker: ask the shared study for trials until the sweep has its number of them."""
    optuna = _optuna()
    if settings["threads"]:
        import torch

        torch.set_num_threads(settings["threads"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = None if settings["seed"] is None else settings["seed"] + 1000 * worker
    study = _study(settings, seed)
    states = None  # every trial counts, running ones included: no worker starts one too many
    study.optimize(_objective(settings), n_trials=settings["trials"],
                   callbacks=[optuna.study.MaxTrialsCallback(settings["trials"], states=states)],
                   catch=(_OverBudget,), gc_after_trial=True)


def _default_study(base: dict, space: dict, sampler: str) -> str:
    """The same sweep gets the same name: run on several machines, the same command shares one study."""
    text = json.dumps([base, {k: list(v) if isinstance(v, tuple) else v for k, v in space.items()}, sampler],
                      sort_keys=True, default=str)
    return f"sweep-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


@dataclass
class SweepResult:
    """What a sweep did: the Optuna study, its runs, the best one."""

    study_name: str
    storage: str
    folder: Path
    seconds: float
    study: object = field(repr=False)

    @property
    def trials(self) -> list:
        return list(self.study.trials)

    def counts(self) -> dict:
        """Trials by state: ``complete``, ``pruned``, ``fail``, ``running``."""
        out: dict = {}
        for trial in self.study.trials:
            if trial.user_attrs.get("over_budget"):
                continue  # a worker that found the sweep full
            out[trial.state.name.lower()] = out.get(trial.state.name.lower(), 0) + 1
        return out

    @property
    def best_params(self) -> dict:
        return dict(self.study.best_params)

    @property
    def best_value(self) -> float:
        return float(self.study.best_value)

    @property
    def best_run(self) -> Run:
        return Run(self.study.best_trial.user_attrs["run"])

    def runs(self):
        """This sweep's runs, as :func:`segnb.runs` lists them."""
        return list_runs(self.folder, sweep=self.study_name)

    def compare(self, x: str = "epoch"):
        from segnb.runs import compare

        return compare(self.runs(), x=x)

    def __str__(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts().items()))
        try:
            best = f"; best {self.best_value:.3f} with {self.best_params}"
        except ValueError:
            best = "; no trial completed"
        return f"sweep {self.study_name}: {counts} in {self.seconds:.0f} s{best}"


def sweep(base=None, space: dict | None = None, *, trials: int | None = None, budget_minutes_per_run: float = 1.0,
          sampler: str = "tpe", study: str | None = None, storage: str | None = None, folder=None,
          workers: int = 1, seed: int | None = 0, prune: bool = True, startup_trials: int = 2,
          metric: str = "miou", progress: bool = False) -> SweepResult:
    """Train ``trials`` variants of ``base`` drawn from ``space``; returns a :class:`SweepResult`.

    Args:
        base: the settings every trial starts from (see the module's docstring), or a run folder.
        space: name -> list of choices, ``(low, high)``, or ``("log", low, high)``.
        trials: how many trials in all (shared by every worker on the study); a grid's size by default.
        budget_minutes_per_run: each trial's time budget (``fit(max_minutes=...)``); with ``epochs``
            in ``base`` too, the first limit reached ends the trial.
        sampler: ``tpe`` (Optuna's TPE), ``random`` or ``grid`` (every combination of the lists).
        study, storage: the study's name (by default one derived from ``base``, ``space`` and
            ``sampler``: the same sweep shares one study) and its database URL (by default
            ``sqlite:///<folder>/sweeps.db``).
        folder: where the runs and the default database go (default: the runs folder).
        workers: processes on this machine sharing the study (each uses its share of the CPU cores).
        seed: the samplers' seed (each worker adds its own offset); None for a fresh one.
        prune: stop trials below the median of earlier trials at the same epoch (MedianPruner,
            after ``startup_trials`` trials and from the second epoch).
        metric: the validation figure maximised and reported each epoch (``miou``).
    """
    _optuna()
    if sampler not in SAMPLERS:
        raise SweepError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}.")
    base = _base_from(base if base is not None else {})
    space = _check_space(space, sampler)
    if sampler == "grid":
        size = math.prod(len(v) for v in space.values())
        trials = size if trials is None else trials
    if trials is None or trials < 1:
        raise SweepError("Give trials= (how many models to train in all).")
    if not budget_minutes_per_run or not budget_minutes_per_run > 0:
        raise SweepError(f"budget_minutes_per_run must be above 0, got {budget_minutes_per_run!r}.")
    if workers < 1:
        raise SweepError(f"workers must be at least 1, got {workers}.")
    unknown = [k for k in space if k in ("data_options", "model_options")]
    if unknown:
        raise SweepError(f"Sweep single values: data.<option> rather than {unknown[0]}.")
    folder = Path(folder) if folder is not None else (default_folder() or Path("runs"))
    folder.mkdir(parents=True, exist_ok=True)
    name = study or _default_study(base, space, sampler)
    url = storage or f"sqlite:///{(folder / 'sweeps.db').resolve()}"
    cores = os.cpu_count() or 1
    settings = {"base": base, "space": space, "trials": int(trials), "budget": float(budget_minutes_per_run),
                "sampler": sampler, "study": name, "storage": url, "folder": str(folder), "seed": seed,
                "prune": prune, "startup_trials": startup_trials, "metric": metric, "progress": progress,
                "threads": max(1, cores // workers) if workers > 1 else 0}
    if workers == 1:
        _dataset(base)  # a bad data source fails here, before any trial
    start = time.monotonic()
    created = _study(settings, seed)  # made once here, so the workers only load it
    if workers == 1:
        _work(settings)
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no forked torch threads
        processes = [context.Process(target=_work, args=(settings, k), name=f"segnb-sweep-{k}")
                     for k in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p.exitcode for p in processes if p.exitcode]
        if failed:
            raise SweepError(f"{len(failed)} of {workers} sweep workers failed (exit codes {failed}); the trials "
                             f"they finished are kept in {url}, study {name!r}.")
    return SweepResult(name, url, folder, time.monotonic() - start,
                       _optuna().load_study(study_name=created.study_name, storage=_storage(url)))


class _CallableModule(types.ModuleType):
    """``segnb.sweep(base, space, ...)`` runs a sweep (:func:`sweep`)."""

    def __call__(self, *args, **kwargs):
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
