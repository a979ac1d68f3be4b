"""Built-in dataset: generation time and DataLoader throughput.

    .venv/bin/python benchmarks/bench_data.py [--n 1000] [--size 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from segnb.data import load_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    start = time.perf_counter()
    data = load_shapes(n=args.n, size=args.size)
    generation = time.perf_counter() - start
    print(f"shapes generation: {args.n} images of {args.size} px in {generation:.2f} s "
          f"({args.n / generation:.0f} images/s)")

    for workers in (0, 2):
        loader = data.loader("train", batch_size=args.batch_size, num_workers=workers, seed=0)
        start = time.perf_counter()
        images = sum(len(x) for x, _ in loader)
        elapsed = time.perf_counter() - start
        print(f"DataLoader pass (train, augmented, num_workers={workers}): {images} images in "
              f"{elapsed:.2f} s ({images / elapsed:.0f} images/s)")


if __name__ == "__main__":
    main()
