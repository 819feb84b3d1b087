"""Checkpoints resume trusts: sealed after their files reach the disk; a save cut short (a kill, a
full disk) is never resumed from and never costs the previous checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from pipelines.events import (
    CHECKPOINTS,
    SEALED,
    discard_incomplete_checkpoints,
    newest_checkpoint,
    read_metrics,
    seal_checkpoint,
)
from studio.core import PROJECT_ROOT
from tests.test_jobs import long_params, wait_until  # noqa: F401  (a fixture)


def make_checkpoint(run_dir, step, state='{"global_step": 1}', sealed=False):
    folder = run_dir / CHECKPOINTS / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    if sealed:
        seal_checkpoint(folder)
    return folder


def test_only_sealed_checkpoints_are_resumed_from_and_the_unsealed_newer_one_is_removed(tmp_path):
    three = make_checkpoint(tmp_path, 3, sealed=True)
    make_checkpoint(tmp_path, 6)  # every file written, but killed before it was sealed
    (tmp_path / CHECKPOINTS / ".checkpoint-9.tmp").mkdir()  # PPO's temporary name
    assert json.loads((three / SEALED).read_text())["sealed_at"] > 0
    assert newest_checkpoint(tmp_path) == three
    assert sorted(discard_incomplete_checkpoints(tmp_path)) == [".checkpoint-9.tmp", "checkpoint-6"]
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == ["checkpoint-3"]
    assert discard_incomplete_checkpoints(tmp_path) == []  # the complete one is never touched


def test_checkpoints_from_before_sealing_count_when_their_state_reads_whole(tmp_path):
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4, state='{"global_st')  # cut off while the trainer wrote it, last
    make_checkpoint(tmp_path, 6, state=None)  # cut off before
    assert newest_checkpoint(tmp_path).name == "checkpoint-2"
    assert newest_checkpoint(tmp_path / "nothing-here") is None


def test_every_checkpoint_of_a_real_run_is_sealed(studio, tiny_model_dir, long_params):  # noqa: F811
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params={**long_params, "num_train_epochs": 0.5})
    assert studio.wait(run_id, poll_s=0.3)["status"] == "completed"
    saved = list((studio.run_dir(run_id) / CHECKPOINTS).glob("checkpoint-*"))
    assert saved and all((folder / SEALED).exists() for folder in saved)


def can_mount_a_small_disk() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1M tmpfs /tmp"],
                          capture_output=True).returncode == 0


# Inside its own mount namespace (no root needed), the worker's checkpoints folder is a small
# RAM disk. Once the first checkpoint is sealed a filler takes every free byte, so the next save
# hits a real ENOSPC. What is left on that disk is copied out before the namespace goes away.
FULL_DISK = """
set -e
mount -t tmpfs -o size=64M tmpfs "$1/checkpoints"
"$2" -m pipelines.run "$1" & worker=$!
while ! ls "$1"/checkpoints/checkpoint-*/.complete >/dev/null 2>&1; do sleep 0.05; done
dd if=/dev/zero of="$1/checkpoints/filler" bs=1M >/dev/null 2>&1 || true
wait $worker || true
rm -f "$1/checkpoints/filler"
cp -a "$1/checkpoints/." "$1/left-on-disk"
"""


def spawn_in_a_namespace(studio, monkeypatch, script: str, folders: tuple[str, ...]) -> list:
    """The studio's jobs start inside a mount namespace of their own running `script` (sh: $1 the job's
    folder, $2 Python), after making `folders` in the job's folder; returns the wrappers started."""
    wrappers = []

    def spawn(job_id, job_dir):
        for name in folders:
            (job_dir / name).mkdir(exist_ok=True)
        with open(job_dir / "train.log", "ab") as log:
            wrappers.append(subprocess.Popen(
                ["unshare", "-rm", "sh", "-c", script, "sh", str(job_dir), sys.executable],
                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            studio._procs[job_id] = wrappers[-1]

    monkeypatch.setattr(studio, "spawn", spawn)
    return wrappers


@pytest.mark.skipif(not can_mount_a_small_disk(), reason="needs unshare -rm to mount a small tmpfs")
def test_a_full_disk_while_saving_fails_the_run_clearly_and_keeps_the_previous_checkpoint(
        studio, tiny_model_dir, long_params, monkeypatch):  # noqa: F811
    wrappers = spawn_in_a_namespace(studio, monkeypatch, FULL_DISK, (CHECKPOINTS, "left-on-disk"))
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params=long_params)
    row = studio.wait(run_id, poll_s=0.3)
    run_dir = studio.run_dir(run_id)
    wrappers[0].wait(timeout=30)  # what is left on the small disk is copied out
    assert row["status"] == "failed", row
    assert row["error"] == (f"the disk is full (no space left on the device holding {run_dir.parent}); the last "
                            "complete checkpoint (checkpoint-3) is kept: free some space, then resume the run")
    left = run_dir / "left-on-disk"
    assert [p.name for p in left.glob("*checkpoint-*")] == ["checkpoint-3"]  # the cut-short save was removed
    assert (left / "checkpoint-3" / SEALED).exists()

    # Space again (the studio's own disk): the kept checkpoint resumes the run to its end.
    monkeypatch.undo()
    shutil.rmtree(run_dir / CHECKPOINTS)
    left.rename(run_dir / CHECKPOINTS)
    studio.resume(run_id)
    row = studio.wait(run_id, poll_s=0.5)
    assert row["status"] == "completed", row["error"]
    steps = [m["step"] for m in read_metrics(run_dir) if "loss" in m]
    assert steps == sorted(set(steps)) and steps[-1] == row["max_steps"]
    assert "resuming from checkpoint-3" in (run_dir / "train.log").read_text()


def test_early_stopping_goes_on_counting_checks_without_improvement_after_a_resume(tmp_path):
    """The count of checks without improvement restarted from 0 at every resume: each resume granted `patience`
    more checks. Read back from the state a checkpoint holds, as the trainer writes and reads it."""
    from transformers import TrainerState

    from pipelines.callbacks import early_stopping

    before = early_stopping(3)
    before.early_stopping_patience_counter = 2
    saved = tmp_path / "trainer_state.json"
    TrainerState(global_step=40, stateful_callbacks=[before]).save_to_json(str(saved))
    resumed = early_stopping(3)
    resumed.on_train_begin(None, TrainerState.load_from_json(str(saved)), None)
    assert resumed.early_stopping_patience_counter == 2
    fresh = early_stopping(3)  # a new run starts at 0
    fresh.on_train_begin(None, TrainerState(global_step=0, stateful_callbacks=[before]), None)
    assert fresh.early_stopping_patience_counter == 0


def test_a_resumed_runs_training_loss_averages_the_steps_before_the_resume_by_their_log_lines():
    """Hand-computed: lines at steps 2 and 4 each cover two steps (2.0, 1.0), the resumed call trained steps 5
    and 6 at a mean of 0.5, so the run's mean is (2*2.0 + 2*1.0 + 2*0.5) / 6; a held-out line and a line past
    the checkpoint (written by the stopped attempt) count for nothing."""
    from types import SimpleNamespace

    from pipelines.callbacks import run_loss

    history = [{"loss": 2.0, "step": 2}, {"loss": 1.0, "step": 4}, {"eval_loss": 9.0, "step": 4},
               {"loss": 0.5, "step": 6}]
    trainer = SimpleNamespace(_initial_global_step=4, state=SimpleNamespace(global_step=6, log_history=history))
    assert run_loss(trainer, SimpleNamespace(training_loss=0.5)) == pytest.approx(7 / 6)
    trainer.state.global_step = 4  # resumed from its last step: nothing left to train
    assert run_loss(trainer, SimpleNamespace(training_loss=0.0)) == pytest.approx(1.5)
    trainer._initial_global_step = 0  # not resumed: the trainer's own figure
    assert run_loss(trainer, SimpleNamespace(training_loss=0.75)) == 0.75
