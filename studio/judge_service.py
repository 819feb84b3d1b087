"""RLAIF from the studio's side: a judge model labels a preference dataset's pairs as a background
job (pipelines/judge.py), and the judged pairs become a new preference dataset in the catalogue,
with how often the judge agreed with the pairs' original (human) choices kept in its metadata."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from pipelines import importer, models
from pipelines.errors import DataError
from pipelines.events import ACTIVE_STATUSES, CANCEL, FINAL_STATUSES, JOB, STATUS, read_json, write_json
from pipelines.importer import ImportOptions
from pipelines.judge import MIN_SURE, READINGS, UnusableJudge, check_min_sure, choice_token_ids


class JudgeError(ValueError):
    """A judging request that cannot be served; one sentence."""


def start(studio, dataset_ref: str, judge: str = "default", both_orders: bool = True, rationale: bool = False,
          limit: int | None = None, min_sure: float = MIN_SURE) -> str:
    """Queue a judge job for a preference dataset; returns its id. Refused at once (one sentence):
    a dataset that holds no pairs, a judge model that is not here or whose choice cannot be read."""
    from studio.core import _new_id, dataset_title

    judge = (judge or "").strip() or "default"  # a field left blank (or spaces) is the built-in model
    row = studio.resolve_dataset(dataset_ref)
    if row["kind"] != "preference":
        raise JudgeError(f"dataset '{row['name']}' holds {row['kind']} data; a judge compares the two answers of "
                         "preference pairs (prompt, chosen, rejected)")
    if limit is not None and limit < 1:
        raise JudgeError(f"the number of pairs to judge is {limit}; judge at least one pair")
    try:
        min_sure = check_min_sure(min_sure)
    except ValueError as err:
        raise JudgeError(str(err)) from None
    models.check_available(judge, studio.model_cache)
    judge_model = studio.resolve_model(judge)  # (the built-in model's first use converts it: seconds)
    try:  # a judge that cannot answer 1 or 2: said now, not after the queue and loading its weights
        choice_token_ids(studio.tokenizer(str(judge_model)))
    except UnusableJudge as err:
        raise JudgeError(str(err)) from None
    except (OSError, ValueError) as err:  # no tokenizer files, a template that does not render
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise JudgeError(f"the judge model's tokenizer cannot be used ({first.strip()}); pick another judge") from None
    heldout = Path(row["path"]).with_name(importer.HELDOUT)
    job_id = _new_id("j")
    job_dir = studio.run_dir(job_id)
    with studio.starting:  # the pairs are not deleted between this look and the job's file that names them
        if not studio.store.get_dataset(row["id"]):
            raise JudgeError(f"dataset '{dataset_title(row)}' was deleted; pick another dataset")
        job_dir.mkdir()
        try:
            now = time.time()
            write_json(job_dir / JOB, {
                "id": job_id, "runner": "pipelines.judge", "judge_spec": judge,
                "judge_model": judge_model, "both_orders": bool(both_orders), "rationale": bool(rationale),
                "limit": limit, "min_sure": min_sure, "earlier_readings": earlier_readings(studio, judge_model),
                "dataset": {"id": row["id"], "name": row["name"], "path": row["path"],
                                            "heldout_path": str(heldout) if heldout.exists() else None},
                "max_concurrent": studio.max_concurrent, "created": now, "queued_at": now})
            studio.spawn(job_id, job_dir)
        except BaseException:  # a job folder with no worker would show as queued forever, its dataset in use
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
    return job_id


EARLIER_JOBS = 50  # the newest judge jobs whose readings a new job may reuse


def earlier_readings(studio, judge_model: str) -> list[str]:
    """The reading logs of the newest earlier jobs with this judge (pipelines.judge.READINGS), oldest first, so
    a newer reading of the same pair wins: a job that stopped is gone on with, nothing is asked twice."""
    found = []
    for job_id in jobs(studio)[:EARLIER_JOBS]:
        # (one still queued or loading too: its log is read when this job starts, whatever it holds by then)
        if (read_json(studio.run_dir(job_id) / JOB) or {}).get("judge_model") == judge_model:
            found.append(str(studio.run_dir(job_id) / READINGS))
    return found[::-1]


def kept_readings(studio, job_id: str) -> int:
    """How many pairs a job read (kept for the next job with its judge, whatever became of this one)."""
    try:
        return sum(1 for line in (studio.run_dir(job_id) / READINGS).read_bytes().splitlines() if line.strip())
    except OSError:
        return 0


def stopped_text(studio, job_id: str, status: str) -> str:
    """What a job that made no dataset left behind: the pairs it read, which the next job takes up."""
    n = kept_readings(studio, job_id)
    if not n:
        return "no pairs were kept"
    return (f"no dataset was made; the {n} pair{'s' if n != 1 else ''} it read {'are' if n != 1 else 'is'} kept, so "
            f"judging these pairs again with the same judge goes on from where it {'stopped' if status == 'cancelled' else 'failed'}")


def state(studio, job_id: str) -> dict:
    if not (studio.run_dir(job_id) / JOB).exists() or not job_id.startswith("j"):
        raise JudgeError(f"no judge job with id '{job_id}'")
    return studio.job_state(job_id, worker="judge process")


COLLECTED = "collected.json"  # in a judge job's folder: the dataset its judged pairs became
_collecting = threading.Lock()  # two pages that find the same finished job make one dataset


def collect(studio, job_id: str, name: str | None = None) -> dict:
    """The judged pairs of a completed job as a catalogue dataset (the same job collected twice is one
    dataset), with the judge and its agreement with the original choices as the dataset's origin."""
    found = state(studio, job_id)
    if found["status"] != "completed":
        raise JudgeError(f"judge job {job_id} is {found['status']}" + (f": {found['error']}" if found["error"] else ""))
    job_dir = studio.run_dir(job_id)
    job = read_json(job_dir / JOB)
    summary = found["summary"]
    judge = job["judge_spec"]
    judged = job_dir / summary["judged_file"]
    with _collecting:
        # the studio's own file: a judged copy of a dataset near the upload limit is larger than it (the
        # judge's numbers added to every row), and was refused after all the judging was done
        row = studio.import_dataset(judged, name=name or f"{job['dataset']['name']} judged by {Path(judge).name}",
                                    options=ImportOptions(kind="preference", heldout_last=summary.get("heldout_pairs", 0)),
                                    made_here=True)
        studio.store.set_dataset_origin(row["id"], {
            "kind": "judge", "judge": judge, "job": job_id, "from_dataset": job["dataset"]["id"],
            "both_orders": job["both_orders"], "rationale": job["rationale"],
            **{k: summary[k] for k in ("pairs", "agreement_both_orders", "agreement_one_order", "interval_both_orders",
                                       "interval_one_order", "picks_first_shown", "certainty", "min_sure", "reversed",
                                       "unsure_kept", "too_long_kept", "reused") if k in summary}})
        write_json(job_dir / COLLECTED, {"dataset": row["id"]})
    return studio.store.get_dataset(row["id"])


def jobs(studio) -> list[str]:
    """The judge jobs of this workspace, newest first."""
    found = [d.name for d in studio.runs_dir.glob("j*") if (d / JOB).exists()]
    return sorted(found, key=lambda job_id: (read_json(studio.run_dir(job_id) / JOB) or {}).get("created", 0),
                  reverse=True)


def active(studio) -> str | None:
    """The newest queued or running judge job, if any (a page opened again shows its progress). A folder left by
    a start whose worker never ran (before start cleaned up after itself) reads as queued for ever: not followed."""
    from studio.core import NEVER_STARTED_S

    for job_id in jobs(studio):
        job_dir = studio.run_dir(job_id)
        if (not (job_dir / STATUS).exists()
                and time.time() - (read_json(job_dir / JOB) or {}).get("created", 0) > NEVER_STARTED_S):
            continue
        if state(studio, job_id)["status"] in ACTIVE_STATUSES:
            return job_id
    return None


def finished_uncollected(studio) -> list[str]:
    """Judge jobs that finished with nobody to make their dataset (the page that started one was closed)."""
    return [job_id for job_id in jobs(studio)
            if not (studio.run_dir(job_id) / COLLECTED).exists() and state(studio, job_id)["status"] == "completed"]


def collect_finished(studio) -> list[tuple[str, dict]]:
    """(job id, dataset) for each judge job that finished while no page or command waited for it, its judged
    pairs made a dataset now; a job whose pairs already are one (collected before this was kept) is not repeated.
    A job that cannot be collected is skipped, and tried again at the next look."""
    done = []
    for job_id in finished_uncollected(studio):
        # (deleted ones too: a judged dataset the person deleted came back at the next look)
        known = {(d["meta"].get("origin") or {}).get("job") for d in studio.store.list_datasets(deleted=True)}
        if job_id in known:  # collected before its collection was written down
            write_json(studio.run_dir(job_id) / COLLECTED, {"dataset": None})
            continue
        try:
            done.append((job_id, collect(studio, job_id)))
        except (JudgeError, DataError, OSError):
            continue
    return done


def both_orders(studio, job_id: str) -> bool:
    """Whether the job asked each pair in both orders (as it ran, not as the page's box is now)."""
    return bool((read_json(studio.run_dir(job_id) / JOB) or {}).get("both_orders", True))


# below this the judge's preferences are close to coin flips (on average within 45-55%)
UNDECIDED = 0.1


def agreement_text(summary: dict, both_orders: bool) -> str:
    """'The judge agreed with the original choices on 70% [55-82%] of 40 pairs, asked in both orders;
    asked once (either order), 60% [45-74%] on average' — from a judge job's summary or a judged
    dataset's origin; with a warning when the judge was hardly decided."""
    def pct(share, interval):
        return f"{share:.0%} [{interval[0]:.0%}-{interval[1]:.0%}]"

    one = pct(summary["agreement_one_order"], summary["interval_one_order"])
    if not both_orders:
        text = f"The judge agreed with the original choices on {one} of {summary['pairs']} pairs (one order asked)"
    else:
        both = pct(summary["agreement_both_orders"], summary["interval_both_orders"])
        text = (f"The judge agreed with the original choices on {both} of {summary['pairs']} pairs, asked in both "
                f"orders; asked once (either order), {one} on average")
    if summary.get("reversed") is not None:
        text += (f". It reversed {summary['reversed']} of the {summary['pairs']} choices"
                 + (f" and kept {summary['unsure_kept']} as they were, being less than {summary['min_sure']:.0%} sure of "
                    "either answer" if summary.get("unsure_kept") else ""))
    if summary.get("too_long_kept"):
        n = summary["too_long_kept"]
        text += (f". {n} more pair{'s were' if n != 1 else ' was'} longer than the judge reads at once, kept as "
                 f"{'they were' if n != 1 else 'it was'}")
    if summary.get("reused"):
        n = summary["reused"]
        text += (f". {n} of the pairs {'were' if n != 1 else 'was'} read by an earlier job with this judge (one "
                 "that stopped, or the same pairs judged before) and not asked again")
    sure, first = summary.get("certainty"), summary.get("picks_first_shown")
    if not both_orders and first is not None and abs(first - 0.5) >= 0.3:
        # asked once, the stored choice shown first in every other pair: a judge that picks by position
        # agrees about half the time, however sure it sounds
        text += (f". ⚠️ Its picks mostly followed the position: it chose the answer shown "
                 f"{'first' if first > 0.5 else 'second'} in {max(first, 1 - first):.0%} of the pairs, so this order "
                 "of the answers says little. Ask in both orders, try a larger judge model, or read a sample of the "
                 "pairs before training on them")
    elif sure is not None and sure < UNDECIDED and first is not None and abs(first - 0.5) >= 0.3:
        # sure in each reading, but by position: asked both ways its readings cancel out
        text += (f". ⚠️ It chose by position: the answer shown {'first' if first > 0.5 else 'second'} in "
                 f"{max(first, 1 - first):.0%} of its readings, so with both orders its preferences cancel out near "
                 "50/50 and this order of the answers says little. Try a larger judge model, or read a sample of "
                 "the pairs before training on them")
    elif sure is not None and sure < UNDECIDED:
        text += (f". ⚠️ It was hardly decided: its preference averaged {50 + 50 * sure:.0f}-{50 - 50 * sure:.0f} "
                 "between the answers, close to a coin flip, so this order of the answers says little. Try a larger "
                 "judge model, or read a sample of the pairs before training on them")
    return text


def cancel(studio, job_id: str) -> None:
    found = state(studio, job_id)
    if found["status"] in FINAL_STATUSES:
        raise JudgeError(f"judge job {job_id} is {found['status']}; only a queued or running one can be cancelled")
    (studio.run_dir(job_id) / CANCEL).touch()


def wait(studio, job_id: str, poll_s: float = 1.0, on_poll=None) -> dict:
    while True:
        found = state(studio, job_id)
        if on_poll:
            on_poll(found)
        if found["status"] in FINAL_STATUSES:
            return found
        time.sleep(poll_s)
