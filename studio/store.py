"""The catalogue: the only module that speaks SQL (SQLite, WAL mode)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from pipelines.events import ACTIVE_STATUSES

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
    settings TEXT NOT NULL,
    turn TEXT
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
-- labeling: a project holds items (a prompt and two answers); a labeler holds an item while it is
-- on their screen (an assignment) and leaves one label per item
CREATE TABLE IF NOT EXISTS label_projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    overlap INTEGER NOT NULL CHECK (overlap >= 1),
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    job_id TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS label_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL REFERENCES label_projects(id),
    position INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    answer_a TEXT NOT NULL,
    answer_b TEXT NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    labels INTEGER NOT NULL DEFAULT 0,
    UNIQUE (project_id, position)
);
CREATE INDEX IF NOT EXISTS label_items_fill ON label_items (project_id, labels, position);
CREATE TABLE IF NOT EXISTS label_assignments (
    item_id INTEGER NOT NULL REFERENCES label_items(id),
    labeler TEXT NOT NULL,
    project_id TEXT NOT NULL,
    assigned REAL NOT NULL,
    PRIMARY KEY (item_id, labeler)
);
CREATE INDEX IF NOT EXISTS label_assignments_holder ON label_assignments (project_id, labeler, assigned);
CREATE TABLE IF NOT EXISTS label_labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES label_items(id),
    project_id TEXT NOT NULL,
    labeler TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad', 'skip')),
    flipped INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    seconds REAL,
    created REAL NOT NULL,
    UNIQUE (item_id, labeler)
);
CREATE INDEX IF NOT EXISTS label_labels_by ON label_labels (project_id, labeler, id);
-- exports: models and files made from runs and models (merged, merged with each other, GGUF); each
-- is a job in runs/<id>/ whose status is mirrored here like a run's
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('merged', 'merge', 'gguf')),
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""


class DatasetGone(LookupError):
    """A run asked to be added on a dataset deleted meanwhile; args[0] is its id."""


# A writer waits this long for another writer before SQLite gives up with "database is locked".
BUSY_TIMEOUT_S = 60
# An item on a labeler's screen counts towards its overlap this long; after that (the labeler went
# away) others may take it, and the holder's label is still accepted if it comes.
LEASE_S = 600


def _holders(db, item_id: int, labeler: str, now: float) -> int:
    """Others who hold the item now (their hold has not lapsed)."""
    return db.execute("SELECT COUNT(*) FROM label_assignments WHERE item_id = ? AND labeler != ? AND assigned > ?",
                      (item_id, labeler, now - LEASE_S)).fetchone()[0]


DATASET_COLUMNS = ("id", "name", "kind", "rows", "source_name", "source_sha256", "path", "created", "meta")
RUN_COLUMNS = ("id", "method", "model", "dataset_id", "status", "error", "params", "parent_id",
               "created", "updated")


class Store:
    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        # Writers in this process (Gradio's worker threads) queue here rather than in SQLite's busy
        # handler, which polls with sleeps of up to 100 ms and lets newcomers overtake: with 20
        # labelers at once that made p95 submit ~750 ms and the worst 5 s (bench/label_reliability.py).
        # Other processes (the CLI) still meet at SQLite's lock, waiting up to BUSY_TIMEOUT_S.
        self._write_lock = threading.Lock()
        self._local = threading.local()
        with self._connect() as db:
            _wal(db, self.db_path)
            db.executescript(SCHEMA)
            # workspaces made before datasets had metadata
            _add_column(db, "datasets", "meta", "TEXT NOT NULL DEFAULT '{}'")
            # when a dataset was deleted (its files are gone; the row keeps naming it for the runs it taught)
            _add_column(db, "datasets", "deleted", "REAL")
            # workspaces made before a vote named the turn (the pair of replies) it was on: older votes have none
            _add_column(db, "votes", "turn", "TEXT")
            # whether max_new_tokens cut a generated answer off (older items, and imported ones: not known, 0)
            _add_column(db, "label_items", "cut_a", "INTEGER NOT NULL DEFAULT 0")
            _add_column(db, "label_items", "cut_b", "INTEGER NOT NULL DEFAULT 0")
            # one vote per turn: two vote buttons clicked at once both found the page's state unvoted,
            # and both votes were stored
            db.execute("CREATE UNIQUE INDEX IF NOT EXISTS votes_turn ON votes (turn) WHERE turn IS NOT NULL")

    @contextmanager
    def _connect(self, durable: bool = True):
        # A connection per thread, kept open: safe across Gradio's worker threads. A connection per
        # call cost two thirds of a label's CPU time (open, schema parse, statements prepared anew)
        # and ~15 ms of fsyncs whenever it was the last one open (it checkpoints and deletes the WAL).
        # durable=False: a second connection whose commits do not wait for the disk (they survive
        # the process being killed, not a power cut; the next durable commit flushes them too).
        # Set once when opened: a PRAGMA acts when compiled, and the statement cache would make a
        # repeated "PRAGMA synchronous" do nothing.
        key = "db" if durable else "quick"
        db = getattr(self._local, key, None)
        if db is None:
            db = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S)
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            setattr(self._local, key, db)
        with db:
            yield db

    @contextmanager
    def _write(self, durable: bool = True):
        """One write transaction, BEGIN IMMEDIATE: writers queue for the lock up front (no deadlock
        upgrading a read lock), first in this process, then in SQLite. durable=False: for state
        that is harmless to lose in a power cut."""
        with self._write_lock, self._connect(durable) as db:
            db.execute("BEGIN IMMEDIATE")
            yield db

    # datasets
    def add_dataset(self, **row) -> None:
        row.setdefault("created", time.time())
        row["meta"] = json.dumps(row.get("meta") or {})
        cols = ", ".join(DATASET_COLUMNS)
        marks = ", ".join("?" for _ in DATASET_COLUMNS)
        with self._connect() as db:
            db.execute(f"INSERT INTO datasets ({cols}) VALUES ({marks})", [row[c] for c in DATASET_COLUMNS])

    def get_dataset(self, dataset_id: str, deleted: bool = False) -> dict | None:
        """A dataset of the catalogue; a deleted one (its files gone) only when asked for with deleted=True."""
        live = "" if deleted else " AND deleted IS NULL"
        with self._connect() as db:
            found = db.execute(f"SELECT * FROM datasets WHERE id = ?{live}", (dataset_id,)).fetchone()
        return _dataset(found) if found else None

    def find_datasets_by_hash(self, sha256: str) -> list[dict]:
        with self._connect() as db:
            found = db.execute("SELECT * FROM datasets WHERE source_sha256 = ? AND deleted IS NULL ORDER BY created",
                               (sha256,))
            return [_dataset(r) for r in found]

    def mark_dataset_deleted(self, dataset_id: str) -> bool:
        """False when it was not there to delete (deleted meanwhile by another page or process), or a
        queued or running run learns from it (started by another process since the caller looked)."""
        active = ", ".join(f"'{s}'" for s in ACTIVE_STATUSES)  # a run in these reads its dataset
        with self._write() as db:
            done = db.execute("UPDATE datasets SET deleted = ? WHERE id = ? AND deleted IS NULL AND NOT EXISTS "
                              f"(SELECT 1 FROM runs WHERE dataset_id = ? AND status IN ({active}))",
                              (time.time(), dataset_id, dataset_id))
            return done.rowcount == 1

    def set_dataset_origin(self, dataset_id: str, origin: dict) -> None:
        """Where a dataset came from (e.g. which chat votes), kept in its metadata for lineage."""
        with self._write() as db:  # read-modify-write of one row: no other writer between
            found = db.execute("SELECT meta FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
            meta = {**json.loads(found["meta"] or "{}"), "origin": origin}
            db.execute("UPDATE datasets SET meta = ? WHERE id = ?", (json.dumps(meta), dataset_id))

    def list_datasets(self, deleted: bool = False) -> list[dict]:
        """Newest first; the deleted ones too with deleted=True (to name what old runs learned from)."""
        live = "" if deleted else " WHERE deleted IS NULL"
        with self._connect() as db:
            return [_dataset(r) for r in db.execute(f"SELECT * FROM datasets{live} ORDER BY created DESC")]

    # votes: model_a was shown on side A (left), model_b on side B; prompt_* is each side's
    # conversation up to the last user message (earlier replies differ between the sides)
    def add_vote(self, **vote) -> int | None:
        """The new vote's id; None when its turn (the pair of replies it is on) has a vote already."""
        vote = {"created": time.time(), "turn": None, **vote}
        for key in VOTE_JSON:
            vote[key] = json.dumps(vote[key])
        vote["blind"] = int(bool(vote["blind"]))
        cols = VOTE_COLUMNS
        try:
            with self._connect() as db:
                cur = db.execute(f"INSERT INTO votes ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                                 [vote[c] for c in cols])
                return cur.lastrowid
        except sqlite3.IntegrityError as err:
            if "votes.turn" in str(err):
                return None
            raise

    def turn_voted(self, turn: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM votes WHERE turn = ?", (turn,)).fetchone() is not None

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
        with self._write() as db:
            # on a dataset that is still there, checked in the insert itself: a deletion by another
            # process (the command line) between a start's checks and this row cannot slip in
            done = db.execute(f"INSERT INTO runs ({cols}) SELECT {marks} WHERE ? IS NULL OR EXISTS "
                              "(SELECT 1 FROM datasets WHERE id = ? AND deleted IS NULL)",
                              [*(row[c] for c in RUN_COLUMNS), row["dataset_id"], row["dataset_id"]])
            if done.rowcount != 1:
                raise DatasetGone(row["dataset_id"])

    def delete_run(self, run_id: str) -> None:
        """A run's row, for a start that could not start its worker (nothing else refers to it yet)."""
        with self._write() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

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

    # exports
    def add_export(self, *, id: str, name: str, kind: str, source: dict, status: str = "queued") -> None:
        now = time.time()
        with self._connect() as db:
            db.execute("INSERT INTO exports (id, name, kind, source, status, created, updated) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (id, name, kind, json.dumps(source), status, now, now))

    def delete_export(self, export_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM exports WHERE id = ?", (export_id,))

    def update_export_status(self, export_id: str, status: str, error: str | None) -> None:
        with self._connect() as db:
            db.execute("UPDATE exports SET status = ?, error = ?, updated = ? WHERE id = ?",
                       (status, error, time.time(), export_id))

    def get_export(self, export_id: str) -> dict | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM exports WHERE id = ?", (export_id,)).fetchone()
        return _export(found) if found else None

    def list_exports(self) -> list[dict]:
        with self._connect() as db:
            return [_export(r) for r in db.execute("SELECT * FROM exports ORDER BY created DESC")]

    # labeling projects
    def add_label_project(self, *, id: str, name: str, overlap: int, source: dict, status: str,
                          job_id: str | None = None, items: list[dict] = ()) -> None:
        """A project and its items in one transaction: all of it or nothing."""
        with self._write() as db:
            db.execute("INSERT INTO label_projects (id, name, created, overlap, source, status, job_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (id, name, time.time(), overlap, json.dumps(source), status, job_id))
            _insert_items(db, id, items)

    def add_label_items(self, project_id: str, items: list[dict], status: str | None = None,
                        error: str | None = None) -> int:
        """Generated items arrive (each with its prompt's "position"), as they are answered: those not
        in the project yet are added; with `status`, the project takes it in the same transaction (a
        job that ended: its last answers and its end are seen together). Returns how many were new."""
        with self._write() as db:
            if db.execute("SELECT 1 FROM label_projects WHERE id = ?", (project_id,)).fetchone() is None:
                return 0
            before = db.total_changes
            _insert_items(db, project_id, items, ignore_known=True)
            added = db.total_changes - before
            if status is not None:
                db.execute("UPDATE label_projects SET status = ?, error = ? WHERE id = ?", (status, error, project_id))
            return added

    def delete_label_project(self, project_id: str) -> None:
        """Only for a project whose job could not start: its items, holds and labels go with it."""
        with self._write() as db:
            for table in ("label_labels", "label_assignments", "label_items"):
                db.execute(f"DELETE FROM {table} WHERE project_id = ?", (project_id,))
            db.execute("DELETE FROM label_projects WHERE id = ?", (project_id,))

    def set_label_project_status(self, project_id: str, status: str, error: str | None = None,
                                 job_id: str | None = None) -> None:
        with self._connect() as db:
            db.execute("UPDATE label_projects SET status = ?, error = ?, job_id = COALESCE(?, job_id) "
                       "WHERE id = ?", (status, error, job_id, project_id))

    def get_label_project(self, ref: str) -> dict | None:
        """By id or by name."""
        with self._connect() as db:
            found = db.execute("SELECT p.*, (SELECT COUNT(*) FROM label_items i WHERE i.project_id = p.id) "
                               "AS items FROM label_projects p WHERE p.id = ? OR p.name = ?", (ref, ref)).fetchone()
        return _project(found) if found else None

    def list_label_projects(self) -> list[dict]:
        with self._connect() as db:
            return [_project(r) for r in db.execute(
                "SELECT p.*, (SELECT COUNT(*) FROM label_items i WHERE i.project_id = p.id) AS items "
                "FROM label_projects p ORDER BY p.created DESC")]

    def label_items(self, project_id: str) -> list[dict]:
        with self._connect() as db:
            return [_item(r) for r in db.execute("SELECT * FROM label_items WHERE project_id = ? ORDER BY position",
                                                 (project_id,))]

    def get_label_item(self, item_id: int) -> dict | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM label_items WHERE id = ?", (item_id,)).fetchone()
        return _item(found) if found else None

    # labeling: hand-out, labels, undo. Each is one BEGIN IMMEDIATE transaction: writers queue for
    # the lock up front (no deadlock upgrading a read lock) and wait up to BUSY_TIMEOUT_S.
    def next_label_item(self, project_id: str, labeler: str, overlap: int, now: float | None = None) -> int | None:
        """The item this labeler should see now: the one they hold (an undone label comes back
        first) unless it went to others past a lapsed hold, else the least-labelled item they have not labelled whose labels plus others'
        live holds leave room under the overlap. None: nothing left for them."""
        now = time.time() if now is None else now
        # a hold lost in a power cut only means the item may be handed out again: no fsync
        with self._write(durable=False) as db:
            held = db.execute("SELECT a.item_id, a.assigned, i.labels FROM label_assignments a JOIN label_items i "
                              "ON i.id = a.item_id WHERE a.project_id = ? AND a.labeler = ? ORDER BY a.assigned DESC "
                              "LIMIT 1", (project_id, labeler)).fetchone()
            if held and held["assigned"] <= now - LEASE_S:
                # their hold lapsed, and the item went to others meanwhile (labelled, or held by them now): a
                # label more would only split it (an item undone is held afresh: it comes back whatever)
                if held["labels"] + _holders(db, held["item_id"], labeler, now) >= overlap:
                    db.execute("DELETE FROM label_assignments WHERE item_id = ? AND labeler = ?",
                               (held["item_id"], labeler))
                    held = None
            if held:
                # held afresh from now: a lapsed hold left as it was let others be handed the same item while it
                # was back on this labeler's screen (two labels past an overlap of one)
                db.execute("UPDATE label_assignments SET assigned = ? WHERE item_id = ? AND labeler = ?",
                           (now, held["item_id"], labeler))
                return held["item_id"]
            candidates = db.execute(
                "SELECT i.id, i.labels FROM label_items i WHERE i.project_id = ? AND i.labels < ? "
                "AND NOT EXISTS (SELECT 1 FROM label_labels l WHERE l.item_id = i.id AND l.labeler = ?) "
                "ORDER BY i.labels, i.position LIMIT 64", (project_id, overlap, labeler))
            for row in candidates.fetchall():
                if row["labels"] + _holders(db, row["id"], labeler, now) < overlap:
                    db.execute("INSERT OR REPLACE INTO label_assignments (item_id, labeler, project_id, assigned) "
                               "VALUES (?, ?, ?, ?)", (row["id"], labeler, project_id, now))
                    return row["id"]
            return None

    def add_label(self, *, item_id: int, project_id: str, labeler: str, choice: str, flipped: bool,
                  reason: str = "", seconds: float | None = None) -> tuple[int, bool, str]:
        """(label id, True if new, the choice stored). A second label of the same item by the same labeler (a
        double click, a retried request) is the first one: never two. Durable when this returns."""
        with self._write() as db:
            try:
                cur = db.execute("INSERT INTO label_labels (item_id, project_id, labeler, choice, flipped, reason, "
                                 "seconds, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (item_id, project_id, labeler, choice, int(flipped), reason, seconds, time.time()))
            except sqlite3.IntegrityError:
                found = db.execute("SELECT id, choice FROM label_labels WHERE item_id = ? AND labeler = ?",
                                   (item_id, labeler)).fetchone()
                if found is None:
                    raise
                db.execute("DELETE FROM label_assignments WHERE item_id = ? AND labeler = ?", (item_id, labeler))
                return found["id"], False, found["choice"]
            if choice != "skip":
                db.execute("UPDATE label_items SET labels = labels + 1 WHERE id = ?", (item_id,))
            db.execute("DELETE FROM label_assignments WHERE item_id = ? AND labeler = ?", (item_id, labeler))
            return cur.lastrowid, True, choice

    def undo_label(self, project_id: str, labeler: str) -> dict | None:
        """Take back this labeler's newest label; the item goes back on their screen. None: nothing to undo."""
        with self._write() as db:
            last = db.execute("SELECT * FROM label_labels WHERE project_id = ? AND labeler = ? ORDER BY id DESC "
                              "LIMIT 1", (project_id, labeler)).fetchone()
            if last is None:
                return None
            db.execute("DELETE FROM label_labels WHERE id = ?", (last["id"],))
            if last["choice"] != "skip":
                db.execute("UPDATE label_items SET labels = labels - 1 WHERE id = ?", (last["item_id"],))
            db.execute("INSERT OR REPLACE INTO label_assignments (item_id, labeler, project_id, assigned) "
                       "VALUES (?, ?, ?, ?)", (last["item_id"], labeler, project_id, time.time()))
            return dict(last)

    def list_labels(self, project_id: str) -> list[dict]:
        """Every label with its item's models, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT l.*, i.model_a, i.model_b FROM label_labels l JOIN label_items i "
                              "ON i.id = l.item_id WHERE l.project_id = ? ORDER BY l.id", (project_id,))
            return [{**dict(r), "flipped": bool(r["flipped"])} for r in rows]

    _OPEN_SKIPS = ("FROM label_labels WHERE project_id = ? AND labeler = ? AND choice = 'skip' AND item_id IN "
                   "(SELECT id FROM label_items WHERE project_id = ? AND labels < ?)")

    def bring_back_skips(self, project_id: str, labeler: str, overlap: int) -> int:
        """Take back this labeler's skips of items that still want labels (under the overlap), so
        those items come to them again (skips are not in the items' counters); skips of items others
        have filled since stay. Returns how many came back."""
        with self._write() as db:
            return db.execute(f"DELETE {self._OPEN_SKIPS}", (project_id, labeler, project_id, overlap)).rowcount

    def label_counts(self, project_id: str, labeler: str, overlap: int = 1) -> dict:
        """For a labeler's progress line: their labels (skips apart), their skips, how many of those
        items still want labels (they can come back), the project's labels, items and complete items,
        and "open": the items still wanting labels this labeler has neither labelled nor skipped."""
        with self._connect() as db:
            mine, skipped = db.execute(
                "SELECT COUNT(*) - COALESCE(SUM(choice = 'skip'), 0), COALESCE(SUM(choice = 'skip'), 0) "
                "FROM label_labels WHERE project_id = ? AND labeler = ?", (project_id, labeler)).fetchone()
            open_skips = db.execute(f"SELECT COUNT(*) {self._OPEN_SKIPS}",
                                    (project_id, labeler, project_id, overlap)).fetchone()[0]
            # the items' counters (kept by each label and undo) sum to the labels, skips apart: one
            # pass over the items' index, not a second one over every label (called per item shown)
            items, labels, complete = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(labels), 0), COALESCE(SUM(labels >= ?), 0) FROM label_items "
                "WHERE project_id = ?", (overlap, project_id)).fetchone()
            # items still wanting labels that this labeler has not labelled or skipped: on someone's screen now,
            # they may come to this labeler when a hold lapses
            open_items = db.execute(
                "SELECT COUNT(*) FROM label_items i WHERE i.project_id = ? AND i.labels < ? AND NOT EXISTS "
                "(SELECT 1 FROM label_labels l WHERE l.item_id = i.id AND l.labeler = ?)",
                (project_id, overlap, labeler)).fetchone()[0]
        # complete: items with all their labels (a late holder's label can give an item one past the overlap,
        # so the labels' sum reaching items x overlap did not mean every item had its labels)
        return {"mine": mine, "skipped": skipped, "returnable": open_skips, "labels": labels, "items": items,
                "complete": complete, "open": open_items}

    def integrity_check(self) -> str:
        with self._connect() as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]


def _insert_items(db, project_id: str, items, ignore_known: bool = False) -> None:
    """Items at their own "position" where they have one (a generated prompt's place in the job),
    else in the order given; ignore_known: an item already at its position is kept as it is."""
    db.executemany(
        f"INSERT {'OR IGNORE ' if ignore_known else ''}INTO label_items (project_id, position, prompt, answer_a, "
        "answer_b, model_a, model_b, cut_a, cut_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(project_id, it.get("position", n), json.dumps(it["prompt"]), it["answer_a"], it["answer_b"], it["model_a"],
          it["model_b"], int(bool(it.get("cut_a"))), int(bool(it.get("cut_b")))) for n, it in enumerate(items)])


def _project(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["source"] = json.loads(out["source"])
    return out


def _item(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["prompt"] = json.loads(out["prompt"])
    out["cut_a"], out["cut_b"] = bool(out["cut_a"]), bool(out["cut_b"])
    return out


def _wal(db, path: Path) -> None:
    """WAL mode, set once per database file. Setting it needs the file to itself, and SQLite does not
    wait for that: processes opening a workspace at once saw "database is locked" and did not start."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:  # (a switch it cannot make answers with the mode it kept, or says "locked")
            if db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError(f"{path}: could not switch to WAL mode: another process "
                                           f"held the database for {BUSY_TIMEOUT_S} s")
        time.sleep(0.02)


def _add_column(db, table: str, column: str, declaration: str) -> None:
    """A column an older workspace lacks. Two processes opening it at once may both find it missing:
    the second one's ALTER then fails, with the column there all the same."""
    if column in {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}:
        return
    try:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    except sqlite3.OperationalError as err:
        if "duplicate column" not in str(err):
            raise


VOTE_COLUMNS = ("created", "voter", "model_a", "model_b", "winner", "blind", "prompt_a", "prompt_b",
                "reply_a", "reply_b", "settings", "turn")
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


def _export(row: sqlite3.Row) -> dict:
    out = dict(row)
    out["source"] = json.loads(out["source"])
    return out
