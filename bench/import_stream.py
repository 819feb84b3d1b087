"""Importing a 500,000-row JSONL: the studio's streaming import against reading it whole.

Baseline (same run, same file): `json.loads` every line into a list, then one
`pa.Table.from_pylist` and a Parquet write — the whole file as Python objects at once, which is
what a simple importer does. Each side runs in its own process so its peak memory (ru_maxrss)
is its own. Prints time, peak memory and the ratios.

    python bench/import_stream.py [--rows 500000]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BASELINE = """
import json, sys, pyarrow as pa, pyarrow.parquet as pq
rows = []
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        r = json.loads(line)
        rows.append({"messages": [{"role": "user", "content": r["prompt"]},
                                  {"role": "assistant", "content": r["completion"]}]})
pq.write_table(pa.Table.from_pylist(rows), sys.argv[2] + "/data.parquet")
print(len(rows))
"""

STUDIO = """
import sys
sys.path.insert(0, sys.argv[3])
from pipelines.importer import import_file
print(import_file(sys.argv[1], sys.argv[2] + "/ds")["rows"])
"""

MEASURE = """
import resource, runpy, sys, time
code = sys.argv.pop(1)
start = time.perf_counter()
exec(compile(code, "<import>", "exec"), {"__name__": "__main__"})
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_file(path: Path, rows: int) -> None:
    rnd = random.Random(0)
    words = "quillpad battery charge screen stylus page notebook sync cloud export pen ink note".split()
    with open(path, "w") as fh:
        for i in range(rows):
            prompt = f"Question {i}: " + " ".join(rnd.choices(words, k=12)) + "?"
            completion = "Answer: " + " ".join(rnd.choices(words, k=24)) + "."
            fh.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")


def run(code: str, src: Path, out: Path) -> tuple[float, float, int]:
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", MEASURE, code, str(src), str(out), str(ROOT)],
                          capture_output=True, text=True, check=True)
    rows, measured = done.stdout.strip().splitlines()[-2:]
    seconds, peak_mb = map(float, measured.split())
    return seconds, peak_mb, int(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=500_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "big.jsonl"
        make_file(src, args.rows)
        size_mb = src.stat().st_size / 1e6
        base_s, base_mb, base_rows = run(BASELINE, src, tmp / "baseline")
        ours_s, ours_mb, ours_rows = run(STUDIO, src, tmp / "studio")
    assert base_rows == ours_rows == args.rows
    print(f"file: {args.rows} rows, {size_mb:.0f} MB JSONL")
    print(f"baseline (whole file as Python objects): {base_s:.1f} s, peak memory {base_mb:.0f} MB")
    print(f"studio streaming import (validated, de-dup counted): {ours_s:.1f} s, peak memory {ours_mb:.0f} MB")
    print(f"peak memory: {base_mb / ours_mb:.1f}x less than baseline; time: {ours_s / base_s:.2f}x baseline's")


if __name__ == "__main__":
    main()
