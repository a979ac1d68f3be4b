"""``segnb sweep``: the same sweep as :func:`segnb.sweep`, from the shell.

Run the same command in several terminals or on several machines with one ``--storage`` (and the
same ``--study``, or the default name the same settings give) and they share the trials.
"""

from __future__ import annotations

import json

__all__ = ["add_sweep_parser", "sweep_command"]


def add_sweep_parser(commands, positive_int, positive_float) -> None:
    p = commands.add_parser(
        "sweep", help="train variants of one configuration with Optuna (pruning, runs kept)",
        description="Each trial trains the base settings with values drawn from --space, within "
                    "--minutes-per-run, and is kept as a run in --out. Example: segnb sweep --arch fcn8s "
                    "--set image_size=64 --space lr=log:1e-4:1e-1 --space loss=ce,dice --trials 6 "
                    "--minutes-per-run 0.5 --workers 2")
    p.add_argument("--dataset", default="shapes", help="'shapes', a hub id or a folder")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="dataset loader option, e.g. n=200 (repeatable)")
    p.add_argument("--arch", default="fcn8s")
    p.add_argument("--encoder", default="vgg-tiny")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="a fit() option every trial uses, e.g. batch_size=8, epochs=5, image_size=64 (repeatable)")
    p.add_argument("--space", action="append", default=[], metavar="NAME=VALUES", required=True,
                   help="NAME=a,b,c (choices), NAME=low:high or NAME=log:low:high; NAME is a fit() option, "
                        "arch, encoder, upsample, or data.OPTION (repeatable)")
    p.add_argument("--trials", type=positive_int, default=None, help="trials in all (default: a grid's size)")
    p.add_argument("--minutes-per-run", type=positive_float, default=1.0, help="each trial's time budget")
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random", "grid"])
    p.add_argument("--study", default=None, help="the study's name (default: derived from the settings)")
    p.add_argument("--storage", default=None,
                   help="the study's database URL (default: sqlite:///OUT/sweeps.db); a shared database "
                        "(postgresql://..., mysql://...) lets several machines share the sweep")
    p.add_argument("--out", default=None, help="the runs folder (default: $SEGNB_RUNS, else runs)")
    p.add_argument("--workers", type=positive_int, default=1, help="processes on this machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-prune", action="store_true", help="let every trial use its whole budget")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(run=sweep_command)


def sweep_command(args) -> int:
    from segnb.cli.commands import parse_options
    from segnb.sweep import parse_space, sweep

    base = {"data": args.dataset, "data_options": parse_options(args.data_option), "arch": args.arch,
            "encoder": args.encoder, **parse_options(args.settings)}
    result = sweep(base, parse_space(args.space), trials=args.trials, budget_minutes_per_run=args.minutes_per_run,
                   sampler=args.sampler, study=args.study, storage=args.storage, folder=args.out,
                   workers=args.workers, seed=args.seed, prune=not args.no_prune)
    counts = result.counts()
    try:
        best = {"best_value": result.best_value, "best_params": result.best_params, "best_run": str(result.best_run.path)}
    except ValueError:  # no trial completed
        best = {"best_value": None, "best_params": None, "best_run": None}
    if args.json:
        print(json.dumps({"study": result.study_name, "storage": result.storage, "counts": counts,
                          "seconds": round(result.seconds, 1), **best}))
    else:
        print(result)
        print(f"runs: segnb.runs({str(result.folder)!r}, sweep={result.study_name!r})")
    return 0 if counts.get("complete") else 1
