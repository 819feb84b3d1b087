"""A job process started before its job, with the training libraries already imported.

A run's process spends seconds importing torch, transformers, PEFT and TRL before its first step
(measured with cProfile on a three-step run of the tiny model: 7.3 of 8.7 s; about 11 s on an AMD
EPYC). The studio keeps one process waiting with them imported (`python -m pipelines.standby`): a
new job's directory is handed to it on its stdin, it becomes that job's process (`pipelines.run`,
its output into the job's log) and starts at once. The studio makes the next one ready when no job
is queued or running, so that its imports never take a core from a run.

A waiting process whose studio goes away reads the end of its stdin and exits. One made for other
settings (the environment it would run with) is not used: the job gets a fresh process as before.
Its command line names no job, so the liveness check (`events.pid_alive`) knows it by its output:
the job's log.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pipelines.events import LOG

# What a run imports before its first step (train_sft.build_trainer, the preference and RL runners):
# each module, then the names whose first use loads a library's heavy parts (transformers' and TRL's
# modules load lazily, on first attribute access)
WARM = (
    ("torch", ()),
    ("transformers", ("AutoModelForCausalLM", "AutoTokenizer", "Trainer", "EarlyStoppingCallback",
                      "PrinterCallback", "set_seed")),
    ("peft", ("PeftModel", "get_peft_model", "prepare_model_for_kbit_training")),
    ("trl", ("SFTConfig", "SFTTrainer", "DPOConfig", "DPOTrainer")),
    ("datasets", ("Dataset",)),
    ("pipelines.train_sft", ()),
    ("pipelines.sft_trainer", ()),
    ("pipelines.callbacks", ()),
    ("pipelines.packing", ()),
)


def warm() -> bool:
    """Import what a run will need. False when something fails to import: a job handed to this process
    then gets a fresh one (`fresh`) that meets the error itself and says it in its log (a second import
    into the half-imported modules here would fail with a misleading message)."""
    try:
        for module, names in WARM:
            loaded = importlib.import_module(module)
            for name in names:
                getattr(loaded, name)
    except Exception:  # noqa: BLE001 - see the docstring
        return False
    return True


def _to_log(run_dir: str) -> None:
    """This process's output into the job's log, its input from nowhere (as a fresh job process has)."""
    log = os.open(Path(run_dir) / LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.close(log)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def become(run_dir: str) -> int:
    """Turn this process into the job's: its output goes to the job's log, then `pipelines.run`."""
    from pipelines import run

    _to_log(run_dir)
    return run.main(run_dir)


def fresh(run_dir: str) -> None:
    """Replace this process with a fresh job process for `run_dir` (what the studio starts when no process
    waits), its output into the job's log: the job meets an import error itself and says it there."""
    _to_log(run_dir)
    os.execv(sys.executable, [sys.executable, "-m", "pipelines.run", run_dir])


def main() -> int:
    from pipelines.run import quiet_libraries

    quiet_libraries()
    ready = warm()
    # blocks until a job comes, or the studio is gone (end of input). A process whose imports failed waits
    # too: a job handed over while it still imported was lost (it exited unread, the job had no log and
    # its run said only "exited with code 1 before starting")
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return 0 if ready else 1
    run_dir = os.fsdecode(line.rstrip(b"\n"))
    if not ready:
        fresh(run_dir)
    return become(run_dir)


class Standby:
    """One waiting process for a studio's next job (used from the server's threads)."""

    def __init__(self, command: list[str], cwd: Path):
        self.command, self.cwd = command, cwd
        self._lock = threading.Lock()
        self._ready: tuple[subprocess.Popen, dict] | None = None
        self._watch: threading.Thread | None = None  # waits for the machine to be idle (prepare_when_idle)
        self._busy: Callable[[], bool] = lambda: False
        self._env: dict = {}

    def prepare(self, env: dict) -> None:
        """Start a waiting process for jobs run with `env`, unless one is ready. Never raises: a
        process that cannot be started now (no memory, no file handles) only means the next job
        starts a fresh one."""
        with self._lock:
            self._start(env)

    def prepare_when_idle(self, busy: Callable[[], bool], env: dict, poll_s: float = 1.0) -> None:
        """Start the waiting process once `busy()` is false (no job queued or running), watching from
        a thread. Its imports take a core for seconds, which a run on a two-core machine would lose:
        made ready beside the run that just started, the next run's first step came 1.14x sooner
        than from a fresh process; made ready while nothing ran, 3.4x (bench/run_start.py). One
        watch at a time: a later call's `busy` and `env` replace an earlier one's."""
        with self._lock:
            self._busy, self._env = busy, dict(env)
            if self._watch is None:
                self._watch = threading.Thread(target=self._watch_idle, args=(poll_s,), daemon=True,
                                               name="standby-when-idle")
                self._watch.start()

    def _watch_idle(self, poll_s: float) -> None:
        while True:
            with self._lock:
                try:
                    idle = not self._busy()
                except Exception:  # noqa: BLE001 - its workspace is gone (a test's folder): stop watching
                    self._watch = None
                    return
                if idle:
                    self._start(self._env)
                    self._watch = None
                    return
            time.sleep(poll_s)

    def _start(self, env: dict) -> None:
        if self._ready is not None and self._ready[0].poll() is None and self._ready[1] == env:
            return
        self._discard()
        try:
            proc = subprocess.Popen(self.command, cwd=self.cwd, stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
        except (OSError, subprocess.SubprocessError):
            return
        self._ready = (proc, dict(env))

    def take(self, run_dir: Path, env: dict) -> subprocess.Popen | None:
        """The waiting process, handed the job in `run_dir`; None when there is none for `env` (a
        different environment, or it has exited)."""
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is None:
            return None
        proc, made_for = ready
        if made_for != env or proc.poll() is not None:
            _stop(proc)
            return None
        try:
            proc.stdin.write(os.fsencode(str(run_dir)) + b"\n")
            proc.stdin.close()
        except Exception:  # noqa: BLE001 - it exited meanwhile, or anything else: a fresh process instead
            _stop(proc)
            return None
        return proc

    def _discard(self) -> None:
        if self._ready is not None:
            _stop(self._ready[0])
            self._ready = None

    def close(self) -> None:
        with self._lock:
            self._discard()


def _stop(proc: subprocess.Popen) -> None:
    """End a waiting process that will not be used. It holds nothing yet (it may still be importing)."""
    proc.kill()
    proc.wait()
    if proc.stdin and not proc.stdin.closed:
        proc.stdin.close()


if __name__ == "__main__":
    sys.exit(main())
