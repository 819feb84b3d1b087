"""An Ollama Modelfile beside a GGUF file: FROM, TEMPLATE (the model's chat template translated to
the Go template Ollama renders), stop parameters and the system prompt.

A Jinja chat template cannot be translated in general, but chat templates wrap each message the
same way every time: a role's prefix, the content, a suffix. We find those pieces by rendering
conversations with marker contents through the model's own template (transformers'
`apply_chat_template`), then write them into the shape of Ollama's own templates
(ollama/ollama template/*.gotmpl: `.System` first, then `range .Messages`, the assistant's prefix
after the last message). A template whose pieces do not repeat that way is refused in one sentence.
What Ollama hands the template is in ollama/ollama template/template.go (`Execute`, `collate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.export import ExportError

_MARK = {"system": "SYSTEM-MARK-7f3a", "user": "USER-MARK-1c9e", "assistant": "ASSIST-MARK-4b2d",
         "user2": "USER-MARK-2d8f"}


@dataclass(frozen=True)
class ChatPieces:
    """How the chat template wraps each message."""
    start: str  # once at the very beginning (e.g. a begin-of-text token), before any system block
    system: tuple[str, str]  # (prefix, suffix) around a system message
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str  # what starts the model's reply
    default_system: str  # the system text the template puts in when the conversation has none
    system_always: bool = False  # the template writes its system block into every prompt (Llama 3.1's dates)


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer itself puts BOS in front of any text (Llama 3's does, SmolLM2's does not).
    The GGUF records it (tokenizer.ggml.add_bos_token), and llama.cpp and Ollama then add BOS to every
    prompt they tokenize."""
    first = tokenizer("a")["input_ids"][:1]
    return tokenizer.bos_token_id is not None and first == [tokenizer.bos_token_id]


def _render(tokenizer, messages, generation=False) -> str:
    """The chat template's text, less a leading BOS that Ollama's tokenizer adds anyway: a template that
    writes {{ bos_token }} itself (Llama 3's) gave every prompt two, a start the model never saw."""
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    except TemplateError as err:  # the template's own raise_exception ("System role not supported")
        roles = " then ".join(m["role"] for m in messages)
        raise ExportError(f"the chat template stops with its own error on a conversation of {roles} "
                          f"({str(err).strip()}), so it cannot be translated for Ollama; write the Modelfile's "
                          "TEMPLATE by hand") from None
    bos = tokenizer.bos_token
    return text[len(bos):] if bos and text.startswith(bos) and adds_bos(tokenizer) else text


def _around(text: str, mark: str) -> tuple[str, str]:
    if text.count(mark) != 1:
        raise ExportError("the chat template repeats or drops message text, so it cannot be translated "
                          "for Ollama; write the Modelfile's TEMPLATE by hand")
    before, after = text.split(mark)
    return before, after


def chat_pieces(tokenizer) -> ChatPieces:
    if not getattr(tokenizer, "chat_template", None):
        raise ExportError("the model has no chat template, so Ollama would not know how to lay out a "
                          "conversation; use a model with a chat template (an instruct model)")
    m = _MARK
    user = [{"role": "user", "content": m["user"]}]
    both = user + [{"role": "assistant", "content": m["assistant"]}]
    three = both + [{"role": "user", "content": m["user2"]}]
    one, two, turn3 = _render(tokenizer, user), _render(tokenizer, both), _render(tokenizer, three)
    if not (two.startswith(one) and turn3.startswith(two)):
        raise ExportError("the chat template rewrites earlier turns as the conversation grows, so it cannot "
                          "be translated for Ollama; write the Modelfile's TEMPLATE by hand")
    user_prefix, user_suffix = _around(turn3[len(two):], m["user2"])
    assistant = _around(two[len(one):], m["assistant"])
    prompted = _render(tokenizer, user, generation=True)
    if not prompted.startswith(one):  # its cut would be some other text, silently wrong in the TEMPLATE
        raise ExportError("the chat template rewrites the last message when it adds the reply's opening, so it "
                          "cannot be translated for Ollama; write the Modelfile's TEMPLATE by hand")
    generation = prompted[len(one):]
    head, rest = _around(one, m["user"])
    bos = tokenizer.bos_token
    if bos and user_prefix.startswith(bos) and not head.endswith(user_prefix) and adds_bos(tokenizer):
        raise ExportError(f"the chat template starts each turn with its own begin-of-text token ('{bos}', as "
                          "Llama 2's '<s>[INST]'), which Ollama adds only once, so it cannot be translated for "
                          "Ollama; write the Modelfile's TEMPLATE by hand")
    if not head.endswith(user_prefix) or rest != user_suffix:
        raise ExportError("the chat template wraps the first message differently from later ones, so it "
                          "cannot be translated for Ollama; write the Modelfile's TEMPLATE by hand")
    head = head[:len(head) - len(user_prefix)]  # what comes before the first user message
    with_system = _render(tokenizer, [{"role": "system", "content": m["system"]}] + user)
    system_block, _ = _around(with_system, m["user"])
    if not system_block.endswith(user_prefix):  # Llama 2's [INST] <<SYS>> ... <</SYS>> user [/INST]
        raise ExportError("the chat template puts the system message inside the first user message, so it "
                          "cannot be translated for Ollama; write the Modelfile's TEMPLATE by hand")
    system_block = system_block[:len(system_block) - len(user_prefix)]
    system_prefix, system_suffix = _around(system_block, m["system"])
    start, default, always = "", "", False
    if (head.startswith(system_prefix) and head.endswith(system_suffix)
            and len(head) >= len(system_prefix) + len(system_suffix)):
        # the template puts in a system message of its own when the conversation has none (maybe an
        # empty one, inside a block it always writes: Llama 3.1's dates)
        default, always = head[len(system_prefix):len(head) - len(system_suffix)], True
    else:
        # what comes first either way (a begin-of-text token) belongs before the system block
        start = _common_prefix(system_prefix, head)
        if head != start:
            raise ExportError("the chat template adds text before the conversation that is not a system "
                              "message, so it cannot be translated for Ollama; write the TEMPLATE by hand")
        system_prefix = system_prefix[len(start):]
    return ChatPieces(start, (system_prefix, system_suffix), (user_prefix, user_suffix), assistant,
                      generation, default, always)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _go(text: str) -> str:
    """Literal text inside a Go template: only a '{{' could be mistaken for an action."""
    return text.replace("{{", '{{ "{{" }}')


def go_template(pieces: ChatPieces) -> str:
    """The Go template Ollama renders: system (from .System, which Ollama fills from the request's
    system messages or the Modelfile's SYSTEM; the block written even when empty where the chat template
    always writes it), then each message, then the reply's start. No whitespace-trimming actions
    ({{- ... -}}): the literal pieces keep their newlines exactly."""
    s, u, a = pieces.system, pieces.user, pieces.assistant
    system = f"{_go(s[0])}{{{{ .System }}}}{_go(s[1])}"
    return (
        f"{_go(pieces.start)}"
        f"{system if pieces.system_always else '{{ if .System }}' + system + '{{ end }}'}"
        "{{ range $i, $_ := .Messages }}"
        "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        f"{{{{ if eq .Role \"user\" }}}}{_go(u[0])}{{{{ .Content }}}}{_go(u[1])}"
        f"{{{{ else if eq .Role \"assistant\" }}}}{_go(a[0])}{{{{ .Content }}}}"
        f"{{{{ if not $last }}}}{_go(a[1])}{{{{ end }}}}"
        "{{ end }}"
        f"{{{{ if and $last (ne .Role \"assistant\") }}}}{_go(pieces.generation)}{{{{ end }}}}"
        "{{ end }}"
    )


def stop_words(pieces: ChatPieces, tokenizer) -> list[str]:
    """Where a reply ends: the special tokens closing an assistant message, and end of text."""
    special = set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values()
                                                   if t.special}
    found = [token for token in sorted(special, key=len, reverse=True)
             if token and (token in pieces.assistant[1] or token in pieces.user[0])]
    if tokenizer.eos_token:
        found.append(tokenizer.eos_token)
    return list(dict.fromkeys(found))


def _quoted(text: str, what: str) -> str:
    # Ollama's parser ends a triple-quoted value at the first three quotes in a row, so a quote
    # inside them, or right before the closing ones, would cut the value short
    if '"""' in text or text.endswith('"'):
        raise ExportError(f"the {what} contains three double quotes in a row or ends with a double quote, "
                          "which a Modelfile cannot hold; rephrase it")
    return f'"""{text}"""'


def check_system(system: str | None) -> None:
    if system and system.strip():
        _quoted(system, "system prompt")


def modelfile(gguf_name: str, tokenizer, system: str | None = None, params: dict | None = None) -> str:
    """The Modelfile's text; `system` replaces the template's own default system message."""
    pieces = chat_pieces(tokenizer)
    lines = [f"# Made by Tune Studio. Create the model with:  ollama create NAME -f Modelfile",
             f"FROM ./{gguf_name}",
             f"TEMPLATE {_quoted(go_template(pieces), 'chat template')}"]
    system = system if system is not None and system.strip() else pieces.default_system
    if system:
        lines.append(f"SYSTEM {_quoted(system, 'system prompt')}")
    for word in stop_words(pieces, tokenizer):
        lines.append(f'PARAMETER stop "{word}"')
    for key, value in (params or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def write_modelfile(folder: Path, text: str) -> Path:
    path = Path(folder) / "Modelfile"
    tmp = path.with_name(".Modelfile.tmp")
    tmp.write_text(text)
    tmp.rename(path)
    return path
