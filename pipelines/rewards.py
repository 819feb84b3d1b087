"""Reward functions for reinforcement learning (GRPO): one registry of explained, weighted, tested
functions a user composes in the Train tab or lists in a config.

Each function scores one reply from 0 (wrong) to 1 (right), with partial credit where that means
something (JSON with some of the required keys, a length near the target). A run's reward is the
weighted sum of its functions; TRL's GRPOTrainer sums them (`reward_weights`) and logs each one's
mean, which becomes its own curve. A function's settings are declared with `param` like a method's,
so the form, the YAML config and validation come from one place.

Code written by the model runs only in `pipelines/sandbox.py`'s separate, limited process.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.methods.params import ConfigError, describe, did_you_mean, param, parse

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
MAX_FUNCTIONS = 8


@dataclass
class NoOptions:
    pass


@dataclass
class RegexOptions:
    pattern: str = param(r"(?s).*", label="Pattern", help="A regular expression the whole reply must match "
                         "(Python syntax). Example: `(?s).*Answer: \\d+` = any text, then 'Answer: ' and a number "
                         "at the end (`(?s)` lets the any-text part run over several lines).", target="studio")
    # one asterisk only: the page's help text reads a pair of them as emphasis, even inside `code` (the example
    # showed as "(?s).Answer", its asterisks gone)


@dataclass
class JsonOptions:
    required_keys: str = param("", label="Required keys", help="Comma-separated keys the JSON object must "
                               "have (empty = any JSON object or list). Valid JSON earns half; each required key "
                               "present earns its share of the other half.", target="studio")


@dataclass
class LengthOptions:
    target_words: int = param(50, label="Target length (words)", help="The reply length you want, in words. "
                              "The reward is 1 at the target and falls to 0 at twice the target or at none.",
                              target="studio", min=1, max=5000, step=1)


@dataclass
class CodeOptions:
    timeout_s: float = param(2.0, label="Time limit (s)", help="How long the reply's code and the row's tests "
                             "may run; code still running then earns 0.", target="studio", min=0.1, max=30.0,
                             step=0.1)
    memory_mb: int = param(256, label="Memory limit (MB)", help="The most memory the code may use; more earns "
                           "0.", target="studio", min=32, max=4096, step=32)


@dataclass
class RewardModelOptions:
    run: str = param("", label="Reward model run", help="The id of a finished 'Reward model' run (see the runs "
                     "table). Its score of each reply, squashed to 0-1, is the reward: replies like the ones "
                     "people preferred score near 1.", target="studio")


@dataclass(frozen=True)
class Reward:
    key: str
    label: str
    help: str
    score: Callable[[list[str], list[dict], Any], list[float]]  # (replies, rows, options) -> scores
    column: str | None = None  # the dataset column each row must have ("answer", "tests")
    options: type = NoOptions
    check: Callable[[Any], None] | None = None  # (options): ConfigError for unusable settings

    @property
    def named(self) -> str:
        """How messages name it: as the form does, then as a config file does."""
        return f"reward '{self.label}' ({self.key})"


def reply_text(completion) -> str:
    """A TRL completion (conversational: [{"role": "assistant", "content": ...}], or plain text)."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def last_number(text: str) -> float | None:
    found = NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def _found(answer: str, reply: str) -> bool:
    """`answer` in `reply` as whole words (ignoring case and spacing): "no" is not in "I do not know",
    "4" not in "14 apples" nor in "4.5"."""
    answer = _norm(answer)
    if not answer:
        return False
    pattern = r"(?<!\w)(?<!\d[.,])" + re.escape(answer) + r"(?!\w)(?![.,]\d)"
    return re.search(pattern, _norm(reply)) is not None


def _contains(replies, rows, _opts):
    return [float(_found(row["answer"], r)) for r, row in zip(replies, rows)]


def _exact(replies, rows, _opts):
    def clean(text):
        return _norm(text).strip(" .!\"'")
    return [float(clean(r) == clean(row["answer"])) for r, row in zip(replies, rows)]


def _number(replies, rows, _opts):
    out = []
    for reply, row in zip(replies, rows):
        got, want = last_number(reply), last_number(row["answer"])
        out.append(float(got is not None and want is not None and math.isclose(got, want, rel_tol=1e-9,
                                                                                abs_tol=1e-9)))
    return out


def _regex(replies, _rows, opts):
    pattern = re.compile(opts.pattern, re.DOTALL)
    return [float(pattern.fullmatch(r.strip()) is not None) for r in replies]


def _check_regex(opts) -> None:
    try:
        re.compile(opts.pattern)
    except re.error as err:
        raise ConfigError(f"{REWARDS['regex'].named}: the pattern {opts.pattern!r} is not a valid regular expression "
                          f"({err})") from None


def _json_value(reply: str):
    """The reply as JSON: all of it, or its ```json block, or its first {...} span."""
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidates = [text] + ([fenced.group(1)] if fenced else [])
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate, parse_constant=_not_json)
        except ValueError:
            continue
        # structured output is an object or a list with something in it: a bare 42, true, "hello" or {}
        # is valid JSON too, and GRPO drifted to the shortest such reply
        if isinstance(value, (dict, list)) and value:
            return True, value
    return False, None


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's json reads them, JSON has none


def _keys(opts) -> list[str]:
    return [k.strip() for k in opts.required_keys.split(",") if k.strip()]


def _json(replies, _rows, opts):
    keys, out = _keys(opts), []
    for reply in replies:
        ok, value = _json_value(reply)
        if not ok:
            out.append(0.0)
        elif not keys:
            out.append(1.0)
        else:
            present = sum(k in value for k in keys) if isinstance(value, dict) else 0
            out.append(0.5 + 0.5 * present / len(keys))
    return out


def _length(replies, _rows, opts):
    target = opts.target_words
    return [max(0.0, 1.0 - abs(len(r.split()) - target) / target) for r in replies]


class Scores(list):
    """A function's scores, with why each reply that earned 0 did (`reasons`, "" for the others)."""

    reasons: list[str] = []


def _code(replies, rows, opts):
    from pipelines import sandbox

    items = [(sandbox.extract_code(r), row["tests"]) for r, row in zip(replies, rows)]
    results = sandbox.run_many(items, timeout_s=opts.timeout_s, memory_mb=opts.memory_mb)
    scores = Scores(float(o.passed) for o in results)
    scores.reasons = [o.reason if not o.passed else "" for o in results]
    return scores


class Failures:
    """Why the newest replies failed, by (logged function name, reply): the run's samples table shows the
    sandbox's reason beside a code reward's 0 (a syntax error, an assert, a time limit), which it kept to
    itself (the reply's 0 said only that something went wrong)."""

    def __init__(self, keep: int = 512):
        self.keep, self.found = keep, {}

    def note(self, name: str, reply: str, reason: str) -> None:
        self.found.pop((name, reply), None)
        if reason:
            self.found[(name, reply)] = reason
            while len(self.found) > self.keep:  # the oldest go (dicts keep the order they were filled in)
                del self.found[next(iter(self.found))]

    def of(self, name: str, reply: str) -> str:
        return self.found.get((name, reply), "")


FAILURES = Failures()


def _check_run(opts) -> None:
    opts.run = opts.run.strip()  # as the studio looks it up: the worker used " r2026…" as given, and failed
    if not opts.run:
        raise ConfigError(f"{REWARDS['reward_model'].named}: pick the reward model run to score with (in a "
                          "config file, its id, e.g. r20261130-120000-abcd)")


def _reward_model(replies, rows, opts, scorer=None):
    """The studio reward model's score of prompt + reply, through a sigmoid: P(this reply would be
    preferred over one scored 0), in (0, 1) like the other functions."""
    if scorer is None:
        raise ConfigError(f"{REWARDS['reward_model'].named} needs the studio to load its model (run it as a training job)")
    model, tokenizer = scorer(opts.run)
    from pipelines import reward_model

    conversations = [list(row["prompt"]) + [{"role": "assistant", "content": r}] for r, row in zip(replies, rows)]
    return [1 / (1 + math.exp(-s)) for s in reward_model.score(model, tokenizer, conversations)]


# What a new GRPO run starts with (the Train form, an advised config): right numbers, the bundled arithmetic
# prompts' task
DEFAULT = ("number",)

REWARDS: dict[str, Reward] = {r.key: r for r in [
    Reward("contains", "Contains the answer",
           "1 when the row's answer appears in the reply as whole words (ignoring case and spacing: 'no' is "
           "not in 'not', '4' not in '14'), else 0. "
           "Good for facts inside a longer reply.", _contains, column="answer"),
    Reward("exact", "Is exactly the answer",
           "1 when the reply is the row's answer and nothing else (ignoring case, spacing and a final "
           "full stop), else 0. Strict: use it when the reply should be only the answer.", _exact,
           column="answer"),
    Reward("number", "The number is right",
           "1 when the last number in the reply equals the number in the row's answer, else 0. For "
           "arithmetic and word problems: the model may show its working before the result.", _number,
           column="answer"),
    Reward("regex", "Matches a format",
           "1 when the whole reply matches your regular expression, else 0. Teaches a format (e.g. "
           "'end with Answer: N') whatever the content.", _regex, options=RegexOptions, check=_check_regex),
    Reward("json", "Is valid JSON",
           "A JSON object or list with something in it earns the reward (half of it when keys are required: "
           "each required key present adds its share of the rest); a bare number, word or {} earns nothing. "
           "Teaches structured output.", _json, options=JsonOptions),
    Reward("length", "Length near a target",
           "1 at the target number of words, falling to 0 at none or at twice the target. Keeps "
           "replies short (or long) without saying anything about content.", _length, options=LengthOptions),
    Reward("code", "Code passes the tests",
           "Runs the Python code in the reply, then the row's tests (e.g. assert lines), in a separate "
           "process with a time and memory limit, no network and its own scratch folder: 1 when all pass, "
           "else 0.", _code, column="tests", options=CodeOptions),
    Reward("reward_model", "A reward model's score",
           "Scores each reply with a reward model you trained in the studio on preference pairs (chat votes, "
           "labels): near 1 for replies like the preferred ones, near 0 for ones like the rejected. For what "
           "is easier to show than to write as a rule (tone, helpfulness).", _reward_model,
           options=RewardModelOptions, check=_check_run),
]}


def get(key: str) -> Reward:
    if key not in REWARDS:
        raise ConfigError(f"unknown reward function '{key}'{did_you_mean(key, REWARDS)}; available: "
                          f"{', '.join(REWARDS)}")
    return REWARDS[key]


def parse_list(entries) -> list[dict]:
    """A config's reward list, checked: [{"name": key, "weight": w, **options}] with every option
    filled in. One sentence (ConfigError) for the first problem."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError("reinforcement learning needs at least one reward function: list them under "
                          f"'rewards' (available: {', '.join(REWARDS)})")
    if len(entries) > MAX_FUNCTIONS:
        raise ConfigError(f"{len(entries)} reward functions given; at most {MAX_FUNCTIONS}")
    out = []
    for i, entry in enumerate(entries, start=1):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"reward {i}: expected a mapping with a 'name' (one of {', '.join(REWARDS)}) "
                              "and optionally a 'weight'")
        reward = get(str(entry["name"]))
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float, str)):
            raise ConfigError(f"{reward.named}: weight must be a number, got {weight!r}")
        try:
            weight = float(weight)
        except ValueError:
            raise ConfigError(f"{reward.named}: weight must be a number, got {weight!r}") from None
        if not math.isfinite(weight) or not -10 <= weight <= 10:
            raise ConfigError(f"{reward.named}: weight must be a number from -10 to 10, got {weight!r}")
        values = {k: v for k, v in entry.items() if k not in ("name", "weight")}
        known = [i.name for i in describe(reward.options)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            accepts = f"its settings are: {', '.join(known)}" if known else "it has no settings besides 'weight'"
            raise ConfigError(f"{reward.named}: unknown setting '{unknown[0]}'{did_you_mean(unknown[0], known)}; "
                              f"{accepts}")
        try:
            opts = parse(reward.options, values)
        except ConfigError as err:
            raise ConfigError(f"{reward.named}: {err}") from None
        if reward.check:
            reward.check(opts)
        out.append({"name": reward.key, "weight": weight, **vars(opts)})
    if not any(entry["weight"] for entry in out):
        raise ConfigError("every reward function has weight 0: every reply would score 0 and the model would "
                          "learn nothing; give at least one of them a weight other than 0")
    return out


def check_rows(entries: list[dict], rows: list[dict], dataset: str) -> None:
    """Every row has what each reward compares with (an answer, tests), and a number where the
    'number' reward needs one; one sentence naming the first row that does not."""
    for entry in entries:
        reward = REWARDS[entry["name"]]
        if reward.column is None:
            continue
        for i, row in enumerate(rows, start=1):
            value = row.get(reward.column)
            if value is None or not str(value).strip():
                raise ConfigError(f"{reward.named} compares each reply with the row's '{reward.column}' "
                                  f"column, but dataset '{dataset}' has none in row {i}; import prompts with the "
                                  f"column '{reward.column}', or choose other reward functions")
            if reward.key == "number" and last_number(str(value)) is None:
                raise ConfigError(f"{reward.named} compares the last number of each reply with the row's "
                                  f"answer, but in dataset '{dataset}' row {i}'s answer {str(value)[:40]!r} "
                                  "has no number")


def describe_entry(entry: dict) -> str:
    """'The number is right ×1.0' with its settings, for run summaries and the runs table."""
    reward = REWARDS[entry["name"]]
    opts = [f"{k}={entry[k]}" for k in (i.name for i in describe(reward.options))]
    return f"{reward.label} ×{entry['weight']:g}" + (f" ({', '.join(opts)})" if opts else "")


def logged_names(entries: list[dict]) -> list[str]:
    """The name each reward's callable gets, which TRL logs it under (`rewards/<name>/mean`): its key,
    numbered from the second use of the same function on ('contains', 'contains_2')."""
    names, seen = [], {}
    for entry in entries:
        seen[entry["name"]] = seen.get(entry["name"], 0) + 1
        names.append(entry["name"] if seen[entry["name"]] == 1 else f"{entry['name']}_{seen[entry['name']]}")
    return names


def parts(entries: list[dict] | None) -> dict[str, tuple[str, float]]:
    """Logged name -> (what a person reads, weight): a run's reward is the weighted sum of its
    functions' scores, so each function's part of it is weight x its mean score."""
    out = {}
    for name, entry in zip(logged_names(entries or []), entries or []):
        reward = REWARDS.get(entry["name"])
        label = reward.label if reward else entry["name"]
        count = name.removeprefix(entry["name"]).lstrip("_")
        out[name] = (f"{label} ({count})" if count else label, float(entry.get("weight", 1.0)))
    return out


def trl_functions(entries: list[dict], scorer: Callable | None = None):
    """(callables for TRL's GRPOTrainer, their weights). Each callable is named after its reward
    (TRL logs `rewards/<name>/mean` per function; `logged_names`). `scorer(run_id)` gives a loaded
    studio reward model (model, tokenizer) for the 'reward_model' function."""
    funcs, weights = [], []
    for entry, name in zip(entries, logged_names(entries)):
        reward = REWARDS[entry["name"]]
        opts = parse(reward.options, {k: v for k, v in entry.items() if k not in ("name", "weight")})

        def func(prompts, completions, _reward=reward, _opts=opts, _name=name, **columns):
            replies = [reply_text(c) for c in completions]
            rows = [{k: columns[k][i] for k in columns if isinstance(columns[k], list)} for i in range(len(replies))]
            for row, prompt in zip(rows, prompts):
                row["prompt"] = prompt
            if _reward.key == "reward_model":
                return _reward.score(replies, rows, _opts, scorer=scorer)
            scores = _reward.score(replies, rows, _opts)
            for reply, reason in zip(replies, getattr(scores, "reasons", [])):
                FAILURES.note(_name, reply, reason)
            return list(scores)

        func.__name__ = name
        funcs.append(func)
        weights.append(entry["weight"])
    return funcs, weights
