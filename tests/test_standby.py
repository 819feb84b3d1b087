"""The next job's process waits with the training libraries imported: a run handed to it trains,
logs and is seen alive like one started fresh; one made for another environment is never used."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipelines.events import pid_alive, read_json
from pipelines.standby import Standby
from studio import core
from tests.conftest import FAQ
from tests.test_jobs import wait_until, worker_pid


@pytest.fixture
def studio(studio, monkeypatch):
    """The suite's studio, with the waiting process on (the suite turns it off: conftest.py)."""
    monkeypatch.setenv("STUDIO_STANDBY", "1")
    studio.standby = True
    yield studio
    core.STANDBY.close()  # none left waiting for a later test's run


def command(proc) -> str:
    return " ".join(map(str, proc.args))


def ready_pid():
    ready = core.STANDBY._ready
    return ready[0].pid if ready is not None and ready[0].poll() is None else None


def test_the_next_run_starts_in_the_waiting_process_and_is_seen_alive(studio, tiny_model_dir, tiny_params):
    params = {**tiny_params, "num_train_epochs": 0.5}
    first = studio.start_run(model=str(tiny_model_dir), dataset=str(FAQ), method="lora", params=params)
    # none is made while the run is queued or running: its imports would take a core from it
    seen = []
    while studio.get_run(first)["status"] not in core.FINAL_STATUSES:
        seen.append(ready_pid())
        time.sleep(0.2)
    assert seen and not any(seen), seen
    assert studio.get_run(first)["status"] == "completed"
    wait_until(ready_pid, timeout=30)  # made ready once nothing runs
    second = studio.start_run(model=str(tiny_model_dir), dataset=str(FAQ), method="lora",
                              params={**params, "num_train_epochs": 1})
    proc = studio._procs[second]
    assert "pipelines.standby" in command(proc)  # the process made ready after the first run
    wait_until(lambda: (read_json(studio.run_dir(second) / "status.json") or {}).get("status") == "running")
    # alive as this run's worker (its command line names no run: its output is the run's log)
    assert worker_pid(studio, second) == proc.pid
    assert pid_alive(proc.pid, studio.run_dir(second)) and not pid_alive(proc.pid, studio.run_dir(first))
    # a run that has to wait its turn gets a fresh process (a waiting one would hold the libraries)
    third = studio.start_run(model=str(tiny_model_dir), dataset=str(FAQ), method="lora", params=params)
    assert "pipelines.run" in command(studio._procs[third])
    row = studio.wait(second, poll_s=0.5)
    assert row["status"] == "completed", row["error"]
    assert studio.wait(third, poll_s=0.5)["status"] == "completed"
    log = (studio.run_dir(second) / "train.log").read_text()
    assert "[metrics] step=1" in log and log.rstrip().endswith("run completed")
    assert studio.adapter_dir(second).is_dir()


def test_a_process_made_for_another_environment_is_not_used(tmp_path):
    ready = Standby([sys.executable, "-m", "pipelines.standby"], core.PROJECT_ROOT)
    env = core.worker_env()
    ready.prepare(env)
    proc = ready._ready[0]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert ready.take(run_dir, {**env, "STUDIO_BF16": "0"}) is None  # a setting read when the run starts
    assert proc.wait(timeout=10) != 0 and not (run_dir / "train.log").exists()  # stopped; nothing written
    assert ready.take(run_dir, env) is None  # and none is left


def test_a_job_handed_to_a_process_whose_libraries_fail_to_import_says_why_in_its_log(tmp_path):
    """The process exited unread once its imports failed: a job handed to it while it still imported was
    lost, its run saying only "exited with code 1 before starting". Now the job gets a fresh process, which
    meets the error itself and says it in the job's log."""
    (tmp_path / "lib" / "trl").mkdir(parents=True)
    (tmp_path / "lib" / "trl" / "__init__.py").write_text("raise ImportError('trl is broken here')\n")
    ready = Standby([sys.executable, "-m", "pipelines.standby"], core.PROJECT_ROOT)
    env = {**core.worker_env(), "PYTHONPATH": f"{tmp_path / 'lib'}:{core.PROJECT_ROOT}"}
    ready.prepare(env)
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text('{"runner": "trl"}')  # a job whose first import is the broken library
    proc = ready.take(run_dir, env)
    assert proc is not None and proc.wait(timeout=120) != 0
    assert "trl is broken here" in (run_dir / "train.log").read_text()
    # one nobody hands a job to exits when its studio goes, saying its imports failed
    ready.prepare(env)
    ready._ready[0].stdin.close()
    assert ready._ready[0].wait(timeout=120) == 1


def test_a_waiting_process_exits_when_its_studio_is_gone():
    # the studio's end of the pipe closes when its process ends: the waiting process reads the end
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.standby"], cwd=core.PROJECT_ROOT,
                            stdin=subprocess.PIPE, env={**core.worker_env(), "PYTHONPATH": str(core.PROJECT_ROOT)})
    proc.stdin.close()
    assert proc.wait(timeout=120) == 0
