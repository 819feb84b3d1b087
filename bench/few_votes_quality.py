"""Quality bar for the vote loop: do a handful of votes, trained as *Train on these preferences* sets
them up, move the built-in model the way the votes point?

A few chat votes are a preference dataset of a few pairs. DPO's own defaults (2 epochs at batch size
4) train 5 pairs for 2 optimizer steps; the button raises the epochs so the run takes about 10 steps
(method_service.enough_epochs). This bench measures both, in one run, on the same pairs:
  defaults  `studio train` with method dpo and no parameter set
  button    `studio train` with the epochs enough_epochs sets for that dataset

Data: the first N pairs of assets/samples/signoff_preferences.jsonl, standing for N decisive votes
that agree on one thing: the preferred reply is the other one plus a sign-off line. (Votes that
disagree with each other, or pick between replies that differ at random, move a model less, whatever
the settings.) One pair is held out by the run, as the button's run holds one out.
Printed: the share of greedy replies that carry the sign-off, on the voted prompts and on 10 requests
of another phrasing never trained on, with the training wall time.

    python bench/few_votes_quality.py [--pairs 5] [--home DIR]
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

from bench.pref_quality import HELDOUT, PAIRS, TRAIT  # noqa: E402  (the same data and trait as that bench)
from pipelines import generation  # noqa: E402

MAX_NEW_TOKENS = 96


def train(studio, home: Path, name: str, dataset: Path, params: dict) -> tuple[str, float]:
    config = home / f"{name}.yaml"
    config.write_text(f"model: default\nmethod: dpo\ndataset: {dataset}\n"
                      + ("params:\n" + "".join(f"  {k}: {v}\n" for k, v in params.items()) if params else ""))
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", "import sys; from studio.cli import main; sys.exit(main())",
                           "train", str(config), "--wait", "--home", str(home)],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"studio train failed: {done.stderr[-2000:]}")
    return done.stdout.split()[0], time.time() - t0


def trait_share(model, tokenizer, prompts: list[str]) -> tuple[int, list[str]]:
    replies = [generation.reply(model, tokenizer, [{"role": "user", "content": p}], max_new_tokens=MAX_NEW_TOKENS)
               for p in prompts]
    return sum(TRAIT in r for r in replies), replies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--home", default=None)
    args = ap.parse_args()
    from studio import method_service
    from studio.core import Studio

    home = Path(args.home or tempfile.mkdtemp(prefix="few-votes-bench-"))
    studio = Studio(home, standby=False)
    studio.resolve_model("default")  # conversion is not training time
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines()][:args.pairs]
    heldout = [json.loads(line)["prompt"] for line in HELDOUT.read_text().splitlines()][:10]
    dataset = home / "votes.jsonl"
    dataset.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    raised, why = method_service.enough_epochs(studio, "dpo", str(dataset))
    print(f"{len(pairs)} pairs; the button sets {raised or 'nothing'} ({why or 'the defaults are enough'})")

    voted = [p["prompt"] for p in pairs]
    rows = []
    base, tok = generation.load_for_chat("default", studio.model_cache)
    rows.append(("base", None, None, trait_share(base, tok, voted)[0], trait_share(base, tok, heldout)[0]))
    replies = {}
    for name, params in (("defaults", {}), ("button", raised)):
        run_id, wall = train(studio, home, name, dataset, params)
        steps = json.loads((studio.run_dir(run_id) / "status.json").read_text()).get("summary", {}).get("steps")
        tuned, _ = generation.load_for_chat("default", studio.model_cache, studio.adapter_dir(run_id))
        on_voted, replies[name] = trait_share(tuned, tok, voted)
        rows.append((name, steps, wall, on_voted, trait_share(tuned, tok, heldout)[0]))

    print(f"trait = a greedy reply containing '{TRAIT}'; voted prompts: {len(voted)} (one held out by the run), "
          f"held-out requests: {len(heldout)} of another phrasing, never trained on")
    print(f"{'model':<9} {'steps':>5} {'train wall s':>12} {'voted prompts':>14} {'held-out':>9}")
    for name, steps, wall, on_voted, on_held in rows:
        print(f"{name:<9} {steps if steps is not None else '-':>5} {f'{wall:.0f}' if wall else '-':>12} "
              f"{on_voted:>9}/{len(voted):<4} {on_held:>5}/{len(heldout):<3}")
    (_, _, d_wall, d_voted, d_held), (_, _, b_wall, b_voted, b_held) = rows[1], rows[2]
    print(f"button / defaults: trait on voted prompts {b_voted} vs {d_voted}, held-out {b_held} vs {d_held}; "
          f"train wall time {b_wall / d_wall:.2f}x")
    print(f"\n> {voted[0]}\ndefaults: {replies['defaults'][0]!r}\nbutton:   {replies['button'][0]!r}")


if __name__ == "__main__":
    main()
