"""Mask R-CNN (small backbone) trained with fit() on the built-in dataset within a time budget: mask AP50.

    .venv/bin/python benchmarks/bench_instances.py                       # 3 minutes, CPU, the defaults
    .venv/bin/python benchmarks/bench_instances.py --minutes 1 --encoder resnet18
    .venv/bin/python benchmarks/bench_instances.py --cpu-minutes 3      # on a shared machine, see below

Goal (issue 15): mask AP50 >= 0.5 after at most 3 minutes of training on a CPU.

The model is built exactly as a user gets it (``build_model("maskrcnn", ...)`` with its CPU
settings, ``segnb.instances.maskrcnn.CPU_SETTINGS``) and trained with ``fit(max_minutes=...)``,
which lays the warm-up and cosine schedule over the time budget (``FIT_DEFAULTS``: learning
rate and batch size). The budget is wall-clock time, so a machine shared with other work
trains fewer steps in it: the script prints the CPU seconds this process got, the steps, and
the load average, so runs on a loaded machine are not mistaken for the machine's speed. fit's
validation pass after training (200 images, mask AP by torchmetrics) is timed separately.

``--cpu-minutes`` budgets the CPU time this process gets instead of the wall clock, for a
machine shared with other work: a calibration of a few steps gives the CPU seconds per step,
the cosine schedule is laid over the steps that fit the budget (calibration included), and
training stops there, or earlier if the budget is spent. On an idle machine with one torch
thread both budgets are the same.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import segnb
from segnb.callbacks import StopTraining
from segnb.data.base import SegTransform
from segnb.instances.maskrcnn import FIT_DEFAULTS
from segnb.instances.targets import InstanceSplit, collate_instances
from segnb.train import cosine_lr, evaluate, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget")
    parser.add_argument("--cpu-minutes", type=float, default=None,
                        help="budget the CPU time of this process instead (a shared machine)")
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

    if args.cpu_minutes:
        steps = _steps_in_cpu_budget(model, data, args)
        budget = f"{args.cpu_minutes * 60:.0f} CPU s budget ({steps} steps planned)"

        def schedule(step, total, lr, warmup):  # cosine over the planned steps, whatever fit plans
            return cosine_lr(step, steps, lr, warmup)

        class Stop(segnb.callbacks.Callback):
            def on_step_end(self, trainer):
                if trainer.step >= steps or time.process_time() - cpu > args.cpu_minutes * 60:
                    raise StopTraining(f"the CPU budget, at step {trainer.step} of {steps} planned")

        history = fit(model, data, epochs=10_000, batch_size=args.batch_size, lr=args.lr, device=args.device,
                      progress=False, seed=args.seed, eval_every=10_000, scheduler=schedule,
                      callbacks=[Clock(), Stop()])
    else:
        budget = f"{args.minutes * 60:.0f} s wall budget"
        history = fit(model, data, max_minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                      device=args.device, progress=False, seed=args.seed, eval_every=10_000, callbacks=[Clock()])
    load_after = os.getloadavg()[0]
    last = history.epochs[-1] if history.epochs else {}
    t0 = time.perf_counter()
    if "mask_ap50" in last:  # fit validated after its last step
        scores, eval_s = last, t0 - wall - trained["wall"]
    else:  # stopped by the CPU budget within an epoch: validate now, the same way
        scores = evaluate(model, data, device=args.device).as_dict()
        eval_s = time.perf_counter() - t0
    terms = ", ".join(f"{k[5:]} {last[k]:.3f}" for k in last if k.startswith("loss_"))
    print(f"Mask R-CNN on {args.encoder}, shapes n={args.images} (train {len(data['train'])}), "
          f"batch {args.batch_size}, lr {args.lr:g}, device {args.device}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {load_before:.1f} before / {load_after:.1f} after")
    print(f"  training ({budget}): {trained['wall']:.0f} s wall, {trained['cpu']:.0f} CPU s for this process"
          f"{' (calibration included)' if args.cpu_minutes else ''}, {history.steps} steps ({history.steps / trained['wall']:.2f} steps/s wall, "
          f"{trained['cpu'] / history.steps:.2f} CPU s/step), stopped: {history.stopped}")
    if terms:
        print(f"  last epoch losses: {terms}")
    print(f"  validation ({len(data[data.eval_split])} images, {eval_s:.0f} s): mask AP {scores['mask_ap']:.3f}, "
          f"AP50 {scores['mask_ap50']:.3f}, AP75 {scores['mask_ap75']:.3f}  (goal AP50 >= 0.5)")


def _steps_in_cpu_budget(model, data, args) -> int:
    """Training steps that fit in ``--cpu-minutes`` of this process's CPU time (a few measured
    steps on a copy of the model; their time counts against the budget)."""
    import copy

    start = time.process_time()
    probe_model = copy.deepcopy(model).to(args.device).train()
    split = InstanceSplit(data, data.train_split, SegTransform(train=True, mean=model.mean, std=model.std),
                          model.thing_ids)
    images, targets = collate_instances([split[i] for i in range(args.batch_size)])
    optimizer = torch.optim.AdamW(probe_model.parameters(), lr=1e-5)
    times = []
    for _ in range(4):
        t0 = time.process_time()
        loss = sum(probe_model(images.to(args.device), [{k: v.to(args.device) for k, v in t.items()}
                                                        for t in targets]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.process_time() - t0)
    left = args.cpu_minutes * 60 - (time.process_time() - start)
    # fit's steps also load and augment their batches: ~10% over the bare step (measured)
    return max(1, int(left / (1.1 * float(np.median(times[1:])))))


if __name__ == "__main__":
    main()
