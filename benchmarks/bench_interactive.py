"""Interactive segmentation on this CPU: the click model against random-walker clicks, and scribbles on membranes.

    .venv/bin/python benchmarks/bench_interactive.py [--seconds 120] [--images 100]

Goals (issue 16):
- the click model, trained on the built-in dataset in at most 2 minutes, reaches IoU 0.85 within
  5 clicks on average over the validation objects: NoC@85 <= 5 (clicks counted as 10, the cap,
  where 0.85 is never reached);
- random-walker scribbles reach IoU 0.8 on the ISBI 2012 membrane data (printed: the IoU of the
  cells, of the membranes, their mean, beside the trivial all-cell answer; and a graph cut on the
  same seeds) with the scribbles
  ``scribbles_from_mask`` derives from the ground truth (one stroke along the middle of each
  eroded cell, strokes along the membranes' centre lines).

The click protocol is the papers' (first click at the object's most interior pixel, each next one
at the most interior pixel of the larger error region); objects are the connected regions of the
four thing classes with at least 100 pixels (the rest are counted and left out). The same clicks
drive a random walker (a disk of 3 px per click, the image border as background until the first
negative click), a baseline that needs no training. Printed side by side from one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from segnb import interactive as core
from segnb.data import load_dataset, load_shapes

MEMBRANES = Path(__file__).resolve().parents[2] / "shared" / "data" / "isbi2012-membrane"


def clicks(seconds: float, images: int) -> None:
    data = load_shapes(n=1000)
    start, cpu = time.perf_counter(), time.process_time()
    # The budget is this process's CPU time on one torch thread: what one free core of this CPU
    # would take, however many other jobs share the machine (wall time is printed too).
    model = core.train_click_model(data, steps=100_000, seconds=seconds, clock=time.process_time)
    print(f"click model: {len(model.history)} steps in {time.process_time() - cpu:.0f} s of CPU time "
          f"(budget {seconds:.0f} s; {time.perf_counter() - start:.0f} s wall on this shared machine), "
          f"final loss {np.mean(model.history[-20:]):.3f}")
    for name, predictor in (("click model", model), ("random walker (clicks)", core.RandomWalkerClicks())):
        report = core.evaluate_clicks(predictor, data, limit=images, max_clicks=10)
        print(f"{name:24s} {report.summary()}  ({report.seconds:.0f} s)")
        print(f"{'':24s} mean IoU after clicks 1..10: {np.array2string(report.curve, precision=3)}")
        if name == "click model":
            verdict = "met" if report.noc[0.85] <= 5 else "NOT met"
            print(f"{'':24s} goal NoC@85 <= 5: {verdict}")


def scribbles() -> None:
    if not MEMBRANES.is_dir():
        print(f"membranes: no data at {MEMBRANES}; skipped")
        return
    data = load_dataset(MEMBRANES)
    split = data[data.eval_split]
    rows = []
    for index in range(len(split)):
        image, mask = split[index]
        strokes = core.scribbles_from_mask(mask, {1: core.FOREGROUND, 0: core.BACKGROUND}, size=1,
                                           strokes_per_region=10)
        seeds = core.rasterize_strokes(strokes, mask.shape)
        row = [(seeds > 0).mean(), (mask == 1).mean(), len(strokes)]
        for method in ("walker", "cut"):
            start = time.perf_counter()
            if method == "walker":
                cells = core.random_walker_segment(image, seeds=seeds, beta=2000, sigma=1) == core.FOREGROUND
            else:
                cells = core.graph_cut_segment(image, seeds=seeds, smoothness=5, sigma=1)
            row += [core.iou(cells, mask == 1), core.iou(~cells, mask == 0), time.perf_counter() - start]
        rows.append(row)
    seeded, cell_share, n, *scores = np.array(rows).mean(0)
    print(f"membranes ({len(rows)} validation images, 512x512): {n:.0f} strokes per image cover "
          f"{100 * seeded:.1f}% of the pixels")
    for name, (cells_iou, membrane_iou, seconds) in (("random walker", scores[:3]), ("graph cut", scores[3:])):
        print(f"  {name:14s} IoU cells {cells_iou:.3f}, IoU membranes {membrane_iou:.3f}, "
              f"mean IoU {(cells_iou + membrane_iou) / 2:.3f}  ({seconds:.1f} s per image)")
    print(f"  (calling every pixel 'cell' scores IoU cells {cell_share:.3f}, mean IoU {cell_share / 2:.3f}: "
          "the cell IoU alone flatters any method)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="click-model training budget")
    parser.add_argument("--images", type=int, default=100, help="validation images used for NoC")
    parser.add_argument("--only", choices=["scribbles", "clicks"], help="run one of the two parts")
    args = parser.parse_args()
    torch.set_num_threads(1)  # so that CPU time is the time of one core
    print("torch threads 1; training is budgeted in CPU seconds, wall times depend on the machine's load")
    if args.only != "clicks":
        scribbles()
    if args.only != "scribbles":
        clicks(args.seconds, args.images)


if __name__ == "__main__":
    main()
