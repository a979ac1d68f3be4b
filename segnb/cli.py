"""The ``segnb`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def _parse_options(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, true, lists)."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"segnb: option {pair!r} must look like key=value (e.g. reduce_labels=true).")
        key, value = pair.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _datasets_show(args) -> int:
    from segnb.data import load_dataset

    data = load_dataset(args.source, **_parse_options(args.option))
    summary = data.describe()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"dataset   {summary['source']}")
    print("splits    " + ", ".join(f"{k}: {v}" for k, v in summary["splits"].items()))
    print(f"classes   {summary['num_classes']} (ignore index {summary['ignore_index']})")
    width = max(len(n) for n in data.class_names)
    counts = data.pixel_counts()
    print(f"\n{'class':<{width}}  {'pixels':>12}  {'share':>7}  (split {data.train_split})")
    for name, count, share in zip(data.class_names, counts, data.frequencies(), strict=True):
        bar = "#" * round(share * 40)
        print(f"{name:<{width}}  {count:>12,}  {share:>7.2%}  {bar}")
    return 0


def _demo(args) -> int:
    """The main job: a small U-Net on the built-in dataset, then its per-class IoU table."""
    import time

    import torch

    from segnb.data import load_dataset
    from segnb.models import build_model, save_model
    from segnb.train import fit, resolve_device

    start = time.monotonic()
    data = load_dataset("shapes", seed=args.seed)
    model = build_model(args.arch, args.encoder, class_names=data.class_names)
    device = resolve_device(args.device)
    print(f"segnb demo: {args.arch} on {args.encoder}, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, built-in dataset ({len(data['train'])} train / {len(data['validation'])} validation "
          f"images of 128 px), device {device}, {torch.get_num_threads()} threads")

    def report(record):
        print(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}  val loss "
              f"{record['val_loss']:.3f}  mIoU {record['miou']:.3f}  {record['images_per_s']:.0f} images/s  "
              f"[{time.monotonic() - start:.0f} s]", flush=True)

    history = fit(model, data, epochs=args.epochs, batch_size=16, lr=1e-2, device=device,
                  max_minutes=args.max_minutes, on_epoch=report, seed=args.seed)
    final = history.epochs[-1] if history.epochs else None
    if final is None:
        print(f"training ended before the first epoch: {history.stopped}")
        return 1
    print(f"\nper-class IoU on the validation split ({history.stopped}):")
    for name, iou, share in zip(data.class_names, final["iou"], data.frequencies("validation"), strict=True):
        value = "   -  " if iou is None else f"{iou:6.3f}"
        print(f"  {name:<9} {value}  {'#' * round((iou or 0) * 30):<30}  {share:6.2%} of pixels")
    print(f"  {'mIoU':<9} {final['miou']:6.3f}   pixel accuracy {final['pixel_accuracy']:.3f}")
    folder = save_model(model, args.out)
    print(f"\nmodel saved to {folder} ({time.monotonic() - start:.0f} s in all). "
          "Next: .venv/bin/segnb lab  (JupyterLab at notebooks/)")
    return 0


def _lab(args) -> int:
    import secrets
    import subprocess

    notebooks = Path(args.notebooks).resolve()
    token = args.token or secrets.token_urlsafe(16)
    command = [
        sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={notebooks}",
        f"--ServerApp.ip={args.ip}", f"--ServerApp.port={args.port}",
        f"--IdentityProvider.token={token}", "--no-browser" if args.no_browser else "--ServerApp.open_browser=True",
    ]
    print(f"JupyterLab on http://{args.ip}:{args.port}/lab?token={token}")
    if args.ip == "127.0.0.1":
        print("Listening on this machine only. To expose it deliberately: segnb lab --ip 0.0.0.0 "
              "(anyone who can reach the port and has the token can run code).")
    return subprocess.call(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segnb", description="Semantic segmentation for research and teaching."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    datasets = commands.add_parser("datasets", help="look at datasets")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", required=True, metavar="ACTION")
    show = datasets_commands.add_parser(
        "show", help="splits, sizes, classes and pixel frequencies of a dataset",
        description="SOURCE is 'shapes', a Hugging Face id, or a local folder.",
    )
    show.add_argument("source")
    show.add_argument("option", nargs="*", help="loader options as key=value, e.g. reduce_labels=true")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(run=_datasets_show)

    demo = commands.add_parser("demo", help="train a small model on the built-in dataset (the main job)")
    demo.add_argument("--arch", default="unet-classic")
    demo.add_argument("--encoder", default="vgg-tiny")
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--max-minutes", type=float, default=1.5, help="wall-clock budget for training")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", default="runs/demo")
    demo.set_defaults(run=_demo)

    lab = commands.add_parser("lab", help="JupyterLab at the notebooks folder (127.0.0.1, with a token)")
    lab.add_argument("--notebooks", default="notebooks")
    lab.add_argument("--ip", default="127.0.0.1")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--token", default=None, help="default: a fresh random token")
    lab.add_argument("--no-browser", action="store_true")
    lab.set_defaults(run=_lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from segnb.errors import SegnbError

    try:
        return args.run(args)
    except SegnbError as err:
        print(f"segnb: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
