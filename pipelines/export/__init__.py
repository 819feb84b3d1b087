"""Turning runs into models people can take anywhere: an adapter merged into its base
(`merge.py`), models merged with each other (`model_merge.py`, through mergekit), a GGUF file for
llama.cpp (`gguf.py`) and an Ollama Modelfile beside it (`modelfile.py`). `job.py` runs them as
background jobs like training runs."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from pipelines.events import fsync_tree, open_to_readers


class ExportError(ValueError):
    """An export that cannot be made; the message is one sentence."""

    one_sentence = True  # a failed job shows the message alone, without the class name


class Cancelled(Exception):
    """The user asked the job to stop; raised between tensors (or, in a merge, between mergekit's
    steps) so the writer removes its partial output."""


def check_target(target: Path) -> None:
    """A folder a result may be written to: none there yet, or an empty one (said before the work, not as
    errno 39 once it is done)."""
    target = Path(target)
    if target.is_dir() and any(target.iterdir()):
        raise ExportError(f"{target} exists and is not empty; choose another folder or remove it")
    if target.exists() and not target.is_dir():
        raise ExportError(f"{target} exists and is a file; choose another folder or remove it")


@contextmanager
def atomic_folder(target: Path):
    """Yield a temporary folder beside `target`; when the block succeeds it becomes `target` in one
    rename (after its files reach the disk), otherwise it is removed: a crash or an error never
    leaves a half-written model where a finished one is expected."""
    target = Path(target)
    check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        open_to_readers(tmp)  # safetensors writes the weights owner-only
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


STOP_POLL_S = 0.05  # how often a stoppable step looks for a cancel request


def run_stoppable(work, cancelled):
    """work(), stopped with Cancelled once cancelled() says yes, for a step that offers no hook of its own
    (mergekit's run_merge). A watcher thread looks at once and then every STOP_POLL_S, and on a cancel
    interrupts the main thread: Python raises KeyboardInterrupt there at its next bytecode, after the
    running tensor operation. The one interrupt is caught wherever it lands, in work() or as it ends;
    once a cancel was asked, whatever work() raised (a library may wrap the interrupt) is the cancel.
    Only in the main thread, where a job runs; elsewhere work() runs to its end."""
    if cancelled is None or threading.current_thread() is not threading.main_thread():
        return work()
    import _thread
    import time

    asked, done = [], []  # plain flags: the interrupt can land anywhere, and no lock may be held then

    def watch():
        while not cancelled():
            time.sleep(STOP_POLL_S)
            if done:
                return
        asked.append(True)
        _thread.interrupt_main()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # even where SIGINT was ignored
    watcher = threading.Thread(target=watch, daemon=True)
    result = None
    try:
        try:
            watcher.start()
            result = work()
        except BaseException:
            if not asked:
                raise
        finally:
            done.append(True)
            while True:  # until the watcher is gone and an interrupt it sent has landed
                try:
                    watcher.join()
                    _arrive()
                    break
                except KeyboardInterrupt:
                    if not asked:
                        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if asked:  # asked before work() ended: stopped, or too late to stop but asked all the same
        raise Cancelled
    return result


def _arrive() -> None:
    """A Python call: an interrupt still pending is raised at its start."""
