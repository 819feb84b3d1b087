"""Quality bar for the reward model (and, with --ppo, RLHF with PPO against it) on the built-in model.

Data: assets/samples/signoff_preferences.jsonl (40 pairs: the base model's own answer with a sign-off
line, preferred, against the same answer without it), imported with a quarter held out (10 pairs the
run measures itself on). A second held-out set is made here from assets/samples/signoff_heldout.jsonl
(20 requests of another phrasing, never trained on): the base model's greedy answer with and without
the sign-off.

Printed: held-out preference accuracy before and after training with its 95% Wilson interval, against
chance (0.5, the baseline: a score head that knows nothing ranks a pair right half the time), and wall
time. With --ppo: a PPO run against the reward model on the training prompts, then the reward model's
mean score of greedy replies to the 20 unseen requests, base vs PPO, the share that carry the sign-off,
and the KL the run logged.

    python bench/reward_model_quality.py [--home DIR] [--ppo [--set NAME=VALUE ...]] [--reward-run ID]
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

from pipelines import generation, reward_model  # noqa: E402
from pipelines.arena import wilson  # noqa: E402

PAIRS = ROOT / "assets" / "samples" / "signoff_preferences.jsonl"
HELDOUT = ROOT / "assets" / "samples" / "signoff_heldout.jsonl"
SIGNOFF = "\n\nHappy to help! — The Quill team"
TRAIT = "Quill team"


def accuracy_line(name: str, correct: int, n: int) -> str:
    low, high = wilson(correct, n)
    return f"{name:<34} {correct:>3}/{n:<3} = {correct / n:5.2f}   95% interval [{low:.2f}, {high:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", help="workspace (default: a new temporary one)")
    parser.add_argument("--ppo", action="store_true", help="also train PPO against the reward model")
    parser.add_argument("--set", action="append", default=[], help="a PPO setting other than the default, NAME=VALUE")
    parser.add_argument("--reward-run", help="a reward model run already in --home (skips training one)")
    parser.add_argument("--sft-epochs", type=float, default=0,
                        help="first a LoRA SFT run of this many epochs on the preferred answers, and PPO starts from "
                             "it (InstructGPT's order: SFT, reward model, PPO); 0 = PPO starts from the base")
    parser.add_argument("--reply-tokens", type=int, default=64, help="longest greedy reply when measuring")
    args = parser.parse_args()

    from pipelines.importer import ImportOptions
    from studio.core import Studio

    studio = Studio(args.home or tempfile.mkdtemp(prefix="rm-bench-"), standby=False)
    base_path = studio.resolve_model("default")
    model, tokenizer = generation.load_for_chat("default", studio.model_cache)

    # unseen pairs: the base's own greedy answers to requests of another phrasing, with and without the sign-off
    requests = [json.loads(line)["prompt"] for line in HELDOUT.read_text().splitlines()]
    answers = [generation.reply(model, tokenizer, [{"role": "user", "content": r}], max_new_tokens=64)
               for r in requests]
    unseen = [([{"role": "user", "content": r}], a.strip() + SIGNOFF, a.strip()) for r, a in zip(requests, answers)]

    started = time.time()
    if args.reward_run:
        run_id = args.reward_run
    else:
        dataset = studio.import_dataset(PAIRS, name="signoff", options=ImportOptions(heldout=0.25, seed=3))
        run_id = studio.start_run(model="default", dataset=dataset["id"], method="reward_model")
    row = studio.wait(run_id)
    seconds = time.time() - started
    if row["status"] != "completed":
        sys.exit(f"reward model run {run_id} {row['status']}: {row.get('error')}")
    summary = row["summary"]
    scorer, score_tok = reward_model.load(base_path, studio.result_dir(run_id))

    def ranked(pairs) -> int:
        chosen = reward_model.score(scorer, score_tok, [p + [{"role": "assistant", "content": c}] for p, c, _ in pairs])
        rejected = reward_model.score(scorer, score_tok, [p + [{"role": "assistant", "content": r}]
                                                          for p, _, r in pairs])
        return sum(c > r for c, r in zip(chosen, rejected))

    n = summary["eval_pairs"]
    print(f"Reward model, built-in SmolLM2-135M-Instruct, studio defaults (LoRA r16, "
          f"{summary['train_rows']} training pairs); run {run_id}, {seconds:.0f} s")
    print("baseline: chance = 0.50 (a score head that knows nothing)")
    print(accuracy_line("held-out pairs, before training", round(summary["eval_accuracy_before"] * n), n))
    print(accuracy_line("held-out pairs, after training", round(summary["eval_accuracy_after"] * n), n))
    print(accuracy_line("unseen requests (base answers ±)", ranked(unseen), len(unseen)))
    print(f"ratio after / chance on held-out pairs: {summary['eval_accuracy_after'] / 0.5:.2f}x")
    if not args.ppo:
        return

    import math

    from pipelines import events as ev

    prompts_file = Path(studio.home) / "signoff_prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": json.loads(line)["prompt"]}) + "\n"
                                    for line in PAIRS.read_text().splitlines()))
    prompts = studio.import_dataset(prompts_file, name=f"signoff prompts {time.strftime('%H%M%S')}")
    start, start_model = "default", None
    if args.sft_epochs:  # supervised first, on the preferred answers of the training pairs
        sft_file = Path(studio.home) / "signoff_sft.jsonl"
        sft_file.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["chosen"]}) + "\n"
                                    for r in map(json.loads, PAIRS.read_text().splitlines())))
        sft_data = studio.import_dataset(sft_file, name=f"signoff sft {time.strftime('%H%M%S')}")
        sft_id = studio.start_run(model="default", dataset=sft_data["id"], method="lora",
                                  params={"num_train_epochs": args.sft_epochs, "eval_fraction": 0})
        if studio.wait(sft_id)["status"] != "completed":
            sys.exit(f"SFT run {sft_id} did not complete")
        start = f"run:{sft_id}"
        start_model, _ = generation.load_for_chat("default", studio.model_cache, studio.result_dir(sft_id))
    started = time.time()
    settings = dict(item.split("=", 1) for item in args.set)
    ppo_id = studio.start_run(model=start, dataset=prompts["id"], method="ppo", params=settings,
                              rewards=[{"name": "reward_model", "run": run_id}])
    row = studio.wait(ppo_id)
    ppo_seconds = time.time() - started
    if row["status"] != "completed":
        sys.exit(f"PPO run {ppo_id} {row['status']}: {row.get('error')}")
    tuned, _ = generation.load_for_chat("default", studio.model_cache, studio.result_dir(ppo_id))  # the adapter
    # of the run it started from, trained on: it loads on the base alone

    def mean_score(m) -> tuple[float, float]:
        replies = [generation.reply(m, tokenizer, [{"role": "user", "content": r}], max_new_tokens=args.reply_tokens)
                   for r in requests]
        scores = reward_model.score(scorer, score_tok, [[{"role": "user", "content": r},
                                                         {"role": "assistant", "content": a}]
                                                        for r, a in zip(requests, replies)])
        return sum(scores) / len(scores), sum(TRAIT in a for a in replies) / len(replies)

    measured = [("base", *mean_score(model))]
    if start_model is not None:
        measured.append((f"sft ({args.sft_epochs:g} ep)", *mean_score(start_model)))
    measured.append(("ppo", *mean_score(tuned)))
    kls = [m["kl"] for m in ev.read_metrics(studio.run_dir(ppo_id)) if "kl" in m]
    print(f"\nPPO against {run_id} on the 40 training prompts, from {start}, settings {settings or 'the defaults'}; "
          f"run {ppo_id}, {row['summary']['steps']} steps in {ppo_seconds:.0f} s")
    print(f"{'model':<14} {'mean RM score':>14} {'sigmoid':>8} {'sign-off':>9}   "
          f"(20 unseen requests, greedy, up to {args.reply_tokens} tokens)")
    for name, s, t in measured:
        print(f"{name:<14} {s:>14.3f} {1 / (1 + math.exp(-s)):>8.3f} {t:>9.2f}")
    print(f"PPO vs its start: mean RM score {measured[-1][1] - measured[-2][1]:+.3f}")
    print(f"KL to the reference per reply (logged): first {kls[0]:.3f}, max {max(kls):.3f}, last {kls[-1]:.3f}")


if __name__ == "__main__":
    main()
