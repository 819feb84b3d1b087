"""Labeling under load: many labelers submitting at once against one workspace, through the same
functions the Label tab calls (studio.label_service.next_item and submit).

Labelers are threads of one process, as the Label tab's users are worker threads of one Gradio
server, and they click without pause (no reading time): the worst case for the write lock.

The bar (the labeling issue): 20 labelers, 500 labels each, concurrently: 0 labels lost, 0
duplicated, no 'database is locked' (or any other error) shown to anyone, p95 submit latency under
250 ms, PRAGMA integrity_check ok.

Baseline, measured in the same run: one labeler alone on a project of the same size (the same
calls, no one else writing). Printed: p50/p95/max latency of submit and of next_item, labels per
second, the ratios to the baseline, the checks and PASS/FAIL; exits 1 on FAIL.

Every 50th label is sent twice (a double click, a retried request): it must come back with the same
label id and be stored once.

    python bench/label_reliability.py [--labelers 20] [--labels 500] [--overlap 2] [--items N] [--home DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import label_service as ls  # noqa: E402
from studio.core import Studio  # noqa: E402

P95_SUBMIT_BAR_MS = 250
CHOICES = ("left", "right", "tie", "both_bad")
DOUBLE_EVERY = 50


def pairs_file(folder: Path, n: int) -> Path:
    path = folder / "pairs.jsonl"
    with path.open("w") as out:
        for k in range(n):
            out.write(json.dumps({"prompt": f"Question {k}: how do I reset my password on device {k}?",
                                  "response_a": f"Answer A to question {k}. " * 8,
                                  "response_b": f"Answer B to question {k}. " * 8,
                                  "model_a": "base:default", "model_b": f"run:r{k % 3}"}) + "\n")
    return path


class Labeler(threading.Thread):
    """One person at the Label tab: load the next item, click, repeat."""

    def __init__(self, studio, ref: str, name: str, labels: int, start: threading.Barrier | None):
        super().__init__(name=name)
        self.studio, self.ref, self.labeler, self.labels, self.start_line = studio, ref, name, labels, start
        self.next_ms: list[float] = []
        self.submit_ms: list[float] = []
        self.acked: list[int] = []
        self.errors: Counter = Counter()
        self.doubles_differ = 0
        self.ran_dry = False

    def run(self):
        rng = random.Random(self.labeler)
        if self.start_line:
            self.start_line.wait()
        tries = 0
        while len(self.acked) < self.labels and tries < self.labels * 2:
            tries += 1
            try:
                t0 = time.perf_counter()
                out = ls.next_item(self.studio, self.ref, self.labeler)
                t1 = time.perf_counter()
                self.next_ms.append((t1 - t0) * 1000)
                if out["item"] is None:
                    self.ran_dry = True
                    return
                item_id = out["item"]["item_id"]
                t1 = time.perf_counter()
                label_id = ls.submit(self.studio, self.ref, item_id, self.labeler, rng.choice(CHOICES),
                                     seconds=rng.uniform(3, 30))
                self.submit_ms.append((time.perf_counter() - t1) * 1000)
                self.acked.append(label_id)
                if len(self.acked) % DOUBLE_EVERY == 0:
                    again = ls.submit(self.studio, self.ref, item_id, self.labeler, rng.choice(CHOICES))
                    self.doubles_differ += again != label_id
            except sqlite3.OperationalError as err:
                self.errors["database is locked" if "locked" in str(err) else f"OperationalError: {err}"] += 1
            except Exception as err:  # noqa: BLE001 - anything a labeler would see is a finding
                self.errors[f"{type(err).__name__}: {err}"] += 1


def run_labelers(studio, ref: str, labelers: int, labels: int) -> tuple[list[Labeler], float]:
    start = threading.Barrier(labelers) if labelers > 1 else None
    crowd = [Labeler(studio, ref, f"labeler{k:02d}", labels, start) for k in range(labelers)]
    began = time.perf_counter()
    for t in crowd:
        t.start()
    for t in crowd:
        t.join()
    return crowd, time.perf_counter() - began


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary(crowd: list[Labeler], wall: float) -> dict:
    sub = [x for t in crowd for x in t.submit_ms]
    nxt = [x for t in crowd for x in t.next_ms]
    return {"submit": (pct(sub, 50), pct(sub, 95), max(sub)), "next": (pct(nxt, 50), pct(nxt, 95), max(nxt)),
            "labels": sum(len(t.acked) for t in crowd), "wall": wall,
            "rate": sum(len(t.acked) for t in crowd) / wall}


def checks(studio, ref: str, crowd: list[Labeler], overlap: int) -> dict:
    acked = [i for t in crowd for i in t.acked]
    labels = studio.store.list_labels(ref)
    stored = {lb["id"] for lb in labels}
    per_item = Counter(lb["item_id"] for lb in labels if lb["choice"] != "skip")
    counters = {it["id"]: it["labels"] for it in studio.store.label_items(ref) if it["labels"]}
    errors = sum((t.errors for t in crowd), Counter())
    return {
        "acknowledged": len(acked),
        "stored": len(labels),
        "lost": len(set(acked) - stored),
        "unacknowledged stored": len(stored - set(acked)),
        "acked twice": len(acked) - len(set(acked)),
        "duplicated (item x labeler)": len(labels) - len({(lb["item_id"], lb["labeler"]) for lb in labels}),
        "double submits with a new id": sum(t.doubles_differ for t in crowd),
        "items over the overlap": sum(n > overlap for n in per_item.values()),
        "item counters off": (sum(counters.get(i, 0) != n for i, n in per_item.items())
                              + len(set(counters) - set(per_item))),
        "database is locked": errors.pop("database is locked", 0),
        "other errors": sum(errors.values()),
        "error kinds": dict(errors.most_common(5)),
        "integrity_check": studio.store.integrity_check(),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labelers", type=int, default=20)
    ap.add_argument("--labels", type=int, default=500, help="labels each labeler gives")
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--items", type=int, help="items in the project (default: exactly enough, labelers*labels/overlap)")
    ap.add_argument("--home", help="workspace folder (default: a fresh temporary one, removed after)")
    args = ap.parse_args()
    items = args.items or -(-args.labelers * args.labels // args.overlap)
    base = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="label-bench-"))
    try:
        pairs = pairs_file(base, items)
        print(f"{args.labelers} labelers x {args.labels} labels, overlap {args.overlap}, {items} items; "
              f"{os.cpu_count()} CPUs; workspace {base}", flush=True)

        # baseline: one labeler alone on a project of the same size, its own workspace
        alone_studio = Studio(base / "alone", standby=False)
        alone_ref = ls.import_project(alone_studio, name="alone", path=pairs, overlap=args.overlap)["id"]
        alone, alone_wall = run_labelers(alone_studio, alone_ref, 1, args.labels)
        b = summary(alone, alone_wall)
        b_checks = checks(alone_studio, alone_ref, alone, args.overlap)

        studio = Studio(base / "crowd", standby=False)
        ref = ls.import_project(studio, name="crowd", path=pairs, overlap=args.overlap)["id"]
        crowd, wall = run_labelers(studio, ref, args.labelers, args.labels)
        c = summary(crowd, wall)
        c_checks = checks(studio, ref, crowd, args.overlap)
    finally:
        if not args.home:
            shutil.rmtree(base, ignore_errors=True)

    print()
    print(f"{'':<26}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for title, s in (("submit, 1 labeler alone", b["submit"]), (f"submit, {args.labelers} labelers", c["submit"]),
                     ("next_item, 1 alone", b["next"]), (f"next_item, {args.labelers} labelers", c["next"])):
        print(f"{title:<26}{s[0]:>9.1f}{s[1]:>9.1f}{s[2]:>9.1f}")
    print()
    print(f"throughput: alone {b['labels']} labels in {b['wall']:.1f} s = {b['rate']:.0f} labels/s; "
          f"{args.labelers} labelers {c['labels']} labels in {c['wall']:.1f} s = {c['rate']:.0f} labels/s "
          f"({c['rate'] / b['rate']:.2f}x)")
    print(f"p95 submit with {args.labelers} labelers / p95 alone = {c['submit'][1] / b['submit'][1]:.1f}x; "
          f"p95 next_item with {args.labelers} labelers / p95 alone = {c['next'][1] / b['next'][1]:.1f}x")
    dry = [t.labeler for t in crowd if t.ran_dry]
    if dry:
        print(f"{len(dry)} labelers found nothing left for them before {args.labels} labels "
              "(the overlap filled up; not a loss)")
    print()
    print("checks (crowd; baseline in brackets):")
    for key, value in c_checks.items():
        if key == "error kinds" and not value:
            continue
        print(f"  {key:<30} {value}  [{b_checks[key]}]")

    bars = {
        "0 lost": c_checks["lost"] == 0 and b_checks["lost"] == 0,
        "0 duplicated": (c_checks["duplicated (item x labeler)"] == 0 and c_checks["acked twice"] == 0
                         and c_checks["double submits with a new id"] == 0),
        "no 'database is locked' or other error": c_checks["database is locked"] == 0 and c_checks["other errors"] == 0,
        "no item over the overlap, counters right": c_checks["items over the overlap"] == 0
                                                    and c_checks["item counters off"] == 0,
        f"p95 submit < {P95_SUBMIT_BAR_MS} ms": c["submit"][1] < P95_SUBMIT_BAR_MS,
        "integrity_check ok": c_checks["integrity_check"] == "ok" and b_checks["integrity_check"] == "ok",
    }
    print()
    for bar, ok in bars.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {bar}")
    passed = all(bars.values())
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
