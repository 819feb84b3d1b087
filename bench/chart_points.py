"""A long run's live chart: what one refresh costs when every logged step is drawn (the baseline, as the
chart was before `pipelines.curves.thinned`) against the studio's thinned series, measured in the same run.

SFT logs every optimizer step, and the Train tab rebuilds the chart each time the run logs, then the page
draws it. For a run of --steps steps (default 20,000: a GPU run of a few hours) this prints, for each side,
the server's time to build and serialize the figure, the bytes sent, and Chromium's time to draw it with the
page's Plotly (median of 5 draws), then the ratios. The curves are a noisy falling loss with one spike, which
the thinned chart must still show (checked at the end).

    python bench/chart_points.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plotly  # noqa: E402

from components import charts  # noqa: E402


def metrics(steps: int) -> list[dict]:
    rng = random.Random(0)
    out = []
    for s in range(1, steps + 1):
        loss = 2 * math.exp(-s / (steps / 4)) + 0.3 + rng.random() * 0.1 + (3.0 if s == steps // 3 else 0)
        out.append({"step": s, "epoch": s / (steps / 3), "loss": loss, "learning_rate": 1e-4 * (1 - s / steps),
                    "grad_norm": 1 + rng.random(), "tokens_per_s": 3000 + rng.random() * 100})
        if s % max(1, steps // 40) == 0:
            out.append({"step": s, "epoch": s / (steps / 3), "eval_loss": 2 * math.exp(-s / (steps / 4)) + 0.35})
    return out


def built(run: list[dict], every_point: bool) -> tuple[float, str, object]:
    thinned, marked = charts.thinned, charts.MARKED
    if every_point:  # the chart as it was: every step, with markers
        charts.thinned, charts.MARKED = (lambda steps, values: (steps, values)), math.inf
    try:
        start = time.perf_counter()
        figure = charts.curves_figure({"run": run})
        payload = figure.to_json()
        return time.perf_counter() - start, payload, figure
    finally:
        charts.thinned, charts.MARKED = thinned, marked


def draw_ms(page, payload: str) -> float:
    times = []
    for _ in range(5):
        times.append(page.evaluate("""(fig) => { const f = JSON.parse(fig); const div = document.getElementById('c');
            Plotly.purge(div); const t = performance.now(); Plotly.newPlot(div, f.data, f.layout);
            return performance.now() - t; }""", payload))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000)
    args = parser.parse_args()
    run = metrics(args.steps)
    sides = {"every point (baseline)": built(run, True), "thinned (studio)": built(run, False)}
    script = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    from playwright.sync_api import sync_playwright

    drawn = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_content("<div id='c' style='width:1100px;height:560px'></div>")
        page.add_script_tag(path=str(script))
        for name, (_seconds, payload, _figure) in sides.items():
            drawn[name] = draw_ms(page, payload)
        browser.close()
    print(f"a run of {args.steps:,} logged steps, one refresh of its chart:")
    for name, (seconds, payload, _figure) in sides.items():
        print(f"  {name:24s} build {seconds * 1000:6.0f} ms   sent {len(payload) / 1e6:5.2f} MB   "
              f"drawn in {drawn[name]:6.0f} ms")
    (base_s, base_json, _), (new_s, new_json, figure) = sides.values()
    base_draw, new_draw = drawn.values()
    print(f"ratio baseline/studio: build {base_s / new_s:.1f}x, bytes {len(base_json) / len(new_json):.1f}x, "
          f"draw {base_draw / new_draw:.1f}x")
    loss = next(t for t in figure.data if t.name == "training loss")
    print(f"the thinned loss keeps {len(loss.x)} of {args.steps:,} points; its spike at step {args.steps // 3:,}: "
          f"{'kept' if args.steps // 3 in loss.x else 'LOST'} (highest {max(loss.y):.2f})")


if __name__ == "__main__":
    main()
