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


# a code span: a run of backticks, text, the same run (CommonMark); its text is shown as it is, Markdown's
# renderer escaping it, so an escape of ours would show (&lt;)
_CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`)(.+?)(?<!`)\1(?!`)")  # (\` is a backtick, no span: Markdown's)


def quoted(err) -> str:
    """An error's message in a Markdown line: its own Markdown kept (*Start labeling*), HTML in what it quotes
    (a name, a file's line) shown as text; a file's text it quotes in a code span (`code`) left to the span."""
    text, parts, at = str(err), [], 0
    for span in _CODE_SPAN.finditer(text):
        parts += [html.escape(text[at:span.start()], quote=False), span.group(0)]
        at = span.end()
    return "".join(parts) + html.escape(text[at:], quote=False)


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
