"""Render every notebook, executed, to static HTML pages a student opens without a kernel.

Run through ``scripts/docs`` (``scripts/docs --help``). Each notebook is executed by nbclient in a
copy of ``notebooks/`` (from the prepared lessons in ``$SEGNB_LESSONS`` or ``~/.cache/segnb/lessons``
when there are some: ``segnb lessons prepare``), converted by nbconvert's HTMLExporter (``lab``
template) and written to ``<out>/<name>.html`` with an ``index.html``. Plotly charts are embedded
with plotly.js inline, so the pages work offline. Links between notebooks point to their pages.

The build fails (exit status 1, every problem listed) on a cell that raised and on a broken link: a
notebook page or a heading anchor that does not exist, or a relative link to a missing file.
The notebooks themselves are never written: outputs live only in the site.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]


class _Anchors(HTMLParser):
    """The ids and the link targets of one page."""

    def __init__(self):
        super().__init__()
        self.ids, self.links = set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(unquote(attrs["id"]))  # nbconvert percent-encodes heading ids
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def error_cells(nb) -> list[str]:
    """``cell N: Error: message`` for every code cell that raised."""
    found = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.get("output_type") == "error":
                found.append(f"cell {i}: {output.get('ename')}: {output.get('evalue')}")
    return found


def execute(nb, folder: Path, timeout: int) -> None:
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(folder)}}).execute()


def relink(page: str) -> str:
    """Relative links to ``*.ipynb`` point to their ``*.html`` pages."""
    return re.sub(r'href="(?![a-z]+:)([^"#]*?)\.ipynb(#[^"]*)?"', lambda m: f'href="{m[1]}.html{m[2] or ""}"', page)


def render(nb, title: str) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return relink(body)


def broken_links(out: Path, sources: Path, partial: bool = False) -> list[str]:
    """Every link of the site's pages to a page, anchor or file that does not exist (``partial``: links
    to notebooks that exist but were not rendered this time are accepted)."""
    pages = {p.name: p.read_text(encoding="utf-8") for p in out.glob("*.html")}
    parsed = {}
    for name, text in pages.items():
        parsed[name] = _Anchors()
        parsed[name].feed(text)
    broken = []
    for name, page in parsed.items():
        for href in page.links:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//") or href.startswith("mailto:"):
                continue  # the web: not checked offline
            target = unquote(parts.path) or name
            fragment = unquote(parts.fragment)
            if target.endswith(".html") and "/" not in target:
                notebook = sources / target.replace(".html", ".ipynb")
                if target not in parsed and not (partial and notebook.is_file()):
                    broken.append(f"{name}: link to {href}: no such page")
                elif target not in parsed:
                    continue  # a notebook left out of a partial build
                elif fragment and fragment not in parsed[target].ids:
                    broken.append(f"{name}: link to {href}: no heading or element with that id")
            elif not (sources / target).exists():
                broken.append(f"{name}: link to {href}: no such file")
    return broken


def title_of(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def index_page(entries: list[tuple[str, str, float]], note: str) -> str:
    rows = "\n".join(f'<li><a href="{html.escape(name)}.html">{html.escape(title)}</a> '
                     f'<small>({seconds:.0f} s to run)</small></li>' for name, title, seconds in entries)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>segnb notebooks</title>"
            f"</head>\n<body><h1>segnb notebooks, with their outputs</h1>\n<p>{html.escape(note)}</p>\n"
            f"<ol>\n{rows}\n</ol>\n</body></html>\n")


def build(out: Path, notebooks: list[Path], fast: bool, timeout: int = 900, say=print) -> list[str]:
    """Execute and render ``notebooks`` into ``out``; returns the problems (empty when the site is good)."""
    import nbformat

    from segnb import lessons

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.html"):
        old.unlink()
    env = {"SEGNB_FAST": "1" if fast else "", "MPLBACKEND": "Agg", "PLOTLY_RENDERER": "notebook"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ready = sum(row["state"] == "prepared" for row in lessons.status())
    note = (f"Rendered {time.strftime('%Y-%m-%d %H:%M')} {'in fast mode' if fast else 'in normal mode'}, with "
            f"{ready} of {len(lessons.RECIPES)} prepared lesson models (segnb lessons prepare). Every output was "
            "produced by running the notebook; open a page in any browser, no kernel needed.")
    problems, entries = [], []
    sources = notebooks[0].parent  # notebooks/ (the copy they run in, and what relative links point to)
    try:
        with tempfile.TemporaryDirectory(prefix="segnb-site-") as work:
            folder = Path(work) / "notebooks"
            shutil.copytree(sources, folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
            for path in notebooks:
                start = time.perf_counter()
                nb = nbformat.read(path, as_version=4)
                execute(nb, folder, timeout)
                seconds = time.perf_counter() - start
                errors = error_cells(nb)
                problems += [f"{path.name}: {e}" for e in errors]
                title = title_of(nb, path.stem)
                (out / f"{path.stem}.html").write_text(render(nb, title), encoding="utf-8")
                entries.append((path.stem, title, seconds))
                say(f"{path.stem}: {seconds:.0f} s" + (f", {len(errors)} cells raised" if errors else ""))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    (out / "index.html").write_text(index_page(entries, note), encoding="utf-8")
    everything = {p.name for p in sources.glob("*.ipynb")} <= {p.name for p in notebooks}
    problems += broken_links(out, sources, partial=not everything)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook names or paths (default: all of notebooks/)")
    parser.add_argument("--out", default=str(ROOT / "site"), help="output folder (default: site/)")
    parser.add_argument("--fast", action="store_true", help="SEGNB_FAST=1: less data and training where "
                        "nothing is prepared (what CI builds)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args(argv)
    chosen = [Path(n) if n.endswith(".ipynb") else ROOT / "notebooks" / f"{n}.ipynb" for n in args.notebooks]
    chosen = chosen or sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [str(p) for p in chosen if not p.is_file()]
    if missing:
        print("no such notebook: " + ", ".join(missing), file=sys.stderr)
        return 2
    problems = build(Path(args.out), chosen, args.fast, args.timeout)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{args.out}/index.html: {len(chosen)} pages" + (f"; {len(problems)} problems" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
