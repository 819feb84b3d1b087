"""The one error type for unusable input data, and how it says where the problem is."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, line/row and column."""


def where(path: Path | str, place: str | None = None, column: str | None = None) -> str:
    """'faq.csv, row 3, column 'answer'' — the start of every DataError message."""
    parts = [Path(path).name]
    if place:
        parts.append(place)
    if column is not None:
        parts.append(f"column '{column}'")
    return ", ".join(parts)
