"""Deleting a dataset (the Data tab, `studio data delete`): what still reads or learned from it, and its
removal. The catalogue row stays, marked deleted, so the runs that learned from it still name it; the
studio's copy of the data goes (the file it was imported from is not touched). Bundled samples are not
deleted: they ship with the studio and stay on offer."""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import time
from pathlib import Path

from pipelines import importer
from pipelines.data import DataError
from pipelines.events import ACTIVE_STATUSES, JOB, RESUMABLE_STATUSES, read_json
from pipelines.formats import few
from pipelines.importer import IMPORTING_PREFIX
from studio.core import dataset_title, is_sample


def users(studio, dataset_id: str) -> dict[str, list[str]]:
    """What learned from or reads a dataset, by how deleting it would touch them, oldest first: "active"
    (queued or running runs, and judge jobs judging its pairs: they read it now), "stopped" (runs a
    Resume would start again from it), "finished" (runs whose models stay; Continue training needs it)."""
    found = {"active": [], "stopped": [], "finished": []}
    for row in reversed(studio.store.list_runs()):
        if row["dataset_id"] == dataset_id:
            status = studio.get_run(row["id"])["status"]  # (the catalogue synced: a dead worker's run is not active)
            found["active" if status in ACTIVE_STATUSES else "stopped" if status in RESUMABLE_STATUSES
                  else "finished"].append(row["id"])
    for job_dir in sorted(studio.runs_dir.glob("j*")):
        job = read_json(job_dir / JOB) or {}
        if ((job.get("dataset") or {}).get("id") == dataset_id
                and studio.job_state(job_dir.name, worker="judge process")["status"] in ACTIVE_STATUSES):
            found["active"].append(job_dir.name)
    return found


def blocker(studio, row: dict, found: dict | None = None) -> str | None:
    """Why this dataset is not deleted (a bundled sample; a run or judge job reads it now), or None."""
    title = dataset_title(row)
    if is_sample(row):
        return f"'{title}' is a bundled sample: it ships with the studio and stays on offer in the Train tab"
    active = (found or users(studio, row["id"]))["active"]
    if not active:
        return None
    runs, judges = [i for i in active if not i.startswith("j")], [i for i in active if i.startswith("j")]
    who = " and ".join(f"{kind}{'s' if len(ids) > 1 else ''} {few(ids)}"
                       for kind, ids in (("run", runs), ("judge job", judges)) if ids)
    them = "them" if len(active) > 1 else "it"
    return f"dataset '{title}' is in use by {who}: wait for {them} to end or cancel {them}, then delete it"


def effects(found: dict[str, list[str]]) -> str:
    """What deleting a dataset does to the runs that learned from it (`users`), in words."""
    said = []
    finished, stopped = found["finished"], found["stopped"]
    if len(finished) == 1:
        said.append(f"run {finished[0]} keeps its model but cannot be continued")
    elif finished:
        said.append(f"{len(finished)} runs ({few(finished)}) keep their models but cannot be continued")
    if stopped:
        who = f"run {stopped[0]}" if len(stopped) == 1 else f"runs {few(stopped)}"
        said.append(f"the stopped {who} can no longer be resumed")
    return "; ".join(said) if said else "no run learned from it"


def gone(studio, dataset_id: str) -> str:
    """The sentence for a dataset that is not (or no longer) in the catalogue."""
    row = studio.store.get_dataset(dataset_id, deleted=True)
    return (f"dataset '{dataset_title(row)}' was deleted already" if row
            else f"no dataset with id '{dataset_id}'")


def delete(studio, dataset_id: str) -> tuple[dict, dict[str, list[str]]]:
    """Mark the dataset deleted, then remove the studio's copy of it; returns its row and what learned
    from it (`users`, looked at once, for `effects`). Refused (DataError,
    one sentence, nothing touched) for a bundled sample and while a run or judge job reads it. Marked
    first: a deletion cut short leaves a folder the next start removes, never a listed dataset without
    its rows."""
    with studio.starting:  # no run starts or resumes on it in this process meanwhile
        row = studio.store.get_dataset(dataset_id)
        if row is None:
            raise DataError(gone(studio, dataset_id))
        found = users(studio, dataset_id)
        refused = blocker(studio, row, found)
        if refused:
            raise DataError(refused)
        if not studio.store.mark_dataset_deleted(dataset_id):  # another process came first: a run, a deletion
            raise DataError(blocker(studio, row) or gone(studio, dataset_id))
    keep_what_runs_trained_on(studio, row, found["stopped"] + found["finished"])
    remove_files(row)  # marked: nothing starts on it now (a folder of gigabytes need not hold up every start)
    for key in [k for k in list(studio.length_cache) if row["path"] in map(str, k)]:
        studio.length_cache.pop(key, None)
    return row, found


def keep_what_runs_trained_on(studio, row: dict, run_ids: list[str]) -> None:
    """The prompts each run trained on, kept in its folder before its dataset goes: a run that starts
    from its result later still holds out only prompts no run behind it trained on (pipelines/lineage)."""
    from pipelines import lineage

    try:
        if run_ids and Path(row["path"]).exists():
            taught = lineage.stored_learned(Path(row["path"]))
            for run_id in run_ids:
                if studio.run_dir(run_id).is_dir():
                    lineage.keep_trained(studio.run_dir(run_id), taught)
    except (OSError, ValueError):  # (a full disk, a damaged file: the deletion, already marked, goes on;
        pass                       # a run from those runs' results may then hold out what they trained on)


def remove_files(row: dict) -> None:
    """The dataset's folder, moved aside in one step (whole or gone), then removed; what a kill leaves
    aside is an unfinished import's folder to the next start (importer.remove_stale_imports)."""
    folder = Path(row["path"]).parent
    aside = folder.with_name(f"{IMPORTING_PREFIX}deleted-{folder.name}-{secrets.token_hex(3)}")
    try:
        folder.rename(aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def sweep(studio) -> list[str]:
    """At start: the folders of datasets marked deleted by a deletion that was stopped before it removed
    them. Returns their ids."""
    rows = studio.store.list_datasets(deleted=True)
    left = [row for row in rows if row["deleted"] and Path(row["path"]).parent.is_dir()]
    for row in left:
        remove_files(row)
    adopt_orphans(studio, {Path(row["path"]).parent.name for row in rows})
    return [row["id"] for row in left]


ORPHAN_AGE_S = 60.0


def adopt_orphans(studio, known: set[str]) -> list[str]:
    """A whole dataset folder no catalogue row names (an import stopped between putting its folder in place and
    writing its row; a catalogue lost or reset) is put back in the catalogue from its own meta.json, never
    removed: nothing is lost. Only once a minute old (a young one may be an import in another process, about to
    write its row); a folder that is not a whole import is left as it is. Returns the ids put back."""
    from pipelines.formats import KINDS

    adopted = []
    for folder in sorted(Path(studio.datasets_dir).iterdir()):
        try:
            if (not folder.is_dir() or folder.name.startswith(".") or folder.name in known
                    or time.time() - folder.stat().st_mtime <= ORPHAN_AGE_S):
                continue
            meta = importer.read_meta(folder)
            if not (folder / importer.DATA).is_file() or meta.get("kind") not in KINDS:
                continue
            source = str(meta.get("source_name") or folder.name)
            studio.store.add_dataset(id=folder.name, name=studio._free_name(Path(source).stem), kind=meta["kind"],
                                     rows=int(meta.get("rows") or 0), source_name=source,
                                     source_sha256=str(meta.get("source_sha256") or ""),
                                     path=str(folder / importer.DATA), meta=meta)
        except (OSError, ValueError, TypeError, sqlite3.Error):  # gone meanwhile, unreadable, or taken meanwhile
            continue
        adopted.append(folder.name)
    return adopted
