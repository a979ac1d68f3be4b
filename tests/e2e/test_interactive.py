"""JupyterLab: the Interactive panel in Chromium. Paint a scribble, place clicks, see the mask and
its IoU; then keep drawing while a cell blocks the kernel, and see the mask catch up afterwards."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
from playwright.sync_api import Page, expect

from .studio_page import ConsoleErrors, until
from .test_lab import JS_CELL, JS_READY, JS_RUN_CELL

NOTEBOOK = "e2e_interactive.ipynb"
SETUP = """\
import time
from segnb import interactive as core
from segnb.data import load_shapes
from segnb.ui import SharedState
from segnb.ui.interactive import InteractivePanel

state = SharedState()
state.data = load_shapes(n=20, size=96, seed=3)
state.image_index = 1
panel = InteractivePanel(state)
biggest = max(core.object_masks(panel.gt, [3, 4, 5, 6], 1), key=lambda o: o.sum())
TARGET = core.first_click(biggest)  # (x, y, True): the middle of the largest object
print("TARGET", TARGET[0], TARGET[1])
panel"""
BLOCK = "t0 = time.time()\nwhile time.time() - t0 < 45:  # the kernel is busy, as in a training loop\n    sum(range(10_000))"
SIZE = 96
STUDIO = """\
from segnb.ui import Studio

studio = Studio()
studio.dataset.size.value = 40
studio.dataset.load_button.click()
studio.tabs.selected_index = studio.tabs.titles.index("Interactive")
studio"""

JS_DATA = """c => ({drawn: Number(c.dataset.drawn || 0), strokes: Number(c.dataset.strokes || 0),
    clicks: Number(c.dataset.clicks || 0), mask: Number(c.dataset.maskPixels || 0)})"""
JS_PIXEL = """(c, xy) => { const k = c.width / SIZE; const d = c.getContext('2d')
    .getImageData(Math.floor((xy[0] + 0.5) * k), Math.floor((xy[1] + 0.5) * k), 1, 1).data; return [d[0], d[1], d[2]]; }""".replace(
    "SIZE", str(SIZE))


def notebook(*sources: str) -> str:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {}, "outputs": [],
              "source": source} for i, source in enumerate(sources)]
    return json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                   "language": "python"}},
                       "nbformat": 4, "nbformat_minor": 5})


def _run(page: Page, marker: str, timeout: float) -> dict:
    before = page.evaluate(JS_CELL, marker)["count"]
    page.evaluate(JS_RUN_CELL, marker)
    return until(lambda: (c := page.evaluate(JS_CELL, marker)) and c["count"] != before and not c["running"] and c,
                 timeout, f"the cell with {marker!r} runs")


@pytest.mark.e2e
def test_scribbles_and_clicks_in_jupyterlab(jupyter_lab, page: Page, artifacts):
    errors = ConsoleErrors(page)
    (jupyter_lab["root"] / NOTEBOOK).write_text(notebook(SETUP, BLOCK, STUDIO))
    page.set_viewport_size({"width": 1200, "height": 950})
    workspace = f"e2e-{uuid.uuid4().hex[:8]}"
    page.goto(f"{jupyter_lab['url']}/lab/workspaces/{workspace}/tree/{NOTEBOOK}?reset&token={jupyter_lab['token']}")
    page.wait_for_function(JS_READY, arg=NOTEBOOK, timeout=120_000)
    cell = _run(page, "panel = InteractivePanel", 180)
    assert '"error"' not in cell["outputs"], cell["outputs"]
    x, y = (int(v) for v in re.search(r"TARGET (\d+) (\d+)", cell["outputs"]).groups())

    panel = page.locator(".jp-Notebook .segnb-interactive-panel").first
    canvas = panel.locator("canvas.segnb-scribble-canvas")
    status = panel.locator(".segnb-scribble-status")
    expect(canvas).to_be_visible(timeout=30_000)
    canvas.scroll_into_view_if_needed()
    until(lambda: canvas.evaluate(JS_PIXEL, [x, y]) != [0, 0, 0], 30, "the image is drawn on the canvas")
    box = canvas.bounding_box()
    assert box["width"] >= 384, f"a 96 px image is drawn large enough to paint on: {box}"

    def at(px, py):  # the page coordinates of image pixel (px, py), measured afresh (the page may scroll)
        box = canvas.bounding_box()
        return box["x"] + (px + 0.5) / SIZE * box["width"], box["y"] + (py + 0.5) / SIZE * box["height"]

    def scribble(points):
        page.mouse.move(*at(*points[0]))
        page.mouse.down()
        for p in points[1:]:
            page.mouse.move(*at(*p), steps=4)
        page.mouse.up()

    # 1. A foreground scribble in the middle of the largest object: a mask and a score come back.
    assert canvas.evaluate(JS_DATA)["mask"] == 0
    scribble([(x - 2, y), (x + 2, y), (x + 2, y + 1)])
    until(lambda: canvas.evaluate(JS_DATA)["mask"] > 0, 60, "the mask appears after a foreground scribble")
    expect(status).to_contain_text(re.compile(r"IoU 0\.\d{3}"), timeout=30_000)
    assert not re.search(r"against the (sky|grass|wall)", status.inner_text()), status.inner_text()
    expect(panel.locator(".segnb-interactive-score")).to_contain_text("IoU")
    first_mask = canvas.evaluate(JS_DATA)["mask"]
    panel.screenshot(path=str(artifacts / "interactive-scribble.png"))

    # 2. Clear, then clicks: a positive click gives a mask again, a negative one is counted.
    panel.locator(".segnb-clear").click()
    until(lambda: canvas.evaluate(JS_DATA) | {"drawn": 0} == {"drawn": 0, "strokes": 0, "clicks": 0, "mask": 0},
          30, "Clear removes strokes, clicks and the mask")
    panel.locator(".segnb-tool-positive").click()
    page.mouse.click(*at(x, y))
    until(lambda: canvas.evaluate(JS_DATA)["mask"] > 0, 60, "a positive click gives a mask")
    expect(status).to_contain_text(re.compile(r"IoU 0\.\d{3} against the \w+ object"), timeout=30_000)
    assert not re.search(r"against the (sky|grass|wall)", status.inner_text()), status.inner_text()
    panel.locator(".segnb-tool-negative").click()
    page.mouse.click(*at(3, 3))
    expect(status).to_contain_text("2 clicks", timeout=60_000)
    assert canvas.evaluate(JS_PIXEL, [x, y])[1] > 150, "the positive click is drawn green"
    clicks_mask = canvas.evaluate(JS_DATA)["mask"]
    panel.locator(".segnb-undo").click()
    expect(status).to_contain_text("1 clicks", timeout=60_000)
    panel.screenshot(path=str(artifacts / "interactive-clicks.png"))

    # 3. The kernel is busy: strokes still render at once; the mask catches up when it is free.
    panel.locator(".segnb-tool-background").click()
    page.evaluate(JS_RUN_CELL, BLOCK)
    until(lambda: page.evaluate(JS_CELL, BLOCK)["running"], 30, "the blocking cell runs")
    canvas.scroll_into_view_if_needed()
    before = canvas.evaluate(JS_DATA)
    t0 = time.monotonic()
    scribble([(2, SIZE - 3), (SIZE - 3, SIZE - 3)])
    panel.locator(".segnb-tool-foreground").click()
    scribble([(x, y - 1), (x + 1, y + 1)])
    after = canvas.evaluate(JS_DATA)
    drawn_in = time.monotonic() - t0
    assert page.evaluate(JS_CELL, BLOCK)["running"], "the blocking cell ended before we drew"
    assert after["strokes"] == before["strokes"] + 2 and after["drawn"] > before["drawn"], (before, after)
    red = canvas.evaluate(JS_PIXEL, [SIZE // 2, SIZE - 3])
    assert red[0] > 150 and red[1] < 120, f"the background stroke is drawn red while the kernel is busy: {red}"
    panel.screenshot(path=str(artifacts / "interactive-busy.png"))
    assert page.evaluate(JS_CELL, BLOCK)["running"], "the blocking cell ended before the screenshot"
    # Whether Python answers before the cell ends depends on the kernel (ipykernel 7 handled the
    # widget messages during a time.sleep cell here); what matters is that drawing never waits.
    answered_while_busy = "updating" not in status.inner_text()
    until(lambda: not page.evaluate(JS_CELL, BLOCK)["running"], 120, "the blocking cell ends")
    expect(status).not_to_contain_text("updating", timeout=60_000)
    expect(status).to_contain_text("2 strokes, 1 clicks", timeout=30_000)
    assert canvas.evaluate(JS_DATA)["mask"] > 0
    panel.screenshot(path=str(artifacts / "interactive-after.png"))
    # 4. The Studio's Interactive tab shows the image chosen in the Studio, ready to paint on.
    cell = _run(page, "studio = Studio()", 180)
    assert '"error"' not in cell["outputs"], cell["outputs"]
    studio = page.locator(".jp-Notebook .segnb-studio").last
    studio.scroll_into_view_if_needed()
    expect(studio.locator(".lm-TabBar-tab", has_text=re.compile("^Interactive$"))).to_be_visible(timeout=30_000)
    tab_canvas = studio.locator(".segnb-interactive-panel canvas.segnb-scribble-canvas")
    expect(tab_canvas).to_be_visible(timeout=30_000)
    until(lambda: tab_canvas.evaluate("c => c.width > 0 && c.getContext('2d').getImageData(c.width / 2, c.height / 2,"
                                      " 1, 1).data[3] > 0"), 30, "the Interactive tab draws the Studio's image")
    studio.screenshot(path=str(artifacts / "interactive-studio-tab.png"))
    print("masks:", first_mask, clicks_mask, canvas.evaluate(JS_DATA), f"two strokes drawn in {drawn_in:.2f} s;",
          "Python answered while the cell ran" if answered_while_busy else "Python answered after the cell")
    assert not errors, "JavaScript errors:\n" + "\n".join(errors)
