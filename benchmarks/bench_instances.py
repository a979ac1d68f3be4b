"""Mask R-CNN (small backbone) trained with fit() on the built-in dataset within a time budget: mask AP50.

    .venv/bin/python benchmarks/bench_instances.py                       # 3 minutes, CPU, the defaults
    .venv/bin/python benchmarks/bench_instances.py --minutes 1 --encoder resnet18

Goal (issue 15): mask AP50 >= 0.5 after at most 3 minutes of training on a CPU.

The model is built exactly as a user gets it (``build_model("maskrcnn", ...)`` with its CPU
settings, ``segnb.models.maskrcnn.CPU_SETTINGS``) and trained with ``fit(max_minutes=...)``,
which lays the warm-up and cosine schedule over the time budget (``FIT_DEFAULTS``: learning
rate and batch size). The budget is wall-clock time, so a machine shared with other work
trains fewer steps in it: the script prints the CPU seconds this process got, the steps, and
the load average, so runs on a loaded machine are not mistaken for the machine's speed. fit's
validation pass after training (200 images, mask AP by torchmetrics) is timed separately.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import segnb
from segnb.models.maskrcnn import FIT_DEFAULTS
from segnb.train import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--encoder", default="mobilenetv3_small_100")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=FIT_DEFAULTS["batch_size"])
    parser.add_argument("--lr", type=float, default=FIT_DEFAULTS["lr"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = segnb.load_dataset("shapes", n=args.images, seed=args.seed)
    model = segnb.build_model("maskrcnn", args.encoder, class_names=data.class_names, things=data.things)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    trained = {}

    class Clock(segnb.callbacks.Callback):  # the end of the last step, before validation
        def on_step_end(self, trainer):
            trained["wall"], trained["cpu"] = time.perf_counter() - wall, time.process_time() - cpu

    history = fit(model, data, max_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                  device=args.device, progress=False, seed=args.seed, eval_every=10_000, callbacks=[Clock()])
    load_after = os.getloadavg()[0]
    eval_s = time.perf_counter() - wall - trained["wall"]  # fit's validation pass after the last step
    last = history.epochs[-1]
    terms = ", ".join(f"{k[5:]} {last[k]:.3f}" for k in last if k.startswith("loss_"))
    print(f"Mask R-CNN on {args.encoder}, shapes n={args.images} (train {len(data['train'])}), "
          f"batch {args.batch_size}, lr {args.lr:g}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {load_before:.1f} before / {load_after:.1f} after")
    print(f"  training: {trained['wall']:.0f} s wall of a {args.minutes * 60:.0f} s budget, {trained['cpu']:.0f} "
          f"CPU s for this process, {history.steps} steps ({history.steps / trained['wall']:.2f} steps/s wall, "
          f"{trained['cpu'] / history.steps:.2f} CPU s/step), {len(history.epochs)} epochs, "
          f"stopped: {history.stopped}")
    print(f"  last epoch losses: {terms}")
    print(f"  validation ({len(data[data.eval_split])} images, {eval_s:.0f} s): mask AP {last['mask_ap']:.3f}, "
          f"AP50 {last['mask_ap50']:.3f}, AP75 {last['mask_ap75']:.3f}  (goal AP50 >= 0.5)")


if __name__ == "__main__":
    main()
