"""DatasetPicker, ModelBuilder and TrainPanel: stock ipywidgets over core functions."""

from __future__ import annotations

import html
import threading
import warnings

import ipywidgets as W

from segnb.callbacks import Callback, ProgressCallback
from segnb.data import KNOWN_HUB_DATASETS, load_dataset
from segnb.progress import ProgressState, format_duration
from segnb.ui.common import (
    ErrorBox,
    PlotView,
    ResultStamp,
    SharedState,
    guarded,
    image_widget,
    legend_html,
    png,
    row_of,
    show_strip,
    user_error,
    user_message,
)
from segnb.ui.progress import ThrottledRenderer
from segnb.viz import class_curves_figure, curves_figure, frequency_figure, grid, outline, overlay

# Models, losses and training (PyTorch) are imported where the Model and Train panels use them: the
# Dataset panel, the Studio's first tab, works without PyTorch (docs/CLASSROOM.md).

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
        self.summary = W.HTML("Pick a source and press Load: a few samples and the share of each class appear.")
        self.summary.add_class("segnb-dataset-summary")
        self.notes = W.HTML()
        self.notes.add_class("segnb-dataset-notes")
        self.legend = W.HTML()
        self.colours = W.Dropdown(options=[("contrast (colour-blind safe)", "contrast"),
                                           ("the dataset's own", "dataset")], value=self.state.palette_source,
                                  description="overlay colours", style={"description_width": "initial"})
        self.colours.add_class("segnb-overlay-colours")
        self.outline = W.Checkbox(False, description="outlines only")
        self.outline.add_class("segnb-outline")
        self.names = W.Text(description="class names", placeholder="comma-separated, in class order",
                            style={"description_width": "initial"}, layout=W.Layout(width="60%"))
        self.names.add_class("segnb-class-names")
        self.rename_button = W.Button(description="Rename", icon="pencil")
        self.rename_button.add_class("segnb-rename")
        self.preview = image_widget(css_class="segnb-preview")
        self.frequencies = PlotView("pixel share per class", height=260, width=640, css_class="segnb-frequencies",
                                    empty="The share of pixels of each class appears here after Load.")
        self.columns = W.HBox([self.image_column, self.mask_column, self.reduce_labels])
        self.shown = W.VBox([self.summary, self.notes, W.HBox([self.names, self.rename_button]),
                             W.HBox([self.colours, self.outline]), self.legend, self.preview, self.frequencies])
        self.load_button.on_click(lambda _: self.load())
        self.rename_button.on_click(lambda _: self.rename())
        self.kind.observe(lambda _: self._show_fields(), names=["value"])
        self.colours.observe(self._on_colours, names=["value"])
        self.outline.observe(lambda _: self._redraw(), names=["value"])
        self._show_fields()
        super().__init__([self.kind, self.size, self.hub_id, self.folder, self.columns, self.load_button,
                          self.errors, self.shown])
        self.add_class("segnb-dataset-picker")
        self._show_loaded(False)

    def _show_loaded(self, loaded: bool) -> None:
        for widget in self.shown.children[2:4]:
            widget.layout.display = "" if loaded else "none"

    def _on_colours(self, change) -> None:
        self.state.palette_source = change["new"]
        self._redraw()

    def _redraw(self) -> None:
        if self.state.data is not None:
            self._render(self.state.data)

    @guarded
    def rename(self, names: list[str] | str | None = None) -> list[str]:
        """Give the classes the names you use (the Studio shows them everywhere); the data is unchanged."""
        data = self.state.data
        if data is None:
            raise ValueError("Load a dataset first, then rename its classes.")
        if names is None:
            names = self.names.value
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        names = [str(n).strip() for n in names]
        if len(names) != data.num_classes or not all(names):
            raise ValueError(f"Give {data.num_classes} names separated by commas, one per class in order "
                             f"({', '.join(data.class_names)}); got {len([n for n in names if n])}.")
        if len(set(names)) != len(names):
            raise ValueError("Two classes have the same name: give each class its own.")
        self.state.class_names = names
        self.names.value = ", ".join(names)
        self._render(data)
        return names

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
        # Whatever happens next, the old dataset's summary and pictures must not stay on screen.
        self.summary.value = f"loading {html.escape(spec['source'])} ..."
        self.notes.value = self.legend.value = ""
        self.preview.value = b""
        self.frequencies.clear()
        self._show_loaded(False)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                data = load_dataset(spec["source"], **spec.get("options", {}))
        except Exception as error:
            self.summary.value = f"Could not load {html.escape(spec['source'])} (the reason is below)."
            if self.state.data is not None:
                self.summary.value += (" The Studio still uses the previous dataset, "
                                       f"{html.escape(self.state.dataset_name())}.")
            raise user_error(error) from None
        self.state.data_spec = spec
        self.state.data = data
        self.warnings = [str(w.message) for w in caught]
        self.names.value = ", ".join(data.class_names)
        self._render(data)
        self._show_loaded(True)
        return data

    def _render(self, data) -> None:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in data.splits.items())
        names = self.state.names()
        self.summary.value = (f"<b>{html.escape(data.source)}</b>: {sizes}; {data.num_classes} classes "
                              f"(void = {data.ignore_index})")
        notes = [*getattr(self, "warnings", []), *getattr(data, "notes", [])]
        if tuple(data.class_names) in (("background", "foreground"),) or any("class_" in n for n in data.class_names):
            notes.append(f"The class names ({', '.join(data.class_names)}) were guessed: rename them below "
                         "(for membranes, the 'background' is the membrane).")
        self.notes.value = "".join(f'<div class="segnb-note">&#9432; {html.escape(n)}</div>' for n in notes)
        palette = self.state.palette()
        self.legend.value = legend_html(names, palette)
        split = data[data.train_split]
        tiles = []
        for i in range(min(self.preview_count, len(split))):
            image, mask = split[i]
            if image.shape[:2] != split[0][0].shape[:2]:
                continue
            if self.outline.value:
                tiles.append(outline(image, mask, palette, width=max(1, image.shape[0] // 64),
                                     ignore_index=data.ignore_index))
            else:
                tiles.append(overlay(image, mask, palette, alpha=0.6, ignore_index=data.ignore_index))
        self.preview.value = png(grid(tiles, columns=3)) if tiles else b""
        self.frequencies.draw(frequency_figure(names, data.frequencies().tolist(), palette,
                                               title="pixel share per class"))


# What people reach for first, smallest first within a family, with the encoder's parameter count in
# millions (timm backbone without its head). Measured with:
#   with torch.device("meta"): m = timm.create_model(name, pretrained=False, num_classes=0)
#   sum(p.numel() for p in m.parameters())
POPULAR_ENCODERS = {
    "vgg-tiny": 0.15, "vgg-small": 1.18, "resnet18": 11.18, "resnet34": 21.28, "resnet50": 23.51,
    "mobilenetv3_small_100": 1.52, "mobilenetv2_100": 2.22, "mobilenetv3_large_100": 4.2,
    "efficientnet_b0": 4.01, "efficientnet_b1": 6.51, "efficientnet_b2": 7.7, "efficientnet_b3": 10.7,
    "convnext_tiny": 27.82, "regnety_008": 5.49, "regnety_016": 10.31, "resnext50_32x4d": 22.98,
    "densenet121": 6.95, "resnet101": 42.5, "convnext_small": 49.45, "swin_tiny_patch4_window7_224": 27.52,
    "deit_tiny_patch16_224": 5.52, "vit_tiny_patch16_224": 5.52, "deit_small_patch16_224": 21.67,
    "vit_small_patch16_224": 21.67, "vit_base_patch16_224": 85.8, "vgg16_bn": 134.27,
    "test_resnet": 0.37, "test_vit": 0.31,
}


def encoder_choices(names: list[str]) -> list[str]:
    """Encoders in the order people use them (popular first, with parameter counts), then the rest A-Z."""
    available = set(names)
    first = [f"{n} ({m:g} M parameters)" for n, m in POPULAR_ENCODERS.items() if n in available]
    return first + sorted(n for n in names if n not in POPULAR_ENCODERS)


def encoder_name(choice: str) -> str:
    """The timm name in a choice of :func:`encoder_choices` (or typed by hand)."""
    return choice.split(" (", 1)[0].strip()


class ModelBuilder(W.VBox):
    """Architecture, compatible encoders, pretrained weights, upsampling operator; a live description."""

    def __init__(self, state: SharedState | None = None):
        from segnb.models import list_architectures
        from segnb.models.upsample import UPSAMPLE_KINDS

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
        from segnb.models import list_encoders
        from segnb.models.registry import get_architecture

        names = list_encoders(self.arch.value, self.filter.value or "*")
        self.encoder.options = encoder_choices(names)[:limit]
        self.upsample.disabled = get_architecture(self.arch.value).upsample is None

    def spec(self) -> dict:
        upsample = None if self.upsample.value == "default" or self.upsample.disabled else self.upsample.value
        return {"arch": self.arch.value, "encoder": encoder_name(self.encoder.value), "pretrained": self.pretrained.value,
                "upsample": upsample}

    def explain(self) -> bool:
        """Say at once whether the combination can work (no model is built)."""
        from segnb.models.build import check_combination, resolve_arch, resolve_encoder

        spec = self.spec()
        try:
            check_combination(resolve_arch(spec["arch"]), resolve_encoder(spec["encoder"]), spec["upsample"])
        except Exception as error:
            self.check.value = ('<span class="segnb-incompatible" style="color:#d32f2f">&#10007; '
                                f"{html.escape(user_message(error))}</span>")
            return False
        self.check.value = '<span class="segnb-compatible" style="color:#2e7d32">&#10003; this combination works</span>'
        return True

    @guarded
    def build(self, spec: dict | None = None):
        from segnb.models import build_model

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

    def rebuilt_note(self, text: str) -> None:
        """A line above the description saying why the model was rebuilt without a click."""
        self.description.value = f'<div class="segnb-stale-note">{html.escape(text)}</div>' + self.description.value

    @staticmethod
    def describe_html(model) -> str:
        from segnb.models import describe_model

        info = describe_model(model)
        rows = "".join(f"<tr><td>{s['stage']}</td><td>{s['channels']}</td><td>{s['stride']}</td></tr>"
                       for s in info["stages"])
        return (f"<b>{info['arch']}</b> on <b>{info['encoder']}</b> ({info['family']}), "
                f"{info['parameters']:,} parameters ({info['encoder_parameters']:,} in the encoder), "
                f"output stride {info['output_stride']}, inputs padded to multiples of {info['input_multiple']}"
                f"<table class='segnb-stages'><tr><th>stage</th><th>channels</th><th>stride</th></tr>{rows}</table>")


def _predicted_mask(model, image, device="auto"):
    """The model's argmax mask for one raw image, as numpy."""
    from segnb.train import predict

    return predict(model, image, device=device).masks[0].numpy()


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


IMAGE_SIZES = [("as stored", 0), ("64 px", 64), ("96 px", 96), ("128 px", 128), ("192 px", 192),
               ("256 px", 256), ("384 px", 384), ("512 px", 512)]
LIVE_SIZE = 128  # the default for images larger than this: steps of about a second on a laptop CPU


def live_image_size(data) -> int:
    """A sensible training size for live use: the images as stored (0) if small, else 128 px."""
    if data is None:
        return 0
    image, _ = data[data.train_split][0]
    return 0 if max(image.shape[:2]) <= LIVE_SIZE else LIVE_SIZE


class TrainPanel(W.VBox):
    """Hyperparameters, Start and Stop, live curves, progress and a sample prediction each epoch.

    Training runs in a background thread (``fit(background=True)``), so the notebook and
    the other widgets stay usable; Stop ends it after the current step. Losses and scores are
    drawn on separate panels (loss on a log scale by default), the training loss every few
    steps, smoothed; everything shown belongs to ``state.key`` and is marked when it changes.
    """

    def __init__(self, state: SharedState | None = None, callbacks=()):
        from segnb.losses import LOSSES

        self.state = state or SharedState()
        self.extra_callbacks = list(callbacks)  # yours, e.g. a CSVLogger, next to the panel's own
        self.errors = ErrorBox()
        self.handle = None
        self.steps: list[tuple[float, float]] = []  # (epoch as a fraction, training loss) while it trains
        self._epochs_planned = None
        self._last_curve_draw = 0.0
        self.epochs = W.BoundedIntText(3, min=1, max=1000, description="epochs")
        self.batch_size = W.BoundedIntText(16, min=1, max=1024, description="batch size")
        self.image_size = W.Dropdown(options=IMAGE_SIZES, value=0, description="image size")
        self.image_size.add_class("segnb-image-size")
        self.lr = W.FloatLogSlider(value=1e-2, base=10, min=-5, max=0, step=0.25, description="learning rate",
                                   style={"description_width": "initial"})
        self.loss = W.Dropdown(options=list(LOSSES), value="weighted_ce", description="loss")
        self.max_minutes = W.BoundedFloatText(5.0, min=0.05, max=10_000, description="max minutes",
                                              style={"description_width": "initial"})
        self.log_loss = W.Checkbox(True, description="loss on a log scale")
        self.log_loss.add_class("segnb-log-loss")
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.estimate_button = W.Button(description="Time one step", icon="clock-o")
        self.estimate_button.add_class("segnb-estimate")
        self.estimate_line = W.HTML()
        self.estimate_line.add_class("segnb-estimate-line")
        self.start_button.add_class("segnb-start")
        self.epochs.add_class("segnb-epochs")
        self.stop_button.add_class("segnb-stop")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="steps")
        self.progress.add_class("segnb-progress")
        self.status = W.HTML("Not trained yet: press Start.")
        self.status.add_class("segnb-train-status")
        self.curves = PlotView("loss and scores", height=360, css_class="segnb-curves",
                               empty="Losses (top, log scale) and validation scores (bottom) appear here once "
                                     "training starts: the training loss moves every few steps, the others "
                                     "after each epoch.")
        self.class_curves = PlotView("per-class IoU", height=360, css_class="segnb-class-curves",
                                     empty="Each class's validation IoU appears here after the first epoch, "
                                           "one line with a point per epoch.")
        self.sample = image_widget(css_class="segnb-sample")
        self.sample_caption = W.HTML()
        self.sample_caption.add_class("segnb-sample-caption")
        self.results = W.VBox([self.status, row_of(self.curves, self.class_curves), self.sample_caption,
                               self.sample])
        self.results.add_class("segnb-results")
        self.stamp = ResultStamp(self.state, self.results, again="Press Start")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.estimate_button.on_click(lambda _: self.estimate())
        self.log_loss.observe(lambda _: self._redraw(), names=["value"])
        self.state.observe(self._on_data, names=["data"])
        self._lock = threading.Lock()
        super().__init__([
            W.HBox([self.epochs, self.batch_size, self.image_size]),
            W.HBox([self.lr, self.loss, self.max_minutes]),
            W.HBox([self.start_button, self.stop_button, self.estimate_button, self.log_loss]),
            self.estimate_line, self.progress, self.errors, self.stamp, self.results,
        ])
        self.add_class("segnb-train-panel")
        self._on_data({"new": self.state.data})

    def _on_data(self, change) -> None:
        data = change["new"]
        if data is not None and not self.running:
            self.image_size.value = live_image_size(data)
        self.estimate_line.value = ""

    @property
    def history(self):
        return self.handle.history if self.handle is not None else None

    @property
    def running(self) -> bool:
        return self.handle is not None and not self.handle.done

    def _check_ready(self):
        data, model = self.state.data, self.state.model
        if data is None or model is None:
            raise ValueError("Load a dataset and build a model first (the Dataset and Model tabs).")
        if model.num_classes != data.num_classes:
            raise ValueError(f"The model predicts {model.num_classes} classes but the dataset has "
                             f"{data.num_classes}: press Build in the Model tab again after loading the dataset.")
        return data, model

    @guarded
    def estimate(self) -> float:
        """Time one training step (forward and backward) at the chosen image and batch size; say it."""
        import time

        import torch

        data, model = self._check_ready()
        if self.running:
            raise RuntimeError("Training is running: its own status line says how fast it goes.")
        size = self.image_size.value
        image, _ = data[data.train_split][0]
        h, w = (size, size) if size else image.shape[:2]
        batch = min(self.batch_size.value, 2)
        self.estimate_line.value = "timing one step ..."
        device = next(model.parameters()).device
        was_training = model.training
        model.train()
        x = torch.randn(batch, 3, h, w, device=device)
        try:
            for _ in range(2):  # the first pass warms up; the second is timed
                start = time.perf_counter()
                model.zero_grad(set_to_none=True)
                model(x).float().mean().backward()
                seconds = time.perf_counter() - start
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        per_step = seconds * self.batch_size.value / batch
        steps = -(-len(data[data.train_split]) // self.batch_size.value)
        self.estimate_line.value = html.escape(
            f"about {per_step:.2f} s per step of {self.batch_size.value} images at {h}x{w} px on {device.type} "
            f"(timed on {batch}), {steps} steps per epoch: about {format_duration(per_step * steps)} per epoch, "
            f"{format_duration(per_step * steps * self.epochs.value)} for {self.epochs.value} epochs, "
            "plus validation.")
        return per_step

    @guarded
    def start(self):
        if self.running:
            raise RuntimeError("Training is already running; press Stop first.")
        data, model = self._check_ready()
        self.steps = []
        self._epochs_planned = self.epochs.value
        self.state.run += 1  # a new run: results of the previous weights are now marked
        self._draw_curves([])
        self.sample_pair = data[data.eval_split][0]
        self.sample.value = b""
        self.sample_caption.value = ""
        self.progress.value, self.progress.max = 0, 1
        self.start_button.disabled, self.stop_button.disabled = True, False
        self.stamp.stamp()
        self._status_line("starting ...")
        try:
            from segnb.train import fit

            self.handle = fit(model, data, epochs=self.epochs.value, batch_size=self.batch_size.value,
                              lr=self.lr.value, loss=self.loss.value, max_minutes=self.max_minutes.value,
                              image_size=self.image_size.value or None,
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
        import time

        with self._lock:
            self.progress.max = max(1, state.total)
            self.progress.value = min(state.done, self.progress.max)
            if state.done == 0:
                self._status_line(f"epoch {state.epoch}/{state.epochs}: first step running (it also loads "
                                  f"the first batch) on {state.device} ({state.precision}) ...")
                return
            loss = "" if state.loss is None else f", loss {state.loss:.4f}"
            self._status_line(f"epoch {state.epoch}/{state.epochs}, step {state.done}/{state.total}, "
                              f"{state.images_per_s:.1f} images/s, ETA {format_duration(state.eta)}{loss} "
                              f"on {state.device} ({state.precision})")
            trainer = getattr(self.handle, "trainer", None)
            if state.loss is not None and trainer is not None:
                # Steps per epoch from the run itself: with a time budget the planned total is not
                # epochs x steps per epoch, and the curve would be drawn on the wrong x scale.
                per_epoch = max(1, trainer.steps_per_epoch)
                self.steps = [*self.steps, (state.done / per_epoch, float(state.loss))]
                if time.monotonic() - self._last_curve_draw > 2.0:  # a chart redraw is a message
                    self._draw_curves(self.history.epochs if self.history else [])

    def _epoch_done(self, trainer) -> None:
        with self._lock:
            self._draw_curves(trainer.history.epochs)
        image, mask = self.sample_pair
        pred = _predicted_mask(trainer.unwrapped, image, device=trainer.device)
        self._draw_sample(image, mask, pred, trainer.history.epochs[-1]["epoch"])

    def _draw_sample(self, image, mask, pred, epoch, when: str | None = None) -> None:
        palette = self.state.palette()
        ignore = self.state.data.ignore_index
        self.sample_pred = pred
        show_strip(self.sample, self.sample_caption,
                   [image, overlay(image, mask, palette, 0.65, ignore_index=ignore),
                    overlay(image, pred, palette, 0.65, ignore_index=ignore)],
                   ["image", "truth", when or f"prediction after epoch {epoch}"])

    def _redraw(self) -> None:
        self._draw_curves(self.history.epochs if self.history else [])

    def _draw_curves(self, epochs: list[dict]) -> None:
        import time

        self._last_curve_draw = time.monotonic()
        if not epochs and not self.steps:
            self.curves.clear()
            self.class_curves.clear()
            return
        self.curves.draw(curves_figure(epochs, title="loss and scores", steps=self.steps,
                                       log_loss=self.log_loss.value, epochs_planned=self._epochs_planned))
        if epochs:
            self.class_curves.draw(class_curves_figure(epochs, self.state.names(), self.state.palette(),
                                                       title="per-class IoU (validation)",
                                                       epochs_planned=self._epochs_planned))
        else:
            self.class_curves.clear()

    def show_history(self, history, steps=()) -> None:
        """Show a finished run (a restored lesson): its curves, its status and its sample prediction."""
        self.steps = list(steps)
        self.stamp.stamp()
        if history is None:
            self._draw_curves([])
            self._status_line("Not trained yet: press Start.")
            return
        self._epochs_planned = max([r["epoch"] for r in history.epochs] or [1])
        self._draw_curves(history.epochs)
        data, model = self.state.data, self.state.model
        self.sample_pair = data[data.eval_split][0]
        image, mask = self.sample_pair
        self._draw_sample(image, mask, _predicted_mask(model, image), None,
                          when=f"prediction when training ended (step {history.steps})")
        self._status_line(self._summary(history) + " (restored from a lesson)")

    def _summary(self, history) -> str:
        if history.stopped.startswith("failed"):  # never "completed" after an error
            return f"{history.stopped} (at step {history.steps}; the model keeps that step's weights)"
        last = history.last("miou")
        size = f" at {self.image_size.value} px" if self.image_size.value else ""
        score = "" if last is None else f", validation mIoU {last:.3f}{size}"
        return f"{history.stopped} after {history.steps} steps{score}"

    def _finished(self, trainer) -> None:
        self.start_button.disabled, self.stop_button.disabled = False, True
        if self.state.model is trainer.unwrapped or self.state.model is trainer.model:
            self.state.history = trainer.history
        self._draw_curves(trainer.history.epochs)
        if getattr(self, "sample_pair", None) is not None and trainer.history.steps:
            # The weights as they are now (Stop may come mid-epoch): what a saved lesson restores.
            image, mask = self.sample_pair
            pred = _predicted_mask(trainer.unwrapped, image, device=trainer.device)
            self._draw_sample(image, mask, pred, None,
                              when=f"prediction when training ended (step {trainer.history.steps})")
        self._status_line(self._summary(trainer.history))
