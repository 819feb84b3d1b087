"""Text the person typed (a name, a prompt) or an error quoting it, shown as it is inside the page's Markdown:
a project named `Tone <img src=x>` showed a broken image, a dataset named `<b>test</b>` showed "test" in bold,
and a prompt's `<b>this</b>` came out bold in the chat (its `<script>…</script>` gone)."""

from __future__ import annotations

import html
import re

# what Markdown or HTML would read as markup in running text (each escaped with a backslash, which CommonMark
# allows before any ASCII punctuation; the others are left as typed)
_MARKUP = re.compile(r"([\\`*_\[\]{}<>#|~!&$])")


def literal(text) -> str:
    """A name inside a Markdown message, shown as typed: neither HTML nor Markdown."""
    return _MARKUP.sub(r"\\\1", str(text))


def quoted(err) -> str:
    """An error's message in a Markdown line: its own Markdown kept (*Start labeling*), HTML in what it quotes
    (a name, a file's line) shown as text."""
    return html.escape(str(err), quote=False)


VERBATIM_CLASS = "chat-verbatim"
_VERBATIM = re.compile(rf'<div class="{VERBATIM_CLASS}">(.*)</div>', re.S)


def verbatim(text: str) -> str:
    """A chat message shown as sent (spaces and line breaks too): one line of HTML, which Markdown passes on
    whole, its text escaped (a line break as &#10;, so no blank line ends the block)."""
    escaped = html.escape(text).replace("\r", "&#13;").replace("\n", "&#10;")
    return f'<div class="{VERBATIM_CLASS}">{escaped}</div>'


def unverbatim(shown: str) -> str:
    """`verbatim`'s text back, exactly as sent; any other text as it is."""
    match = _VERBATIM.fullmatch(shown)
    return html.unescape(match.group(1)) if match else shown
