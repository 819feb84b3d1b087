"""What the runs a run continues trained on, so that its held-out rows are ones none of them trained on.

A second *Train on these preferences* builds a new dataset from all the votes, the first run's
included, and starts from the first run: split like any dataset, its held-out pairs could be pairs
the model it starts from had trained on, and its held-out accuracy read high for that alone. A run
that starts from another run's result (on another dataset file: one on the same file reuses its
parent's split, `data._run_heldout`) holds out only rows whose prompt no run behind it trained on.

The runs behind it are the runs recorded as parents (a run's result picked as the start, Continue
training), read from each run's dataset less the rows it held out; a dataset deleted since was read
into its runs' folders first (`keep_trained`). A model exported from a run and loaded as a folder
has no parent recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MAX_ANCESTORS = 50  # a chain of runs longer than this is read this far back
TRAINED = "trained_prompts.bin"  # in a run's folder: its trained prompts' digests, kept when its dataset went
DIGEST = 16  # bytes


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
    return hashlib.blake2b(json.dumps(prompt, ensure_ascii=False, default=str).encode(), digest_size=DIGEST).digest()


def learned(row: dict) -> list[bytes]:
    """The digests of every context a row teaches a reply in: its prompt (`digest`) and, for a conversation of
    several replies, the turns before each earlier learned reply (pipelines/conversation.py learns them all): a
    run that continues on other data must not hold out a question its parent learned to answer there."""
    from pipelines.data import earlier_turns

    found = [digest(row), *(digest({"prompt": turns}) for turns in earlier_turns(row))]
    return [d for d in found if d is not None]


def _read(parquet: Path, of, batch_rows: int) -> list:
    """`of(row)` for each row of a stored dataset, read a batch at a time and only its prompt columns; None for
    each row of raw text."""
    import pyarrow.parquet as pq

    from pipelines.data import PROMPT_COLUMNS

    table = pq.ParquetFile(parquet)
    columns = [c for c in PROMPT_COLUMNS if c in table.schema_arrow.names]
    if not columns:  # raw text
        return [None] * table.metadata.num_rows
    return [of(row) for batch in table.iter_batches(batch_size=batch_rows, columns=columns)
            for row in batch.to_pylist()]


def stored_digests(parquet: Path, batch_rows: int = 2048) -> list[bytes | None]:
    """`digest` of each row of a stored dataset (the prompt a held-out row is measured on)."""
    return _read(parquet, digest, batch_rows)


def stored_learned(parquet: Path, batch_rows: int = 2048) -> list[list[bytes] | None]:
    """`learned` of each row of a stored dataset (what a run on it trained on)."""
    return _read(parquet, learned, batch_rows)


def _trained(run_dir: Path, taught: list[list[bytes] | None]) -> set[bytes]:
    """The prompts a run trained on, of its dataset's rows' `learned` digests: all but the rows it held out
    (all of them where it kept no split: older runs, a dataset with its own held-out file)."""
    from pipelines.data import _kept

    held = set(_kept(run_dir, len(taught)) or ())
    return {d for i, row in enumerate(taught) if i not in held for d in row or ()}


def keep_trained(run_dir: Path, taught: list[list[bytes] | None]) -> None:
    """Before a run's dataset is deleted: the prompts it trained on (`taught`: the dataset's rows' `learned`
    digests), kept in its folder for the runs that start from it later (`trained_by`)."""
    tmp = Path(run_dir) / f".{TRAINED}.{os.getpid()}.tmp"
    tmp.write_bytes(b"".join(sorted(_trained(run_dir, taught))))
    os.replace(tmp, Path(run_dir) / TRAINED)


def trained_prompts(run_dir: Path) -> set[bytes]:
    """The prompts the runs this one continues trained on (`trained_by` its parent)."""
    from pipelines.events import JOB, read_json

    return trained_by(Path(run_dir).parent, (read_json(Path(run_dir) / JOB) or {}).get("parent_id"))


def trained_by(runs: Path, run_id: str | None) -> set[bytes]:
    """The prompts a run (a folder under `runs`) and the runs behind it trained on: its parent, the
    parent's parent and so on (each dataset file read once)."""
    from pipelines.events import JOB, read_json

    seen: set[bytes] = set()
    read: dict[str, list] = {}
    for _ in range(MAX_ANCESTORS):
        if not run_id:
            break
        folder = Path(runs) / run_id
        job = read_json(folder / JOB) or {}
        path = (job.get("dataset") or {}).get("path")
        if (folder / TRAINED).exists():
            kept = (folder / TRAINED).read_bytes()
            seen.update(kept[i:i + DIGEST] for i in range(0, len(kept), DIGEST))
        elif path and Path(path).exists():
            if path not in read:
                read[path] = stored_learned(Path(path))
            seen |= _trained(folder, read[path])
        run_id = job.get("parent_id")
    return seen


def untrained_rows(seen: set[bytes], digests: list[bytes | None]) -> list[int] | None:
    """The row numbers (of the rows whose `digest`s these are) whose prompt is not among the `seen`
    ones; None when that is every row (no run behind, or nothing in common)."""
    fresh = [i for i, d in enumerate(digests) if d is None or d not in seen]
    return fresh if len(fresh) < len(digests) else None
