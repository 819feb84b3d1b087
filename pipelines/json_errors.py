"""Malformed JSON said in plain words: what is wrong where Python's parser stopped, and the text there.

json's own messages name the parser's expectation ("Expecting property name enclosed in double quotes"),
not the slip that causes it: a trailing comma, single quotes, a line cut short. A user who exported
their data from a spreadsheet or wrote it by hand gets the slip named and sees the text it is in.
"""
import json

from pipelines.errors import code_span

CLOSERS = "}]"
SHOWN_BEFORE, SHOWN_AFTER = 24, 16  # characters of the text shown around the place
MARK = "▸"  # where the parser stopped, inside the shown text


def _before(doc: str, pos: int) -> str:
    """The last character before `pos` that is not white space ('' at the start)."""
    text = doc[max(0, pos - 1000):pos].rstrip()
    return text[-1:] if text else ""


def _slip(err: json.JSONDecodeError, unit: str) -> str:
    doc, pos, msg = err.doc, err.pos, err.msg
    here = doc[pos] if pos < len(doc) else ""
    ended = not doc[pos:].strip()
    if msg == "Expecting ',' delimiter":
        if ended:
            return f"the {unit} ends before the closing }} or ] (cut short?)"
        return "a comma is missing between two items, or a \" inside a text is not written as `\\\"`"
    if msg == "Expecting ':' delimiter":
        return "a colon is missing after a key"
    if msg.startswith("Expecting property name"):
        if here == "}" and _before(doc, pos) == ",":
            return "a comma before the closing }: JSON allows no comma after the last item"
        if here == "'":
            return "a key in single quotes: JSON needs double quotes"
        if here == ",":
            return "two commas in a row" if _before(doc, pos) == "," else "a comma with no item before it"
        if ended:
            return f"the {unit} ends inside an object (cut short?)"
        return "a key not in double quotes"
    if msg == "Expecting value":
        if ended:
            return f"the {unit} ends where a value should be (cut short?)" if doc.strip() else f"the {unit} is empty"
        if here in CLOSERS and _before(doc, pos) == ",":
            return f"a comma before the closing {here}: JSON allows no comma after the last item"
        if here == "'":
            return "text in single quotes: JSON needs double quotes"
        if here.isalpha():
            return "a word not in double quotes (only true, false and null are written without them)"
        return "a value is missing"
    if msg.startswith("Unterminated string"):
        return "a text opened with \" is never closed (a missing \" or a line cut short)"
    if msg.startswith("Invalid control character"):
        return "a line break or tab inside a text: write it as `\\n` or `\\t`"
    if msg == "Invalid \\uXXXX escape":
        return "\\u not followed by 4 hex digits"
    if msg.startswith("Invalid \\escape"):
        return "a backslash that starts no escape: write a backslash as `\\\\`"
    if msg == "Extra data":
        return f"more text after the end of the JSON value (two values in one {unit}?)"
    return msg  # a message this table does not know: json's own words


def _shown(err: json.JSONDecodeError) -> str:
    """The text of the line around the place, the place marked, cut with … where it goes on."""
    doc, pos = err.doc, err.pos
    start = doc.rfind("\n", 0, pos) + 1
    end = doc.find("\n", pos)
    end = len(doc) if end < 0 else end
    left, right = max(start, pos - SHOWN_BEFORE), min(end, pos + SHOWN_AFTER)
    text = ("…" if left > start else "") + doc[left:pos] + MARK + doc[pos:right] + ("…" if right < end else "")
    return text.replace("\r", "").replace("\t", " ")


def json_problem(err: json.JSONDecodeError, unit: str = "line") -> str:
    """One line: the character json stopped at, the slip in plain words, and the text there.
    `unit`: "line" for JSON Lines (each line is parsed alone), "file" for a JSON file."""
    said = f"malformed JSON at character {err.colno}: {_slip(err, unit)}"
    shown = _shown(err)
    return f"{said}; the text there: {code_span(shown)}" if shown.strip(MARK + " ") else said


class Repeated(dict):
    """A JSON object that names a key twice: `json` keeps the last value without a word, so
    {"content": "the answer", "content": ""} would lose the answer unseen."""
    key = ""


def _object(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set = set()
        value = Repeated(value)
        value.key = next(key for key, _v in pairs if key in seen or seen.add(key))
    return value


DECODER = json.JSONDecoder(object_pairs_hook=_object)


def repeated_key(value) -> str | None:
    """The key named twice in an object anywhere in `value` (None: none), looked for without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Repeated):
            return item.key
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def key_twice(key: str) -> str:
    return (f"the key '{key[:80]}' appears twice in one object, and only the last value would be kept; remove one "
            "or give it its own name")
