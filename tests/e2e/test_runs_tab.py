"""The Studio's Runs tab in chromium (`segnb studio`, Voila): two runs ticked, their charts checked."""

from __future__ import annotations

import re
import secrets
import sys

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server, _isolated_env, free_port
from .studio_page import JS_IMAGE_HASH, ConsoleErrors, until

RUNS = ("fcn8s-bilinear", "fcn8s-transposed")
JS_TRACES = """(el, sel) => { const gd = el.querySelector(sel + ' .js-plotly-plot');
    return gd && gd.data ? gd.data.map(t => [t.type || 'scatter', t.legendgroup || t.name || '', (t.y || t.z || []).length])
                         : []; }"""


@pytest.fixture(scope="module")
def runs_studio(tmp_path_factory, artifacts):
    """Two real runs (FCN-8s with bilinear and with transposed-convolution upsampling, written by fit()),
    and `segnb studio` whose runs folder is theirs."""
    import torch

    import segnb
    from segnb.data import load_shapes

    home = tmp_path_factory.mktemp("runs-voila")
    runs = home / "runs"
    data = load_shapes(n=40, size=64, seed=3)
    for name, upsample in zip(RUNS, ("bilinear", "transposed4"), strict=True):
        torch.manual_seed(0)
        model = segnb.build_model("fcn8s", "vgg-tiny", class_names=data.class_names, upsample=upsample)
        segnb.fit(model, data, epochs=3, batch_size=8, lr=1e-2, progress=False, run=runs / name)
    port, token = free_port(), secrets.token_hex(16)
    env = {**_isolated_env(home), "SEGNB_RUNS": str(runs)}
    server = Server("segnb studio (runs)", [sys.executable, "-m", "segnb.cli", "studio", "--port", str(port),
                                            "--token", token], cwd=home, env=env, log=artifacts / "voila-runs.log")
    try:
        server.wait_http(f"http://127.0.0.1:{port}/voila/static/none?token={token}", any_status=True)
        yield {"url": f"http://127.0.0.1:{port}/?token={token}", "server": server}
    finally:
        server.stop()


@pytest.mark.e2e
def test_tick_two_runs_and_see_them_compared(runs_studio, page: Page, artifacts):
    errors = ConsoleErrors(page)
    page.set_viewport_size({"width": 1280, "height": 720})  # a projector
    page.goto(runs_studio["url"])
    root = page.locator(".segnb-studio").first
    expect(root, "Voila renders the Studio").to_be_visible(timeout=120_000)
    root.locator(".lm-TabBar-tab", has_text=re.compile("^Runs$")).first.click()
    panel = root.locator(".segnb-runs-panel")
    expect(panel, "the Runs tab shows its panel").to_be_visible(timeout=60_000)
    rows = panel.locator(".segnb-run-row")
    expect(rows, "both runs are listed").to_have_count(2, timeout=30_000)
    for name in RUNS:
        expect(panel.locator(".segnb-run-row", has_text=name).locator(".segnb-run-detail"),
               f"{name}: status and score").to_contain_text(re.compile(r"completed.*mIoU \d\.\d{3}.*3 epochs"))
    expect(panel.locator(".segnb-runs-curves .segnb-placeholder"), "no chart before a tick").to_be_visible()

    for name in RUNS:
        panel.locator(".segnb-run-row", has_text=name).locator(".segnb-run-select input").check()

    curves = until(lambda: panel.evaluate(JS_TRACES, ".segnb-runs-curves"), 60, "the curves chart is drawn")
    groups = {group for _, group, _ in curves}
    until(lambda: {g for _, g, _ in panel.evaluate(JS_TRACES, ".segnb-runs-curves")} == set(RUNS), 30,
          "the curves of both ticked runs share one chart")
    curves = panel.evaluate(JS_TRACES, ".segnb-runs-curves")
    assert all(points == 3 for _, _, points in curves), f"3 epochs per curve: {curves}"
    bars = until(lambda: panel.evaluate(JS_TRACES, ".segnb-runs-iou"), 30, "the per-class IoU bars are drawn")
    assert [(kind, group) for kind, group, _ in bars] == [("bar", RUNS[0]), ("bar", RUNS[1])], bars
    assert all(n == 7 for _, _, n in bars), f"a bar per class (7) for each run: {bars}"
    confusion = until(lambda: panel.evaluate(JS_TRACES, ".segnb-runs-confusion"), 30, "the confusion difference")
    assert confusion[0][0] == "heatmap" and confusion[0][2] == 7, confusion
    expect(panel.locator(".segnb-runs-confusion .gtitle"), "it says which run is subtracted"
           ).to_contain_text(f"{RUNS[1]} minus {RUNS[0]}")
    picture = panel.locator("img.segnb-runs-predictions")
    width, height, _ = until(lambda: picture.evaluate(JS_IMAGE_HASH), 30, "the predictions grid is drawn")
    assert width > 4 * height / 3, f"3 images, each as image, truth, two runs and their disagreement: {width}x{height}"
    labels = panel.locator(".segnb-runs-predictions-caption .segnb-strip-label").all_inner_texts()
    assert labels == ["image", "truth", *RUNS, "runs disagree"], labels
    expect(panel.locator(".segnb-runs-config"), "the settings that differ").to_contain_text("transposed4")
    page.set_viewport_size({"width": 1280, "height": 2400})  # the whole panel in one picture
    page.wait_for_timeout(1500)
    panel.screenshot(path=str(artifacts / "runs-tab.png"))
    page.set_viewport_size({"width": 1280, "height": 720})

    root.locator(".segnb-presentation-toggle").click()
    expect(root, "presentation mode is on").to_have_class(re.compile("segnb-presentation"))
    page.wait_for_timeout(1500)  # the charts redraw at their presentation size
    for view in ("curves", "iou", "confusion", "predictions"):  # what a projector shows, chart by chart
        panel.locator(f".segnb-runs-{view}").first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / f"runs-tab-presentation-{view}.png"))

    panel.locator(".segnb-run-row", has_text=RUNS[0]).locator(".segnb-run-select input").uncheck()
    until(lambda: {g for _, g, _ in panel.evaluate(JS_TRACES, ".segnb-runs-curves")} == {RUNS[1]}, 30,
          "unticking a run takes its curves away")
    assert groups <= set(RUNS)
    errors_in_panel = [t for t in panel.locator(".segnb-error").all_inner_texts() if t.strip()]
    assert not errors_in_panel, errors_in_panel
    assert not errors, "JavaScript errors:\n" + "\n".join(errors)
