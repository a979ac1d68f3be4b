"""Confusion matrix + IoU on 32 masks of 360x480 with 12 classes: segnb against the libraries.

    .venv/bin/python benchmarks/bench_metrics.py

Prints each time (best of 15) and the ratios, measured side by side in one run,
and checks that the values are identical.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchmetrics.classification import MulticlassJaccardIndex

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_metrics import evaluate_mean_iou  # noqa: E402  (HF evaluate's numpy algorithm)

from segnb.metrics import confusion_matrix, scores_from_confusion  # noqa: E402


def best_of(fn, repeat=15):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 12, (32, 360, 480), generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.7, target, torch.randint(0, 12, target.shape, generator=g))
    target[torch.rand(target.shape, generator=g) < 0.05] = 255

    ours_t, ours = best_of(lambda: scores_from_confusion(confusion_matrix(pred, target, 12)))
    tm_t, tm = best_of(lambda: MulticlassJaccardIndex(12, ignore_index=255, average="none")(pred, target))
    p_np, t_np = pred.numpy(), target.numpy()
    ev_t, ev = best_of(lambda: evaluate_mean_iou(p_np, t_np, 12, 255))

    assert np.allclose(ours.iou, tm.numpy()) and np.allclose(ours.iou, ev["per_category_iou"])
    print(f"segnb confusion_matrix + scores: {ours_t * 1e3:7.1f} ms   mIoU {ours.miou:.6f}")
    print(f"torchmetrics MulticlassJaccard:  {tm_t * 1e3:7.1f} ms   ratio {tm_t / ours_t:5.1f}x")
    print(f"evaluate mean_iou (numpy):       {ev_t * 1e3:7.1f} ms   ratio {ev_t / ours_t:5.1f}x")
    print("values identical: yes")


if __name__ == "__main__":
    main()
