"""fit() with its defaults against a plain smp loop given the same wall time, on real data.

    .venv/bin/python benchmarks/bench_equal_time.py                       # both data sets, 3 seeds
    .venv/bin/python benchmarks/bench_equal_time.py --minutes 2 --datasets isbi
    .venv/bin/python benchmarks/bench_equal_time.py --fit batch_size=8 eval_every=1000   # other settings

Two data sets:

- ``isbi``: the ISBI 2012 membranes (30 grayscale slices of 512x512, two classes; 24 train,
  6 validation as ``load_dataset`` splits them) from ``../shared/data/isbi2012-membrane``
  relative to the project root (``--isbi PATH`` elsewhere); skipped, saying so, when absent;
- ``shapes``: the built-in data set (``--shapes-images`` scenes of 128 px) exported as JPEG images
  and PNG masks, then read back with ``load_dataset(folder)``.

For each seed, both sides run at the same time in two processes with the same number of torch
threads (``--threads``, 1 by default), so that they share whatever load the machine has:

- ``fit``: ``fit(model, data, max_minutes=M, image_size=S, device=D, seed=seed, **extra)`` and
  nothing else (``--fit key=value`` adds options; the values are read as JSON, else as text);
- ``loop``: the loop a user writes in 40 lines: the split decoded once and kept as uint8 tensors,
  batch 8, AdamW at a constant lr of 1e-3, random horizontal flips, cross-entropy, no validation
  until the end. It trains until fit() returns (checked between steps), so its wall time is fit's,
  fit's data loading, validation and checks included.

The model (``--arch``, ``--encoder``, ``--model-options``) is smp's U-Net on mobilenetv3_small_100 with
decoder channels (64, 32, 16, 16, 16), random init, at 128x128 (``--size``): light enough that a
2-minute budget (``--minutes``) on a CPU core trains more than a handful of steps.

Each model is then scored the same way, outside the timed part: ``segnb.evaluate(model, data,
image_size=S)`` on the validation split (mIoU). Both sides build the same model from the same
seed. The median over the seeds is the figure; the script prints the load average before and
after each pair and the CPU seconds each side got (a side that got less CPU time is visible).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISBI = ROOT.parent / "shared" / "data" / "isbi2012-membrane"
LOOP_BATCH, LOOP_LR = 8, 1e-3


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load(path: str):
    import segnb

    return segnb.load_dataset(path)


def build(args, data, seed: int):
    import torch

    import segnb

    torch.manual_seed(seed)
    return segnb.build_model(args.arch, args.encoder, class_names=data.class_names, pretrained=False,
                             **dict(args.model_options))


def score(model, data, args) -> dict:
    import segnb

    start = time.perf_counter()
    report = segnb.evaluate(model, data, image_size=tuple(args.size), device=args.device)
    return {"miou": report.miou, "pixel_accuracy": report.scores.pixel_accuracy,
            "score_seconds": time.perf_counter() - start}


def side_fit(args, done: Path) -> dict:
    import segnb

    options = dict(args.fit)
    start, cpu = time.perf_counter(), time.process_time()
    data = load(args.data)
    model = build(args, data, args.seed)
    try:
        history = segnb.fit(model, data, max_minutes=args.minutes, image_size=tuple(args.size),
                            device=args.device, seed=args.seed, **options)
    finally:
        done.write_text("done")
    result = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
              "steps": history.steps, "epochs": len(history.epochs), "stopped": history.stopped,
              "validations": sum(e.get("miou") is not None for e in history.epochs)}
    return {**result, **score(model, data, args)}


def side_loop(args, done: Path) -> dict:
    """The plain loop: what a user writes with smp in about 40 lines."""
    import torch
    import torch.nn.functional as F

    start, cpu = time.perf_counter(), time.process_time()
    data = load(args.data)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build(args, data, args.seed).to(device)
    size = tuple(args.size)
    images, masks = [], []
    split = data[data.train_split]
    for i in range(len(split)):  # decode once, resize, keep as uint8
        image, mask = split[i]
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        images.append(F.interpolate(x, size=size, mode="bilinear", antialias=True).round().clamp(0, 255).byte()[0])
        y = torch.from_numpy(mask)[None, None].float()
        masks.append(F.interpolate(y, size=size, mode="nearest-exact")[0, 0].long())
    train_x, train_y = torch.stack(images).to(device), torch.stack(masks).to(device)
    mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.std, device=device).view(1, 3, 1, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LOOP_LR)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    steps = epochs = 0
    model.train()
    while not done.exists():
        order = torch.randperm(len(train_x), device=device, generator=generator)
        for i in range(0, len(order), LOOP_BATCH):
            index = order[i:i + LOOP_BATCH]
            x, y = train_x[index], train_y[index]
            flip = torch.rand(len(x), device=device, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None], y.flip(-1), y)
            loss = F.cross_entropy(model((x.float() / 255 - mean) / std), y, ignore_index=data.ignore_index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if done.exists():
                break
        epochs += 1
        if time.perf_counter() - start > 3 * 60 * args.minutes + 600:  # fit never ended: stop anyway
            break
    result = {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
              "steps": steps, "epochs": epochs}
    return {**result, **score(model, data, args)}


def run_side(args) -> None:
    import torch

    import segnb

    segnb.fit, segnb.evaluate, segnb.build_model, segnb.load_dataset  # noqa: B018 - imported before the start
    torch.set_num_threads(args.threads)
    done = Path(args.done)
    Path(f"{done}.{args.side}").write_text("ready")  # both sides start the clock together, imports done
    while not all(Path(f"{done}.{side}").exists() for side in ("fit", "loop")):
        time.sleep(0.05)
    result = (side_fit if args.side == "fit" else side_loop)(args, done)
    Path(args.out).write_text(json.dumps(result))


def export_shapes(folder: Path, n: int) -> Path:
    from segnb.data import load_shapes
    from segnb.data.export import export_folder

    return export_folder(load_shapes(n=n, size=128, seed=0), folder / "shapes-jpeg", image_format="jpg")


def pair(args, name: str, path: Path, seed: int, work: Path) -> dict:
    """Both sides at once, for the same wall time; the launch order alternates with the seed."""
    done = work / f"{name}-{seed}.done"
    for stale in (done, Path(f"{done}.fit"), Path(f"{done}.loop")):
        stale.unlink(missing_ok=True)
    common = [sys.executable, __file__, "--data", str(path), "--seed", str(seed), "--done", str(done),
              "--minutes", str(args.minutes), "--threads", str(args.threads), "--device", args.device,
              "--arch", args.arch, "--encoder", args.encoder, "--size", *map(str, args.size),
              "--model-options", *(f"{k}={json.dumps(v)}" for k, v in args.model_options)]
    fit_options = [f"{k}={json.dumps(v)}" for k, v in args.fit]
    processes = {}
    sides = ["fit", "loop"] if seed % 2 == 0 else ["loop", "fit"]
    load_before = os.getloadavg()
    for side in sides:
        out = work / f"{name}-{seed}-{side}.json"
        command = common + ["--side", side, "--out", str(out)] + (["--fit", *fit_options] if side == "fit" and
                                                                   fit_options else [])
        log = open(work / f"{name}-{seed}-{side}.log", "w")  # noqa: SIM115 - closed below
        processes[side] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), out, log)
    results = {}
    for side, (process, out, log) in processes.items():
        code = process.wait()
        log.close()
        if code != 0 or not out.exists():
            tail = (work / f"{name}-{seed}-{side}.log").read_text()[-2000:]
            results[side] = {"error": f"exit {code}: {tail}"}
        else:
            results[side] = json.loads(out.read_text())
    results["load_before"], results["load_after"] = load_before, os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--datasets", nargs="+", default=["isbi", "shapes"], choices=["isbi", "shapes"])
    parser.add_argument("--isbi", default=str(ISBI), help="the ISBI 2012 membranes folder")
    parser.add_argument("--shapes-images", type=int, default=250, help="built-in scenes (80%% train)")
    parser.add_argument("--minutes", type=float, default=2.0, help="fit's max_minutes (the loop gets fit's wall time)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="mobilenetv3_small_100")
    parser.add_argument("--model-options", nargs="*", default=["decoder_channels=[64,32,16,16,16]"],
                        metavar="KEY=VALUE", help="more build_model() options (JSON values)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), help="training size: height width")
    parser.add_argument("--fit", nargs="*", default=[], metavar="KEY=VALUE", help="more fit() options")
    parser.add_argument("--json", help="write every result here")
    # one side, in a child process
    parser.add_argument("--side", choices=["fit", "loop"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--done", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.fit = [(k, parse_value(v)) for k, v in (item.split("=", 1) for item in args.fit)]
    args.model_options = [(k, parse_value(v)) for k, v in (item.split("=", 1) for item in args.model_options)]
    if args.side:
        run_side(args)
        return

    print(f"{args.arch}/{args.encoder} {dict(args.model_options)} at {args.size[0]}x{args.size[1]}, fit(max_minutes={args.minutes:g}"
          f"{''.join(f', {k}={v!r}' for k, v in args.fit)}) vs the plain loop (batch {LOOP_BATCH}, constant lr "
          f"{LOOP_LR:g}, flips, preloaded), {args.threads} torch thread(s) each, both at once; device {args.device}; "
          f"seeds {args.seeds}", flush=True)
    summary = {"minutes": args.minutes, "fit_options": dict(args.fit), "arch": args.arch, "encoder": args.encoder,
               "model_options": dict(args.model_options),
               "size": list(args.size), "threads": args.threads, "datasets": {}}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name in args.datasets:
            if name == "isbi":
                path = Path(args.isbi)
                if not path.is_dir():
                    print(f"isbi: SKIPPED: the membranes are not at {path} (give --isbi PATH)", flush=True)
                    summary["datasets"][name] = {"skipped": f"not found at {path}"}
                    continue
            else:
                path = export_shapes(work, args.shapes_images)
            rounds = []
            for seed in args.seeds:
                result = pair(args, name, path, seed, work)
                rounds.append(result)
                f, loop = result["fit"], result["loop"]
                if "error" in f or "error" in loop:
                    print(f"{name} seed {seed}: FAILED: fit {f.get('error', 'ok')} | loop {loop.get('error', 'ok')}",
                          flush=True)
                    continue
                print(f"{name} seed {seed}: fit mIoU {f['miou']:.3f} ({f['steps']} steps, {f['epochs']} epochs, "
                      f"{f['validations']} validations, {f['seconds']:.0f} s, {f['cpu_seconds']:.0f} CPU s, "
                      f"{f['stopped']}) | loop mIoU {loop['miou']:.3f} ({loop['steps']} steps, {loop['epochs']} epochs,"
                      f" {loop['seconds']:.0f} s, {loop['cpu_seconds']:.0f} CPU s) | ratio {f['miou'] / loop['miou']:.3f}"
                      f" | load {result['load_before'][0]:.1f} before, {result['load_after'][0]:.1f} after", flush=True)
            good = [r for r in rounds if "error" not in r["fit"] and "error" not in r["loop"]]
            entry = {"rounds": rounds}
            if good:
                fit_median = statistics.median(r["fit"]["miou"] for r in good)
                loop_median = statistics.median(r["loop"]["miou"] for r in good)
                ratio = statistics.median(r["fit"]["miou"] / r["loop"]["miou"] for r in good)
                entry.update(fit_miou=fit_median, loop_miou=loop_median, ratio_of_medians=fit_median / loop_median,
                             median_ratio=ratio)
                print(f"{name}: median of {len(good)} seeds: fit mIoU {fit_median:.3f}, loop {loop_median:.3f}, "
                      f"fit/loop {fit_median / loop_median:.3f} (median of the seeds' ratios {ratio:.3f}; goal >= 1.0)",
                      flush=True)
            summary["datasets"][name] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
