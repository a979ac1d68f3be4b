"""fit() against the loop a user writes with the whole split preloaded as tensors.

    # the input path and per-step overhead (what a GPU sees): a near-free model at 96x128
    .venv/bin/python benchmarks/bench_fit.py --model tiny --size 96 128 --images 200
    # a real model: U-Net on ResNet-18 at 352x480 (slow on a CPU: few images)
    .venv/bin/python benchmarks/bench_fit.py --model unet-r18 --size 352 480 --images 16 --batch-size 8
    # on a GPU: bf16 against fp32, peak memory, compile
    .venv/bin/python benchmarks/bench_fit.py --device cuda --model unet-r18 --size 352 480 \
        --images 367 --batch-size 32 --precision bf16 fp32
    .venv/bin/python benchmarks/bench_fit.py --device cuda --model unet-r34 --size 512 512 \
        --images 367 --batch-size 16 --precision bf16 fp32

The built-in dataset is exported at 360x480 as JPEG images and PNG masks to a temporary folder
(what a dataset on disk looks like). Both sides are timed from reading that folder to the end of
``--epochs`` epochs, validation every epoch:

- preloaded loop: PIL decodes every file once, resizes it to the training size, and keeps the split
  as uint8 tensors on the device; each epoch shuffles, flips at random per image, normalises,
  trains (autocast, AdamW, clipping) and validates (loss and confusion matrix);
- fit(): ``load_dataset(folder)`` then ``fit(..., image_size=size)`` with its defaults (the
  decoded cache, flips on the device, progress and history on).

Images/s = training images x epochs / wall time. Same model, batch size, precision and lr.
Each round runs both sides back to back, in alternating order; the ratio is printed best vs best and
as the median of the rounds' own ratios (steadier on a shared machine: use ``--rounds 5``).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from segnb.callbacks import ProgressCallback
from segnb.data import load_dataset, load_shapes
from segnb.data.export import export_folder
from segnb.models import build_model
from segnb.progress import ConsoleRenderer
from segnb.train import fit, resolve_device

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_model(name: str, num_classes: int, class_names) -> nn.Module:
    if name == "tiny":  # near-free: what is timed is the input path and the per-step overhead
        model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, num_classes, 1))
        model.num_classes = num_classes
        return model
    if name in ("unet-r18", "unet-r34"):
        return build_model("unet", "resnet" + name[-2:], class_names=class_names, pretrained=False)
    raise SystemExit(f"--model must be tiny, unet-r18 or unet-r34, got {name!r}")


def read_split(folder: Path, size, device) -> tuple[torch.Tensor, torch.Tensor]:
    """What a user writes: decode every file with PIL, resize, stack as uint8 on the device."""
    images, masks = [], []
    for path in sorted((folder / "images").glob("*.jpg")):
        x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None]
        y = torch.from_numpy(np.asarray(Image.open(folder / "masks" / f"{path.stem}.png")).astype(np.int64))
        x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear",
                          antialias=True, align_corners=False)[0]
        y = F.interpolate(y[None, None].float(), size=size, mode="nearest-exact")[0, 0].to(torch.uint8)
        images.append(x)
        masks.append(y)
    return torch.stack(images).to(device), torch.stack(masks).to(device)


def preloaded_loop(root: Path, args, precision: str, num_classes: int, class_names) -> dict:
    device, dtype = resolve_device(args.device), DTYPES[precision]
    torch.manual_seed(0)
    start = time.perf_counter()
    train_x, train_y = read_split(root / "train", tuple(args.size), device)
    val_x, val_y = read_split(root / "validation", tuple(args.size), device)
    model = make_model(args.model, num_classes, class_names).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)

    def prepare(x):
        return (x.float() / 255 - mean) / std

    for _epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x), device=device)
        for i in range(0, len(order), args.batch_size):
            index = order[i:i + args.batch_size]
            x, y = train_x[index], train_y[index].long()
            flip = torch.rand(len(x), device=device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None], y.flip(-1), y)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(model(prepare(x)), y, ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        model.eval()
        confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for i in range(0, len(val_x), args.batch_size):
                y = val_y[i:i + args.batch_size].long()
                logits = model(prepare(val_x[i:i + args.batch_size])).float()
                F.cross_entropy(logits, y, ignore_index=255)
                keep = y != 255
                confusion += torch.bincount(y[keep] * num_classes + logits.argmax(1)[keep],
                                            minlength=num_classes**2)
        iou = confusion.view(num_classes, num_classes).diag() / (
            confusion.view(num_classes, num_classes).sum(0) + confusion.view(num_classes, num_classes).sum(1)
            - confusion.view(num_classes, num_classes).diag()).clamp(min=1)
        float(iou.mean())  # the host reads the epoch's score, as a user prints it
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_s": len(train_x) * args.epochs / seconds}


def with_fit(root: Path, args, precision: str, num_classes: int, class_names) -> dict:
    torch.manual_seed(0)
    start = time.perf_counter()
    data = load_dataset(str(root))  # a fresh dataset: the cold pass is timed, not reused
    model = make_model(args.model, num_classes, class_names)
    progress = ProgressCallback(ConsoleRenderer(stream=io.StringIO(), interval=0.5))
    trainer_line = io.StringIO()
    progress.renderer.note = lambda text: trainer_line.write(text)
    history = fit(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, progress=progress,
                  device=args.device, precision=precision, image_size=tuple(args.size), compile=args.compile)
    if torch.cuda.is_available() and resolve_device(args.device).type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    train_images = len(data[data.train_split])
    return {"seconds": seconds, "images_per_s": train_images * args.epochs / seconds, "path": trainer_line.getvalue(),
            "stopped": history.stopped, "miou": history.last("miou")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "unet-r18", "unet-r34"])
    parser.add_argument("--images", type=int, default=200, help="training images (plus a quarter for validation)")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), help="training size: height width")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="fit(compile=True)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=list(DTYPES))
    args = parser.parse_args()
    device = resolve_device(args.device)
    validation = max(1, args.images // 4)
    shapes = load_shapes(n=args.images + validation, size=128, val_fraction=validation / (args.images + validation))
    with tempfile.TemporaryDirectory() as folder:
        root = export_folder(shapes, Path(folder) / "data", size=(360, 480))
        print(f"{args.model}, {args.images} train + {validation} validation JPEGs of 480x360 trained at "
              f"{args.size[1]}x{args.size[0]}, batch {args.batch_size}, {args.epochs} epochs, validation every "
              f"epoch; device {device}, torch threads {torch.get_num_threads()}")
        best = {}
        for precision in args.precision:
            hand, ours = [], []
            for round_ in range(args.rounds):
                peak = {}
                sides = [("loop", preloaded_loop, hand), ("fit", with_fit, ours)]
                for name, run, results in sides if round_ % 2 == 0 else sides[::-1]:  # alternate the order
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    results.append(run(root, args, precision, shapes.num_classes, shapes.class_names))
                    peak[name] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
                hand_memory, fit_memory = peak["loop"], peak["fit"]
                memory = (f"; peak GPU memory: loop {hand_memory:.2f} GiB, fit {fit_memory:.2f} GiB"
                          if device.type == "cuda" else "")
                print(f"{precision} round {round_ + 1}: preloaded loop {hand[-1]['images_per_s']:.1f} images/s "
                      f"({hand[-1]['seconds']:.1f} s), fit() {ours[-1]['images_per_s']:.1f} images/s "
                      f"({ours[-1]['seconds']:.1f} s, {ours[-1]['stopped']}, val mIoU {ours[-1]['miou']:.3f})"
                      f"{memory}")
            print(f"  fit() {ours[-1]['path']}")
            h = max(r["images_per_s"] for r in hand)
            o = max(r["images_per_s"] for r in ours)
            best[precision] = (h, o)
            paired = [a["images_per_s"] / b["images_per_s"] for a, b in zip(ours, hand, strict=True)]
            print(f"{precision} best: preloaded loop {h:.1f} images/s, fit() {o:.1f} images/s, "
                  f"ratio fit/loop {o / h:.3f}; median of the {len(paired)} rounds' ratios "
                  f"{statistics.median(paired):.3f}")
        if "bf16" in best and "fp32" in best:
            print(f"bf16 / fp32: preloaded loop {best['bf16'][0] / best['fp32'][0]:.2f}x, "
                  f"fit() {best['bf16'][1] / best['fp32'][1]:.2f}x")


if __name__ == "__main__":
    main()
