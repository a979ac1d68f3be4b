"""InstancePanel: Mask R-CNN on the Studio's dataset, each instance coloured, and its mask head's view.

Self-contained: it reads the Studio's :class:`SharedState` (the dataset, and a semantic model
for the panoptic merge when there is one) and keeps its own Mask R-CNN. The mask-head view
shows, for one detection, the RoI crop, the 28x28 target, the 28x28 soft mask and the mask
pasted into the image at the threshold the slider sets (torchvision uses 0.5).
"""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from segnb.instances.maskhead import mask_head_view
from segnb.instances.panoptic import colour_panoptic, panoptic_merge
from segnb.ui.common import ErrorBox, SharedState, guarded, image_widget, png, row_of

__all__ = ["InstancePanel"]


def _big(array: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so each 28x28 cell is visible as a block."""
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)


def _heat(values: np.ndarray) -> np.ndarray:
    """[0, 1] values as a dark-to-yellow picture (uint8 RGB)."""
    v = np.clip(np.asarray(values, np.float32), 0, 1)[..., None]
    return (v * np.array([255, 220, 40]) + (1 - v) * np.array([20, 20, 60])).astype(np.uint8)


def _captioned(widget: W.Widget, caption: str) -> W.VBox:
    return W.VBox([W.HTML(f"<small>{html.escape(caption)}</small>"), widget])


class InstancePanel(W.VBox):
    """Train a small Mask R-CNN, colour each instance, and look inside its 28x28 mask head."""

    def __init__(self, state: SharedState | None = None, scale: int = 3):
        self.state = state or SharedState()
        self.scale = scale
        self.model = None
        self._handle = None
        self._view = None
        self.errors = ErrorBox()
        self.encoder = W.Dropdown(options=["mobilenetv3_small_100", "resnet18", "test_resnet"],
                                  value="mobilenetv3_small_100", description="backbone")
        self.epochs = W.IntSlider(2, min=1, max=30, description="epochs")
        self.train_button = W.Button(description="Train Mask R-CNN", button_style="primary", icon="play")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.status = W.HTML()
        self.index = W.BoundedIntText(0, min=0, max=100_000, description="image #")
        self.show_button = W.Button(description="Show", icon="eye")
        self.detection = W.Dropdown(options=[], description="detection")
        self.threshold = W.FloatSlider(0.5, min=0.05, max=0.95, step=0.05, description="threshold",
                                       continuous_update=True)
        self.min_score = W.FloatSlider(0.3, min=0.0, max=0.95, step=0.05, description="min score")
        self.truth = image_widget(css_class="segnb-instances-truth")
        self.predicted = image_widget(css_class="segnb-instances-predicted")
        self.crop = image_widget(css_class="segnb-maskhead-crop")
        self.target = image_widget(css_class="segnb-maskhead-target")
        self.soft = image_widget(css_class="segnb-maskhead-soft")
        self.pasted = image_widget(css_class="segnb-maskhead-pasted")
        self.readout = W.HTML()
        self.head_row = row_of(_captioned(self.crop, "RoI crop"), _captioned(self.target, "28x28 target"),
                               _captioned(self.soft, "28x28 soft mask"), _captioned(self.pasted, "pasted at threshold"))
        self.head_row.layout.display = "none"  # until there is a detection to show
        for widget, name in ((self.train_button, "train"), (self.stop_button, "stop"), (self.show_button, "show"),
                             (self.threshold, "threshold"), (self.detection, "detection"),
                             (self.encoder, "backbone"), (self.epochs, "epochs"), (self.status, "status"),
                             (self.min_score, "min-score"),
                             (self.readout, "readout")):
            widget.add_class(f"segnb-instances-{name}")
        self.train_button.on_click(lambda _: self.train())
        self.stop_button.on_click(lambda _: self.stop())
        self.show_button.on_click(lambda _: self.show())
        self.detection.observe(lambda _: self._show_detection(), names=["value"])
        self.threshold.observe(lambda _: self._draw_pasted(), names=["value"])
        super().__init__([
            W.HTML("<b>Instances</b>: Mask R-CNN finds each object; stuff comes from the semantic model."),
            W.HBox([self.encoder, self.epochs, self.train_button, self.stop_button]), self.status, self.errors,
            W.HBox([self.index, self.min_score, self.show_button]),
            row_of(_captioned(self.truth, "true instances"), _captioned(self.predicted, "predicted (panoptic)")),
            W.HBox([self.detection, self.threshold]), self.readout,
            self.head_row,
        ])
        self.add_class("segnb-instance-panel")

    def _data(self):
        data = self.state.data
        if data is None:
            raise ValueError("Load a dataset first (the built-in shapes has instances).")
        if not data.has_instances:
            raise ValueError(f"{data.source} has no instance maps; load the built-in shapes, or a folder with "
                             "instances/ or a COCO JSON.")
        return data

    @guarded
    def train(self, wait: bool = False):
        """Build a Mask R-CNN for the dataset's things and train it in the background."""
        import segnb
        from segnb.callbacks import Callback
        from segnb.instances.maskrcnn import FIT_DEFAULTS
        from segnb.train import fit

        data = self._data()
        self.model = segnb.build_model("maskrcnn", self.encoder.value, class_names=data.class_names,
                                       things=data.things or data.class_names)
        panel = self

        class _Status(Callback):
            def on_step_end(self, trainer):
                if trainer.step % 5 == 0:
                    panel.status.value = (f"epoch {trainer.epoch + 1}/{trainer.epochs}, step {trainer.step}/"
                                          f"{trainer.total_steps}, loss {float(trainer.last_loss):.3f}")

            def on_fit_end(self, trainer):
                last = trainer.history.epochs[-1] if trainer.history.epochs else {}
                ap = f", mask AP50 {last['mask_ap50']:.3f}" if "mask_ap50" in last else ""
                panel.status.value = f"done ({trainer.history.stopped}){ap}"
                panel.train_button.disabled, panel.stop_button.disabled = False, True

        self.train_button.disabled, self.stop_button.disabled = True, False
        self._handle = fit(self.model, data, epochs=self.epochs.value, **FIT_DEFAULTS, progress=False,
                           callbacks=[_Status()], background=True)
        if wait:
            self._handle.wait()
        return self._handle

    def stop(self):
        if self._handle is not None:
            self._handle.stop(wait=False)

    @guarded
    def show(self, index: int | None = None):
        """True instances and the model's panoptic prediction for one validation image."""
        import torch

        data = self._data()
        if self.model is None:
            raise ValueError("Train the Mask R-CNN first (or set panel.model).")
        split = data[data.eval_split]
        index = min(self.index.value if index is None else index, len(split) - 1)
        image, mask, ids = split.get(index, instances=True)
        self.truth.value = png(_big(colour_panoptic(image, mask, ids, data.palette, void=data.ignore_index), 2))
        things = [data.class_names.index(t) for t in self.model.things]
        stuff = [c for c in range(data.num_classes) if c not in things]
        truth = np.stack([ids == k for k in np.unique(ids[ids > 0])]) if ids.any() else None
        score = self.min_score.value
        self.model.detector.roi_heads.score_thresh = min(0.05, score)  # torchvision's own cut comes first
        try:
            views = mask_head_view(self.model, image, detection=None, truth_masks=truth, score_threshold=score)
        except ValueError:  # no detection at this score
            views = []
        semantic = np.where(np.isin(mask, stuff), mask, stuff[0] if stuff else 0)  # stuff from the truth ...
        if self.state.model is not None and getattr(self.state.model, "spec", {}).get("arch") != "maskrcnn":
            from segnb.prediction import predict

            semantic = predict(self.state.model, image).masks[0].numpy()  # ... or from the semantic model
        detections = {"masks": torch.tensor(np.stack([v.pasted_soft for v in views]))[:, None] if views else
                      torch.zeros(0, 1, *mask.shape), "scores": torch.tensor([v.score for v in views]),
                      "labels": torch.tensor([v.label for v in views], dtype=torch.long)}
        classes, found = panoptic_merge(semantic, detections, things, stuff, score_threshold=score)
        self.predicted.value = png(_big(colour_panoptic(image, classes, found, data.palette), 2))
        self._views = views
        self.detection.options = [(f"#{k}: {data.class_names[v.label]} ({v.score:.2f})", k)
                                  for k, v in enumerate(views)]
        self.head_row.layout.display = "" if views else "none"
        if views:
            self.detection.value = 0
            self._show_detection()
        else:
            self._view = None
            self.readout.value = (f"<i>No detection above score {score:.2f} in this image (train longer, or "
                                  "lower the min score).</i>")
        return index

    def _show_detection(self):
        if not getattr(self, "_views", None) or self.detection.value is None:
            return
        view = self._view = self._views[self.detection.value]
        self.crop.value = png(view.crop)
        self.target.value = png(_big(_heat(view.target), 4)) if view.target is not None else b""
        self.soft.value = png(_big(_heat(view.soft), 4))
        self._draw_pasted()

    def _draw_pasted(self):
        view = self._view
        if view is None:
            return
        t = self.threshold.value
        picture = np.asarray(view.image, np.float32).copy()
        chosen = view.pasted(t)
        picture[chosen] = 0.4 * picture[chosen] + 0.6 * np.array([255, 60, 60])
        x0, y0, x1, y1 = (int(round(v)) for v in view.box)
        h, w = chosen.shape
        picture[max(y0, 0):min(y1, h), [min(max(x0, 0), w - 1), min(max(x1 - 1, 0), w - 1)]] = 255
        picture[[min(max(y0, 0), h - 1), min(max(y1 - 1, 0), h - 1)], max(x0, 0):min(x1, w)] = 255
        self.pasted.value = png(_big(picture.astype(np.uint8), self.scale))
        iou = view.iou(t)
        self.readout.value = (f"box {x1 - x0}x{y1 - y0} px: one 28x28 cell covers {(x1 - x0) / 28:.1f}x"
                              f"{(y1 - y0) / 28:.1f} px; {int(chosen.sum())} pixels at threshold {t:.2f}"
                              + (f", IoU with the true object {iou:.3f}" if iou is not None else ""))
