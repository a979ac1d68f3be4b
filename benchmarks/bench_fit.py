"""fit() against the loop a user writes with the split preloaded as tensors: three separate figures.

    # a near-free model at 96x128: the per-step overhead and the input path
    .venv/bin/python benchmarks/bench_fit.py --model tiny --size 96 128 --images 200 --rounds 5
    # a real model: U-Net on ResNet-18 at 352x480 (slow on a CPU: few images)
    .venv/bin/python benchmarks/bench_fit.py --model unet-r18 --size 352 480 --images 16 --batch-size 4 --steps 4
    # on a GPU: bf16, the compiled step and its compile time
    .venv/bin/python benchmarks/bench_fit.py --device cuda --model unet-r18 --size 352 480 --images 367 \\
        --batch-size 32 --precision bf16 --compile

The built-in dataset is exported at 360x480 as JPEG images and PNG masks to a temporary folder
(what a dataset on disk looks like). Three figures, each measured side by side in paired rounds
(the two sides in alternating order), printed per round and as the median of the rounds' ratios,
with the load average:

1. ``steady``: images/s of the training step after ``--warmup`` steps, over ``--steps`` steps, on
   data already decoded on both sides: fit() with its decoded cache on the device
   (``cache="device"``; the cold pass runs before the first step and is not timed; no validation in
   the timed steps), against the hand loop with the split preloaded as uint8 tensors on the
   device (random batches, flips, normalise, autocast, cross-entropy, clip, fused AdamW). The
   device is synchronised only at the two ends of the timed steps (see ``steady.py``).
2. ``e2e``: wall time from the folder on disk to the end of ``--epochs`` epochs with validation every
   epoch, both sides decoding with the same number of threads (``min(4, cores)``: fit's decoding
   threads with ``num_workers=0``, and a thread pool in the hand loop).
3. ``compile`` (with ``--compile``): the first step's time less one steady step, on both sides with
   ``torch.compile``, and the compiled steady-state rates.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

import segnb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steady import DTYPES, HandLoop, canonical, compile_seconds, preload, synchronize, time_fit  # noqa: E402


def make_model(name: str, class_names) -> nn.Module:
    torch.manual_seed(0)
    if name == "tiny":  # near-free: what is timed is the input path and the per-step overhead
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, len(class_names), 1))
        model.num_classes = len(class_names)
        return model
    return segnb.build_model("unet", "resnet" + name[-2:], class_names=class_names, pretrained=False)


def decode_threads() -> int:
    """As many threads as fit's cold pass uses without worker processes."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()))


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def paired(name: str, rounds: int, sides: dict, key: str, higher_is_better: bool = True) -> dict:
    """Runs both sides ``rounds`` times in alternating order; prints each round and the median ratio."""
    results = {side: [] for side in sides}
    for round_ in range(rounds):
        order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
        before = load()
        for side in order:
            results[side].append(sides[side]())
        f, h = results["fit"][-1], results["loop"][-1]
        ratio = f[key] / h[key] if higher_is_better else h[key] / f[key]
        print(f"  {name} round {round_ + 1}: fit {f[key]:.2f}, loop {h[key]:.2f} {key}; fit/loop {ratio:.3f} "
              f"({before} before, {load()} after)", flush=True)
    ratios = [(f[key] / h[key] if higher_is_better else h[key] / f[key])
              for f, h in zip(results["fit"], results["loop"], strict=True)]
    median = statistics.median(ratios)
    print(f"{name}: median fit/loop {median:.3f} over {rounds} rounds (fit {statistics.median(r[key] for r in results['fit']):.2f}"
          f", loop {statistics.median(r[key] for r in results['loop']):.2f} {key})", flush=True)
    return {"ratio": median, **results}


# ---------------------------------------------------------------- 2. end to end
def read_split(folder: Path, size, device, threads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What a user writes: decode every file with PIL on a few threads, resize, stack as uint8 on the device."""
    def read(path: Path):
        x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float()
        y = torch.from_numpy(np.asarray(Image.open(folder / "masks" / f"{path.stem}.png")).astype(np.int64))
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True).round().clamp(0, 255).to(torch.uint8)[0]
        y = F.interpolate(y[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(torch.uint8)
        return x, y

    with ThreadPoolExecutor(threads) as pool:
        pairs = list(pool.map(read, sorted((folder / "images").glob("*.jpg"))))
    return torch.stack([p[0] for p in pairs]).to(device), torch.stack([p[1] for p in pairs]).to(device)


def loop_e2e(root: Path, args, class_names) -> dict:
    device, threads = canonical(args.device_resolved), decode_threads()
    start = time.perf_counter()
    train_x, train_y = read_split(root / "train", tuple(args.size), device, threads)
    val_x, val_y = read_split(root / "validation", tuple(args.size), device, threads)
    model = make_model(args.model, class_names)
    loop = HandLoop(model, train_x, train_y, batch_size=args.batch_size, precision=args.precision, device=device)
    dtype, k = DTYPES[args.precision], len(class_names)
    for _epoch in range(args.epochs):
        for _ in range(-(-len(train_x) // args.batch_size)):
            loop.step()
        model.eval()
        confusion = torch.zeros(k * k, dtype=torch.long, device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for i in range(0, len(val_x), args.batch_size):
                y = val_y[i:i + args.batch_size].long()
                logits = model((val_x[i:i + args.batch_size].float() / 255 - loop.mean) / loop.std).float()
                keep = y != 255
                confusion += torch.bincount(y[keep] * k + logits.argmax(1)[keep], minlength=k * k)
        cm = confusion.view(k, k)
        float((cm.diag() / (cm.sum(0) + cm.sum(1) - cm.diag()).clamp(min=1)).mean())  # the epoch's score, printed
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_s": len(train_x) * args.epochs / seconds}


def fit_e2e(root: Path, args, class_names) -> dict:
    start = time.perf_counter()
    data = segnb.load_dataset(str(root))  # a fresh dataset: its cold pass is timed, not reused
    history = segnb.fit(make_model(args.model, class_names), data, epochs=args.epochs, batch_size=args.batch_size,
                        lr=1e-3, device=args.device, precision=args.precision, image_size=tuple(args.size),
                        num_workers=0, progress=False)
    synchronize(canonical(args.device_resolved))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_s": len(data[data.train_split]) * args.epochs / seconds,
            "stopped": history.stopped, "miou": history.last("miou")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", default="tiny", choices=["tiny", "unet-r18", "unet-r34"])
    parser.add_argument("--images", type=int, default=200, help="training images (plus a quarter for validation)")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), help="training size: height width")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=5, help="steps before the steady-state timing")
    parser.add_argument("--steps", type=int, default=20, help="steady-state steps timed")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the end-to-end figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=list(DTYPES))
    parser.add_argument("--compile", action="store_true", help="also the compiled step and its compile time")
    parser.add_argument("--parts", nargs="+", default=["steady", "e2e", "compile"], choices=["steady", "e2e", "compile"])
    args = parser.parse_args()
    args.device_resolved = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = canonical(args.device_resolved)
    validation = max(1, args.images // 4)
    shapes = segnb.load_dataset("shapes", n=args.images + validation, size=128,
                                val_fraction=validation / (args.images + validation))
    from segnb.data.export import export_folder

    with tempfile.TemporaryDirectory() as folder:
        root = export_folder(shapes, Path(folder) / "data", size=(360, 480))
        print(f"{args.model}, {args.images} train + {validation} validation JPEGs of 480x360 trained at "
              f"{args.size[1]}x{args.size[0]}, batch {args.batch_size}, {args.precision}; device {device}, "
              f"torch threads {torch.get_num_threads()}, decoding threads {decode_threads()}; {load()}", flush=True)
        names = shapes.class_names
        data = segnb.load_dataset(str(root))
        steady_common = dict(batch_size=args.batch_size, warmup=args.warmup, steps=args.steps,
                             device=args.device_resolved, precision=args.precision, image_size=tuple(args.size))
        preloaded = None
        if "steady" in args.parts or (args.compile and "compile" in args.parts):
            preloaded = preload(data, data.train_split, args.size, device)

        def steady_sides(compiled: bool) -> dict:
            return {
                "fit": lambda: time_fit(make_model(args.model, names), data, compile=compiled, **steady_common),
                "loop": lambda: HandLoop(make_model(args.model, names), *preloaded, batch_size=args.batch_size,
                                         precision=args.precision, device=device, compile=compiled)
                .time(args.warmup, args.steps),
            }

        if "steady" in args.parts:
            print(f"1. steady state: {args.steps} steps after {args.warmup}, data decoded on both sides", flush=True)
            paired("steady", args.rounds, steady_sides(False), "images_per_s")
        if "e2e" in args.parts:
            print(f"2. end to end: folder to the end of {args.epochs} epochs, validation every epoch, "
                  f"{decode_threads()} decoding threads on both sides", flush=True)
            paired("e2e", args.rounds, {"fit": lambda: fit_e2e(root, args, names),
                                        "loop": lambda: loop_e2e(root, args, names)}, "seconds",
                   higher_is_better=False)
        if args.compile and "compile" in args.parts:
            print("3. compile: torch.compile on both sides (first step less one steady step)", flush=True)
            sides = steady_sides(True)
            for round_ in range(args.rounds):
                f, h = sides["fit"](), sides["loop"]()
                print(f"  compile round {round_ + 1}: compile fit {compile_seconds(f):.1f} s, loop "
                      f"{compile_seconds(h):.1f} s; compiled steady state fit {f['images_per_s']:.1f}, loop "
                      f"{h['images_per_s']:.1f} images/s, fit/loop {f['images_per_s'] / h['images_per_s']:.3f} "
                      f"({load()})", flush=True)


if __name__ == "__main__":
    main()
