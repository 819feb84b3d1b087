"""Quality bar and cost of export: a LoRA run on the sample FAQ, merged into its base and written
as GGUF F32, F16, Q8_0 and Q4_0. transformers' own GGUF loader reads each file back; greedy replies to
the 40 held-out FAQ questions are compared token by token with the run's (base + adapter, the
baseline, measured in the same run), with the largest difference of the first reply token's logits.
Prints export time and file sizes, each against the merged safetensors folder.

    python bench/export_quality.py [--home DIR] [--run RUN_ID] [--questions N]

Without --run it trains the Train tab's Quick first run recipe first (LoRA, 3 epochs, ~2 min here).
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

from pipelines import generation, models  # noqa: E402
from pipelines.export import gguf  # noqa: E402
from pipelines.export.merge import folder_bytes, merge_adapter  # noqa: E402
from studio.core import Studio  # noqa: E402

HELDOUT = ROOT / "assets" / "samples" / "quillpad_faq_heldout.jsonl"
QUICK_RUN = {"num_train_epochs": 3.0, "learning_rate": 3e-3}  # components/train_tab.py QUICK_RUN


def replies(model, tokenizer, questions, max_new_tokens=48) -> tuple[list[list[int]], list]:
    """Greedy reply tokens per question, and the first step's logits."""
    import torch

    tokens, first = [], []
    for question in questions:
        inputs = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            first.append(model(**inputs).logits[0, -1].float())
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        tokens.append(out[0, inputs["input_ids"].shape[1]:].tolist())
    return tokens, first


def gap_at(model, tokenizer, question: str, reply: list[int], k: int) -> float:
    """How sure the baseline was of its token k: its top-1 minus top-2 logit there (a small gap is
    a near tie, which the rounding of any file format may tip)."""
    import torch

    inputs = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    ids = torch.cat([inputs["input_ids"], torch.tensor([reply[:k]], dtype=torch.long)], dim=1)
    with torch.inference_mode():
        top = model(input_ids=ids).logits[0, -1].float().topk(2).values
    return (top[0] - top[1]).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=None)
    ap.add_argument("--run", help="an existing completed LoRA run instead of training one")
    ap.add_argument("--questions", type=int, default=40)
    args = ap.parse_args()
    studio = Studio(args.home or tempfile.mkdtemp(prefix="export-bench-"), standby=False)
    questions = [json.loads(line)["question"] for line in HELDOUT.read_text().splitlines()][:args.questions]
    run_id = args.run
    if run_id is None:
        studio.resolve_model("default")
        run_id = studio.start_run(model="default", dataset="quillpad_faq", method="lora", params=QUICK_RUN)
        row = studio.wait(run_id, poll_s=2)
        if row["status"] != "completed":
            sys.exit(f"run {run_id} {row['status']}: {row['error']}")
    base_spec, adapter = studio.tuned_model(run_id)
    base = models.resolve(base_spec, studio.model_cache)
    out = Path(tempfile.mkdtemp(prefix="export-out-"))

    t0 = time.time()
    merge_adapter(base, adapter, out / "merged")
    merge_s = time.time() - t0
    files, seconds = {}, {}
    for quant in ("f32", "f16", "q8_0", "q4_0"):
        t0 = time.time()
        files[quant] = Path(gguf.write_gguf(out / "merged", out / f"faq-{quant}.gguf", quant=quant)["file"])
        seconds[quant] = time.time() - t0

    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()

    tuned, tokenizer = generation.load_for_chat(base_spec, studio.model_cache, adapter)
    reference, ref_first = replies(tuned, tokenizer, questions)
    loaded = {"merged": lambda: AutoModelForCausalLM.from_pretrained(out / "merged")}
    for quant, path in files.items():
        loaded[f"gguf {quant}"] = lambda path=path: AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)

    merged_bytes = folder_bytes(out / "merged")
    print(f"LoRA run {run_id} on quillpad_faq, {len(questions)} held-out questions, greedy, 48 new tokens")
    print(f"baseline: base + adapter (PEFT), the run as the studio's chat answers")
    print(f"{'model':<12} {'identical':>10} {'same 1st tok':>13} {'max |dlogit|':>13} {'write s':>8} "
          f"{'MB':>8} {'size vs merged':>15}")
    for name, load in loaded.items():
        model = load().eval()
        got, first = replies(model, tokenizer, questions)
        del model
        same = sum(a == b for a, b in zip(got, reference))
        same_first = sum(a[:1] == b[:1] for a, b in zip(got, reference))
        # where differing replies part: the index of the first differing token
        parted = sorted((next(i for i, (x, y) in enumerate(zip(a + [-1], b + [-2])) if x != y), q)
                        for q, (a, b) in enumerate(zip(got, reference)) if a != b)
        gaps = [round(gap_at(tuned, tokenizer, questions[q], reference[q], k), 3) for k, q in parted[:5]]
        parted = [k for k, _q in parted]
        diff = max((a - b).abs().max().item() for a, b in zip(first, ref_first))
        quant = name.removeprefix("gguf ")
        size = files[quant].stat().st_size if quant in files else merged_bytes
        spent = seconds.get(quant, merge_s)
        print(f"{name:<12} {same:>6}/{len(questions):<3} {same_first:>9}/{len(questions):<3} {diff:>13.4f} "
              f"{spent:>8.1f} {size / 1e6:>8.1f} {size / merged_bytes:>14.2f}x"
              + (f"   differing replies part at token {parted}; baseline's top-2 logit gap there "
                 f"(first 5): {gaps}" if parted else ""))
    print(f"merged folder written in {merge_s:.1f} s ({merged_bytes / 1e6:.1f} MB, "
          f"{json.loads((out / 'merged' / 'config.json').read_text()).get('dtype', '?')})")
    print(f"files in {out}")


if __name__ == "__main__":
    main()
