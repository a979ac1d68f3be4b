"""Mask R-CNN (small backbone) trained with fit() on the built-in dataset within a time budget: mask AP50.

    .venv/bin/python benchmarks/bench_instances.py                       # 3 minutes, CPU
    .venv/bin/python benchmarks/bench_instances.py --minutes 1 --encoder resnet18

The budget covers training only (a calibration of a few steps included); the
validation pass that follows (200 images) is timed and printed separately.
Epochs are chosen so the cosine schedule ends at the budget; ``max_minutes``
stops training if the machine slows down meanwhile (it is shared: say so when
quoting the figures).
"""

from __future__ import annotations

import argparse
import time

import torch

import segnb
from segnb.instances.targets import InstanceSplit, collate_instances
from segnb.instances.train import evaluate_instances
from segnb.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--encoder", default="mobilenetv3_small_100")
    parser.add_argument("--fpn-channels", type=int, default=64)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = segnb.load_dataset("shapes", n=args.images, seed=args.seed)
    model = segnb.build_model("maskrcnn", args.encoder, class_names=data.class_names, things=data.things,
                              fpn_channels=args.fpn_channels)
    start = time.perf_counter()
    # Calibrate: seconds per training step on this machine now (part of the budget).
    probe = InstanceSplit(data, "train", segnb.data.SegTransform(train=True, mean=model.mean, std=model.std),
                          model.thing_ids)
    images, targets = collate_instances([probe[i] for i in range(args.batch_size)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.to(args.device).train()
    for _ in range(3):
        t0 = time.perf_counter()
        loss = sum(model(images.to(args.device), [{k: v.to(args.device) for k, v in t.items()}
                                                  for t in targets]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_s = time.perf_counter() - t0
    steps_per_epoch = -(-len(data["train"]) // args.batch_size)
    left = args.minutes * 60 - (time.perf_counter() - start)
    epochs = max(1, int(left / (step_s * steps_per_epoch * 1.1)))
    history = fit(model, data, epochs=epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
                  max_minutes=left / 60, progress=False, seed=args.seed)
    train_s = time.perf_counter() - start
    t0 = time.perf_counter()
    scores = evaluate_instances(model, data)
    eval_s = time.perf_counter() - t0
    last = history.epochs[-1] if history.epochs else {}
    terms = ", ".join(f"{k[5:]} {last[k]:.3f}" for k in last if k.startswith("loss_"))
    print(f"Mask R-CNN on {args.encoder} (FPN {args.fpn_channels}), shapes n={args.images}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  training: {train_s:.0f} s of a {args.minutes * 60:.0f} s budget, {epochs} epochs planned "
          f"({step_s:.2f} s/step at calibration), {history.steps} steps, stopped: {history.stopped}")
    print(f"  last epoch losses: {terms}")
    print(f"  validation ({len(data[data.eval_split])} images, {eval_s:.0f} s): mask AP {scores.mask_ap:.3f}, "
          f"AP50 {scores.mask_ap50:.3f}, AP75 {scores.mask_ap75:.3f}  (goal AP50 >= 0.5)")


if __name__ == "__main__":
    main()
