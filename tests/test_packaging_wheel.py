"""The wheel is what users install: build it, install it outside the checkout, and use it from there.

The checkout's ``.venv`` has segnb installed in editable mode, which serves every module from the
working tree, so a module or a data file that the wheel leaves out would go unnoticed in every
other test. Here the wheel is installed with ``pip install --no-deps --target`` into a folder of its
own, and a child Python that sees only that folder and the dependencies (never the checkout) imports
every module of segnb, trains, segments and builds the Studio.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# The dependencies' site-packages (torch, timm, ...): a shared environment that has no segnb.
DEPENDENCIES = Path(torch.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources, and a test
    # run must leave the working tree as it found it (scripts/test checks).
    where = tmp_path_factory.mktemp("wheel")
    source = where / "source"
    left_out = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "runs",
        "artifacts", "notebooks", "benchmarks", "tests", "docs")

    def ignore(folder, names):  # run records wherever fit() wrote them, but not the package segnb/runs/
        return set(left_out(folder, names)) - ({"runs"} if Path(folder) == ROOT / "segnb" else set())

    shutil.copytree(ROOT, source, symlinks=True, ignore=ignore)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(where)], check=True)
    return next(where.glob("segnb-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(target), str(wheel)], check=True)
    return target


def _run_installed(target: Path, code: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python that sees the install and the dependencies, never the checkout.

    ``-S`` leaves out the site-packages of this interpreter (and the editable install in it);
    ``site.addsitedir`` then reads the dependencies' own .pth files.
    """
    assert not (DEPENDENCIES / "segnb").exists(), f"{DEPENDENCIES} has its own segnb"
    prelude = f"import site; site.addsitedir({str(DEPENDENCIES)!r})\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(DEPENDENCIES)]),
           "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-S", "-c", prelude + textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_wheel_ships_every_package_the_front_end_and_the_voila_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "segnb").rglob("*.py")}
    assert sources and sources <= names, f"left out of the wheel: {sorted(sources - names)}"
    front_end = [p.name for p in (ROOT / "widgets").iterdir() if p.suffix in {".js", ".css", ".py"}]
    assert {f"segnb/widgets/{name}" for name in front_end} <= names
    for name in ("conf.json", "spinner.macro.html.j2"):  # segnb studio's Voila template (docs/CLASSROOM.md)
        assert f"segnb/ui/jupyter/voila/templates/segnb/{name}" in names
    assert "segnb/ui/studio.ipynb" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "segnb = segnb.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


INSTALLED_CHECK = """
    import importlib, json, pkgutil, sys
    from importlib import resources
    from pathlib import Path

    import numpy as np

    target = Path({target!r}).resolve()
    result = {{}}

    import segnb

    modules = ["segnb"] + sorted(m.name for m in pkgutil.walk_packages(segnb.__path__, "segnb.")
                                 if not m.name.endswith("__main__"))
    for name in modules:
        importlib.import_module(name)
    loaded = {{n: m.__file__ for n, m in sys.modules.items()
              if (n == "segnb" or n.startswith("segnb.")) and getattr(m, "__file__", None)}}
    result["modules"] = modules
    result["outside"] = sorted(n for n, f in loaded.items() if not Path(f).resolve().is_relative_to(target))

    from segnb.callbacks import Callback, StopTraining

    class StopAfter(Callback):
        def __init__(self, steps):
            self.steps = steps

        def on_step_end(self, trainer):
            if trainer.step >= self.steps:
                raise StopTraining("two steps")

    data = segnb.load_dataset("shapes", n=12, size=64)
    model = segnb.build_model("unet-classic", "vgg-tiny", class_names=data.class_names)
    history = segnb.fit(model, data, epochs=1, batch_size=4, progress=False, device="cpu",
                        callbacks=[StopAfter(2)])
    result["semantic_steps"] = history.steps
    instance = segnb.build_model("maskrcnn", "test_resnet", class_names=data.class_names, things=data.things,
                                 image_size=64)
    history = segnb.fit(instance, data, epochs=1, batch_size=2, progress=False, device="cpu",
                        callbacks=[StopAfter(2)])
    result["maskrcnn_steps"] = history.steps

    from segnb import interactive as ia

    image = np.zeros((40, 40, 3), np.uint8)
    image[10:30, 10:30] = 220
    strokes = [{{"label": ia.FOREGROUND, "size": 2, "points": [15, 15, 25, 25]}},
               {{"label": ia.BACKGROUND, "size": 2, "points": [2, 2, 37, 2]}}]
    mask = ia.random_walker_segment(image, strokes) == ia.FOREGROUND
    result["scribble_iou"] = float(mask[10:30, 10:30].sum() / (mask.sum() + (~mask[10:30, 10:30]).sum()))

    from segnb.ui import Studio

    result["studio_tabs"] = list(Studio().tab_names)
    widgets = resources.files("segnb.widgets")
    result["front_end"] = sorted(p.name for p in widgets.iterdir() if p.name.endswith((".js", ".css")))
    template = resources.files("segnb.ui").joinpath("jupyter/voila/templates/segnb")
    result["voila_template"] = sorted(p.name for p in template.iterdir())
    result["studio_notebook"] = resources.files("segnb.ui").joinpath("studio.ipynb").is_file()
    print(json.dumps(result))
"""


def test_installed_wheel_imports_trains_segments_and_builds_the_studio(installed, tmp_path):
    outside = tmp_path / "elsewhere"  # not the checkout: nothing can be imported from the working tree
    outside.mkdir()
    done = _run_installed(installed, INSTALLED_CHECK.format(target=str(installed)), cwd=outside)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                for p in (ROOT / "segnb").rglob("*.py") if p.name != "__main__.py"}
    assert expected <= set(result["modules"]), sorted(expected - set(result["modules"]))
    assert {"segnb.instances", "segnb.cli", "segnb.interactive", "segnb.widgets"} <= set(result["modules"])
    assert result["outside"] == [], f"served from outside the install: {result['outside']}"
    assert result["semantic_steps"] == 2 and result["maskrcnn_steps"] == 2
    assert result["scribble_iou"] > 0.9
    assert result["studio_tabs"][:3] == ["Dataset", "Model", "Train"]
    assert result["front_end"] == sorted(p.name for p in (ROOT / "widgets").iterdir()
                                         if p.suffix in {".js", ".css"})
    assert {"conf.json", "spinner.macro.html.j2"} <= set(result["voila_template"])
    assert result["studio_notebook"]


def test_installed_command_line_runs_from_the_install(installed, tmp_path):
    done = _run_installed(installed, "import sys; sys.argv = ['segnb', '--help']; import runpy; "
                                     "runpy.run_module('segnb.cli', run_name='__main__')", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "demo" in done.stdout and "studio" in done.stdout
