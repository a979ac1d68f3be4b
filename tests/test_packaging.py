import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

from segnb.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements):
    return {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower(): r for r in requirements}


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    from_env = [r for r in pip_section if not r.startswith("-e")]
    assert _names(from_env) == _names(project["dependencies"])
    assert "-e .[dev]" in pip_section


def test_no_upper_bound_on_torch():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = _names(project["dependencies"])["torch"]
    assert "<" not in torch_req and "==" not in torch_req


def test_wheel_ships_the_widget_front_end(tmp_path):
    import shutil

    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources, and a test
    # run must leave the working tree as it found it (scripts/test checks).
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "runs", "artifacts"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path)],
        check=True,
    )
    wheel = next(tmp_path.glob("segnb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    front_end = [p.name for p in (ROOT / "widgets").iterdir() if p.suffix in {".js", ".css"}]
    assert front_end, "widgets/ holds the front-end"
    for name in front_end:
        assert f"segnb/widgets/{name}" in names
    assert "segnb/data/shapes.py" in names
    for name in ("conf.json", "spinner.macro.html.j2"):  # segnb studio's Voila template (docs/CLASSROOM.md)
        assert f"segnb/ui/jupyter/voila/templates/segnb/{name}" in names
    # The files load from an installed copy through importlib.resources.
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    code = "from segnb.widgets import asset; print(len(asset('segnb.css')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True)
    assert int(out.stdout) > 100


def test_import_segnb_does_not_import_the_widget_stack():
    code = (
        "import sys, segnb, segnb.data, segnb.cli\n"
        "bad = [m for m in ('ipywidgets', 'IPython', 'anywidget') if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test" in readme and "bash scripts/demo" in readme
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_cli_help_and_datasets_show(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "datasets" in capsys.readouterr().out
    assert main(["datasets", "show", "shapes", "n=20", "size=32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"] == {"train": 16, "validation": 4}
    assert len(summary["pixel_frequencies"]) == 7
    assert main(["datasets", "show", "shapes", "n=20", "size=32"]) == 0
    assert "triangle" in capsys.readouterr().out


def test_cli_reports_bad_sources_without_a_traceback(capsys):
    assert main(["datasets", "show", "/no/such/folder"]) == 2
    assert "No folder at" in capsys.readouterr().err
