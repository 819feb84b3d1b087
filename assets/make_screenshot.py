"""Takes assets/screenshot-train.png: the Train tab over a workspace, in headless Chromium.

    python assets/make_screenshot.py [--home WORKSPACE]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.core import Studio  # noqa: E402
from studio.launch import serve  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=None)
    ap.add_argument("--out", default=str(ROOT / "assets" / "screenshot-train.png"))
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = serve(Studio(args.home or tempfile.mkdtemp()), port=port, block=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}")
        page.wait_for_selector("#run-status")
        page.wait_for_timeout(4000)  # a timer tick fills the status panel
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    app.close()
    print(args.out)


if __name__ == "__main__":
    main()
