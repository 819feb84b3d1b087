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


DRAWN_POINTS = 1000  # a series drawn with more points than this is thinned (`thinned`)


def thinned(steps: list, values: list, limit: int = DRAWN_POINTS) -> tuple[list, list]:
    """At most `limit` points of a series, for drawing: its first and last, and the lowest and highest of each
    of `limit` / 2 runs of steps in a row, so a spike stays visible. A run logs every step: at 20,000 steps
    the live chart was rebuilt and sent whole (1.7 MB) on each refresh; a screen has fewer pixels across."""
    n = len(steps)
    if n <= limit:
        return steps, values
    buckets = max(1, (limit - 2) // 2)
    keep = {0, n - 1}
    for b in range(buckets):
        run = range(b * n // buckets, (b + 1) * n // buckets)
        drawn = [i for i in run if values[i] == values[i]]  # (NaN, a diverged step, is no lowest or highest:
        if drawn:                                           # one is kept, so the gap still shows)
            keep |= {min(drawn, key=values.__getitem__), max(drawn, key=values.__getitem__)}
        if len(drawn) < len(run):
            keep.add(next(i for i in run if values[i] != values[i]))
    kept = sorted(keep)
    return [steps[i] for i in kept], [values[i] for i in kept]


def progress(step: int, max_steps: int, started: float | None, metrics: list[dict],
             now: float | None = None, training_since: float | None = None, first_step: int = 0,
             mark: str = "loss") -> dict:
    """Step, percent, elapsed and ETA (from the recent seconds per step; before there are enough
    logged steps, from the time per step since training began). mark: the key of the records that
    are steps done (a training step's loss; a labeling project's answer)."""
    now = time.time() if now is None else now
    # this attempt's steps only: a gap across a resume (the hour the run was stopped) is no step's time
    times = [m["time"] for m in metrics if mark in m and "time" in m and m.get("step", 0) > first_step][-11:]
    per_step = statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) > 2 else None
    left = max(0, max_steps - step)
    eta = left * per_step if per_step is not None else None
    if per_step is None and training_since and step > first_step:
        logged = [(m["step"], m["time"]) for m in metrics if mark in m and "time" in m and m["step"] > first_step]
        if logged and logged[-1][1] >= training_since:
            # the time per step of the steps done, counting down until the next one (measured up to now, the
            # first steps' wait rose every second until the next step came, then fell)
            last_step, last_time = logged[-1]
            per_step = (last_time - training_since) / (last_step - first_step)
            eta = max(left * per_step - (now - last_time), max(left - 1, 0) * per_step)
        else:
            eta = left * (now - training_since) / (step - first_step)
    return {
        "step": step,
        "max_steps": max_steps,
        "percent": 100.0 * step / max_steps if max_steps else 0.0,
        "elapsed_s": now - started if started else 0.0,
        "eta_s": eta if max_steps else None,
    }


WORSE_THAN_BEST = 0.05  # held-out loss this far (relative) above its lowest, two checks on: memorising


def overfitting_warning(metrics: list[dict]) -> str | None:
    """A plain warning when held-out loss rises while training loss falls: for the last two checks
    in a row, or well above its lowest check (a rise spread over many checks, or after a dip)."""
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    # one record per step (the final evaluation may repeat the last step)
    evals = list({step: value for step, value in evals}.items())
    if len(evals) < 3:
        return None
    advice = "Fewer epochs, early stopping or a little dropout will help."
    (s0, e0), (_s1, e1), (s2, e2) = evals[-3:]
    if e2 > e1 > e0 and _falling(metrics, s0, s2):
        return (f"Held-out loss has risen for two checks in a row ({e0:.3f} -> {e2:.3f}) while training "
                "loss keeps falling: the model is starting to memorise your examples instead of learning "
                f"from them. {advice}")
    best = min(range(len(evals)), key=lambda i: evals[i][1])
    (best_step, lowest), (last_step, last) = evals[best], evals[-1]
    # well above: a share of the lowest, and never a rounding's worth (a loss near 0, or below it)
    if (best > len(evals) - 3 or last - lowest < max(WORSE_THAN_BEST * abs(lowest), 0.01)
            or not _falling(metrics, best_step, last_step)):
        return None
    epoch = next((m["epoch"] for m in metrics if m.get("step") == best_step and m.get("epoch")), None)
    epoch = epoch if epoch and epoch >= 0.1 else None
    at = ("before training" if best_step == 0 else f"step {best_step}" + (f" (epoch {epoch:.1f})" if epoch else ""))
    return (f"Held-out loss was lowest {'' if best_step == 0 else 'at '}{at}, {lowest:.3f}, and is now {last:.3f} "
            "while training loss keeps falling: since then the model has been memorising your examples instead "
            f"of learning from them. {'About ' + format(epoch, '.1f') + ' epochs' if epoch else 'Fewer epochs'}, "
            "early stopping or a little dropout will help.")


def _falling(metrics: list[dict], first: int, last: int) -> bool:
    """Training loss is lower in the second half of steps first..last than in the first half."""
    train = [m["loss"] for m in metrics if "loss" in m and first <= m["step"] <= last]
    if len(train) < 4:
        return False
    half = len(train) // 2
    return statistics.mean(train[half:]) < statistics.mean(train[:half])


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
