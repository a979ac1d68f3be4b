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
- 1,000 to 2,500 words of markdown per teaching notebook (every ``NN_*.ipynb`` from 01 on, and the
  appendix ``A1_*.ipynb``).

That the answer cells run is checked where the notebooks run: tests/test_notebooks.py (nbclient, fast
mode) and, for the quickstart, tests/e2e/test_lab.py.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBERED = re.compile(r"(\d{2}|A\d)_")  # 00-99 in the lectures' order, A1, A2, ... the appendices
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if NUMBERED.match(p.name))
TEACHING = [p for p in NOTEBOOKS if not p.name.startswith("00_")]
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


# ---------------------------------------------------------------- names and numbers in the prose

NOTEBOOK_NAME = re.compile(r"\b((?:\d{2}|A\d)_[a-z][a-z0-9_]*)\b")
NOTEBOOK_NUMBER = re.compile(r"\b[Nn]otebooks? (\d{2}|A\d)\b")


def prose(nb) -> list[tuple[int, str]]:
    """(cell index, text) of every markdown cell, fenced code removed."""
    return [(i, re.sub(r"```.*?```", " ", c.source, flags=re.S)) for i, c in enumerate(nb.cells)
            if c.cell_type == "markdown"]


def unknown_notebook_names(text: str, stems: set[str]) -> list[str]:
    numbers = {s[:2] for s in stems}
    found = [m for m in NOTEBOOK_NAME.findall(text) if m not in stems]
    found += [f"notebook {n}" for n in NOTEBOOK_NUMBER.findall(text) if n not in numbers]
    return found


def test_every_notebook_named_in_the_text_exists():
    stems = {p.stem for p in NOTEBOOKS}
    texts = [(p.name, t) for p in NOTEBOOKS for _, t in prose(nbformat.read(p, as_version=4))]
    texts += [(name, (ROOT / name).read_text()) for name in ("README.md", "docs/TEACHING.md", "docs/CLASSROOM.md")
              if (ROOT / name).is_file()]
    broken = [f"{where}: {name}" for where, text in texts for name in unknown_notebook_names(text, stems)]
    assert not broken, "names of notebooks that do not exist:\n" + "\n".join(sorted(set(broken)))


def test_unknown_notebook_names_are_found():
    stems = {"05_soft_masks_and_iou", "09_instances_and_panoptic"}
    assert unknown_notebook_names("see `09_instances_panoptic` and notebook 12", stems) == \
        ["09_instances_panoptic", "notebook 12"]
    assert unknown_notebook_names("notebook 05 (`05_soft_masks_and_iou`)", stems) == []
    assert unknown_notebook_names("the appendix, notebook A2 (`A2_more`)", stems | {"A1_scale_out"}) == \
        ["A2_more", "notebook A2"]


def test_the_numbers_are_the_reading_order():
    """The guide's reading order and the quickstart's list at its end give every notebook at its number."""
    stems = [p.stem for p in NOTEBOOKS]
    guide = GUIDE.read_text().split("## Reading order", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\w+) \| `([^`]+)` \|", guide, flags=re.M)
    assert [name for _, name in rows] == stems
    assert all(step == name[:2] or (step == "appendix" and name.startswith("A")) for step, name in rows), rows
    quickstart = nbformat.read(ROOT / "notebooks" / "00_quickstart.ipynb", as_version=4)
    ending = quickstart.cells[-1].source.split("## Where to go next", 1)[1]
    listed = re.findall(r"^(\d+)\. `([^`]+)`", ending, flags=re.M)
    assert [name for _, name in listed] == [s for s in stems if s[:2].isdigit() and s != "00_quickstart"]
    assert all(int(n) == int(name[:2]) for n, name in listed), listed


# A number the text quotes next to a metric is a run's result unless it is one of these definitions:
# 0.5 (the match threshold of AP, PQ and mask thresholds), 0.50-0.95 (COCO's thresholds),
# 0.67 (the Dice of IoU 0.5), 0.85 and 0.90 (the target IoU of NoC@85/90).
METRIC = re.compile(r"\b(m?IoU|Dice|PQ|SQ|RQ|AP\d*|accuracy|loss|clicks?)\b")
DEFINITIONS = {"0.5", "0.50", "0.55", "0.95", "0.67", "0.85", "0.90"}


def quoted_results(text: str) -> list[str]:
    """Decimal numbers in the same sentence as a metric, other than the definitions above."""
    text = re.sub(r"`[^`]*`", " ", text)  # inline code: formulas, arguments
    found = []
    for sentence in re.split(r"(?<=[.;:!?])\s+|\n\n", text):
        if METRIC.search(sentence):
            found += [n for n in re.findall(r"(?<![\w.])\d+\.\d+\b", sentence) if n not in DEFINITIONS]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_run_result_is_hard_coded_in_the_text(path):
    """Results of runs are printed by cells (or read from a prepared model's record), never typed into prose."""
    nb = nbformat.read(path, as_version=4)
    quoted = [f"cell {i}: {n}" for i, text in prose(nb) for n in quoted_results(text)]
    assert not quoted, f"{path.name} quotes results in its text instead of printing them: {quoted}"


def test_quoted_results_are_found_and_definitions_are_not():
    assert quoted_results("In our run mIoU rose from FCN-32s (0.10) to FCN-8s (0.31).") == ["0.10", "0.31"]
    assert quoted_results("The ring stayed at IoU 0.00 while weighting reached 0.99.") == ["0.00", "0.99"]
    assert quoted_results("it reached IoU 0.85 in 1.85 clicks") == ["1.85"]
    assert quoted_results("A match needs an IoU above 0.5; COCO averages 0.50, 0.55, ..., 0.95.") == []
    assert quoted_results("A box at (10.3, 4.7) falls between cells.") == []  # no metric: not a result
    assert quoted_results("`lr=0.01` lowers the loss") == []
