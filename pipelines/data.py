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
    train, held = split_indices(len(rows), eval_fraction, seed)
    return [rows[i] for i in train], [rows[i] for i in held]


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """`split`'s choice as row numbers (training rows in order, held-out rows sorted)."""
    import random

    if eval_fraction <= 0 or n < 2:
        return list(range(n)), []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:min(n - 1, max(1, round(n * eval_fraction)))])
    return [i for i in range(n) if i not in held], sorted(held)


def training_datasets(dataset: dict, eval_fraction: float, seed: int, convert=None):
    """(training, held-out or None) as Arrow datasets read from the stored Parquet files, memory-mapped
    from a cache beside them: a 100k-row dataset never becomes one Python list. `convert` (a row ->
    row function, e.g. to_prompt_completion) runs as a datasets map, its result cached on disk too.
    The split is `split`'s, row for row."""
    from datasets import Dataset

    cache = Path(dataset["path"]).parent / ".arrow-cache"

    def read(path):
        ds = Dataset.from_parquet(str(path), cache_dir=str(cache))
        if convert is not None and "messages" in ds.column_names:
            ds = ds.map(convert, remove_columns=["messages"], desc=None)
        return ds

    rows = read(dataset["path"])
    if dataset.get("heldout_path"):  # the dataset brings its own held-out rows
        return rows, read(dataset["heldout_path"])
    train, held = split_indices(len(rows), eval_fraction, seed)
    if not held:
        return rows, None
    return rows.select(train), rows.select(held)
