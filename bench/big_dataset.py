"""A 100,000-row dataset for training: how much memory reading it for a run takes, the studio's way
(Arrow datasets memory-mapped from the stored Parquet, pipelines/data.training_datasets) against
a named baseline measured in the same run (the whole file as one Python list of rows, then
`Dataset.from_list`, which is how the runners read data before), and then a real short run on it.

Each reader runs in its own process so its peak memory (ru_maxrss) is its own; an idle process
that only loads the libraries is measured too.

    python bench/big_dataset.py [--rows 100000] [--steps 3] [--model default]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

READERS = {
    "idle": "import datasets, pyarrow.parquet; from pipelines import data; n = 0",
    "whole list (baseline)": (
        "from datasets import Dataset; from pipelines import data\n"
        "rows = [data.to_prompt_completion(r) for r in data.load_rows(PATH)]\n"
        "train, held = data.split(rows, 0.1, 0)\n"
        "ds = Dataset.from_list(train); n = len(ds)"),
    "studio (Arrow, memory-mapped)": (
        "from pipelines import data\n"
        "ds, held = data.training_datasets({'path': PATH}, 0.1, 0, convert=data.to_prompt_completion)\n"
        "n = len(ds)"),
}

MEASURE = """
import resource, sys, time
sys.path.insert(0, sys.argv[3])
PATH = sys.argv[2]
start = time.perf_counter()
exec(sys.argv[1])
print(n, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def make_file(path: Path, rows: int) -> None:
    rnd = random.Random(0)
    words = "quillpad battery charge screen stylus page notebook sync cloud export pen ink note".split()
    with open(path, "w") as fh:
        for i in range(rows):
            question = f"Question {i}: " + " ".join(rnd.choices(words, k=12)) + "?"
            answer = "Answer: " + " ".join(rnd.choices(words, k=24)) + "."
            fh.write(json.dumps({"messages": [{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}]}) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--model", default="default")
    args = ap.parse_args()
    from studio.core import Studio

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "big.jsonl"
        make_file(src, args.rows)
        studio = Studio(tmp / "home", standby=False)
        row = studio.import_dataset(src, name="big")
        print(f"dataset: {row['rows']} rows ({src.stat().st_size / 1e6:.0f} MB JSONL, "
              f"{Path(row['path']).stat().st_size / 1e6:.0f} MB Parquet)")
        peaks = {}
        for name, code in READERS.items():
            done = subprocess.run([sys.executable, "-c", MEASURE, code, row["path"], str(ROOT)],
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(done.stderr.strip().splitlines()[-1])
            n, seconds, peak = done.stdout.split()[-3:]
            peaks[name] = float(peak)
            print(f"{name:32s} {int(n):7d} training rows in {float(seconds):5.1f} s, peak memory {float(peak):6.0f} MB")
        idle, whole, ours = peaks.values()
        print(f"above idle: baseline +{whole - idle:.0f} MB, studio +{ours - idle:.0f} MB; "
              f"ratio baseline / studio (above idle): {(whole - idle) / max(ours - idle, 1):.1f}x")

        # a real run on the whole dataset: a few steps (then a cancel, which saves a checkpoint)
        params = {"num_train_epochs": 0.1, "per_device_train_batch_size": 8, "max_length": 64,
                  "save_steps": 1000, "eval_fraction": 0.001}
        began = time.time()
        run_id = studio.start_run(model=args.model, dataset=row["id"], method="lora", params=params)
        while (now := studio.get_run(run_id))["step"] < args.steps and now["status"] in ("queued", "running"):
            time.sleep(1.0)
        first = time.time() - began
        studio.cancel(run_id)
        done = studio.wait(run_id, poll_s=1.0)
        log = (studio.run_dir(run_id) / "train.log").read_text()
        data_line = next((line for line in log.splitlines() if line.startswith("data: ")), "")
        print(f"run {run_id}: step {args.steps} of {done['max_steps']} reached {first:.0f} s after Start "
              f"(loading, tokenizing every row, {args.steps} steps), then {done['status']}; {data_line}")
        return 0 if done["status"] == "cancelled" else 1


if __name__ == "__main__":
    sys.exit(main())
