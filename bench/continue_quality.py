"""Quality bar: Continue training keeps what a run learned instead of knocking it off first.

A LoRA run with the Quick first run recipe (3 epochs at 3e-3 on the bundled FAQ) on the embedded
SmolLM2-135M-Instruct, then one more epoch of it (Studio.continue_run, the page's *Continue training*)
twice: the baseline as runs were before (a fresh optimizer at the full learning rate from the first
step, STUDIO_CONTINUE_WARMUP=0) and the studio's (the learning rate climbing over the first 10% of
steps). Prints each run's training loss over its first steps, its held-out loss first and last, and how
many of the 40 held-out paraphrased FAQ questions each model answers with the fact's keyword.
`--also 0.3,0.5` tries other shares of warm-up steps beside them.

    python bench/continue_quality.py [--epochs 1] [--also 0.3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.faq_quality import HELDOUT, score  # noqa: E402
from pipelines import generation  # noqa: E402
from pipelines.events import read_metrics  # noqa: E402
from studio.core import Studio  # noqa: E402

QUICK_RUN = {"num_train_epochs": 3.0, "learning_rate": 3e-3}  # components/train_tab.py QUICK_RUN
STUDIO = "continued, studio (its warm-up)"


def curve(studio, run_id) -> tuple[list[float], list[float]]:
    """(training loss per step, held-out loss: before training (step 0), then at each check)."""
    metrics = read_metrics(studio.run_dir(run_id))
    losses = [m["loss"] for m in metrics if "loss" in m]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    return losses, evals


def hits(studio, run_id, items) -> int:
    model, tokenizer = generation.load_for_chat("default", studio.model_cache, studio.adapter_dir(run_id))
    return score(model, tokenizer, items)[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--also", default="", help="other warm-up shares to try, e.g. 0.3,0.5")
    args = ap.parse_args()
    studio = Studio(tempfile.mkdtemp(prefix="continue-bench-"), standby=False)
    items = [json.loads(line) for line in HELDOUT.read_text().splitlines()]
    studio.resolve_model("default")
    parent = studio.start_run(model="default", dataset="quillpad_faq", method="lora", params=QUICK_RUN)
    row = studio.wait(parent, poll_s=2)
    if row["status"] != "completed":
        sys.exit(f"parent {parent} {row['status']}: {row['error']}")
    runs = {"parent (quick first run)": parent}
    tried = [("continued, baseline (no warm-up)", "0"), (STUDIO, None)]
    tried += [(f"continued, warm-up {float(w):.0%}", w) for w in args.also.split(",") if w]
    for name, warmup in tried:
        if warmup is None:
            os.environ.pop("STUDIO_CONTINUE_WARMUP", None)
        else:
            os.environ["STUDIO_CONTINUE_WARMUP"] = warmup
        child = studio.continue_run(parent, args.epochs)
        row = studio.wait(child, poll_s=2)
        if row["status"] != "completed":
            sys.exit(f"{name} {child} {row['status']}: {row['error']}")
        runs[name] = child
    os.environ.pop("STUDIO_CONTINUE_WARMUP", None)
    results = {}
    for name, run_id in runs.items():
        losses, evals = curve(studio, run_id)
        results[name] = (losses, evals, hits(studio, run_id, items))
        print(f"{name:36s} {run_id}: training loss steps 1-4 {', '.join(f'{x:.3f}' for x in losses[:4])}; "
              f"held-out loss before {evals[0]:.3f}, first check {evals[1]:.3f}, last {evals[-1]:.3f}; "
              f"FAQ keyword hits {results[name][2]}/40", flush=True)
    base, ours = results["continued, baseline (no warm-up)"], results[STUDIO]
    print(f"held-out loss at the end: baseline {base[1][-1]:.3f}, studio {ours[1][-1]:.3f} (ratio baseline / studio "
          f"{base[1][-1] / ours[1][-1]:.1f}x; the parent ended at {results['parent (quick first run)'][1][-1]:.3f}); "
          f"FAQ keyword hits: baseline {base[2]}/40, studio {ours[2]}/40, parent "
          f"{results['parent (quick first run)'][2]}/40")
    return 0


if __name__ == "__main__":
    sys.exit(main())
