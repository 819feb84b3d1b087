"""Quality bar for GRPO: on a task the built-in model half-solves, does the share of held-out prompts
whose greedy reply earns full reward rise over the base?

Data: assets/samples/arithmetic_prompts.jsonl (training prompts with their answers) and
arithmetic_prompts_heldout.jsonl (never trained on), written by assets/make_rl_samples.py; the
rewards are the ones the sample is made for (assets/README.md). Baseline: the base model's greedy
replies to the held-out prompts, scored by the same reward functions, in the same run.

    python bench/grpo_quality.py [--home DIR] [--method grpo|rloo] [--epochs N] [--lr X] [--set NAME=VALUE]
                                 [--baseline NAME=VALUE]   # a baseline run first, these settings changed

Passes over each batch of replies, against one pass on twice the batches (the same steps):
    python bench/grpo_quality.py --epochs 1.5 --set temperature=0.7 --set num_iterations=2 \
        --baseline num_train_epochs=3 --baseline num_iterations=1
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

from pipelines import generation, rewards  # noqa: E402

SAMPLES = ROOT / "assets" / "samples"
TRAIN = SAMPLES / "arithmetic_prompts.jsonl"
HELDOUT = SAMPLES / "arithmetic_prompts_heldout.jsonl"
REWARDS = json.loads((SAMPLES / "arithmetic_rewards.json").read_text())  # the sample's reward list


def full_reward_share(model, tokenizer, rows, entries, max_new_tokens: int) -> tuple[float, list[str], dict]:
    """Share of rows whose greedy reply scores 1 on every reward function; the replies; each
    function's mean."""
    replies = [generation.reply(model, tokenizer, [{"role": "user", "content": r["prompt"]}],
                                max_new_tokens=max_new_tokens) for r in rows]
    funcs, _weights = rewards.trl_functions(entries)
    completions = [[{"role": "assistant", "content": a}] for a in replies]
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    scores = {f.__name__: f(prompts=prompts, completions=completions, answer=[r["answer"] for r in rows])
              for f in funcs}
    full = sum(all(s[i] >= 1.0 for s in scores.values()) for i in range(len(rows))) / len(rows)
    return full, replies, {k: sum(v) / len(v) for k, v in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="workspace (default: a new temporary one)")
    parser.add_argument("--method", default="grpo", choices=["grpo", "rloo"])
    parser.add_argument("--epochs", type=float, default=None, help="default: the method's")
    parser.add_argument("--lr", type=float, default=None, help="default: the method's")
    parser.add_argument("--set", action="append", default=[], help="another parameter, NAME=VALUE")
    parser.add_argument("--baseline", action="append", default=[],
                        help="NAME=VALUE: train a baseline run first, on these settings with this one changed, and "
                             "print the time and full-reward ratios (e.g. --baseline num_iterations=1)")
    args = parser.parse_args()

    from pipelines.methods import METHODS, parse
    from studio.core import Studio

    studio = Studio(args.home or tempfile.mkdtemp(prefix="grpo-bench-"), standby=False)
    heldout = [json.loads(line) for line in HELDOUT.read_text().splitlines()]
    entries = rewards.parse_list(REWARDS)
    params = {k: v for k, v in (("num_train_epochs", args.epochs), ("learning_rate", args.lr)) if v is not None}
    params.update(dict(item.split("=", 1) for item in args.set))
    reply_tokens = parse(METHODS[args.method].params, params).max_completion_length

    model, tokenizer = generation.load_for_chat("default", studio.model_cache)
    base, base_replies, base_parts = full_reward_share(model, tokenizer, heldout, entries, reply_tokens)
    dataset = studio.import_dataset(TRAIN, name="arithmetic")

    def trained(settings: dict):
        started = time.time()
        run_id = studio.start_run(model="default", dataset=dataset["id"], method=args.method, params=settings,
                                  rewards=REWARDS)
        row = studio.wait(run_id)
        seconds = time.time() - started
        if row["status"] != "completed":
            sys.exit(f"run {run_id} {row['status']}: {row.get('error')}")
        tuned_model, _ = generation.load_for_chat("default", studio.model_cache, studio.result_dir(run_id))
        return (run_id, row, seconds, *full_reward_share(tuned_model, tokenizer, heldout, entries, reply_tokens))

    runs = []
    if args.baseline:
        runs.append(("baseline", {**params, **dict(item.split("=", 1) for item in args.baseline)}))
    runs.append((args.method, params))
    results = [(name, settings, trained(settings)) for name, settings in runs]

    shown = "; ".join(rewards.describe_entry(e) for e in entries)
    print(f"{args.method.upper()} on {dataset['rows']} arithmetic prompts, built-in SmolLM2-135M-Instruct, rewards: {shown}")
    for name, settings, (run_id, row, seconds, *_rest) in results:
        job = json.loads((studio.run_dir(run_id) / "job.json").read_text())
        print(f"{name} settings: {json.dumps({k: v for k, v in job['params'].items() if k in settings or k in ('learning_rate', 'num_train_epochs', 'num_generations', 'max_completion_length', 'beta', 'per_device_train_batch_size', 'num_iterations')})}")
        print(f"{name} run {run_id}: {row['summary']['steps']} steps in {seconds:.0f} s; mean training reward "
              f"{row['summary']['reward_first']:.2f} (first steps) -> {row['summary']['reward_last']:.2f} (last steps)")
    print(f"{'model':<9} {'full reward':>12} " + " ".join(f"{k:>10}" for k in base_parts) + f"   ({len(heldout)} held-out prompts, greedy)")
    for name, share, parts in [("base", base, base_parts)] + [(n, r[3], r[5]) for n, _s, r in results]:
        print(f"{name:<9} {share:>12.2f} " + " ".join(f"{parts[k]:>10.2f}" for k in parts))
    tuned, tuned_replies = results[-1][2][3], results[-1][2][4]
    print(f"full-reward share, tuned / base: {tuned / base:.2f}x" if base else "base earns no full reward")
    if args.baseline:
        (_n, _s, first), (_m, _t, last) = results
        print(f"training time, baseline / {args.method}: {first[2] / last[2]:.2f}x; full-reward share, "
              f"{args.method} / baseline: {last[3] / first[3]:.2f}x" if first[3] else "the baseline earns no full reward")
    for prompt, a, b in list(zip((r["prompt"] for r in heldout), base_replies, tuned_replies))[:3]:
        print(f"\n{prompt}\n  base:  {a!r}\n  tuned: {b!r}")


if __name__ == "__main__":
    main()
