"""Runs in the background: queue, cancel, kill -9, resume, server restart, continue."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from pipelines.events import newest_checkpoint, read_metrics
from studio.core import RunError, Studio


def wait_until(predicate, timeout=120.0, poll=0.2):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("condition not met in time")


@pytest.fixture
def long_params(tiny_params):
    """About 14 steps of ~1 s on the tiny model, checkpointing every 3: the tests act from step 6 or 8."""
    return {**tiny_params, "num_train_epochs": 1, "save_steps": 3}


def worker_pid(studio, run_id):
    return json.loads((studio.run_dir(run_id) / "status.json").read_text())["pid"]


def loss_steps(studio, run_id):
    return [m["step"] for m in read_metrics(studio.run_dir(run_id)) if "loss" in m]


def mean_loss(studio, run_id):
    losses = [m["loss"] for m in read_metrics(studio.run_dir(run_id)) if "loss" in m]
    return sum(losses) / len(losses)


def assert_resumed_to_the_end(studio, run_id):
    row = studio.wait(run_id, poll_s=0.5)
    assert row["status"] == "completed", row["error"]
    steps = loss_steps(studio, run_id)
    assert steps == sorted(set(steps)), "the step count went backwards or repeated"
    assert steps[-1] == row["max_steps"]
    assert (studio.adapter_dir(run_id) / "adapter_model.safetensors").exists()
    return row


def test_cancel_saves_a_checkpoint_then_resume_finishes(studio, tiny_model_dir, long_params):
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params=long_params)
    wait_until(lambda: studio.get_run(run_id)["step"] >= 6)
    studio.cancel(run_id)
    assert studio.get_run(run_id)["cancelling"]  # shown at once, before the worker stops
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "cancelled"
    checkpoint = newest_checkpoint(studio.run_dir(run_id))
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) == row["step"]
    assert not studio.adapter_dir(run_id).exists()
    with pytest.raises(RunError, match="only a queued or running run can be cancelled"):
        studio.cancel(run_id)

    studio.resume(run_id)
    # back in line; a process waiting with the libraries imported can have it running already
    assert studio.get_run(run_id)["status"] in ("queued", "running")
    from components.runs_panel import RESUMING, action_after, run_action

    # Resume pressed twice: the second press says it resumes (its refusal replaced that, and stayed)
    assert run_action(studio, studio.resume, RESUMING, ("queued", "running"))(run_id) == RESUMING.format(run_id=run_id)
    refused = f"**Could not do that:** run {run_id} is running; only a cancelled, failed or interrupted run can be resumed"
    assert run_action(studio, studio.resume, RESUMING)(run_id).startswith(f"**Could not do that:** run {run_id} is ")
    # from its start the resumed attempt says where it picks up (it read as a new run at step 0 of "-")
    wait_until(lambda: studio.get_run(run_id)["status"] == "running")
    resumed = studio.get_run(run_id)
    assert resumed["resumed_from"] == row["step"] and resumed["step"] >= row["step"]
    assert resumed["max_steps"] == row["max_steps"]
    assert_resumed_to_the_end(studio, run_id)
    # the summary's training loss is the whole run's, not the resumed steps' alone
    assert studio.get_run(run_id)["summary"]["train_loss"] == pytest.approx(mean_loss(studio, run_id), rel=1e-4)
    from components.runs_panel import progress_html

    done = studio.get_run(run_id)
    assert f"· resumed from the checkpoint at step {row['step']}" in progress_html(done, [])
    assert action_after(studio, run_id, f"Resuming `{run_id}` from its newest checkpoint.") == ""
    # a refusal goes once it no longer holds: "is running" under a completed run read as a false error
    assert action_after(studio, run_id, refused) == ""
    assert action_after(studio, run_id, refused.replace("is running", "is completed")) != ""  # still so: kept
    # and a message about another run goes when this one is selected (a Start selected it)
    assert action_after(studio, "r20991231-235959-abcd", refused) == ""


def test_a_cancel_during_the_last_step_lets_the_run_finish_and_save(studio, tiny_model_dir, tiny_params):
    """A cancel takes effect at the end of a step; after the last one there is nothing left to stop, so the
    run is completed with its result, not 'cancelled at step 1 of 1' without one."""
    params = {**tiny_params, "num_train_epochs": 1, "per_device_train_batch_size": 128}  # one step in all
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=params)
    wait_until(lambda: studio.get_run(run_id)["status"] == "running", poll=0.05)
    studio.cancel(run_id)  # while the model loads: the only step is the last one
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    assert row["step"] == row["max_steps"] == 1
    assert (studio.adapter_dir(run_id) / "adapter_model.safetensors").exists()
    assert "the cancel came during the last step" in (studio.run_dir(run_id) / "train.log").read_text()


def test_resuming_from_the_last_steps_checkpoint_trains_no_step_past_the_end(studio, tiny_model_dir, tiny_params):
    """Killed after the last step's checkpoint but before the result was saved: resuming saves the result
    without training a step past the end (it once showed "step 3 of 2")."""
    params = {**tiny_params, "num_train_epochs": 2, "per_device_train_batch_size": 128, "save_steps": 1}
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=params)
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    run_dir, adapter = studio.run_dir(run_id), studio.adapter_dir(run_id)
    last = newest_checkpoint(run_dir)
    assert last is not None and last.name == f"checkpoint-{row['max_steps']}"
    from safetensors.torch import load_file

    expected = load_file(adapter / "adapter_model.safetensors")
    # the state a kill during the final save leaves: the last checkpoint, no result, status failed
    import shutil

    from pipelines.events import RunEvents

    shutil.rmtree(adapter)
    RunEvents(run_dir).status("failed", error="the training process was killed by SIGKILL")
    studio.resume(run_id)
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    assert row["step"] == row["max_steps"] == 2
    assert loss_steps(studio, run_id) == [1, 2]
    # with no step left to train, the summary's loss is still the run's (it read 0.0)
    assert row["summary"]["train_loss"] == pytest.approx(mean_loss(studio, run_id), rel=1e-4) != 0
    resumed = load_file(adapter / "adapter_model.safetensors")  # the weights of the last step, untouched
    assert resumed.keys() == expected.keys() and all((resumed[k] == expected[k]).all() for k in expected)


def test_kill_9_shows_failed_fast_and_resume_loses_at_most_one_interval(studio, tiny_model_dir, long_params):
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params=long_params)
    wait_until(lambda: studio.get_run(run_id)["step"] >= 8)
    killed_at = studio.get_run(run_id)["step"]
    os.kill(worker_pid(studio, run_id), signal.SIGKILL)
    t0 = time.time()
    row = wait_until(lambda: (r := studio.get_run(run_id))["status"] == "failed" and r, timeout=10)
    assert time.time() - t0 < 10
    assert row["error"] == ("the training process was killed by SIGKILL (the system does this when memory runs "
                            "out; so does kill -9); resume it to continue from its newest checkpoint")
    # another studio (the CLI, a restarted server) that did not start the worker still sees it failed
    from studio.core import Studio

    assert Studio(studio.home).get_run(run_id)["status"] == "failed"

    checkpoint = newest_checkpoint(studio.run_dir(run_id))
    assert killed_at - int(checkpoint.name.split("-")[1]) <= long_params["save_steps"]
    studio.resume(run_id)
    assert_resumed_to_the_end(studio, run_id)


def test_a_server_restart_neither_stops_nor_loses_a_run(studio, tiny_model_dir, long_params):
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params=long_params)
    wait_until(lambda: studio.get_run(run_id)["status"] == "running")
    home = studio.home
    del studio  # the server goes away; its worker lives in its own session
    restarted = Studio(home)
    assert restarted.recover() == []
    assert restarted.get_run(run_id)["status"] == "running"
    assert restarted.wait(run_id, poll_s=0.5)["status"] == "completed"


def test_runs_whose_process_vanished_are_interrupted_on_start(tmp_path, tiny_model_dir, long_params):
    first = Studio(tmp_path / "home")
    run_id = first.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                             params=long_params)
    wait_until(lambda: (first.run_dir(run_id) / "status.json").exists()
               and json.loads((first.run_dir(run_id) / "status.json").read_text())["status"] == "running")
    os.kill(worker_pid(first, run_id), signal.SIGKILL)
    first._procs[run_id].wait()  # the old server's child is reaped as the OS would on exit

    restarted = Studio(tmp_path / "home")
    assert restarted.recover() == [run_id]
    assert restarted.get_run(run_id)["status"] == "interrupted"
    restarted.resume(run_id)
    assert_resumed_to_the_end(restarted, run_id)


def test_queue_runs_one_at_a_time_in_order(studio, tiny_model_dir, tiny_params, monkeypatch):
    from pipelines import hardware

    monkeypatch.setattr(hardware, "SHARED_CORES", float("inf"))  # the suite's other worker may share the CPU: any run counts
    params = {**tiny_params, "num_train_epochs": 0.5}
    first = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=params)
    second = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=params)
    wait_until(lambda: studio.get_run(first)["status"] == "running")
    assert studio.get_run(second)["status"] == "queued"
    assert studio.wait(first, poll_s=0.5)["status"] == "completed"
    assert studio.wait(second, poll_s=0.5)["status"] == "completed"
    first_end = json.loads((studio.run_dir(first) / "status.json").read_text())["finished"]
    second_start = json.loads((studio.run_dir(second) / "status.json").read_text())["started"]
    assert second_start >= first_end
    # the estimate's time outside training steps: from a run's turn, not its wait behind the first run
    from studio.method_service import _run_times

    waited = second_start - json.loads((studio.run_dir(second) / "job.json").read_text())["queued_at"]
    first_took, second_took = (_run_times(str(studio.run_dir(r)))[0] for r in (first, second))
    assert second_took < first_took + 0.5 * waited, (first_took, second_took, waited)


def test_a_queued_run_can_be_cancelled(studio, tiny_model_dir, long_params):
    first = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=long_params)
    second = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=long_params)
    wait_until(lambda: studio.get_run(first)["status"] == "running")
    wait_until(lambda: (studio.run_dir(second) / "heartbeat.json").exists())
    studio.cancel(second)
    assert studio.wait(second, poll_s=0.3)["status"] == "cancelled"
    from components.runs_panel import CANCELLING, action_after

    # nothing to resume from: said so under the buttons (not "continues from its newest checkpoint")
    assert action_after(studio, second, CANCELLING.format(run_id=second)) == (
        f"Cancelled `{second}` before its first checkpoint: *Resume* starts it over.")
    studio.cancel(first)
    assert studio.wait(first, poll_s=0.3)["status"] == "cancelled"


def test_continue_training_starts_from_the_parent_adapter(studio, tiny_model_dir, tiny_params):
    parent = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params={**tiny_params, "num_train_epochs": 1})
    assert studio.wait(parent, poll_s=0.5)["status"] == "completed"
    child = studio.continue_run(parent, epochs=0.25)
    row = studio.wait(child, poll_s=0.5)
    assert row["status"] == "completed" and row["parent_id"] == parent
    assert row["params"]["num_train_epochs"] == 0.25
    parent_losses = [m["loss"] for m in read_metrics(studio.run_dir(parent)) if "loss" in m]
    child_losses = [m["loss"] for m in read_metrics(studio.run_dir(child)) if "loss" in m]
    assert child_losses[0] < parent_losses[0] - 0.1  # it did not start from scratch


def test_the_log_tail_leaves_out_terminal_colour_codes(tmp_path):
    from pipelines.events import LOG, log_tail

    (tmp_path / LOG).write_text("step 1\n\x1b[1mModel LOAD\x1b[0m from: x\n\x1b[31;1mred\x1b[0m line\n")
    assert log_tail(tmp_path) == "step 1\nModel LOAD from: x\nred line"
    assert log_tail(tmp_path, lines=1) == "red line"


def test_the_same_run_asked_for_twice_at_once_is_one_run(studio, tiny_model_dir, long_params):
    """Start pressed twice (two requests 0.2 s apart) started two identical runs. Asked for again within the
    window while it waits or trains, the same settings answer with that run; other settings start another."""
    from studio.core import AlreadyStarted

    first = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=long_params,
                             twin_within_s=10)
    with pytest.raises(AlreadyStarted) as again:
        studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=long_params,
                         twin_within_s=10)
    assert again.value.run_id == first and len(studio.store.list_runs()) == 1
    other = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                             params={**long_params, "seed": 7}, twin_within_s=10)
    assert other != first
    for run_id in (first, other):
        studio.cancel(run_id)
    for run_id in (first, other):
        assert studio.wait(run_id, poll_s=0.3)["status"] in ("cancelled", "completed")
    # ended, the same settings start a new run (a second look at the same recipe)
    third = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=long_params,
                             twin_within_s=10)
    assert third not in (first, other)
    studio.cancel(third)
    studio.wait(third, poll_s=0.3)


def test_a_second_run_of_the_same_settings_past_the_window_names_the_first(studio, tiny_model_dir, long_params):
    """Start pressed again with the same settings after the de-dup window queued a second identical run without
    a word: the Train tab now says which run already has those settings while it waits or trains."""
    def start(**extra):
        return studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                                params={**long_params, **extra})

    first, second = start(), start()  # (no window given: as Start pressed again past it)
    assert [r["id"] for r in studio.same_settings_running(second)] == [first]
    assert [r["id"] for r in studio.same_settings_running(first)] == [second]
    assert studio.same_settings_running(second)[0]["status"] in ("queued", "running")
    other = start(seed=7)
    assert studio.same_settings_running(other) == []
    studio.cancel(first)  # on its way out: Start again takes its place, no second run to speak of
    assert studio.same_settings_running(second) == []
    for run_id in (second, other):
        studio.cancel(run_id)
    for run_id in (first, second, other):
        studio.wait(run_id, poll_s=0.3)
    assert studio.same_settings_running(first) == []  # ended: nothing waits or trains with those settings


def test_a_run_whose_process_cannot_start_leaves_nothing_and_a_resume_leaves_it_as_it_was(
        studio, tiny_model_dir, tiny_params, broken_model_dir, monkeypatch):
    """A fork that failed (no memory, no process slots) left the run "queued" for good: its dataset could not be
    deleted, Cancel only said "cancelling", Resume was refused."""
    real_spawn = studio.spawn

    def no_fork(*_args):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(studio, "spawn", no_fork)
    with pytest.raises(RunError) as err:
        studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=tiny_params)
    assert str(err.value) == ("the training process could not be started (Resource temporarily unavailable); "
                              "nothing was queued, start it again once the machine has room")
    assert studio.list_runs() == [] and list(studio.runs_dir.iterdir()) == []
    # a stopped run: its resume that cannot start leaves it stopped, and resumable
    monkeypatch.setattr(studio, "spawn", real_spawn)
    broken = broken_model_dir
    run_id = studio.start_run(model=str(broken), dataset="quillpad_faq", method="lora", params=tiny_params)
    failed = studio.wait(run_id, poll_s=0.3)
    assert failed["status"] == "failed"
    job = json.loads((studio.run_dir(run_id) / "job.json").read_text())
    monkeypatch.setattr(studio, "spawn", no_fork)
    with pytest.raises(RunError) as err:
        studio.resume(run_id)
    assert str(err.value) == (f"the training process could not be started (Resource temporarily unavailable); run "
                              f"{run_id} is still failed, resume it once the machine has room")
    row = studio.get_run(run_id)
    assert (row["status"], row["error"]) == ("failed", failed["error"])
    assert json.loads((studio.run_dir(run_id) / "job.json").read_text()) == job


def test_a_run_that_completes_between_two_reads_is_not_reported_failed(tmp_path, monkeypatch):
    """The status was read as running, then the worker wrote "completed" and exited before its process was
    looked at: the run read as "failed: the training process stopped without reporting", and train --wait
    exited 1 for a run that completed."""
    from pipelines import events

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "job.json").write_text(json.dumps({"queued_at": time.time() - 5}))
    worker = events.RunEvents(run_dir)
    worker.status("running", started=time.time())

    def ends_meanwhile(pid, folder):  # the worker finishes at this moment
        worker.status("completed", summary={"steps": 2}, finished=time.time())
        return False

    monkeypatch.setattr(events, "pid_alive", ends_meanwhile)
    state = events.run_state(run_dir)
    assert (state["status"], state["error"], state["summary"]) == ("completed", None, {"steps": 2})
