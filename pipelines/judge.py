"""AI feedback (RLAIF): a judge model says which of two answers is better, and how sure it is.

After Lee et al. 2023, "RLAIF: Scaling Reinforcement Learning from Human Feedback with AI
Feedback" (arXiv:2309.00267). The judge (any chat model: the built-in SmolLM2 or a local folder)
reads a preamble, the conversation and the two answers, and we read its next-token probabilities
of "1" and "2", normalised over those two, instead of parsing what it writes: a soft label that
says how sure it is, and never an unparseable reply. The paper's chain-of-thought variant first
lets the judge write a short comparison (greedy), then asks "Preferred answer" and reads 1/2.

Judges prefer whichever answer comes first (or second) more than they should, so each pair is
asked twice, A first and then B first, and the two readings are averaged:

    P(A better) = (P("1" | A first) + P("2" | B first)) / 2 = (p_a_first + 1 - p_b_first) / 2

where p_a_first = P("1" | A first) and p_b_first = P("1" | B first), each normalised over 1/2.
A judge that always says "1" with the same confidence thus ends at exactly 0.5.

The judged pairs become a preference dataset (`judged.jsonl`, the studio's stored shape with the
judge's order); where the pairs came with human choices, the job reports how often judge and
humans agree, with both orders and with one order, each with a 95% interval, and how often the
judge simply preferred the answer shown first.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

from pipelines import arena, models
from pipelines.data import load_rows
from pipelines.errors import DataError, where

JUDGED = "judged.jsonl"
# in a judge job's folder: each pair's reading, written as it is made. A later job with the same judge takes
# the readings it finds there instead of asking again: a job that failed, was cancelled or was stopped by a
# restart goes on where it stopped, and the same pairs judged again with another bar to reverse a choice
# (min_sure) are not read again. The judge is greedy throughout, so a reading taken again would be the same.
READINGS = "readings.jsonl"
AFTER_DISK_FULL = "judge the pairs again"  # pipelines.run: said when the disk fills

JUDGE_INSTRUCTION = (
    "You are an expert rater of the answers an AI assistant gives. You will see a conversation "
    "between a user and the assistant, then two possible answers for the assistant's next turn. "
    "Choose the answer that is more helpful and honest: the one that does what the user asked, "
    "with correct and specific information, the way a friend who is an expert on the subject "
    "would help, rather than one that is vague, rude, made up or beside the point. "
    "Reply with a single character, 1 or 2, to say which answer is better."
)
RATIONALE_REQUEST = ("Before choosing, compare the two answers in two or three sentences: which one "
                     "is more helpful and honest, and why?")
QUESTION = "Preferred answer (1 or 2):"
RATIONALE_TOKENS = 64  # the longest comparison the judge writes before it chooses


def _conversation(prompt: list[dict]) -> str:
    # Role names spelled out: the judge reads the conversation as text, not as its own turns,
    # so an answer can never be mistaken for something the judge itself said.
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in prompt]
    return "\n".join(lines) if lines else "(none: the answers stand alone)"


def _comparison(prompt: list[dict], first: str, second: str) -> str:
    return (f"{JUDGE_INSTRUCTION}\n\nConversation:\n{_conversation(prompt)}\n\n"
            f"Answer 1:\n{first}\n\nAnswer 2:\n{second}")


def rationale_messages(prompt: list[dict], first: str, second: str) -> list[dict]:
    """What the judge is asked before it chooses, in the chain-of-thought variant."""
    return [{"role": "user", "content": f"{_comparison(prompt, first, second)}\n\n{RATIONALE_REQUEST}"}]


def judge_messages(prompt: list[dict], first: str, second: str, rationale: str | None = None) -> list[dict]:
    """The judge's chat, ending where its next token is "1" or "2". With a rationale, the judge's
    own comparison is its earlier turn and the question follows as a new turn (the paper appends
    it to the rationale; a new turn keeps the next token right after a generation prompt, where
    `choice_token_ids` says how "1" and "2" are written)."""
    if rationale is None:
        return [{"role": "user", "content": f"{_comparison(prompt, first, second)}\n\n{QUESTION}"}]
    return [*rationale_messages(prompt, first, second), {"role": "assistant", "content": rationale},
            {"role": "user", "content": QUESTION}]


def _check_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise UnusableJudge("the judge model's tokenizer has no chat template; pick an instruction-tuned "
                         "(chat) model as the judge")


class TooLongForJudge(ValueError):
    """A pair longer than the judge reads at once: it is kept as it was, unjudged (every pair: the job fails
    with it, in one sentence)."""
    one_sentence = True


def _window(model) -> int | None:
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(config, "max_position_embeddings", None)
    return window if isinstance(window, int) and window > 0 else None


def _check_fits(model, length: int, room: int = 1) -> None:
    """Refuse (TooLongForJudge) a prompt of `length` tokens that, with `room` more, passes the judge's window:
    past it a model reads nonsense positions, or stops with an IndexError that failed the whole job."""
    window = _window(model)
    if window is not None and length + room > window:
        raise TooLongForJudge(f"{length} tokens with the instruction, and the judge reads {window} at once")


class UnusableJudge(ValueError):
    """A judge model whose choice cannot be read (no chat template, "1"/"2" not single tokens); one sentence."""
    one_sentence = True  # pipelines.run shows it as it is, without the class name


TEMPLATE_OPTIONS = {"enable_thinking": False}  # a thinking template (Qwen3) would start with <think>, not 1 or 2;
# templates that do not know the option ignore it


def _render(tokenizer, messages: list[dict], **kwargs):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, **TEMPLATE_OPTIONS, **kwargs)


def choice_token_ids(tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ids of "1" and of "2" as the model may write them right after its generation prompt: each
    digit's single-token forms there, bare ("1") and with a leading space (" 1", how a SentencePiece
    model such as Llama 2 or Mistral writes it after "[/INST]"); the probability of a choice is the
    sum over its forms, so the reading never rests on a form the model hardly writes.

    Found by tokenizing a generation prompt with and without the form appended (a digit alone may
    tokenize differently from a digit after the template's last characters)."""
    _check_template(tokenizer)
    context = _render(tokenizer, [{"role": "user", "content": "?"}], tokenize=False)
    base = tokenizer(context, add_special_tokens=False).input_ids
    found = []
    for digit in ("1", "2"):
        forms = []
        for text in (digit, " " + digit):
            ids = tokenizer(context + text, add_special_tokens=False).input_ids
            if len(ids) == len(base) + 1 and ids[:len(base)] == base and ids[-1] not in forms:
                forms.append(ids[-1])
        if not forms:
            raise UnusableJudge(f'the judge model\'s tokenizer does not write "{digit}" as a single token after '
                             "its generation prompt, so its choice cannot be read; pick another judge")
        found.append(tuple(forms))
    if set(found[0]) & set(found[1]):
        raise UnusableJudge('the judge model\'s tokenizer writes "1" and "2" as the same token; pick another judge')
    return found[0], found[1]


def _choice_logits(model, tokenizer, messages: list[dict], ids: list[int]):
    """The judge's next-token logits of `ids`, in float32.

    A model in bf16 (on the GPU) rounds its logits to steps of 1/8 or so near 10-20, which would make
    its readings coarse (0.5, 0.73, 0.75, ...) and different from the same judge's in float32. The two
    choices' logits are worked out again in float32 from what the output layer was given; where the
    model changes its logits after that layer (Gemma's soft cap, Cohere's scale), the recomputed ones
    disagree with its own and its own are kept."""
    import torch

    inputs = _render(tokenizer, messages, return_tensors="pt", return_dict=True)
    _check_fits(model, inputs["input_ids"].shape[1])
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    head = model.get_output_embeddings()
    seen = []
    hook = head.register_forward_hook(lambda module, args, out: seen.append(args[0][0, -1])) if head is not None else None
    try:
        with torch.inference_mode():  # the last position's logits only: a long prompt's others are never read
            own = model(**inputs, logits_to_keep=1).logits[0, -1, ids].float()
            if not seen or not hasattr(head, "weight") or head.weight.dtype == torch.float32:
                return own.cpu()
            exact = seen[-1].float() @ head.weight[ids].float().T
            if getattr(head, "bias", None) is not None:
                exact = exact + head.bias[ids].float()
    finally:
        if hook is not None:
            hook.remove()
    # bf16 keeps 8 significant bits: its own logits are within 1% (and a little) of the exact ones
    if torch.all((exact - own).abs() <= 0.01 * exact.abs() + 0.05):
        return exact.cpu()
    return own.cpu()


def first_is_better(model, tokenizer, prompt: list[dict], first: str, second: str, rationale: bool = False,
                    max_rationale_tokens: int | None = None) -> float:
    """P("1") / (P("1") + P("2")) at the judge's next token: how sure it is the first answer is
    better. With `rationale`, it first writes a short comparison (greedy, so a job is repeatable)."""
    from pipelines.generation import reply

    ones, twos = choice_token_ids(tokenizer)
    max_rationale_tokens = max_rationale_tokens or RATIONALE_TOKENS
    written = None
    if rationale:
        asked = rationale_messages(prompt, first, second)
        _check_fits(model, len(_render(tokenizer, asked, tokenize=True, return_dict=True)["input_ids"]),
                    room=max_rationale_tokens)
        written = reply(model, tokenizer, asked, max_new_tokens=max_rationale_tokens)
    # (refused there, from the tokens it reads, when longer than the judge reads at once)
    logits = _choice_logits(model, tokenizer, judge_messages(prompt, first, second, written), [*ones, *twos])
    # softmax over the two choices' forms only: the mass on other tokens says nothing about which is better
    return float(logits.softmax(-1)[:len(ones)].sum())


def combine(p_first_when_a_first: float, p_first_when_b_first: float) -> float:
    """P(A better) from both orders: the average of P("1" | A first) and P("2" | B first)."""
    return (p_first_when_a_first + (1.0 - p_first_when_b_first)) / 2.0


def judge_pair(model, tokenizer, prompt: list[dict], a: str, b: str, both_orders: bool = True,
               rationale: bool = False) -> dict:
    """{"p_a": P(a better), "p_a_first": P("1") with a shown first, "p_b_first": P("1") with b shown
    first (so P(a better) from that order is 1 - p_b_first; None when asked in one order only)}.
    p_a = combine(p_a_first, p_b_first) with both orders, else p_a_first."""
    p_a_first = first_is_better(model, tokenizer, prompt, a, b, rationale)
    if not both_orders:
        return {"p_a": p_a_first, "p_a_first": p_a_first, "p_b_first": None}
    p_b_first = first_is_better(model, tokenizer, prompt, b, a, rationale)
    return {"p_a": combine(p_a_first, p_b_first), "p_a_first": p_a_first, "p_b_first": p_b_first}


def _verdict(p_a: float) -> str | None:
    """"a", "b", or None for an undecided judge (0.5, give or take rounding)."""
    if abs(p_a - 0.5) < 1e-9:
        return None
    return "a" if p_a > 0.5 else "b"


def _agreeing(p_a: float, human: str) -> float:
    # an undecided judge counts half, as ties do in the arena
    verdict = _verdict(p_a)
    return 0.5 if verdict is None else float(verdict == human)


def _single_readings(found: dict) -> list[float]:
    """P(a better) as each order alone says it."""
    readings = [found["p_a_first"]] if found.get("p_a_first") is not None else []
    if found.get("p_b_first") is not None:
        readings.append(1.0 - found["p_b_first"])
    return readings


def agreement(judged: list[dict], human: list[str]) -> dict:
    """How often the judge picks the human's winner: with both orders (p_a), and with one order.

    One order is the average over the orders that were asked of the agreement that order alone
    gives (p_a_first, and 1 - p_b_first): what a judge asked once, in either order, gets. Taking
    p_a_first alone would flatter the judge on stored pairs, whose human winner is always "a" and
    so always shown first: a judge that always says "1" would agree every time. Each share has its
    95% Wilson interval; shares are None when there are no pairs."""
    if len(judged) != len(human):
        raise ValueError(f"there are {len(judged)} judged pairs but {len(human)} human choices; expected one each")
    bad = next((h for h in human if h not in ("a", "b")), None)
    if bad is not None:
        raise ValueError(f'human choice {bad!r} is not "a" or "b"; leave ties and skipped pairs out')
    n = len(human)
    both = sum(_agreeing(j["p_a"], h) for j, h in zip(judged, human))
    one = sum(sum(_agreeing(p, h) for p in _single_readings(j)) / len(_single_readings(j))
              for j, h in zip(judged, human))
    return {"n": n, "both_orders": both / n if n else None, "one_order": one / n if n else None,
            "interval_both_orders": list(arena.wilson(both, n)), "interval_one_order": list(arena.wilson(one, n))}


def certainty(judged: list[dict]) -> float | None:
    """How decided the judge was, on average: |P(a better) - 0.5| x 2, from 0 (a coin flip on every
    pair: its order of the answers means nothing) to 1 (always sure)."""
    return round(sum(abs(j["p_a"] - 0.5) * 2 for j in judged) / len(judged), 3) if judged else None


def first_shown_rate(judged: list[dict]) -> float | None:
    """The share of single readings in which the judge preferred the answer shown first: about 0.5
    for a judge without position bias, near 1 (or 0) for one that mostly reads the position."""
    readings = [p for j in judged for p in (j.get("p_a_first"), j.get("p_b_first")) if p is not None]
    # a reading of exactly 0.5 prefers neither answer: half, as an undecided judge counts in agreement
    return sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in readings) / len(readings) if readings else None


# the judge reverses a pair's original choice only where it gives its own pick at least this much: a
# small judge's readings sit within a few points of 0.5 (SmolLM2: 0.48-0.51 on the sample pairs), and
# swapping on such a coin flip reversed good human choices, with nothing left to tell them apart
MIN_SURE = 0.55


def check_min_sure(value) -> float:
    """`value` as a probability the judge must reach to reverse a choice: from 0.5 (any lean) to below 1."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"how sure the judge must be to reverse a choice is {value!r}; give a share such as "
                         f"{MIN_SURE}") from None
    if not 0.5 <= value < 1:
        raise ValueError(f"how sure the judge must be to reverse a choice is {value:g}; give a share from 0.5 "
                         "(any lean) to below 1")
    return value


def _answer_text(value) -> str:
    if isinstance(value, list):  # a conversation: the assistant's last word in it
        said = [m["content"] for m in value if m.get("role") == "assistant"]
        return said[-1] if said else ""
    return str(value)


def _parts(row: dict) -> tuple[list[dict], str, str]:
    """(conversation, chosen answer, rejected answer) from a stored row: prompt/chosen/rejected,
    or chosen/rejected conversations holding the prompt themselves."""
    prompt = row.get("prompt")
    if prompt is None:
        chosen = row["chosen"]
        prompt = list(chosen[:-1]) if isinstance(chosen, list) else []
    elif isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return prompt, _answer_text(row["chosen"]), _answer_text(row["rejected"])


class Readings:
    """The readings of earlier jobs with the same judge, by what each depends on, and this job's own, appended
    to `path` as each is made (flushed to the disk: a machine that stops keeps all but the last). `salt` names
    the judge as it was loaded (its weights, its number format): a reading is reused only by the same."""

    def __init__(self, path: Path | None, earlier=(), salt: str = ""):
        self.path, self.salt, self.reused, self.known = path, salt, 0, {}
        for source in [*earlier, *([path] if path is not None else [])]:  # (its own: the same job run again)
            self.known.update(_read_log(Path(source), salt))
        self.before = set(self.known)  # what was read before this job (a pair twice in it is counted as asked)

    def key(self, prompt, chosen: str, rejected: str, both_orders: bool, rationale: bool, chosen_first: bool) -> str:
        asked = [self.salt, prompt, chosen, rejected, bool(both_orders), bool(rationale),
                 True if both_orders else bool(chosen_first)]
        return hashlib.sha256(json.dumps(asked, ensure_ascii=False, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict | None:
        found = self.known.get(key)
        self.reused += key in self.before
        return found

    def add(self, key: str, found: dict) -> None:
        self.known[key] = found
        if self.path is None:
            return
        with open(self.path, "a+b") as log:
            if log.tell() and (log.seek(-1, os.SEEK_END), log.read(1))[1] != b"\n":
                log.write(b"\n")  # after the half line of a job stopped while writing it
            log.write((json.dumps({"key": key, "salt": self.salt, "judge": found}) + "\n").encode())
            log.flush()
            os.fsync(log.fileno())


def _is_reading(found) -> bool:
    def share(value, may_be_none=False):
        return (value is None and may_be_none) or (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1)

    return (isinstance(found, dict) and share(found.get("p_a")) and share(found.get("p_a_first"), True)
            and share(found.get("p_b_first"), True))


def _read_log(path: Path, salt: str) -> dict:
    """The readings a job's log holds for this judge; a line cut short (a job stopped while writing it) or
    not a reading is passed over."""
    known = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError:  # none yet, or gone
        return known
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (isinstance(entry, dict) and entry.get("salt") == salt and isinstance(entry.get("key"), str)
                and _is_reading(entry.get("judge"))):
            known[entry["key"]] = entry["judge"]
    return known


def judge_salt(judge_model: str, model) -> str:
    """The judge as loaded and asked: where its weights are, when they and its tokenizer and chat template were
    written (a folder whose weights or template were replaced is another judge), the number format it reads
    them in, and the questions it is asked (another instruction asks another question)."""
    folder = Path(judge_model)
    stamp = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*")
                   if p.suffix in (".safetensors", ".bin", ".gguf", ".jinja") or p.name.startswith("tokenizer")
                   ) if folder.is_dir() else []
    asked = [JUDGE_INSTRUCTION, RATIONALE_REQUEST, QUESTION, RATIONALE_TOKENS, stamp]
    return (f"{judge_model}|{hashlib.sha256(repr(asked).encode()).hexdigest()[:16]}|"
            f"{next(model.parameters()).dtype}")


def _judge_row(model, tokenizer, prompt, chosen: str, rejected: str, both_orders: bool, rationale: bool,
               chosen_first: bool) -> dict:
    """judge_pair with the stored chosen as "a"; asked in one order, chosen_first says which."""
    if both_orders or chosen_first:
        return judge_pair(model, tokenizer, prompt, chosen, rejected, both_orders, rationale)
    p = first_is_better(model, tokenizer, prompt, rejected, chosen, rationale)
    return {"p_a": 1.0 - p, "p_a_first": None, "p_b_first": p}


def label_rows(model, tokenizer, rows: list[dict], both_orders: bool = True, rationale: bool = False,
               on_progress=None, should_stop=None, min_sure: float = MIN_SURE,
               readings: Readings | None = None) -> list[dict]:
    """Each row judged with its stored chosen as "a", and returned in the same stored shape but in
    the judge's order, with "judge_p" (P(the judge's chosen is better)), "human_agrees" (the judge
    kept the stored chosen), "judge_sure" (it gave its pick at least `min_sure`) and "judge" (the
    judge_pair numbers, stored chosen = a). A pair longer than the judge reads at once is kept as it
    was, with "judge" None and "too_long" saying why. The stored choice is reversed only where the judge is
    sure of the other answer: a judge unsure either way keeps it. Stops before the next row when
    should_stop() says so. With `readings`, a pair read before (by an earlier job with the same judge) is not
    asked again, and each new reading is added to them as it is made.

    Asked in one order only, every other row shows the rejected answer first: stored pairs always
    hold the human's pick in chosen, so showing it first every time would let the judge's position
    bias pass for agreement with the humans."""
    out = []
    for index, row in enumerate(rows):
        if should_stop is not None and should_stop():
            break
        prompt, chosen, rejected = _parts(row)
        key = readings.key(prompt, chosen, rejected, both_orders, rationale, index % 2 == 0) if readings else None
        try:
            found = readings.get(key) if readings else None
            if found is None:
                found = _judge_row(model, tokenizer, prompt, chosen, rejected, both_orders, rationale, index % 2 == 0)
                if readings:
                    readings.add(key, found)
        except TooLongForJudge as err:  # kept as it was, unjudged: the human's choice stands
            out.append({**row, "judge_p": None, "human_agrees": True, "judge_sure": False, "judge": None,
                        "too_long": str(err)})
            if on_progress is not None:
                on_progress(len(out), len(rows))
            continue
        sure = max(found["p_a"], 1.0 - found["p_a"]) >= min_sure and _verdict(found["p_a"]) is not None
        keep = not sure or _verdict(found["p_a"]) == "a"
        judged = {k: v for k, v in row.items() if k not in ("chosen", "rejected")}
        judged["chosen"], judged["rejected"] = (row["chosen"], row["rejected"]) if keep else (row["rejected"], row["chosen"])
        judged.update(judge_p=found["p_a"] if keep else 1.0 - found["p_a"], human_agrees=keep, judge_sure=sure,
                      judge=found)
        out.append(judged)
        if on_progress is not None:
            on_progress(len(out), len(rows))
    return out


def _check_rows(rows: list[dict], path: Path) -> None:
    if not rows:
        raise DataError(f"{path.name}: no pairs to judge")
    for i, row in enumerate(rows):
        if "chosen" not in row or "rejected" not in row:
            raise DataError(f"{where(path, f'row {i + 1}')}: expected a preference pair with 'chosen' and "
                            "'rejected' answers to judge")


def _write_atomically(path: Path, rows: list[dict]) -> None:
    # a reader (or a crash) never sees half the file
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as out:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:  # a full disk: the part written would hold the space the message asks to free
        tmp.unlink(missing_ok=True)
        raise


def run(job: dict, run_dir: Path, events) -> dict:
    path = Path(job["dataset"]["path"])
    rows = load_rows(path)
    trained = len(rows)
    heldout = job["dataset"].get("heldout_path")
    if heldout and Path(heldout).exists():  # the pairs set aside at import are pairs to judge too, kept last
        rows += load_rows(Path(heldout))
    if job.get("limit"):
        rows = rows[:int(job["limit"])]
    held = max(0, len(rows) - trained)  # set aside again in the judged dataset, the same pairs
    _check_rows(rows, path)
    both_orders, rationale = bool(job.get("both_orders", True)), bool(job.get("rationale", False))
    min_sure = check_min_sure(job.get("min_sure", MIN_SURE))

    events.phase("loading the judge model")
    tokenizer = models.load_tokenizer(job["judge_model"])
    choice_token_ids(tokenizer)  # refuse an unusable judge before its weights are loaded
    model = models.load_for_inference(job["judge_model"])  # on the GPU in bf16 where there is one

    events.progress.update(step=0, max_steps=len(rows))
    events.phase("judging the pairs")
    print(f"judging {len(rows)} pairs ({'both orders' if both_orders else 'one order'}"
          f"{', with a written comparison first' if rationale else ''})", flush=True)

    def progress(done: int, total: int) -> None:
        events.progress.update(step=done)
        events.metric({"step": done, "judged": done})

    readings = Readings(Path(run_dir) / READINGS, [Path(p) for p in job.get("earlier_readings") or []],
                        salt=judge_salt(job["judge_model"], model))
    started = time.time()
    judged = label_rows(model, tokenizer, rows, both_orders, rationale, on_progress=progress,
                        should_stop=events.cancel_requested, min_sure=min_sure, readings=readings)
    if len(judged) < len(rows):
        # half a dataset would pass for a whole one: nothing is kept
        return {"cancelled": True, "judged": len(judged)}
    read = [r["judge"] for r in judged if r["judge"] is not None]
    too_long = len(judged) - len(read)
    if not read:
        first = next(r["too_long"] for r in judged)
        raise TooLongForJudge(f"every pair ({too_long}) is longer than the judge reads at once (the first: {first}); "
                              "pick a judge with a longer context, or shorten the answers")
    _write_atomically(Path(run_dir) / JUDGED, [{k: v for k, v in r.items() if k != "too_long"} for r in judged])
    # a stored pair's chosen is the human's pick, so the human winner is always "a"
    agreed = agreement(read, ["a"] * len(read))
    summary = {"pairs": len(read), "agreement_both_orders": agreed["both_orders"],
               "agreement_one_order": agreed["one_order"], "interval_both_orders": agreed["interval_both_orders"],
               "interval_one_order": agreed["interval_one_order"], "judged_file": JUDGED,
               "picks_first_shown": first_shown_rate(read), "certainty": certainty(read),
               # (over the pairs asked here)
               "seconds_per_pair": (round((time.time() - started) / (len(judged) - readings.reused), 3)
                                    if len(judged) > readings.reused else None), "both_orders": both_orders,
               "heldout_pairs": held, "min_sure": min_sure,
               "reversed": sum(not r["human_agrees"] for r in judged),
               "unsure_kept": sum(not r["judge_sure"] for r in judged if r["judge"] is not None),
               "too_long_kept": too_long, "reused": readings.reused}
    if both_orders:
        print(f"judge agrees with the stored choice on {agreed['both_orders']:.0%} of pairs with both orders, "
              f"{agreed['one_order']:.0%} with one order", flush=True)
    else:
        print(f"judge agrees with the stored choice on {agreed['one_order']:.0%} of pairs (one order asked)", flush=True)
    print(f"reversed {summary['reversed']} of {len(read)} choices; {summary['unsure_kept']} kept as they were, "
          f"the judge less than {min_sure:.0%} sure of either answer"
          + (f"; {too_long} longer than the judge reads at once, kept unjudged" if too_long else ""), flush=True)
    if readings.reused:
        print(f"{readings.reused} of the {len(read)} pairs were read by an earlier job with this judge, not asked again",
              flush=True)
    return summary
