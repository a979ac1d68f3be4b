"""Rehearse docs/TEACHING.md's 50-minute lecture: run each step's cells as a teacher would and time them.

Each step is a section of one notebook (from a heading to the next heading of the same level or a
given end heading). The notebook runs from its first cell to the step's last cell (the cells before
it make its state); the time of a step is the sum of the execution times of its own code cells, read
from nbclient's ``execution`` metadata. ``--fast`` sets ``SEGNB_FAST=1`` as in CI.

    .venv/bin/python benchmarks/rehearse_lecture.py --fast
    .venv/bin/python benchmarks/rehearse_lecture.py --steps 01 03 09   # normal mode, only these notebooks
    .venv/bin/python benchmarks/rehearse_lecture.py --fast --whole 04_fcn_segnet_unet   # every cell's time
    SEGNB_LESSONS=... .venv/bin/python benchmarks/rehearse_lecture.py --all   # every notebook whole, and the steps

``--all`` runs every notebook from its first cell to its last, prints each one's time (kernel start
included) with its cells of 10 s or more, then the lecture's steps read from those same runs. With
prepared lessons (``segnb lessons prepare``; ``$SEGNB_LESSONS`` names a cache elsewhere) this is the
check that each notebook runs in under 3 minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]

# (minutes, notebook, first heading, heading where the step stops (exclusive), what the teacher does)
STEPS = [
    ("0-5", "00_quickstart", "# 00 ·", "## 2. The model", "the Studio, the task and the data"),
    ("5-9", "01_huggingface_datasets", "## Boundary rules and the void label", "## Difficult objects",
     "annotation rules: the void border, predicted then scored"),
    ("9-15", "04_fcn_segnet_unet", "## Sliding window against fully convolutional", "## Why downsample at all",
     "sliding window against fully convolutional"),
    ("15-25", "03_upsampling", "## Unpooling without weights", "## Exercises",
     "unpooling, max-unpooling, transposed convolution, checkerboards as images"),
    ("25-33", "04_fcn_segnet_unet", "## FCN-32s: scores at stride 32", "### Predict: which upsampling leaves",
     "FCN-32s' bilinear step, U-Net's crop and weights, the six networks compared"),
    ("33-41", "05_soft_masks_and_iou", "## IoU, void and the dataset-level mIoU", "## Class imbalance",
     "per-class IoU and Dice, confusion, IoU by object size"),
    ("41-46", "09_instances_and_panoptic", "## RoIPool against RoIAlign", "## Training with `fit()`",
     "RoIPool against RoIAlign"),
]
SETUP = {"05_soft_masks_and_iou": "data = segnb.load_dataset(", "04_fcn_segnet_unet": "SECONDS = 8  # per network"}


def _index(cells, heading: str) -> int:
    for i, cell in enumerate(cells):
        if cell.cell_type == "markdown" and any(line.startswith(heading) for line in cell.source.splitlines()):
            return i
    raise SystemExit(f"no cell starts with {heading!r}")


def _seconds(cell) -> float:
    times = cell.metadata.get("execution", {})
    start, end = times.get("iopub.execute_input"), times.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = dt.datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def run(notebook: str, stop: int, fast: bool) -> list:
    path = ROOT / "notebooks" / f"{notebook}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells = nb.cells[:stop]
    folder = Path(tempfile.mkdtemp(prefix="segnb-rehearse-"))
    env = {"SEGNB_FAST": "1" if fast else "0", "MPLBACKEND": "Agg", "HF_HOME": str(folder / "hf"),
           "SEGNB_SHARED_DATA": str(ROOT.parent / "shared" / "data")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=1800, kernel_name="python3", allow_errors=False,
                       resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb.cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="SEGNB_FAST=1, as in CI")
    parser.add_argument("--steps", nargs="*", help="notebook numbers to rehearse (default: all)")
    parser.add_argument("--whole", metavar="NOTEBOOK", help="run one whole notebook and time each code cell")
    parser.add_argument("--all", action="store_true", help="run every notebook whole, then report the steps")
    args = parser.parse_args()
    if args.whole:
        start = time.perf_counter()
        cells = run(args.whole, 10_000, args.fast)
        for i, cell in enumerate(cells):
            if cell.cell_type == "code":
                print(f"cell {i:3d} {_seconds(cell):7.1f} s  {cell.source.splitlines()[0][:70] if cell.source else ''}")
        print(f"{args.whole}: {time.perf_counter() - start:.0f} s in all, kernel start included "
              f"(load average {os.getloadavg()[0]:.1f} at the end)")
        return
    wanted = [s for s in STEPS if not args.steps or s[1][:2] in args.steps]
    by_notebook: dict[str, int] = {}  # each notebook runs up to this cell
    if args.all:
        by_notebook = {path.stem: 10_000 for path in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    else:
        for _, notebook, _, end, _ in wanted:
            cells = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4).cells
            by_notebook[notebook] = max(by_notebook.get(notebook, 0), _index(cells, end))
    executed, wall, failed = {}, {}, []
    for notebook, stop in by_notebook.items():
        start = time.perf_counter()
        try:
            executed[notebook] = run(notebook, stop, args.fast)
        except Exception as error:  # noqa: BLE001 - one failing notebook must not hide the others' times
            if not args.all:
                raise
            failed.append(notebook)
            print(f"{notebook:28s} FAILED after {time.perf_counter() - start:.0f} s: "
                  f"{type(error).__name__}: {str(error)[-400:]}", flush=True)
            continue
        wall[notebook] = time.perf_counter() - start
        if args.all:
            slow = [(i, _seconds(c), c.source.splitlines()[0][:60]) for i, c in enumerate(executed[notebook])
                    if c.cell_type == "code" and c.source and _seconds(c) >= 10]
            print(f"{notebook:28s} {wall[notebook]:6.0f} s whole (load average {os.getloadavg()[0]:.1f})", flush=True)
            for i, seconds, first in slow:
                print(f"    cell {i:3d} {seconds:6.1f} s  {first}", flush=True)
    print(f"mode: {'fast' if args.fast else 'normal'}; load average before the last run: {os.getloadavg()[0]:.1f}")
    for minutes, notebook, first, end, what in wanted:
        if notebook not in executed:
            print(f"{minutes:>6} min  {notebook:28s}  (the notebook failed)")
            continue
        cells = executed[notebook]
        a = _index(cells, first)
        ends = [i for i, c in enumerate(cells) if i > a and c.cell_type == "markdown"
                and any(line.startswith(end) for line in c.source.splitlines())]
        b = ends[0] if ends else len(cells)  # the run stopped before the end heading of its last step
        step = sum(_seconds(c) for c in cells[a:b] if c.cell_type == "code")
        print(f"{minutes:>6} min  {notebook:28s} {step:7.1f} s  {what}")
    for notebook, locator in SETUP.items():
        if notebook in executed:
            cell = next((c for c in executed[notebook] if c.cell_type == "code" and locator in c.source), None)
            if cell is None:
                print(f"  setup  {notebook:28s}  no cell holds {locator!r} any more: update SETUP")
                continue
            print(f"  setup  {notebook:28s} {_seconds(cell):7.1f} s  the cell that trains ({locator.split(chr(10))[0][:40]}...)")
    for notebook, seconds in wall.items():
        what = "kernel start and every cell" if args.all else "kernel start and every cell up to the last step"
        print(f"  whole  {notebook:28s} {seconds:7.1f} s  {what}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
