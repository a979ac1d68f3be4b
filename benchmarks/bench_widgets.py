"""Kernel-side cost of each interactive widget update on a 512x512 image, and the throughput cost
of the TrainPanel's live updates.

    .venv/bin/python benchmarks/bench_widgets.py

Goals: under 50 ms per soft-mask update; TrainPanel updates cost under 5% of training throughput
(fit with the panel's callbacks against fit with progress off, alternating, best of each).
"""

from __future__ import annotations

import json

import plotly.graph_objects as go
import torch
from timing import median_ms

from segnb.data import load_shapes
from segnb.models import build_model
from segnb.train import fit
from segnb.ui import AttentionViewer, SharedState, SoftMaskViewer, TrainPanel
from segnb.ui.common import PlotView
from segnb.viz import class_curves_figure


def main() -> None:
    torch.set_num_threads(2)
    data = load_shapes(n=4, size=512)
    image, _ = data["train"][0]
    probs = torch.softmax(torch.randn(7, 512, 512) * 3, 0).numpy()
    viewer = SoftMaskViewer(image, probs, data.class_names, data.palette)
    print("kernel-side cost per update (512x512 image), median ms:")
    print(f"  SoftMaskViewer.set_prediction (JPEG photo + 8-bit planes): {median_ms(lambda: viewer.set_prediction(image, probs)):7.1f}  (goal 50)")
    flip = iter(range(10**6))
    print(f"  SoftMaskViewer opacity change (a trait; drawn in the browser): {median_ms(lambda: setattr(viewer, 'opacity', (next(flip) % 10) / 10)):7.3f}  (goal 50)")
    print(f"  SoftMaskViewer temperature change (browser-side):          {median_ms(lambda: setattr(viewer, 'temperature', 1 + (next(flip) % 10) / 10)):7.3f}  (goal 50)")
    vit = build_model("setr-naive", "vit_tiny_patch16_224", num_classes=7).eval()
    attention = AttentionViewer(vit, image, input_size=224)
    print(f"  AttentionViewer layer change (sends one layer):            {median_ms(lambda: setattr(attention, 'layer', next(flip) % 12)):7.1f}")
    print(f"  AttentionViewer.show (ViT-tiny, 224 px, all layers):       {median_ms(lambda: attention.show(vit, image, 224), 3):7.1f}")

    # Charts: what one redraw of the training curves costs and sends (40 epochs, 7 classes).
    epochs = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "miou": 1 - 1 / e, "iou": [0.5] * 7}
              for e in range(1, 41)]
    chart = PlotView("per-class IoU")
    draw = lambda: chart.draw(class_curves_figure(epochs, data.class_names, data.palette))  # noqa: E731
    draw()
    sent = len(json.dumps(chart.outputs))
    widget_state = len(str(go.FigureWidget._esm))  # what each FigureWidget would ship as its state
    print(f"  PlotView.draw, per-class curves of 40 epochs:               {median_ms(draw):7.1f}  "
          f"({sent / 1024:.0f} KiB sent; a FigureWidget ships {widget_state / 2**20:.1f} MiB of front-end code each)")

    train_data = load_shapes(n=336, size=128, val_fraction=16 / 336)
    plain, panel_rates = [], []
    for round_ in range(2):
        torch.manual_seed(round_)
        model = build_model("unet-classic", "vgg-tiny", class_names=train_data.class_names)
        plain.append(fit(model, train_data, epochs=1, batch_size=16, progress=False, seed=round_).epochs[-1]["images_per_s"])
        state = SharedState(data=train_data, model=build_model("unet-classic", "vgg-tiny", class_names=train_data.class_names))
        panel = TrainPanel(state)
        panel.epochs.value = 1
        panel.max_minutes.value = 30
        panel.start()
        panel.handle.wait()
        panel_rates.append(panel.history.epochs[-1]["images_per_s"])
        print(f"round {round_ + 1}: fit without UI {plain[-1]:.1f} images/s, with TrainPanel {panel_rates[-1]:.1f} images/s")
    cost = 1 - max(panel_rates) / max(plain)
    print(f"TrainPanel live-update cost: {100 * cost:.1f}% of throughput (goal < 5%)")


if __name__ == "__main__":
    main()
