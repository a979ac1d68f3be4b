"""``segnb datasets show``, ``segnb demo``, ``segnb train`` and ``segnb eval``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from segnb.callbacks import Callback

__all__ = ["datasets_show", "eval_command", "export_command", "parse_options", "train_command"]


def parse_options(pairs: list[str]) -> dict:
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


def datasets_show(args) -> int:
    from segnb.data import load_dataset

    data = load_dataset(args.source, **parse_options(args.option))
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
        if record.get("miou") is None and record.get("mask_ap50") is None:
            scores = "not validated this epoch (the time budget keeps validation to 5% of it)"
        elif "mask_ap50" in record:  # an instance model: its loss terms and mask AP (no val loss, no mIoU)
            scores = f"mask AP {record['mask_ap']:.3f}  mask AP50 {record['mask_ap50']:.3f}"
        else:
            scores = f"{self.val} {record['val_loss']:.3f}  mIoU {record['miou']:.3f}"
        print(f"epoch {record['epoch']}: train loss {record['train_loss']:.3f}  {scores}  "
              f"{record['images_per_s']:.0f} images/s  [{time.monotonic() - self.start:.0f} s]",
              file=sys.stderr, flush=True)


def _instance_settings(args, data) -> dict:
    """``--arch maskrcnn``: the model's own training defaults; options that do not apply are refused."""
    from segnb.errors import SegnbError
    from segnb.instances.maskrcnn import FIT_DEFAULTS

    if args.loss is not None:
        raise SegnbError(f"--loss does not apply to --arch {args.arch}: Mask R-CNN trains on its own RPN, box "
                         "and mask losses (each is logged). Leave --loss out.")
    if not data.things:
        raise SegnbError(f"{data.source} does not say which classes are things (countable objects) for "
                         f"--arch {args.arch}: pass --data-option 'things=[\"cell\"]'.")
    return {"lr": args.lr or FIT_DEFAULTS["lr"], "batch_size": args.batch_size or FIT_DEFAULTS["batch_size"]}


def train_command(args, demo: bool = False) -> int:
    """Train, evaluate, save; with --json print one JSON object with the metrics and paths."""
    import time

    import torch

    from segnb.data import load_dataset
    from segnb.device import resolve_device
    from segnb.errors import SegnbError
    from segnb.evaluation import evaluate
    from segnb.models import build_model, save_model
    from segnb.models.registry import get_architecture
    from segnb.train import TrainConfig, fit

    start = time.monotonic()
    data_options = parse_options(args.data_option)
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
        settings = {"lr": args.lr or (1e-2 if demo else TrainConfig.lr),
                    "batch_size": args.batch_size or (16 if demo else None),  # None: by device (TrainConfig)
                    "loss": args.loss or ("weighted_ce" if demo else TrainConfig.loss)}
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
        history = fit(model, data, epochs=args.epochs, **settings, scheduler=args.scheduler,  # None: the config's
                      device=device, precision=args.precision, image_size=args.image_size,
                      max_minutes=args.max_minutes, checkpoint_dir=out / "checkpoints", seed=args.seed,
                      run=out, callbacks=[_EpochPrinter(start, data.has_validation)],
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
        "miou": report.miou, "pixel_accuracy": report.scores.pixel_accuracy, "protocol": report.protocol,
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
    print(f"  protocol: {report.as_dict()['protocol_text']}")
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


def eval_command(args) -> int:
    from segnb.data import load_dataset
    from segnb.data.preprocess import check_classes
    from segnb.errors import SegnbError
    from segnb.evaluation import evaluate
    from segnb.models import load_model
    from segnb.models.io import read_model_info

    info = read_model_info(args.model)
    options = parse_options(args.data_option)
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
    check_classes(model, data, remedy="Evaluate on the dataset it was trained on (leave out --dataset), or "
                                      "pass --data-option num_classes=... / class_names=...")
    if args.split is not None and args.split not in data.splits:
        raise SegnbError(f"no split {args.split!r} in {data.source}; its splits are {data.split_names}.")
    _check_image_size(args.image_size, model)
    split = args.split or data.eval_split
    if split == data.train_split and not data.has_validation:
        print(f"segnb eval: {data.source} has no validation split; these scores are on TRAINING images.",
              file=sys.stderr)
    report = evaluate(model, data, split=split, image_size=args.image_size, device=args.device,
                      protocol=args.protocol, tile=args.tile, overlap=args.overlap, tta=args.tta)
    if args.json:
        print(json.dumps({**report.as_dict(), "dataset": data.source, "split": split,
                          "notes": list(data.notes)}))
    else:
        print(f"{data.source}, split {split}")
        print(report.format())
    return 0


def export_command(args) -> int:
    """``segnb export --model runs/x/model --out model.onnx``: ONNX or torch.export, parity checked."""
    from segnb.exporting import TOLERANCE, check_export, export
    from segnb.models import load_model

    model = load_model(args.model)
    path = export(model, args.out, image_size=args.image_size, check=False)
    diff = check_export(path, model, image_size=args.image_size) if not args.no_check else None
    info = json.loads(path.with_name(path.name + ".json").read_text())
    result = {"path": str(path), "description": str(path.with_name(path.name + ".json")),
              "input": info["input"], "max_abs_diff": diff, "tolerance": TOLERANCE}
    if args.json:
        print(json.dumps(result))
    else:
        shape = "x".join(str(v) for v in info["input"]["shape"])
        check = "not checked" if diff is None else f"max |difference| to eager PyTorch {diff:.1e}"
        print(f"{path}: input {shape} RGB in [0, 1] (normalised inside), logits out; {check}")
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
