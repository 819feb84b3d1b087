"""A conversation of several replies, tokenized so that training learns every reply, not only the last.

TRL learns a conversation as prompt/completion (the turns before its last reply, then that reply): the
replies before the last were context only, so a chat transcript taught one reply in several. Here the
whole conversation is one sequence and the mask covers each assistant turn, from after its generation
prompt to its end-of-turn token, as the prompt/completion path masks its one reply (the way Axolotl's
`roles_to_train` and LLaMA-Factory's multi-turn SFT learn every reply; TRL's own `assistant_only_loss`
needs `{% generation %}` markers that few chat templates have). Each reply's bounds are found by
rendering the conversation up to it, so any template that renders a conversation's start the same
way with or without what follows (ChatML, Llama 3, ...) is read right; where a prefix renders
differently, the reply starts where the two token streams diverge, as TRL's prompt/completion does.
"""

from __future__ import annotations

ASSISTANT = "assistant"


def replies(messages: list[dict]) -> int:
    """How many assistant turns a conversation has."""
    return sum(m.get("role") == ASSISTANT for m in messages)


def is_multi_reply(row: dict) -> bool:
    return "messages" in row and replies(row["messages"]) > 1


def _ids(tokenizer, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    # as TRL tokenizes a conversation (trl.data_utils._tokenize): the template's own special tokens only
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                         add_generation_prompt=generation_prompt)["input_ids"]


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def reply_mask(messages: list[dict], tokenizer) -> tuple[list[int], list[int]]:
    """(input_ids, mask) of the whole conversation; the mask is 1 on every assistant reply's tokens,
    its end-of-turn included, and 0 on everything else (system, user and tool turns, each reply's
    generation prompt). A single-reply conversation gets TRL's prompt/completion tokens and mask."""
    ids = _ids(tokenizer, messages)
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message.get("role") != ASSISTANT or i == 0:  # (a reply with nothing before it: no prompt to answer)
            continue
        start = _common(_ids(tokenizer, messages[:i], generation_prompt=True), ids)
        end = len(ids) if i == len(messages) - 1 else _common(_ids(tokenizer, messages[:i + 1]), ids)
        mask[start:end] = [1] * max(0, end - start)
    return ids, mask


def tokenized(tokenizer):
    """A datasets-map function: a `messages` row as `input_ids` and `completion_mask` (TRL builds its labels
    from them, truncates and drops a row left with nothing to learn, as for its own tokenization)."""
    def convert(row: dict) -> dict:
        ids, mask = reply_mask(row["messages"], tokenizer)
        return {"input_ids": ids, "completion_mask": mask}

    return convert


def stretches(ids: list[int], mask: list[int], tokenizer) -> list[tuple[str, bool]]:
    """Tokens and their mask as (text, learned) runs in order: what the Data tab shows of a conversation."""
    runs: list[tuple[str, bool]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            runs.append((tokenizer.decode(ids[start:i]), bool(mask[start])))
            start = i
    return runs
