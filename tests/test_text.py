"""Typed text shown as typed in the page's Markdown (components/text.py): the escapes, and a chat prompt's way
to the page and back, exact for any text."""

from __future__ import annotations

import random

from components.chat_tab import plain, shown
from components.text import literal, quoted, unverbatim, verbatim
from pipelines.errors import code_span


def test_a_name_is_escaped_for_markdown_and_an_error_keeps_its_own_markdown():
    assert literal("Tone <img src=x> *x* _y_ [a](b) `c` #1 a|b ~s~ & \\") == \
        r"Tone \<img src=x\> \*x\* \_y\_ \[a\](b) \`c\` \#1 a\|b \~s\~ \& \\"
    assert literal("How long is the warranty?") == "How long is the warranty?"  # plain text as it is
    assert quoted("a project named 'Tone <img src=x>' already exists; press *Start*") == \
        "a project named 'Tone &lt;img src=x&gt;' already exists; press *Start*"
    # a file's text quoted in a code span is left to the span (Markdown shows it as it is; an escape would show)
    assert quoted("x <b>.jsonl, line 2: malformed; the text there: ``{\"a\": \"<b>`c`\"▸,}`` and <i>") == \
        "x &lt;b&gt;.jsonl, line 2: malformed; the text there: ``{\"a\": \"<b>`c`\"▸,}`` and &lt;i&gt;"
    assert quoted("two `<a>` and `<b>`, a lone ` <c>") == "two `<a>` and `<b>`, a lone ` &lt;c&gt;"
    # a backtick after a backslash is a backtick to Markdown, no span: what follows is escaped (a name typed as
    # x\`<img src=x>` left the image's HTML to the page)
    assert quoted("found columns x\\`<img src=x>`") == "found columns x\\`&lt;img src=x&gt;`"
    assert [code_span(t) for t in ("a<b", "a`b", "`a", " a ", "x``y")] == \
        ["`a<b`", "``a`b``", "`` `a ``", "`  a  `", "```x``y```"]


def test_a_prompt_comes_back_from_the_page_exactly_as_sent():
    sent = "Is <b>this</b> bold?\n\n    indented &amp; &#10; \"q\" 's'\r\nend"
    assert verbatim(sent).count("\n") == 0  # one line: no blank line ends the HTML block
    assert unverbatim(verbatim(sent)) == sent
    assert unverbatim("a reply in **Markdown**") == "a reply in **Markdown**"
    rng = random.Random(0)
    alphabet = "ab <>&#;\n\r\t\"'\\*_`[]()!|~$=-10" + "é✨"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert unverbatim(verbatim(text)) == text, repr(text)
    history = [{"role": "user", "content": sent}, {"role": "assistant", "content": "A <b>bold</b> reply."}]
    on_page = shown(history)
    assert on_page[0]["content"] == verbatim(sent) and on_page[1] == history[1]  # replies render as Markdown
    assert plain(on_page) == history
