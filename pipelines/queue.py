"""The run queue, kept by the workers themselves so it needs no server.

Every worker starts at once and waits, as "queued", for one of N slot locks in
runs/.slots/. Only the oldest waiting run may take a free slot, so runs start in the order
they were asked for. A slot is an flock: the OS frees it when its worker exits or is killed.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

from pipelines.events import JOB, STATUS, RunEvents, pid_alive, read_json

POLL_S = 0.5
# How long a worker may take to start and report before its run stops holding its place in line
STARTING_S = 30.0


def _waiting_runs(runs_root: Path, now: float | None = None) -> list[tuple[float, str]]:
    """(asked at, run) for every run waiting for a slot, the oldest first. A run asked for moments
    ago whose worker has not said "queued" yet (it is still starting) counts as waiting too:
    otherwise a run asked for later, whose worker happened to start first, would overtake it."""
    now = time.time() if now is None else now
    waiting = []
    for run_dir in runs_root.iterdir():
        if not run_dir.is_dir() or run_dir.name.startswith("."):
            continue
        status = read_json(run_dir / STATUS)
        job = read_json(run_dir / JOB) or {}
        asked = job.get("queued_at", job.get("created", 0.0))
        current = status is not None and status.get("time", 0.0) >= asked
        if current and status["status"] == "queued" and pid_alive(status.get("pid"), run_dir):
            waiting.append((asked, run_dir.name))
        elif not current and asked and 0 <= now - asked < STARTING_S:
            waiting.append((asked, run_dir.name))
    return sorted(waiting)


def wait_for_slot(run_dir: Path, events: RunEvents, max_concurrent: int):
    """Block until this run may start; returns the held slot (keep it open) or None if cancelled."""
    slots = run_dir.parent / ".slots"
    slots.mkdir(exist_ok=True)
    while not events.cancel_requested():
        waiting = _waiting_runs(run_dir.parent)
        if not waiting or waiting[0][1] == run_dir.name:
            for i in range(max(1, max_concurrent)):
                handle = open(slots / f"slot-{i}.lock", "w")
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return handle
                except BlockingIOError:
                    handle.close()
        time.sleep(POLL_S)
    return None
