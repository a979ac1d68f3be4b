"""fit() training throughput against a hand-written PyTorch loop: same model, data, batch size.

    .venv/bin/python benchmarks/bench_fit.py [--images 320] [--rounds 2]
    # on a GPU, bf16 against fp32 for a U-Net on ResNet-34 at 512 px:
    .venv/bin/python benchmarks/bench_fit.py --device cuda --arch unet --encoder resnet34 \
        --size 512 --images 512 --batch-size 16 --precision bf16 fp32

Both run the same images per round, alternating, and the best round of each
counts (the machine is shared and noisy). fit() runs with its progress and
history callbacks on; evaluation time is excluded from both.
"""

from __future__ import annotations

import argparse
import io
import time

import torch
import torch.nn.functional as F

from segnb.callbacks import ProgressCallback
from segnb.data import load_shapes
from segnb.models import build_model
from segnb.progress import ConsoleRenderer
from segnb.train import fit, resolve_device

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def hand_loop(data, args, precision: str, seed: int) -> float:
    torch.manual_seed(seed)
    device = resolve_device(args.device)
    model = build_model(args.arch, args.encoder, class_names=data.class_names).to(device)
    loader = data.loader("train", batch_size=args.batch_size, seed=seed, mean=model.mean, std=model.std)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    dtype = DTYPES[precision]
    model.train()
    start, seen = time.perf_counter(), 0
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(images).float(), masks, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seen += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def with_fit(data, args, precision: str, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model(args.arch, args.encoder, class_names=data.class_names)
    progress = ProgressCallback(ConsoleRenderer(stream=io.StringIO(), interval=0.5))
    history = fit(model, data, epochs=1, batch_size=args.batch_size, lr=1e-3, progress=progress, seed=seed,
                  device=args.device, precision=precision)
    return history.epochs[-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--arch", default="unet-classic")
    parser.add_argument("--encoder", default="vgg-tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=list(DTYPES))
    args = parser.parse_args()
    data = load_shapes(n=args.images + 16, size=args.size, val_fraction=16 / (args.images + 16))
    print(f"{args.arch} on {args.encoder}, {args.size} px, batch {args.batch_size}, "
          f"device {resolve_device(args.device)}")
    for precision in args.precision:
        hand, ours = [], []
        for round_ in range(args.rounds):
            hand.append(hand_loop(data, args, precision, round_))
            ours.append(with_fit(data, args, precision, round_))
            print(f"{precision} round {round_ + 1}: hand loop {hand[-1]:.1f} images/s, fit() {ours[-1]:.1f} images/s")
        print(f"{precision} best: hand loop {max(hand):.1f} images/s, fit() {max(ours):.1f} images/s, "
              f"ratio fit/hand {max(ours) / max(hand):.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
