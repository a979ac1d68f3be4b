"""Studio: every panel in one tabbed app on shared state. ``segnb.ui.Studio()`` in one cell.

The chosen dataset feeds the model builder, the trained model feeds the
inspectors. A presentation toggle enlarges fonts and pictures for a projector;
the lesson (dataset, model spec, seed, selected tab) saves to and restores
from a JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path

import ipywidgets as W
import numpy as np

from segnb.inspect.attention import find_vit
from segnb.train import predict
from segnb.ui.attention_viewer import AttentionViewer
from segnb.ui.common import ErrorBox, SharedState, guarded
from segnb.ui.interactive import InteractivePanel
from segnb.ui.labs import ClassicalLab, IoUReport, UpsamplingLab
from segnb.ui.panels import DatasetPicker, ModelBuilder, TrainPanel
from segnb.ui.softmask_viewer import SoftMaskViewer

__all__ = ["Studio", "InspectPanel", "TABS"]

TABS = ("Dataset", "Model", "Train", "Inspect", "Upsampling", "IoU", "Classical", "Interactive")
LESSON_FORMAT = "segnb-lesson/1"


class InspectPanel(W.VBox):
    """The SoftMaskViewer on a chosen validation image, and the AttentionViewer for ViT models."""

    def __init__(self, state: SharedState):
        self.state = state
        self.errors = ErrorBox()
        self.index = W.BoundedIntText(0, min=0, max=100_000, description="image #")
        self.show_button = W.Button(description="Show", button_style="primary", icon="eye")
        self.show_button.add_class("segnb-inspect-show")
        self.softmask = SoftMaskViewer()
        self.attention = AttentionViewer()
        self.attention_note = W.HTML()
        self.show_button.on_click(lambda _: self.show())
        super().__init__([W.HBox([self.index, self.show_button]), self.errors, self.softmask,
                          self.attention_note, self.attention])
        self.add_class("segnb-inspect-panel")

    @guarded
    def show(self, index: int | None = None):
        data, model = self.state.data, self.state.model
        if data is None or model is None:
            raise ValueError("Load a dataset and build (and train) a model first.")
        split = data[data.eval_split]
        index = min(self.index.value if index is None else index, len(split) - 1)
        image, _ = split[index]
        self.softmask.set_prediction(image, predict(model, image).probs[0].numpy(), data.class_names, data.palette)
        try:
            find_vit(model)
        except ValueError:
            self.attention.layout.display = "none"
            self.attention_note.value = ("<i>Attention maps need a ViT backbone (setr-pup, setr-naive or dpt on "
                                         "vit_* / deit_*); this model is a CNN.</i>")
        else:
            self.attention.layout.display = ""
            self.attention_note.value = ""
            self.attention.show(model, image, input_size=None)
        self.state.image_index = index
        return index


class Studio(W.VBox):
    """One tabbed app: Dataset, Model, Train, Inspect, Upsampling, IoU, Classical."""

    def __init__(self, presentation: bool = False, seed: int = 0):
        self.state = SharedState(seed=seed)
        self.errors = ErrorBox()
        self.dataset = DatasetPicker(self.state)
        self.builder = ModelBuilder(self.state)
        self.train = TrainPanel(self.state)
        self.inspect = InspectPanel(self.state)
        self.upsampling = UpsamplingLab(self.state)
        self.iou = IoUReport(self.state, viewer=self.inspect.softmask)
        self.classical = ClassicalLab(self.state)
        self.interactive = InteractivePanel(self.state)
        self.tabs = W.Tab(children=[self.dataset, self.builder, self.train, self.inspect, self.upsampling,
                                    self.iou, self.classical, self.interactive])
        self.tabs.titles = TABS
        self.tabs.add_class("segnb-studio-tabs")
        self.presentation = W.ToggleButton(presentation, description="presentation", icon="desktop")
        self.presentation.add_class("segnb-presentation-toggle")
        self.lesson_path = W.Text("lesson.json", description="lesson")
        self.save_button = W.Button(description="Save", icon="save")
        self.load_button = W.Button(description="Restore", icon="folder-open")
        self.save_button.on_click(lambda _: self.save_lesson(self.lesson_path.value))
        self.load_button.on_click(lambda _: self.load_lesson(self.lesson_path.value))
        self.presentation.observe(lambda change: self._present(change["new"]), names=["value"])
        self.state.observe(self._on_model, names=["model"])
        self.state.observe(self._on_data, names=["data"])
        header = W.HBox([W.HTML("<b>segnb studio</b>"), self.presentation, self.lesson_path, self.save_button,
                         self.load_button])
        super().__init__([header, self.errors, self.tabs])
        self.add_class("segnb-studio")
        self._present(presentation)

    def _on_data(self, change) -> None:
        # A new dataset changes the classes: the model must be rebuilt for it.
        if change["new"] is not None and self.state.model is not None \
                and self.state.model.num_classes != change["new"].num_classes:
            self.builder.build()

    def _on_model(self, change) -> None:
        self.iou.report = None

    def _present(self, on: bool) -> None:
        scale = 1.6 if on else 1.0
        for widget in (self.inspect.softmask, self.inspect.attention):
            widget.display_scale = 2.0 * scale if on else 1.0
        if on:
            self.add_class("segnb-presentation")
        else:
            self.remove_class("segnb-presentation")
        self.layout.font_size = "150%" if on else ""

    def lesson(self) -> dict:
        """The lesson as plain data: dataset, model spec, seed, selected tab and views."""
        return {
            "format": LESSON_FORMAT,
            "dataset": self.state.data_spec or self.dataset.spec(),
            "model": self.state.model_spec or self.builder.spec(),
            "seed": self.state.seed,
            "tab": TABS[self.tabs.selected_index or 0],
            "image_index": self.state.image_index,
            "presentation": self.presentation.value,
            "train": {"epochs": self.train.epochs.value, "batch_size": self.train.batch_size.value,
                      "lr": self.train.lr.value, "loss": self.train.loss.value},
        }

    @guarded
    def save_lesson(self, path) -> Path:
        path = Path(path)
        text = json.dumps(self.lesson(), indent=2, default=_plain)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path

    @guarded
    def load_lesson(self, path):
        try:
            lesson = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: cannot read this lesson file ({error}).") from None
        if lesson.get("format") != LESSON_FORMAT:
            raise ValueError(f"{path} is not a segnb lesson (format {lesson.get('format')!r}).")
        self.state.seed = int(lesson.get("seed", 0))
        dataset = lesson["dataset"]
        if self.dataset.load(dataset) is None:
            raise ValueError(f"The lesson's dataset could not be loaded: {self.dataset.errors.last_error}")
        model = lesson["model"]
        self.builder.arch.value = model["arch"]
        self.builder.encoder.value = model["encoder"]
        self.builder.upsample.value = model.get("upsample") or "default"
        if self.builder.build(model) is None:
            raise ValueError(f"The lesson's model could not be built: {self.builder.errors.last_error}")
        for key, widget in (("epochs", self.train.epochs), ("batch_size", self.train.batch_size),
                            ("lr", self.train.lr), ("loss", self.train.loss)):
            if key in lesson.get("train", {}):
                widget.value = lesson["train"][key]
        self.state.image_index = int(lesson.get("image_index", 0))
        self.inspect.index.value = self.state.image_index
        self.presentation.value = bool(lesson.get("presentation", False))
        self.tabs.selected_index = TABS.index(lesson.get("tab", "Dataset"))
        return lesson


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON data")
