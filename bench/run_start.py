"""Seconds from *Start training* to the run's first step, on the built-in model: a job process
started fresh (the baseline: it imports torch, transformers, PEFT and TRL first) against one that
was waiting with them imported (pipelines/standby.py, what `studio serve` keeps ready), measured
in the same run, alternately.

    python bench/run_start.py [--repeats 3]

Each run trains three steps of LoRA on the bundled FAQ. The waiting process is given time to finish
its imports before Start, as it has on a server where a person opens the page and fills the form;
as on a server, the next one is made ready once the measured run is done (never beside it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.events import read_metrics  # noqa: E402
from studio import core  # noqa: E402
from studio.core import Studio  # noqa: E402

PARAMS = {"num_train_epochs": 0.1, "per_device_train_batch_size": 4, "max_length": 128, "eval_fraction": 0.0}


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until_idle(pid: int) -> None:
    """The waiting process has finished importing: it sleeps on its input and its CPU time stands."""
    before = cpu_ticks(pid)
    while True:
        time.sleep(1.0)
        now = cpu_ticks(pid)
        if now == before:
            return
        before = now


def made_ready() -> int:
    """The waiting process's pid, once the studio has started it (when no job runs)."""
    while core.STANDBY._ready is None:
        time.sleep(0.1)
    return core.STANDBY._ready[0].pid


def first_step_after_start(studio: Studio, model: str) -> float:
    start = time.perf_counter()
    run_id = studio.start_run(model=model, dataset="quillpad_faq", method="lora", params=PARAMS)
    run_dir = studio.run_dir(run_id)
    while not any("loss" in m for m in read_metrics(run_dir)):
        time.sleep(0.05)
    first = time.perf_counter() - start
    row = studio.wait(run_id, poll_s=0.2)
    assert row["status"] == "completed", row["error"]
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp()) / "home"
    studio = Studio(home, standby=False)
    model = str(studio.resolve_model("default"))  # converted once, before anything is timed
    times = {"fresh": [], "ready": []}
    for _ in range(args.repeats):
        core.STANDBY.close()
        times["fresh"].append(first_step_after_start(Studio(home, standby=False), model))
        ready = Studio(home, standby=True)
        ready.prepare_worker()
        wait_until_idle(made_ready())
        times["ready"].append(first_step_after_start(ready, model))
        wait_until_idle(made_ready())  # the next one, made ready after the run: not beside the baseline
    core.STANDBY.close()
    for name, label in (("fresh", "baseline: a process started fresh"), ("ready", "a process waiting, libraries imported")):
        values = " / ".join(f"{t:.1f}" for t in times[name])
        print(f"{label}: first step after Start in {values} s (median {statistics.median(times[name]):.1f} s)")
    ratio = statistics.median(times["fresh"]) / statistics.median(times["ready"])
    print(f"first step after Start: {ratio:.2f}x sooner than a fresh process (built-in model, LoRA, bundled FAQ)")


if __name__ == "__main__":
    main()
