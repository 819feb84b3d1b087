"""What a stored dataset looks like to the model: preview rows, token lengths with the chosen
model's tokenizer, and one example rendered exactly as training renders it (TRL's way)."""

from __future__ import annotations

import os
import random
import statistics
from pathlib import Path

from pipelines import conversation

SAMPLE_ROWS = 2000  # token lengths are measured on at most this many rows, spread over the file
# Tokens are counted on at most this many characters of a sequence (or 32 per token of the max length,
# if more): a 5 MB value took 30 s and 1.8 GB to count, and any sequence this long is over the max
# length whatever its exact count. Such a row's count is then the count of its start (a lower bound).
MEASURED_CHARS = 200_000
SHOWN_CHARS, SHOWN_ITEMS = 200, 6  # what `studio data show` prints of one value and of one conversation


def as_text(value) -> str:
    """A cell for display: conversations as 'role: content' lines."""
    if isinstance(value, list):
        return "\n".join(f"{m['role']}: {m['content']}" for m in value)
    return "" if value is None else str(value)


def clip(text: str, chars: int = SHOWN_CHARS) -> str:
    """The start of a long text, saying how much was left out."""
    return text if len(text) <= chars else f"{text[:chars]}… ({len(text) - chars:,} more characters)"


def brief(value, chars: int = SHOWN_CHARS, items: int = SHOWN_ITEMS) -> str:
    """A cell for a terminal: each value cut to `chars`, a conversation to its first `items` messages."""
    if isinstance(value, list):
        lines = [f"{m['role']}: {clip(str(m['content']), chars)}" for m in value[:items]]
        if len(value) > items:
            lines.append(f"… and {len(value) - items} more messages")
        return "\n".join(lines)
    return clip(as_text(value), chars)


def preview_rows(parquet: Path, n: int = 20, show=as_text) -> list[dict]:
    import pyarrow.parquet as pq

    batch = next(pq.ParquetFile(parquet).iter_batches(batch_size=n), None) if n > 0 else None
    rows = batch.to_pylist() if batch is not None else []
    return [{k: show(v) for k, v in marked(row).items()} for row in rows]


def marked(row: dict) -> dict:
    """A row as shown: a conversation's replies marked weight 0 said in their role, not as a column of numbers."""
    row = dict(row)
    untrained = set(row.pop(conversation.UNTRAINED, None) or ())
    if untrained and isinstance(row.get("messages"), list):
        row["messages"] = [{**m, "role": f"{m['role']} (weight 0: context, not learned)"} if i in untrained else m
                           for i, m in enumerate(row["messages"])]
    return row


def row_at(parquet: Path, index: int) -> dict | None:
    """The stored row at `index` (from 0), reading only the row group that holds it; None past the end."""
    import pyarrow.parquet as pq

    stored = pq.ParquetFile(parquet)
    start = 0
    for group in range(stored.num_row_groups):
        size = stored.metadata.row_group(group).num_rows
        if 0 <= index < start + size:
            return stored.read_row_group(group).slice(index - start, 1).to_pylist()[0]
        start += size
    return None


def telling_row(parquet: Path, meta: dict, among: int = 20) -> int:
    """The row (from 0) an example of the dataset is best shown with: the first of the first `among` with a reply
    marked weight 0, where the dataset has any (the first row may have none to show), else the first."""
    import pyarrow.parquet as pq

    if not meta.get("context_replies") or conversation.UNTRAINED not in pq.read_schema(parquet).names:
        return 0
    batch = next(pq.ParquetFile(parquet).iter_batches(batch_size=among, columns=[conversation.UNTRAINED]), None)
    marked = [i for i, row in enumerate(batch.to_pylist() if batch is not None else []) if row[conversation.UNTRAINED]]
    return marked[0] if marked else 0


def first_row(parquet: Path) -> dict | None:
    import pyarrow.parquet as pq

    batch = next(pq.ParquetFile(parquet).iter_batches(batch_size=1), None)
    return batch.to_pylist()[0] if batch is not None and batch.num_rows else None


def count_rows(parquet: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(parquet).metadata.num_rows


def sample_rows(parquet: Path, n: int = SAMPLE_ROWS, seed: int = 0) -> list[dict]:
    """Up to n rows picked evenly at random over the whole file, read batch by batch."""
    import pyarrow.parquet as pq

    total = count_rows(parquet)
    keep = set(range(total)) if total <= n else set(random.Random(seed).sample(range(total), n))
    out, index = [], 0
    for batch in pq.ParquetFile(parquet).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            if index in keep:
                out.append(row)
            index += 1
    return out


def sequences(row: dict) -> list:
    """What training puts in front of the model for this row (one or two sequences)."""
    if "messages" in row:
        return [row["messages"]]
    if "text" in row:
        return [row["text"]]
    if "chosen" in row:
        prompt = row.get("prompt")
        return [prompt + row["chosen"], prompt + row["rejected"]] if prompt else [row["chosen"], row["rejected"]]
    if "completion" not in row:  # a prompt for reinforcement learning: the model writes the reply
        return [row["prompt"]]
    return [row["prompt"] + row["completion"]]


def check_template(rows: list[dict], tokenizer) -> None:
    """Conversations are written with the tokenizer's chat template: one without (a base model's) is said in
    one sentence (transformers' own error escaped the Data tab, which then kept the dataset before's figures)."""
    from pipelines.models import ModelError

    if getattr(tokenizer, "chat_template", None) is None and any(
            isinstance(seq, list) for row in rows[:1] for seq in sequences(row)):
        raise ModelError("this model's tokenizer has no chat template, and these examples are conversations "
                         "written with one: pick a chat (instruct) model, or plain-text data for this one")


_USER, _SYSTEM = "USER-TEXT-7f3a", "SYSTEM-TEXT-7f3a"  # stand-ins, to find where the template puts each turn


def template_system(tokenizer) -> str | None:
    """The system line the chat template writes into a conversation that has none of its own (SmolLM2's "You
    are a helpful AI assistant named SmolLM, trained by Hugging Face"), as the rendered text holds it; None where
    it writes none. Found by rendering a user turn alone and after a system turn of our own: what stands where
    ours did is the template's."""
    if getattr(tokenizer, "chat_template", None) is None:
        return None
    try:
        bare = tokenizer.apply_chat_template([{"role": "user", "content": _USER}], tokenize=False)
        told = tokenizer.apply_chat_template([{"role": "system", "content": _SYSTEM},
                                              {"role": "user", "content": _USER}], tokenize=False)
    except Exception:  # a template that takes no system turn (Gemma's raises): none of its own either
        return None
    before = bare.partition(_USER)[0]
    lead, _, rest = told.partition(_SYSTEM)
    between = rest.partition(_USER)[0]
    if _SYSTEM not in told or not (before.startswith(lead) and before.endswith(between)):
        return None
    added = before[len(lead):len(before) - len(between)]
    return added if added.strip() else None


def with_template_system(runs: list[tuple], row: dict, tokenizer, marked) -> list[tuple]:
    """`runs` ((text, kind) stretches of a rendered row) with the system line the template wrote into it, where
    the row has no system turn of its own, as a stretch of its own, of kind `marked`: shown as the context it
    is, it read as a line of the file."""
    line = template_system(tokenizer)
    turns = [m for seq in sequences(row) if isinstance(seq, list) for m in seq]
    if not line or not turns or any(isinstance(m, dict) and m.get("role") == "system" for m in turns):
        return runs
    out, done = [], False
    for text, kind in runs:
        at = -1 if done or not text else text.find(line)
        if at < 0:
            out.append((text, kind))
            continue
        out += [part for part in ((text[:at], kind), (line, marked), (text[at + len(line):], kind)) if part[0]]
        done = True
    return out


def _render(seq, tokenizer) -> str:
    if isinstance(seq, list):
        return tokenizer.apply_chat_template(seq, tokenize=False)
    return seq + (tokenizer.eos_token or "")  # TRL appends EOS to plain text


def measured_chars(max_length: int) -> int:
    return max(MEASURED_CHARS, 32 * max_length)


def token_lengths(rows: list[dict], tokenizer, max_chars: int = MEASURED_CHARS) -> list[int]:
    """Tokens per row (the longer sequence of a preference pair); a sequence longer than
    `max_chars` characters is counted on its start."""
    return [max(each, default=0) for each in sequence_lengths(rows, tokenizer, max_chars)]


def sequence_lengths(rows: list[dict], tokenizer, max_chars: int = MEASURED_CHARS) -> list[tuple[int, ...]]:
    """Tokens of each sequence training puts in front of the model for each row (`sequences`: a
    preference pair's two, prompt included in each)."""
    lengths: list[list[int]] = [[] for _ in rows]
    # a conversation's template writes its own special tokens; plain text gets the tokenizer's (a BOS), as
    # TRL tokenizes it (counted without, every text row was a token short where there is one)
    for plain in (False, True):
        texts, owner = [], []
        for i, row in enumerate(rows):
            for seq in sequences(row):
                if isinstance(seq, str) == plain:
                    texts.append(_render(seq, tokenizer)[:max_chars])
                    owner.append(i)
        if texts:
            for i, tokens in zip(owner, tokenizer(texts, add_special_tokens=plain)["input_ids"]):
                lengths[i].append(len(tokens))
    return [tuple(each) for each in lengths]


def length_stats(parquet: Path, tokenizer, max_length: int) -> dict:
    total = count_rows(parquet)
    rows = sample_rows(parquet)
    check_template(rows, tokenizer)
    lengths = token_lengths(rows, tokenizer, measured_chars(max_length))
    over = sum(n > max_length for n in lengths)
    return {
        "lengths": lengths, "measured": len(rows), "total": total, "max_length": max_length,
        "over": over if len(rows) == total else round(over * total / max(1, len(rows))),
        "estimated": len(rows) < total,
        "mean": statistics.fmean(lengths) if lengths else 0, "median": statistics.median(lengths) if lengths else 0,
        "longest": max(lengths, default=0),
    }


def render_example(row: dict, tokenizer, max_length: int) -> dict:
    """The row as training sees it: the context (not learned), the learned part, the token count.

    Mirrors TRL's SFT tokenization: a conversation's last reply is the completion, the prompt is
    rendered with the generation prompt, and the completion starts where the two token streams
    diverge; plain text is learned whole with EOS appended. A text longer than measured_chars is
    tokenized from its start only (what is shown is cut at max_length tokens anyway). A conversation of
    several replies learns each (pipelines/conversation.py): `runs` holds its (text, learned) stretches."""
    cut = measured_chars(max_length)
    check_template([row], tokenizer)
    if conversation.is_multi_reply(row):
        # every reply learned: context and replies alternate (where the template allows; else the last reply,
        # as training learns it). Cut first: a 5 MB conversation is not rendered whole once per reply
        ids, mask = conversation.reply_mask(conversation.cut(row["messages"], cut), tokenizer,
                                            row.get(conversation.UNTRAINED) or ())
        kept, learned = ids[:max_length], mask[:max_length]  # TRL keeps the start and cuts the end
        runs = conversation.stretches(kept, learned, tokenizer)
        return {"context": "".join(text for text, on in runs if not on),
                "learned": "".join(text for text, on in runs if on), "runs": runs, "tokens": len(ids),
                "context_tokens": len(kept) - sum(learned), "learned_tokens": sum(learned),
                "truncated": len(ids) > max_length}
    if "text" in row:
        full = tokenizer(_render(row["text"], tokenizer)[:cut], add_special_tokens=True)["input_ids"]
        prompt_len = 0
    elif "prompt" in row and "completion" not in row and "chosen" not in row:
        # reinforcement learning: the prompt is all there is; the model's own replies are scored
        full = tokenizer(tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)[:cut],
                         add_special_tokens=False)["input_ids"]
        prompt_len = len(full)
    else:
        if "messages" in row:
            prompt, completion = row["messages"][:-1], row["messages"][-1:]
        elif "chosen" in row and row.get("prompt"):
            prompt, completion = row["prompt"], row["chosen"]
        elif "chosen" in row and isinstance(row["chosen"], str):
            # implicit prompt in plain text: the prompt is what chosen and rejected start with
            prompt = os.path.commonprefix([row["chosen"], row["rejected"]])
            completion = row["chosen"][len(prompt):]
        elif "chosen" in row:
            prompt, completion = row["chosen"][:-1], row["chosen"][-1:]
        else:
            prompt, completion = row["prompt"], row["completion"]
        if isinstance(completion, str):
            prompt_ids = tokenizer(prompt[:cut], add_special_tokens=False)["input_ids"] if prompt else []
            full = prompt_ids + tokenizer((completion + (tokenizer.eos_token or ""))[:cut],
                                          add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = tokenizer(tokenizer.apply_chat_template(prompt, tokenize=False,
                                                                 add_generation_prompt=True)[:cut],
                                   add_special_tokens=False)["input_ids"]
            full = tokenizer(tokenizer.apply_chat_template(prompt + completion, tokenize=False)[:cut],
                             add_special_tokens=False)["input_ids"]
        prompt_len = 0
        while prompt_len < min(len(prompt_ids), len(full)) and prompt_ids[prompt_len] == full[prompt_len]:
            prompt_len += 1
    kept = full[:max_length]  # TRL keeps the start and cuts the end
    return {
        "context": tokenizer.decode(kept[:prompt_len]),
        "learned": tokenizer.decode(kept[prompt_len:]),
        "tokens": len(full),
        "context_tokens": min(prompt_len, len(kept)),
        "learned_tokens": len(kept) - min(prompt_len, len(kept)),
        "truncated": len(full) > max_length,
    }
