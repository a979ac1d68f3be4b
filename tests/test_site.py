"""The rendered notebooks (scripts/docs, scripts/build_site.py): error cells and broken links fail the build.

The notebooks' own pages are rendered from their executed copies in tests/test_notebooks.py (one page
each, fast mode); here every notebook's links and anchors are checked, and the checker itself.
"""

import importlib.util
import subprocess
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_site", ROOT / "scripts" / "build_site.py")
build_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_site)


def test_every_link_of_the_rendered_notebooks_points_to_a_page_and_heading(tmp_path):
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        (tmp_path / f"{path.stem}.html").write_text(build_site.render(nb, path.stem), encoding="utf-8")
    assert build_site.broken_links(tmp_path, ROOT / "notebooks") == []


def test_a_build_fails_on_an_error_cell_and_on_broken_links(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    good = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A · Good\n\n## Real heading\n\nSee [b](b.ipynb#Real-heading), "
                                      "[gone](b.ipynb#No-such-heading), [c](c.ipynb) and [data](data.txt)."),
        nbformat.v4.new_code_cell("print('a ran')")])
    bad = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# B · Bad\n\n## Real heading"),
        nbformat.v4.new_code_cell("raise ValueError('broken cell')"),
        nbformat.v4.new_code_cell("print('after the error')")])
    nbformat.write(good, folder / "a.ipynb")
    nbformat.write(bad, folder / "b.ipynb")
    out = tmp_path / "site"
    monkeypatch.setenv("SEGNB_LESSONS", str(tmp_path / "lessons"))
    problems = build_site.build(out, [folder / "a.ipynb", folder / "b.ipynb"], fast=True, timeout=120,
                                say=lambda s: None)
    assert problems == [
        "b.ipynb: cell 1: ValueError: broken cell",
        "a.html: link to b.html#No-such-heading: no heading or element with that id",
        "a.html: link to c.html: no such page",
        "a.html: link to data.txt: no such file",
    ]
    page = (out / "a.html").read_text()
    assert 'href="b.html#Real-heading"' in page and "a ran" in page
    assert "after the error" in (out / "b.html").read_text()  # the page shows every cell, the error too
    index = (out / "index.html").read_text()
    assert 'href="a.html"' in index and "A · Good" in index and "0 of" in index


def test_scripts_docs_refuses_an_unknown_notebook():
    done = subprocess.run(["bash", str(ROOT / "scripts" / "docs"), "99_nothing"], capture_output=True, text=True)
    assert done.returncode == 2 and "no such notebook" in done.stderr
