"""The standalone Studio of `segnb studio` (Voila): the same session, with no code cells."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .studio_page import ConsoleErrors, StudioSession


@pytest.mark.e2e
def test_studio_in_voila(voila_studio, page: Page, artifacts):
    errors = ConsoleErrors(page)
    page.set_viewport_size({"width": 1280, "height": 720})  # a projector
    page.goto(voila_studio["url"])
    root = page.locator(".segnb-studio").first
    expect(root, "Voila renders the Studio").to_be_visible(timeout=120_000)
    expect(page.get_by_text("import Studio"), "Voila shows no code").to_have_count(0)
    timings = StudioSession(page, root, "voila", artifacts, errors).run_all()
    print("timings (s):", {k: round(v, 2) for k, v in timings.items()})
    print("ignored offline fetches:", errors.ignored)
    assert not errors, "JavaScript errors in the Voila Studio:\n" + "\n".join(errors)
