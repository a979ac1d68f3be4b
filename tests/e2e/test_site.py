"""The rendered notebooks (scripts/docs): two pages opened in chromium, served as plain files, no kernel."""

from __future__ import annotations

import subprocess
import sys

import pytest
from playwright.sync_api import Page, expect

from .conftest import ROOT, Server, free_port
from .studio_page import ConsoleErrors

PAGES = ("01_huggingface_datasets", "03_upsampling")  # the two that train nothing: a minute to build


@pytest.fixture(scope="module")
def site(tmp_path_factory, artifacts):
    """scripts/docs --fast for two notebooks (no prepared lessons), served by a static file server."""
    out = tmp_path_factory.mktemp("site")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(out.parent), "SEGNB_LESSONS": str(out.parent / "lessons"),
           "HF_HOME": str(out.parent / "hf")}
    built = subprocess.run(["bash", str(ROOT / "scripts" / "docs"), "--fast", "--out", str(out), *PAGES],
                           capture_output=True, text=True, env=env, timeout=900)
    assert built.returncode == 0, built.stdout + built.stderr
    port = free_port()
    server = Server("site", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], out, env,
                    artifacts / "site-server.log")
    try:
        server.wait_http(f"http://127.0.0.1:{port}/index.html")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.mark.e2e
@pytest.mark.timeout(1500)  # the build runs two notebooks first (a minute on an idle 2-core machine)
def test_two_rendered_notebooks_open_without_a_kernel(site, page: Page, artifacts):
    errors = ConsoleErrors(page)
    page.goto(f"{site}/index.html")
    expect(page.get_by_role("link")).to_have_count(len(PAGES))
    page.get_by_role("link", name="03 · Upsampling").click()

    # 03: markdown, code and its outputs, and the plotly charts drawn by plotly.js embedded in the page
    expect(page.get_by_role("heading", name="Checkerboards", exact=True)).to_be_visible()
    expect(page.get_by_text("transposed matrix equals M.T: True")).to_be_visible()
    charts = page.locator(".js-plotly-plot .main-svg")
    expect(charts.first).to_be_visible(timeout=30_000)
    assert charts.count() >= 5, "every plotly figure of 03 is drawn"
    page.screenshot(path=str(artifacts / "site-03.png"))

    # 01: pictures inline, charts drawn, a table of text outputs, no traceback anywhere
    page.goto(f"{site}/01_huggingface_datasets.html")
    expect(page.get_by_role("heading", name="Things and stuff", exact=True)).to_be_visible()
    expect(page.locator(".js-plotly-plot .main-svg").first).to_be_visible(timeout=30_000)
    images = page.locator(".jp-RenderedImage img")
    expect(images.first).to_be_visible()
    widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert widths and min(widths) > 0, "every picture decoded"
    expect(page.get_by_text("Traceback")).to_have_count(0)
    page.goto(f"{site}/01_huggingface_datasets.html#Things-and-stuff")  # the anchor the guide links to
    expect(page.get_by_role("heading", name="Things and stuff", exact=True)).to_be_in_viewport()
    page.screenshot(path=str(artifacts / "site-01.png"))
    # The browser asks any static server for /favicon.ico by itself; the pages have none to give.
    errors = [e for e in errors if "/favicon.ico" not in e]
    assert not errors, "JavaScript errors on the rendered pages:\n" + "\n".join(errors)
