"""Two CPU processes (gloo) through torchrun: identical weights on both ranks, and their evaluation
equals a one-process evaluation of the same weights.

    .venv/bin/python benchmarks/bench_distributed.py [--n 64] [--epochs 2]

(On CPUs, ``accelerate launch --cpu`` needs MPI for several processes; torchrun needs nothing.
On GPUs, ``accelerate launch --num_processes N`` runs the same script.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from segnb.data import load_shapes
from segnb.models import load_model
from segnb.train import evaluate

HERE = Path(__file__).resolve().parent


def run_two_processes(out: Path, n: int, epochs: int) -> float:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2",  # rendezvous on localhost
               str(HERE / "ddp_check.py"), str(out), "--images", str(n), "--epochs", str(epochs)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def check(out: Path, n: int) -> dict:
    rank0, rank1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    identical = rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    result = json.loads((out / "result.json").read_text())
    distributed_miou = result["history"]["epochs"][-1]["miou"]
    single = evaluate(load_model(out / "model"), load_shapes(n=n, size=32, seed=0), batch_size=8, device="cpu")
    return {"world_size": result["world_size"], "identical_weights": identical,
            "distributed_miou": distributed_miou, "single_process_miou": single.miou}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        seconds = run_two_processes(Path(tmp), args.n, args.epochs)
        report = check(Path(tmp), args.n)
    print(f"torchrun, 2 CPU processes (gloo): {seconds:.1f} s")
    print(f"world size {report['world_size']}; identical weights on both ranks: {report['identical_weights']}")
    print(f"validation mIoU, 2-process evaluation {report['distributed_miou']:.6f}, "
          f"1-process evaluation of rank 0's weights {report['single_process_miou']:.6f}, "
          f"equal: {abs(report['distributed_miou'] - report['single_process_miou']) < 1e-9}")


if __name__ == "__main__":
    main()
