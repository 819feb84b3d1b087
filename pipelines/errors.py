"""The one error type for unusable input data, and how it says where the problem is."""

from __future__ import annotations

import re
from pathlib import Path


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, line/row and column."""
    one_sentence = True  # a job's failure shows it as it is, without "DataError: " (pipelines/run.py)


def skippable(err: DataError) -> DataError:
    """`err`, marked as one row's problem, which the import's *Skip rows that cannot be read* (`--skip-bad-rows`)
    would have left out: the refusal can say so."""
    err.skippable = True
    return err


def where(path: Path | str, place: str | None = None, column: str | None = None) -> str:
    """'faq.csv, row 3, column 'answer'' — the start of every DataError message."""
    parts = [Path(path).name]
    if place:
        parts.append(place)
    if column is not None:
        parts.append(f"column '{column}'")
    return ", ".join(parts)


def code_span(text: str) -> str:
    """`text` as a Markdown code span, shown exactly: the fence is longer than any run of backticks in it, and
    spaced from a backtick at either end (CommonMark strips one space each side)."""
    longest = max(map(len, re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"
