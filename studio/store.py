"""The catalogue: the only module that speaks SQL (SQLite, WAL mode)."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    rows INTEGER NOT NULL,
    source_name TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    created REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    voter TEXT NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    winner TEXT NOT NULL CHECK (winner IN ('a', 'b', 'tie', 'both_bad')),
    blind INTEGER NOT NULL,
    prompt_a TEXT NOT NULL,
    prompt_b TEXT NOT NULL,
    reply_a TEXT NOT NULL,
    reply_b TEXT NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset_id TEXT REFERENCES datasets(id),
    status TEXT NOT NULL,
    error TEXT,
    params TEXT NOT NULL,
    parent_id TEXT REFERENCES runs(id),
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""

DATASET_COLUMNS = ("id", "name", "kind", "rows", "source_name", "source_sha256", "path", "created", "meta")
RUN_COLUMNS = ("id", "method", "model", "dataset_id", "status", "error", "params", "parent_id",
               "created", "updated")


class Store:
    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            # workspaces made before datasets had metadata
            if "meta" not in {r["name"] for r in db.execute("PRAGMA table_info(datasets)")}:
                db.execute("ALTER TABLE datasets ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'")

    @contextmanager
    def _connect(self):
        # A connection per operation: safe across Gradio's worker threads.
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    # datasets
    def add_dataset(self, **row) -> None:
        row.setdefault("created", time.time())
        row["meta"] = json.dumps(row.get("meta") or {})
        cols = ", ".join(DATASET_COLUMNS)
        marks = ", ".join("?" for _ in DATASET_COLUMNS)
        with self._connect() as db:
            db.execute(f"INSERT INTO datasets ({cols}) VALUES ({marks})", [row[c] for c in DATASET_COLUMNS])

    def get_dataset(self, dataset_id: str) -> dict | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return _dataset(found) if found else None

    def find_datasets_by_hash(self, sha256: str) -> list[dict]:
        with self._connect() as db:
            found = db.execute("SELECT * FROM datasets WHERE source_sha256 = ? ORDER BY created", (sha256,))
            return [_dataset(r) for r in found]

    def set_dataset_origin(self, dataset_id: str, origin: dict) -> None:
        """Where a dataset came from (e.g. which chat votes), kept in its metadata for lineage."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # read-modify-write of one row: no other writer between
            found = db.execute("SELECT meta FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
            meta = {**json.loads(found["meta"] or "{}"), "origin": origin}
            db.execute("UPDATE datasets SET meta = ? WHERE id = ?", (json.dumps(meta), dataset_id))

    def list_datasets(self) -> list[dict]:
        with self._connect() as db:
            return [_dataset(r) for r in db.execute("SELECT * FROM datasets ORDER BY created DESC")]

    # votes: model_a was shown on side A (left), model_b on side B; prompt_* is each side's
    # conversation up to the last user message (earlier replies differ between the sides)
    def add_vote(self, **vote) -> int:
        vote = {"created": time.time(), **vote}
        for key in VOTE_JSON:
            vote[key] = json.dumps(vote[key])
        vote["blind"] = int(bool(vote["blind"]))
        cols = VOTE_COLUMNS
        with self._connect() as db:
            cur = db.execute(f"INSERT INTO votes ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                             [vote[c] for c in cols])
            return cur.lastrowid

    def list_votes(self) -> list[dict]:
        with self._connect() as db:
            return [_vote(r) for r in db.execute("SELECT * FROM votes ORDER BY id")]

    # runs
    def add_run(self, **row) -> None:
        now = time.time()
        row = {"error": None, "parent_id": None, "created": now, "updated": now, **row}
        row["params"] = json.dumps(row["params"])
        cols = ", ".join(RUN_COLUMNS)
        marks = ", ".join("?" for _ in RUN_COLUMNS)
        with self._connect() as db:
            db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", [row[c] for c in RUN_COLUMNS])

    def update_run_status(self, run_id: str, status: str, error: str | None) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, updated = ? WHERE id = ?",
                (status, error, time.time(), run_id),
            )

    def get_run(self, run_id: str) -> dict | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return _run(found) if found else None

    def list_runs(self) -> list[dict]:
        with self._connect() as db:
            return [_run(r) for r in db.execute("SELECT * FROM runs ORDER BY created DESC")]


VOTE_COLUMNS = ("created", "voter", "model_a", "model_b", "winner", "blind", "prompt_a", "prompt_b",
                "reply_a", "reply_b", "settings")
VOTE_JSON = ("prompt_a", "prompt_b", "settings")


def _vote(row: sqlite3.Row) -> dict:
    out = dict(row)
    for key in VOTE_JSON:
        out[key] = json.loads(out[key])
    out["blind"] = bool(out["blind"])
    return out


def _dataset(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["meta"] = json.loads(out["meta"] or "{}")
    return out


def _run(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["params"] = json.loads(out["params"])
    return out
