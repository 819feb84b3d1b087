"""Memory each process holds under each strategy, predicted (pipelines/devices.py) against measured, on
the default model, full fine-tuning (where splitting the optimizer state and weights matters most).

Each strategy runs a real studio run of --processes CPU processes for a few steps; every process's
peak resident set (VmHWM) is read from /proc while it runs. Baseline: the single-process run measured
in the same bench, so the ratio column says how much each strategy saves per process.

    python bench/devices_memory.py [--processes 2] [--strategies single,ddp,fsdp,fsdp_grad_op] [--method full]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import devices as dev  # noqa: E402
from pipelines.events import read_json  # noqa: E402

GB = 1024**3


def peaks(run_dir: Path, seen: dict[int, int]) -> None:
    """Update {pid: VmHWM bytes} for the run's training processes (the worker itself when it trains alone)."""
    out = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, command = int(line.split()[0]), line
        if "accelerate.commands.launch" in command or ("pipelines.rank" not in command
                                                         and "pipelines.run" not in command):
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for row in status.splitlines():
            if row.startswith("VmHWM:"):
                seen[pid] = max(seen.get(pid, 0), int(row.split()[1]) * 1024)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--strategies", default="single,ddp,fsdp,fsdp_grad_op")
    ap.add_argument("--method", default="full")
    ap.add_argument("--home")
    args = ap.parse_args()

    from studio import method_service
    from studio.core import Studio

    # no process kept waiting: each run's processes are found by their command line, which names the run
    studio = Studio(args.home or tempfile.mkdtemp(prefix="devices-bench-"), standby=False)
    params = {"num_train_epochs": 0.1, "per_device_train_batch_size": 4, "max_length": 256, "eval_fraction": 0,
              "save_steps": 100000}
    est = method_service.estimate(studio, "default", args.method, {**params, "per_device_train_batch_size": 4},
                                  "quillpad_faq")
    print(f"default model, {args.method} at batch 4 per process, max length 256, on {args.processes} CPU processes; "
          f"memory = each process's peak resident set (VmHWM)")
    print(f"{'strategy':<14}{'predicted GB':>13}{'measured GB (each)':>22}{'error':>8}{'vs single':>11}{'steps':>7}")
    baseline = None
    for strategy in args.strategies.split(","):
        n = 1 if strategy == "single" else args.processes
        devices = dev.parse_devices({"strategy": strategy, "num_processes": n})
        activations = max(0, est.training_bytes - 12 * est.trainable_params)
        predicted, _ = dev.per_device_bytes(est.weights_bytes, est.trainable_params, activations,
                                            est.runtime_bytes, devices, est.layers, est.device)
        if strategy == "single":
            predicted = est.peak_bytes
        run_id = studio.start_run(model="default", dataset="quillpad_faq", method=args.method, params=params,
                                  devices={"strategy": strategy, "num_processes": n})
        run_dir, seen = studio.run_dir(run_id), {}
        while studio.get_run(run_id)["status"] in ("queued", "running"):
            peaks(run_dir, seen)
            time.sleep(0.2)
        row = studio.get_run(run_id)
        if row["status"] != "completed":
            print(f"{strategy:<14} {row['status']}: {row['error']}")
            continue
        measured = sorted(seen.values(), reverse=True)[:n]
        worst = max(measured)
        baseline = baseline or (worst if strategy == "single" else None)
        ratio = f"{worst / baseline:.2f}x" if baseline else "-"
        shown = ", ".join(f"{m / GB:.2f}" for m in measured)
        summary = read_json(run_dir / "status.json")["summary"]
        print(f"{strategy:<14}{predicted / GB:>13.2f}{shown:>22}{100 * (predicted - worst) / worst:>+7.0f}%"
              f"{ratio:>11}{summary['steps']:>7}", flush=True)


if __name__ == "__main__":
    main()
