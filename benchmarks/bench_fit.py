"""fit() training throughput against a hand-written PyTorch loop: same model, data, batch size.

    .venv/bin/python benchmarks/bench_fit.py [--images 320] [--rounds 2]

Both run the same number of images per round, alternating, and the best round
of each counts (the machine is shared and noisy). fit() runs with its progress
and history callbacks on; evaluation time is excluded from both.
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
from segnb.train import fit


def hand_loop(data, batch_size: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model("unet-classic", "vgg-tiny", class_names=data.class_names)
    loader = data.loader("train", batch_size=batch_size, seed=seed, mean=model.mean, std=model.std)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    start, seen = time.perf_counter(), 0
    for images, masks in loader:
        loss = F.cross_entropy(model(images), masks, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        seen += len(images)
    return seen / (time.perf_counter() - start)


def with_fit(data, batch_size: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model("unet-classic", "vgg-tiny", class_names=data.class_names)
    progress = ProgressCallback(ConsoleRenderer(stream=io.StringIO(), interval=0.5))
    history = fit(model, data, epochs=1, batch_size=batch_size, lr=1e-3, progress=progress, seed=seed)
    return history.epochs[-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    data = load_shapes(n=args.images + 16, size=128, val_fraction=16 / (args.images + 16))
    hand, ours = [], []
    for round_ in range(args.rounds):
        hand.append(hand_loop(data, args.batch_size, round_))
        ours.append(with_fit(data, args.batch_size, round_))
        print(f"round {round_ + 1}: hand loop {hand[-1]:.1f} images/s, fit() {ours[-1]:.1f} images/s")
    print(f"best: hand loop {max(hand):.1f} images/s, fit() {max(ours):.1f} images/s, "
          f"ratio fit/hand {max(ours) / max(hand):.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
