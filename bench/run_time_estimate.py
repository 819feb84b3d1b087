"""How close the Train tab's time estimate is to a run's real time from Start to the saved result,
on the built-in model: the baseline is the matmul-based training-only figure ("training takes about
N s in all"), against the figure from Start to the saved result the Train tab shows once runs have
finished here: training at the speed those runs reached, plus their median time outside training
steps (studio/method_service.past_runs, calibrated).

Runs --runs LoRA runs one after another on the bundled FAQ (the same settings each time); from the
second on, each has runs before it to learn from. Printed per run: actual seconds (the job's
queued_at to its finish), the training part of them (its first step's start to its last record, a
held-out check after the last step included: what the training-only figure estimates), each
estimate, and their ratios (1.00 = exact): the training part over the training-only figure, the
whole over the figure from Start.

    python bench/run_time_estimate.py [--runs 3] [--epochs 1] [--method lora] [--dataset quillpad_faq|FILE] [--batch N]

--method kto --dataset FILE (thumbs: prompt, completion, label) --batch 2, or --method dpo --dataset
quillpad_preferences, measures the padded preference methods the same way.

--beside-first N runs N processes that spin on the CPU beside the first run only (a person chatting, a
test suite): the runs after it are estimated from a speed the first run did not have alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.events import HEARTBEAT, JOB, read_json, read_metrics  # noqa: E402
from studio import method_service  # noqa: E402
from studio.core import Studio  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--method", default="lora")
    ap.add_argument("--dataset", default="quillpad_faq", help="a bundled sample's name, or a file to import")
    ap.add_argument("--batch", type=int, default=None, help="rows per step (default: the method's)")
    ap.add_argument("--beside-first", type=int, default=0, help="CPU-spinning processes beside the first run")
    ap.add_argument("--home", default=None, help="a workspace (default: a new one; the model is converted once)")
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="run-time-"))
    studio = Studio(home)
    studio.resolve_model("default")  # converted before anything is timed
    params = {"num_train_epochs": args.epochs}
    if args.batch:
        params["per_device_train_batch_size"] = args.batch
    dataset = studio.import_dataset(Path(args.dataset))["id"] if Path(args.dataset).is_file() else args.dataset
    print(f"{args.method} on {dataset}, {args.epochs:g} epochs, batch {args.batch or 'default'}")
    print(f"{'run':>3} {'actual s':>9} {'training s':>10} {'training-only est':>18} {'ratio':>6} "
          f"{'from-Start est':>15} {'ratio':>6}")
    for n in range(args.runs):
        est = method_service.estimate(studio, "default", args.method, params, dataset)
        training = est.seconds_per_epoch * args.epochs + est.eval_seconds
        past = method_service.past_runs(studio, "default", args.method)
        shown = method_service.calibrated(est, past)
        overhead = past.overhead_s
        whole = shown.seconds_per_epoch * args.epochs + shown.eval_seconds + (overhead or 0)
        spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    for _ in range(args.beside_first if n == 0 else 0)]
        run_id = studio.start_run(model="default", dataset=dataset, method=args.method, params=params)
        row = studio.wait(run_id, poll_s=0.2)
        for spin in spinning:
            spin.kill()
            spin.wait()
        assert row["status"] == "completed", row["error"]
        folder = studio.run_dir(run_id)
        actual = row["finished"] - read_json(folder / JOB)["queued_at"]
        trained = (max(m["time"] for m in read_metrics(folder) if "time" in m)
                   - read_json(folder / HEARTBEAT)["training_since"])
        told = f"{whole:15.1f} {actual / whole:6.2f}" if overhead else f"{'-':>15} {'-':>6}"
        print(f"{n + 1:>3} {actual:9.1f} {trained:10.1f} {training:18.1f} {trained / training:6.2f} {told}",
              flush=True)


if __name__ == "__main__":
    main()
