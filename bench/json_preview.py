"""The Data tab's preview of a big JSON array (the first rows, shown on every change of an option): the
studio's item-by-item reading against the whole-file reading it replaced, measured in the same run.

- baseline "whole file": the file decoded at once (`DECODER.decode`), then its first rows taken, which is
  what the preview did before (about ten times the file in memory);
- studio: `pipelines.importer.inspect`, as the Data tab calls it.
Each side runs in its own process: timed once, then run again under tracemalloc for the peak of what Python
allocates meanwhile (the process's ru_maxrss is set by loading the libraries, which hides it).

    python bench/json_preview.py [--mb 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WHOLE = """
from pathlib import Path
from pipelines.json_errors import DECODER
def preview():
    return DECODER.decode(Path(sys.argv[1]).read_text(encoding="utf-8"))[:5]
"""

STUDIO = """
from pipelines.importer import inspect
def preview():
    return inspect(sys.argv[1])["records"]
"""

MEASURE = """
import sys, time, tracemalloc
sys.path.insert(0, sys.argv[2])
{side}
start = time.perf_counter()
rows = preview()
seconds = time.perf_counter() - start
tracemalloc.start()
preview()
print(seconds, tracemalloc.get_traced_memory()[1], len(rows))
"""


def run(code: str, path: Path) -> tuple[float, int, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE.format(side=code), str(path), str(ROOT)],
                         capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the JSON array file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        row = {"prompt": "How long is the warranty on the Quillpad X2 tablet? " * 3,
               "completion": "The warranty lasts 27 months from the day of purchase. " * 4}
        item = json.dumps(row)
        count = args.mb * 2**20 // (len(item) + 2)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("[\n")
            fh.write(",\n".join(item for _ in range(count)))
            fh.write("\n]\n")
        size = path.stat().st_size
        print(f"file: {size / 2**20:.0f} MB, {count} items")
        whole = run(WHOLE, path)
        studio = run(STUDIO, path)
    for name, (seconds, peak, rows) in (("whole file (baseline)", whole), ("studio, item by item", studio)):
        print(f"{name:24s} {seconds:6.2f} s  peak allocated {peak / 2**20:6.0f} MB  rows shown {rows}")
    print(f"time: whole file / studio = {whole[0] / studio[0]:.1f}x; memory: whole file / studio = "
          f"{whole[1] / max(1, studio[1]):.1f}x")


if __name__ == "__main__":
    main()
