"""Quality bar: does a run on conversations of several replies learn the replies before the last?

The sample FAQ's 40 facts, three phrasings each, are paired into 60 two-reply conversations: the even
facts only ever as the first reply, the odd ones only as the second. The embedded SmolLM2-135M-Instruct
is trained with the quick run's LoRA recipe twice on the same conversations, through the studio's own
trainer (pipelines.train_sft.build_trainer):

  baseline: TRL's prompt/completion conversion (the turns before the last reply are context), as the
            studio trained before pipelines/conversation.py
  studio:   every reply learned (pipelines/conversation.py)

Then each tuned model is asked the 40 held-out paraphrased questions (assets/samples/
quillpad_faq_heldout.jsonl, never trained on, one question alone) and the answers holding the fact's
keyword are counted, for the first-reply facts and the second-reply facts apart.

    python bench/multi_turn_quality.py [--epochs 3] [--lr 3e-3]
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

from pipelines import data, generation, importer  # noqa: E402
from pipelines.events import RunEvents  # noqa: E402
from pipelines.train_sft import build_trainer  # noqa: E402

FAQ = ROOT / "assets" / "samples" / "quillpad_faq.jsonl"
HELDOUT = ROOT / "assets" / "samples" / "quillpad_faq_heldout.jsonl"
PHRASINGS = 3


def conversations() -> list[dict]:
    rows = [json.loads(line)["messages"] for line in FAQ.read_text().splitlines()]
    facts = [rows[i:i + PHRASINGS] for i in range(0, len(rows), PHRASINGS)]
    return [{"messages": [*facts[f][p], *facts[f + 1][p]]} for f in range(0, len(facts), 2) for p in range(PHRASINGS)]


def train(home: Path, every_reply: bool, params: dict):
    folder = home / ("studio" if every_reply else "baseline")
    source = folder / "chats.jsonl"
    folder.mkdir(parents=True)
    source.write_text("".join(json.dumps(c) + "\n" for c in conversations()))
    importer.import_file(source, folder / "ds")
    run_dir = folder / "run"
    run_dir.mkdir()
    job = {"method": "lora", "model": "default", "model_cache": str(home / "models"),
           "dataset": {"path": str(folder / "ds" / importer.DATA)}, "params": params}
    kept = data.multi_reply
    data.multi_reply = (lambda _dataset: None) if not every_reply else kept  # the baseline: TRL's conversion
    try:
        trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    finally:
        data.multi_reply = kept
    t0 = time.time()
    trainer.train()
    return trainer.model.eval(), tokenizer, time.time() - t0


def score(model, tokenizer, items) -> tuple[int, int]:
    """(first-reply facts answered, second-reply facts answered) of the held-out questions."""
    hits = [0, 0]
    for i, item in enumerate(items):
        text = generation.reply(model, tokenizer, [{"role": "user", "content": item["question"]}], max_new_tokens=48)
        hits[i % 2] += item["keyword"].lower() in text.lower()
    return hits[0], hits[1]


def quick_recipe(prefix: str) -> tuple[dict, list[dict], Path]:
    """(the quick run's LoRA parameters, or --epochs/--lr; the 40 held-out questions; a new workspace): what the
    benches that train the built-in model twice on conversations share."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=3.0)  # the quick run's recipe (components/train_tab.QUICK_RUN)
    ap.add_argument("--lr", type=float, default=3e-3)
    args = ap.parse_args()
    params = {"num_train_epochs": args.epochs, "learning_rate": args.lr, "eval_fraction": 0.0}
    items = [json.loads(line) for line in HELDOUT.read_text().splitlines()]
    return params, items, Path(tempfile.mkdtemp(prefix=prefix))


def main() -> None:
    params, items, home = quick_recipe("multi-turn-bench-")
    found = {}
    for every_reply in (False, True):
        model, tokenizer, seconds = train(home, every_reply, params)
        found[every_reply] = score(model, tokenizer, items)
        name = "studio (every reply)" if every_reply else "baseline (last reply only)"
        print(f"{name}: trained {seconds / 60:.1f} min; held-out questions answered: first-reply facts "
              f"{found[every_reply][0]}/20, second-reply facts {found[every_reply][1]}/20", flush=True)
    base, studio = found[False][0], found[True][0]
    print(f"first-reply facts answered, studio/baseline: {studio}/{base} = {studio / max(base, 1):.1f}x "
          f"(baseline: TRL's prompt/completion conversion of the same conversations, same run)")


if __name__ == "__main__":
    main()
