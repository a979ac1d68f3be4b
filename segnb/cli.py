"""The ``segnb`` command line."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from segnb.callbacks import Callback

__all__ = ["main"]

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


def _loss(text: str) -> str:
    from segnb.losses import LOSSES

    if text not in LOSSES:
        raise argparse.ArgumentTypeError(f"unknown loss {text!r}; choose one of {', '.join(LOSSES)}")
    return text


def _parse_options(pairs: list[str]) -> dict:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, true, lists)."""
    from segnb.errors import SegnbError

    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise SegnbError(f"option {pair!r} must look like key=value (e.g. reduce_labels=true).")
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
    for note in data.notes:  # every guess the loader made, with the option that overrides it
        print(f"note      {note}")
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

    def __init__(self, start: float, held_out: bool = True):
        self.start = start
        self.val = "val loss" if held_out else "loss on the training images (no validation split)"

    def on_epoch_end(self, trainer):
        import time

        record = trainer.history.epochs[-1]
        if "mask_ap50" in record:  # an instance model: its loss terms and mask AP (no val loss, no mIoU)
            scores = f"mask AP {record['mask_ap']:.3f}  mask AP50 {record['mask_ap50']:.3f}"
        else:
            scores = f"{self.val} {record['val_loss']:.3f}  mIoU {record['miou']:.3f}"
        print(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}  {scores}  "
              f"{record['images_per_s']:.0f} images/s  [{time.monotonic() - self.start:.0f} s]",
              file=sys.stderr, flush=True)


def _instance_settings(args, data) -> dict:
    """``--arch maskrcnn``: the model's own training defaults; options that do not apply are refused."""
    from segnb.errors import SegnbError
    from segnb.models.maskrcnn import FIT_DEFAULTS

    if args.loss is not None:
        raise SegnbError(f"--loss does not apply to --arch {args.arch}: Mask R-CNN trains on its own RPN, box "
                         "and mask losses (each is logged). Leave --loss out.")
    if not data.things:
        raise SegnbError(f"{data.source} does not say which classes are things (countable objects) for "
                         f"--arch {args.arch}: pass --data-option 'things=[\"cell\"]'.")
    return {"lr": args.lr or FIT_DEFAULTS["lr"], "batch_size": args.batch_size or FIT_DEFAULTS["batch_size"]}


def _train(args, demo: bool = False) -> int:
    """Train, evaluate, save; with --json print one JSON object with the metrics and paths."""
    import time

    import torch

    from segnb.data import load_dataset
    from segnb.errors import SegnbError
    from segnb.models import build_model, save_model
    from segnb.models.registry import get_architecture
    from segnb.train import evaluate, fit, resolve_device

    start = time.monotonic()
    data_options = _parse_options(args.data_option)
    if args.dataset == "shapes" and args.seed is not None:
        data_options.setdefault("seed", args.seed)
    if args.ignore_index is not None:  # a loader option, so every split and every guess uses it
        data_options["ignore_index"] = args.ignore_index
    data = load_dataset(args.dataset, **data_options)
    _print_notes(data)
    instance = get_architecture(args.arch).group == "instance"
    if instance:  # Mask R-CNN: detections, its own losses, mask AP
        settings = _instance_settings(args, data)
        model = build_model(args.arch, args.encoder, class_names=data.class_names, pretrained=args.pretrained,
                            things=data.things)
    else:
        settings = {"lr": args.lr or (1e-2 if demo else 1e-3), "batch_size": args.batch_size or 16,
                    "loss": args.loss or ("weighted_ce" if demo else "ce")}
        model = build_model(args.arch, args.encoder or "vgg-tiny", class_names=data.class_names,
                            pretrained=args.pretrained)
    _check_image_size(args.image_size, model)
    device = resolve_device(args.device)
    print(f"segnb {'demo' if demo else 'train'}: {args.arch} on {model.spec['encoder']}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; {data.source} "
          f"({len(data[data.train_split])} train / {len(data[data.eval_split])} {data.eval_split} images); "
          f"device {device}, {torch.get_num_threads()} threads", file=sys.stderr)
    out = Path(args.out)
    try:
        epochs = args.epochs if args.epochs is not None else (None if args.max_minutes else 10)
        history = fit(model, data, epochs=epochs, **settings, scheduler=args.scheduler,
                      device=device, precision=args.precision, image_size=args.image_size,
                      max_minutes=args.max_minutes, checkpoint_dir=out / "checkpoints", seed=args.seed or 0,
                      callbacks=[_EpochPrinter(start, data.has_validation)],
                      progress=not args.json and sys.stderr.isatty())
    except KeyboardInterrupt:  # a second Ctrl+C: stop at once
        print(f"segnb: interrupted; the last checkpoint is in {out / 'checkpoints'}", file=sys.stderr)
        return 130
    except SegnbError:
        raise  # a clear message already: main() prints it
    except Exception as err:  # a failure never ends in a traceback or a zero exit
        print(f"segnb: training failed: {type(err).__name__}: {err}\nThe last checkpoint (if an epoch "
              f"completed) is in {out / 'checkpoints'}.", file=sys.stderr)
        return 1
    interrupted = history.stopped.startswith("interrupted")
    if not history.epochs:
        print(f"segnb: training ended before the first epoch: {history.stopped}", file=sys.stderr)
        return 130 if interrupted else 1
    folder = save_model(model, out / "model", data=data)
    report = evaluate(model, data, image_size=args.image_size, device=device)
    if instance:
        return _instance_result(args, data, history, report, folder, out, start, interrupted)
    result = {
        "stopped": history.stopped, "epochs": len(history.epochs), "steps": history.steps,
        "miou": report.miou, "pixel_accuracy": report.scores.pixel_accuracy,
        "iou": dict(zip(data.class_names, report.scores.iou, strict=True)),
        "model": str(folder), "checkpoints": str(out / "checkpoints"),
        "seconds": round(time.monotonic() - start, 1),
        "scored_on": data.eval_split if data.has_validation else f"{data.eval_split} (training images)",
        "notes": list(data.notes),
    }
    code = 130 if interrupted else 0  # like any program stopped by Ctrl+C; the model is saved all the same
    if args.json:
        print(json.dumps(result))
        return code
    where = f"the {data.eval_split} split" if data.has_validation else \
        f"the TRAINING images ({data.eval_split}; there is no validation split)"
    print(f"\nper-class IoU on {where} ({history.stopped}):")
    shares = data.frequencies(data.eval_split)
    for row, share in zip(report.table(), shares, strict=True):
        iou = row["iou"]
        value = "   -  " if iou is None else f"{iou:6.3f}"
        print(f"  {row['class']:<9} {value}  {'#' * round((iou or 0) * 30):<30}  {share:6.2%} of pixels")
    print(f"  {'mIoU':<9} {report.miou:6.3f}   pixel accuracy {report.scores.pixel_accuracy:.3f}")
    print(f"\nmodel saved to {folder} ({result['seconds']:.0f} s in all). "
          "Next: .venv/bin/segnb lab  (JupyterLab at notebooks/)")
    return code


def _instance_result(args, data, history, report, folder, out, start, interrupted) -> int:
    """The end of ``segnb train --arch maskrcnn``: mask AP (never an mIoU), the model's folder."""
    import time

    result = {"stopped": history.stopped, "epochs": len(history.epochs), "steps": history.steps,
              **report.as_dict(), "model": str(folder), "checkpoints": str(out / "checkpoints"),
              "seconds": round(time.monotonic() - start, 1), "scored_on": data.eval_split,
              "notes": list(data.notes)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"\non the {data.eval_split} split ({history.stopped}): {report.format()}")
        print(f"\nmodel saved to {folder} ({result['seconds']:.0f} s in all).")
    return 130 if interrupted else 0


def _eval(args) -> int:
    from segnb.data import load_dataset
    from segnb.errors import SegnbError
    from segnb.models import load_model
    from segnb.models.io import read_model_info
    from segnb.train import evaluate

    info = read_model_info(args.model)
    options = _parse_options(args.data_option)
    source = args.dataset
    if source is None:  # the dataset the model was trained on, as its model.json records it
        source = info.get("data_source")
        if source is None:
            raise SegnbError(
                f"{args.model}/model.json does not say which dataset the model was trained on (saved "
                "before segnb recorded it, or from an in-memory dataset). Pass --dataset."
            )
        options = {**info.get("data_options", {}), **options}
        print(f"segnb eval: dataset {source} {options or ''} (from {args.model}/model.json)",
              file=sys.stderr)
    model = load_model(args.model)
    data = load_dataset(source, **options)
    _print_notes(data)
    if model.num_classes != data.num_classes:
        raise SegnbError(
            f"the model has {model.num_classes} classes but {data.source} has {data.num_classes}: "
            "scores would count only the pixels both know. Evaluate on the dataset it was trained "
            "on (leave out --dataset), or pass --data-option num_classes=... / class_names=..."
        )
    if args.split is not None and args.split not in data.splits:
        raise SegnbError(f"no split {args.split!r} in {data.source}; its splits are {data.split_names}.")
    _check_image_size(args.image_size, model)
    split = args.split or data.eval_split
    if split == data.train_split and not data.has_validation:
        print(f"segnb eval: {data.source} has no validation split; these scores are on TRAINING images.",
              file=sys.stderr)
    report = evaluate(model, data, split=split, image_size=args.image_size, device=args.device)
    if args.json:
        print(json.dumps({**report.as_dict(), "dataset": data.source, "split": split,
                          "notes": list(data.notes)}))
    else:
        print(f"{data.source}, split {split}")
        print(report.format())
    return 0


def _print_notes(data) -> None:
    for note in data.notes:
        print(f"segnb: note: {note}", file=sys.stderr)


def _check_image_size(image_size, model) -> None:
    """Refuse an image smaller than the model's total stride: nothing would be left to segment."""
    from segnb.errors import SegnbError

    if image_size is None:
        return
    smallest = max(int(getattr(model, "pad_multiple", 1) or 1), int(getattr(model, "min_size", 0) or 0))
    if image_size < smallest:
        raise SegnbError(
            f"--image-size {image_size} is below this model's minimum of {smallest} px (its encoder "
            f"downsamples by {smallest}); use --image-size {smallest} or more."
        )


def _root_refusal(args, name: str) -> int | None:
    """Jupyter refuses to run as root; say so before starting, and what to do."""
    import os

    if hasattr(os, "geteuid") and os.geteuid() == 0 and not args.allow_root:
        print(f"segnb {name}: running as root, which Jupyter refuses. Run it as a normal user, or "
              f"in a container where root is expected: segnb {name} --allow-root", file=sys.stderr)
        return 2
    return None


def _serve(command: list[str], env: dict) -> int:
    """Run a server child; SIGTERM, SIGHUP and Ctrl-C end the child too, never leave it listening."""
    import signal
    import subprocess

    child = subprocess.Popen(command, env=env)

    def forward(signum, frame):
        child.terminate()  # SIGTERM: Jupyter and Voila shut down cleanly

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # Ctrl-C ends the server, as before
                child.terminate()
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _token(args) -> str:
    """--token, else SEGNB_TOKEN, else a fresh random one. Never put on a command line (ps shows it)."""
    import os
    import secrets

    return args.token or os.environ.get("SEGNB_TOKEN") or secrets.token_urlsafe(16)


def _lab(args) -> int:
    import os

    refused = _root_refusal(args, "lab")
    if refused is not None:
        return refused
    notebooks = Path(args.notebooks).resolve()
    token = _token(args)
    command = [
        sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={notebooks}",
        f"--ServerApp.ip={args.ip}", f"--ServerApp.port={args.port}",
        "--no-browser" if args.no_browser else "--ServerApp.open_browser=True",
    ]
    if args.allow_root:
        command.append("--ServerApp.allow_root=True")
    env = {**os.environ, "JUPYTER_TOKEN": token}  # the environment, not the command line
    env.pop("JUPYTER_TOKEN_FILE", None)
    print(f"JupyterLab on http://{args.ip}:{args.port}/lab?token={token}")
    if args.ip == "127.0.0.1":
        print("Listening on this machine only. To expose it deliberately: segnb lab --ip 0.0.0.0 "
              "(anyone who can reach the port and has the token can run code).")
    return _serve(command, env)


# What the Studio's Dataset tab loads by default (its "images" slider and the lesson seed).
STUDIO_SHAPES = {"n": 400, "seed": 0}


def _studio(args) -> int:
    """The Studio as a standalone page (Voila): no code cells, for students."""
    import json as json_module
    import os
    import tempfile
    from importlib import resources

    notebook = resources.files("segnb.ui").joinpath("studio.ipynb")
    token = _token(args)
    with tempfile.TemporaryDirectory(prefix="segnb-studio-") as config:  # 0700: this user only
        # Voila reads its token from a config file here, not from the command line.
        path = Path(config) / "voila.json"
        path.touch(mode=0o600)
        path.write_text(json_module.dumps({"Voila": {"token": token}}))
        # segnb's Voila template (segnb/ui/jupyter/voila/templates/segnb): Voila's own, with a still
        # loading message instead of an animation that costs a waiting page's CPU (docs/CLASSROOM.md).
        data = resources.files("segnb.ui").joinpath("jupyter")
        # The built-in dataset as the Studio loads it by default, drawn once here for every student.
        from segnb.data.shapes import CACHE_ENV, rendered_scenes

        shapes = Path(config) / "shapes"
        shapes.mkdir()
        rendered_scenes(**STUDIO_SHAPES, size=128, void_border=0, folder=shapes)
        env = {**os.environ, CACHE_ENV: str(shapes), "SEGNB_PRESENTATION": "1" if args.presentation else "0",
               "JUPYTER_CONFIG_PATH": os.pathsep.join(
                   [config, *filter(None, [os.environ.get("JUPYTER_CONFIG_PATH")])]),
               "JUPYTER_PATH": os.pathsep.join([str(data), *filter(None, [os.environ.get("JUPYTER_PATH")])])}
        command = [sys.executable, "-m", "voila", str(notebook), f"--Voila.ip={args.ip}",
                   f"--port={args.port}", "--no-browser", "--template=segnb",
                   # A busy machine (a class opening pages at once) can take longer than Voila's 4 s
                   # to deliver a cell's output; without this the page comes up without the Studio.
                   "--VoilaExecutor.iopub_timeout=60"]
        if args.preheat > 0:  # kernels that have run the Studio notebook before anyone asks (docs/CLASSROOM.md)
            command += ["--preheat_kernel=True", f"--VoilaConfiguration.default_pool_size={args.preheat}",
                        # Refill the pool this long after a kernel is taken, not while a class opens pages.
                        f"--VoilaKernelManager.fill_delay={args.fill_delay}"]
        print(f"segnb studio on http://{args.ip}:{args.port}/?token={token}")
        if args.ip == "127.0.0.1":
            print("Listening on this machine only. To expose it deliberately: segnb studio --ip 0.0.0.0 "
                  "(anyone who can reach the port and has the token can use it).")
        return _serve(command, env)


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
    show.set_defaults(run=_datasets_show)

    def training_arguments(p, demo: bool):
        p.add_argument("--dataset", default="shapes", help="'shapes', a hub id or a folder")
        p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                       help="dataset loader option, e.g. reduce_labels=true (repeatable)")
        p.add_argument("--arch", default="unet-classic")
        p.add_argument("--encoder", default=None, help="default: vgg-tiny (the architecture's own for maskrcnn)")
        p.add_argument("--pretrained", default=False, type=lambda v: {"true": True, "false": False}.get(v.lower(), v),
                       help="false, true, auto, or a .safetensors path")
        p.add_argument("--epochs", type=_positive_int, default=None,
                       help="passes over the training data (default: 10; with --max-minutes alone, "
                            "the time budget sets the schedule)")
        p.add_argument("--batch-size", type=_positive_int, default=None, help="default: 16 (8 for maskrcnn)")
        p.add_argument("--lr", type=_positive_float, default=None,
                       help=f"default: {1e-2 if demo else 1e-3:g} (maskrcnn: its own)")
        p.add_argument("--loss", type=_loss, default=None,
                       help=f"ce, weighted_ce (class weights from pixel frequencies), dice, focal, lovasz, ce+dice "
                            f"(default: {'weighted_ce' if demo else 'ce'}; not for maskrcnn)")
        p.add_argument("--image-size", type=_positive_int, default=None,
                       help="train and score at this size (at least the model's stride)")
        p.add_argument("--ignore-index", type=int, default=None,
                       help="the mask value that means void (passed to the dataset loader)")
        p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
        p.add_argument("--max-minutes", type=_positive_float, default=1.5 if demo else None,
                       help="wall-clock budget in minutes (above 0; leave out for none)")
        p.add_argument("--device", type=_device, default="auto")
        p.add_argument("--scheduler", default="cosine", choices=["cosine", "constant"])
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
    evaluation.add_argument("--dataset", default=None,
                            help="default: the dataset the model was trained on (from its model.json)")
    evaluation.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    evaluation.add_argument("--split", default=None, help="default: the validation split")
    evaluation.add_argument("--image-size", type=_positive_int, default=None)
    evaluation.add_argument("--device", type=_device, default="auto")
    evaluation.add_argument("--json", action="store_true")
    evaluation.set_defaults(run=_eval)

    lab = commands.add_parser("lab", help="JupyterLab at the notebooks folder (127.0.0.1, with a token)")
    lab.add_argument("--notebooks", default="notebooks")
    lab.add_argument("--ip", default="127.0.0.1")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--token", default=None, help="default: $SEGNB_TOKEN, else a fresh random token")
    lab.add_argument("--no-browser", action="store_true")
    lab.add_argument("--allow-root", action="store_true", help="run as root (in a container)")
    lab.set_defaults(run=_lab)

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
