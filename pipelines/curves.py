"""Reading a run's metrics for people: series, progress/ETA, and the overfitting warning."""

from __future__ import annotations

import statistics
import time

SERIES = ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_s",
          # preference methods: how well the model tells the preferred answer from the other
          "rewards/accuracies", "eval_rewards/accuracies", "rewards/margins", "eval_rewards/margins",
          "rewards/chosen", "rewards/rejected", "eval_rewards/chosen", "eval_rewards/rejected", "kl",
          # reinforcement learning: mean weighted reward (each function's mean is added by name)
          "reward", "completions/mean_length",
          # a reward model: how often the preferred reply scores higher, and by how much
          "accuracy", "eval_accuracy", "margin", "eval_margin")


def is_reward_model(metrics: list[dict]) -> bool:
    return any("accuracy" in m or "eval_accuracy" in m for m in metrics)


def is_rl(metrics: list[dict]) -> bool:
    return any("reward" in m for m in metrics)


def is_preference(metrics: list[dict]) -> bool:
    return not is_rl(metrics) and any("rewards/chosen" in m or "kl" in m for m in metrics)


def reward_parts(metrics: list[dict]) -> list[str]:
    """The per-function reward means a GRPO run logged ('rewards/number/mean'), in first-seen order."""
    names: dict[str, None] = {}
    for m in metrics:
        for key in m:
            if key.startswith("rewards/") and key.endswith("/mean"):
                names[key] = None
    return list(names)


def series(metrics: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """name -> (steps, values) for every metric that has at least one point."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for name in (*SERIES, *reward_parts(metrics)):
        points = [(m["step"], m[name]) for m in metrics if name in m]
        if points:
            out[name] = ([p[0] for p in points], [p[1] for p in points])
    return out


def progress(step: int, max_steps: int, started: float | None, metrics: list[dict],
             now: float | None = None, training_since: float | None = None, first_step: int = 0) -> dict:
    """Step, percent, elapsed and ETA (from the recent seconds per step; before there are enough
    logged steps, from the time per step since training began)."""
    now = time.time() if now is None else now
    times = [m["time"] for m in metrics if "loss" in m and "time" in m][-11:]
    per_step = statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) > 2 else None
    if per_step is None and training_since and step > first_step:
        per_step = (now - training_since) / (step - first_step)
    left = max(0, max_steps - step)
    return {
        "step": step,
        "max_steps": max_steps,
        "percent": 100.0 * step / max_steps if max_steps else 0.0,
        "elapsed_s": now - started if started else 0.0,
        "eta_s": left * per_step if per_step is not None and max_steps else None,
    }


def overfitting_warning(metrics: list[dict]) -> str | None:
    """A plain warning when held-out loss rises for two checks while training loss falls."""
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    # one record per step (the final evaluation may repeat the last step)
    evals = list({step: value for step, value in evals}.items())
    if len(evals) < 3:
        return None
    (s0, e0), (_s1, e1), (s2, e2) = evals[-3:]
    if not (e2 > e1 > e0):
        return None
    train = [m["loss"] for m in metrics if "loss" in m and s0 <= m["step"] <= s2]
    if len(train) < 4:
        return None
    half = len(train) // 2
    if statistics.mean(train[half:]) >= statistics.mean(train[:half]):
        return None
    return (f"Held-out loss has risen for two checks in a row ({e0:.3f} -> {e2:.3f}) while training "
            "loss keeps falling: the model is starting to memorise your examples instead of learning "
            "from them. Fewer epochs, early stopping or a little dropout will help.")


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
