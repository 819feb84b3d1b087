"""What a run writes for the world to read: status, heartbeat, metrics and log.

The worker process is the only writer; the studio (UI, CLI) only reads. Small JSON files
are replaced atomically so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

STATUS = "status.json"
HEARTBEAT = "heartbeat.json"
METRICS = "metrics.jsonl"
LOG = "train.log"
JOB = "job.json"
WORKER = "worker.json"  # the pid of the process started for the job's current attempt, as its starter saw it
ADAPTER = "adapter"
MODEL = "model"  # full and freeze tuning leave a whole model instead of an adapter
INITIAL_ADAPTER = "initial-adapter"  # PiSSA/OLoRA: the adapter at step 0, to convert the result
CHECKPOINTS = "checkpoints"
CANCEL = "cancel.request"
EVALUATING = "evaluating on the held-out rows"  # the phase of an evaluation between training steps
HELDOUT_ROWS = "heldout_rows.json"  # the row numbers a run holds out of its dataset (data.run_split)
SAMPLES = "samples.json"  # reinforcement learning: the newest replies the model wrote and their rewards

ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("completed", "failed", "cancelled", "interrupted")
RESUMABLE_STATUSES = ("failed", "cancelled", "interrupted")
HEARTBEAT_EVERY_S = 2.0
# A live worker whose heartbeat is older than this is reported as stalled (not failed:
# only a dead process is a failure, so a long checkpoint save never shows as one).
HEARTBEAT_STALE_S = 10.0


def write_json(path: Path, data: dict) -> None:
    # a temporary name per process and thread: the heartbeat thread and the worker both write
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunEvents:
    """The worker's writer for one run directory."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.progress = {"step": 0, "max_steps": 0}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self, status: str, **extra) -> None:
        data = read_json(self.run_dir / STATUS) or {}
        data.update(extra, status=status, time=time.time(), pid=os.getpid())
        write_json(self.run_dir / STATUS, data)

    def phase(self, text: str) -> None:
        """Say what the worker is doing now (shown with the progress, at once)."""
        self.progress["phase"] = text
        self.beat()

    def cancel_requested(self) -> bool:
        return (self.run_dir / CANCEL).exists()

    def stopped_by_cancel(self, state) -> bool:
        """After a trainer's `train()` (its `state`): did a cancel stop it before its last step? One that
        came during the last step stopped nothing (callbacks.CancelCallback), so the run saves its result."""
        from pipelines.rank import any_process

        if not any_process(self.cancel_requested()):  # several processes answer alike
            return False
        if state.global_step < state.max_steps:
            return True
        print("the cancel came during the last step: training had finished, so the result is saved", flush=True)
        return False

    def metric(self, record: dict) -> None:
        with open(self.run_dir / METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def beat(self) -> None:
        write_json(self.run_dir / HEARTBEAT, {"time": time.time(), "pid": os.getpid(), **self.progress})

    def start_heartbeat(self) -> None:
        self.beat()

        def loop():
            while not self._stop.wait(HEARTBEAT_EVERY_S):
                self.beat()

        self._thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.beat()


# metrics file -> ((device, inode), bytes parsed, the last of those bytes, their records)
_READ: dict[str, tuple[tuple, int, bytes, list[dict]]] = {}
_READ_LOCK = threading.Lock()
_READ_KEPT = 64  # files whose records are kept (the runs a page shows), the least recently read going first
_READ_RECORDS = 500_000  # and at most this many records in all (a 30,000-step run keeps 30,000)


def read_metrics(run_dir: Path) -> list[dict]:
    """All metric records so far; a half-written last line (worker mid-write) waits for its end. Only what was
    added since the last read of the file is parsed: the Train tab reads a run's file every two seconds, and a
    run of 30,000 steps took 0.27 s each time. A file replaced (a resume drops the steps it redoes) is read
    again whole."""
    path = Path(run_dir) / METRICS
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return []
    with fh, _READ_LOCK:
        stat = os.fstat(fh.fileno())
        inode = (stat.st_dev, stat.st_ino)
        kept_inode, offset, tail, records = _READ.get(str(path), (None, 0, b"", []))
        records = list(records)  # (kept only once all of this read is done)
        if offset:  # the same file as read before, grown only: its inode, and the bytes read last still there
            fh.seek(offset - len(tail))
            if kept_inode != inode or fh.read(len(tail)) != tail:
                offset, records = 0, []
        fh.seek(offset)
        added = fh.read()
        whole = added.rfind(b"\n") + 1  # up to the last line's end: a line still being written waits
        for line in added[:whole].splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                records.append(record)
        if whole:
            fh.seek(offset + whole - min(offset + whole, 256))
            tail = fh.read(min(offset + whole, 256))
        _READ.pop(str(path), None)
        _READ[str(path)] = (inode, offset + whole, tail, records)
        while len(_READ) > _READ_KEPT or sum(len(kept[3]) for kept in _READ.values()) > _READ_RECORDS:
            if len(_READ) == 1:
                break
            del _READ[next(iter(_READ))]
        return [dict(r) for r in records]  # (a caller's changes stay its own)


# a terminal's colour and style codes (ESC [ ... letter), which libraries write into the log
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def log_tail(run_dir: Path, lines: int = 20) -> str:
    """The log's last lines as a page shows them: without terminal colour codes."""
    path = Path(run_dir) / LOG
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(_TERMINAL_CODES.sub("", text).splitlines()[-lines:])


def process_started(pid: int | None) -> int | None:
    """When a live (not zombie) process with this pid started (clock ticks since boot: /proc's `starttime`),
    whatever it runs; None when there is none. (A worker just started can still show its starter's command
    line, before its own replaces it: pid_alive cannot tell it yet.) With the start, a pid used again by
    another process is told apart."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text() if pid else ""
    except (OSError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # (field 22 of the line; the first two, pid and name, are before the ")")


def pid_alive(pid: int | None, run_dir: Path | None = None) -> bool:
    """Is this pid a live (not zombie) worker process, for this run when run_dir is given?"""
    if process_started(pid) is None:  # (none, or a zombie)
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if "pipelines.run" in cmdline and (run_dir is None or Path(run_dir).name in cmdline):
        return True
    # a waiting process that became this job (pipelines/standby.py): its output is the job's log
    if "pipelines.standby" in cmdline and run_dir is not None:
        try:
            return Path(os.readlink(f"/proc/{pid}/fd/1")) == (Path(run_dir) / LOG).resolve()
        except OSError:
            return False
    return False


def worker_gone(run_dir: Path) -> bool:
    """The process started for the job's current attempt has ended (its starter wrote its pid and start down,
    for this attempt's queueing); False when that is not known (no pid kept, or kept for an earlier attempt)."""
    worker, job = read_json(Path(run_dir) / WORKER) or {}, read_json(Path(run_dir) / JOB) or {}
    if not worker.get("pid") or worker.get("queued_at") != job.get("queued_at"):
        return False
    started = process_started(worker["pid"])
    return started is None or (worker.get("started") is not None and started != worker["started"])


def current_status(run_dir: Path) -> dict | None:
    """What the worker of the job's current attempt wrote; None before it wrote anything (a status
    older than the job's queueing is an earlier attempt's: the resumed worker has not reported yet)."""
    status = read_json(Path(run_dir) / STATUS)
    job = read_json(Path(run_dir) / JOB) or {}
    if status and job.get("queued_at", 0) > status.get("time", 0):
        return None
    return status


def run_state(run_dir: Path, now: float | None = None) -> dict:
    """The run's status as the outside world should see it.

    Comes from what the worker wrote, checked against its process: a "running" worker whose
    process is gone (killed, out of memory) is reported as failed with its last log lines.
    """
    now = time.time() if now is None else now
    run_dir = Path(run_dir)
    status = current_status(run_dir)
    beat = read_json(run_dir / HEARTBEAT) or {}
    state = {
        "status": "queued",
        "step": beat.get("step", 0),
        "max_steps": beat.get("max_steps", 0),
        # what the worker is doing ("loading the model", "training", "saving", ...) and since when
        # it trains (from which step): an ETA from the first step on
        "phase": beat.get("phase"),
        "training_since": beat.get("training_since"),
        "first_step": beat.get("first_step", 0),
        "error": None,
        "summary": {},
        "started": None,
        "resumed_from": None,  # the checkpoint's step a resumed attempt picked up from (0: started over)
        "finished": None,
        "stalled_s": 0.0,
        # asked to stop, not stopped yet (a running run saves a checkpoint first)
        "cancelling": (run_dir / CANCEL).exists(),
    }
    if status is None:
        if worker_gone(run_dir):
            if current_status(run_dir) is not None:  # it reported, then ended, between the two reads
                return run_state(run_dir, now)
            tail = log_tail(run_dir, 3).replace("\n", " | ")
            state.update(status="failed", error="the training process ended before it reported anything (last log: "
                                                f"{tail or 'empty'})")
        return state
    state.update(status=status["status"], error=status.get("error"), summary=status.get("summary", {}),
                 started=status.get("started"), resumed_from=status.get("resumed_from"),
                 finished=status.get("finished") if status["status"] in FINAL_STATUSES else None)
    state["cancelling"] = state["cancelling"] and status["status"] in ACTIVE_STATUSES
    if status["status"] in ACTIVE_STATUSES:
        if not pid_alive(status.get("pid"), run_dir):
            again = current_status(run_dir)
            if again is not None and again["status"] in FINAL_STATUSES:  # it wrote its end between the two reads
                return run_state(run_dir, now)                          # (a completed run read as failed)
            tail = log_tail(run_dir, 3).replace("\n", " | ")
            state["status"] = "failed"
            state["error"] = f"the training process stopped without reporting (last log: {tail or 'empty'})"
        elif now - beat.get("time", status["time"]) > HEARTBEAT_STALE_S:
            state["stalled_s"] = now - beat.get("time", status["time"])
    return state


SEALED = ".complete"  # written last in a checkpoint, after its files reached the disk


def fsync_path(path: Path) -> None:
    """A file's data, or a folder's list of entries, flushed to the disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def fsync_tree(folder: Path) -> None:
    """Every file under `folder`, then the folders themselves, flushed to the disk."""
    for path in sorted(Path(folder).rglob("*"), key=lambda p: -len(p.parts)):
        fsync_path(path)
    fsync_path(folder)


def _umask() -> int:
    """The process's umask, read without setting it (os.umask sets it, and a thread creating a file in that
    moment would make it writable by all)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^Umask:\s*([0-7]+)", status, re.M).group(1), 8)
    except (OSError, AttributeError):
        return 0o022


PRIVATE = 0o600  # how safetensors writes its files (a private temporary file, renamed)


def open_to_readers(folder: Path) -> None:
    """Every file under `folder` that safetensors made private (owner-only) given the permissions the
    process's other files get (its umask's): the weights of an adapter or a merged model were the one file
    of their folder another account (an Ollama or vLLM server, a teammate) could not read."""
    mask = _umask()
    for path in Path(folder).rglob("*"):
        try:  # (a file gone since it was listed, or another account's: left as it is, the run is not failed)
            if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == PRIVATE:
                path.chmod(0o666 & ~mask)
        except OSError:
            continue


def seal_checkpoint(folder: Path) -> None:
    """Mark a fully written checkpoint as complete: its files are flushed first, then the marker is
    written under a temporary name, flushed and renamed, so a kill or a power cut at any moment
    leaves either a sealed checkpoint or one that resume skips."""
    folder = Path(folder)
    fsync_tree(folder)
    tmp = folder / f"{SEALED}.tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps({"sealed_at": time.time()}))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / SEALED)
    fsync_path(folder)
    fsync_path(folder.parent)


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for path in (Path(run_dir) / CHECKPOINTS).glob("checkpoint-*"):
        step = path.name.rsplit("-", 1)[-1]
        if step.isdigit() and path.is_dir():
            found.append((int(step), path))
    return sorted(found)


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint: a sealed one. (Checkpoints written before sealing existed
    count when their trainer_state.json, which the trainer writes last, reads whole.)"""
    found = _checkpoints(run_dir)
    sealed = [(step, path) for step, path in found if (path / SEALED).exists()]
    if sealed:
        return sealed[-1][1]
    legacy = [(step, path) for step, path in found if read_json(path / "trainer_state.json") is not None]
    return legacy[-1][1] if legacy else None


def discard_incomplete_checkpoints(run_dir: Path) -> list[str]:
    """Remove checkpoints newer than the newest complete one (a save cut short by a kill or a full
    disk) and temporary ones; returns their names. The complete ones are never touched."""
    import shutil

    newest = newest_checkpoint(run_dir)
    newest_step = int(newest.name.rsplit("-", 1)[-1]) if newest else -1
    removed = [path for step, path in _checkpoints(run_dir) if step > newest_step]
    removed += [p for p in (Path(run_dir) / CHECKPOINTS).glob(".checkpoint-*") if p.is_dir()]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in removed]


def resume_checkpoint(job: dict, run_dir: Path) -> Path | None:
    """For a resumed run: its newest checkpoint (metrics after it dropped, as those steps are redone),
    or None (a resumed run without one starts over, with its metrics cleared). None for a new run."""
    if not job.get("resume"):
        return None
    if os.environ.get("RANK", "0") != "0":  # one of several processes: the worker and the main one tidy up
        return newest_checkpoint(run_dir)
    discard_incomplete_checkpoints(run_dir)
    checkpoint = newest_checkpoint(run_dir)
    truncate_metrics(run_dir, int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint else -1)
    if checkpoint is not None:
        print(f"resuming from {checkpoint.name}", flush=True)
    return checkpoint


def truncate_metrics(run_dir: Path, max_step: int) -> None:
    """Drop records after `max_step` (steps redone after a resume must not appear twice)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= max_step]
    path = Path(run_dir) / METRICS
    tmp = path.with_name(f".{METRICS}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)
