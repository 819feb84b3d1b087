"""Which layout a file's records have, and converting each record to TRL's canonical columns.

Stored kinds and columns (TRL's names):
  sft         `messages` (Alpaca, ShareGPT and prompt/completion all become chat messages, so
              training goes through the model's chat template — the same one the Chat tab uses)
  preference  `prompt`/`chosen`/`rejected` as chat messages (or `chosen`/`rejected` with the
              prompt implicit in both)
  kto         `prompt`/`completion` as chat messages plus a boolean `label`
  text        `text`
  prompts     `prompt` as chat messages, with optional reference columns a reward function checks
              replies against: `answer` (text) and `tests` (Python lines, e.g. asserts) — for
              reinforcement learning (GRPO), where the model writes its own replies
"""

from __future__ import annotations

import decimal
import difflib
import json
import math
import re
from dataclasses import dataclass

from pipelines.conversation import UNTRAINED
from pipelines.errors import DataError, where
from pipelines.json_errors import DECODER, Repeated, key_twice

KINDS = ("sft", "preference", "kto", "text", "prompts")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "model": "assistant", "chatgpt": "assistant"}
TOOL_CALLS = {"tool_calls", "function_call"}  # a reply that calls a tool (OpenAI's chat format)
TOOL_ROLES = ("tool", "function", "function_call", "observation", "ipython")  # a tool's turn (and ShareGPT's names)
# a KTO label: these words, or thumbs and votes as feedback tools write them
THUMBS_UP = ("up", "thumbs up", "thumbs_up", "thumbsup", "\U0001F44D", "+1")
THUMBS_DOWN = ("down", "thumbs down", "thumbs_down", "thumbsdown", "\U0001F44E", "-1")
THUMBS = THUMBS_UP + THUMBS_DOWN  # under any column name, only these say "a mark on this reply"
TRUE = ("true", "yes", "1", "desirable", "good", *THUMBS_UP, "like", "liked", "positive", "helpful")
FALSE = ("false", "no", "0", "undesirable", "bad", *THUMBS_DOWN, "dislike", "disliked", "negative", "unhelpful")
# names of a column of good/bad marks on each reply (read as KTO's `label` when its values are marks)
FEEDBACK_NAMES = ("rating", "ratings", "thumbs", "thumb", "feedback", "vote", "votes", "liked", "like", "good",
                  "is_good", "helpful", "is_helpful", "approved", "accepted", "desirable", "verdict", "judgement",
                  "judgment", "preferred", "upvoted", "score")


@dataclass(frozen=True)
class Layout:
    key: str
    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    label: str


# Checked in this order: the first whose required columns are all present wins.
LAYOUTS = (
    # pairs first: a preference set often keeps its chosen conversation as `messages` too (UltraFeedback's),
    # and was imported as conversations, its pairs and scores dropped
    # (`input`: what an Alpaca-style pair's instruction is about, added to its prompt as Alpaca's examples do)
    Layout("preference", "preference", ("prompt", "chosen", "rejected"), ("system", "input"),
           "preference (prompt, chosen, rejected)"),
    Layout("messages", "sft", ("messages",), (), "conversations (messages)"),
    Layout("sharegpt", "sft", ("conversations",), ("system",), "ShareGPT (conversations with from/value)"),
    Layout("kto", "kto", ("prompt", "completion", "label"), (), "KTO (prompt, completion, label)"),
    Layout("implicit_preference", "preference", ("chosen", "rejected"), (),
           "preference with the prompt inside chosen/rejected"),
    # two answers and a column saying which is better: PKU-SafeRLHF's (`--map better_response_id=safer_response_id`
    # ranks them by harmlessness instead) and Stanford SHP's (Reddit comments; `labels` 1 when A was preferred)
    Layout("pku_saferlhf", "preference", ("prompt", "response_0", "response_1", "better_response_id"), (),
           "preference (prompt, response_0, response_1, better_response_id: PKU-SafeRLHF)"),
    Layout("shp", "preference", ("history", "human_ref_A", "human_ref_B", "labels"), (),
           "preference (history, human_ref_A, human_ref_B, labels: Stanford SHP)"),
    Layout("alpaca", "sft", ("instruction", "output"), ("input", "system"), "Alpaca (instruction, input, output)"),
    Layout("prompt_completion", "sft", ("prompt", "completion"), (), "prompt/completion"),
    Layout("text", "text", ("text",), (), "raw text"),
    # last: a prompt with nothing to imitate is for reinforcement learning (the model writes the replies)
    Layout("prompts", "prompts", ("prompt",), ("answer", "tests", "system"),
           "prompts for reinforcement learning (prompt, optional answer and tests)"),
)
LAYOUT_BY_KEY = {layout.key: layout for layout in LAYOUTS}


# a pair picked by a column: (prompt column, the two answer columns, the column that picks, the value that
# picks each answer) — PKU-SafeRLHF names the better response's index, SHP's `labels` is 1 when A is preferred
PICKED_PAIRS = {"pku_saferlhf": ("prompt", ("response_0", "response_1"), "better_response_id", (0, 1)),
                "shp": ("history", ("human_ref_A", "human_ref_B"), "labels", (1, 0))}
# the names the guesses go by (a column of marks offered as KTO's label, a near miss named, a spreadsheet's
# 'Prompt', a JSON object taken for one record): not the pick layouts' (a 'labels' column of 👍/👎 went unoffered
# as KTO's marks, and 'response' was taken for a misspelt 'response_1')
KNOWN_COLUMNS = frozenset(c for layout in LAYOUTS if layout.key not in PICKED_PAIRS
                          for c in (*layout.required, *layout.optional))
NAMES_SHOWN = 10  # a message names this many columns, then says how many more (a file may have 1,000)


def few(names, n: int = NAMES_SHOWN) -> str:
    """'a, b, c' — or 'a, b, ... j and 990 more' for a long list: a message stays one readable line."""
    names = [str(x) for x in names]
    if len(names) <= n:
        return ", ".join(names)
    return f"{', '.join(names[:n])} and {len(names) - n} more"


# as a message lists them: conversations first, the way most files come
SHOWN_ORDER = ("messages", "sharegpt", "kto", "preference", "implicit_preference", "alpaca", "prompt_completion",
               "text", "prompts")


def accepted_layouts(kind: str = "auto") -> str:
    return " | ".join("+".join(LAYOUT_BY_KEY[key].required) for key in SHOWN_ORDER
                      if kind in ("auto", LAYOUT_BY_KEY[key].kind))


def parse_mapping(spec: str | dict | None) -> dict[str, str]:
    """'prompt=question,completion=answer' -> {'prompt': 'question', 'completion': 'answer'}."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        return {str(k): str(v) for k, v in spec.items() if v}
    mapping = {}
    for part in spec.split(","):
        target, sep, source = part.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise DataError(f"--map '{part.strip()}': expected NAME=COLUMN, e.g. prompt=question")
        mapping[target.strip()] = source.strip()
    return mapping


def with_case_mapping(columns: list[str], mapping: dict[str, str], path, kind: str = "auto") -> dict[str, str]:
    """`mapping`, or where no layout fits the columns as named and they hold no question and answer under
    other names (`suggest_mapping`), `mapping` plus the columns named as ours but for case ('Prompt',
    'Completion' as a spreadsheet writes them): each mapped to its name, unless the file has that exact
    column or the mapping already uses either. Only then: 'prompt,completion,Label' with a topic in Label
    stays examples, and 'question,answer,Text' keeps its question and answer."""
    try:
        detect(columns, path, kind, mapping)
        return mapping
    except DataError:
        if kind in ("auto", "sft") and suggest_mapping(columns):
            return mapping
    taken = set(mapping) | set(mapping.values())
    found = dict(mapping)
    for column in columns:
        name = str(column).strip().lower()
        if name in KNOWN_COLUMNS and name != column and name not in columns and not {name, column} & taken:
            found[name] = column
            taken |= {name, column}
    return found


# a pair's prompt under another name (Orca's question; `input` in argilla's copy of Orca's pairs, when no other is)
PAIR_PROMPT_NAMES = ("question", "instruction", "query", "input")


def pair_prompt(record: dict, mapping: dict[str, str], kind: str = "auto") -> dict[str, str]:
    """`mapping`, plus prompt=<column> for pairs whose prompt is under another name (Orca's `question`, an
    `instruction`): the prompt was dropped as a column nobody reads and the pairs taken for ones with the
    prompt inside each answer. Only where the answers do not hold a prompt themselves (conversations that
    begin with a user's turn; plain texts with that prompt in them, as HH-RLHF's "Human: ..."), and the column
    holds text."""
    names = set(record) - set(mapping.values()) | set(mapping)
    if kind not in ("auto", "preference") or not {"chosen", "rejected"} <= names or "prompt" in names:
        return mapping
    lower = {str(c).strip().lower(): c for c in record if c in names}
    asked = next((lower[n] for n in PAIR_PROMPT_NAMES if n in lower), None)
    if asked is None or not isinstance(record.get(asked), str) or not record[asked].strip():
        return mapping
    answers = [_maybe_json_list(apply_mapping(record, mapping).get(c)) for c in ("chosen", "rejected")]
    for answer in answers:
        if isinstance(answer, list) and answer and isinstance(answer[0], dict) and (
                answer[0].get("role") or answer[0].get("from")) in ("user", "human", "system"):
            return mapping
    if all(isinstance(a, str) and _holds(a, record[asked].strip()) for a in answers):
        return mapping  # plain texts that hold the prompt already (HH-RLHF's "Human: ... Assistant: ...")
    return {**mapping, "prompt": asked}


def implied_mapping(record: dict, mapping: dict[str, str], kind: str = "auto") -> dict[str, str]:
    """`mapping` plus the columns a known layout has under other names: a pair's prompt (`pair_prompt`), and an
    instruction's answer and its passage under Dolly's names (`instruction_names`)."""
    return instruction_names(record, pair_prompt(record, mapping, kind), kind)


INSTRUCTION_ANSWER_NAMES = ("response", "answer", "reply")  # an instruction's answer (Dolly's response)
INSTRUCTION_INPUT_NAMES = ("context",)  # what the instruction is about (Dolly's passage to answer from)


def instruction_names(record: dict, mapping: dict[str, str], kind: str = "auto") -> dict[str, str]:
    """`mapping`, plus output=<column> and input=<column> for instruction examples under Dolly's names
    (instruction, context, response): mapped as a question and its answer, the passage the answer is drawn from
    was dropped as an unread column, and closed questions, summaries and extractions were learned without it."""
    names = set(record) - set(mapping.values()) | set(mapping)
    lowered = {str(n).strip().lower() for n in names}  # (as a spreadsheet writes them: Instruction, Response)
    if kind not in ("auto", "sft") or "instruction" not in lowered or lowered & {
            "output", "prompt", "completion", "messages", "conversations", "chosen", "rejected", "text"}:
        return mapping
    free = {str(c).strip().lower(): c for c in record if c in names and c not in mapping.values()}
    answer = next((free[n] for n in INSTRUCTION_ANSWER_NAMES if n in free), None)
    if answer is None:
        return mapping
    # (auto) replies with good/bad marks are KTO's, offered as such (`feedback_mapping`): not examples to copy
    # (from the first row alone: a number, 1 of a 1-5 score, says nothing; the summary warns of marks left out)
    labels = [c for c in record if str(c).strip().lower() == "label" and c in names]
    marks = feedback_column([c for c in free.values() if c != answer], [record])
    if kind == "auto" and any(isinstance(record[c], bool) or isinstance(record[c], str) and is_label(record[c])
                              for c in labels + ([marks] if marks else [])):
        return mapping
    own = {n: free[n] for n in ("instruction", "input") if n in free and n not in names}  # as a spreadsheet writes
    passage = next((free[n] for n in INSTRUCTION_INPUT_NAMES if n in free), None) if "input" not in lowered else None
    return {**mapping, **own, "output": answer, **({"input": passage} if passage else {})}


SPEAKER = re.compile(r"(?:[:>]|\n)[ \t]*$")  # "Human: ", "<|user|>", "<|im_start|>user\n" just before a turn


def _holds(answer: str, asked: str) -> bool:
    """Whether a plain-text answer is a transcript with the prompt in it: a speaker's mark before the prompt (a
    name and a colon, a chat template's tag, a line of its own), and a line more after it (the reply). (A prompt
    the reply merely repeats, "Yes" in "Yes.", "Hi" in "Hi\nthere", dropped every row's prompt.)"""
    at = answer.find(asked)
    return (at >= 0 and bool(answer[:at].strip()) and bool(SPEAKER.search(answer[:at]))
            and "\n" in answer[at + len(asked):])


def apply_mapping(record: dict, mapping: dict[str, str]) -> dict:
    if not mapping or not isinstance(record, dict):  # (a list or a number is refused by convert, with its place)
        return record
    out = {k: v for k, v in record.items() if k not in mapping.values()}
    for target, source in mapping.items():
        if source in record:
            out[target] = record[source]
    return out


# Column names people use for a prompt and its answer, in the order they are looked for
PROMPT_NAMES = ("question", "query", "instruction", "input", "user", "human", "request", "q")
ANSWER_NAMES = ("answer", "response", "output", "reply", "assistant", "gpt", "bot", "target", "a")


def suggest_mapping(columns: list[str]) -> dict[str, str]:
    """{"prompt": column, "completion": column} when two columns look like a question and its
    answer under other names (question/answer, input/output, instruction/response, ...), else {}."""
    lower = {c.strip().lower(): c for c in columns}
    answer = next((lower[n] for n in ANSWER_NAMES if n in lower), None)
    # "prompt" with an answer under another name too (prompt,response was "Cannot tell what these columns are");
    # not with "answer": prompt,answer are prompts with the reference answer a reward checks
    names = ("prompt", *PROMPT_NAMES) if answer is not None and answer.strip().lower() != "answer" else PROMPT_NAMES
    prompt = next((lower[n] for n in names if n in lower), None)
    return {"prompt": prompt, "completion": answer} if prompt and answer and prompt != answer else {}


def detect(columns: list[str], path, kind: str = "auto", mapping: dict | None = None) -> Layout:
    """The layout for these columns (after mapping), or a sentence saying what is accepted."""
    if kind not in ("auto", *KINDS):
        raise DataError(f"kind '{kind}' is not one of auto, {', '.join(KINDS)}")
    mapping = mapping or {}
    missing = [src for src in mapping.values() if src not in columns]
    if missing:
        raise DataError(f"{where(path)}: no column '{missing[0]}' to map (columns: {few(columns)})")
    names = set(columns) - set(mapping.values()) | set(mapping)
    for layout in LAYOUTS:
        if layout.key == "prompts" and kind == "auto" and {n.lower() for n in names} & set(ANSWER_NAMES[1:]):
            continue  # prompt + response/output/...: examples under other names, not prompts alone
        if kind in ("auto", layout.kind) and set(layout.required) <= names:
            return layout
    hints = []
    for col in columns:
        close = difflib.get_close_matches(col, KNOWN_COLUMNS, n=1, cutoff=0.75)
        if close and col not in KNOWN_COLUMNS:
            hints.append(f"'{col}' looks like '{close[0]}'")
    # the columns as they stand after the mapping: one mapped elsewhere is no question or answer any more
    questions = [c for c in columns if c in names and c.strip().lower() in PROMPT_NAMES]
    answers = "completion" in mapping or any(c in names and c.strip().lower() in ANSWER_NAMES for c in columns)
    if not hints and kind in ("auto", "sft") and questions and "prompt" not in mapping:
        if "completion" in mapping:  # the answers are mapped, their questions are not
            hints.append(f"map '{questions[0]}' to prompt too: the answers are mapped, their questions are not")
        elif not answers:
            # a file of questions alone: what to add, in one sentence (the list of layouts said nothing of it to a
            # newcomer, and the sentence with the list in it ran to five lines, brackets inside brackets)
            others = [c for c in columns if c not in questions]  # (one may hold the answers under another name)
            raise DataError(f"{where(path)}: questions without answers (column '{questions[0]}'): add a column with "
                            "the answer to each, e.g. 'answer'"
                            + (f", or map the column that holds them ('{others[0]}'?) to completion" if others else "")
                            + (f"; or, to use them as prompts for reinforcement learning (GRPO), map "
                               f"'{questions[0]}' to prompt" if kind == "auto" else ""))
    hint = f" ({'; '.join(hints[:3])})" if hints else ""
    wanted = "" if kind == "auto" else f" for {kind} data"
    suggested = suggest_mapping(columns) if kind in ("auto", "sft") else {}
    example = (f"--map prompt={suggested['prompt']},completion={suggested['completion']}" if suggested
               else "--map prompt=question,completion=answer")
    if kind == "prompts":  # (prompts alone: a completion mapped is not read, and a reward's `answer` went with it)
        asked = next((c for c in columns if c.strip().lower() in PROMPT_NAMES), "question")
        example = f"--map prompt={asked}"
    raise DataError(f"{where(path)}: found columns {few(columns) or 'none'}{hint}; expected{wanted} "
                    f"columns {accepted_layouts(kind)}, or map yours (e.g. {example})")


def value_name(value) -> str:
    """What a value is, in a user's words (never a programming language's type name)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (bytes, bytearray)):
        return f"binary data ({len(value)} bytes)"
    if hasattr(value, "isoformat"):
        return "a date or time"
    return "a value that is not text"


def missing(value) -> bool:
    """An optional cell left blank: null, empty text, or NaN (how pandas writes a blank cell)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


HALF_CHARACTER = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair, from a lone \\uD800 escape in JSON


def whole_characters(value: str, at: str) -> str:
    """`value`, or a DataError at `at` when JSON's \\uXXXX escapes left half a character in it (nothing can
    store or show it: the import failed thousands of rows later with no row named)."""
    half = HALF_CHARACTER.search(value)
    if half:
        raise DataError(f"{at}: has half of a character (a lone \\u{ord(half.group()):04X} escape at character "
                        f"{half.start() + 1}); write the character itself or both halves of its pair")
    return value


def text(value, path, place, column) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):  # a blank cell of a spreadsheet or pandas table, or NaN in JSON
            raise DataError(f"{where(path, place, column)}: is empty (NaN); expected text")
        raise DataError(f"{where(path, place, column)}: expected text, got an infinite number")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        # a whole number as written: pandas stores a column of whole numbers with a blank as floats, and an
        # answer 4 became "4.0", which the exact and contains rewards never found in a reply of "4"
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        if value.strip():
            return whole_characters(value, where(path, place, column))
        raise DataError(f"{where(path, place, column)}: is empty; expected text")
    if value is None:
        raise DataError(f"{where(path, place, column)}: is empty (null); expected text")
    if not isinstance(value, (dict, list, tuple, bool)):  # binary data, dates: nothing to quote
        raise DataError(f"{where(path, place, column)}: expected text, got {value_name(value)}")
    shown = json.dumps(value, ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise DataError(f"{where(path, place, column)}: expected text, got {value_name(value)} {shown}")


def _json_list(value):
    """A list written as JSON in a text cell (CSV/TSV cells are text) as its list; other values as they are.
    A list of objects as Python writes it (pandas' to_csv of a column of conversations: single quotes, True,
    None) is read too: kept as text, the conversation's markup was stored as the answer, and learned."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            parsed = DECODER.decode(value)
        except (ValueError, RecursionError):  # (malformed, or a number of over 4,300 digits)
            parsed = _python_list(value)
        return parsed if isinstance(parsed, list) else value
    return value


PYTHON_LIST_CHARS = 1 << 20


def _python_list(value: str):
    """A list of dicts in Python's own notation (literals only, never code), else None."""
    import ast

    if not value.lstrip()[1:].lstrip().startswith("{") or len(value) > PYTHON_LIST_CHARS:
        return None  # (literal_eval takes about 100 times a cell's size in memory: a long cell stays text)
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return parsed if isinstance(parsed, list) and parsed and all(isinstance(m, dict) for m in parsed) else None


# a message's keys, in the chat and the ShareGPT shape (not "value" alone: [{"field": "city", "value": "Paris"}]
# is an answer; "content" stays, so a misspelt "rol" is named rather than kept as text)
MESSAGE_KEYS = ("role", "content", "from")


def _maybe_json_list(value):
    """A text or a conversation (a prompt, an answer): a conversation written as JSON in a text cell as its
    list, any other text as it is: an answer that is a JSON list ("[2, 3, 5, 7]", "[]") is an answer, and
    was refused as a conversation whose message 1 had no role; so is a list of records ('[{"name": "Alice"}]',
    an extraction's answer), refused as one whose message 1 had no role and content."""
    parsed = _json_list(value)
    # an object with a message's key makes it a conversation, checked as one (a misspelt "rol" is named,
    # as its "content" says what it was meant to be, not kept as text)
    return parsed if parsed is not value and any(isinstance(m, dict) and any(k in m for k in MESSAGE_KEYS)
                                                 for m in parsed) else value


def messages(value, path, place, column, *, role_key="role", content_key="content", roles=None,
             ends_with=None, only=None, weights=False) -> list[dict]:
    """A checked conversation: optional system first, then user/assistant taking turns. With `weights`, a reply
    OpenAI's fine-tuning format marks `"weight": 0` keeps that key (`weighted` reads it)."""
    value = _json_list(value)
    at = where(path, place, column)
    if not isinstance(value, list) or not value:
        raise DataError(f"{at}: expected a non-empty list of {{{role_key}, {content_key}}} messages, "
                        f"got {value_name(value)}")
    out = []
    for i, msg in enumerate(value, start=1):
        if isinstance(msg, Repeated):  # a conversation written as JSON in a CSV cell
            raise DataError(f"{at}: message {i}: {key_twice(msg.key)}")
        # (openai-python writes "tool_calls": null on every message: only a call made counts)
        called = next((k for k in sorted(TOOL_CALLS) if isinstance(msg, dict) and not missing(msg.get(k))
                       and msg.get(k) not in ([], {})), None)
        if called or isinstance(msg, dict) and msg.get(role_key) in TOOL_ROLES:
            # (it was "must be an object with 'role' and 'content'", or "is empty", of a reply that calls a tool)
            raise DataError(f"{at}: message {i} " + (f"calls a tool ('{called}')" if called else
                            f"is a tool's turn (role {msg[role_key]!r})") + "; conversations with tool calls "
                            "are not supported yet: leave them out of the file")
        if not isinstance(msg, dict) or role_key not in msg or content_key not in msg:
            raise DataError(f"{at}: message {i} must be an object with '{role_key}' and '{content_key}'")
        raw_role = msg[role_key]
        role = (roles or {r: r for r in ROLES}).get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            accepted = ", ".join(roles or ROLES)
            raise DataError(f"{at}: message {i} has role {raw_role!r}; expected one of {accepted}")
        content = msg[content_key]
        if content is None or (isinstance(content, str) and not content.strip()):
            raise DataError(f"{at}: message {i} ({role}) is empty; expected text")
        if not isinstance(content, str):
            raise DataError(f"{at}: message {i} ({role}) has {value_name(content)} as its content; expected text")
        out.append({"role": role, "content": whole_characters(content, f"{at}: message {i} ({role})")})
        if weights and not missing(msg.get("weight")) and _weight(msg["weight"], role, f"{at}: message {i}") == 0 \
                and role == "assistant":  # (only a reply is learned: a turn of another role marked 0 says so)
            out[-1]["weight"] = 0
    _check_order(out, at, ends_with, only)
    return out


def _weight(value, role: str, at: str) -> int:
    """A message's `weight` as OpenAI's format writes it: 1 learns the reply, 0 keeps it as context only (on
    another role's turn, which is context anyway, either is taken as it is: some files write one on every turn)."""
    number = value
    if isinstance(value, str):  # (a CSV cell's JSON, or text: "1", "1.0")
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if isinstance(number, bool) or not isinstance(number, (int, float)) or number not in (0, 1):
        shown = (("true" if value else "false") if isinstance(value, bool) else repr(value)
                 if isinstance(value, (str, int, float)) else value_name(value))
        expected = ("0 (kept as context, not learned) or 1 (learned)" if role == "assistant" else
                    f"0 or 1 (a {role}'s turn is context either way)")
        raise DataError(f"{at} ({role}) has weight {shown}; expected {expected}")
    return int(number)


def weighted(msgs: list[dict]) -> dict:
    """A conversation row from messages some of which are marked weight 0: the turns after its last learned reply
    left out (they would be context for nothing), and `UNTRAINED` listing the replies kept as context. Every
    reply marked 0: the whole conversation, every reply listed (the import leaves it out as teaching nothing).
    `LEFT_OUT`: how many replies were left out so (the import counts them, and takes the key out)."""
    untrained = [i for i, m in enumerate(msgs) if m.pop("weight", 1) == 0]
    if not untrained:
        return {"messages": msgs}
    learned = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and i not in untrained]
    row = {}
    if learned:
        row[LEFT_OUT] = sum(i > learned[-1] for i in untrained)
        msgs = msgs[:learned[-1] + 1]
        untrained = [i for i in untrained if i < learned[-1]]
    return {"messages": msgs, **({UNTRAINED: untrained} if untrained else {}), **row}


LEFT_OUT = "_left_out"  # (not stored) a conversation's replies marked weight 0 after its last learned one


def _check_order(msgs: list[dict], at: str, ends_with: str | None, only: str | None) -> None:
    if only:
        bad = next((i for i, m in enumerate(msgs, 1) if m["role"] != only), None)
        if bad:
            raise DataError(f"{at}: message {bad} is '{msgs[bad - 1]['role']}'; expected only {only} messages")
        return
    expected = "user"
    for i, m in enumerate(msgs, start=1):
        if m["role"] == "system":
            if i != 1:
                raise DataError(f"{at}: message {i} is 'system' but a system message may only come first")
            continue
        if m["role"] != expected:
            after = f"after '{msgs[i - 2]['role']}'" if i > 1 and msgs[i - 2]["role"] != "system" else "first"
            raise DataError(f"{at}: message {i} is '{m['role']}' {after}; expected user and assistant "
                            "to take turns, starting with user")
        expected = "assistant" if expected == "user" else "user"
    if ends_with and msgs[-1]["role"] != ends_with:
        raise DataError(f"{at}: the last message is '{msgs[-1]['role']}'; expected it to be the {ends_with}'s")


def is_label(value) -> bool:
    """A value `label` reads as good or bad: true/false, 1/0/-1, yes/no, up/down, 👍/👎, ..."""
    if isinstance(value, bool):
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value in (0, 1, -1)
    return isinstance(value, str) and value.strip().lower() in TRUE + FALSE


def feedback_column(columns, records) -> str | None:
    """A column of good/bad marks on each reply that no layout reads (e.g. `rating` with up/down):
    named like feedback, or holding thumbs/votes, with every value in `records` a mark. Imported as
    plain examples it would be dropped, and a reply marked bad learned as a good one."""
    for col in columns:
        if col in KNOWN_COLUMNS:
            continue
        values = [r.get(col) for r in records if isinstance(r, dict) and not missing(r.get(col))]
        if not values or not all(is_label(v) for v in values):
            continue
        words = {str(v).strip().lower() for v in values}
        if words & {"-1", "-1.0"} and words & {"0", "0.0"}:
            continue  # -1/0/1: a three-way score with 0 as neutral, not good/bad
        named = col.strip().lower().replace("-", "_").replace(" ", "_") in FEEDBACK_NAMES
        # under another name only thumbs and votes say "a mark on this reply" (positive/negative may be
        # the sentiment of what the reply says)
        thumbs = all(isinstance(v, str) and v.strip().lower() in THUMBS for v in values)
        if named or thumbs:
            return col
    return None


def label(value, path, place, column="label") -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, decimal.Decimal)) and value in (0, 1, -1):  # (a SQL NUMERIC column: Decimal)
        return value == 1
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    if missing(value):  # a reply nobody marked: KTO needs every reply marked good or bad
        raise DataError(f"{where(path, place, column)}: is empty; expected true or false (or up/down)")
    raise DataError(f"{where(path, place, column)}: expected true or false, got "
                    f"{json.dumps(value, ensure_ascii=False, default=str)}")


TRANSCRIPT_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")  # Anthropic HH-RLHF's plain-text turns


def transcript(value) -> list[dict] | None:
    """A plain-text conversation as HH-RLHF writes it ("\n\nHuman: ...\n\nAssistant: ...") as messages (their
    content as written; checked by `messages`), else None. Kept as text, the turns went to the model in that
    format while the Chat tab talks to it through its chat template, and TRL cut the prompt off at the first
    character the two answers differ in (their shared first word went with it)."""
    if not isinstance(value, str) or not value.lstrip().startswith("Human:"):
        return None
    parts = TRANSCRIPT_TURN.split("\n\n" + value.lstrip())
    if parts[0] or len(parts) < 5:  # (text before the first turn; a human turn alone)
        return None
    turns = []
    for who, said in zip(parts[1::2], parts[2::2]):
        role = "user" if who == "Human" else "assistant"
        if turns and turns[-1]["role"] == role:  # two turns of one speaker in a row (HH has some): one turn
            turns[-1]["content"] = f"{turns[-1]['content']}\n\n{said.strip()}".strip()
        else:
            turns.append({"role": role, "content": said.strip()})
    return turns


def _transcript_turns(turns: list[dict], path, place, column) -> list[dict]:
    """A transcript's turns, checked; one that ends with the assistant saying nothing ("Assistant:" and no more,
    as some HH-RLHF answers do) ends so, for the import to drop the pair as one that teaches nothing (refused as
    an empty message, one such row stopped the import of the whole set)."""
    if turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        return [*messages(turns[:-1], path, place, column, ends_with="user"), {"role": "assistant", "content": ""}]
    return messages(turns, path, place, column, ends_with="assistant")


def _conversation_pair(record: dict, path, place) -> tuple[list, list, list] | None:
    """(prompt, chosen, rejected) from answers that are whole conversations with the person's turns in them
    (distilabel's Capybara pairs, UltraFeedback's with a system turn first): the prompt is the turns both
    share up to the last person's turn, the answers what follows, as TRL takes them (the prompt column beside
    them is its first turn, or the same turns again). Else None: answers that are replies alone."""
    values = [_maybe_json_list(record.get(col)) for col in ("chosen", "rejected")]
    if not all(isinstance(v, list) and v and all(isinstance(m, dict) for m in v) and
               any((m.get("role") or m.get("from")) in ("user", "human") for m in v) for v in values):
        return None
    chosen, rejected = (messages(v, path, place, col, ends_with="assistant")
                        for v, col in zip(values, ("chosen", "rejected")))
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    last_user = max((i for i, m in enumerate(chosen[:shared]) if m["role"] == "user"), default=None)
    if last_user is None:  # the one that goes on from another conversation than the prompt's, where it says
        asked = record.get("prompt")
        firsts = [next((m["content"] for m in a if m["role"] == "user"), None) for a in (chosen, rejected)]
        other = "chosen" if isinstance(asked, str) and firsts[0] != asked.strip() == firsts[1] else "rejected"
        raise DataError(f"{where(path, place, other)}: its conversation does not begin as the "
                        + ("prompt does" if other == "chosen" else "chosen one does")
                        + "; expected both answers to share the person's turns and differ in the reply")
    prompt = chosen[:last_user + 1]
    for col, answer in (("chosen", chosen), ("rejected", rejected)):
        rest = answer[len(prompt):]
        if any(m["role"] != "assistant" for m in rest):
            raise DataError(f"{where(path, place, col)}: the two conversations differ before the person's last "
                            "turn; expected them to share every turn up to the reply they compare")
    return prompt, chosen[len(prompt):], rejected[len(prompt):]


def _after(prompt: list[dict], answer):
    """An answer written as the whole conversation (UltraFeedback's chosen and rejected repeat the prompt's
    turns) as the answer alone; any other answer as it is (checked as an answer: a conversation that does not
    begin with the prompt is named as such)."""
    value = _maybe_json_list(answer)
    if not isinstance(value, list) or len(value) <= len(prompt) or not all(isinstance(m, dict) for m in value):
        return answer
    head = [(m.get("role"), m.get("content")) for m in value[:len(prompt)]]
    return value[len(prompt):] if head == [(m["role"], m["content"]) for m in prompt] else answer


def _turn(role: str, value, path, place, column) -> list[dict]:
    """A text field as a one-message conversation; a list field as a checked conversation."""
    value = _maybe_json_list(value)
    if isinstance(value, list):
        return messages(value, path, place, column, ends_with="user" if role == "user" else None,
                        only=None if role == "user" else "assistant")
    return [{"role": role, "content": text(value, path, place, column)}]


def with_input(prompt: list[dict], extra, path, place) -> list[dict]:
    """The prompt with an `input` cell (what an Alpaca-style instruction is about) after its last turn, a blank line
    between (as Alpaca's examples are written); an empty one adds nothing."""
    if missing(extra) or isinstance(extra, str) and not extra.strip():
        return prompt
    extra = text(extra, path, place, "input")
    return [*prompt[:-1], {**prompt[-1], "content": f"{prompt[-1]['content']}\n\n{extra}"}]


def prompt_turns(value, path, place, column="prompt") -> list[dict]:
    """A prompt cell (text, or a conversation ending with the user's turn) as chat messages."""
    return _turn("user", value, path, place, column)


def _picked(value, path, place, column, answers, order) -> int:
    """Which of the two answers a pick column names (0 or 1, as a number or as text from a CSV)."""
    number = value.strip() if isinstance(value, str) else value
    if isinstance(number, str) and number in ("0", "1"):
        number = int(number)
    if not isinstance(number, bool) and isinstance(number, (int, float)) and number in order:
        return order.index(number)
    shown = repr(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else value_name(value)
    raise DataError(f"{where(path, place, column)}: expected {order[0]} ({answers[0]} is better) or {order[1]} "
                    f"({answers[1]} is better), got {shown}")


def convert(record, layout: Layout, path, place) -> dict:
    """One record -> one canonical row of the layout's kind, or a DataError naming the cell."""
    if not isinstance(record, dict):
        raise DataError(f"{where(path, place)}: expected an object with named fields, got {value_name(record)}")
    for col in layout.required:
        if col not in record:
            raise DataError(f"{where(path, place)}: missing column '{col}' (found: {few(record) or 'none'})")
    key = layout.key
    if key == "messages":
        return weighted(messages(record["messages"], path, place, "messages", ends_with="assistant", weights=True))
    if key == "sharegpt":
        msgs = messages(record["conversations"], path, place, "conversations", role_key="from",
                        content_key="value", roles=SHAREGPT_ROLES, ends_with="assistant")
        system = record.get("system")
        if not missing(system) and msgs[0]["role"] != "system":
            msgs.insert(0, {"role": "system", "content": text(system, path, place, "system")})
        return {"messages": msgs}
    if key == "alpaca":
        msgs = [*with_input([{"role": "user", "content": text(record["instruction"], path, place, "instruction")}],
                            record.get("input"), path, place),
                {"role": "assistant", "content": text(record["output"], path, place, "output")}]
        if not missing(record.get("system")):
            msgs.insert(0, {"role": "system", "content": text(record["system"], path, place, "system")})
        return {"messages": msgs}
    if key == "prompt_completion":
        return {"messages": _turn("user", record["prompt"], path, place, "prompt")
                + _turn("assistant", record["completion"], path, place, "completion")}
    if key == "preference":
        pair = _conversation_pair(record, path, place)
        if pair:
            out = dict(zip(("prompt", "chosen", "rejected"), pair))
        else:
            prompt = with_input(_turn("user", record["prompt"], path, place, "prompt"), record.get("input"), path,
                                place)
            out = {"prompt": prompt, **{col: _turn("assistant", _after(prompt, record[col]), path, place, col)
                                        for col in ("chosen", "rejected")}}
        prompt = out["prompt"]
        if not missing(record.get("system")) and prompt[0]["role"] != "system":
            out["prompt"] = [{"role": "system", "content": text(record["system"], path, place, "system")}, *prompt]
        return out
    if key == "implicit_preference":
        out, said = {}, [transcript(record[col]) for col in ("chosen", "rejected")]
        if any(said) and not all(said):  # (HH-RLHF's turns: both, or text)
            col = "rejected" if said[0] else "chosen"
            raise DataError(f"{where(path, place, col)}: is not written as turns (\"Human: ...\" then \"Assistant: "
                            "...\") as the other answer is; expected both the same way")
        for col, turns in zip(("chosen", "rejected"), said):
            if turns:
                out[col] = _transcript_turns(turns, path, place, col)
                continue
            value = _maybe_json_list(record[col])
            out[col] = (messages(value, path, place, col, ends_with="assistant") if isinstance(value, list)
                        else text(value, path, place, col))
        return out
    if key in PICKED_PAIRS:
        asked, answers, pick, order = PICKED_PAIRS[key]
        better = _picked(record[pick], path, place, pick, answers, order)
        prompt = _turn("user", record[asked], path, place, asked)
        return {"prompt": prompt, **{col: _turn("assistant", record[answers[i]], path, place, answers[i])
                                     for col, i in (("chosen", better), ("rejected", 1 - better))}}
    if key == "kto":
        return {"prompt": _turn("user", record["prompt"], path, place, "prompt"),
                "completion": _turn("assistant", record["completion"], path, place, "completion"),
                "label": label(record["label"], path, place)}
    if key == "text":
        return {"text": text(record["text"], path, place, "text")}
    if key == "prompts":
        row = {"prompt": _turn("user", record["prompt"], path, place, "prompt")}
        if not missing(record.get("system")) and row["prompt"][0]["role"] != "system":
            row["prompt"].insert(0, {"role": "system", "content": text(record["system"], path, place, "system")})
        for col in ("answer", "tests"):  # what reward functions compare a reply with; empty = none
            value = record.get(col)
            row[col] = None if missing(value) else text(value, path, place, col)
        return row
    raise DataError(f"unknown layout '{key}'")
