"""An open page costs a training run little: each tab's refresh timer ticks only while its tab is
shown (the served script's fix: tests/test_frontend_fix.py). bench/page_cost.py measures the
training steps this keeps."""

from __future__ import annotations

import time

import pytest

from tests.test_browser import page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_the_runs_panel_ticks_only_while_the_train_tab_is_shown(server, page, studio):  # noqa: F811
    from playwright.sync_api import expect

    ticks = []  # each tick of the runs panel lists the runs once
    list_runs = studio.list_runs
    studio.list_runs = lambda *a, **k: ticks.append(time.monotonic()) or list_runs(*a, **k)

    def ticks_over(seconds: float) -> int:
        time.sleep(1.5)  # what the switch itself sent has gone
        start = time.monotonic()
        time.sleep(seconds)
        return sum(start <= t for t in ticks)

    def ticking(within: float = 20.0) -> bool:
        """Two ticks arrive (the 2-second timer runs late while a busy machine answers slowly)."""
        time.sleep(1.5)
        start = time.monotonic()
        while time.monotonic() < start + within:
            if sum(start <= t for t in ticks) >= 2:
                return True
            time.sleep(0.25)
        return False

    page.goto(server)
    expect(page.locator("#run-status")).to_be_attached(timeout=30_000)
    time.sleep(3)  # the page's load events
    assert ticking(), "the runs panel refreshes while the Train tab is shown"
    for tab in ("Data", "Export", "Chat"):
        page.get_by_role("tab", name=tab).click()
        assert ticks_over(5) == 0, f"the runs panel does not tick on the {tab} tab"
    page.get_by_role("tab", name="Train").click()
    assert ticking(), "the runs panel ticks again when its tab is back"
    # a handler that switches tabs (Method's *Use this method*) restarts it too
    page.get_by_role("tab", name="Method").click()
    assert ticks_over(3) == 0
    page.click("#method-use")
    expect(page.locator("#train-method")).to_be_visible()
    assert ticking()
