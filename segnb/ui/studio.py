"""Studio: every panel in one tabbed app on shared state. ``segnb.ui.Studio()`` in one cell.

The chosen dataset feeds the model builder, the trained model feeds the
inspectors. A presentation toggle enlarges fonts and pictures for a projector;
the lesson (dataset, model spec, seed, selected tab) saves to and restores
from a JSON file.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import ipywidgets as W
import numpy as np

from segnb.ui.common import ErrorBox, PlotView, SharedState, guarded, user_message
from segnb.widgets import asset

# The panels (and PyTorch behind most of them) are imported when their tab is first opened: the
# page shows the Dataset tab without PyTorch, so a class opening it at once waits less
# (docs/CLASSROOM.md; tests/test_ui.py checks that the Studio at page load does not import torch).

__all__ = ["Studio", "TABS"]

TABS = ("Dataset", "Model", "Train", "Inspect", "Upsampling", "IoU", "Classical", "Instances", "Interactive")
LESSON_FORMAT = "segnb-lesson/1"


STEPS = (("1 Pick", "Dataset", "pick a dataset and press Load"),
         ("2 Build", "Model", "choose an architecture and an encoder, then press Build"),
         ("3 Train", "Train", "press Start; watch the loss fall and the scores rise"),
         ("4 Look", "Inspect", "press Show: hover the picture, raise the temperature, open the IoU tab"))


def _panel(module: str, name: str) -> type:
    """A panel class of ``segnb.ui.<module>``, imported when its tab is first opened."""
    import importlib

    return getattr(importlib.import_module(f"segnb.ui.{module}"), name)


def _walk(widget):
    """The widget and every widget inside it (Box children), depth first."""
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _walk(child)


class Studio(W.VBox):
    """One tabbed app: Dataset, Model, Train, Inspect, Upsampling, IoU, Classical.

    All panels share one :class:`SharedState`; a panel added to ``self.panels`` (one line:
    a tab title and a widget built on ``self.state``) joins the tabs, the presentation mode
    and the staleness marks by observing ``state.key``.
    """

    def __init__(self, presentation: bool = False, seed: int = 0):
        self.state = SharedState(seed=seed)
        self.errors = ErrorBox()
        # One line per tab: a title and the panel (or a function that makes it when the tab is first
        # opened: a page that is never used costs no memory, and a class of students loads faster).
        self.panels = [
            ("Dataset", lambda: _panel("dataset_panel", "DatasetPicker")(self.state)),
            ("Model", lambda: _panel("model_panel", "ModelBuilder")(self.state)),
            ("Train", lambda: _panel("train_panel", "TrainPanel")(self.state)),
            ("Inspect", lambda: _panel("inspect_panel", "InspectPanel")(self.state)),
            ("Upsampling", lambda: _panel("labs", "UpsamplingLab")(self.state)),
            ("IoU", lambda: _panel("labs", "IoUReport")(self.state, viewer=self.inspect.softmask)),
            ("Classical", lambda: _panel("labs", "ClassicalLab")(self.state)),
            ("Instances", lambda: _panel("instances", "InstancePanel")(self.state)),
            ("Interactive", lambda: _panel("interactive", "InteractivePanel")(self.state)),
        ]
        self._built: dict[str, W.Widget] = {}
        self._slots = [W.VBox([W.HTML(f"<i>opening {name} ...</i>")]) for name, _ in self.panels]
        self.tabs = W.Tab(children=self._slots)
        self.tabs.titles = self.tab_names
        self.tabs.add_class("segnb-studio-tabs")
        self.tabs.observe(lambda change: self.panel(self.tab_names[change["new"]]), names=["selected_index"])
        self.presentation = W.ToggleButton(presentation, description="presentation", icon="desktop",
                                           tooltip="large text and pictures for a projector")
        self.presentation.add_class("segnb-presentation-toggle")
        self.lesson_path = W.Text("lesson.json", description="lesson")
        self.lesson_path.add_class("segnb-lesson-path")
        self.save_button = W.Button(description="Save", icon="save")
        self.load_button = W.Button(description="Restore", icon="folder-open")
        self.save_button.add_class("segnb-save-lesson")
        self.load_button.add_class("segnb-restore-lesson")
        self.lesson_status = W.HTML()
        self.lesson_status.add_class("segnb-lesson-status")
        self.save_button.on_click(lambda _: self.save_lesson(self.lesson_path.value))
        self.load_button.on_click(lambda _: self.load_lesson(self.lesson_path.value))
        self.presentation.observe(lambda change: self._present(change["new"]), names=["value"])
        self.state.observe(self._on_model, names=["model"])
        self.state.observe(self._on_data, names=["data"])
        self.state.observe(lambda _: self._show_steps(), names=["key", "history"])
        self.step_buttons = []
        for label, tab, hint in STEPS:
            button = W.Button(description=label, tooltip=hint, layout=W.Layout(width="auto"))
            button.add_class("segnb-step")
            button.on_click(lambda _, t=tab: self.show_tab(t))
            self.step_buttons.append(button)
        self.next_hint = W.HTML()
        self.next_hint.add_class("segnb-next-hint")
        self.style = W.HTML(f"<style>{asset('segnb.css')}</style>", layout=W.Layout(display="none"))
        header = W.HBox([W.HTML("<b>segnb studio</b>"), self.presentation, self.lesson_path, self.save_button,
                         self.load_button, self.lesson_status], layout=W.Layout(flex_flow="row wrap"))
        steps = W.HBox([*self.step_buttons, self.next_hint], layout=W.Layout(flex_flow="row wrap"))
        steps.add_class("segnb-steps")
        super().__init__([self.style, header, steps, self.errors, self.tabs])
        self.add_class("segnb-studio")
        self._present(presentation)
        self.panel(self.tab_names[self.tabs.selected_index or 0])
        self._show_steps()

    @property
    def tab_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.panels)

    def panel(self, name: str) -> W.Widget:
        """The panel of one tab, made the first time it is asked for."""
        if name not in self._built:
            index = self.tab_names.index(name)
            made = self.panels[index][1]
            widget = made if isinstance(made, W.Widget) else made()
            self._built[name] = widget
            self._slots[index].children = [widget]
            if self.presentation.value:
                self._present(True)
        return self._built[name]

    dataset = property(lambda self: self.panel("Dataset"))
    builder = property(lambda self: self.panel("Model"))
    train = property(lambda self: self.panel("Train"))
    inspect = property(lambda self: self.panel("Inspect"))
    upsampling = property(lambda self: self.panel("Upsampling"))
    iou = property(lambda self: self.panel("IoU"))
    classical = property(lambda self: self.panel("Classical"))
    instances = property(lambda self: self.panel("Instances"))
    interactive = property(lambda self: self.panel("Interactive"))

    def _built_panel(self, name: str) -> W.Widget | None:
        return self._built.get(name)

    def show_tab(self, name: str) -> None:
        self.tabs.selected_index = self.tab_names.index(name)

    def _show_steps(self) -> None:
        state = self.state
        inspect = self._built_panel("Inspect")
        done = [state.data is not None, state.model is not None, state.history is not None,
                inspect is not None and inspect.stamp.key is not None and not inspect.stamp.stale]
        for button, finished in zip(self.step_buttons, done, strict=True):
            button.icon = "check" if finished else ""
            button.button_style = "success" if finished else ""
        todo = next((i for i, d in enumerate(done) if not d), None)
        self.next_hint.value = ("All four steps done: try another encoder, or the Upsampling and Classical tabs."
                                if todo is None else f"<b>Next:</b> {html.escape(STEPS[todo][2])} "
                                                     f"(the {STEPS[todo][1]} tab).")

    def _on_data(self, change) -> None:
        # A new dataset with other classes needs a new model: built at once, and said so.
        data, model = change["new"], self.state.model
        if data is not None and model is not None and model.num_classes != data.num_classes:
            if self.builder.build() is not None:
                self.builder.rebuilt_note(f"Rebuilt (untrained) for the new dataset's {data.num_classes} classes: "
                                          "the Train, Inspect, IoU and Classical results of the old model are "
                                          "marked as such.")

    def _on_model(self, change) -> None:
        if self._built_panel("IoU") is not None:
            self.iou.report = None

    def _present(self, on: bool) -> None:
        """Presentation mode: text of at least 22 px, larger controls, and every tab's main view
        no larger than a 1280x720 projector (pictures and charts are capped, not just enlarged)."""
        inspect = self._built_panel("Inspect")
        if inspect is not None:
            for widget in (inspect.softmask, inspect.attention):
                widget.display_scale = 2.0 if on else 1.0
            inspect.softmask.max_height = 480 if on else 0
        for widget in _walk(self):
            if isinstance(widget, PlotView):
                widget.present(on)
        if on:
            self.add_class("segnb-presentation")
        else:
            self.remove_class("segnb-presentation")

    # -- lessons ---------------------------------------------------------------------------------
    def lesson(self) -> dict:
        """The lesson as plain data: dataset, model spec, seed, selected tab, views and results."""
        history = self.state.history
        iou, inspect, train = (self._built_panel(n) for n in ("IoU", "Inspect", "Train"))
        report = iou.report if iou is not None else None
        softmask = inspect.softmask if inspect is not None else None
        return {
            "format": LESSON_FORMAT,
            "dataset": self.state.data_spec or self.dataset.spec(),
            "class_names": self.state.names(),
            "palette_source": self.state.palette_source,
            "model": self.state.model_spec or self.builder.spec(),
            "seed": self.state.seed,
            "tab": self.tab_names[self.tabs.selected_index or 0],
            "image_index": self.state.image_index,
            "presentation": self.presentation.value,
            "train": {} if train is None else {
                "epochs": train.epochs.value, "batch_size": train.batch_size.value, "lr": train.lr.value,
                "loss": train.loss.value, "image_size": train.image_size.value},
            "results": {
                "key": dict(self.state.key),
                "run": self.state.run,
                "history": history.as_dict() if history is not None else None,
                "steps": [list(p) for p in train.steps] if history is not None and train is not None else [],
                "iou": None if report is None else {"miou": report.miou, "iou": list(report.scores.iou)},
                "inspected": inspect is not None and inspect.stamp.key is not None and not inspect.stamp.stale,
                "view": {} if softmask is None else {"temperature": softmask.temperature, "view": softmask.view},
            },
        }

    @guarded
    def save_lesson(self, path) -> Path:
        """The lesson as JSON, and the model's weights beside it (``<name>.safetensors``) once trained."""
        from safetensors.torch import save_file

        from segnb.models.io import atomic_write

        path = Path(path)
        if self.state.data is None:
            raise ValueError("Load a dataset first: a lesson starts from one.")
        lesson = self.lesson()
        weights = path.with_suffix(".safetensors")
        model = self.state.model
        if model is not None and self.state.history is not None:
            if self._built_panel("Train") is not None and self.train.running:
                raise ValueError("Training is running: press Stop (or wait for it to end), then Save.")
            state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
            atomic_write(weights, lambda p: save_file(state, str(p)))
            lesson["weights"] = weights.name
        text = json.dumps(lesson, indent=2, default=_plain)
        atomic_write(path, lambda p: p.write_text(text))
        saved = f"{path.name}" + (f" and {weights.name} (trained weights, {weights.stat().st_size / 1e6:.1f} MB)"
                                  if "weights" in lesson else " (no trained weights yet: only the set-up)")
        self.lesson_status.value = (f'<span class="segnb-saved">&#10003; Saved {html.escape(saved)} at '
                                    f'{time.strftime("%H:%M:%S")}</span>')
        return path

    @guarded
    def load_lesson(self, path):
        path = Path(path)
        try:
            lesson = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read this lesson file ({error}).") from None
        if lesson.get("format") != LESSON_FORMAT:
            raise ValueError(f"{path} is not a segnb lesson (format {lesson.get('format')!r}).")
        weights = lesson.get("weights")
        if weights and not (path.parent / weights).is_file():
            raise ValueError(f"{path} needs its trained weights, {weights}, in the same folder; it is missing.")
        self.lesson_status.value = f"restoring {html.escape(path.name)} ..."
        self.state.seed = int(lesson.get("seed", 0))
        dataset = lesson["dataset"]
        if self.dataset.load(dataset) is None:
            raise ValueError(f"The lesson's dataset could not be loaded: {self.dataset.errors.last_error}")
        names = lesson.get("class_names")
        if names and names != list(self.state.data.class_names):
            self.dataset.rename(names)
        self.dataset.colours.value = lesson.get("palette_source", "contrast")
        model = lesson["model"]
        self.builder.arch.value = model["arch"]
        self.builder.encoder.value = model["encoder"]
        self.builder.upsample.value = model.get("upsample") or "default"
        if self.builder.build(model) is None:
            raise ValueError(f"The lesson's model could not be built: {self.builder.errors.last_error}")
        for key, widget in (("epochs", self.train.epochs), ("batch_size", self.train.batch_size),
                            ("lr", self.train.lr), ("loss", self.train.loss), ("image_size", self.train.image_size)):
            if key in lesson.get("train", {}):
                value = lesson["train"][key]
                widget.value = (value or 0) if key == "image_size" else value
        results = lesson.get("results") or {}
        if weights:
            self._restore_results(path.parent / weights, results)
        self.state.image_index = int(lesson.get("image_index", 0))
        self.inspect.index.value = self.state.image_index
        view = results.get("view") or {}
        if results.get("inspected") and self.state.history is not None:
            self.inspect.show(self.state.image_index)
            for name in ("temperature", "view"):
                if name in view:
                    setattr(self.inspect.softmask, name, view[name])
        self.presentation.value = bool(lesson.get("presentation", False))
        tab = lesson.get("tab", "Dataset")
        self.show_tab(tab if tab in self.tab_names else "Dataset")
        self.lesson_status.value = f'<span class="segnb-saved">&#10003; Restored {html.escape(path.name)}</span>'
        return lesson

    def _restore_results(self, weights: Path, results: dict) -> None:
        """The trained weights, the training curves and status, the IoU report: what the class saw."""
        from safetensors.torch import load_file

        from segnb.train import History

        model = self.state.model
        try:
            model.load_state_dict(load_file(str(weights)), strict=True)
        except Exception as error:
            raise ValueError(f"{weights.name} does not fit the lesson's model ({user_message(error)}).") from None
        history = History.from_dict(results["history"]) if results.get("history") else None
        self.state.run = int(results.get("run", 1)) or 1
        self.state.history = history
        self.train.show_history(history, [tuple(p) for p in results.get("steps", [])])
        if results.get("iou") is not None:
            self.iou.evaluate()


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON data")
