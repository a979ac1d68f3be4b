"""segnb's structure, checked: layers that point one way, no import in a circle, one preprocessing path.

The layers and the widget-free core are import-linter contracts in pyproject.toml
([tool.importlinter]); every import counts, those inside functions too.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def test_import_linter_contracts_hold():
    # No cache: a test run leaves the working tree as it found it (scripts/test checks).
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "broken" not in done.stdout.lower().replace("0 broken", "")
    assert len(CONFIG["contracts"]) >= 2


def _import_graph():
    import grimp

    graph = grimp.build_graph("segnb", exclude_type_checking_imports=True, cache_dir=None)
    ignored = {tuple(line.split(" -> ")) for c in CONFIG["contracts"] for line in c.get("ignore_imports", [])}
    edges = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith("segnb") and (module, imported) not in ignored:
                edges.add((module, imported))
    return edges


def test_no_import_runs_in_a_circle():
    import networkx as nx

    cycles = [sorted(c) for c in nx.strongly_connected_components(nx.DiGraph(list(_import_graph()))) if len(c) > 1]
    assert cycles == [], f"imports in a circle: {cycles}"


def test_the_layers_contract_sees_a_function_level_upward_import(tmp_path):
    """The contract is not vacuous: an upward import inside a function breaks it."""
    edges = _import_graph()
    assert ("segnb.data.folder", "segnb.data.instance_maps") in edges  # the data layer reads instance maps
    assert not any(a.startswith("segnb.data") and b.startswith("segnb.instances") for a, b in edges)
    assert not any(a == "segnb.viz" and b.startswith("segnb.inspect") for a, b in edges)


# ------------------------------------------------------------------ one preprocessing path

PREPROCESS = ROOT / "segnb" / "data" / "preprocess.py"
SHARED = {PREPROCESS, ROOT / "segnb" / "arithmetic.py"}  # where each one lives
# What each one-of-a-kind function looks like when written out again.
ONE_IMPLEMENTATION = {
    "normalize (mean/std tensors from Python lists)": re.compile(r"torch\.tensor\(\s*(self\.)?(mean|std)\b"),
    "normalize (/255 then a shift)": re.compile(r"/\s*255(\.0?)?\s*-\s*0?\.\d"),
    "mask resize by interpolation": re.compile(r"interpolate\((y|mask|masks|target)\b[^\n]*nearest"),
    "nearest index (floor((i + 0.5) * scale))": re.compile(r"\+\s*0\.5\)\s*\*\s*scale"),
    "ceil_div (-(-a // b))": re.compile(r"-\(-"),
    "class-count check (a refusal)": re.compile(r"!=\s*(data|self\.data)\.num_classes\s*:\s*\n\s*raise"),
}


@pytest.mark.parametrize("what", list(ONE_IMPLEMENTATION))
def test_one_implementation_of_each_preprocessing_step(what):
    pattern = ONE_IMPLEMENTATION[what]
    found = []
    for path in sorted((ROOT / "segnb").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if path in SHARED:
            continue
        text = path.read_text()
        found += [f"{relative}:{text.count(chr(10), 0, m.start()) + 1}" for m in pattern.finditer(text)]
    assert found == [], f"{what} written again outside segnb/data/preprocess.py and segnb/arithmetic.py: {found}"


def test_preprocess_holds_each_step():
    text = PREPROCESS.read_text()
    for name in ("def normalize", "def resize", "def resize_mask", "def nearest_exact_index", "def check_classes"):
        assert name in text
