"""Stored datasets as training reads them: rows, the answer-only form, the held-out split.

Reading and converting users' files lives in readers.py / formats.py / importer.py.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.errors import DataError  # noqa: F401  (the error type callers catch)

def load_rows(parquet: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(parquet).to_pylist()


def to_prompt_completion(row: dict) -> dict:
    """A `messages` row as conversational prompt/completion (TRL then learns the last reply only)."""
    if "messages" not in row:
        return row
    return {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}


def split(rows: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic held-out split; keeps at least one training row."""
    import random

    if eval_fraction <= 0 or len(rows) < 2:
        return rows, []
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(rows) - 1, max(1, round(len(rows) * eval_fraction)))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]
