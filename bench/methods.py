"""Every method on the default model and the sample FAQ (preference methods: the sign-off pairs):
predicted against measured peak memory and the run's time (its steps and its passes over the
held-out rows), plus what each run achieved.

Baseline for the memory and time columns: the estimate the Method tab shows before launch
(pipelines/estimates.py), printed beside the measurement and its error. Each method trains in
its own process (peak memory = that process's peak resident set, VmHWM), with its default
settings for --epochs epochs, measured on the sample's held-out rows before and after.

    python bench/methods.py [--epochs 1] [--only lora,qlora] [--home DIR] [--save runs.jsonl]
    python bench/methods.py --replay runs.jsonl   # the saved runs against the current estimates
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import data, dataset_stats, estimates, importer, models  # noqa: E402
from pipelines.methods import METHODS, ConfigError  # noqa: E402

FAQ = ROOT / "assets" / "samples" / "quillpad_faq.jsonl"
PAIRS = ROOT / "assets" / "samples" / "signoff_preferences.jsonl"
GB = 1024**3


def dataset(home: Path, key: str = "lora") -> Path:
    """The sample a method trains on: the FAQ for SFT methods, the sign-off preference pairs for DPO,
    ORPO, SimPO and CPO (one in five held out)."""
    pairs = METHODS[key].data_kind == "preference"
    source, folder, heldout = (PAIRS, "pairs", 0.2) if pairs else (FAQ, "faq", 0.1)
    parquet = home / folder / importer.DATA
    if not parquet.exists():
        importer.import_file(source, parquet.parent, importer.ImportOptions(heldout=heldout, seed=0))
    return parquet


def worker(key: str, home: Path, epochs: float) -> None:
    """One run in this process; prints one JSON line."""
    from pipelines import train_pref, train_sft
    from pipelines.events import RunEvents, read_metrics

    parquet = dataset(home, key)
    build_trainer = (train_pref if METHODS[key].runner == "pipelines.train_pref" else train_sft).build_trainer
    run_dir = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=home))
    job = {"method": key, "model": "default", "model_cache": str(home / "models"),
           "dataset": {"path": str(parquet), "heldout_path": str(parquet.with_name(importer.HELDOUT))},
           "params": {"num_train_epochs": epochs, "save_steps": 100000}}
    trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
    start = time.time()  # the run's first held-out pass is part of its time, as in a studio run
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    train_s = time.time() - start
    after = trainer.evaluate()["eval_loss"]
    rates = [m["tokens_per_s"] for m in read_metrics(run_dir) if "tokens_per_s" in m][1:]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    print(json.dumps({"key": key, "before": before, "after": after, "train_s": train_s,
                      "s_per_epoch": train_s / epochs, "tokens_per_s": statistics.median(rates) if rates else 0,
                      "trainable": trainable, "steps": trainer.state.global_step,
                      "peak": peak_rss()}))


def peak_rss() -> int:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that over from
    the parent across fork and exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--only", default="", help="comma-separated method keys")
    ap.add_argument("--home")
    ap.add_argument("--save", help="append each run's measurements to this JSON-lines file")
    ap.add_argument("--replay", help="print the table from saved runs (no training) against today's estimates")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="methods-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args.worker, home, args.epochs)

    model_path = str(models.resolve("default", home / "models"))
    tokenizer = models.load_tokenizer(model_path)
    samples = {}  # data folder -> (training rows' token lengths, held-out rows)
    for key in ("lora", "dpo"):
        parquet = dataset(home, key)
        samples[parquet] = (dataset_stats.token_lengths(data.load_rows(parquet), tokenizer),
                            dataset_stats.count_rows(parquet.with_name(importer.HELDOUT)))
    saved = {}
    if args.replay:
        saved = {r["key"]: r for r in map(json.loads, Path(args.replay).read_text().splitlines())}
    # SFT methods and the preference methods that learn from pairs (KTO's thumbs, reward models and
    # reinforcement learning have no sample here)
    keys = [k for k in args.only.split(",") if k] or (list(saved) if saved else [
        k for k, m in METHODS.items() if m.data_kind == "sft" or m.runner == "pipelines.train_pref"
        and m.data_kind == "preference"])
    (faq, faq_held), (pairs, pairs_held) = samples[dataset(home, "lora")], samples[dataset(home, "dpo")]
    print(f"default model (SmolLM2-135M-Instruct); SFT methods on quillpad_faq ({len(faq)} training rows, {faq_held} "
          f"held out), preference methods on signoff_preferences ({len(pairs)} pairs, {pairs_held} held out); "
          f"{args.epochs:g} epoch(s) at each method's defaults; memory = peak RSS of the run's process")
    head = (f"{'method':<11}{'trainable':>12}{'tok/s':>7}{'peak GB':>9}{'predicted':>10}{'error':>8}"
            f"{'held-out before→after':>24}{'run s pred/meas':>17}")
    print(head, flush=True)
    errors, time_errors = [], []
    for key in keys:
        if key not in METHODS:
            print(f"{key:<11} no such method", flush=True)
            continue
        lengths, held_out = samples[dataset(home, key)]
        try:
            est = estimates.estimate(model_path, key, {"num_train_epochs": args.epochs}, lengths=lengths,
                                     eval_rows=held_out)
        except ConfigError as err:  # a method the default model cannot train (ESFT: it has no experts)
            print(f"{key:<11} not for this model: {err}", flush=True)
            continue
        if saved:
            r = saved[key]
        else:
            proc = subprocess.run([sys.executable, __file__, "--worker", key, "--home", str(home),
                                   "--epochs", str(args.epochs)], capture_output=True, text=True, cwd=ROOT)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not lines:
                print(f"{key:<11} FAILED: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            r = json.loads(lines[-1])
            if args.save:
                with open(args.save, "a") as f:
                    f.write(json.dumps(r) + "\n")
        error = (est.peak_bytes - r["peak"]) / r["peak"]
        errors.append(abs(error))
        # the run's time: its steps and its passes over the held-out rows (the first one included)
        predicted_s = est.seconds_per_epoch * args.epochs + est.eval_seconds
        time_errors.append(abs(predicted_s - r["train_s"]) / r["train_s"])
        print(f"{key:<11}{r['trainable'] / 1e6:>10.3f}M{r['tokens_per_s']:>7.0f}{r['peak'] / GB:>9.2f}"
              f"{est.peak_bytes / GB:>10.2f}{100 * error:>+7.0f}%{r['before']:>13.3f} → {r['after']:<8.3f}"
              f"{predicted_s:>10.0f}/{r['train_s']:<6.0f}", flush=True)
    if errors:
        print(f"peak memory, predicted vs measured: mean |error| {100 * statistics.mean(errors):.1f}%, "
              f"max {100 * max(errors):.1f}% over {len(errors)} methods (target: within 15%)")
        print(f"run time, predicted vs measured: mean |error| {100 * statistics.mean(time_errors):.0f}%, "
              f"max {100 * max(time_errors):.0f}%")


if __name__ == "__main__":
    main()
