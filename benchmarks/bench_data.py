"""The input path: built-in generation, then cold (first pass) against warm (cached) images/s.

    .venv/bin/python benchmarks/bench_data.py [--n 400] [--height 360 --width 480] [--train-size 96 128]

The built-in dataset is exported at --height x --width as JPEG images and PNG masks to a
temporary folder (what a real dataset on disk looks like), loaded back with
``segnb.load_dataset(folder)``, then:
- cold: the first pass decodes, checks and resizes every file into the uint8 cache;
- warm: passes over the cache, batches augmented (flips, then flips and scale) and normalised
  as in fit();
- stream: today's DataLoader path, which decodes every epoch, for comparison.
Goal: warm at least 10x cold.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from segnb.data import load_dataset, load_shapes
from segnb.data.cache import CachedBatches, decode_split
from segnb.data.export import export_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--train-size", type=int, nargs=2, default=(96, 128))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warm-passes", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    shapes = load_shapes(n=args.n, size=128)
    generation = time.perf_counter() - start
    print(f"shapes generation: {args.n} images of 128 px in {generation:.2f} s ({args.n / generation:.0f} images/s)")

    with tempfile.TemporaryDirectory() as folder:
        export_folder(shapes, f"{folder}/data", size=(args.height, args.width))
        data = load_dataset(f"{folder}/data")
        split = data[data.train_split]
        size = tuple(args.train_size)
        print(f"folder: {len(split)} training JPEGs of {args.width}x{args.height}, trained at "
              f"{size[1]}x{size[0]}, batch {args.batch_size}")

        start = time.perf_counter()
        decoded = decode_split(split, size, data.ignore_index, data.num_classes)
        cold = len(split) / (time.perf_counter() - start)

        warm = {}
        for scale in (None, (0.75, 1.5)):  # fit()'s default (flips only), then with rescaling
            batches = CachedBatches(decoded, args.batch_size, "cpu", shuffle=True, augment=True, scale=scale,
                                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
            start, seen = time.perf_counter(), 0
            for epoch in range(args.warm_passes):
                batches.set_epoch(epoch)
                seen += sum(len(x) for x, _ in batches)
            warm[scale] = seen / (time.perf_counter() - start)

        loader = data.loader(data.train_split, batch_size=args.batch_size, image_size=size, scale=(0.75, 1.5))
        start = time.perf_counter()
        streamed = sum(len(x) for x, _ in loader) / (time.perf_counter() - start)

    print(f"cold (first pass: decode, check, resize into the uint8 cache): {cold:.0f} images/s")
    print(f"warm, flips (fit's default augmentation):                  {warm[None]:.0f} images/s")
    print(f"warm, flips + scale 0.75-1.5 (augment_scale=):              {warm[(0.75, 1.5)]:.0f} images/s")
    print(f"stream (DataLoader, decodes every epoch, num_workers=0):     {streamed:.0f} images/s")
    print(f"warm / cold = {warm[None] / cold:.1f}x with flips (goal >= 10x), {warm[(0.75, 1.5)] / cold:.1f}x "
          f"with scale; warm / stream = {warm[None] / streamed:.1f}x; torch threads {torch.get_num_threads()}")

if __name__ == "__main__":
    main()
