"""One check of the GPU path in one call: prints one JSON summary (at most 8 minutes on one GPU).

    .venv/bin/python benchmarks/gpu_check.py --json gpu_check.json          # on a GPU machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu                   # the CPU smoke test (seconds)

Sections (each one timed; an error in one is caught and reported under its name, and the
run goes on; sections that no longer fit in ``--max-minutes`` are reported as skipped):

- ``sync``: 50 steady-state steps of fit()'s step under ``torch.cuda.set_sync_debug_mode``:
  first ``"warn"``, recording every synchronising call with the step it happened in and where
  (file:line), then ``"error"``, which fails at the first one. On every device, the same 50 steps
  under a ``TorchDispatchMode`` that counts reads of a device value by the host
  (``aten._local_scalar_dense``: ``.item()``, ``float()``, ``if tensor:``) and copies to the host.
- ``fit_vs_loop``: U-Net/ResNet-18 at 352x480, bf16, channels_last, batch 16 and 32, eager: fit()
  against the hand loop with the split preloaded on the device, steady-state images/s after
  warm-up (3 paired rounds, the ratio as their median), peak memory.
- ``precision``: bf16 against fp32 at 512x512 (U-Net/ResNet-34 on a GPU), both sides.
- ``cache``: one epoch each of ``fit(cache="device")``, ``"ram"`` and ``False`` (streaming).
- ``maskrcnn``: 20 Mask R-CNN steps through fit().
- ``inference``: one batch each of predict, evaluate and the inspectors (soft mask, entropy,
  margin, calibration, stage features, Grad-CAM, per-class table, boundary IoU).
- ``compiled``: ``fit_vs_loop`` with ``torch.compile`` on both sides (one round), and the compile
  times (the first step less one steady step). Last, as the longest: on the CPU it is skipped.

The data are the built-in scenes exported as JPEG images and PNG masks (``load_dataset(folder)``,
the real input path). Goals (issue 22): fit() >= 0.9x the hand loop in steady state, eager and
compiled; bf16 >= 1.5x fp32 at 512 px; no synchronising call in a steady-state step apart from
the non-finite flag read every N steps. ``goals`` in the JSON says which were met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import torch

import segnb
from segnb.callbacks import Callback, StopTraining

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steady import HandLoop, compile_seconds, preload, synchronize, time_fit  # noqa: E402

# Sizes: a GPU run, and the CPU smoke test (tiny, seconds).
SETTINGS = {
    "cuda": dict(size=(352, 480), file_size=(360, 480), batches=(16, 32), train=256, val=32, warmup=10, steps=30,
                 rounds=3, sync_steps=50, warm_sync=10, precision_size=(512, 512), precision_encoder="resnet34",
                 precision_batch=16, mask_steps=20, mask_batch=8, arch="unet", encoder="resnet18", compile=True),
    "cpu": dict(size=(32, 32), file_size=(36, 40), batches=(2,), train=8, val=4, warmup=1, steps=2,
                rounds=1, sync_steps=3, warm_sync=1, precision_size=(32, 32), precision_encoder="vgg-tiny",
                precision_batch=2, mask_steps=2, mask_batch=2, arch="fcn8s", encoder="vgg-tiny", compile=False),
}


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


class Report:
    """Runs sections, catching their errors; keeps the JSON summary."""

    def __init__(self, device: torch.device, max_seconds: float):
        self.device, self.deadline, self.start = device, time.perf_counter() + max_seconds, time.perf_counter()
        self.sections: dict[str, dict] = {}
        self.peaks: list[float] = []

    def run(self, name: str, fn, *args) -> dict:
        if time.perf_counter() > self.deadline:
            self.sections[name] = {"skipped": "out of the time budget (--max-minutes)"}
            return self.sections[name]
        reset_peak(self.device)
        start = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as error:  # reported, and the run goes on
            result = {"error": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc(limit=-6).splitlines()[-12:]}
        synchronize_quietly(self.device)
        result["section_seconds"] = round(time.perf_counter() - start, 2)
        result["peak_gib"] = peak_gib(self.device)
        if result["peak_gib"] is not None:
            self.peaks.append(result["peak_gib"])
        self.sections[name] = result
        print(f"[gpu_check] {name}: {result['section_seconds']} s" + (f", ERROR {result['error']}"
                                                                      if "error" in result else ""),
              file=sys.stderr, flush=True)
        return result


def synchronize_quietly(device: torch.device) -> None:
    try:
        synchronize(device)
    except Exception:  # a failed section may leave the device in error; the next one says so
        pass


def model_for(data, s: dict, encoder: str | None = None, seed: int = 0):
    """U-Net on ResNet-18 (34 for the precision check) on a GPU; a teaching FCN on the tiny VGG on the CPU."""
    torch.manual_seed(seed)
    return segnb.build_model(s["arch"], encoder or s["encoder"], class_names=data.class_names, pretrained=False)


# ---------------------------------------------------------------- sync
class HostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts reads of a device value by the host and copies to the host, per step."""

    def __init__(self):
        super().__init__()
        self.step = 0
        self.reads: Counter = Counter()
        self.copies: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads[self.step] += 1
        elif func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            source = args[1] if func is torch.ops.aten.copy_.default else args[0]
            target = args[0] if func is torch.ops.aten.copy_.default else out
            if (isinstance(source, torch.Tensor) and isinstance(target, torch.Tensor)
                    and source.device.type != "cpu" and target.device.type == "cpu"):
                self.copies[self.step] += 1
        return out


class Watch(Callback):
    """From step ``warm`` on, for ``steps`` steps: a dispatch mode (count) or CUDA's sync debug mode."""

    order = -90

    def __init__(self, warm: int, steps: int, kind: str):
        self.warm, self.steps, self.kind = warm, steps, kind
        self.mode = self.catcher = self.caught = None
        self.sites: dict[str, list[int]] = defaultdict(list)
        self.watched, self.closed = 0, False

    def on_step_end(self, trainer):
        done = trainer.step - trainer.start_step
        if done == self.warm:
            self._begin()
        elif self.warm < done:
            self.watched = done - self.warm
            if self.kind == "count":
                self.mode.step = self.watched
            else:
                self._collect(done)
            if done == self.warm + self.steps:
                self._end()
                raise StopTraining("watched steps done")

    def _begin(self):
        if self.kind == "count":
            self.mode = HostReads()
            self.mode.__enter__()
        else:
            self.catcher = warnings.catch_warnings(record=True)
            self.caught = self.catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode(self.kind)

    def _collect(self, step: int):
        if self.kind == "warn":
            for item in self.caught:
                if "synchroniz" in str(item.message):
                    self.sites[f"{Path(item.filename).name}:{item.lineno}"].append(step)
            self.caught.clear()

    def _end(self):
        if self.mode is not None and self.kind == "count" and not self.closed:
            self.mode.__exit__(None, None, None)
        if self.catcher is not None and not self.closed:
            torch.cuda.set_sync_debug_mode(0)
            self.catcher.__exit__(None, None, None)
        self.closed = True

    def on_fit_end(self, trainer):  # an error inside the watched steps: leave the modes as they were
        self._end()


def check_sync(ctx) -> dict:
    s, data, device = ctx["s"], ctx["data"], ctx["device"]
    batch = s["batches"][-1]
    out = {"steps": s["sync_steps"]}

    def watched(kind: str) -> tuple[Watch, str]:
        watch = Watch(s["warm_sync"], s["sync_steps"], kind)
        try:
            history = segnb.fit(model_for(data, s), data, epochs=10_000, batch_size=batch,
                                device=ctx["device_arg"], precision=ctx["precision"], image_size=s["size"],
                                cache="device", eval_every=10_000, callbacks=[watch])
            stopped = history.stopped
        except Exception as error:  # "error" mode raises from inside the step: that is the finding
            if kind != "error":
                raise
            stopped = f"failed: {type(error).__name__}: {str(error).splitlines()[0]}"
            watch._end()
        return watch, stopped

    watch, stopped = watched("count")
    out["dispatch"] = {"host_reads": sum(watch.mode.reads.values()) if watch.mode else None,
                       "host_reads_by_step": dict(watch.mode.reads) if watch.mode else None,
                       "copies_to_host": sum(watch.mode.copies.values()) if watch.mode else None,
                       "steps_watched": watch.watched, "stopped": stopped}
    if device.type == "cuda":
        watch, stopped = watched("warn")
        syncs = sum(len(steps) for steps in watch.sites.values())
        out["warn"] = {"synchronizing_calls": syncs, "per_step": syncs / max(1, watch.watched),
                       "sites": dict(watch.sites), "steps_watched": watch.watched, "stopped": stopped}
        watch, stopped = watched("error")
        # The first synchronising call stops it: the non-finite flag read every N steps is one by design.
        out["error_mode"] = {"completed": watch.watched == s["sync_steps"], "steps_watched": watch.watched,
                             "stopped": stopped}
    else:
        out["sync_debug_mode"] = "CUDA only: not run on this device"
    return out


# ---------------------------------------------------------------- fit vs the hand loop
def fit_vs_loop(ctx, compiled_runs: bool = False) -> dict:
    s, data, device = ctx["s"], ctx["data"], ctx["device"]
    train_x, train_y = ctx["preloaded"]
    out = {"model": f"{s['arch']}/{s['encoder']}", "size": list(s["size"]), "precision": ctx["precision"],
           "channels_last": device.type == "cuda", "runs": {}}
    if compiled_runs and not ctx["compile"]:
        return {"skipped": "compiled runs are off (--no-compile, or the CPU smoke test)"}
    for compiled in [compiled_runs]:
        for batch in s["batches"]:
            key = f"batch{batch}_{'compiled' if compiled else 'eager'}"
            rounds = 1 if compiled else s["rounds"]
            sides = {"fit": [], "loop": []}
            for round_ in range(rounds):
                order = ["fit", "loop"] if round_ % 2 == 0 else ["loop", "fit"]
                for side in order:
                    reset_peak(device)
                    if side == "fit":
                        result = time_fit(model_for(data, s), data, batch_size=batch, warmup=s["warmup"],
                                          steps=s["steps"], device=ctx["device_arg"], precision=ctx["precision"],
                                          image_size=s["size"], compile=compiled)
                    else:
                        loop = HandLoop(model_for(data, s), train_x, train_y, batch_size=batch,
                                        precision=ctx["precision"], device=device, compile=compiled)
                        result = loop.time(s["warmup"], s["steps"])
                        del loop
                    result["peak_gib"] = peak_gib(device)
                    sides[side].append(result)
            ratios = [f["images_per_s"] / lp["images_per_s"] for f, lp in zip(sides["fit"], sides["loop"], strict=True)
                      if "images_per_s" in f and "images_per_s" in lp]
            out["runs"][key] = {
                "fit_images_per_s": [r.get("images_per_s") for r in sides["fit"]],
                "loop_images_per_s": [r.get("images_per_s") for r in sides["loop"]],
                "ratio_median": statistics.median(ratios) if ratios else None,
                "fit_compile_s": compile_seconds(sides["fit"][0]) if compiled else None,
                "loop_compile_s": compile_seconds(sides["loop"][0]) if compiled else None,
                "fit_peak_gib": sides["fit"][0].get("peak_gib"), "loop_peak_gib": sides["loop"][0].get("peak_gib"),
                "fit_stopped": sides["fit"][0].get("stopped", sides["fit"][0].get("error")),
            }
    return out


def compiled(ctx) -> dict:
    return fit_vs_loop(ctx, compiled_runs=True)


def precision_check(ctx) -> dict:
    s, device = ctx["s"], ctx["device"]
    data = ctx["data_square"]
    train_x, train_y = preload(data, data.train_split, s["precision_size"], device)
    out = {"model": f"{s['arch']}/{s['precision_encoder']}", "size": list(s["precision_size"]),
           "batch": s["precision_batch"]}
    for precision in ("bf16", "fp32"):
        loop = HandLoop(model_for(data, s, s["precision_encoder"]), train_x, train_y, batch_size=s["precision_batch"],
                        precision=precision, device=device)
        out[f"loop_{precision}_images_per_s"] = loop.time(s["warmup"], s["steps"])["images_per_s"]
        del loop
        result = time_fit(model_for(data, s, s["precision_encoder"]), data, batch_size=s["precision_batch"],
                          warmup=s["warmup"], steps=s["steps"], device=ctx["device_arg"], precision=precision,
                          image_size=s["precision_size"])
        out[f"fit_{precision}_images_per_s"] = result.get("images_per_s")
    for side in ("loop", "fit"):
        bf16, fp32 = out[f"{side}_bf16_images_per_s"], out[f"{side}_fp32_images_per_s"]
        out[f"{side}_bf16_over_fp32"] = bf16 / fp32 if bf16 and fp32 else None
    return out


# ---------------------------------------------------------------- one epoch per data path
def cache_paths(ctx) -> dict:
    s = ctx["s"]
    out = {}
    for cache in ("device", "ram", False):
        data = segnb.load_dataset(str(ctx["root"]))  # a dataset of its own: its cold pass is in the epoch
        start = time.perf_counter()
        history = segnb.fit(model_for(data, s), data, epochs=1, batch_size=s["batches"][-1],
                            device=ctx["device_arg"], precision=ctx["precision"], image_size=s["size"], cache=cache,
                            progress=False)
        synchronize(ctx["device"])
        epoch = history.epochs[-1] if history.epochs else {}
        out[str(cache).lower()] = {"seconds": time.perf_counter() - start, "stopped": history.stopped,
                                   "epoch_images_per_s": epoch.get("images_per_s"), "miou": epoch.get("miou"),
                                   "peak_gib": peak_gib(ctx["device"])}
    return out


# ---------------------------------------------------------------- Mask R-CNN
class StopAfter(Callback):
    def __init__(self, steps: int):
        self.steps, self.started, self.seconds = steps, None, None

    def on_epoch_start(self, trainer):
        self.started = self.started or time.perf_counter()

    def on_step_end(self, trainer):
        if trainer.step - trainer.start_step >= self.steps:
            self.seconds = time.perf_counter() - self.started
            raise StopTraining(f"{self.steps} steps done")


def maskrcnn(ctx) -> dict:
    s = ctx["s"]
    data = segnb.load_dataset("shapes", n=max(40, 4 * s["mask_batch"]), size=128, seed=0)
    torch.manual_seed(0)
    model = segnb.build_model("maskrcnn", "mobilenetv3_small_100", class_names=data.class_names, things=data.things)
    stop = StopAfter(s["mask_steps"])
    history = segnb.fit(model, data, epochs=10_000, batch_size=s["mask_batch"], lr=2e-3, device=ctx["device_arg"],
                        eval_every=10_000, progress=False, callbacks=[stop])
    synchronize(ctx["device"])
    return {"steps": history.steps, "stopped": history.stopped, "seconds": stop.seconds,
            "steps_per_s": history.steps / stop.seconds if stop.seconds else None}


# ---------------------------------------------------------------- inference and inspection
def inference(ctx) -> dict:
    from segnb import inspect

    s, data, device = ctx["s"], ctx["data"], ctx["device"]
    model = model_for(data, s).to(device)
    split = data[data.eval_split]
    images = [split[i][0] for i in range(min(len(split), s["batches"][0]))]
    timings = {}

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        synchronize(device)
        timings[name] = time.perf_counter() - start
        return value

    prediction = timed("predict", lambda: segnb.predict(model, images, device=ctx["device_arg"]))
    report = timed("evaluate", lambda: segnb.evaluate(model, data, image_size=s["size"], device=ctx["device_arg"],
                                                      batch_size=s["batches"][0]))
    probs = prediction.probs[0] if isinstance(prediction.probs, list) else prediction.probs[0]
    probs = probs.float().cpu().numpy() if isinstance(probs, torch.Tensor) else probs
    mask = split[0][1]
    timed("soft_mask", lambda: inspect.soft_mask(probs))
    timed("entropy_map", lambda: inspect.entropy_map(probs))
    timed("margin_map", lambda: inspect.margin_map(probs))
    timed("calibration", lambda: inspect.calibration(probs, mask))
    timed("stage_features", lambda: inspect.stage_features(model, images[0]))
    timed("grad_cam", lambda: inspect.grad_cam(model, images[0], target_class=1))
    confusion = report.scores.confusion
    timed("per_class_table", lambda: inspect.per_class_table(confusion, data.class_names))
    timed("boundary_iou", lambda: inspect.boundary_iou(probs.argmax(0), mask, data.num_classes))
    return {"seconds": timings, "evaluate_miou": report.miou, "images": len(images)}


# ---------------------------------------------------------------- goals
def goals(sections: dict, device: torch.device) -> dict:
    out = {}
    runs = {**sections.get("fit_vs_loop", {}).get("runs", {}), **sections.get("compiled", {}).get("runs", {})}
    eager = [r["ratio_median"] for k, r in runs.items() if k.endswith("eager") and r["ratio_median"]]
    compiled = [r["ratio_median"] for k, r in runs.items() if k.endswith("compiled") and r["ratio_median"]]
    out["fit_over_loop_eager_min"] = min(eager) if eager else None
    out["fit_over_loop_compiled_min"] = min(compiled) if compiled else None
    precision = sections.get("precision", {})
    out["fit_bf16_over_fp32"] = precision.get("fit_bf16_over_fp32")
    sync = sections.get("sync", {})
    out["host_reads_in_watched_steps"] = sync.get("dispatch", {}).get("host_reads")
    if device.type == "cuda":
        out["met"] = {
            "fit >= 0.9x loop, eager": bool(eager) and min(eager) >= 0.9,
            "fit >= 0.9x loop, compiled": bool(compiled) and min(compiled) >= 0.9,
            "bf16 >= 1.5x fp32 at 512 px": (out["fit_bf16_over_fp32"] or 0) >= 1.5,
            "at most one synchronising call per 10 steady-state steps": (
                sync.get("warn", {}).get("per_step", 1.0) <= 0.1),
        }
    out["errors"] = sorted(name for name, section in sections.items() if "error" in section)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the smoke test)")
    parser.add_argument("--precision", default=None, help="fit_vs_loop's precision (bf16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="the compiled runs (default: on a GPU only)")
    parser.add_argument("--max-minutes", type=float, default=7.5, help="sections that would start later are skipped")
    parser.add_argument("--sections", nargs="+", default=["sync", "fit_vs_loop", "precision", "cache", "maskrcnn",
                                                          "inference", "compiled"])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 on the CPU, where the smoke test shares the machine)")
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    device = torch.device(args.device)
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no GPU (use --device cpu for the smoke test)")
    s = SETTINGS["cuda" if device.type == "cuda" else "cpu"]
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    report = Report(device, args.max_minutes * 60)
    summary = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else platform.processor() or platform.machine(), "torch": torch.__version__,
               "cpu_threads": torch.get_num_threads(), "load_average": os.getloadavg(), "settings": {
                   k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}}
    with tempfile.TemporaryDirectory() as folder:
        from segnb.data import load_shapes
        from segnb.data.export import export_folder

        n = s["train"] + s["val"]
        shapes = load_shapes(n=n, size=128, seed=0, val_fraction=s["val"] / n)
        root = export_folder(shapes, Path(folder) / "scenes", size=s["file_size"])
        square = export_folder(shapes, Path(folder) / "square", size=s["precision_size"])
        ctx = {"s": s, "device": device, "device_arg": args.device, "precision": precision,
               "compile": s["compile"] if args.compile is None else args.compile,
               "data": segnb.load_dataset(str(root)), "data_square": segnb.load_dataset(str(square)), "root": root}
        ctx["preloaded"] = preload(ctx["data"], ctx["data"].train_split, s["size"], device)
        summary["setup_seconds"] = round(time.perf_counter() - start, 2)
        sections = {"sync": check_sync, "fit_vs_loop": fit_vs_loop, "precision": precision_check,
                    "cache": cache_paths, "maskrcnn": maskrcnn, "inference": inference, "compiled": compiled}
        for name in args.sections:
            report.run(name, sections[name], ctx)
    summary["sections"] = report.sections
    summary["peak_gib"] = max(report.peaks) if report.peaks else None
    summary["goals"] = goals(report.sections, device)
    summary["load_average_after"] = os.getloadavg()
    summary["total_seconds"] = round(time.perf_counter() - start, 2)
    text = json.dumps(summary, default=str)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
