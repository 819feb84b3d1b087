"""What the Label tab, `studio label` and the reliability bench ask of the studio: labeling projects
(prompts and two candidate answers each), handing items to labelers, labels and undo, the project
overview, and the export of labels as preference or KTO data.

Labelers see the two answers as left and right, shuffled per item and per labeler; everything
stored is in the item's own terms (answer A / answer B), with the side it was shown on kept to
check for position bias.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from pipelines import arena, labeling, models, readers
from pipelines.data import DataError, load_rows
from pipelines.errors import where
from pipelines.events import CANCEL, JOB, read_json, read_metrics, write_json
from pipelines.formats import prompt_turns, text
from pipelines.importer import ImportOptions
from pipelines.label_gen import CANDIDATES, read_candidates

SCREEN_CHOICES = ("left", "right", "tie", "both_bad", "skip")
MAX_PROMPTS = 2000
MAX_NAME = 80
# Prompt files: a column holding the prompt (text or a conversation), answers for imported pairs.
PROMPT_COLUMNS = ("prompt", "question", "instruction", "input")
ANSWER_COLUMNS = (("response_a", "response_b"), ("answer_a", "answer_b"), ("completion_a", "completion_b"))


class LabelError(ValueError):
    """A labeling request that cannot be served; one sentence."""


# --- prompts -----------------------------------------------------------------------------------

def prompts_from_text(typed: str) -> list[list[dict]]:
    """Typed prompts, one per line; one typed again is left out, as a file's or a dataset's are (two items of
    one prompt were labelled twice over)."""
    return _unique([[{"role": "user", "content": line.strip()}] for line in (typed or "").splitlines()
                    if line.strip()])


def _row_prompt(row: dict) -> list[dict] | None:
    """A stored dataset row's prompt: the conversation up to its last user turn."""
    if isinstance(row.get("prompt"), list):
        return row["prompt"]
    turns = row.get("messages") or (row.get("chosen") if isinstance(row.get("chosen"), list) else None)
    if not turns:
        return None
    last_user = max((i for i, m in enumerate(turns) if m["role"] == "user"), default=None)
    return turns[:last_user + 1] if last_user is not None else None


def prompts_from_dataset(studio, ref: str) -> list[list[dict]]:
    row = studio.resolve_dataset(ref)
    if row["kind"] == "text":
        raise LabelError(f"dataset '{row['name']}' holds raw text, which has no prompts; pick a dataset of "
                         "examples or preferences")
    found = [p for p in (_row_prompt(r) for r in load_rows(Path(row["path"]))) if p]
    return _unique(found)


def prompts_from_file(path: Path | str, max_bytes: int = readers.DEFAULT_MAX_BYTES) -> list[list[dict]]:
    """A .txt file (a prompt per line) or a table with a prompt column."""
    path = Path(path)
    fmt = readers.check_file(path, max_bytes)
    found = []
    for place, record in readers.records(path, fmt):
        if fmt == "text":
            found.append([{"role": "user", "content": record["text"].strip()}])
            continue
        column = _column(record, PROMPT_COLUMNS, path, place)
        found.append(prompt_turns(record[column], path, place, column))
    return _unique(found)


def _column(record, names, path, place) -> str:
    if not isinstance(record, dict):
        raise DataError(f"{where(path, place)}: expected an object with named fields")
    for name in names:
        if name in record:
            return name
    raise DataError(f"{where(path, place)}: no prompt column; expected one of {', '.join(names)} "
                    f"(found: {', '.join(record) or 'none'})")


def _unique(prompts: list[list[dict]]) -> list[list[dict]]:
    seen, out = set(), []
    for p in prompts:
        key = json.dumps(p, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def read_pairs(path: Path | str, max_bytes: int = readers.DEFAULT_MAX_BYTES) -> list[dict]:
    """Imported candidates: a prompt and two answers per row (response_a/response_b; optional
    model_a/model_b name who wrote them). Raises DataError naming file, row and column."""
    path = Path(path)
    fmt = readers.check_file(path, max_bytes)
    if fmt == "text":
        raise DataError(f"{path.name}: a pairs file needs columns (prompt, response_a, response_b); "
                        "use JSONL, JSON, CSV, TSV or Parquet")
    items = []
    for place, record in readers.records(path, fmt):
        prompt_col = _column(record, PROMPT_COLUMNS, path, place)
        pair = next((p for p in ANSWER_COLUMNS if p[0] in record or p[1] in record), ANSWER_COLUMNS[0])
        for col in pair:
            if col not in record:
                raise DataError(f"{where(path, place)}: missing column '{col}' (a pair needs "
                                f"{pair[0]} and {pair[1]}; found: {', '.join(record)})")
        items.append({"prompt": prompt_turns(record[prompt_col], path, place, prompt_col),
                      "answer_a": text(record[pair[0]], path, place, pair[0]),
                      "answer_b": text(record[pair[1]], path, place, pair[1]),
                      "model_a": str(record.get("model_a") or "imported A"),
                      "model_b": str(record.get("model_b") or "imported B")})
    if not items:
        raise DataError(f"{path.name}: no rows")
    return items


# --- projects ----------------------------------------------------------------------------------

SLASHES = "/" + chr(92)  # a name becomes part of file and dataset names: no path separators


def _check_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if len(name) > MAX_NAME:
        raise LabelError(f"the {what} is {len(name)} characters; keep it under {MAX_NAME}")
    bad = next((c for c in name if c in SLASHES or not c.isprintable()), None)
    if bad is not None:
        kind = "slash" if bad in SLASHES else "control character"
        raise LabelError(f"the {what} '{name}' has a {kind}; use letters, digits, spaces and other punctuation")
    return name


def _check_new(studio, name: str, overlap) -> str:
    name = _check_name(name, "project name")
    if not name:
        raise LabelError("give the project a name")
    if studio.store.get_label_project(name):
        raise LabelError(f"a labeling project named '{name}' already exists; pick another name")
    try:
        ok = overlap is not None and float(overlap) == int(overlap) and int(overlap) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise LabelError(f"'Labelers per item' is {overlap}; it must be a whole number, at least 1")
    return name


def _side(studio, spec: str) -> dict:
    """A chat spec (base:MODEL, run:ID or a folder) as what the job loads; refused now if it cannot load."""
    from studio.chat_service import ChatError, resolve

    try:
        model, adapter = resolve(studio, spec)
        models.check_available(model, studio.model_cache)
    except (ChatError, models.ModelError) as err:
        raise LabelError(str(err)) from None
    folder = Path(model).expanduser()
    if not models.is_default(model) and folder.exists():  # as a whole path: the job runs in another folder
        model = str(folder.resolve())  # (a relative one failed there, or was taken there for a hub id)
    return {"spec": spec, "model": model, "adapter": str(adapter) if adapter else None}


def _check_sampling(temperature, max_new_tokens, seed) -> None:
    """The answers' settings in the Chat tab's ranges (the command line took any: 0 new tokens made every
    answer one token long, a NaN temperature passed the check for two different answers and was greedy)."""
    from studio.chat_service import SEED_MAX

    for name, value, low, high in (("the temperature", temperature, 0.0, 2.0),
                                   ("the longest answer (new tokens)", max_new_tokens, 1, 4096),
                                   ("the seed", seed, 0, SEED_MAX)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise LabelError(f"{name} is {value}; it must be from {low:g} to {high if isinstance(high, int) else f'{high:g}'}")
    if max_new_tokens != int(max_new_tokens) or seed != int(seed):
        raise LabelError("the longest answer and the seed are whole numbers")


def sample_prompts(prompts: list, n: int | None, seed: int = 0) -> list:
    """`n` of the prompts picked at random (the same ones for the same seed), kept in their order; all of
    them when n is None or not fewer. A sample, not the first n: a dataset is often sorted by topic."""
    if n is None or n >= len(prompts):
        return prompts
    if n < 1:
        raise LabelError(f"the number of prompts to take is {n}; take at least 1 (empty = all)")
    import random

    return [prompts[i] for i in sorted(random.Random(seed).sample(range(len(prompts)), n))]


def create_project(studio, *, name: str, prompts: list[list[dict]], models_: list[str], overlap: int = 1,
                   temperature: float = 0.7, max_new_tokens: int = 256, seed: int = 0, sample: int | None = None) -> dict:
    """A project whose answers come from a background job: two models answer each prompt, or one
    model (named once, or twice) answers twice, sampled at `temperature`. `sample`: that many of the
    prompts, picked at random with `seed` (a dataset larger than a project takes)."""
    name = _check_new(studio, name, overlap)
    if not prompts:
        raise LabelError("no prompts: pick a dataset, upload a file or type at least one")
    _check_sampling(temperature, max_new_tokens, seed)
    total = len(prompts)
    prompts = sample_prompts(prompts, sample, seed)
    if len(prompts) > MAX_PROMPTS:
        raise LabelError(f"{len(prompts)} prompts; a project takes at most {MAX_PROMPTS}: take a random sample of "
                         f"{MAX_PROMPTS} or fewer (How many prompts; --sample on the command line)")
    if len(models_) not in (1, 2):
        raise LabelError("pick two models to compare, or one model to answer twice")
    specs = list(models_) * (2 // len(models_))
    sides = [_side(studio, s) for s in specs]
    twice = (sides[0]["model"], sides[0]["adapter"]) == (sides[1]["model"], sides[1]["adapter"])
    if twice and temperature <= 0:
        raise LabelError("one model answering twice needs a temperature above 0, or both answers are the same")
    from studio.core import _new_id

    project_id, job_id = _new_id("p"), _new_id("g")
    source = {"kind": "sampled twice" if twice else "two models", "models": specs,
              "prompts": len(prompts), "temperature": temperature, "max_new_tokens": max_new_tokens,
              **({"sampled_from": total} if len(prompts) < total else {})}
    # the row first (a name taken meanwhile by another browser is refused before anything else
    # is written), then the job; a job that cannot start takes its row and folder with it
    _add_project(studio, id=project_id, name=name, overlap=int(overlap), source=source, status="generating",
                 job_id=job_id)
    job_dir = studio.run_dir(job_id)
    try:
        job_dir.mkdir()
        now = time.time()
        write_json(job_dir / JOB, {
            "id": job_id, "runner": "pipelines.label_gen", "project_id": project_id, "prompts": prompts,
            "sides": sides, "temperature": float(temperature), "max_new_tokens": int(max_new_tokens),
            "seed": int(seed), "model_cache": str(studio.model_cache), "max_concurrent": studio.max_concurrent,
            "created": now, "queued_at": now})
        studio.spawn(job_id, job_dir)
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        studio.store.delete_label_project(project_id)
        raise
    return project(studio, project_id)


def _add_project(studio, **row) -> None:
    try:
        studio.store.add_label_project(**row)
    except sqlite3.IntegrityError:
        raise LabelError(f"a labeling project named '{row['name']}' already exists; pick another name") from None


def import_project(studio, *, name: str, path: Path | str, overlap: int = 1, source_name: str | None = None) -> dict:
    """A project from a file of prompts with two answers each; ready at once. Nothing is written
    when the file is refused."""
    name = _check_new(studio, name, overlap)
    path = Path(path)
    try:
        items = read_pairs(path, studio.max_upload_bytes)
    except DataError as err:
        raise DataError(str(err).replace(path.name, source_name or path.name, 1)) from None
    if len(items) > MAX_PROMPTS * 10:
        raise LabelError(f"{len(items)} pairs; a project takes at most {MAX_PROMPTS * 10}")
    from studio.core import _new_id

    project_id = _new_id("p")
    models_ = sorted({it["model_a"] for it in items} | {it["model_b"] for it in items})
    _add_project(studio, id=project_id, name=name, overlap=int(overlap), status="ready", items=items,
                 source={"kind": "imported", "file": source_name or path.name, "models": models_,
                         "prompts": len(items)})
    return project(studio, project_id)


STOPPED = ("failed", "cancelled", "interrupted")


def project(studio, ref: str, with_progress: bool = True) -> dict:
    """A project by id or name, brought up to date with its generation job: the prompts answered so
    far are its items (labelled while the rest are answered, or after a stop) and the job's end is
    its status (with_progress, also the job's state: left out where a label is given, as its
    job.json holds every prompt)."""
    found = studio.store.get_label_project(ref)
    if found is None:
        raise LabelError(f"no labeling project '{ref}' (see 'studio label status')")
    if found["status"] in ("generating", "queued", *STOPPED) and found["job_id"]:
        if _sync(studio, found):
            found = studio.store.get_label_project(found["id"])
    job_dir = studio.run_dir(found["job_id"]) if found["job_id"] and with_progress else None
    found["progress"] = answering_state(studio, found["job_id"]) if job_dir and job_dir.exists() else None
    return found


def projects(studio) -> list[dict]:
    return [project(studio, p["id"]) for p in studio.store.list_label_projects()]


def answering_state(studio, job_id: str) -> dict:
    """The answering job's state, a worker that exited before it could report included (a plain look at its
    folder kept such a project 'generating' for ever), its failures naming the answering process."""
    return studio.job_state(job_id, worker="answering process")


_SEEN: dict[str, tuple] = {}  # a generation job's answers file and end as last synced: unchanged, nothing to read


def _sync(studio, found: dict) -> bool:
    """The answers written since the last look become items; a job that ended gives the project its
    end (ready, or stopped with what it answered). True when the project changed."""
    job_dir = studio.run_dir(found["job_id"])
    state = answering_state(studio, found["job_id"])
    ended = state["status"] if state["status"] in ("completed", *STOPPED) else None
    path = job_dir / CANDIDATES
    seen = (path.stat().st_size if path.exists() else 0, ended, found["status"])
    if _SEEN.get(str(path)) == seen:
        return False
    job = read_json(job_dir / JOB)
    if not job:  # its folder gone: the project keeps what it has
        return False
    sides = [s["spec"] for s in job["sides"]]
    items = [{"position": n, "prompt": job["prompts"][n], "answer_a": a["answer_a"], "answer_b": a["answer_b"],
              "cut_a": a.get("cut_a", False), "cut_b": a.get("cut_b", False), "model_a": sides[0],
              "model_b": sides[1]} for n, a in sorted(read_candidates(job_dir).items())
             if not a.get("too_long")]  # (a prompt longer than the models read: left out, its log says so)
    # the job's end is the project's (completed: ready), once: a stopped project looked at again stays as it is
    status = "ready" if ended == "completed" else ended
    error = state["error"] if ended in STOPPED else None
    if status == found["status"]:
        status = None
    added = studio.store.add_label_items(found["id"], items, status, error)
    _SEEN[str(path)] = (seen[0], ended, status or found["status"])
    return bool(added or status)


def answering_pace(studio, max_new_tokens: int) -> float | None:
    """Seconds per prompt a new project's answers will take here, from the newest project answered here
    (its answers' times once its models were loaded, scaled by the longest answer asked for, the bulk
    of the time); None before any project was answered."""
    for found in studio.store.list_label_projects():
        job_dir = studio.run_dir(found["job_id"]) if found["job_id"] else None
        timed = [(m["step"], m["time"]) for m in read_metrics(job_dir) if "time" in m] if job_dir else []
        # one answer to the next (the first waited for the models to load; a stop's pause is one outlier)
        gaps = [b - a for (n, a), (m, b) in zip(timed, timed[1:]) if m == n + 1 and b > a]
        job = read_json(job_dir / JOB) if len(gaps) >= 2 else None
        if job:
            return statistics.median(gaps) * max_new_tokens / max(job["max_new_tokens"], 1)
    return None


def cancel_generation(studio, ref: str) -> None:
    found = project(studio, ref)
    if found["status"] != "generating":
        raise LabelError(f"project '{found['name']}' is {found['status']}; only generating answers can be cancelled")
    job_dir = studio.run_dir(found["job_id"])
    if not job_dir.is_dir():
        raise LabelError(gone_job(studio, found))
    (job_dir / CANCEL).touch()


def gone_job(studio, found: dict) -> str:
    return (f"project '{found['name']}': the folder of its answering job ({studio.run_dir(found['job_id'])}) is "
            f"gone, and its prompts with it; the {found['items']} answered stay to label")


def resume_generation(studio, ref: str) -> dict:
    """Answer the prompts a cancelled or failed generation did not reach."""
    found = project(studio, ref)
    if found["status"] not in STOPPED:
        raise LabelError(f"project '{found['name']}' is {found['status']}; only a stopped generation can go on")
    job_dir = studio.run_dir(found["job_id"])
    job = read_json(job_dir / JOB)
    if not job:
        raise LabelError(gone_job(studio, found))
    (job_dir / CANCEL).unlink(missing_ok=True)
    write_json(job_dir / JOB, {**job, "queued_at": time.time(), "max_concurrent": studio.max_concurrent})
    studio.store.set_label_project_status(found["id"], "generating")
    try:
        studio.spawn(found["job_id"], job_dir)
    except OSError as err:  # as it was: stopped, and resumable once the machine has room (it showed 'queued' for ever)
        write_json(job_dir / JOB, job)
        studio.store.set_label_project_status(found["id"], found["status"])
        raise LabelError(f"the answering process could not be started ({err.strerror or err}); project "
                         f"'{found['name']}' stays {found['status']}: resume it once the machine has room") from None
    return project(studio, found["id"])


# --- labeling ----------------------------------------------------------------------------------

def flipped(project_id: str, item_id: int, labeler: str) -> bool:
    """Is answer A on the right for this labeler? Fixed per item and labeler (a reload shows the
    same sides), different between labelers and between items."""
    return bool(hashlib.sha256(f"{project_id}/{item_id}/{labeler}".encode()).digest()[0] & 1)


def _labeler(name: str) -> str:
    name = _check_name(name, "labeler name")
    if not name:
        raise LabelError("enter your name as labeler first")
    return name


def _ready(studio, ref: str, answering_ok: bool = False) -> dict:
    """The project, refused while none of its prompts is answered (answering_ok: a project whose first
    answers are on their way is no refusal, to show that they are coming)."""
    found = project(studio, ref, with_progress=False)  # called for every item shown and label given
    if found["items"] == 0:  # the answered prompts can be labelled while the rest are answered, or after a stop
        if found["status"] in STOPPED:
            raise LabelError(f"project '{found['name']}' {STOPPED_WORDS[found['status']]} before any prompt was "
                             "answered; resume answering first")
        if not answering_ok:
            raise LabelError(f"project '{found['name']}' has no answers yet; its items can be labelled as soon "
                             "as the first prompt is answered")
    return found


STOPPED_WORDS = {"cancelled": "was stopped", "failed": "failed", "interrupted": "was interrupted"}


def unanswered(found: dict) -> int:
    """Prompts of a project not answered yet (0 once ready): being answered, or left by a stop."""
    return 0 if found["status"] == "ready" else max(found["source"].get("prompts", 0) - found["items"], 0)


def coming(found: dict) -> str:
    """What a project whose answers are not all in says about the rest ("" once ready)."""
    left = unanswered(found)
    if not left:
        return ""
    if found["status"] in STOPPED:
        return (f"answering {STOPPED_WORDS[found['status']]} with {left} prompt{'s' if left != 1 else ''} left: "
                f"*Resume answering* under *New project* adds {'them' if left != 1 else 'it'}")
    return (f"{left} more prompt{'s are' if left != 1 else ' is'} being answered: each appears here as soon as it "
            "is answered")


def next_item(studio, ref: str, labeler: str) -> dict:
    """{"item": the item to show (left/right already shuffled) or None when there is nothing left
    for this labeler, "progress": counts, "done_reason": why there is nothing left}."""
    found, labeler = _ready(studio, ref, answering_ok=True), _labeler(labeler)
    item_id = studio.store.next_label_item(found["id"], labeler, found["overlap"])
    progress = _progress(studio, found, labeler)
    if item_id is None:
        full = progress["complete"] >= progress["items"]
        if not found["items"]:
            return {"item": None, "progress": progress, "done_reason": f"no prompt is answered yet; {coming(found)}",
                    "project": found}
        skipped = progress["returnable"]  # skipped items that still want labels
        if full:
            reason = "every item has its labels"
        elif skipped:
            # the way back first: "it waits for other people" read as if there were others to a person labeling alone
            reason = (f"you have labelled every item you can and skipped {skipped}; *Bring back my skips* shows "
                      f"{'it' if skipped == 1 else 'them'} to you again, or anyone else who opens this project can "
                      f"label {'it' if skipped == 1 else 'them'}")
        else:
            reason = ("you have labelled every item you can; the rest wait for other people "
                      f"({found['overlap']} per item) or are on someone else's screen")
        if coming(found):
            reason = f"{'every answered item has its labels' if full else reason}; {coming(found)}"
        return {"item": None, "progress": progress, "done_reason": reason, "project": found}
    item = studio.store.get_label_item(item_id)
    flip = flipped(found["id"], item_id, labeler)
    shown = {"item_id": item_id, "position": item["position"], "prompt": item["prompt"], "flipped": flip,
             "left": item["answer_b"] if flip else item["answer_a"],
             "right": item["answer_a"] if flip else item["answer_b"],
             "left_cut": item["cut_b"] if flip else item["cut_a"],
             "right_cut": item["cut_a"] if flip else item["cut_b"]}
    return {"item": shown, "progress": progress, "done_reason": None, "project": found}


def _progress(studio, found: dict, labeler: str) -> dict:
    progress = studio.store.label_counts(found["id"], labeler, found["overlap"])
    # the prompts left from the items counted here, with the rest of the line: an answer that arrived after
    # `found` was read showed "1 item · 5 more prompts" of 5, and nothing corrected it while an item was in hand
    progress.update(overlap=found["overlap"], unanswered=unanswered({**found, "items": progress["items"]}),
                    stopped=found["status"] in STOPPED, status=found["status"])
    return progress


def progress(studio, ref: str, labeler: str) -> dict:
    """A labeler's progress line's counts now, handing out nothing (next_item's "progress")."""
    return _progress(studio, project(studio, ref, with_progress=False), _labeler(labeler))


def bring_back_skips(studio, ref: str, labeler: str) -> int:
    """This labeler's skipped items come to them again; how many."""
    found, labeler = _ready(studio, ref), _labeler(labeler)
    return studio.store.bring_back_skips(found["id"], labeler, found["overlap"])


def canonical(choice: str, flip: bool) -> str:
    """A screen choice (left/right/...) in the item's own terms (a = answer A better)."""
    if choice not in SCREEN_CHOICES:
        raise LabelError(f"'{choice}' is not one of {', '.join(SCREEN_CHOICES)}")
    if choice == "left":
        return "b" if flip else "a"
    if choice == "right":
        return "a" if flip else "b"
    return choice


def submit(studio, ref: str, item_id: int, labeler: str, choice: str, reason: str = "",
           seconds: float | None = None) -> int:
    """Store one label (a transaction of its own, durable when this returns); a second label of
    the same item by the same labeler keeps the first. Returns the label's id."""
    return _stored(studio, ref, item_id, labeler, choice, reason, seconds)[0]


def choose(studio, ref: str, item_id: int, labeler: str, choice: str, reason: str = "",
           seconds: float | None = None) -> str | None:
    """`submit` from the page: None when the label is stored as chosen, else the screen choice this labeler had
    already saved for the item (a correction sent before the page had the answer to the first click), which
    the page says instead of "Saved" for a choice that was not."""
    _id, new, stored, flip = _stored(studio, ref, item_id, labeler, choice, reason, seconds)
    kept = screen_choice(stored, flip)
    return None if new or kept == choice else kept


def screen_choice(stored: str, flip: bool) -> str:
    """`canonical`'s inverse: the side of the screen a stored choice (a = answer A better) was on."""
    if stored == "a":
        return "right" if flip else "left"
    if stored == "b":
        return "left" if flip else "right"
    return stored


def _stored(studio, ref, item_id, labeler, choice, reason, seconds) -> tuple[int, bool, str, bool]:
    found, labeler = _ready(studio, ref), _labeler(labeler)
    item = studio.store.get_label_item(int(item_id))
    if item is None or item["project_id"] != found["id"]:
        raise LabelError(f"item {item_id} is not in project '{found['name']}'")
    flip = flipped(found["id"], item["id"], labeler)
    label_id, new, stored = studio.store.add_label(item_id=item["id"], project_id=found["id"], labeler=labeler,
                                                   choice=canonical(choice, flip), flipped=flip,
                                                   reason=(reason or "").strip()[:2000], seconds=seconds)
    return label_id, new, stored, flip


def undo(studio, ref: str, labeler: str) -> dict | None:
    """Take back the labeler's last label; its item is the next one they see."""
    found, labeler = _ready(studio, ref), _labeler(labeler)
    return studio.store.undo_label(found["id"], labeler)


# --- overview and export -----------------------------------------------------------------------

def overview(studio, ref: str) -> dict:
    found = project(studio, ref)
    labels = studio.store.list_labels(found["id"])
    items = {it["id"]: it for it in studio.store.label_items(found["id"])}
    counted = {i: n for i, n in ((it["id"], it["labels"]) for it in items.values())}
    review = labeling.disagreements(labels)
    number = {item_id: n for n, item_id in enumerate(items, 1)}  # (in the project's order; the ids are the catalogue's)
    for row in review:
        row["prompt"] = _last_user(items[row["item_id"]]["prompt"])
        row["number"] = number[row["item_id"]]
    return {
        "project": found,
        "items": len(items),
        "complete": sum(n >= found["overlap"] for n in counted.values()),
        "labels": sum(lb["choice"] != "skip" for lb in labels),
        "labelers": labeling.labeler_stats(labels),
        "agreement": labeling.agreement(labels),
        "position": labeling.position_bias(labels),
        "win_rates": labeling.win_rates(labels),
        "disagreements": review,
    }


def _last_user(prompt: list[dict]) -> str:
    users = [m["content"] for m in prompt if m["role"] == "user"]
    return users[-1] if users else ""


def export_rows(studio, ref: str, kind: str = "preference", min_agreement: float = 0.0,
                with_votes: bool = False) -> tuple[list[dict], dict]:
    """Labels aggregated by majority per item (ties, 'both bad' and no majority left out) as TRL
    rows: preference (prompt/chosen/rejected) or KTO (prompt/completion/label, two rows per pair)."""
    if kind not in ("preference", "kto"):
        raise LabelError(f"export kind '{kind}' is not one of preference, kto")
    if not 0 <= min_agreement <= 1:  # (80 meant as 80% would leave out every item, and say it had no winner)
        raise LabelError(f"min agreement {min_agreement:g} is not a share between 0 and 1"
                         + (f" (for {min_agreement:g}% write {min_agreement / 100:g})" if 1 < min_agreement <= 100 else ""))
    found = project(studio, ref)
    labels = studio.store.list_labels(found["id"])
    items = {it["id"]: it for it in studio.store.label_items(found["id"])}
    from pipelines.importer import teaches_nothing

    pairs, empty, cut = [], 0, 0
    aggregated = labeling.aggregate(labels, min_agreement)
    # with a bar to pass, a pair only one person labelled is left out: it has no agreement to measure
    alone = sum(agg["agreement"] is None and agg["counts"]["a"] + agg["counts"]["b"] == 1
                for agg in aggregated.values()) if min_agreement > 0 else 0
    for item_id, agg in sorted(aggregated.items()):
        if agg["winner"] in ("a", "b"):
            item = items[item_id]
            win, lose = ("a", "b") if agg["winner"] == "a" else ("b", "a")
            if not item[f"answer_{win}"].strip() or not item[f"answer_{lose}"].strip():
                empty += 1  # a model that said nothing: no text to train on (and the importer refuses it)
                continue
            pairs.append({"prompt": item["prompt"],
                          "chosen": [{"role": "assistant", "content": item[f"answer_{win}"]}],
                          "rejected": [{"role": "assistant", "content": item[f"answer_{lose}"]}]})
            # the winner's end missing: it teaches stopping mid-sentence (counted where the pair is kept:
            # the import leaves out a pair of one answer twice)
            cut += item[f"cut_{win}"] and not teaches_nothing(pairs[-1])
    from_labels = len(pairs)
    votes = [v for v in arena.counted(studio.store.list_votes()) if v["winner"] in ("a", "b")] if with_votes else []
    pairs += arena.preference_rows(votes)
    cut_votes = arena.unfinished_winners([v for v, p in zip(votes, pairs[from_labels:]) if not teaches_nothing(p)])
    origin = {"kind": "labels", "project": found["name"], "project_id": found["id"], "pairs": from_labels,
              "labels": sum(lb["choice"] != "skip" for lb in labels), "min_agreement": min_agreement,
              "votes": len(votes), "vote_ids": [v["id"] for v in votes], "empty": empty, "alone": alone,
              "taught": sum(not teaches_nothing(p) for p in pairs), "cut_chosen": cut + cut_votes,
              "cut_votes": cut_votes}
    if kind == "preference":
        return pairs, origin  # (the import drops pairs of one answer twice, and says so)
    kto, origin["same_answers"] = [], 0
    for p in pairs:
        if teaches_nothing(p):  # one reply marked good and bad at once: two rows that contradict each other
            origin["same_answers"] += 1
            continue
        kto += [{"prompt": p["prompt"], "completion": p["chosen"], "label": True},
                {"prompt": p["prompt"], "completion": p["rejected"], "label": False}]
    return kto, origin


def export(studio, ref: str, kind: str = "preference", min_agreement: float = 0.0, with_votes: bool = False,
           name: str | None = None) -> dict:
    """The export as a dataset in the catalogue (the same labels give the same dataset: then
    "exported_before" is true and the name is the first export's)."""
    rows, origin = export_rows(studio, ref, kind, min_agreement, with_votes)
    if not rows:
        raise LabelError(f"project '{origin['project']}' has no item with a clear winner yet"
                         + (f" at agreement {min_agreement:.0%} or more" if min_agreement > 0 else "")
                         + ": ties, 'both bad' and split items are left out"
                         + (f", and {origin['alone']} labelled by one person only (agreement needs two)"
                            if origin["alone"] else "")
                         + (f", and {origin['empty']} with an empty answer" if origin["empty"] else "")
                         + (f", and {origin['same_answers']} whose two answers are the same"
                            if origin.get("same_answers") else ""))
    known = {d["id"] for d in studio.store.list_datasets()}
    with tempfile.TemporaryDirectory(dir=studio.home) as tmp:
        path = Path(tmp) / f"labels-{kind}.jsonl"  # a fixed name: the project's is the user's text
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        row = studio.import_dataset(path, name=name or f"labels {origin['project']} ({kind})",
                                    options=ImportOptions(kind=kind),
                                    made_here=True)
    studio.store.set_dataset_origin(row["id"], origin)
    # the same labels exported again are the dataset made then, under the name given then
    return {**studio.store.get_dataset(row["id"]), "exported_before": row["id"] in known}


def training_start(studio, ref: str, method: str = "dpo", min_agreement: float = 0.0,
                   with_votes: bool = False, name: str | None = None) -> dict:
    """'Train on these labels': the labels as a preference dataset, and where the run starts (the
    newest of the project's runs that the method can start from, else the model they came from or the
    base model compared). Returns {"dataset": row, "model": "run:ID", a base model or "default"}."""
    from pipelines.methods import get_method
    from studio.core import RunError

    found = project(studio, ref)
    row = export(studio, found["id"], "preference", min_agreement, with_votes, name)
    runs = [studio.get_run(s[4:]) for s in found["source"].get("models", []) if s.startswith("run:")]
    runs = sorted((r for r in runs if r), key=lambda r: r["created"], reverse=True)
    for run in runs:
        try:
            studio.start_point(run["id"], get_method(method))
        except RunError:
            continue
        return {"dataset": row, "model": f"run:{run['id']}"}
    # no run of the project it can start from: the model those were tuned from, else the base model the project
    # compared (the one whose answers won more items first), not the built-in one (it trained SmolLM2 on another
    # model's answers)
    items = {it["id"]: it for it in studio.store.label_items(found["id"])}
    wins = Counter(items[item_id][f"model_{agg['winner']}"]
                   for item_id, agg in labeling.aggregate(studio.store.list_labels(found["id"]), min_agreement).items()
                   if agg["winner"] in ("a", "b") and item_id in items)
    specs = [s for s in dict.fromkeys(found["source"].get("models", [])) if s.startswith("base:")]
    bases = [r["model"] for r in runs] + [s[5:] for s in sorted(specs, key=lambda s: -wins[s])]
    return {"dataset": row, "model": bases[0] if bases else "default"}
