"""What the runs a run continues trained on, so that its held-out rows are ones none of them trained on.

A second *Train on these preferences* builds a new dataset from all the votes, the first run's
included, and starts from the first run: split like any dataset, its held-out pairs could be pairs
the model it starts from had trained on, and its held-out accuracy read high for that alone. A run
that starts from another run's result (on another dataset file: one on the same file reuses its
parent's split, `data._run_heldout`) holds out only rows whose prompt no run behind it trained on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MAX_ANCESTORS = 50  # a chain of runs longer than this is read this far back


def prompt_of(row: dict):
    """A row's prompt as runs on any dataset kind share it: the text of each turn before the reply (a
    single user turn as its text, so a plain prompt and a one-turn chat match); None for a row with no
    prompt (raw text), which never matches another."""
    from pipelines.data import row_prompt

    prompt = row_prompt(row)
    if isinstance(prompt, list):
        turns = [(str(m.get("role")), str(m.get("content") or "").strip()) for m in prompt if isinstance(m, dict)]
        prompt = turns[0][1] if len(turns) == 1 and turns[0][0] == "user" else turns
    if isinstance(prompt, str):
        prompt = prompt.strip()
    return prompt or None


def digest(row: dict) -> bytes | None:
    prompt = prompt_of(row)
    if prompt is None:
        return None
    return hashlib.blake2b(json.dumps(prompt, ensure_ascii=False).encode(), digest_size=16).digest()


def stored_digests(parquet: Path, batch_rows: int = 2048) -> list[bytes | None]:
    """`digest` of each row of a stored dataset, read a batch at a time and only its prompt columns."""
    import pyarrow.parquet as pq

    from pipelines.data import PROMPT_COLUMNS

    table = pq.ParquetFile(parquet)
    columns = [c for c in PROMPT_COLUMNS if c in table.schema_arrow.names]
    if not columns:  # raw text
        return [None] * table.metadata.num_rows
    return [digest(row) for batch in table.iter_batches(batch_size=batch_rows, columns=columns)
            for row in batch.to_pylist()]


def trained_prompts(run_dir: Path) -> set[bytes]:
    """The prompts the runs this one continues trained on (`trained_by` its parent)."""
    from pipelines.events import JOB, read_json

    return trained_by(Path(run_dir).parent, (read_json(Path(run_dir) / JOB) or {}).get("parent_id"))


def trained_by(runs: Path, run_id: str | None) -> set[bytes]:
    """The prompts a run (a folder under `runs`) and the runs behind it trained on: its parent, the
    parent's parent and so on, each on its dataset less the rows it held out (all of them where it
    kept no split: older runs)."""
    from pipelines.data import _kept
    from pipelines.events import JOB, read_json

    seen: set[bytes] = set()
    for _ in range(MAX_ANCESTORS):
        if not run_id:
            break
        job = read_json(Path(runs) / run_id / JOB) or {}
        path = (job.get("dataset") or {}).get("path")
        if path and Path(path).exists():  # (a deleted dataset's rows are gone: nothing to match)
            digests = stored_digests(Path(path))
            held = set(_kept(Path(runs) / run_id, len(digests)) or ())
            seen.update(d for i, d in enumerate(digests) if d is not None and i not in held)
        run_id = job.get("parent_id")
    return seen


def untrained_rows(seen: set[bytes], digests: list[bytes | None]) -> list[int] | None:
    """The row numbers (of the rows whose `digest`s these are) whose prompt is not among the `seen`
    ones; None when that is every row (no run behind, or nothing in common)."""
    fresh = [i for i, d in enumerate(digests) if d is None or d not in seen]
    return fresh if len(fresh) < len(digests) else None
