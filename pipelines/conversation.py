"""A conversation of several replies, tokenized so that training learns every reply, not only the last.

TRL learns a conversation as prompt/completion (the turns before its last reply, then that reply): the
replies before the last were context only, so a chat transcript taught one reply in several. Here the
whole conversation is one sequence and the mask covers each assistant turn, from after its generation
prompt to its end-of-turn token, as the prompt/completion path masks its one reply (the way Axolotl's
`roles_to_train` and LLaMA-Factory's multi-turn SFT learn every reply; TRL's own `assistant_only_loss`
needs `{% generation %}` markers that few chat templates have).

Each reply's bounds are found by rendering the conversation up to it, so they hold only for a template
that renders a conversation's start the same way whatever follows (ChatML, Llama 3, ...). Qwen3's writes
an empty think block into the last reply only, Mistral's puts the system text into the last user turn:
there a reply's bounds cannot be read, and the conversation is learned as TRL learns it, its last reply
(`keeps_prefixes` tries a run's first such conversation; `reply_mask` checks each row).
"""

from __future__ import annotations

ASSISTANT = "assistant"
UNTRAINED = "untrained"  # a row's replies marked weight 0 (pipelines/formats.py `weighted`): their message numbers


def replies(messages: list[dict]) -> int:
    """How many assistant turns a conversation has."""
    return sum(m.get("role") == ASSISTANT for m in messages)


def is_multi_reply(row: dict) -> bool:
    return "messages" in row and replies(row["messages"]) > 1


def _text(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def _ids(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    # as TRL tokenizes a conversation (trl.data_utils._tokenize): the template's own special tokens only
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                         add_generation_prompt=generation_prompt)["input_ids"]


def _within(text: str, start: str, eos: str | None) -> str | None:
    """`start` as it begins `text`: as rendered, or without the end-of-text token a template writes after a
    conversation that ends there (Phi-3's), or None."""
    if text.startswith(start):
        return start
    if eos and start.endswith(eos) and text.startswith(start[:-len(eos)]):
        return start[:-len(eos)]
    return None


def _bounds(messages: list[dict], tokenizer, text: str, untrained=()) -> list[tuple[int, int]] | None:
    """Each learned reply's (start, end) in the rendered text, or None where a start of the conversation renders
    otherwise than in the whole (the template is not prefix-preserving for it). `untrained`: the message
    numbers of replies marked weight 0, context only."""
    bounds, eos = [], getattr(tokenizer, "eos_token", None)
    for i, message in enumerate(messages):
        if message.get("role") != ASSISTANT or i == 0 or i in untrained:  # (a reply with nothing before it:
            continue                                                       # no prompt to answer)
        start = _within(text, _text(tokenizer, messages[:i], generation_prompt=True), eos)
        end = text if i == len(messages) - 1 else _within(text, _text(tokenizer, messages[:i + 1]), eos)
        if start is None or end is None or len(end) <= len(start):
            return None
        bounds.append((len(start), len(end)))
    return bounds


def last_reply_mask(messages: list[dict], tokenizer) -> tuple[list[int], list[int]]:
    """TRL's prompt/completion tokens of the conversation: its last reply learned, from where the tokens of
    the turns before it (with the generation prompt) and of the whole diverge."""
    prompt, ids = _ids(tokenizer, messages[:-1], generation_prompt=True), _ids(tokenizer, messages)
    start = next((n for n, (a, b) in enumerate(zip(prompt, ids)) if a != b), min(len(prompt), len(ids)))
    return ids, [0] * start + [1] * (len(ids) - start)


def reply_mask(messages: list[dict], tokenizer, untrained=()) -> tuple[list[int], list[int]]:
    """(input_ids, mask) of the whole conversation; the mask is 1 on every assistant reply's tokens, its
    end-of-turn included, and 0 on everything else (system, user and tool turns, each reply's generation
    prompt). The text is rendered once per reply and tokenized once: a token that runs across a reply's
    start is learned, as TRL's reply starts at the first token where its two token streams differ. Where
    the template renders a start of the conversation otherwise (or the tokenizer gives no character
    offsets): `last_reply_mask`. `untrained`: the message numbers of replies marked weight 0, left at 0."""
    ids, every, _last = reply_masks(messages, tokenizer, untrained)
    return ids, every


def reply_masks(messages: list[dict], tokenizer, untrained=()) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, every learned reply's mask, the last reply's mask): `reply_mask`, and the mask a held-out
    conversation is measured with (its last reply given the turns before it, the split's key; the import
    ends a conversation at its last learned reply)."""
    text = _text(tokenizer, messages)
    bounds = _bounds(messages, tokenizer, text, untrained) if getattr(tokenizer, "is_fast", False) else None
    if bounds == [] and untrained:  # (every reply in view marked weight 0: the Data tab's cut conversation)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, [0] * len(ids), [0] * len(ids)
    if not bounds:
        ids, mask = last_reply_mask(messages, tokenizer)
        return ids, mask, mask
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)

    def within(spans):
        return [int(any(start <= first < end or first < start < last for start, end in spans))
                for first, last in encoded["offset_mapping"]]

    return encoded["input_ids"], within(bounds), within(bounds[-1:])


def keeps_prefixes(tokenizer, messages: list[dict]) -> bool:
    """Whether the template renders the start of this conversation (a dataset's first of several replies) as it
    does inside the whole, so that each reply can be learned (`reply_mask`; it checks each row again)."""
    if not getattr(tokenizer, "is_fast", False):  # (no character offsets to place a reply by)
        return False
    try:
        return _bounds(messages, tokenizer, _text(tokenizer, messages)) is not None
    except Exception:  # noqa: BLE001  (a template that refuses the conversation: TRL's path says why)
        return False


LAST_REPLY = "last_reply_mask"  # the column `held_out` measures a conversation with


def tokenized(tokenizer):
    """A datasets-map function: a `messages` row as `input_ids` and `completion_mask` (TRL builds its labels
    from them, truncates and drops a row left with nothing to learn, as for its own tokenization), and its
    last reply's mask (`LAST_REPLY`), which `learned` or `held_out` drops."""
    def convert(row: dict) -> dict:
        ids, every, last = reply_masks(row["messages"], tokenizer, row.get(UNTRAINED) or ())
        return {"input_ids": ids, "completion_mask": every, LAST_REPLY: last}

    return convert


def learned(dataset):
    """Training rows: every reply learned."""
    return dataset.remove_columns(LAST_REPLY)


def held_out(dataset):
    """Held-out rows: measured on the last reply, given the turns before it. The split keeps a conversation
    whose last reply's context another learns a reply in on that one's side (`data.prompt_groups`); its earlier
    replies can share their context with trained ones (a greeting), and would be measured after being learned."""
    return dataset.remove_columns("completion_mask").rename_column(LAST_REPLY, "completion_mask")


def stretches(ids: list[int], mask: list[int], tokenizer) -> list[tuple[str, bool]]:
    """Tokens and their mask as (text, learned) runs in order: what the Data tab shows of a conversation."""
    runs: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            runs.append((tokenizer.decode(ids[start:i]), bool(mask[start])))
            start = i
    return runs


def cut(messages: list[dict], chars: int) -> list[dict]:
    """The conversation's first `chars` characters of content (what is shown is cut at the max length
    anyway): a 5 MB conversation is not rendered and tokenized whole, once per reply."""
    kept, left = [], chars
    for message in messages:
        if left <= 0:
            break
        content = str(message.get("content") or "")
        kept.append({**message, "content": content[:left]})
        left -= len(content)
    return kept
