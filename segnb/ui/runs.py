"""RunsPanel: the runs in a folder, ticked to compare; a run's model opened in the Inspect tab.

Each ``fit()`` (the Train tab's too) writes a run (:mod:`segnb.runs`). The panel lists the runs
newest first and watches the folder: a run that starts, finishes an epoch or ends elsewhere (the
Train tab, a notebook, ``segnb train``, a sweep) shows within ``poll_seconds``, and the charts of
the ticked runs are redrawn when one of them changed. The charts are :mod:`segnb.viz`'s comparison
figures: curves on one x axis, per-class IoU bars, the confusion difference of the first two
ticked runs, their predictions of the same validation images, and what differs in their settings.
"""

from __future__ import annotations

import html
import os
import threading
import warnings
from pathlib import Path

import ipywidgets as W

from segnb.ui.common import (
    ErrorBox,
    PlotView,
    SharedState,
    guarded,
    image_widget,
    png,
    row_of,
    strip_labels,
)

__all__ = ["RunsPanel"]

MAX_ROWS = 40
STATUS_COLOURS = {"completed": "#009e73", "running": "#0072b2", "stopped": "#e69f00", "pruned": "#7f7f7f",
                  "interrupted": "#d55e00", "failed": "#d32f2f"}


class RunsPanel(W.VBox):
    """Tick runs to compare them; open one's model in the Inspect tab (``on_open``, given by the Studio)."""

    def __init__(self, state: SharedState | None = None, folder=None, on_open=None, poll_seconds: float = 2.0):
        from segnb.runs import default_folder

        self.state = state or SharedState()
        self.on_open = on_open
        self.errors = ErrorBox()
        self.folder = W.Text(str(folder or default_folder() or "runs"), description="runs folder",
                             style={"description_width": "initial"}, layout=W.Layout(width="420px"))
        self.folder.add_class("segnb-runs-folder")
        self.refresh_button = W.Button(description="Refresh", icon="refresh")
        self.refresh_button.add_class("segnb-runs-refresh")
        self.x_axis = W.ToggleButtons(options=[("epochs", "epoch"), ("steps", "step"), ("seconds", "seconds")],
                                      value="epoch", description="x axis")
        self.x_axis.add_class("segnb-runs-x")
        self.summary = W.HTML()
        self.summary.add_class("segnb-runs-summary")
        self.rows = W.VBox()
        self.rows.add_class("segnb-runs-list")
        self.set_path = W.Text("runs-set.json", description="run set", layout=W.Layout(width="420px"))
        self.save_set_button = W.Button(description="Save set", icon="save",
                                        tooltip="save the ticked runs, for a lesson to open again")
        self.load_set_button = W.Button(description="Open set", icon="folder-open")
        self.save_set_button.add_class("segnb-runs-save-set")
        self.curves = PlotView("curves of the ticked runs", height=420, width=620, css_class="segnb-runs-curves",
                               empty="Tick two runs or more: their curves appear here on one x axis.")
        self.iou = PlotView("per-class IoU", height=420, width=620, css_class="segnb-runs-iou",
                            empty="Each class's IoU, a bar per ticked run, appears here.")
        self.confusion = PlotView("confusion difference", height=420, width=520, css_class="segnb-runs-confusion",
                                  empty="The confusion matrix of the second ticked run less the first's appears here.")
        self.predictions = image_widget(css_class="segnb-runs-predictions")
        self.predictions.add_class("segnb-pixelated")
        self.predictions_caption = W.HTML()
        self.predictions_caption.add_class("segnb-runs-predictions-caption")
        self.config = W.HTML()
        self.config.add_class("segnb-runs-config")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.save_set_button.on_click(lambda _: self.save_set(self.set_path.value))
        self.load_set_button.on_click(lambda _: self.load_set(self.set_path.value))
        self.x_axis.observe(lambda _: self.draw(), names=["value"])
        self.folder.observe(lambda _: self.refresh(), names=["value"])
        self.state.observe(lambda _: self.refresh(), names=["history"])  # a Train-tab run ended
        self.selected: list[str] = []
        self.runs: dict[str, object] = {}
        self._boxes: dict[str, W.Checkbox] = {}
        self._signature: dict[str, int] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        super().__init__([
            W.HBox([self.folder, self.refresh_button]), self.summary, self.errors, self.rows,
            W.HBox([self.x_axis]), W.HBox([self.set_path, self.save_set_button, self.load_set_button]),
            row_of(self.curves, self.iou), self.config, row_of(self.confusion),
            self.predictions_caption, self.predictions,
        ])
        self.add_class("segnb-runs-panel")
        self.refresh()
        if poll_seconds:
            threading.Thread(target=self._watch, args=(poll_seconds,), name="segnb-runs-watch", daemon=True).start()

    # -- the folder ------------------------------------------------------------------------------
    def _scan_signature(self) -> dict[str, int]:
        """run.json's modification time of each run folder (cheap: one stat per run)."""
        out = {}
        try:
            entries = list(os.scandir(self.folder.value))
        except OSError:
            return out
        for entry in entries:
            if entry.is_dir() and not entry.name.startswith("."):
                try:
                    out[entry.path] = os.stat(os.path.join(entry.path, "run.json")).st_mtime_ns
                except OSError:
                    out[entry.path] = -1
        return out

    def _watch(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the watcher must outlive a damaged folder; refresh() shows why
                pass

    def poll(self) -> bool:
        """Refresh when a run appeared, changed or went; returns whether anything changed."""
        signature = self._scan_signature()
        if signature == self._signature:
            return False
        changed = {p for p in signature if signature[p] != self._signature.get(p)}
        self.refresh(redraw=bool(changed & set(self.selected)))
        return True

    @guarded
    def refresh(self, redraw: bool = True):
        """Read the folder again; keep the ticks of runs still there."""
        from segnb.runs import Run, list_runs

        with self._lock:
            self._signature = self._scan_signature()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                frame = list_runs(self.folder.value)
            self.runs = {path: Run(path) for path in frame["path"][:MAX_ROWS]}
            skipped = frame.attrs.get("skipped", {})
            self.selected = [p for p in self.selected if p in self.runs]
            rows = [self._row(path, run) for path, run in self.runs.items()]
            self.rows.children = rows
            text = (f"<b>{len(frame)}</b> runs in {html.escape(self.folder.value)}"
                    + (f" (the newest {MAX_ROWS} shown)" if len(frame) > MAX_ROWS else "")
                    + ". Tick two or more to compare them.")
            if not len(frame):
                text = (f"No runs in {html.escape(self.folder.value)} yet: each training run (the Train tab, fit(), "
                        "segnb train) is written there.")
            if skipped:
                names = ", ".join(html.escape(Path(p).name) for p in skipped)
                text += f'<div class="segnb-note">&#9432; Not readable runs, skipped: {names}.</div>'
            del caught
            self.summary.value = text
            if redraw:
                self.draw()
            return frame

    def _row(self, path: str, run) -> W.HBox:
        info, summary = run.info, run.summary
        spec = run.config.get("model", {})
        train = run.config.get("train", {})
        what = " ".join(str(spec[k]) for k in ("arch", "encoder", "upsample") if spec.get(k))
        miou = summary.get("miou")
        score = f"mIoU {miou:.3f}" if isinstance(miou, (int, float)) else "no score yet"
        colour = STATUS_COLOURS.get(info["status"], "#616161")
        box = self._boxes.get(path) or W.Checkbox(False, indent=False, layout=W.Layout(width="auto"))
        box.description = info["name"]
        box.add_class("segnb-run-select")
        if path not in self._boxes:
            box.observe(lambda change, p=path: self._tick(p, change["new"]), names=["value"])
            self._boxes[path] = box
        box.value = path in self.selected
        detail = W.HTML(f'<span style="color:{colour};font-weight:bold">{html.escape(info["status"])}</span> '
                        f"&middot; {html.escape(what)} &middot; lr {train.get('lr', '?')} &middot; "
                        f"{html.escape(str(train.get('loss', '?')))} &middot; {score} &middot; "
                        f"{len(run.history)} epochs")
        detail.add_class("segnb-run-detail")
        open_button = W.Button(icon="search", tooltip="open this run's model in the Inspect tab",
                               layout=W.Layout(width="42px"))
        open_button.add_class("segnb-run-open")
        open_button.on_click(lambda _, p=path: self.open_run(p))
        row = W.HBox([box, detail, open_button], layout=W.Layout(align_items="center"))
        row.add_class("segnb-run-row")
        return row

    def _tick(self, path: str, on: bool) -> None:
        with self._lock:
            if on and path not in self.selected:
                self.selected = [*self.selected, path]
            elif not on and path in self.selected:
                self.selected = [p for p in self.selected if p != path]
            else:
                return
        self.draw()

    def select(self, paths) -> None:
        """Tick these runs (folders or names in the folder), untick the others."""
        wanted = []
        for item in paths:
            path = str(item)
            if path not in self.runs:
                path = next((p for p, r in self.runs.items() if r.name == str(item) or Path(p) == Path(item)), path)
            if path not in self.runs:
                raise ValueError(f"No run {item!r} in {self.folder.value}.")
            wanted.append(path)
        with self._lock:
            self.selected = wanted
            for path, box in self._boxes.items():
                box.value = path in wanted
        self.draw()

    # -- the comparison --------------------------------------------------------------------------
    @guarded
    def draw(self):
        """The charts of the ticked runs (cleared with fewer than one)."""
        from segnb.runs import RunError, compare

        with self._lock:
            runs = [self.runs[p] for p in self.selected if p in self.runs]
        if not runs:
            for view in (self.curves, self.iou, self.confusion):
                view.clear()
            self.predictions.value = b""
            self.predictions_caption.value = self.config.value = ""
            return None
        comparison = compare(runs, x=self.x_axis.value)
        self.curves.draw(comparison.curves())
        problems = []
        try:
            self.iou.draw(comparison.iou())
        except RunError as error:
            self.iou.clear(str(error))
            problems.append(error)
        if len(runs) >= 2:
            try:
                self.confusion.draw(comparison.confusion_difference(0, 1))
            except RunError as error:
                self.confusion.clear(str(error))
        else:
            self.confusion.clear("Tick a second run: the difference of two confusion matrices appears here.")
        self._draw_predictions(comparison)
        table = comparison.config()
        self.config.value = ("<b>What differs in their settings</b>" + table.to_html(classes="segnb-runs-table")
                             if len(table) else "<i>The ticked runs have the same settings.</i>")
        return comparison

    def _draw_predictions(self, comparison) -> None:
        from segnb.runs import RunError
        from segnb.viz import contrast_palette, prediction_grid

        try:
            classes = comparison._class_names()
            comparison._check_same_data()
            previews = [r.predictions() for r in comparison.runs]
        except RunError as error:
            self.predictions.value = b""
            self.predictions_caption.value = f"<i>{html.escape(str(error))}</i>"
            return
        if any(p["indices"] != previews[0]["indices"] for p in previews):
            self.predictions.value = b""
            self.predictions_caption.value = "<i>These runs kept different validation images (other data).</i>"
            return
        first, n = previews[0], min(3, len(previews[0]["indices"]))
        palette = (self.state.palette() if self.state.data is not None and self.state.data.num_classes == len(classes)
                   else contrast_palette(len(classes)))
        ignore = comparison.runs[0].config.get("data", {}).get("ignore_index", 255)
        preds = {name: p["preds"][:n] for name, p in zip(comparison.names, previews, strict=True)}
        picture = prediction_grid(first["images"][:n], first["truths"][:n], preds, palette, ignore_index=ignore)
        self.predictions.value = png(picture)
        columns = ["image", "truth", *comparison.names, *(["runs disagree"] if len(preds) >= 2 else [])]
        tile = (picture.shape[1] - 4 * (len(columns) - 1)) // len(columns)
        self.predictions_caption.value = (
            "<b>The same validation images, predicted by each run</b>: red hatching marks a run's wrong pixels, "
            "yellow where the runs disagree." + strip_labels(columns, tile))

    # -- opening and saving ----------------------------------------------------------------------
    @guarded
    def open_run(self, path):
        """Load the run's model (and its dataset, when the Studio has another) for the other tabs."""
        from segnb.train import History

        run = self.runs.get(str(path))
        if run is None:
            from segnb.runs import Run

            run = Run(path)
        model = run.model()
        data_config = run.config.get("data", {})
        data = self.state.data
        if data is None or list(data.class_names) != run.class_names:
            from segnb.data import load_dataset

            source = data_config.get("source")
            if not source:
                raise ValueError(f"{run.name} does not say which dataset it was trained on; load it in the Dataset tab.")
            data = load_dataset(source, **(data_config.get("options") or {}))
            self.state.data_spec = {"source": source, "options": dict(data_config.get("options") or {})}
        spec = dict(model.spec)
        self.state.model = model  # first the model, then its dataset: nothing is rebuilt
        self.state.model_spec = {"arch": spec["arch"], "encoder": spec["encoder"], "pretrained": False,
                                 "upsample": spec.get("upsample")}
        if data is not self.state.data:
            self.state.data = data
        self.state.history = History(list(run.history), run.info.get("steps", 0), run.info.get("stopped", ""),
                                     run.info.get("limit", ""))
        if self.on_open is not None:
            self.on_open(run)
        return run

    @guarded
    def save_set(self, path):
        """The ticked runs as a run set (``segnb.runs.save_run_set``), for a lesson to open again."""
        from segnb.runs import save_run_set

        if not self.selected:
            raise ValueError("Tick the runs to keep first.")
        saved = save_run_set(path, [self.runs[p] for p in self.selected])
        self.summary.value += f'<div class="segnb-saved">&#10003; Saved {len(self.selected)} runs to {html.escape(str(saved))}</div>'
        return saved

    @guarded
    def load_set(self, path):
        from segnb.runs import load_run_set

        runs = load_run_set(path)
        folders = {str(r.path.resolve().parent) for r in runs}
        if len(folders) == 1 and str(Path(self.folder.value).resolve()) not in folders:
            self.folder.value = folders.pop()  # refreshes
        self.select([str(r.path) if str(r.path) in self.runs else r.name for r in runs])
        return runs

    def close(self):
        self._stop.set()
        super().close()
