"""The notebooks as teaching material: the structure docs/TEACHING.md defines, read from the files.

Markers (written down in docs/TEACHING.md for every notebook author):
- opening: the first cell is markdown with ``**What you learn:**``, ``**Prerequisites:**`` and
  ``**Duration:**`` (the duration names the live time and the fast-mode time);
- predict-then-run: a markdown cell whose first line starts with ``### Predict``, followed at once by
  the code cell that answers it (not an answer cell); at least two per notebook;
- exercises: a ``## Exercises`` heading, then two to four ``### Exercise N`` markdown cells, each
  followed at once by its answer: a code cell with the tag ``answer`` and
  ``"jupyter": {"source_hidden": true}`` so that JupyterLab shows it collapsed;
- a ``## Summary`` heading and a ``## Where to go next`` heading;
- 1,000 to 2,500 words of markdown per teaching notebook (every ``NN_*.ipynb`` with NN >= 01).

That the answer cells run is checked where the notebooks run: tests/test_notebooks.py (nbclient, fast
mode) and, for the quickstart, tests/e2e/test_lab.py.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
TEACHING = [p for p in NOTEBOOKS if int(p.name[:2]) >= 1]
GUIDE = ROOT / "docs" / "TEACHING.md"
LECTURES = ROOT.parent / "shared" / "lectures"
MIN_WORDS, MAX_WORDS = 1000, 2500


def is_answer(cell) -> bool:
    return cell.cell_type == "code" and "answer" in cell.metadata.get("tags", [])


def first_line(cell) -> str:
    return cell.source.strip().splitlines()[0].strip() if cell.source.strip() else ""


def explanation_words(nb) -> int:
    """Words of the markdown cells, without fenced code blocks."""
    words = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            words += len(re.sub(r"```.*?```", " ", cell.source, flags=re.S).split())
    return words


def headings(nb) -> list[str]:
    found = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            in_code = False
            for line in cell.source.splitlines():
                if line.startswith("```"):
                    in_code = not in_code
                elif not in_code and re.match(r"#{1,6} ", line):
                    found.append(line.lstrip("#").strip())
    return found


def anchor(heading: str) -> str:
    """JupyterLab's anchor of a heading: its text (markdown marks removed), spaces -> '-'."""
    text = re.sub(r"`|\*\*", "", heading)
    return text.strip().replace(" ", "-")


def structure_problems(nb) -> list[str]:
    """What a notebook lacks of the teaching structure (an empty list when it has all of it)."""
    problems = []
    cells = nb.cells
    opening = cells[0].source if cells and cells[0].cell_type == "markdown" else ""
    for marker in ("**What you learn:**", "**Prerequisites:**", "**Duration:**"):
        if marker not in opening:
            problems.append(f"the opening cell lacks {marker}")
    duration = " ".join(opening.split("**Duration:**", 1)[-1].split("\n\n", 1)[0].split())
    if "**Duration:**" in opening and ("live" not in duration or "fast mode" not in duration):
        problems.append("the duration must give the live time and the fast-mode time ('live', 'fast mode')")

    predicts = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and first_line(c).startswith("### Predict")]
    if len(predicts) < 2:
        problems.append(f"{len(predicts)} predict-then-run moments ('### Predict ...' cells); at least 2")
    for i in predicts:
        following = cells[i + 1] if i + 1 < len(cells) else None
        if following is None or following.cell_type != "code" or is_answer(following):
            problems.append(f"'{first_line(cells[i])}' is not followed by the code cell that answers it")

    if not any(c.cell_type == "markdown" and first_line(c) == "## Exercises" for c in cells):
        problems.append("no '## Exercises' heading")
    exercises = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and first_line(c).startswith("### Exercise")]
    answers = [i for i, c in enumerate(cells) if is_answer(c)]
    if not 2 <= len(exercises) <= 4:
        problems.append(f"{len(exercises)} exercises ('### Exercise N' cells); 2 to 4")
    for i in exercises:
        if i + 1 >= len(cells) or not is_answer(cells[i + 1]):
            problems.append(f"'{first_line(cells[i])}' is not followed by its answer cell (tag 'answer')")
    if len(answers) != len(exercises):
        problems.append(f"{len(answers)} answer cells for {len(exercises)} exercises")
    for i in answers:
        if cells[i].metadata.get("jupyter", {}).get("source_hidden") is not True:
            problems.append(f"answer cell {i} is not hidden (metadata jupyter.source_hidden: true)")

    heads = headings(nb)
    for required in ("Summary", "Where to go next"):
        if required not in heads:
            problems.append(f"no '## {required}' heading")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_has_the_teaching_structure(path):
    problems = structure_problems(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", TEACHING, ids=[p.stem for p in TEACHING])
def test_teaching_notebook_explains_in_1000_to_2500_words(path):
    words = explanation_words(nbformat.read(path, as_version=4))
    assert MIN_WORDS <= words <= MAX_WORDS, f"{path.name} has {words} words of markdown; {MIN_WORDS}-{MAX_WORDS}"


def test_structure_check_finds_what_is_missing():
    """The checker itself: a notebook without the markers is reported, item by item."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 99 · Bare\n\n**What you learn:** little."),
                nbformat.v4.new_markdown_cell("### Predict: what happens?"),
                nbformat.v4.new_markdown_cell("### Exercise 1\n\nDo it."),
                nbformat.v4.new_code_cell("print(1)", metadata={"tags": ["answer"]})]
    problems = " | ".join(structure_problems(nb))
    for expected in ("**Prerequisites:**", "**Duration:**", "1 predict-then-run", "is not followed by the code cell",
                     "no '## Exercises'", "1 exercises", "is not hidden", "no '## Summary'", "no '## Where to go next'"):
        assert expected in problems, (expected, problems)


def test_anchor_follows_jupyterlab():
    assert anchor("FCN with skips") == "FCN-with-skips"
    assert anchor("Predict: which class will have the lowest IoU, and why?") == \
        "Predict:-which-class-will-have-the-lowest-IoU,-and-why?"
    assert anchor("`reduce_labels` and **ADE20K**") == "reduce_labels-and-ADE20K"


def guide_links() -> list[tuple[str, str]]:
    text = GUIDE.read_text()
    return re.findall(r"\]\((\.\./notebooks/[^)#\s]+)(?:#([^)\s]*))?\)", text)


def test_teaching_guide_links_point_to_existing_notebook_headings():
    links = guide_links()
    assert len(links) >= 50, f"docs/TEACHING.md has only {len(links)} notebook links"
    cache, broken = {}, []
    for target, fragment in links:
        path = (GUIDE.parent / target).resolve()
        if not path.is_file():
            broken.append(f"{target}: no such notebook")
            continue
        if path not in cache:
            cache[path] = {anchor(h) for h in headings(nbformat.read(path, as_version=4))}
        if fragment and fragment not in cache[path]:
            broken.append(f"{target}#{fragment}: no such heading")
    assert not broken, "broken links in docs/TEACHING.md:\n" + "\n".join(broken)


def lecture_headings(path: Path) -> list[str]:
    """The section headings of one lecture file, as the guide's table names them (deduplicated)."""
    seen = []
    for line in path.read_text().splitlines():
        if re.match(r"#{1,6} ", line):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#"))  # [text](url) -> text
            text = re.sub(r"<[^>]+>|\*\*|\\", "", text).strip()
            if text and text not in seen:
                seen.append(text)
    return seen


@pytest.mark.skipif(not LECTURES.is_dir(), reason=f"the lecture notes are not at {LECTURES}")
def test_teaching_guide_covers_every_lecture_heading():
    guide = GUIDE.read_text()
    missing = []
    for lecture in sorted(LECTURES.glob("*.txt")):
        section = guide.split(f"`{lecture.name}`", 1)
        assert len(section) == 2, f"docs/TEACHING.md has no table for {lecture.name}"
        table = section[1].split("\n### ", 1)[0]
        rows = {line.split("|")[1].strip() for line in table.splitlines() if line.startswith("|")}
        missing += [f"{lecture.name}: {h}" for h in lecture_headings(lecture) if h not in rows]
    assert not missing, "lecture headings the guide does not map:\n" + "\n".join(missing)
