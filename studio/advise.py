"""The facts the advisor's rules read (pipelines/advisor.py): the chosen dataset's size, kind and
lengths, and each candidate method's memory and time estimate for this model on this machine."""

from __future__ import annotations

import dataclasses

from pipelines import advisor
from pipelines.methods import METHODS, describe
from studio import method_service as ms


def facts(studio, goal: str, model: str = "default", dataset: str | None = None) -> advisor.Facts:
    if goal not in advisor.GOALS:
        raise ValueError(f"unknown goal '{goal}'; choose one of: {', '.join(advisor.GOALS)}")
    rows = kind = longest = None
    if dataset:
        row = studio.resolve_dataset(dataset)
        kind, rows = row["kind"], row["rows"]  # (the training rows, once a method is known: below)
        model_path = str(studio.resolve_model(ms.base_of(studio, model)))
        # the token lengths the estimates read too (tokenized once per model and dataset, then cached)
        lengths = sorted(ms._training_lengths(studio, model_path, dataset, 0.0) or [])
        longest = lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))] if lengths else None
    peak, seconds, checks, batch, length, epochs, steps, available, where = {}, {}, {}, {}, {}, {}, {}, None, "memory"
    usable = dataset if goal in advisor.NEEDS and advisor.fits(kind, advisor.NEEDS[goal]) else None
    trained, held = None, 0
    for key in advisor.candidates(goal):
        # the time as the Train tab says it: at the speed runs here reached, with the held-out checks
        est = ms.calibrated(ms.estimate(studio, model, key, None, usable), ms.past_runs(studio, model, key))
        peak[key], seconds[key], checks[key] = est.peak_bytes, est.seconds_per_epoch, est.eval_seconds
        defaults = {i.name: i.default for i in describe(METHODS[key].params)}
        if usable and trained is None:  # the rows a run trains on: those it holds out are not (they were counted)
            trained, held, _own = ms._split_rows(studio, usable, defaults.get("eval_fraction") or 0.0,
                                                 METHODS[key].data_kind)
        batch[key], length[key] = defaults.get("per_device_train_batch_size"), defaults.get("max_length")
        epochs[key], steps[key] = defaults.get("num_train_epochs"), est.steps_per_epoch if usable else None
        available, where = est.available_bytes, ("GPU memory" if est.device == "cuda" else "memory")
    if available is None:
        from pipelines import estimates, hardware

        available = estimates.available_bytes("cuda" if hardware.has_cuda() else "cpu")
    lighter = {}
    for key in ("lora", "qlora"):  # an adapter whose defaults do not fit: the first lighter settings that do
        if key in peak and peak[key] > advisor.HEADROOM * available:
            lighter[key] = _lighter(studio, model, key, usable, batch[key], length[key], longest if usable else None,
                                    available)
    return advisor.Facts(goal=goal, rows=trained if trained is not None else rows, data_kind=kind,
                         available_bytes=available, where=where, peak_bytes=peak, seconds_per_epoch=seconds,
                         batch_size=batch, longest_tokens=longest, max_length=length, epochs=epochs,
                         steps_per_epoch=steps, eval_seconds=checks, heldout_rows=held, lighter=lighter)


def _lighter(studio, model: str, key: str, dataset: str | None, batch, length, longest, available: int):
    """`advisor.lighter_steps` estimated in turn: the first that fits, else the last (the lightest) tried."""
    light = None
    for settings in advisor.lighter_steps(batch, length, longest):
        est = ms.calibrated(ms.estimate(studio, model, key, settings, dataset), ms.past_runs(studio, model, key))
        light = advisor.Lighter(settings, est.peak_bytes, est.seconds_per_epoch)
        if est.peak_bytes <= advisor.HEADROOM * available:
            break
    return light


def own_fitting(studio, goal: str, dataset: str | None) -> tuple[dict | None, dict | None]:
    """(the dataset chosen, the user's newest imported one of the kind the goal needs) when the one
    chosen is not of that kind: a user who imported pairs and asks how to learn from them means
    those pairs, not the examples still chosen in Train (or no dataset at all)."""
    from studio.core import is_sample

    needs = advisor.NEEDS.get(goal)
    chosen = studio.resolve_dataset(dataset) if dataset else None
    if needs is None or (chosen and advisor.fits(chosen["kind"], needs)):
        return chosen, None
    own = next((d for d in studio.list_datasets() if d["kind"] == needs and not is_sample(d)), None)
    return chosen, own


def advise(studio, goal: str, model: str = "default", dataset: str | None = None) -> advisor.Advice:
    """The recommendation, with only settings the chosen method has. When the dataset chosen does not
    fit the goal and the user has imported one that does, the advice is for that one (and says so)."""
    chosen, own = own_fitting(studio, goal, dataset)
    if own:
        dataset = own["id"]
    advice = advisor.recommend(facts(studio, goal, model, dataset))
    advice.dataset = dataset if dataset and advice.data_fits else None
    if own:
        from studio.core import dataset_title

        instead = (f"the one chosen, **{dataset_title(chosen)}**, is {chosen['kind']} data" if chosen
                   else "no dataset was chosen")
        advice.reasons.insert(0, f"For your dataset **{dataset_title(own)}** ({own['kind']} data, "
                                 f"{own['rows']} rows): {instead}.")
    if advice.method:
        names = {f.name for f in dataclasses.fields(METHODS[advice.method].params)}
        advice.settings = {k: v for k, v in advice.settings.items() if k in names}
    return advice


def as_markdown(advice: advisor.Advice) -> str:
    head = (f"### Use **{METHODS[advice.method].label}**" if advice.method else "### No training method for this")
    settings = ", ".join(f"{_label(advice.method, k)} **{_shown(v)}**" for k, v in advice.settings.items())
    lines = [head, *(f"- {r}" for r in advice.reasons)]
    if settings:
        lines.insert(1, f"Settings: {settings}.")
    return "\n".join(lines)


def as_yaml(advice: advisor.Advice, model: str, dataset: str | None) -> str:
    """A config `studio train` takes, with the advice's settings."""
    import yaml

    config = {"model": model, "dataset": dataset if dataset and advice.data_fits else "YOUR_DATASET", "method": advice.method,
              "params": advice.settings}
    if advice.method == "grpo":  # it learns from reward functions: the Train form's, which `studio train` needs too
        from pipelines.rewards import DEFAULT

        config["rewards"] = [{"name": name, "weight": 1.0} for name in DEFAULT]
    return yaml.safe_dump(config, sort_keys=False)


def _shown(value) -> str:
    """A setting's value as the Train tab's field says it (a switch: on or off)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(method: str, name: str) -> str:
    return next((i.label for i in describe(METHODS[method].params) if i.name == name), name).lower()
