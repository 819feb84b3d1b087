"""Importing a big JSONL (500,000 rows, or --gb 1 for a 1 GB file): the studio's streaming import
against two baselines measured in the same run.

- idle: a process that loads the importer and reads nothing — what the import adds above it is
  what the file costs in memory (issue #18: a 1 GB import stays a few hundred MB above idle);
- whole file (skipped with --no-whole, which a 1 GB file needs: it takes ~10x the file in RAM):
  `json.loads` every line into a list, then one `pa.Table.from_pylist` and a Parquet write, which
  is what a simple importer does.
Each side runs in its own process so its peak memory (ru_maxrss) is its own. The studio side prints
the importer's own progress lines, as `studio data import` shows them.

    python bench/import_stream.py [--rows 500000 | --gb 1] [--no-whole]
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
def progress(rows, seconds):
    print(f"progress: {rows} rows at {seconds:.0f} s", file=sys.stderr, flush=True)
print(import_file(sys.argv[1], sys.argv[2] + "/ds", max_bytes=10**9, progress=progress)["rows"])
"""

MEASURE = """
import resource, runpy, sys, time
code = sys.argv.pop(1)
start = time.perf_counter()
exec(compile(code, "<import>", "exec"), {"__name__": "__main__"})
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


IDLE = """
import sys
sys.path.insert(0, sys.argv[3])
import pyarrow.parquet  # noqa: F401
from pipelines.importer import import_file  # noqa: F401
print(0)
"""


def make_file(path: Path, rows: int, size_bytes: int = 0) -> int:
    """Write `rows` rows, or as many as reach `size_bytes`; returns how many."""
    rnd = random.Random(0)
    words = "quillpad battery charge screen stylus page notebook sync cloud export pen ink note".split()
    i = 0
    with open(path, "w") as fh:
        while (fh.tell() < size_bytes) if size_bytes else (i < rows):
            prompt = f"Question {i}: " + " ".join(rnd.choices(words, k=12)) + "?"
            completion = "Answer: " + " ".join(rnd.choices(words, k=24)) + "."
            fh.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
            i += 1
    return i


def run(code: str, src: Path, out: Path) -> tuple[float, float, int, list[str]]:
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", MEASURE, code, str(src), str(out), str(ROOT)],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr.strip().splitlines()[-1])
    rows, measured = done.stdout.strip().splitlines()[-2:]
    seconds, peak_mb = map(float, measured.split())
    return seconds, peak_mb, int(rows), [l for l in done.stderr.splitlines() if l.startswith("progress")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--gb", type=float, help="write a file of this size instead (just under it: 1 GB is the limit)")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-file baseline")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "big.jsonl"
        rows = make_file(src, args.rows, int(args.gb * 1e9) - 400 if args.gb else 0)
        size_mb = src.stat().st_size / 1e6
        idle_s, idle_mb, _, _ = run(IDLE, src, tmp / "idle")
        if not args.no_whole:
            base_s, base_mb, base_rows, _ = run(BASELINE, src, tmp / "baseline")
            assert base_rows == rows
        ours_s, ours_mb, ours_rows, progress = run(STUDIO, src, tmp / "studio")
    assert ours_rows == rows
    print(f"file: {rows} rows, {size_mb:.0f} MB JSONL")
    print(f"idle (the importer loaded, nothing read): peak memory {idle_mb:.0f} MB")
    if not args.no_whole:
        print(f"baseline (whole file as Python objects): {base_s:.1f} s, peak memory {base_mb:.0f} MB")
    print(f"studio streaming import (validated, de-dup counted): {ours_s:.1f} s, peak memory {ours_mb:.0f} MB "
          f"= idle + {ours_mb - idle_mb:.0f} MB ({(ours_mb - idle_mb) / size_mb:.2f} MB per MB of file)")
    print(f"progress lines while importing: {len(progress)} (about one a second; the last: "
          f"{progress[-1].removeprefix('progress: ') if progress else '-'})")
    if not args.no_whole:
        print(f"peak memory: {base_mb / ours_mb:.1f}x less than baseline; time: {ours_s / base_s:.2f}x baseline's")


if __name__ == "__main__":
    main()
