"""Soak: many short epochs with the TrainPanel attached; resident memory per epoch must stay flat.

    .venv/bin/python benchmarks/soak_trainpanel.py [--epochs 40]

Prints the resident set size (RSS, from /proc/self/status) and the number of live widgets
after each epoch, and the growth between epoch 5 and the last. The panel redraws its two
charts whole every epoch (a new plotly figure in the same Output widget), so the widget count
must stay the same and the RSS growth within allocator noise.
"""

from __future__ import annotations

import argparse

from ipywidgets.widgets.widget import _instances as live_widgets

from segnb.callbacks import Callback
from segnb.data import load_shapes
from segnb.models import build_model
from segnb.ui import SharedState, TrainPanel


def rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RSS(Callback):
    order = 99

    def __init__(self):
        self.values, self.widgets = [], []

    def on_epoch_end(self, trainer):
        self.values.append(rss_mib())
        self.widgets.append(len(live_widgets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    data = load_shapes(n=48, size=32, seed=0)
    state = SharedState(data=data, model=build_model("unet-classic", "vgg-tiny", class_names=data.class_names))
    meter = RSS()
    panel = TrainPanel(state, callbacks=[meter])
    panel.epochs.value = args.epochs
    panel.batch_size.value = 8
    panel.max_minutes.value = 60
    panel.start()
    panel.handle.wait()
    for epoch, (value, widgets) in enumerate(zip(meter.values, meter.widgets, strict=True), start=1):
        print(f"epoch {epoch:3d}: RSS {value:8.1f} MiB, {widgets} live widgets")
    base = meter.values[min(4, len(meter.values) - 1)]
    growth = meter.values[-1] - base
    print(f"growth from epoch 5 to epoch {len(meter.values)}: {growth:+.1f} MiB "
          f"({growth / max(1, len(meter.values) - 5):+.2f} MiB per epoch) -> {'flat' if abs(growth) < 20 else 'GROWING'}")
    print(f"live widgets: {meter.widgets[0]} after epoch 1, {meter.widgets[-1]} after epoch {len(meter.widgets)} "
          f"-> {'flat' if meter.widgets[-1] == meter.widgets[0] else 'LEAKING'}")


if __name__ == "__main__":
    main()
