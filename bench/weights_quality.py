"""Quality bar: does a reply marked `"weight": 0` (OpenAI's fine-tuning format) stay out of what is learned?

OpenAI's format marks a reply that should stay context with weight 0: a conversation that shows a bad answer,
the user's correction, then the good answer. Here the sample FAQ's 120 questions each become such a
conversation: the question, a brush-off marked weight 0 ("I'm not sure, sorry. Please check the manual."),
"Could you look it up?", then the FAQ's answer. The embedded SmolLM2-135M-Instruct is trained with the quick
run's LoRA recipe twice on the same conversations, through the studio's own import and trainer:

  baseline: the file without its weights (what the studio did before it read them: every reply learned, the
            brush-off too)
  studio:   the file as written (the brush-off kept as context)

Then each tuned model is asked the 40 held-out paraphrased questions (assets/samples/quillpad_faq_heldout.jsonl,
never trained on, one question alone): answers holding the fact's keyword are counted, and answers that brush
the question off ("not sure" / "check the manual").

    python bench/weights_quality.py [--epochs 3] [--lr 3e-3]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.multi_turn_quality import quick_recipe  # noqa: E402  (its recipe and held-out questions)
from pipelines import generation, importer  # noqa: E402
from pipelines.events import RunEvents  # noqa: E402
from pipelines.train_sft import build_trainer  # noqa: E402

FAQ = ROOT / "assets" / "samples" / "quillpad_faq.jsonl"
BRUSH_OFF = "I'm not sure, sorry. Please check the manual."
BRUSHED = ("not sure", "check the manual")


def conversations(weighted: bool) -> list[dict]:
    out = []
    for line in FAQ.read_text().splitlines():
        question, answer = json.loads(line)["messages"]
        brush = {"role": "assistant", "content": BRUSH_OFF, **({"weight": 0} if weighted else {})}
        out.append({"messages": [question, brush, {"role": "user", "content": "Could you look it up?"}, answer]})
    return out


def train(home: Path, weighted: bool, params: dict):
    folder = home / ("studio" if weighted else "baseline")
    source = folder / "chats.jsonl"
    folder.mkdir(parents=True)
    source.write_text("".join(json.dumps(c) + "\n" for c in conversations(weighted)))
    meta = importer.import_file(source, folder / "ds")
    run_dir = folder / "run"
    run_dir.mkdir()
    job = {"method": "lora", "model": "default", "model_cache": str(home / "models"),
           "dataset": {"path": str(folder / "ds" / importer.DATA)}, "params": params}
    trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    t0 = time.time()
    trainer.train()
    return trainer.model.eval(), tokenizer, time.time() - t0, meta


def score(model, tokenizer, items) -> tuple[int, int]:
    """(held-out questions answered with the fact, answered with a brush-off)."""
    right = brushed = 0
    for item in items:
        text = generation.reply(model, tokenizer, [{"role": "user", "content": item["question"]}],
                                max_new_tokens=48).lower()
        right += item["keyword"].lower() in text
        brushed += any(b in text for b in BRUSHED)
    return right, brushed


def main() -> None:
    params, items, home = quick_recipe("weights-bench-")
    found = {}
    for weighted in (False, True):
        model, tokenizer, seconds, meta = train(home, weighted, params)
        found[weighted] = score(model, tokenizer, items)
        name = "studio (weight 0 kept as context)" if weighted else "baseline (weights dropped)"
        print(f"{name}: {meta['context_replies']} replies kept as context; trained {seconds / 60:.1f} min; "
              f"held-out questions: {found[weighted][0]}/40 answered with the fact, {found[weighted][1]}/40 "
              "brushed off", flush=True)
    print(f"brush-offs, baseline/studio: {found[False][1]}/{found[True][1]}; facts, studio/baseline: "
          f"{found[True][0]}/{found[False][0]} (baseline: the same file without its weights, same run)")


if __name__ == "__main__":
    main()
