"""Help me choose: from what the user wants, how much data they have and what this machine can hold,
one method with its key settings and the reasons, in plain words. Every rule lives here, in
`recommend`, a pure function of `Facts` (studio/advise.py gathers them: the dataset, the memory
estimates for this machine); tests/test_advisor.py checks it case by case.

The rules follow what the field does by default (LoRA first, QLoRA when memory is short, full tuning
only with plenty of data and memory; DPO for pairs, KTO for thumbs, GRPO for checkable answers) and
the studio's own measurements on the sample FAQ (LoRA's defaults: 8 epochs at 1e-3 on 120 rows)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

GOALS = {
    "facts": "Teach it facts: answers it should know (a support FAQ, product details)",
    "style": "Change its style or format: tone, length, a persona, a fixed layout",
    "preferences": "Make it prefer better answers: pairs where one answer is better (votes, labels)",
    "feedback": "Learn from thumbs up / thumbs down on single answers",
    "checkable": "Get checkable answers right: sums, JSON that parses, code that passes tests",
    "smaller": "Make it smaller or faster to run",
}
# what each goal learns from (the dataset kinds of the Data tab)
NEEDS = {"facts": "sft", "style": "sft", "preferences": "preference", "feedback": "kto", "checkable": "prompts"}
DATA_HELP = {
    "sft": "examples of prompts and the replies you want (the Data tab takes CSV, JSON, JSONL, Parquet)",
    "preference": "pairs: a prompt with a better and a worse answer (chat votes and labels export as pairs)",
    "kto": "single answers marked good or bad (prompt, completion, label)",
    "prompts": "prompts, each with what a checker compares the reply with (an `answer` or `tests` column)",
}
FULL_MIN_ROWS = 5000  # below this an adapter learns as well, at a fraction of the memory (LoRA paper, Table 2-4)
HEADROOM = 0.85  # a run should leave some memory to the rest of the machine
ENOUGH_STEPS = 10  # fewer optimizer steps than this barely move a model (the Train tab warns below it)
MAX_EPOCHS = 10  # more passes than this over a small set only memorise it


@dataclass(frozen=True)
class Facts:
    goal: str
    rows: int | None  # training rows of the chosen dataset; None when none is chosen
    data_kind: str | None  # that dataset's kind (sft, preference, kto, prompts, text)
    available_bytes: int
    where: str  # "CPU memory" or "GPU memory"
    # per candidate method, at its default settings for this model and dataset
    peak_bytes: dict[str, int] = field(default_factory=dict)
    seconds_per_epoch: dict[str, float | None] = field(default_factory=dict)
    batch_size: dict[str, int] = field(default_factory=dict)  # the default batch the peak was estimated at
    longest_tokens: int | None = None  # the 95th percentile of the rows' token lengths
    max_length: dict[str, int] = field(default_factory=dict)  # the default max length the peak was estimated at
    epochs: dict[str, float] = field(default_factory=dict)  # each method's default number of epochs
    steps_per_epoch: dict[str, int | None] = field(default_factory=dict)  # on the chosen dataset, as estimated
    eval_seconds: dict[str, float] = field(default_factory=dict)  # measuring the held-out rows, over the run
    heldout_rows: int = 0  # the rows a run sets aside to check itself on (not among `rows`)
    # per method whose defaults do not fit: the first of `lighter_steps` that does, else the last tried
    lighter: dict[str, Lighter] = field(default_factory=dict)


@dataclass(frozen=True)
class Lighter:
    """A method's settings that need less memory than its defaults, and its estimate at them (studio/advise.py
    measures them for a method whose defaults do not fit: see `lighter_steps`)."""
    settings: dict
    peak_bytes: int
    seconds_per_epoch: float | None = None


@dataclass
class Advice:
    method: str | None  # None: no training method does what was asked (see reasons)
    settings: dict = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    data_fits: bool = True  # the chosen dataset is of the kind the goal needs
    dataset: str | None = None  # the dataset the advice was sized for (set by studio/advise.py)


def fits(kind: str | None, needs: str) -> bool:
    """Whether data of this kind serves a goal that needs `needs` (raw text trains like examples)."""
    return kind == needs or (needs == "sft" and kind == "text")


def candidates(goal: str) -> list[str]:
    """Methods whose estimates the rules read for a goal, in order of preference."""
    return {"facts": ["lora", "qlora", "full"], "style": ["lora", "qlora", "full"], "preferences": ["dpo"],
            "feedback": ["kto"], "checkable": ["grpo"]}.get(goal, [])


def gb(n: float) -> str:
    return f"{n / 1024**3:.1f} GB"


def epochs_for(rows: int) -> int:
    """Small sets need more passes to sink in (8 on the 120-row FAQ measured best); big ones fewer."""
    for limit, epochs in ((50, 10), (600, 8), (2000, 4), (10000, 2)):
        if rows < limit:
            return epochs
    return 1


def enough_epochs(per_epoch: int, epochs: float) -> int | None:
    """More epochs for a set whose run would be under ENOUGH_STEPS optimizer steps (at most
    MAX_EPOCHS), else None."""
    if not per_epoch or not epochs or math.ceil(round(per_epoch * epochs, 9)) >= ENOUGH_STEPS:
        return None
    more = min(MAX_EPOCHS, math.ceil(ENOUGH_STEPS / per_epoch))
    return more if more > epochs else None


def more_epochs_reason(more: int, rows: int, per_epoch: int) -> str:
    """Why `enough_epochs` raised the epochs, in the advice's words."""
    steps = math.ceil(round(per_epoch * more, 9))
    return (f"{more} epochs: one pass over your {rows} row{'s' if rows != 1 else ''} is only {per_epoch:g} training "
            f"step{'s' if per_epoch != 1 else ''}, and a run needs about {ENOUGH_STEPS} to move the "
            f"model ({steps} steps in all)" + (". More rows would teach it more than more passes."
                                               if steps < ENOUGH_STEPS or more >= MAX_EPOCHS else "."))


def lighter_steps(batch: int | None, length: int | None, longest: int | None) -> list[dict]:
    """Settings that need less memory than a method's defaults, tried in this order before a method that
    changes what is trained (QLoRA's 4-bit model): each takes what the one before set, and gives up more.
    A max length no longer than the rows need (cuts nothing typical), then a batch of one row with as many
    accumulation steps (the same rows per update, each step slower), then gradient checkpointing (the
    activations recomputed in the backward pass: about a third slower). What the field does first
    (TRL's and PEFT's memory guides) before a smaller model or a quantized one."""
    steps, settings = [], {}
    if longest and length and max_length_for(longest) < length:
        settings = {"max_length": max_length_for(longest)}
        steps.append(dict(settings))
    if batch and batch > 1:
        settings = {**settings, "per_device_train_batch_size": 1, "gradient_accumulation_steps": batch}
        steps.append(dict(settings))
    steps.append({**settings, "gradient_checkpointing": True})
    return steps


def lighter_text(settings: dict) -> str:
    """What `lighter_steps` set, in the advice's words."""
    parts = []
    if "max_length" in settings:
        parts.append(f"a max length of {settings['max_length']} tokens")
    if "gradient_accumulation_steps" in settings:
        rows = settings["gradient_accumulation_steps"]
        parts.append(f"a batch of 1 row with {rows} accumulation steps (the same {rows} rows per update)")
    if settings.get("gradient_checkpointing"):
        parts.append("gradient checkpointing (the activations recomputed in the backward pass, each step about a "
                     "third slower)")
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 2 else parts)


def max_length_for(longest: int) -> int:
    """The 95th percentile of the rows' lengths, rounded up to 64 tokens (128 at least): nothing
    typical is cut, and no memory is kept for length no row has."""
    return max(128, -(-longest // 64) * 64)


def recommend(facts: Facts) -> Advice:
    if facts.goal not in GOALS:
        raise ValueError(f"unknown goal '{facts.goal}'; choose one of: {', '.join(GOALS)}")
    if facts.goal == "smaller":
        return Advice(None, reasons=[
            "Training does not make a model smaller or faster; exporting it does. In the Export tab, export the "
            "model (or a finished run, merged into it) as GGUF with 4-bit quantization (Q4_K_M): about a third "
            "of the size of 16-bit weights, and it runs faster on a CPU with llama.cpp or Ollama.",
            "To keep quality as high as possible, tune first (a LoRA run) and export the tuned run."])
    reasons: list[str] = []
    needs = NEEDS[facts.goal]
    if facts.data_kind is not None and not fits(facts.data_kind, needs):
        reasons.append(f"**Your dataset does not fit this goal:** it is {facts.data_kind} data; this goal needs "
                       f"{DATA_HELP[needs]}. Pick or import such a dataset; the advice below assumes one.")
    elif facts.data_kind is None:
        reasons.append(f"No dataset chosen yet: this goal needs {DATA_HELP[needs]}.")

    usable = fits(facts.data_kind, needs)
    if not usable:  # its size and lengths say nothing about the data this goal needs
        facts = dataclasses.replace(facts, rows=None, longest_tokens=None)
    method = _pick_method(facts, reasons)
    if method is None:
        return Advice(None, reasons=reasons, data_fits=usable)
    settings = _settings(facts, method, reasons)
    return Advice(method, settings, reasons, data_fits=usable)


def _fits(facts: Facts, key: str) -> bool:
    return key in facts.peak_bytes and facts.peak_bytes[key] <= HEADROOM * facts.available_bytes


def _lighter(facts: Facts, key: str) -> Lighter | None:
    """The lighter settings a method is advised with: its defaults do not fit, those do."""
    light = facts.lighter.get(key)
    if light is None or _fits(facts, key) or light.peak_bytes > HEADROOM * facts.available_bytes:
        return None
    return light


def _pick_method(facts: Facts, reasons: list[str]) -> str | None:
    have = f"you have {gb(facts.available_bytes)} of {facts.where}"
    # what a method that does not fit is measured against: the share a run should take, not all of it (it said
    # "needs 7.2 GB, you have 8.0 GB" of one the Train tab said fits)
    over = (f"more than the {HEADROOM:.0%} of your {gb(facts.available_bytes)} of {facts.where} a run should take "
            "(the rest is the system's and the other programs')")
    if facts.goal == "preferences":
        reasons.append("**DPO** learns from pairs directly: the better answer becomes more likely and the worse "
                       "less, measured against where the model started so it does not drift. (ORPO does the same "
                       "without that anchor and also imitates the better answer: use it when you start from a base "
                       "model that was never tuned on examples.)")
        return "dpo"
    if facts.goal == "feedback":
        reasons.append("**KTO** learns from single answers marked good or bad, no pairs needed: good answers "
                       "become more likely than the model's average, bad ones less.")
        return "kto"
    if facts.goal == "checkable":
        reasons.append("**GRPO** lets the model try several replies per prompt and makes the ones your checks "
                       "score best more likely: no example replies needed, only prompts and a check. Tick the "
                       "reward functions that check your answers (number, JSON, format, code tests).")
        return "grpo"

    # facts and style: examples (SFT); an adapter unless there is a lot of data and memory to spare
    rows = facts.rows or 0
    full, lora, qlora = (facts.peak_bytes.get(k) for k in ("full", "lora", "qlora"))
    if full is not None and not _fits(facts, "full"):
        said = f"Full tuning needs about {gb(full)} here, {over}"
    elif full is not None and rows < FULL_MIN_ROWS:
        said = (f"Full tuning would fit ({gb(full)}), but " + (f"with {rows} rows" if facts.rows else
                "without a dataset to size it") + " an adapter learns as well and leaves the model itself untouched")
    else:
        said = None
    if full is not None and _fits(facts, "full") and rows >= FULL_MIN_ROWS:
        reasons.append(f"**Full fine-tuning**: you have {rows} rows, enough for every weight to learn, and it fits "
                       f"(about {gb(full)}; {have}).")
        return "full"
    if lora is not None and _fits(facts, "lora"):
        what = "learns facts well" if facts.goal == "facts" else "changes style and format well"
        reasons.append((f"{said}: " if said else "") + f"**LoRA** needs about {gb(lora)} and {what} from "
                       f"{'a few hundred' if rows < 1000 else 'thousands of'} examples; the result is a small file "
                       "you can switch on and off, or merge.")
        return "lora"
    light = _lighter(facts, "lora")
    if lora is not None and light:  # lighter settings before a 4-bit model (slower still, a little worse)
        reasons.append((f"{said}. " if said else "") + f"**LoRA** needs about {gb(lora)} at its defaults here, "
                       f"{over}. With {lighter_text(light.settings)} it needs about {gb(light.peak_bytes)}, which "
                       "fits: those are set below, and the model keeps its full precision (QLoRA would store it "
                       "in 4 bits).")
        return "lora"
    if qlora is not None and (_fits(facts, "qlora") or _lighter(facts, "qlora")):
        light = _lighter(facts, "qlora")
        times = [facts.seconds_per_epoch.get(k) for k in ("qlora", "lora")]
        slower = (f"each step about {times[0] / times[1]:.1f}x LoRA's here (its 4-bit weights are unpacked as they "
                  "are used)" if all(times) and times[0] > 1.05 * times[1] else "a little slower per step")
        tried = facts.lighter.get("lora")
        tried = f" ({gb(tried.peak_bytes)} even with {lighter_text(tried.settings)})" if tried else ""
        needs = (f"needs about {gb(qlora)}" if not light else f"needs about {gb(light.peak_bytes)} with "
                 f"{lighter_text(light.settings)} (set below; {gb(qlora)} at its defaults)")
        reasons.append(f"LoRA needs about {gb(lora or 0)} here{tried}, {over}: **QLoRA** keeps the frozen model in "
                       f"4 bits and {needs}, {slower}, nearly LoRA's quality.")
        return "qlora"
    # QLoRA's own figure (the smaller of the two was said as QLoRA's, which could be LoRA's)
    lightest = (f": even QLoRA needs about {gb(qlora)}, {over}" if qlora is not None else
                f": LoRA needs about {gb(lora)}, {over}" if lora is not None else "")
    tried = facts.lighter.get("qlora" if qlora is not None else "lora")
    if tried:  # (it said to lower the batch size and the max length, which had been tried)
        reasons.append(f"**Nothing fits**{lightest}, and {gb(tried.peak_bytes)} even with "
                       f"{lighter_text(tried.settings)}. Choose a smaller model.")
        return None
    reasons.append("**Nothing fits at its default settings**" + lightest + ". Choose a smaller model, or lower the "
                   "batch size and the max length in the Train tab (the estimate above Start follows).")
    return None


def _settings(facts: Facts, method: str, reasons: list[str]) -> dict:
    settings: dict = {}
    rows = facts.rows
    if method in ("lora", "qlora"):
        settings["r"] = 16 if facts.goal == "facts" else 8
        reasons.append(f"Rank {settings['r']}: " + ("facts need room to be stored; 16 holds a few thousand "
                       "facts on a small model" if facts.goal == "facts" else
                       "a style or format is a small change; a low rank learns it and generalises better"))
    if rows and method in ("lora", "qlora", "full"):
        settings["num_train_epochs"] = epochs_for(rows)
        held = f" ({facts.heldout_rows} more are held out to check it)" if facts.heldout_rows else ""
        reasons.append(f"{settings['num_train_epochs']} epochs because your set has {rows} rows to train on{held}"
                       + (": a small set needs several passes to sink in" if settings["num_train_epochs"] >= 8 else
                          ": a big set needs few passes" if rows >= 2000 else "") + ".")
    default_length = facts.max_length.get(method)
    if facts.longest_tokens and default_length and method in ("lora", "qlora", "full", "dpo", "kto"):
        # only ever shorter than the default the memory and time above were estimated at
        length = min(max_length_for(facts.longest_tokens), default_length)
        if length < default_length:
            settings["max_length"] = length
            reasons.append(f"Max length {length} tokens: 95% of your rows are at most {facts.longest_tokens} "
                           "tokens, so almost nothing is cut and no memory is kept for longer.")
        elif facts.longest_tokens <= default_length:
            reasons.append(f"Max length stays {default_length} tokens: 95% of your rows are at most "
                           f"{facts.longest_tokens} tokens, so almost nothing is cut.")
        else:  # (it said the rows were cut at their own 95th-percentile length, and 5% were, when more were)
            reasons.append(f"Max length stays {default_length} tokens: more than 5% of your rows are longer (95% are "
                           f"at most {facts.longest_tokens} tokens) and are cut at {default_length}; a longer max "
                           "length needs more memory than estimated here (the Train tab's estimate follows it).")
    batch = facts.batch_size.get(method)
    peak = facts.peak_bytes.get(method)
    light = _lighter(facts, method)
    if light:  # what it fits with, said with the method (the max length as reasoned above)
        settings.update(light.settings)
    elif batch and peak and peak > 0.5 * facts.available_bytes and batch > 1 and batch % 2 == 0:
        settings["per_device_train_batch_size"] = max(1, batch // 2)
        settings["gradient_accumulation_steps"] = 2
        reasons.append(f"Batch {batch // 2} with 2 accumulation steps: the same {batch} rows per update in about "
                       "half the activation memory, because the default batch takes over half your memory.")
    if method == "grpo":  # the recipe examples/grpo-arithmetic.yaml holds (the advice gave no setting at all);
        # first, so a set too small for it is given more in one figure (it gave two: "2 epochs", then "3")
        settings["num_train_epochs"] = max(GRPO_EPOCHS, facts.epochs.get(method) or 0)
    per_epoch = facts.steps_per_epoch.get(method)
    epochs = settings.get("num_train_epochs", facts.epochs.get(method))
    more = enough_epochs(per_epoch, epochs) if rows else None
    if more:  # a small set at the default epochs is a few steps: more passes, or the run changes nothing
        settings["num_train_epochs"] = more
        reasons.append(more_epochs_reason(more, rows, per_epoch))
    if method == "grpo":
        settings["temperature"] = GRPO_TEMPERATURE
        reasons.append((f"*Variety while training* {GRPO_TEMPERATURE}" if more else
                        f"{settings['num_train_epochs']:g} epochs and *Variety while training* {GRPO_TEMPERATURE}")
                       + ": the recipe measured on the arithmetic sample (held-out sums answered with the right equation "
                       "went from 13 of 30 to 28 of 30, bench/grpo_quality.py): replies to one prompt still differ, "
                       "which is what it learns from, but fewer are wild.")
        reasons.append("*The number is right*, *Contains the answer* and *Is exactly the answer* check each prompt's "
                       "`answer` column: without one, check the reply's form (a regular expression, valid JSON, a "
                       "length) or score it with a reward model trained on preference pairs.")
    lr = {"lora": 1e-3, "qlora": 1e-3, "full": 2e-5, "dpo": 5e-4, "kto": 5e-4}.get(method)
    if lr:
        settings["learning_rate"] = lr
        reasons.append(f"Learning rate {lr:g}: " + ("the full model moves with every step, so a small step keeps "
                       "what it knew" if method == "full" else "measured on this studio's sample data for the "
                       "method (the default)"))
    seconds = light.seconds_per_epoch if light else facts.seconds_per_epoch.get(method)
    if seconds and rows and method in ("lora", "qlora", "full"):
        total = seconds * settings.get("num_train_epochs", facts.epochs.get(method) or 1) + facts.eval_seconds.get(
            method, 0.0)
        reasons.append(f"Expected time here: about {_minutes(total)} for the whole run.")
    return settings


GRPO_EPOCHS, GRPO_TEMPERATURE = 3.0, 0.7  # examples/grpo-arithmetic.yaml, measured by bench/grpo_quality.py


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
