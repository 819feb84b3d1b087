"""What a run writes for the world to read: status, heartbeat, metrics and log.

The worker process is the only writer; the studio (UI, CLI) only reads. Small JSON files
are replaced atomically so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

STATUS = "status.json"
HEARTBEAT = "heartbeat.json"
METRICS = "metrics.jsonl"
LOG = "train.log"
JOB = "job.json"
ADAPTER = "adapter"

FINAL_STATUSES = ("completed", "failed", "cancelled")
HEARTBEAT_EVERY_S = 2.0
# A worker whose heartbeat is older than this is gone (killed, out of memory).
HEARTBEAT_STALE_S = 10.0


def write_json(path: Path, data: dict) -> None:
    tmp = Path(path).with_name(f".{Path(path).name}.{os.getpid()}.tmp")
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


def read_metrics(run_dir: Path) -> list[dict]:
    """All metric records so far; a half-written last line (worker mid-write) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def log_tail(run_dir: Path, lines: int = 20) -> str:
    path = Path(run_dir) / LOG
    if not path.exists():
        return ""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def run_state(run_dir: Path, now: float | None = None) -> dict:
    """The run's status as the outside world should see it.

    Comes from what the worker wrote, checked against its heartbeat: a "running" worker
    whose heartbeat went stale was killed without a word, and is reported as failed.
    """
    now = time.time() if now is None else now
    status = read_json(Path(run_dir) / STATUS)
    beat = read_json(Path(run_dir) / HEARTBEAT) or {}
    state = {
        "status": "queued",
        "step": beat.get("step", 0),
        "max_steps": beat.get("max_steps", 0),
        "error": None,
        "summary": {},
    }
    if status is None:
        return state
    state.update(status=status["status"], error=status.get("error"), summary=status.get("summary", {}))
    if status["status"] == "running" and now - beat.get("time", status["time"]) > HEARTBEAT_STALE_S:
        state["status"] = "failed"
        tail = log_tail(run_dir, 3).replace("\n", " | ")
        state["error"] = f"the training process stopped without reporting (last log: {tail or 'empty'})"
    return state
