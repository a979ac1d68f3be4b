"""Train under several processes (torchrun or accelerate launch), then write what each rank holds.

    .venv/bin/torchrun --nproc_per_node 2 benchmarks/ddp_check.py OUT [--images 64] [--epochs 2]

Each rank writes OUT/rank<R>.safetensors (its final weights) and rank 0 writes
OUT/result.json (the distributed evaluation). benchmarks/bench_distributed.py
and tests/test_distributed.py compare them with a one-process evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from segnb.data import load_shapes
from segnb.models import build_model, save_model
from segnb.train import fit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_shapes(n=args.images, size=args.size, seed=0)
    torch.manual_seed(0)
    model = build_model("fcn8s", "vgg-tiny", class_names=data.class_names)
    history = fit(model, data, epochs=args.epochs, batch_size=8, lr=5e-3, progress=False, device="cpu")
    rank = int(os.environ.get("RANK", 0))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    if rank == 0:
        save_model(model, out / "model")
        world = int(os.environ.get("WORLD_SIZE", 1))
        (out / "result.json").write_text(json.dumps({"world_size": world, "history": history.as_dict()}))


if __name__ == "__main__":
    main()
