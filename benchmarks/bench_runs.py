"""segnb.runs() over 1,000 run folders (goal: under 2 s).

    .venv/bin/python benchmarks/bench_runs.py [--runs 1000] [--epochs 30]

Each run.json is as fit() writes it: the full configuration, 30 epochs of history with per-class
IoU for 7 classes, the summary; a few runs vary lr, architecture, loss and batch size, so the
table has configuration columns that differ. Two damaged folders are among them. Prints the first
call and the median of 5 calls after it (pandas is imported before, and its time printed apart).
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from segnb.runs import RUN_FORMAT, code_version, list_runs

CLASSES = ["sky", "grass", "brick", "circle", "square", "triangle", "ring"]


def fake_run(folder: Path, k: int, epochs: int, rng: random.Random) -> None:
    miou = rng.uniform(0.2, 0.9)
    history = [{"epoch": e, "step": 50 * e, "train_loss": 2.0 / e, "val_loss": 2.1 / e, "miou": miou * e / epochs,
                "pixel_accuracy": 0.5 + 0.4 * e / epochs, "mean_accuracy": 0.5, "lr": 1e-3,
                "iou": [rng.random() for _ in CLASSES], "images_per_s": 120.0, "seconds": 6.5}
               for e in range(1, epochs + 1)]
    info = {
        "format": RUN_FORMAT, "name": f"2026-12-06_{k:06d}_fcn8s-resnet18", "status": "completed",
        "stopped": "completed", "started": f"2026-12-06T{k // 3600 % 24:02d}:{k // 60 % 60:02d}:{k % 60:02d}",
        "ended": None, "updated": None, "seconds": 6.5 * epochs,
        "config": {
            "train": {"epochs": epochs, "batch_size": rng.choice([8, 16]), "lr": rng.choice([1e-3, 3e-3, 1e-2]),
                      "loss": rng.choice(["ce", "weighted_ce", "dice"]), "optimizer": "adamw", "scheduler": "cosine",
                      "precision": "auto", "device": "auto", "image_size": 128, "seed": k, "weight_decay": 1e-4},
            "data": {"source": "shapes", "options": {"n": 1000}, "class_names": CLASSES, "ignore_index": 255,
                     "eval_split": "validation", "train_images": 800, "eval_images": 200},
            "model": {"arch": rng.choice(["fcn32s", "fcn16s", "fcn8s"]), "encoder": "resnet18", "num_classes": 7,
                      "upsample": rng.choice(["bilinear", "transposed4"]), "pretrained": False},
        },
        "code": code_version(), "device": "cpu", "device_name": "x86_64", "precision": "fp32", "pid": 1,
        "host": "elsewhere", "tags": {}, "history": history, "steps": 50 * epochs,
        "summary": {"miou": miou, "best_miou": miou, "pixel_accuracy": 0.9, "iou": history[-1]["iou"],
                    "epochs_done": epochs},
        "preview": {"split": "validation", "indices": list(range(0, 200, 25))},
    }
    (folder / info["name"]).mkdir()
    (folder / info["name"] / "run.json").write_text(json.dumps(info, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="segnb-bench-runs-") as tmp:
        folder = Path(tmp)
        for k in range(args.runs):
            fake_run(folder, k, args.epochs, rng)
        (folder / "damaged").mkdir()
        (folder / "damaged" / "run.json").write_text('{"format": "segnb-run/1", "na')
        (folder / "half-written").mkdir()
        size = sum(p.stat().st_size for p in folder.glob("*/run.json"))
        start = time.perf_counter()
        importlib.import_module("pandas")  # once per process: not part of the listing
        pandas_s = time.perf_counter() - start
        times = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(6):
                start = time.perf_counter()
                frame = list_runs(folder)
                times.append(time.perf_counter() - start)
        assert len(frame) == args.runs and len(frame.attrs["skipped"]) == 2
        print(f"segnb.runs() over {args.runs:,} runs ({size / 2**20:.1f} MiB of run.json, {args.epochs} epochs "
              f"each) + 2 damaged folders: first call {times[0]:.2f} s, median of 5 more "
              f"{statistics.median(times[1:]):.2f} s (goal < 2 s; importing pandas before took {pandas_s:.2f} s); "
              f"{frame.shape[1]} columns: "
              f"{', '.join(frame.columns)}")


if __name__ == "__main__":
    main()
