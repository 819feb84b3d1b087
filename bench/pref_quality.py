"""Quality bar for preference tuning: does DPO with the studio's defaults teach the built-in model a
trait that only the preferred answers carry, keeping what the answers say?

Data: assets/samples/signoff_preferences.jsonl (assets/make_signoff.py): the chosen answer is the
base model's own greedy answer plus a sign-off line, the rejected one the same answer without it.
Held out: 20 requests of another phrasing, never trained on.

In one run, on the same data and machine:
  studio   `studio train` with method dpo and no parameter set (the studio's defaults)
  trl      a plain TRL script: DPOTrainer with its own defaults and a LoRA adapter (r 16, all linear
           layers), run as its own process
then base, studio and TRL models answer the held-out requests greedily; printed: the share of
replies that carry the sign-off, the share whose answer (sign-off removed) starts as the base's
did, held-out keyword hits, and wall times with the ratios.

    python bench/pref_quality.py [--home DIR] [--skip-trl]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import generation  # noqa: E402

PAIRS = ROOT / "assets" / "samples" / "signoff_preferences.jsonl"
HELDOUT = ROOT / "assets" / "samples" / "signoff_heldout.jsonl"
TRAIT = "Quill team"
MAX_NEW_TOKENS = 128


def trl_script(model_path: str, out_dir: str) -> None:
    """The baseline: what a TRL user writes from TRL's DPO + PEFT documentation."""
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("json", data_files=str(PAIRS), split="train")
    args = DPOConfig(output_dir=out_dir, report_to="none", use_cpu=True)
    peft = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model_path, args=args, train_dataset=dataset, peft_config=peft)
    trainer.train()
    trainer.save_model(out_dir + "/adapter")


def first_words(text: str, n: int = 8) -> str:
    return " ".join(text.replace(TRAIT, "").split()[:n]).lower()


def score(model, tokenizer, items, base_replies=None) -> dict:
    replies = [generation.reply(model, tokenizer, [{"role": "user", "content": it["prompt"]}],
                                max_new_tokens=MAX_NEW_TOKENS) for it in items]
    keyed = [(it, r) for it, r in zip(items, replies) if it["keyword"]]
    out = {"replies": replies, "trait": sum(TRAIT in r for r in replies) / len(replies),
           "keyword": sum(any(k.lower() in r.lower() for k in it["keyword"].split("|")) for it, r in keyed)
           / len(keyed)}
    if base_replies is not None:
        out["same_start"] = sum(first_words(r) == first_words(b) for r, b in zip(replies, base_replies)) / len(replies)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=None)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--trl-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trl_child:
        trl_script(*args.trl_child)
        return
    from studio.core import Studio

    home = Path(args.home or tempfile.mkdtemp(prefix="pref-bench-"))
    studio = Studio(home, standby=False)
    model_path = studio.resolve_model("default")  # conversion is not training time
    items = [json.loads(line) for line in HELDOUT.read_text().splitlines()]

    config = home / "dpo.yaml"
    config.write_text(f"model: default\nmethod: dpo\ndataset: {PAIRS}\n")
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", "import sys; from studio.cli import main; sys.exit(main())",
                           "train", str(config), "--wait", "--home", str(home)],
                          cwd=ROOT, capture_output=True, text=True)
    studio_s = time.time() - t0
    if done.returncode != 0:
        sys.exit(f"studio train failed: {done.stderr[-2000:]}")
    run_id = done.stdout.split()[0]
    summary = json.loads((studio.run_dir(run_id) / "status.json").read_text()).get("summary", {})

    trl_s = None
    if not args.skip_trl:
        trl_dir = str(home / "trl")
        t0 = time.time()
        subprocess.run([sys.executable, __file__, "--trl-child", model_path, trl_dir], cwd=ROOT, check=True,
                       capture_output=True)
        trl_s = time.time() - t0

    base, tok = generation.load_for_chat("default", studio.model_cache)
    results = {"base": score(base, tok, items)}
    tuned, _ = generation.load_for_chat("default", studio.model_cache, studio.adapter_dir(run_id))
    results["studio"] = score(tuned, tok, items, results["base"]["replies"])
    if trl_s is not None:
        trl_model, _ = generation.load_for_chat("default", studio.model_cache, Path(trl_dir) / "adapter")
        results["trl"] = score(trl_model, tok, items, results["base"]["replies"])

    print(f"held-out requests: {len(items)} (never trained on); trait = a reply containing '{TRAIT}'")
    print(f"{'model':<8} {'trait':>6} {'same start as base':>19} {'keyword hits':>13} {'train wall s':>13}")
    walls = {"base": None, "studio": studio_s, "trl": trl_s}
    for name, r in results.items():
        wall = f"{walls[name]:.0f}" if walls[name] else "-"
        same = f"{100 * r['same_start']:.0f}%" if "same_start" in r else "-"
        print(f"{name:<8} {100 * r['trait']:>5.0f}% {same:>19} {100 * r['keyword']:>12.0f}% {wall:>13}")
    if trl_s is not None:
        print(f"studio / trl wall time: {studio_s / trl_s:.2f}x (below 1 = the studio is faster); trait "
              f"{100 * results['studio']['trait']:.0f}% vs {100 * results['trl']['trait']:.0f}%")
    print(f"studio run {run_id}: {summary}")
    for item, b, s in list(zip(items, results["base"]["replies"], results["studio"]["replies"]))[:3]:
        print(f"\n> {item['prompt']}\nbase:   {b!r}\nstudio: {s!r}")


if __name__ == "__main__":
    main()
