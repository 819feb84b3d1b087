"""The job process: `python -m pipelines.run RUN_DIR`.

Runs one job (a training run, or another long task named by the job's "runner") in its own process (and its own session, so a closed tab or a restarted
server does not stop it). Waits its turn in the queue, then writes status, heartbeat,
metrics, checkpoints and, at the end, the adapter. SIGTERM (or a cancel.request file)
means: save a checkpoint, then stop.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

from pipelines.devices import distributed
from pipelines.events import (ADAPTER, CANCEL, HEARTBEAT, JOB, MODEL, RunEvents, discard_incomplete_checkpoints,
                              fsync_tree, newest_checkpoint, open_to_readers, read_json, resume_checkpoint)
from pipelines.queue import wait_for_slot


ERROR_DETAILS = "error.txt"


def quiet_libraries() -> None:
    """A run's log is read by people: no progress-bar redraws (loading weights, tokenizing), no
    libraries' deprecation notices or optional-kernel notes; the studio's own lines, metrics and
    real warnings stay."""
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE",
                "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        os.environ.setdefault(var, "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "Failed to load CPU gemm_4bit ..."
    logging.getLogger("kernels").setLevel(logging.ERROR)  # (the kernel it looked for) "Skipping publisher trust ..."


def main(run_dir: str) -> int:
    run_dir = Path(run_dir).resolve()
    job = read_json(run_dir / JOB)
    if job is None:
        print(f"{run_dir}: no readable {JOB}", file=sys.stderr)
        return 2
    events = RunEvents(run_dir)
    resumed_from = None
    if job.get("resume"):  # the page shows where it picks up from the start, not a run at step 0 of "-"
        checkpoint, before = newest_checkpoint(run_dir), read_json(run_dir / HEARTBEAT) or {}
        resumed_from = int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint else 0
        events.progress.update(step=resumed_from, max_steps=before.get("max_steps", 0))

    def on_sigterm(_signum, _frame):
        # A polite kill is a cancel: the training loop checkpoints at the end of its step.
        (run_dir / CANCEL).touch()

    signal.signal(signal.SIGTERM, on_sigterm)

    events.status("queued", error=None, resumed_from=resumed_from)  # not an earlier attempt's
    events.start_heartbeat()
    slot = wait_for_slot(run_dir, events, int(job.get("max_concurrent", 1)))
    if slot is None:
        events.stop_heartbeat()
        events.status("cancelled", finished=time.time())
        print("cancelled while queued", flush=True)
        return 0

    events.status("running", started=time.time(), resumed_from=resumed_from)
    # an export or a judge job loads libraries too, but trains nothing
    events.phase("starting (loading the libraries)" if job.get("runner") else "starting (loading the training libraries)")
    then = "resume the run"  # what to do once space is freed, said when the disk fills
    try:
        if job.get("runner"):  # another long task (e.g. answers to label): its module's run()
            runner = importlib.import_module(job["runner"])
            then = getattr(runner, "AFTER_DISK_FULL", "start it again")
            summary = runner.run(job, run_dir, events)
        elif distributed(job.get("devices")):  # several processes: accelerate launches them
            summary = launch(job, run_dir, events)
        else:
            from pipelines.methods import get_method

            runner = importlib.import_module(get_method(job["method"]).runner)
            summary = runner.train(job, run_dir, events)
    except Exception as err:  # the run fails, the message reaches the user in one line
        message = failure_message(err, run_dir, then=then)
        details = "error-rank*.txt" if isinstance(err, ProcessFailed) else ERROR_DETAILS  # each process's own
        print(f"failed: {message}\n(the full Python traceback is in {run_dir / details})", flush=True)
        events.stop_heartbeat()
        events.status("failed", error=message, finished=time.time())
        return 1
    events.stop_heartbeat()
    open_to_readers(run_dir)  # the result's weights (a cancelled run's checkpoint too), readable as its other files
    if summary.get("cancelled"):
        events.status("cancelled", summary=summary, finished=time.time())
        print("cancelled" + (" after saving a checkpoint" if not job.get("runner") else ""), flush=True)
        return 0
    for result in (ADAPTER, MODEL):  # on the disk before "completed" says it is there (a power cut within the
        if (run_dir / result).is_dir():  # kernel's write-back left a completed run with empty weights)
            fsync_tree(run_dir / result)
    events.status("completed", summary=summary, finished=time.time())
    print("run completed", flush=True)
    return 0


def failure_message(err: BaseException, run_dir: Path, details: str = ERROR_DETAILS,
                    then: str = "resume the run") -> str:
    """The failure in one line for the user (the traceback goes to error.txt for whoever debugs; a
    process of a launched run wrote its own already). then: what to do once space is freed when the
    disk filled (an export cannot be resumed: it starts again)."""
    if disk_full(err):
        # the half-written checkpoint goes first: it frees space, and resume must never use it
        discard_incomplete_checkpoints(run_dir)
        kept = newest_checkpoint(run_dir)
        message = (f"the disk is full (no space left on the device holding {run_dir.parent}); "
                   + (f"the last complete checkpoint ({kept.name}) is kept: " if kept else "")
                   + f"free some space, then {then}")
    else:  # errors written for people (one sentence) are shown as they are; others with their type
        message = (str(err) if getattr(err, "one_sentence", False) else f"{type(err).__name__}: {err}")
    if not isinstance(err, ProcessFailed):
        with contextlib.suppress(OSError):
            (run_dir / details).write_text(traceback.format_exc())
    return message.splitlines()[0]


class ProcessFailed(RuntimeError):
    one_sentence = True


def launch(job: dict, run_dir: Path, events: RunEvents) -> dict:
    """Run the job's runner in several processes through `accelerate launch` (pipelines/rank.py) and
    wait for them. The launcher gets its own session, so a kill meant for this worker becomes a cancel
    request the processes act on together rather than a signal that cuts them off mid-step."""
    import subprocess

    from pipelines import hardware
    from pipelines.devices import Devices, write_launch
    from pipelines.rank import FAILURE, RESULT

    devices = Devices(**job["devices"])
    for name in (RESULT, FAILURE):
        (run_dir / name).unlink(missing_ok=True)
    resume_checkpoint(job, run_dir)  # a resume's tidying (unsealed checkpoints, redone metrics) before any
    # process starts: the others then only read what is left
    command = write_launch(run_dir, devices, hardware.use_bf16())
    events.phase(f"starting {devices.total_processes} processes ({devices.strategy})")
    print(f"launching {devices.total_processes} processes ({devices.strategy}); the command is in "
          f"{run_dir / 'launch.txt'}", flush=True)
    events.stop_heartbeat()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL,
                               env=env, start_new_session=True)
    while process.poll() is None:
        beat = read_json(run_dir / HEARTBEAT) or {}
        if beat.get("pid") in (None, os.getpid()):  # until the main process beats, this one does
            events.beat()
        time.sleep(1.0)
    last = read_json(run_dir / HEARTBEAT) or {}  # the main process's last progress stays the run's
    events.progress.update({k: v for k, v in last.items() if k not in ("time", "pid")})
    result = read_json(run_dir / RESULT)
    failure = read_json(run_dir / FAILURE)
    if result is not None and not failure:
        # (rank 0 writes it once every process is through training and saving: a process that dies in its
        # own teardown after that, as a CPU process did on a cancel with "terminate called without an active
        # exception", made the launcher's exit code 1 and a cancelled run read as failed, its checkpoint kept)
        if process.returncode != 0:
            print(f"(a process exited with code {process.returncode} after the run's result was written)", flush=True)
        return result["summary"]
    if failure:
        raise ProcessFailed(failure["error"] if failure["rank"] == 0 else f"process {failure['rank']}: "
                            f"{failure['error']}")
    raise ProcessFailed(f"the training processes stopped with exit code {process.returncode} without a result "
                        f"(each process's log: {run_dir / 'train.log'} and rank*.log beside it)")


def disk_full(err: BaseException) -> bool:
    """Whether a failure was the disk running out of space: an OSError saying so anywhere in the
    chain, or the message a wrapped one leaves (safetensors says StorageFull / os error 28)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(sign in str(err) for sign in ("No space left on device", "StorageFull", "os error 28")):
            return True
        err = err.__cause__ or err.__context__
    return False


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m pipelines.run RUN_DIR", file=sys.stderr)
        sys.exit(2)
    quiet_libraries()
    sys.exit(main(sys.argv[1]))
