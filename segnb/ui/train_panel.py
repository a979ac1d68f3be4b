"""TrainPanel: hyperparameters, Start and Stop, live curves and a sample prediction each epoch."""

from __future__ import annotations

import html
import threading

import ipywidgets as W

from segnb.arithmetic import ceil_div
from segnb.callbacks import Callback, ProgressCallback
from segnb.progress import ProgressState, format_duration
from segnb.train.config import TrainConfig
from segnb.ui.common import (
    ErrorBox,
    PlotView,
    ResultStamp,
    SharedState,
    guarded,
    image_widget,
    row_of,
    show_strip,
)
from segnb.ui.progress import ThrottledRenderer
from segnb.viz import class_curves_figure, curves_figure, overlay

__all__ = ["TrainPanel", "live_image_size"]


def _predicted_mask(model, image, device="auto"):
    """The model's argmax mask for one raw image, as numpy."""
    from segnb.prediction import predict

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


# The panel's settings for a live lesson (short, a larger lr, class weights); every other option is fit's own.
LIVE = TrainConfig(epochs=3, batch_size=16, lr=1e-2, loss="weighted_ce", max_minutes=5.0)
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
        self.epochs = W.BoundedIntText(LIVE.epochs, min=1, max=1000, description="epochs")
        self.batch_size = W.BoundedIntText(LIVE.batch_size, min=1, max=1024, description="batch size")
        self.image_size = W.Dropdown(options=IMAGE_SIZES, value=0, description="image size")
        self.image_size.add_class("segnb-image-size")
        self.lr = W.FloatLogSlider(value=LIVE.lr, base=10, min=-5, max=0, step=0.25, description="learning rate",
                                   style={"description_width": "initial"})
        self.loss = W.Dropdown(options=list(LOSSES), value=LIVE.loss, description="loss")
        self.max_minutes = W.BoundedFloatText(LIVE.max_minutes, min=0.05, max=10_000, description="max minutes",
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
        from segnb.data.preprocess import check_classes

        check_classes(model, data, remedy="Press Build in the Model tab again after loading the dataset.")
        return data, model

    @guarded
    def estimate(self) -> float:
        """Time one training step (forward and backward) at the chosen image and batch size; say it."""
        from segnb.models.timing import step_seconds

        data, model = self._check_ready()
        if self.running:
            raise RuntimeError("Training is running: its own status line says how fast it goes.")
        size = self.image_size.value
        image, _ = data[data.train_split][0]
        h, w = (size, size) if size else image.shape[:2]
        self.estimate_line.value = "timing one step ..."
        device = next(model.parameters()).device
        timed = min(self.batch_size.value, 2)
        per_step = step_seconds(model, h, w, self.batch_size.value, timed=timed)
        steps = ceil_div(len(data[data.train_split]), self.batch_size.value)
        self.estimate_line.value = html.escape(
            f"about {per_step:.2f} s per step of {self.batch_size.value} images at {h}x{w} px on {device.type} "
            f"(timed on {timed}), {steps} steps per epoch: about {format_duration(per_step * steps)} per epoch, "
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
        scored = "at full resolution" if getattr(history, "protocol", "full") == "full" else "at the input size"
        score = "" if last is None else f", validation mIoU {last:.3f}{size} (scored {scored})"
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
