"""How often a run measures its held-out rows when its eval_steps is 0 ("automatic"), and how many
passes over them that makes: the trainers set their cadence from it, the estimate counts its time.

On the sample FAQ's 14-step LoRA run, one check every step (what `steps // 10` gave a run of fewer
than 20 steps) took 10 of the run's 24 s of training (bench/methods.py)."""

from __future__ import annotations

import math

# SFT: about ten points on the held-out curve. A preference check costs about half a training step
# (policy and reference on both answers), so a preference run checks about six times.
PER_RUN = {"sft": 10, "preference": 6}


def every(total_steps: int, eval_steps: int, per_run: int) -> int:
    """Steps between checks: the user's eval_steps, else the run's steps spread over `per_run` checks."""
    return eval_steps or max(1, math.ceil(total_steps / per_run))


def passes(total_steps: int, every_steps: int) -> int:
    """Passes over the held-out rows in a run: one before the first step, one every `every_steps`,
    and one after the last step unless the last step had one."""
    return 1 + total_steps // every_steps + (1 if total_steps % every_steps else 0)
