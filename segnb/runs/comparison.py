"""Comparing runs: :func:`compare` and its :class:`Comparison` (plotly figures from :mod:`segnb.viz`),
and run sets, a lesson's runs kept in one JSON file (:func:`save_run_set`, :func:`load_run_set`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from segnb.runs.listing import Run
from segnb.runs.record import RunError, default_folder

__all__ = ["Comparison", "compare", "save_run_set", "load_run_set"]


# ---------------------------------------------------------------------------------- comparing runs


def _as_runs(runs, folder=None) -> list[Run]:
    """Runs from a DataFrame of :func:`list_runs`, Run objects, folders, or names in ``folder``."""
    if hasattr(runs, "columns") and "path" in getattr(runs, "columns", ()):
        items = list(runs["path"])
    elif isinstance(runs, (str, os.PathLike, Run)):
        items = [runs]
    else:
        items = list(runs)
    out = []
    base = Path(folder) if folder is not None else (default_folder() or Path("runs"))
    for item in items:
        if isinstance(item, Run):
            out.append(item)
            continue
        path = Path(item)
        if not (path / "run.json").exists() and (base / path).is_dir():
            path = base / path
        out.append(Run(path))
    if not out:
        raise RunError("No runs to compare: give a DataFrame of segnb.runs(), run folders or run names.")
    return out


class Comparison:
    """Runs side by side: each method returns a plotly figure (or a DataFrame) from :mod:`segnb.viz`.

    ``curves(x=...)`` training curves on one x axis (``epoch``, ``step`` or ``seconds``);
    ``iou()`` per-class IoU as grouped bars; ``confusion_difference(a, b)``; ``predictions()`` the
    same validation images predicted by each run, errors hatched, and where the runs disagree;
    ``config()`` the configuration fields that differ (``config_figure()`` as a table figure).
    """

    def __init__(self, runs: list[Run], x: str = "epoch"):
        self.runs, self.x = runs, x
        self.names = _unique_names(runs)

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.runs)} runs: {', '.join(self.names)}>"

    def curves(self, x: str | None = None, keys: Sequence[str] = ("train_loss", "val_loss", "miou"),
               log_loss: bool = True):
        from segnb.viz import runs_curves_figure

        return runs_curves_figure({n: r.history for n, r in zip(self.names, self.runs, strict=True)},
                                  x=x or self.x, keys=keys, log_loss=log_loss)

    def _class_names(self) -> list[str]:
        names = [r.class_names for r in self.runs]
        if any(n != names[0] for n in names):
            raise RunError("These runs were trained on different classes: per-class figures compare runs on one "
                           f"dataset ({', '.join(f'{a}: {len(n)} classes' for a, n in zip(self.names, names, strict=True))}).")
        return names[0]

    def iou(self):
        from segnb.viz import runs_iou_figure

        classes = self._class_names()
        return runs_iou_figure(classes, {n: r.summary.get("iou") or [None] * len(classes)
                                         for n, r in zip(self.names, self.runs, strict=True)})

    def _pick(self, which) -> int:
        if isinstance(which, int):
            return which
        if which in self.names:
            return self.names.index(which)
        raise RunError(f"No run {which!r} here; the runs are {', '.join(self.names)}.")

    def confusion_difference(self, a=0, b=1, normalize: bool = True):
        """Run ``b``'s confusion matrix less run ``a``'s (row-normalised by default)."""
        from segnb.viz import confusion_difference_figure

        if len(self.runs) < 2:
            raise RunError("A confusion difference needs two runs.")
        i, j = self._pick(a), self._pick(b)
        classes = self._class_names()
        return confusion_difference_figure(self.runs[i].confusion(), self.runs[j].confusion(), classes,
                                           names=(self.names[i], self.names[j]), normalize=normalize)

    def predictions(self, max_images: int = 4, palette=None):
        """The same validation images, one row each: image, truth, then each run's prediction."""
        from segnb.viz import contrast_palette, prediction_grid_figure

        classes = self._class_names()
        self._check_same_data()
        previews = [r.predictions() for r in self.runs]
        if any(p["indices"] != previews[0]["indices"] for p in previews):
            raise RunError("These runs kept different validation images (different data or splits), so their "
                           "predictions cannot be shown side by side.")
        first = previews[0]
        n = min(max_images, len(first["indices"]))
        palette = contrast_palette(len(classes)) if palette is None else palette
        ignore = self.runs[0].config.get("data", {}).get("ignore_index", 255)
        return prediction_grid_figure(first["images"][:n], first["truths"][:n],
                                      {name: p["preds"][:n] for name, p in zip(self.names, previews, strict=True)},
                                      palette, ignore_index=ignore, indices=first["indices"][:n])

    def _check_same_data(self) -> None:
        data = [(r.config.get("data", {}).get("source"), json.dumps(r.config.get("data", {}).get("options"),
                                                                    sort_keys=True)) for r in self.runs]
        if any(d != data[0] for d in data):
            raise RunError("These runs were trained on different data (source or options), so their predictions of "
                           "'the same' validation images are not of the same images.")

    def config(self, all_fields: bool = False):
        """A DataFrame: one row per configuration field that differs (all with ``all_fields``), a column per run."""
        import pandas as pd

        flat = [r.flat_config() for r in self.runs]
        keys = list(dict.fromkeys(k for f in flat for k in f))
        rows = {k: [f.get(k) for f in flat] for k in keys}
        if not all_fields:
            rows = {k: v for k, v in rows.items() if len({json.dumps(x, default=str) for x in v}) > 1}
        return pd.DataFrame.from_dict(rows, orient="index", columns=self.names)

    def config_figure(self, all_fields: bool = False):
        from segnb.viz import table_figure

        table = self.config(all_fields)
        return table_figure(["field", *table.columns], [[str(i) for i in table.index],
                                                        *[[_fmt(v) for v in table[c]] for c in table.columns]],
                            title="configuration: what differs" if not all_fields else "configuration")

    def figures(self) -> dict:
        """Every figure that these runs allow (a confusion difference needs two, predictions need them kept)."""
        out = {"curves": self.curves(), "iou": self.iou(), "config": self.config_figure()}
        if len(self.runs) >= 2:
            try:
                out["confusion_difference"] = self.confusion_difference()
            except RunError:
                pass
        try:
            out["predictions"] = self.predictions()
        except RunError:
            pass
        return out

    def show(self) -> None:
        """Draw every figure (plotly's ``show``: in a notebook, under the cell)."""
        for figure in self.figures().values():
            figure.show()

    def _repr_html_(self) -> str:
        table = self.config()
        body = table.to_html() if len(table) else "<p>The runs' configurations are identical.</p>"
        return (f"<b>{len(self.runs)} runs</b>: {', '.join(self.names)}<br>{body}<p><i>.curves(), .iou(), "
                ".confusion_difference(), .predictions(), .show() for the figures.</i></p>")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _unique_names(runs: list[Run]) -> list[str]:
    names, seen = [], {}
    for run in runs:
        name = run.name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def compare(runs, x: str = "epoch", folder=None) -> Comparison:
    """Compare runs: a DataFrame of :func:`list_runs` (or part of one), run folders, :class:`Run`
    objects, or run names in ``folder``. ``x`` is the curves' axis: ``epoch``, ``step`` or ``seconds``."""
    if x not in ("epoch", "step", "seconds"):
        raise RunError(f"x must be 'epoch', 'step' or 'seconds', got {x!r}.")
    return Comparison(_as_runs(runs, folder), x=x)


# ---------------------------------------------------------------------------------- run sets (lessons)

RUN_SET_FORMAT = "segnb-run-set/1"


def save_run_set(path, runs: Iterable, title: str = "") -> Path:
    """A lesson's set of runs to compare, as JSON: the runs' folders, relative to the file when possible."""
    from segnb.models.io import atomic_write

    path = Path(path)
    folders = []
    for run in _as_runs(list(runs) if not hasattr(runs, "columns") else runs):
        try:
            folders.append(os.path.relpath(run.path.resolve(), path.resolve().parent))
        except ValueError:  # another drive
            folders.append(str(run.path.resolve()))
    text = json.dumps({"format": RUN_SET_FORMAT, "title": title, "runs": folders}, indent=1)
    atomic_write(path, lambda p: p.write_text(text))
    return path


def load_run_set(path) -> list[Run]:
    """The runs a :func:`save_run_set` file names (an error names the ones that are gone)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunError(f"{path}: cannot read this run set ({err}).") from None
    if data.get("format") != RUN_SET_FORMAT:
        raise RunError(f"{path} is not a set of runs (format {data.get('format')!r}).")
    runs, missing = [], []
    for folder in data.get("runs", []):
        full = (path.parent / folder) if not os.path.isabs(folder) else Path(folder)
        try:
            runs.append(Run(full))
        except RunError as err:
            missing.append(str(err))
    if missing:
        raise RunError(f"{path} names runs that cannot be read: {'; '.join(missing)}.")
    return runs
