"""Writes the bundled prompts for reinforcement learning in assets/samples/ (run: python
assets/make_rl_samples.py; deterministic).

The task: single-digit addition answered as one equation, e.g. "What is 3 + 4? Reply only with the
full equation, nothing else." -> "3 + 4 = 7". The built-in model usually knows the sum but often
does not keep to the format (it explains, or writes only the number), so it half-solves the task:
exactly what GRPO can improve by rewarding replies that are right *and* in the format. Rewards
(arithmetic_rewards.json): `number` (the last number in the reply is the sum) and `regex` (the
whole reply is one equation).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent / "samples"
TEMPLATE = "What is {a} + {b}? Reply only with the full equation, nothing else."
EQUATION = r"\d+ ?\+ ?\d+ ?= ?-?\d+\.?"
REWARDS = [{"name": "number", "weight": 1.0}, {"name": "regex", "weight": 1.0, "pattern": EQUATION}]


def main() -> None:
    pairs = [(a, b) for a in range(1, 10) for b in range(1, 10)]  # all 81 sums of two digits 1-9
    random.Random(7).shuffle(pairs)
    heldout, train = pairs[:30], pairs[30:]  # no prompt shared between the two
    for name, chosen in (("arithmetic_prompts.jsonl", train), ("arithmetic_prompts_heldout.jsonl", heldout)):
        rows = [{"prompt": TEMPLATE.format(a=a, b=b), "answer": str(a + b)} for a, b in chosen]
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (HERE / "arithmetic_rewards.json").write_text(json.dumps(REWARDS, indent=1) + "\n")


if __name__ == "__main__":
    main()
