"""Latency of each inspection function a widget calls, on a 512x512 image, on this CPU.

    .venv/bin/python benchmarks/bench_inspect.py

Goals: soft-mask views <= 50 ms; attention maps of a ViT-tiny <= 200 ms (the ViT sees
the image at 224 px, the size it was built for, and maps are upsampled to 512).
Each figure is the median of several calls.
"""

from __future__ import annotations

import torch
from timing import median_ms

from segnb import inspect as ins
from segnb import viz
from segnb.classical import mrf_smooth, segment
from segnb.data import load_shapes
from segnb.models import build_model

SIZE = 512




def main() -> None:
    torch.set_num_threads(2)
    data = load_shapes(n=2, size=SIZE)
    image, target = data["train"][0]
    logits = torch.randn(data.num_classes, SIZE, SIZE) * 3
    probs = ins.soft_mask(logits)
    mask = probs.argmax(0)
    rows = []

    def row(name, fn, goal=None, repeat=7):
        ms = median_ms(fn, repeat)
        rows.append((name, ms, goal))

    row("soft_mask (7 classes, temperature)", lambda: ins.soft_mask(logits, 1.5), 50)
    row("hard_mask", lambda: ins.hard_mask(probs), 50)
    row("entropy_map", lambda: ins.entropy_map(probs), 50)
    row("margin_map", lambda: ins.margin_map(probs), 50)
    row("colorize", lambda: viz.colorize(mask, data.palette), 50)
    row("overlay (alpha 0.5)", lambda: viz.overlay(image, mask, data.palette, 0.5), 50)
    row("calibration (10 bins)", lambda: ins.calibration(probs, target), 50)
    row("roi_soft_mask (28x28)", lambda: ins.roi_soft_mask(probs, (100, 100, 300, 260), 3), 50)

    torch.manual_seed(0)
    vit = build_model("setr-naive", "vit_tiny_patch16_224", num_classes=data.num_classes).eval()
    maps = ins.attention_maps(vit, image, input_size=224)
    row("attention_maps (ViT-tiny, 12 layers x 3 heads, 224 px)", lambda: ins.attention_maps(vit, image, input_size=224), 200)
    row("cls_map + upsample to 512", lambda: ins.upsample_map(maps.cls_map(), (SIZE, SIZE)), 200)
    row("query_map + upsample to 512", lambda: ins.upsample_map(maps.query_map((5, 7)), (SIZE, SIZE)), 200)
    row("rollout (12 layers, discard 0.9)", lambda: maps.rollout("max", 0.9), 200)

    cnn = build_model("unet", "resnet18", num_classes=data.num_classes).eval()
    row("grad_cam (U-Net ResNet-18, 512 px)", lambda: ins.grad_cam(cnn, image, 3), None, repeat=3)
    row("checkerboard_score (512x512 map)", lambda: ins.checkerboard_score(probs[0]), 50)
    row("overlap_map (k3 s2, 16x16 input)", lambda: ins.overlap_map(3, 2, 0, 16), 50)
    row("iou_by_object_size", lambda: ins.iou_by_object_size(mask, target, classes=range(3, 7)), None)
    row("boundary_iou", lambda: ins.boundary_iou(mask, target, data.num_classes), None)
    row("mrf_smooth (5 ICM iterations)", lambda: mrf_smooth(probs, 1.0, 5), None, repeat=3)
    for method in ("kmeans", "slic", "watershed", "felzenszwalb", "meanshift"):
        row(f"classical {method}", lambda m=method: segment(image, m), None, repeat=2)

    width = max(len(r[0]) for r in rows)
    print(f"{'function (512x512 image)':<{width}}  {'median ms':>9}  goal")
    for name, ms, goal in rows:
        verdict = "" if goal is None else (f"<= {goal} ms: {'met' if ms <= goal else 'MISSED'}")
        print(f"{name:<{width}}  {ms:9.1f}  {verdict}")


if __name__ == "__main__":
    main()
