"""JupyterLab: open the quickstart, run all cells, use its Studio as a user would, then check that
its viewer answers while a blocking cell trains and that Kernel > Interrupt ends that cell."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from playwright.sync_api import Page, expect

from .studio_page import ConsoleErrors, StudioSession, until

NOTEBOOK = "00_quickstart.ipynb"

JS_READY = """path => { const app = window.jupyterapp; if (!app) return false;
    const w = app.shell.currentWidget; if (!w || !w.context || w.context.path !== path) return false;
    const s = w.sessionContext; const k = s && s.session && s.session.kernel;
    return s.isReady && !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }"""
JS_RUN_ALL = """() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"""  # fire and forget
JS_CELLS = """() => { const nb = window.jupyterapp.shell.currentWidget.content;
    return nb.widgets.filter(c => c.model.type === 'code').map(c => ({
        count: c.model.executionCount,
        running: c.promptNode ? c.promptNode.textContent.includes('*') : false,
        errors: c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                 .map(o => o.ename + ': ' + o.evalue) })); }"""
JS_RUN_CELL = """text => { const app = window.jupyterapp, nb = app.shell.currentWidget.content;
    nb.activeCellIndex = nb.widgets.findIndex(c => c.model.sharedModel.getSource().includes(text));
    app.commands.execute('notebook:run-cell'); return nb.activeCellIndex; }"""  # fire and forget
JS_CELL = """text => { const c = window.jupyterapp.shell.currentWidget.content.widgets
        .find(c => c.model.sharedModel.getSource().includes(text));
    return {count: c.model.executionCount, running: c.promptNode.textContent.includes('*'),
            outputs: JSON.stringify(c.model.outputs.toJSON())}; }"""
JS_INTERRUPT = """() => { window.jupyterapp.commands.execute('notebook:interrupt-kernel'); }"""
FIT_CELL = "history = fit("


@pytest.mark.e2e
def test_quickstart_and_studio_in_jupyterlab(jupyter_lab, page: Page, artifacts):
    errors = ConsoleErrors(page)
    page.set_viewport_size({"width": 1280, "height": 720})  # a projector
    workspace = f"e2e-{uuid.uuid4().hex[:8]}"  # a throw-away workspace: nothing restored
    page.goto(f"{jupyter_lab['url']}/lab/workspaces/{workspace}/tree/{NOTEBOOK}?reset&token={jupyter_lab['token']}")
    page.wait_for_function(JS_READY, arg=NOTEBOOK, timeout=120_000)

    page.evaluate(JS_RUN_ALL)
    state = {}

    def all_ran():
        state["cells"] = page.evaluate(JS_CELLS)
        return all(x["count"] and not x["running"] for x in state["cells"])

    try:
        until(all_ran, 480, "every cell of the quickstart runs", interval=1.0)
    except AssertionError as error:
        page.screenshot(path=str(artifacts / "lab-failure.png"), full_page=True)
        raise AssertionError(f"{error}; cells: {json.dumps(state.get('cells'))}") from None
    cells = state["cells"]
    failed = [x["errors"] for x in cells if x["errors"]]
    assert not failed, f"cells raised: {json.dumps(failed)}"
    page.screenshot(path=str(artifacts / "lab-notebook.png"))

    # The quickstart's own SoftMaskViewer (its last cell) drew the trained model's prediction.
    viewers = page.locator(".jp-Notebook .segnb-softmask-canvas")
    # Only the quickstart's own: the Studio makes its viewers when their tab is first opened.
    expect(viewers, "the quickstart's SoftMaskViewer").to_have_count(1, timeout=30_000)
    last = viewers.last
    last.scroll_into_view_if_needed()
    until(lambda: last.evaluate("c => Number(c.dataset.drawn || 0)") >= 1, 30,
          "the quickstart's SoftMaskViewer draws its prediction")

    root = page.locator(".jp-Notebook .segnb-studio").first
    root.scroll_into_view_if_needed()
    timings = StudioSession(page, root, "lab", artifacts, errors).run_all()

    # The quickstart's blocking fit() cell again: the kernel's main thread is busy, yet the
    # viewer's controls answer (they run in the browser); Kernel > Interrupt then ends the
    # training cleanly after the current step, with no traceback.
    before = page.evaluate(JS_CELL, FIT_CELL)["count"]
    page.evaluate(JS_RUN_CELL, FIT_CELL)
    until(lambda: page.evaluate(JS_CELL, FIT_CELL)["running"], 30, "the fit cell runs again")
    viewer = page.locator(".jp-Notebook .segnb-softmask").last
    canvas = viewer.locator(".segnb-softmask-canvas")
    drawn = canvas.evaluate("c => Number(c.dataset.drawn || 0)")
    t0 = time.monotonic()
    viewer.locator("input.segnb-opacity").fill("0.95")
    viewer.locator(".segnb-class-toggles input").first.uncheck()
    until(lambda: canvas.evaluate("c => Number(c.dataset.drawn || 0)") >= drawn + 2, 5,
          "the viewer redraws while the kernel runs a blocking cell")
    timings["redraw while the kernel is blocked"] = time.monotonic() - t0
    assert page.evaluate(JS_CELL, FIT_CELL)["running"], "the fit cell ended before the viewer was tried"
    t0 = time.monotonic()
    page.evaluate(JS_INTERRUPT)
    cell = until(lambda: (c := page.evaluate(JS_CELL, FIT_CELL)) and not c["running"] and c["count"] != before and c,
                 60, "Kernel > Interrupt ends the blocking fit() cell")
    timings["interrupt"] = time.monotonic() - t0
    assert "interrupted at step" in cell["outputs"] and '"error"' not in cell["outputs"], cell["outputs"]
    print("timings (s):", {k: round(v, 2) for k, v in timings.items()})
    print("ignored offline fetches:", errors.ignored)
    assert not errors, "JavaScript errors in JupyterLab:\n" + "\n".join(errors)
