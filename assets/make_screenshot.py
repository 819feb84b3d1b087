"""Takes the README's screenshots in headless Chromium: assets/screenshot-train.png (the Train
tab over a workspace), assets/screenshot-data.png (the Data tab after importing a sample) and
assets/screenshot-chat.png (base and the newest tuned run answering an FAQ question) and
assets/screenshot-method.png (every method compared on the built-in model, DoRA's card open) and
assets/screenshot-preference.png (a workspace whose newest run is a DPO run, e.g. the one
bench/pref_quality.py --home DIR leaves: its lineage and preference curves) and
assets/screenshot-label.png (the newest labeling project's first item for labeler "alex").

    python assets/make_screenshot.py [--home WORKSPACE] [--tab train|data|chat|method|preference|label]
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
    ap.add_argument("--tab", choices=["train", "data", "chat", "method", "preference", "label"], default="train")
    args = ap.parse_args()
    out = str(ROOT / "assets" / f"screenshot-{args.tab}.png")
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
        if args.tab == "train":  # the estimate above Start (it measures the model first)
            page.wait_for_selector("#train-estimate >> text=Expected peak memory", timeout=120_000)
        if args.tab == "data":
            page.get_by_role("tab", name="Data").click()
            page.locator("#data-sample input").click()
            page.get_by_role("option", name="Quillpad support FAQ (120 Q&A, fictional product)").click()
            page.wait_for_selector("#data-detected >> text=Detected")
            page.click("#data-import")
            page.wait_for_selector("#data-lengths .main-svg", timeout=120_000)
        if args.tab == "chat":
            page.get_by_role("tab", name="Chat").click()
            page.get_by_text("Generation settings").click()
            temperature = page.locator("#chat-temperature input[type=number]")
            temperature.fill("0")  # the most likely answer of each model
            temperature.press("Enter")
            page.get_by_text("Generation settings").click()
            box = page.locator("#chat-prompt textarea")
            box.fill("How long is the Quillpad warranty?")  # one of the FAQ questions
            page.click("#chat-send")
            page.wait_for_timeout(20000)  # both replies stream to the end
        if args.tab == "method":
            page.get_by_role("tab", name="Method").click()
            page.wait_for_selector("#method-table >> text=P-tuning", timeout=300_000)
            page.locator("#method-choice input").click()
            page.get_by_role("option", name="DoRA", exact=True).click()
            page.wait_for_selector("#method-card >> text=LoRA family", timeout=60_000)
        if args.tab == "preference":
            page.wait_for_selector("#run-curves >> text=Preference accuracy", timeout=60_000)
        if args.tab == "label":
            page.get_by_role("tab", name="Label").click()
            page.locator("#label-labeler textarea, #label-labeler input").first.fill("alex")
            page.locator("#label-project input").click()
            page.get_by_role("option").first.click()
            page.click("#label-start")
            page.wait_for_selector("#label-progress >> text=labelled", timeout=60_000)
        page.wait_for_timeout(4000)  # a timer tick fills the status panel
        page.screenshot(path=out, full_page=True)
        browser.close()
    app.close()
    print(out)


if __name__ == "__main__":
    main()
