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
