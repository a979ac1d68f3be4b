"""DatasetPicker, ModelBuilder and TrainPanel: stock ipywidgets over core functions."""

from __future__ import annotations

import html
import threading

import ipywidgets as W
import numpy as np

from segnb.callbacks import Callback, ProgressCallback
from segnb.data import KNOWN_HUB_DATASETS, load_dataset
from segnb.losses import LOSSES
from segnb.models import build_model, describe_model, list_architectures, list_encoders
from segnb.models.build import check_combination, resolve_arch, resolve_encoder
from segnb.models.registry import get_architecture
from segnb.models.upsample import UPSAMPLE_KINDS
from segnb.progress import ProgressState, format_duration
from segnb.train import fit, predict
from segnb.ui.common import (
    ErrorBox,
    PlotView,
    SharedState,
    guarded,
    image_widget,
    legend_html,
    png,
    row_of,
)
from segnb.ui.progress import ThrottledRenderer
from segnb.viz import class_curves_figure, colorize, curves_figure, frequency_figure, grid, overlay

__all__ = ["DatasetPicker", "ModelBuilder", "TrainPanel"]


class DatasetPicker(W.VBox):
    """Choose the built-in dataset, a hub id or a local folder; preview samples and class frequencies."""

    def __init__(self, state: SharedState | None = None, preview: int = 6):
        self.state = state or SharedState()
        self.preview_count = preview
        self.errors = ErrorBox()
        self.kind = W.ToggleButtons(options=["built-in", "hub", "folder"], value="built-in", description="source")
        self.hub_id = W.Combobox(options=list(KNOWN_HUB_DATASETS), placeholder="owner/name", description="hub id",
                                 ensure_option=False)
        self.folder = W.Text(placeholder="/path/to/folder", description="folder")
        self.image_column = W.Text(placeholder="auto", description="image col")
        self.mask_column = W.Text(placeholder="auto", description="mask col")
        self.reduce_labels = W.Checkbox(False, description="reduce_labels (0 = void)")
        self.size = W.IntSlider(400, min=20, max=2000, step=20, description="images")
        self.load_button = W.Button(description="Load", button_style="primary", icon="database")
        self.load_button.add_class("segnb-load")
        self.size.add_class("segnb-size")
        self.summary = W.HTML()
        self.legend = W.HTML()
        self.preview = image_widget(css_class="segnb-preview")
        self.frequencies = PlotView("pixel share per class", height=260, width=640, css_class="segnb-frequencies")
        self.columns = W.HBox([self.image_column, self.mask_column, self.reduce_labels])
        self.load_button.on_click(lambda _: self.load())
        self.kind.observe(lambda _: self._show_fields(), names=["value"])
        self._show_fields()
        super().__init__([self.kind, self.size, self.hub_id, self.folder, self.columns, self.load_button,
                          self.errors, self.summary, self.legend, self.preview, self.frequencies])
        self.add_class("segnb-dataset-picker")

    def _show_fields(self):
        kind = self.kind.value
        self.size.layout.display = "" if kind == "built-in" else "none"
        self.hub_id.layout.display = "" if kind == "hub" else "none"
        self.folder.layout.display = "" if kind == "folder" else "none"
        self.columns.layout.display = "" if kind == "hub" else "none"

    def spec(self) -> dict:
        """What :meth:`load` loads, as JSON-ready data (the Studio saves it with the lesson)."""
        if self.kind.value == "built-in":
            return {"source": "shapes", "options": {"n": self.size.value, "seed": self.state.seed}}
        if self.kind.value == "hub":
            options = {k: v for k, v in (("image_column", self.image_column.value.strip()),
                                         ("mask_column", self.mask_column.value.strip())) if v}
            if self.reduce_labels.value:
                options["reduce_labels"] = True
            return {"source": self.hub_id.value.strip(), "options": options}
        return {"source": self.folder.value.strip(), "options": {}}

    @guarded
    def load(self, spec: dict | None = None):
        spec = spec or self.spec()
        if not spec["source"]:
            raise ValueError("Type a hub id (owner/name) or a folder path first.")
        self.summary.value = f"loading {html.escape(spec['source'])} ..."
        data = load_dataset(spec["source"], **spec.get("options", {}))
        self.state.data_spec = spec
        self.state.data = data
        self._render(data)
        return data

    def _render(self, data) -> None:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in data.splits.items())
        self.summary.value = (f"<b>{html.escape(data.source)}</b>: {sizes}; {data.num_classes} classes "
                              f"(void = {data.ignore_index})")
        self.legend.value = legend_html(data.class_names, data.palette)
        split = data[data.train_split]
        tiles = []
        for i in range(min(self.preview_count, len(split))):
            image, mask = split[i]
            if image.shape[:2] != split[0][0].shape[:2]:
                continue
            tiles.append(overlay(image, mask, data.palette, alpha=0.45, ignore_index=data.ignore_index))
        self.preview.value = png(grid(tiles, columns=3)) if tiles else b""
        self.frequencies.draw(frequency_figure(data.class_names, data.frequencies().tolist(), data.palette,
                                               title="pixel share per class"))


class ModelBuilder(W.VBox):
    """Architecture, compatible encoders, pretrained weights, upsampling operator; a live description."""

    def __init__(self, state: SharedState | None = None):
        self.state = state or SharedState()
        self.errors = ErrorBox()
        semantic = [*list_architectures("smp"), *list_architectures("teaching")]  # Mask R-CNN: the Instances tab
        self.arch = W.Dropdown(options=semantic, value="unet-classic", description="arch")
        self.filter = W.Text(value="*", description="filter", placeholder="resnet*")
        self.encoder = W.Combobox(value="vgg-tiny", description="encoder", ensure_option=False)
        self.pretrained = W.Dropdown(options=[("no (random init)", False), ("auto (fall back to random)", "auto"),
                                              ("yes (hub weights)", True)], value=False, description="pretrained")
        self.upsample = W.Dropdown(options=["default", *UPSAMPLE_KINDS], value="default", description="upsample")
        self.build_button = W.Button(description="Build", button_style="primary", icon="cubes")
        self.build_button.add_class("segnb-build")
        self.arch.add_class("segnb-arch")
        self.encoder.add_class("segnb-encoder")
        self.check = W.HTML()
        self.description = W.HTML()
        for widget in (self.arch, self.encoder, self.upsample):
            widget.observe(lambda _: self.explain(), names=["value"])
        self.arch.observe(lambda _: self.refresh_encoders(), names=["value"])
        self.filter.observe(lambda _: self.refresh_encoders(), names=["value"])
        self.build_button.on_click(lambda _: self.build())
        self.refresh_encoders()
        self.explain()
        super().__init__([self.arch, W.HBox([self.filter, self.encoder]), self.pretrained, self.upsample,
                          self.build_button, self.check, self.errors, self.description])
        self.add_class("segnb-model-builder")

    @guarded
    def refresh_encoders(self, limit: int = 300):
        names = list_encoders(self.arch.value, self.filter.value or "*")
        self.encoder.options = names[:limit]
        self.upsample.disabled = get_architecture(self.arch.value).upsample is None

    def spec(self) -> dict:
        upsample = None if self.upsample.value == "default" or self.upsample.disabled else self.upsample.value
        return {"arch": self.arch.value, "encoder": self.encoder.value.strip(), "pretrained": self.pretrained.value,
                "upsample": upsample}

    def explain(self) -> bool:
        """Say at once whether the combination can work (no model is built)."""
        spec = self.spec()
        try:
            check_combination(resolve_arch(spec["arch"]), resolve_encoder(spec["encoder"]), spec["upsample"])
        except Exception as error:
            self.check.value = f'<span class="segnb-incompatible" style="color:#d32f2f">&#10007; {html.escape(str(error))}</span>'
            return False
        self.check.value = '<span class="segnb-compatible" style="color:#2e7d32">&#10003; this combination works</span>'
        return True

    @guarded
    def build(self, spec: dict | None = None):
        spec = dict(spec or self.spec())
        data = self.state.data
        class_names = data.class_names if data is not None else None
        model = build_model(spec["arch"], spec["encoder"], num_classes=None if class_names else 2,
                            class_names=class_names, pretrained=spec.get("pretrained", False),
                            upsample=spec.get("upsample"))
        self.state.model_spec = spec
        self.state.model = model
        self.description.value = self.describe_html(model)
        return model

    @staticmethod
    def describe_html(model) -> str:
        info = describe_model(model)
        rows = "".join(f"<tr><td>{s['stage']}</td><td>{s['channels']}</td><td>{s['stride']}</td></tr>"
                       for s in info["stages"])
        return (f"<b>{info['arch']}</b> on <b>{info['encoder']}</b> ({info['family']}), "
                f"{info['parameters']:,} parameters ({info['encoder_parameters']:,} in the encoder), "
                f"output stride {info['output_stride']}, inputs padded to multiples of {info['input_multiple']}"
                f"<table class='segnb-stages'><tr><th>stage</th><th>channels</th><th>stride</th></tr>{rows}</table>")


class _PanelCallback(Callback):
    """Moves training news to the panel's widgets from the training thread, throttled."""

    order = 55

    def __init__(self, panel: TrainPanel):
        self.panel = panel

    def on_epoch_end(self, trainer):
        self.panel._epoch_done(trainer)

    def on_stop(self, trainer, reason):
        self.panel._status_line(f"stopped: {reason}")

    def on_fit_end(self, trainer):
        self.panel._finished(trainer)


class _PanelRenderer(ThrottledRenderer):
    """Writes progress into the panel (bar, images/s, ETA), at most every ``interval`` seconds."""

    def __init__(self, panel: TrainPanel, interval: float = 0.5):
        super().__init__(interval)
        self.panel = panel

    def draw(self, state: ProgressState) -> None:
        self.panel._progress(state)


class TrainPanel(W.VBox):
    """Hyperparameters, Start and Stop, live curves, progress and a sample prediction each epoch.

    Training runs in a background thread (``fit(background=True)``), so the notebook and
    the other widgets stay usable; Stop ends it after the current step.
    """

    def __init__(self, state: SharedState | None = None, callbacks=()):
        self.state = state or SharedState()
        self.extra_callbacks = list(callbacks)  # yours, e.g. a CSVLogger, next to the panel's own
        self.errors = ErrorBox()
        self.handle = None
        self.epochs = W.BoundedIntText(3, min=1, max=1000, description="epochs")
        self.batch_size = W.BoundedIntText(16, min=1, max=1024, description="batch size")
        self.lr = W.FloatLogSlider(value=1e-2, base=10, min=-5, max=0, step=0.25, description="lr")
        self.loss = W.Dropdown(options=list(LOSSES), value="weighted_ce", description="loss")
        self.max_minutes = W.BoundedFloatText(5.0, min=0.05, max=10_000, description="max min")
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.start_button.add_class("segnb-start")
        self.epochs.add_class("segnb-epochs")
        self.stop_button.add_class("segnb-stop")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="steps")
        self.progress.add_class("segnb-progress")
        self.status = W.HTML("idle")
        self.status.add_class("segnb-train-status")
        self.curves = PlotView("loss and mIoU", css_class="segnb-curves")
        self.class_curves = PlotView("per-class IoU", css_class="segnb-class-curves")
        self.sample = image_widget(css_class="segnb-sample")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self._lock = threading.Lock()
        super().__init__([
            W.HBox([self.epochs, self.batch_size]), W.HBox([self.lr, self.loss, self.max_minutes]),
            W.HBox([self.start_button, self.stop_button]), self.progress, self.status, self.errors,
            row_of(self.curves, self.class_curves), self.sample,
        ])
        self.add_class("segnb-train-panel")

    @property
    def history(self):
        return self.handle.history if self.handle is not None else None

    @property
    def running(self) -> bool:
        return self.handle is not None and not self.handle.done

    @guarded
    def start(self):
        if self.running:
            raise RuntimeError("Training is already running; press Stop first.")
        data, model = self.state.data, self.state.model
        if data is None or model is None:
            raise ValueError("Load a dataset and build a model first (the Dataset and Model tabs).")
        if model.num_classes != data.num_classes:
            raise ValueError(f"The model predicts {model.num_classes} classes but the dataset has "
                             f"{data.num_classes}: build the model again after loading the dataset.")
        self._draw_curves([])
        self.sample_pair = data[data.eval_split][0]
        self.progress.value, self.progress.max = 0, 1
        self.start_button.disabled, self.stop_button.disabled = True, False
        self._status_line("starting ...")
        try:
            self.handle = fit(model, data, epochs=self.epochs.value, batch_size=self.batch_size.value,
                              lr=self.lr.value, loss=self.loss.value, max_minutes=self.max_minutes.value,
                              progress=ProgressCallback(_PanelRenderer(self)),
                              callbacks=[_PanelCallback(self), *self.extra_callbacks],
                              background=True, seed=self.state.seed)
        except Exception:  # e.g. the model trains in another panel: say so, and Start works again
            self.start_button.disabled, self.stop_button.disabled = False, True
            self._status_line("not started")
            raise
        return self.handle

    def stop(self):
        """End training after the current step (returns at once; the panel says when it stopped)."""
        if self.running:
            self._status_line("stopping after the current step ...")
            self.handle.stop(wait=False)

    # -- called from the training thread ------------------------------------------------------
    def _status_line(self, text: str) -> None:
        self.status.value = html.escape(text)

    def _progress(self, state: ProgressState) -> None:
        with self._lock:
            self.progress.max = max(1, state.total)
            self.progress.value = min(state.done, self.progress.max)
            loss = "" if state.loss is None else f", loss {state.loss:.4f}"
            self._status_line(f"epoch {state.epoch}/{state.epochs}, step {state.done}/{state.total}, "
                              f"{state.images_per_s:.1f} images/s, ETA {format_duration(state.eta)}{loss} "
                              f"on {state.device} ({state.precision})")

    def _epoch_done(self, trainer) -> None:
        with self._lock:
            self._draw_curves(trainer.history.epochs)
        image, mask = self.sample_pair
        pred = predict(trainer.unwrapped, image, device=trainer.device).masks[0].numpy()  # gives the mode back
        palette = self.state.data.palette
        self.sample.value = png(np.concatenate([overlay(image, mask, palette, 0.6), overlay(image, pred, palette, 0.6),
                                                colorize(pred, palette)], axis=1))

    def _draw_curves(self, epochs: list[dict]) -> None:
        data = self.state.data
        self.curves.draw(curves_figure(epochs, title="loss and mIoU"))
        self.class_curves.draw(class_curves_figure(epochs, data.class_names, data.palette, title="per-class IoU"))

    def _finished(self, trainer) -> None:
        self.start_button.disabled, self.stop_button.disabled = False, True
        self.state.history = trainer.history
        last = trainer.history.last("miou")
        score = "" if last is None else f", validation mIoU {last:.3f}"
        stopped = trainer.history.stopped
        if stopped.startswith("failed"):  # never "completed" after an error
            self._status_line(f"{stopped} (at step {trainer.history.steps}; the model keeps that step's weights)")
            return
        self._status_line(f"{stopped} after {trainer.history.steps} steps{score}")
