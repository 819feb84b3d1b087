"""Training throughput of LoRA SFT on the default model: bf16 autocast against fp32.

Baseline: the same LoRA run in plain fp32, measured in the same process. Prints the median
tokens/s of each (first step skipped as warm-up) and the ratio.

    python bench/train_speed.py [--steps-epochs 0.5] [--home DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import importer  # noqa: E402
from pipelines.events import RunEvents, read_metrics  # noqa: E402
from pipelines.train_sft import build_trainer  # noqa: E402
from studio.core import Studio  # noqa: E402

FAQ = ROOT / "assets" / "samples" / "quillpad_faq.jsonl"


def measure(studio: Studio, bf16: bool, epochs: float, extra: dict) -> float:
    os.environ["STUDIO_BF16"] = "1" if bf16 else "0"
    run_dir = Path(tempfile.mkdtemp(prefix="speed-", dir=studio.home))
    parquet = run_dir / "ds" / importer.DATA
    importer.import_file(FAQ, parquet.parent)
    job = {"method": "lora", "model": "default", "model_cache": str(studio.model_cache),
           "dataset": {"path": str(parquet)},
           "params": {"num_train_epochs": epochs, "eval_fraction": 0.0, **extra}}
    trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
    t0 = time.time()
    trainer.train()
    rates = [m["tokens_per_s"] for m in read_metrics(run_dir) if "tokens_per_s" in m][1:]
    print(f"  {'bf16 autocast' if bf16 else 'fp32'}: {len(rates) + 1} steps in {time.time() - t0:.0f} s, "
          f"median {statistics.median(rates):.0f} tokens/s", flush=True)
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=0.5)
    ap.add_argument("--home")
    ap.add_argument("--set", nargs="*", default=[], help="parameter overrides, key=value")
    args = ap.parse_args()
    studio = Studio(args.home or tempfile.mkdtemp(prefix="speed-bench-"), standby=False)
    studio.resolve_model("default")
    extra = dict(kv.split("=", 1) for kv in args.set)
    print(f"LoRA SFT on smollm2-135m-instruct, quillpad_faq, {args.epochs} epoch, params {extra or 'defaults'}")
    fp32 = measure(studio, False, args.epochs, extra)
    bf16 = measure(studio, True, args.epochs, extra)
    print(f"bf16 autocast vs fp32 (baseline): {bf16 / fp32:.2f}x tokens/s")


if __name__ == "__main__":
    main()
