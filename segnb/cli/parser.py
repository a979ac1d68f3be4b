"""The command line's parser: commands, options and the checks on their values."""

from __future__ import annotations

import argparse
import math
import re

from segnb.cli.commands import datasets_show, eval_command, export_command, train_command
from segnb.cli.servers import lab_command, studio_command
from segnb.cli.sweep import add_sweep_parser
from segnb.train.config import DEFAULT_EPOCHS, SCHEDULER_NAMES, TrainConfig

__all__ = ["build_parser"]

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _finite_float(text: str, zero_allowed: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
        bound = "of 0 or more" if zero_allowed else "above 0"
        raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
    return value


def _positive_float(text: str) -> float:
    return _finite_float(text)


def _non_negative_float(text: str) -> float:
    return _finite_float(text, zero_allowed=True)


def _device(text: str) -> str:
    if not DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    return text


def _tile(text: str) -> tuple[int, int] | bool:
    if text.lower() in ("off", "none", "no"):
        return False
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a tile size; use 512 or 512x1024 (height x width), or off")
    return (int(parts[0]), int(parts[-1]))


def _overlap(text: str) -> float:
    value = _finite_float(text, zero_allowed=True)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"overlap is a fraction in [0, 1), got {text}")
    return value


def _tta(text: str) -> tuple:
    items: list = []
    for item in text.split(","):
        item = item.strip()
        if item == "hflip":
            items.append(item)
            continue
        try:
            items.append(_positive_float(item))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"{item!r} is not hflip or a scale; use e.g. hflip,0.75,1,1.25") from None
    return tuple(items)


def _loss(text: str) -> str:
    from segnb.losses import LOSSES

    if text not in LOSSES:
        raise argparse.ArgumentTypeError(f"unknown loss {text!r}; choose one of {', '.join(LOSSES)}")
    return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (what is wrong, where to look), not the whole usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    show.set_defaults(run=datasets_show)

    def training_arguments(p, demo: bool):
        p.add_argument("--dataset", default="shapes", help="'shapes', a hub id or a folder")
        p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                       help="dataset loader option, e.g. reduce_labels=true (repeatable)")
        p.add_argument("--arch", default="unet-classic")
        p.add_argument("--encoder", default=None, help="default: vgg-tiny (the architecture's own for maskrcnn)")
        p.add_argument("--pretrained", default=False, type=lambda v: {"true": True, "false": False}.get(v.lower(), v),
                       help="false, true, auto, or a .safetensors path")
        p.add_argument("--epochs", type=_positive_int, default=None,
                       help=f"passes over the training data (default: {DEFAULT_EPOCHS}; with --max-minutes alone, "
                            "the time budget sets the schedule)")
        p.add_argument("--batch-size", type=_positive_int, default=None, help="default: 8 on the CPU, 16 on a GPU (8 for maskrcnn); 16 for demo")
        p.add_argument("--lr", type=_positive_float, default=None,
                       help=f"default: {1e-2 if demo else TrainConfig.lr:g} (maskrcnn: its own)")
        p.add_argument("--loss", type=_loss, default=None,
                       help=f"ce, weighted_ce (class weights from pixel frequencies), dice, focal, lovasz, ce+dice "
                            f"(default: {'weighted_ce' if demo else TrainConfig.loss}; not for maskrcnn)")
        p.add_argument("--image-size", type=_positive_int, default=None,
                       help="train and score at this size (at least the model's stride)")
        p.add_argument("--ignore-index", type=int, default=None,
                       help="the mask value that means void (passed to the dataset loader)")
        p.add_argument("--precision", default=TrainConfig.precision, choices=["auto", "fp32", "bf16", "fp16"])
        p.add_argument("--max-minutes", type=_positive_float, default=1.5 if demo else None,
                       help="wall-clock budget in minutes (above 0; leave out for none)")
        p.add_argument("--device", type=_device, default="auto")
        p.add_argument("--scheduler", default=TrainConfig.scheduler, choices=list(SCHEDULER_NAMES))
        p.add_argument("--seed", type=int, default=TrainConfig.seed)
        p.add_argument("--out", default="runs/demo" if demo else "runs/train")
        p.add_argument("--json", action="store_true", help="print the final metrics and paths as one JSON object")

    demo = commands.add_parser("demo", help="train a small U-Net on the built-in dataset (the main job)")
    training_arguments(demo, demo=True)
    demo.set_defaults(run=lambda args: train_command(args, demo=True))
    train = commands.add_parser("train", help="train a model and save it with its checkpoints")
    training_arguments(train, demo=False)
    train.set_defaults(run=train_command)

    add_sweep_parser(commands, _positive_int, _positive_float)

    evaluation = commands.add_parser("eval", help="evaluate a saved model: per-class IoU, confusion")
    evaluation.add_argument("--model", required=True, help="a folder written by save_model or train")
    evaluation.add_argument("--dataset", default=None,
                            help="default: the dataset the model was trained on (from its model.json)")
    evaluation.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    evaluation.add_argument("--split", default=None, help="default: the validation split")
    evaluation.add_argument("--image-size", type=_positive_int, default=None)
    evaluation.add_argument("--device", type=_device, default="auto")
    evaluation.add_argument("--protocol", choices=("full", "resized"), default="full",
                            help="full (default): logits upsampled to each label's own size and scored there, "
                                 "as papers do; resized: labels resized to the model's input size")
    evaluation.add_argument("--tile", type=_tile, default=None, metavar="HxW",
                            help="sliding-window inference with these tiles (default: automatic above twice the "
                                 "training size; off: never)")
    evaluation.add_argument("--overlap", type=_overlap, default=0.25, help="tile overlap (default 0.25)")
    evaluation.add_argument("--tta", type=_tta, default=None, metavar="hflip,SCALE,...",
                            help="test-time augmentation, e.g. hflip or hflip,0.75,1,1.25")
    evaluation.add_argument("--json", action="store_true")
    evaluation.set_defaults(run=eval_command)

    exporting = commands.add_parser("export", help="export a saved model to ONNX (.onnx) or torch.export (.pt2)")
    exporting.add_argument("--model", required=True, help="a folder written by save_model or train")
    exporting.add_argument("--out", required=True, help="model.onnx or model.pt2 (a .json description goes beside)")
    exporting.add_argument("--image-size", type=_tile, default=None, metavar="HxW",
                           help="the input size of the graph (default: the training size)")
    exporting.add_argument("--no-check", action="store_true", help="skip the parity check against eager PyTorch")
    exporting.add_argument("--json", action="store_true")
    exporting.set_defaults(run=export_command)

    lab = commands.add_parser("lab", help="JupyterLab at the notebooks folder (127.0.0.1, with a token)")
    lab.add_argument("--notebooks", default="notebooks")
    lab.add_argument("--ip", default="127.0.0.1")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--token", default=None, help="default: $SEGNB_TOKEN, else a fresh random token")
    lab.add_argument("--no-browser", action="store_true")
    lab.add_argument("--allow-root", action="store_true", help="run as root (in a container)")
    lab.set_defaults(run=lab_command)

    studio = commands.add_parser("studio", help="the Studio as a standalone page (Voila, 127.0.0.1, token)")
    studio.add_argument("--ip", default="127.0.0.1")
    studio.add_argument("--port", type=int, default=8866)
    studio.add_argument("--token", default=None, help="default: $SEGNB_TOKEN, else a fresh random token")
    studio.add_argument("--presentation", action="store_true", help="large fonts and pictures for a projector")
    studio.add_argument("--preheat", type=int, default=0, metavar="N",
                        help="keep N kernels that have already opened the Studio ready for the next visitors")
    studio.add_argument("--fill-delay", type=_non_negative_float, default=1.0, metavar="SECONDS",
                        help="with --preheat: wait this long before replacing a kernel taken from the pool "
                             "(default 1; 60 for a class, so refills do not compete with the pages opening; a "
                             "visitor after the pool is used up waits for the delayed refill)")
    studio.set_defaults(run=studio_command)

    from segnb import lessons  # the standard library only at import: the CLI starts as fast

    prepared = commands.add_parser("lessons", help="prepared lessons: train every notebook model once, list them")
    lessons.add_arguments(prepared)
    prepared.set_defaults(run=lessons.run)
    return parser
