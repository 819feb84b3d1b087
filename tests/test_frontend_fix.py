"""Gradio's page script is served with the fix that makes a status change re-apply only the statuses
that changed (studio/frontend_fix.py); everything else is served as Gradio ships it."""

from __future__ import annotations

import gzip
import urllib.request

from studio.frontend_fix import FAST, SLOW, assets_dir, fixed
from tests.test_browser import server  # noqa: F401  (fixture; no browser needed)


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
    # a name that is no file is Gradio's to answer (404), and nothing is kept for it
    try:
        urllib.request.urlopen(f"{server}/assets/Blocks-nosuchfile.js", timeout=30)
        raise AssertionError("a missing script was served")
    except urllib.error.HTTPError as err:
        assert err.code == 404
