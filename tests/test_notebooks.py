"""Every notebook runs top to bottom (SEGNB_FAST=1: less data, fewer epochs), offline, in CI.

The exercises' answer cells (tag ``answer``, collapsed in JupyterLab) run with the rest: an answer
that raises fails its notebook's test, and each one must have run (tests/test_teaching.py checks the
notebooks' teaching structure without running them).
"""

import importlib.util
import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# The quickstart runs top to bottom in a real JupyterLab in tests/e2e/test_lab.py (no cell may
# raise there either, and its fast-mode mIoU assertion is one of its cells): not twice here.
RUN_HERE = [p for p in NOTEBOOKS if p.stem != "00_quickstart"]
_spec = importlib.util.spec_from_file_location("build_site", ROOT / "scripts" / "build_site.py")
build_site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_site)


def is_answer(cell) -> bool:
    return cell.cell_type == "code" and "answer" in cell.metadata.get("tags", [])


def run_notebook(nb, folder: Path) -> None:
    """Execute ``nb`` in ``folder``; raises CellExecutionError, with the cell and traceback, on any error."""
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(folder)}}).execute()


def test_notebooks_are_committed_without_outputs():
    assert NOTEBOOKS, "notebooks/ is empty"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"
                tags = cell.metadata.get("tags", [])
                assert "raises-exception" not in tags and "skip-execution" not in tags, \
                    f"{path.name}: a cell is tagged to hide its errors or to be skipped ({tags})"


@pytest.mark.parametrize("path", RUN_HERE, ids=[p.stem for p in RUN_HERE])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    monkeypatch.setenv("SEGNB_FAST", "1")
    monkeypatch.setenv("SEGNB_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("SEGNB_LESSONS", str(tmp_path / "lessons"))  # none prepared: what CI and a new user see
    monkeypatch.setenv("PLOTLY_RENDERER", "notebook")  # as scripts/docs renders them
    nb = nbformat.read(path, as_version=4)
    run_notebook(nb, tmp_path / "notebooks")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    # The student's page of this notebook (scripts/docs): rendered from this run, with its outputs.
    page = build_site.render(nb, path.stem)
    assert "jp-OutputArea-output" in page and "Traceback" not in page
    # Every claim about a trained model is shown from a prepared model or says how to see one.
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    if "lessons.load" in "".join(c.source for c in nb.cells):
        assert "run `segnb lessons prepare` to see it" in text or "prepared model" in text
    answers = [c for c in nb.cells if is_answer(c)]
    assert all(c.execution_count is not None for c in answers), f"{path.name}: an answer cell did not run"
    if os.environ.get("SEGNB_KEEP_EXECUTED"):
        nbformat.write(nb, tmp_path / path.name)


def test_a_failing_answer_cell_fails_the_run(tmp_path):
    """Hidden answers are executed like any cell: one that raises stops the notebook with its error."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('wrong answer')",
                                          metadata={"tags": ["answer"], "jupyter": {"source_hidden": True}})]
    with pytest.raises(CellExecutionError, match="wrong answer"):
        run_notebook(nb, tmp_path)
