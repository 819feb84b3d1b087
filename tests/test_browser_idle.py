"""An open page costs a training run little: each tab's refresh timer ticks only while its tab is
shown, and Gradio's page script is served with the fix that makes a tick cost its own outputs only
(studio/frontend_fix.py). bench/page_cost.py measures the training steps this keeps."""

from __future__ import annotations

import gzip
import time
import urllib.request

import pytest

from studio.frontend_fix import FAST, SLOW, assets_dir, fixed
from tests.test_browser import page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def blocks_script() -> str:
    [path] = assets_dir().glob("Blocks-*.js")
    return path.name


def test_the_installed_gradio_script_has_the_text_the_fix_replaces():
    # fails when an upgraded Gradio changed it: then look again whether the fix is still needed
    text = (assets_dir() / blocks_script()).read_text(encoding="utf-8")
    assert text.count(SLOW) == 1
    assert fixed(text) == text.replace(SLOW, FAST) and FAST not in text


def test_the_page_gets_the_fixed_script_and_other_files_untouched(server):  # noqa: F811
    name = blocks_script()
    request = urllib.request.Request(f"{server}/assets/{name}", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.headers["Content-Encoding"] == "gzip"
        served = gzip.decompress(answer.read()).decode()
    assert FAST in served and SLOW not in served
    assert served == fixed((assets_dir() / name).read_text(encoding="utf-8"))
    other = next(p for p in assets_dir().glob("index-*.js"))
    with urllib.request.urlopen(f"{server}/assets/{other.name}", timeout=30) as answer:
        assert answer.read() == other.read_bytes()


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

    page.goto(server)
    expect(page.locator("#run-status")).to_be_attached(timeout=30_000)
    time.sleep(3)  # the page's load events
    assert ticks_over(5) >= 2, "the runs panel refreshes while the Train tab is shown"
    for tab in ("Data", "Export", "Chat"):
        page.get_by_role("tab", name=tab).click()
        assert ticks_over(5) == 0, f"the runs panel does not tick on the {tab} tab"
    page.get_by_role("tab", name="Train").click()
    assert ticks_over(5) >= 2, "the runs panel ticks again when its tab is back"
    # a handler that switches tabs (Method's *Use this method*) restarts it too
    page.get_by_role("tab", name="Method").click()
    assert ticks_over(3) == 0
    page.click("#method-use")
    expect(page.locator("#train-method")).to_be_visible()
    assert ticks_over(5) >= 2
