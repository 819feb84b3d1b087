"""Reading user data into TRL's canonical columns, with one-sentence errors.

SFT rows are either conversational (`messages`: a list of {role, content}) or
`prompt`/`completion` (strings, or lists of messages). Every problem is reported as
"FILE, line N, column C: what was wrong; what was expected".
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

ROLES = ("system", "user", "assistant")
SFT_COLUMNS = ("messages", "prompt", "completion")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, line and column."""


def _where(path: Path, line: int | None = None, column: str | None = None) -> str:
    parts = [Path(path).name]
    if line is not None:
        parts.append(f"line {line}")
    if column is not None:
        parts.append(f"column '{column}'")
    return ", ".join(parts)


def _check_messages(value, path: Path, line: int, column: str) -> list[dict]:
    where = _where(path, line, column)
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: expected a non-empty list of {{role, content}} messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or "role" not in msg or "content" not in msg:
            raise DataError(f"{where}: message {i + 1} must be an object with 'role' and 'content'")
        role, content = msg["role"], msg["content"]
        if role not in ROLES:
            raise DataError(f"{where}: message {i + 1} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{where}: message {i + 1} ({role}) has empty or non-text content")
        out.append({"role": role, "content": content})
    return out


def _check_text(value, path: Path, line: int, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{_where(path, line, column)}: expected non-empty text")
    return value


def _canonical_sft(row, path: Path, line: int) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{_where(path, line)}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        msgs = _check_messages(row["messages"], path, line, "messages")
        if msgs[-1]["role"] != "assistant":
            raise DataError(
                f"{_where(path, line, 'messages')}: the last message must be the assistant's reply"
            )
        return {"messages": msgs}
    if "prompt" in row and "completion" in row:
        out = {}
        for col in ("prompt", "completion"):
            value = row[col]
            out[col] = (
                _check_messages(value, path, line, col) if isinstance(value, list)
                else _check_text(value, path, line, col)
            )
        if isinstance(out["prompt"], list) != isinstance(out["completion"], list):
            raise DataError(
                f"{_where(path, line)}: 'prompt' and 'completion' must both be text or both be message lists"
            )
        return out
    found = ", ".join(sorted(row)) or "none"
    raise DataError(
        f"{_where(path, line)}: found columns {found}; expected 'messages' or 'prompt' and 'completion'"
    )


def read_sft_jsonl(path: Path) -> list[dict]:
    """Read a JSONL file of SFT examples into canonical rows, or raise DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    rows = []
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DataError(f"{_where(path, number)}: not valid UTF-8 text; save the file as UTF-8") from None
            if not text.strip():
                continue
            try:
                row = json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as err:
                raise DataError(f"{_where(path, number)}: malformed JSON ({err.msg} at character {err.pos + 1})") from None
            rows.append(_canonical_sft(row, path, number))
    if not rows:
        raise DataError(f"{path.name}: no examples found; expected one JSON object per line")
    kinds = {"messages" in r for r in rows}
    if len(kinds) > 1:
        raise DataError(f"{path.name}: mixes 'messages' rows with 'prompt'/'completion' rows; use one format")
    return rows


def write_dataset(rows: list[dict], dest: Path) -> Path:
    """Write canonical rows as `dest/data.parquet`, atomically (all or nothing)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=dest.parent))
    try:
        pq.write_table(pa.Table.from_pylist(rows), tmp / "data.parquet")
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / "data.parquet"


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
