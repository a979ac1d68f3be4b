"""Inference and scoring: the full-resolution protocol's cost, tiles, test-time augmentation, export.

    .venv/bin/python benchmarks/bench_inference.py [--quick] [--device cpu|cuda]

Prints, on this machine:

1. the cost of scoring at full resolution (logits upsampled to each 384x384 label) against
   scoring at the model's 192x192 input size (labels resized), whole evaluate() calls with a
   U-Net on ResNet-18 and a tiny U-Net, and the scoring step alone (goal: at most 1.3x);
2. tiled (256x256 tiles, overlap 0.25, Gaussian blending, batched) against whole-image inference at
   512 and 1024 px, and how far apart their probabilities are;
3. test-time augmentation: cost and mIoU change of ("hflip",) and ("hflip", 0.75, 1.0, 1.25) for
   models trained here briefly on the built-in data and on the ISBI 2012 membranes
   (../shared/data/isbi2012-membrane or $SEGNB_ISBI_PATH, skipped with a line when absent);
4. export parity: ONNX through onnxruntime on the CPU and torch.export against eager PyTorch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import segnb
from segnb.evaluation import Scorer, evaluate
from segnb.exporting import TOLERANCE, check_export, export
from segnb.infer import Inference
from segnb.models import build_model
from segnb.models.io import TrainingInput
from segnb.prediction import predict
from segnb.train import fit

ROOT = Path(__file__).resolve().parents[1]
ISBI = Path(os.environ.get("SEGNB_ISBI_PATH") or ROOT.parent / "shared" / "data" / "isbi2012-membrane")
warnings.filterwarnings("ignore")


def timed(fn, repeat: int = 3) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def protocol_cost(device: str, quick: bool) -> None:
    print("\n== 1. full-resolution scoring against resized scoring (384x384 labels, model input 192x192)")
    data = segnb.load_dataset("shapes", n=40 if quick else 120, size=384, seed=0, val_fraction=0.5)
    for arch, encoder in (("unet", "resnet18"), ("unet-classic", "vgg-tiny")):
        torch.manual_seed(0)
        model = build_model(arch, encoder, class_names=data.class_names).to(device)
        model.training_input = TrainingInput(size=(192, 192), source_size=(384, 384))
        full_t, full = timed(lambda m=model: evaluate(m, data, device=device, batch_size=8))
        resized_t, resized = timed(lambda m=model: evaluate(m, data, device=device, batch_size=8,
                                                            protocol="resized"))
        n = len(data["validation"])
        print(f"{arch} on {encoder}, {n} images: full {full_t:.2f} s, resized {resized_t:.2f} s: "
              f"**{full_t / resized_t:.2f}x** (mIoU {full.miou:.3f} vs {resized.miou:.3f}, untrained)")
    # The scoring step alone: logits of 8 images at 192 px, labels at 384 (full) or 192 (resized).
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 7, 192, 192, generator=g).to(device)
    big = torch.randint(0, 7, (8, 384, 384), generator=g).to(device)
    small = big[:, ::2, ::2].contiguous()

    def score(labels):
        scorer = Scorer(7, 255, per_image=True)
        scorer.update(logits, labels)
        return scorer.confusion_matrix().sum().item()

    full_t, _ = timed(lambda: score(big), 7)
    resized_t, _ = timed(lambda: score(small), 7)
    print(f"the scoring step alone, 8 images: full {full_t * 1e3:.1f} ms, resized {resized_t * 1e3:.1f} ms "
          f"({full_t / resized_t:.1f}x: 4x the pixels, plus the bilinear upsampling)")


def tiles(device: str, quick: bool) -> None:
    print("\n== 2. tiled (256x256, overlap 0.25, Gaussian) against whole-image inference")
    torch.manual_seed(0)
    model = build_model("unet", "resnet18", num_classes=5).to(device)
    for side in (512, 1024):
        image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        whole_t, whole = timed(lambda im=image: predict(model, im, device=device, tile=False), 1 if quick else 3)
        tiled_t, tiled = timed(lambda im=image: predict(model, im, device=device, tile=(256, 256)),
                               1 if quick else 3)
        agree = float((whole.masks == tiled.masks).float().mean())
        diff = float((whole.probs - tiled.probs).abs().max())
        print(f"{side}x{side}: whole {whole_t:.2f} s, tiled {tiled_t:.2f} s ({tiled_t / whole_t:.2f}x); "
              f"argmax agreement {agree:.4f}, max |probability difference| {diff:.3f} (untrained ResNet-18 U-Net)")


def tta_effect(device: str, quick: bool) -> None:
    print("\n== 3. test-time augmentation: cost and mIoU change")
    views = [None, ("hflip",), ("hflip", 0.75, 1.0, 1.25)]
    shapes = segnb.load_dataset("shapes", n=120 if quick else 400, size=96, seed=3)
    torch.manual_seed(0)
    model = build_model("unet-classic", "vgg-tiny", class_names=shapes.class_names)
    start = time.perf_counter()
    fit(model, shapes, epochs=2 if quick else 8, batch_size=16, lr=1e-2, loss="weighted_ce", progress=False,
        device=device)
    print(f"built-in data (n={len(shapes['train'])}+{len(shapes['validation'])}, 96 px), unet-classic on "
          f"vgg-tiny trained {time.perf_counter() - start:.0f} s:")
    _tta_rows(model, shapes, views, device)
    if not ISBI.is_dir():
        print(f"ISBI 2012 membranes: not found at {ISBI}; skipped")
        return
    data = segnb.load_dataset(ISBI, class_names=["membrane", "cell"], binary=True)
    torch.manual_seed(0)
    model = build_model("unet-classic", "vgg-small", class_names=data.class_names)
    start = time.perf_counter()
    fit(model, data, epochs=3 if quick else 30, batch_size=8, lr=3e-3, loss="weighted_ce", image_size=128,
        augment_scale=(4.0, 4.0), progress=False, device=device)
    print(f"ISBI membranes ({len(data['train'])}+{len(data['validation'])} slices of 512 px), unet-classic on "
          f"vgg-small, 128 px crops at full resolution, trained {time.perf_counter() - start:.0f} s; "
          "inference tiled (automatic: 512 > 2 x 128):")
    _tta_rows(model, data, views, device)


def _tta_rows(model, data, views, device) -> None:
    base = None
    for tta in views:
        seconds, report = timed(lambda t=tta: evaluate(model, data, device=device, tta=t), 1)
        base = base or (seconds, report.miou)
        iou = ", ".join(f"{name} {v:.3f}" for name, v in zip(data.class_names, report.scores.iou, strict=True)
                        if v is not None)
        print(f"  tta={tta}: mIoU {report.miou:.4f} ({report.miou - base[1]:+.4f}), {seconds:.2f} s "
              f"({seconds / base[0]:.1f}x); {iou}")


def export_parity(quick: bool) -> None:
    print(f"\n== 4. export parity against eager PyTorch (CPU, fp32; tolerance atol={TOLERANCE['atol']}, "
          f"rtol={TOLERANCE['rtol']})")
    cases = [("unet", "resnet18"), ("segformer", "resnet18"), ("unet-classic", "vgg-small")]
    if not quick:
        cases += [("deeplabv3plus", "resnet18"), ("dpt", "test_vit"), ("setr-pup", "test_vit"), ("segnet", "vgg-small")]
    folder = Path(tempfile.mkdtemp())
    for arch, encoder in cases:
        torch.manual_seed(0)
        model = build_model(arch, encoder, num_classes=5)
        for suffix in (".onnx", ".pt2"):
            start = time.perf_counter()
            path = export(model, folder / f"{arch}{suffix}", image_size=(256, 256), check=False)
            seconds = time.perf_counter() - start
            diff = check_export(path, model, image_size=(256, 256), n=4)
            print(f"{arch} on {encoder} {suffix}: exported in {seconds:.1f} s; max |logit difference| {diff:.1e}")
    images = torch.rand(1, 3, 256, 256)
    import onnxruntime as ort

    model = build_model("unet", "resnet18", num_classes=5).eval()
    session = ort.InferenceSession(str(folder / "unet.onnx"), providers=["CPUExecutionProvider"])
    ort_t, _ = timed(lambda: session.run(None, {"images": images.numpy()}), 5)
    with Inference(model, device="cpu") as run:
        eager_t, _ = timed(lambda: run(images), 5)  # the cost of the network alone
    print(f"unet on resnet18, one 256x256 image on the CPU: onnxruntime {ort_t * 1e3:.0f} ms, eager {eager_t * 1e3:.0f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and epochs (a smoke test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=("protocol", "tiles", "tta", "export"), default=None)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    steps = {"protocol": lambda: protocol_cost(args.device, args.quick), "tiles": lambda: tiles(args.device, args.quick),
             "tta": lambda: tta_effect(args.device, args.quick), "export": lambda: export_parity(args.quick)}
    for name, step in steps.items():
        if args.only in (None, name):
            step()
    return 0


if __name__ == "__main__":
    sys.exit(main())
