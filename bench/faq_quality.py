"""Quality bar: does the default LoRA recipe teach the default model the sample FAQ?

Trains the embedded SmolLM2-135M-Instruct on assets/samples/quillpad_faq.jsonl with the
LoRA defaults (through Studio.start_run, the same path as the UI), then asks base and tuned
model the 40 held-out paraphrased questions (never trained on) and counts answers that
contain the fact's keyword. Baseline: the untuned base model, measured in the same run.

    python bench/faq_quality.py [--home DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import generation  # noqa: E402
from studio.core import Studio  # noqa: E402

HELDOUT = ROOT / "assets" / "samples" / "quillpad_faq_heldout.jsonl"


def score(model, tokenizer, items) -> tuple[int, list[str]]:
    hits, replies = 0, []
    for item in items:
        text = generation.reply(model, tokenizer, [{"role": "user", "content": item["question"]}],
                                max_new_tokens=48)
        replies.append(text)
        hits += item["keyword"].lower() in text.lower()
    return hits, replies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=None)
    ap.add_argument("--set", nargs="*", default=[], help="parameter overrides, key=value")
    ap.add_argument("--run", help="score an existing completed run instead of training")
    args = ap.parse_args()
    studio = Studio(args.home or tempfile.mkdtemp(prefix="faq-bench-"), standby=False)
    params = dict(kv.split("=", 1) for kv in args.set)
    items = [json.loads(line) for line in HELDOUT.read_text().splitlines()]

    run_id, train_s = args.run, None
    if run_id is None:
        studio.resolve_model("default")  # conversion is not training time
        t0 = time.time()
        run_id = studio.start_run(model="default", dataset="quillpad_faq", method="lora", params=params)
        row = studio.wait(run_id, poll_s=2)
        train_s = time.time() - t0
        if row["status"] != "completed":
            sys.exit(f"run {run_id} {row['status']}: {row['error']}")
    summary = json.loads((studio.run_dir(run_id) / "status.json").read_text()).get("summary", {})

    base, tok = generation.load_for_chat("default", studio.model_cache)
    base_hits, _ = score(base, tok, items)
    tuned, tok = generation.load_for_chat("default", studio.model_cache, studio.adapter_dir(run_id))
    t0 = time.time()
    tuned_hits, replies = score(tuned, tok, items)
    gen_s = time.time() - t0

    for item, text in list(zip(items, replies))[:5]:
        print(f"Q: {item['question']}\n   tuned: {text}")
    print(f"run {run_id} params={params or 'defaults'}")
    print(f"held-out loss: before {summary.get('eval_loss_before', float('nan')):.3f} "
          f"after {summary.get('eval_loss_after', float('nan')):.3f}")
    wall = f"{train_s / 60:.1f} min training" if train_s else "existing run"
    print(f"held-out paraphrases answered correctly: base {base_hits}/{len(items)}, "
          f"tuned {tuned_hits}/{len(items)} ({wall}, {gen_s:.0f} s to answer 40)")
    print(f"ratio tuned/base correct: {tuned_hits / max(base_hits, 1):.1f}x (baseline: untuned base model)")


if __name__ == "__main__":
    main()
