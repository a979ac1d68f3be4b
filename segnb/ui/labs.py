"""UpsamplingLab, IoUReport and ClassicalLab: stock widgets over segnb.inspect and segnb.classical."""

from __future__ import annotations

import html

import ipywidgets as W
import numpy as np
import torch

from segnb import inspect as ins
from segnb.classical import METHODS, label_segments, score_segments, segment
from segnb.evaluation import PROTOCOL_TEXT, evaluate
from segnb.metrics import confusion_matrix, scores_from_confusion
from segnb.prediction import predict
from segnb.ui.common import (
    ErrorBox,
    PlotView,
    ResultStamp,
    SharedState,
    guarded,
    image_widget,
    png,
    row_of,
    show_strip,
)
from segnb.ui.softmask_viewer import SoftMaskViewer
from segnb.viz import confusion_figure, grid, heatmap_rgb, iou_bar_figure, overlay, size_iou_figure

__all__ = ["UpsamplingLab", "IoUReport", "ClassicalLab", "TOY_INPUTS"]

TOY_INPUTS = {
    "2x2 ramp": np.array([[1.0, 2.0], [3.0, 4.0]]),
    "3x3 ramp": np.arange(1.0, 10.0).reshape(3, 3),
    "4x4 ones": np.ones((4, 4)),
    "4x4 random": np.round(np.random.default_rng(0).uniform(0, 9, (4, 4))),
}


def _grid_figure(values: np.ndarray, title: str, colorscale: str = "Blues", integers: bool = False):
    """A small labelled heatmap with every value written in its cell and on hover (row, column, value)."""
    import plotly.graph_objects as go

    v = np.round(np.asarray(values, dtype=float), 2)
    h, w = v.shape
    figure = go.Figure(go.Heatmap(z=v, colorscale=colorscale, showscale=False, xgap=1, ygap=1,
                                  texttemplate="%{z:.0f}" if integers else "%{z:.3g}",
                                  hovertemplate="row %{y}, column %{x}<br>value %{z}<extra></extra>"))
    figure.update_layout(title=f"{title} ({h}x{w})", margin={"l": 30, "r": 10, "t": 40, "b": 30},
                         xaxis={"title": "column", "dtick": 1, "side": "bottom", "scaleanchor": "y", "constrain": "domain"},
                         yaxis={"title": "row", "dtick": 1, "autorange": "reversed", "constrain": "domain"})
    return figure


class UpsamplingLab(W.VBox):
    """Operator, kernel, stride and input; the output, the overlap-count map and the checkerboard score."""

    def __init__(self, state: SharedState | None = None):
        self.state = state or SharedState()
        self.errors = ErrorBox()
        self.operator = W.Dropdown(options=["nearest", "bed_of_nails", "max_unpool", "bilinear", "transposed"],
                                   value="transposed", description="operator")
        self.kernel = W.IntSlider(3, min=1, max=6, description="kernel")
        self.stride = W.IntSlider(2, min=1, max=3, description="stride")
        self.padding = W.IntSlider(0, min=0, max=3, description="padding")
        self.source = W.Dropdown(options=list(TOY_INPUTS), value="2x2 ramp", description="input")
        self.input_view = PlotView("input", height=300, width=300, css_class="segnb-upsampling-input")
        self.output_view = PlotView("output", height=300, width=300, css_class="segnb-upsampling-output")
        self.overlap_view = PlotView("overlap count", height=300, width=300, css_class="segnb-upsampling-overlap")
        self.score = W.HTML()
        self.score.add_class("segnb-checkerboard-score")
        self.operator.add_class("segnb-operator")
        self.compare_view = W.HTML()
        self.compare_images = image_widget(css_class="segnb-upsampling-compare")
        for widget in (self.operator, self.kernel, self.stride, self.padding, self.source):
            widget.observe(lambda _: self.update(), names=["value"])
        super().__init__([
            W.HBox([self.operator, self.source]), W.HBox([self.kernel, self.stride, self.padding]), self.errors,
            W.HTML("Each cell shows its value (hover for row and column). The overlap count is how many "
                   "kernel positions write to each output cell: uneven counts make a checkerboard."),
            row_of(self.input_view, self.output_view, self.overlap_view),
            self.score, self.compare_view, self.compare_images,
        ])
        self.add_class("segnb-upsampling-lab")
        self.update()

    @guarded
    def update(self):
        x = TOY_INPUTS[self.source.value]
        kind, k, s, p = self.operator.value, self.kernel.value, self.stride.value, self.padding.value
        pool_source = None
        if kind == "max_unpool":  # positions remembered from a pooled map twice the size
            rng = np.random.default_rng(1)
            pool_source = rng.permutation(4 * x.size).reshape(2 * x.shape[0], 2 * x.shape[1]).astype(float)
            s = 2
        out = ins.toy_upsample(x, kind, kernel_size=k, stride=s, padding=p, pool_source=pool_source)
        self.input_view.draw(_grid_figure(x, "input"))
        self.output_view.draw(_grid_figure(out, f"output of {kind}"))
        self.output = out
        if kind == "transposed":
            overlap = ins.overlap_map(k, s, p, x.shape)
            self.overlap = overlap
            self.overlap_view.draw(_grid_figure(overlap, "overlap count", colorscale="Oranges", integers=True))
            big = ins.overlap_map(k, s, p, 16)
            score = ins.checkerboard_score(big[k:-k, k:-k] if big.shape[0] > 2 * k + 2 else big, stride=s)
            self.score.value = (f"checkerboard score of the overlap counts (16x16 input): <b>{score:.3f}</b> "
                                f"({'uneven: expect a checkerboard' if np.ptp(big[k:-k, k:-k]) > 0 else 'even overlap'})")
        else:
            self.overlap = None
            self.overlap_view.clear("Only transposed convolutions overlap: choose the operator 'transposed' "
                                    "to see how many kernel positions write to each output cell.")
            self.score.value = f"checkerboard score of the output: <b>{ins.checkerboard_score(out, stride=s):.3f}</b>"
        return out

    @guarded
    def compare(self, model_a, model_b, image) -> list[list[dict]]:
        """Decoder activations of two teaching models on one image, side by side, with scores."""
        results = [ins.decoder_activations(m, image) for m in (model_a, model_b)]
        tiles, lines = [], []
        for model, acts in zip((model_a, model_b), results, strict=True):
            name = f"{model.spec['arch']} / {model.spec.get('upsample') or 'default'}"
            lines.append(f"<b>{html.escape(name)}</b>: " + ", ".join(f"{a['checkerboard']:.3f}" for a in acts))
            last = acts[-1]["mean"]
            tiles.append(heatmap_rgb(last))
        if tiles[0].shape == tiles[1].shape:
            self.compare_images.value = png(grid(tiles, columns=2))
        self.compare_view.value = "checkerboard score per decoder stage<br>" + "<br>".join(lines)
        return results


class IoUReport(W.VBox):
    """Per-class IoU bars (sortable), confusion heatmap, worst images (click to open), IoU by object size."""

    def __init__(self, state: SharedState | None = None, viewer: SoftMaskViewer | None = None, worst: int = 6):
        self.state = state or SharedState()
        self.viewer = viewer or SoftMaskViewer()
        self.worst_count = worst
        self.errors = ErrorBox()
        self.report = None
        self.run_button = W.Button(description="Evaluate", button_style="primary", icon="check")
        self.run_button.add_class("segnb-evaluate")
        self.sort = W.Checkbox(False, description="sort, worst first")
        self.protocol = W.Dropdown(options=[("full resolution (as papers)", "full"),
                                            ("at the model's input size", "resized")],
                                   value="full", description="scored")
        self.protocol.add_class("segnb-iou-protocol")
        self.summary = W.HTML("Press Evaluate to score the current model on the validation split.")
        self.summary.add_class("segnb-iou-summary")
        self.bars = PlotView("per-class IoU", height=320, css_class="segnb-iou-bars",
                             empty="Per-class IoU bars appear here after Evaluate.")
        self.confusion = PlotView("confusion (rows: truth, normalised)", height=320, width=500,
                                  css_class="segnb-confusion",
                                  empty="The confusion matrix (which class is taken for which) appears here.")
        self.sizes = PlotView("IoU by object size (pixels)", height=260, width=640, css_class="segnb-size-iou",
                              empty="IoU by object size appears here: small objects are the hard ones.")
        self.gallery = W.HBox()
        self.gallery.add_class("segnb-worst-gallery")
        self.gallery_title = W.HTML()
        self.run_button.on_click(lambda _: self.evaluate())
        self.sort.observe(lambda _: self._draw_bars(), names=["value"])
        self.results = W.VBox([self.summary, row_of(self.bars, self.confusion), self.gallery_title,
                               self.gallery, self.sizes, self.viewer])
        self.results.add_class("segnb-results")
        self.stamp = ResultStamp(self.state, self.results, again="Press Evaluate")
        super().__init__([W.HBox([self.run_button, self.protocol, self.sort]), self.errors, self.stamp,
                          self.results])
        self.add_class("segnb-iou-report")

    @guarded
    def evaluate(self, images: int | None = None):
        data, model = self.state.data, self.state.model
        if data is None or model is None:
            raise ValueError("Load a dataset and build (and train) a model first.")
        self.report = evaluate(model, data, protocol=self.protocol.value)
        self.stamp.stamp()
        self.summary.value = (f"validation mIoU <b>{self.report.miou:.3f}</b>, pixel accuracy "
                              f"{self.report.scores.pixel_accuracy:.3f} over {len(self.report.per_image)} images"
                              f'<br><span class="segnb-iou-protocol-text">scored at '
                              f"{html.escape(PROTOCOL_TEXT[self.report.protocol])}</span>")
        self.gallery_title.value = "<b>worst images</b> (lowest mIoU first; click one to inspect it below)"
        self._draw_bars()
        figure = confusion_figure(self.report.scores.confusion, self.state.names(),
                                  title="confusion (rows: truth, normalised)")
        figure.update_traces(texttemplate="%{z:.2f}")
        self.confusion.draw(figure)
        self._draw_gallery()
        self._draw_sizes(images)
        return self.report

    def _draw_bars(self):
        if self.report is None:
            return
        self.bars.draw(iou_bar_figure(self.state.names() or self.report.class_names, self.report.scores.iou,
                                      sort=self.sort.value, title="per-class IoU"))

    def _draw_gallery(self):
        data = self.state.data
        split = data[data.eval_split]
        items = []
        for row in self.report.per_image[: self.worst_count]:
            image, mask = split[row["index"]]
            button = W.Button(description=f"#{row['index']}  mIoU {row['miou']:.2f}",
                              layout=W.Layout(width="auto"))
            button.add_class("segnb-worst-open")
            button.on_click(lambda _, i=row["index"]: self.open_image(i))
            thumb = image_widget(overlay(image, mask, self.state.palette(), 0.65, ignore_index=data.ignore_index),
                                 width=120)
            items.append(W.VBox([thumb, button]))
        self.gallery.children = items

    @guarded
    def open_image(self, index: int):
        """Show one validation image and the model's probabilities in the SoftMaskViewer."""
        data, model = self.state.data, self.state.model
        image, _ = data[data.eval_split][index]
        probs = predict(model, image).probs[0].numpy()
        self.viewer.set_prediction(image, probs, self.state.names(), data.palette, self.state.overlay_palette)
        self.state.image_index = index
        return index

    def _draw_sizes(self, images: int | None):
        data, model = self.state.data, self.state.model
        split = data[data.eval_split]
        n = min(len(split), images or 48)
        pairs = [split[i] for i in range(n)]
        preds = [predict(model, image).masks[0].numpy() for image, _ in pairs]
        bins = ins.iou_by_object_size(preds, [m for _, m in pairs], classes=range(data.num_classes),
                                      ignore_index=data.ignore_index)
        self.sizes.draw(size_iou_figure(bins))
        self.size_bins = bins


class ClassicalLab(W.VBox):
    """k-means, mean-shift, SLIC, watershed and Felzenszwalb on the current image, beside the model, scored."""

    def __init__(self, state: SharedState | None = None):
        self.state = state or SharedState()
        self.errors = ErrorBox()
        self.method = W.Dropdown(options=list(METHODS), value="slic", description="method")
        self.index = W.BoundedIntText(0, min=0, max=10_000, description="image #")
        self.params = {
            "kmeans": {"k": W.IntSlider(4, min=2, max=12, description="k")},
            "kmeans_xy": {"k": W.IntSlider(4, min=2, max=12, description="k"),
                          "position_weight": W.FloatSlider(0.5, min=0, max=3, description="xy weight")},
            "meanshift": {"bandwidth": W.FloatSlider(0.15, min=0.02, max=0.6, step=0.01, description="bandwidth")},
            "slic": {"n_segments": W.IntSlider(200, min=10, max=1000, step=10, description="segments"),
                     "compactness": W.FloatSlider(10, min=0.1, max=50, description="compactness")},
            "watershed": {"markers": W.IntSlider(30, min=2, max=300, description="markers")},
            "felzenszwalb": {"scale": W.FloatSlider(100, min=1, max=1000, description="scale"),
                             "min_size": W.IntSlider(20, min=1, max=500, description="min size")},
        }
        self.param_box = W.VBox()
        self.run_button = W.Button(description="Run", button_style="primary", icon="magic")
        self.run_button.add_class("segnb-classical-run")
        self.pictures = image_widget(css_class="segnb-classical-pictures")
        self.captions = W.HTML()
        self.captions.add_class("segnb-classical-captions")
        self.scores = W.HTML("Press Run: the method's segments, each given the true class most of its pixels "
                             "have, beside the model and the truth.")
        self.method.observe(lambda _: self._show_params(), names=["value"])
        self.run_button.on_click(lambda _: self.run())
        self._show_params()
        self.results = W.VBox([self.captions, self.pictures, self.scores])
        self.results.add_class("segnb-results")
        self.stamp = ResultStamp(self.state, self.results, again="Press Run")
        super().__init__([W.HBox([self.method, self.index, self.run_button]), self.param_box, self.errors,
                          self.stamp, self.results])
        self.add_class("segnb-classical-lab")

    def _show_params(self):
        self.param_box.children = list(self.params[self.method.value].values())

    @guarded
    def run(self):
        data = self.state.data
        if data is None:
            raise ValueError("Load a dataset first.")
        split = data[data.eval_split]
        image, target = split[min(self.index.value, len(split) - 1)]
        params = {k: w.value for k, w in self.params[self.method.value].items()}
        segments = segment(image, self.method.value, **params)
        labels = label_segments(segments, target, data.num_classes, data.ignore_index)
        scores = score_segments(segments, target, data.num_classes, data.ignore_index)
        palette, ignore = self.state.palette(), data.ignore_index
        method = self.method.value
        setting = ", ".join(f"{w.description} {w.value:g}" for w in self.params[method].values())
        count = int(segments.max()) + 1
        if method == "slic":
            superpixels = int(segment(image, "slic", **params, merge_threshold=None).max()) + 1
            found = f"{superpixels} superpixels merged into {count} regions"
        else:
            found = f"{count} regions"
        tiles = [image, overlay(image, labels, palette, 0.65, ignore_index=ignore)]
        captions = ["image", f"{method}: {found}, mIoU {scores.miou:.3f}"]
        rows = [(f"{method} ({setting}): {found}", scores.miou, scores.pixel_accuracy)]
        if self.state.model is not None:
            pred = predict(self.state.model, image).masks[0].numpy()
            model_scores = scores_from_confusion(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target),
                                                                  data.num_classes, data.ignore_index))
            tiles.append(overlay(image, pred, palette, 0.65, ignore_index=ignore))
            name = f"model {self.state.model.spec['arch']} on {self.state.model.spec['encoder']}"
            captions.append(f"model ({self.state.run_name()}): mIoU {model_scores.miou:.3f}")
            rows.append((f"{name} ({self.state.run_name()})", model_scores.miou, model_scores.pixel_accuracy))
        tiles.append(overlay(image, target, palette, 0.65, ignore_index=ignore))
        captions.append("ground truth")
        show_strip(self.pictures, self.captions, tiles, captions)
        self.stamp.stamp()
        self.scores.value = ("<table class='segnb-classical-scores'><tr><th>method</th><th>mIoU</th>"
                             "<th>pixel accuracy</th></tr>" + "".join(
                                 f"<tr><td>{html.escape(n)}</td><td>{m:.3f}</td><td>{a:.3f}</td></tr>"
                                 for n, m, a in rows) + "</table>")
        self.result = {"segments": segments, "labels": labels, "rows": rows}
        return rows
