"""How long the studio's page takes to open in Chromium until a tab can be clicked, and how many
components and events it carries — this checkout against a baseline revision, measured in the same
run (default baseline: 8c43bb2, the last revision with one copy of the settings form per method).

    python bench/page_open.py [--baseline REV] [--repeats 3]

The baseline is exported with `git archive` into a temporary folder and measured there with the
same script in its own process, on the same machine, one after the other (nothing else running).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(repeats: int) -> dict:
    """In the checkout this script is run from: serve a fresh workspace, open the page `repeats`
    times in new browser contexts, time goto -> the Label tab clicked."""
    sys.path.insert(0, os.getcwd())
    os.environ.setdefault("STUDIO_PROBE_CACHE", tempfile.mkdtemp())
    import socket

    from playwright.sync_api import sync_playwright

    from studio.core import Studio
    from studio.launch import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # no process kept waiting for a run (its imports would compete with the page); a baseline
    # revision from before it knows no such setting
    import inspect

    quiet = {"standby": False} if "standby" in inspect.signature(Studio).parameters else {}
    app = serve(Studio(Path(tempfile.mkdtemp()) / "home", **quiet), port=port, block=False)
    times = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu"])
            for _ in range(repeats):
                page = browser.new_context().new_page()
                start = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}")
                page.get_by_role("tab", name="Label").click(timeout=60_000)
                times.append(time.perf_counter() - start)
                page.close()
            browser.close()
    finally:
        app.close()
    return {"seconds": times, "components": len(app.blocks), "events": len(app.fns)}


def run_in(folder: Path, repeats: int) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "page_open.py"), "--measure", str(repeats)],
                         cwd=folder, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="8c43bb2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    with tempfile.TemporaryDirectory(prefix="page-open-baseline-") as tmp:
        archive = Path(tmp) / "rev.tar"
        subprocess.run(["git", "archive", "-o", str(archive), args.baseline], cwd=ROOT, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(Path(tmp) / "src", filter="data")
        base = run_in(Path(tmp) / "src", args.repeats)
    ours = run_in(ROOT, args.repeats)
    for name, r in ((f"baseline {args.baseline}", base), ("this checkout", ours)):
        print(f"{name}: {r['components']} components, {r['events']} events; page usable after "
              f"{' / '.join(f'{s:.1f}' for s in r['seconds'])} s (median {statistics.median(r['seconds']):.1f} s)")
    print(f"opening the page: {statistics.median(base['seconds']) / statistics.median(ours['seconds']):.2f}x "
          f"faster than baseline {args.baseline}")


if __name__ == "__main__":
    main()
