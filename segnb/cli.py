"""The ``segnb`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from segnb.callbacks import Callback

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


class _EpochPrinter(Callback):
    """One line per epoch on stderr (stdout stays free for --json)."""

    order = 60

    def __init__(self, start: float):
        self.start = start

    def on_epoch_end(self, trainer):
        import time

        record = trainer.history.epochs[-1]
        print(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}  val loss "
              f"{record['val_loss']:.3f}  mIoU {record['miou']:.3f}  {record['images_per_s']:.0f} images/s  "
              f"[{time.monotonic() - self.start:.0f} s]", file=sys.stderr, flush=True)


def _train(args, demo: bool = False) -> int:
    """Train, evaluate, save; with --json print one JSON object with the metrics and paths."""
    import time

    import torch

    from segnb.data import load_dataset
    from segnb.models import build_model, save_model
    from segnb.train import evaluate, fit, resolve_device

    start = time.monotonic()
    data_options = _parse_options(args.data_option)
    if args.dataset == "shapes" and args.seed is not None:
        data_options.setdefault("seed", args.seed)
    data = load_dataset(args.dataset, **data_options)
    if args.ignore_index is not None:
        data.ignore_index = args.ignore_index
    model = build_model(args.arch, args.encoder, class_names=data.class_names, pretrained=args.pretrained)
    device = resolve_device(args.device)
    print(f"segnb {'demo' if demo else 'train'}: {args.arch} on {args.encoder}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; {data.source} "
          f"({len(data[data.train_split])} train / {len(data[data.eval_split])} {data.eval_split} images); "
          f"device {device}, {torch.get_num_threads()} threads", file=sys.stderr)
    out = Path(args.out)
    history = fit(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss,
                  device=device, precision=args.precision, image_size=args.image_size,
                  max_minutes=args.max_minutes, checkpoint_dir=out / "checkpoints", seed=args.seed or 0,
                  callbacks=[_EpochPrinter(start)], progress=not args.json and sys.stderr.isatty())
    if not history.epochs:
        print(f"segnb: training ended before the first epoch: {history.stopped}", file=sys.stderr)
        return 1
    folder = save_model(model, out / "model")
    report = evaluate(model, data, image_size=args.image_size, device=device)
    result = {
        "stopped": history.stopped, "epochs": len(history.epochs), "steps": history.steps,
        "miou": report.miou, "pixel_accuracy": report.scores.pixel_accuracy,
        "iou": dict(zip(data.class_names, report.scores.iou, strict=True)),
        "model": str(folder), "checkpoints": str(out / "checkpoints"),
        "seconds": round(time.monotonic() - start, 1),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"\nper-class IoU on the {data.eval_split} split ({history.stopped}):")
    shares = data.frequencies(data.eval_split)
    for row, share in zip(report.table(), shares, strict=True):
        iou = row["iou"]
        value = "   -  " if iou is None else f"{iou:6.3f}"
        print(f"  {row['class']:<9} {value}  {'#' * round((iou or 0) * 30):<30}  {share:6.2%} of pixels")
    print(f"  {'mIoU':<9} {report.miou:6.3f}   pixel accuracy {report.scores.pixel_accuracy:.3f}")
    print(f"\nmodel saved to {folder} ({result['seconds']:.0f} s in all). "
          "Next: .venv/bin/segnb lab  (JupyterLab at notebooks/)")
    return 0


def _eval(args) -> int:
    from segnb.data import load_dataset
    from segnb.models import load_model
    from segnb.train import evaluate

    model = load_model(args.model)
    data = load_dataset(args.dataset, **_parse_options(args.data_option))
    report = evaluate(model, data, split=args.split, image_size=args.image_size, device=args.device)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print(report.format())
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


def _studio(args) -> int:
    """The Studio as a standalone page (Voila): no code cells, for students."""
    import os
    import secrets
    import subprocess
    from importlib import resources

    notebook = resources.files("segnb.ui").joinpath("studio.ipynb")
    token = args.token or secrets.token_urlsafe(16)
    env = {**os.environ, "SEGNB_PRESENTATION": "1" if args.presentation else "0"}
    command = [sys.executable, "-m", "voila", str(notebook), f"--Voila.ip={args.ip}", f"--port={args.port}",
               f"--token={token}", "--no-browser",
               # A busy machine (a class opening pages at once) can take longer than Voila's 4 s
               # to deliver a cell's output; without this the page comes up without the Studio.
               "--VoilaExecutor.iopub_timeout=60"]
    if args.preheat > 0:  # kernels that have run the Studio notebook before anyone asks (docs/CLASSROOM.md)
        command += ["--preheat_kernel=True", f"--VoilaConfiguration.default_pool_size={args.preheat}"]
    print(f"segnb studio on http://{args.ip}:{args.port}/?token={token}")
    if args.ip == "127.0.0.1":
        print("Listening on this machine only. To expose it deliberately: segnb studio --ip 0.0.0.0 "
              "(anyone who can reach the port and has the token can use it).")
    return subprocess.call(command, env=env)


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

    def training_arguments(p, demo: bool):
        p.add_argument("--dataset", default="shapes", help="'shapes', a hub id or a folder")
        p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                       help="dataset loader option, e.g. reduce_labels=true (repeatable)")
        p.add_argument("--arch", default="unet-classic")
        p.add_argument("--encoder", default="vgg-tiny")
        p.add_argument("--pretrained", default=False, type=lambda v: {"true": True, "false": False}.get(v.lower(), v),
                       help="false, true, auto, or a .safetensors path")
        p.add_argument("--epochs", type=int, default=3 if demo else 10)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--lr", type=float, default=1e-2 if demo else 1e-3)
        p.add_argument("--loss", default="weighted_ce" if demo else "ce",
                       help="ce, weighted_ce (class weights from pixel frequencies), dice, focal, lovasz, ce+dice")
        p.add_argument("--image-size", type=int, default=None)
        p.add_argument("--ignore-index", type=int, default=None)
        p.add_argument("--precision", default="auto")
        p.add_argument("--max-minutes", type=float, default=1.5 if demo else None, help="wall-clock budget")
        p.add_argument("--device", default="auto")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default="runs/demo" if demo else "runs/train")
        p.add_argument("--json", action="store_true", help="print the final metrics and paths as one JSON object")

    demo = commands.add_parser("demo", help="train a small U-Net on the built-in dataset (the main job)")
    training_arguments(demo, demo=True)
    demo.set_defaults(run=lambda args: _train(args, demo=True))
    train = commands.add_parser("train", help="train a model and save it with its checkpoints")
    training_arguments(train, demo=False)
    train.set_defaults(run=_train)

    evaluation = commands.add_parser("eval", help="evaluate a saved model: per-class IoU, confusion")
    evaluation.add_argument("--model", required=True, help="a folder written by save_model or train")
    evaluation.add_argument("--dataset", default="shapes")
    evaluation.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    evaluation.add_argument("--split", default=None)
    evaluation.add_argument("--image-size", type=int, default=None)
    evaluation.add_argument("--device", default="auto")
    evaluation.add_argument("--json", action="store_true")
    evaluation.set_defaults(run=_eval)

    lab = commands.add_parser("lab", help="JupyterLab at the notebooks folder (127.0.0.1, with a token)")
    lab.add_argument("--notebooks", default="notebooks")
    lab.add_argument("--ip", default="127.0.0.1")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--token", default=None, help="default: a fresh random token")
    lab.add_argument("--no-browser", action="store_true")
    lab.set_defaults(run=_lab)

    studio = commands.add_parser("studio", help="the Studio as a standalone page (Voila, 127.0.0.1, token)")
    studio.add_argument("--ip", default="127.0.0.1")
    studio.add_argument("--port", type=int, default=8866)
    studio.add_argument("--token", default=None, help="default: a fresh random token")
    studio.add_argument("--presentation", action="store_true", help="large fonts and pictures for a projector")
    studio.add_argument("--preheat", type=int, default=0, metavar="N",
                        help="keep N kernels that have already opened the Studio ready for the next visitors")
    studio.set_defaults(run=_studio)
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
