import json
import re
import subprocess
import sys
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


def test_segnb_serves_the_public_api_and_nothing_else():
    import segnb
    import segnb.evaluation
    import segnb.prediction
    import segnb.train

    assert segnb.fit is segnb.train.fit and segnb.lr_find is segnb.train.lr_find
    assert segnb.evaluate is segnb.evaluation.evaluate and segnb.predict is segnb.prediction.predict
    assert segnb.data.load_dataset is segnb.load_dataset  # a subpackage as an attribute
    for name in ("hub", "nosuch", "torch", "network_check_typo"):
        with pytest.raises(AttributeError, match=f"has no attribute '{name}'"):
            getattr(segnb, name)
    assert set(segnb.__all__) <= set(dir(segnb))


def test_every_modules_all_names_only_public_names_it_has():
    import importlib
    import pkgutil

    import segnb

    wrong = []
    for info in pkgutil.walk_packages(segnb.__path__, "segnb."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            if name.startswith("_") or not hasattr(module, name):
                wrong.append(f"{info.name}.{name}")
    assert wrong == []


def test_every_module_of_the_package_is_an_attribute_in_a_fresh_process():
    """`import segnb; segnb.sweep` works for every top-level module, as a notebook's first cell uses it."""
    import pkgutil
    import subprocess
    import sys

    import segnb

    names = sorted(m.name for m in pkgutil.iter_modules(segnb.__path__) if not m.name.startswith("_"))
    names.append("widgets")  # shipped from widgets/ as segnb.widgets
    code = ("import segnb, types, sys\n"
            f"missing = [n for n in {names!r} if not isinstance(getattr(segnb, n, None), types.ModuleType)]\n"
            "print(missing)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"modules not reachable as segnb.<name>: {out}"
