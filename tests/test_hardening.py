"""Hardening (issue #18), first slice: non-finite numbers in configs, preference pairs that cannot
teach, imports killed part-way, `studio resume --wait`, and what a killed worker is reported as."""

from __future__ import annotations

import fcntl
import json
import os
import time

import pytest

from pipelines.data import DataError
from tests.test_cli import studio_cmd, write_config


@pytest.mark.parametrize("key, value, says", [
    ("per_device_train_batch_size", ".inf", "parameter 'per_device_train_batch_size': expected a whole number, got inf"),
    ("per_device_train_batch_size", ".nan", "parameter 'per_device_train_batch_size': expected a whole number, got nan"),
    ("learning_rate", ".nan", "parameter 'learning_rate': expected a finite number, got nan"),
    ("learning_rate", "-.inf", "parameter 'learning_rate': expected a finite number, got -inf"),
])
def test_non_finite_numbers_in_a_config_exit_2_and_queue_nothing(tmp_path, tiny_model_dir, key, value, says):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndataset: quillpad_faq\nmethod: lora\nparams:\n  {key}: {value}\n")
    done = studio_cmd(tmp_path / "home", "train", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {says}"
    assert not list((tmp_path / "home" / "runs").glob("r*"))


def pairs_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_that_teach_nothing_are_refused_when_no_pair_differs(studio, tmp_path):
    same = pairs_file(tmp_path / "same.jsonl", [
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Hello!"},
        {"prompt": "Bye", "chosen": "See you.", "rejected": " See you. "},
        {"prompt": "Why?", "chosen": [{"role": "assistant", "content": "Because."}],
         "rejected": [{"role": "assistant", "content": "Because."}]},
    ])
    with pytest.raises(DataError) as err:
        studio.import_dataset(same)
    assert str(err.value) == ("same.jsonl: no pair can teach anything: in all 3 rows 'chosen' and 'rejected' are "
                              "the same answer or one is empty; preference training needs two different answers "
                              "to each prompt")
    assert studio.list_datasets() == [] and os.listdir(studio.datasets_dir) == []


def test_pairs_that_teach_nothing_are_dropped_with_their_places(studio, tmp_path):
    talk = [{"role": "user", "content": "Hi"}]
    mixed = pairs_file(tmp_path / "mixed.jsonl", [
        {"prompt": "A", "chosen": "Yes, 27 months.", "rejected": "No idea."},
        {"prompt": "B", "chosen": "Same.", "rejected": "Same."},
        {"prompt": "C", "chosen": "Restart it.", "rejected": "Buy a new one."},
        {"prompt": talk, "chosen": [{"role": "assistant", "content": "Hello"}],
         "rejected": [{"role": "assistant", "content": "Hello"}]},
    ])
    row = studio.import_dataset(mixed)
    assert row["rows"] == 2
    assert row["meta"]["untaught_pairs"] == 2 and row["meta"]["untaught_rows"] == ["line 2", "line 4"]
    from pipelines.importer import untaught_text

    assert untaught_text(row["meta"]) == ("2 pairs dropped that could teach nothing (chosen = rejected, or an empty "
                                          "answer: line 2, line 4)")
    # an empty answer is refused with its place, as before: nothing is stored
    empty = pairs_file(tmp_path / "empty.jsonl", [{"prompt": "D", "chosen": "   ", "rejected": "Something."}])
    with pytest.raises(DataError, match=r"^empty.jsonl, line 1, column 'chosen': is empty; expected text$"):
        studio.import_dataset(empty)
    assert len(studio.list_datasets()) == 1


def test_imports_killed_part_way_are_cleaned_at_start_but_a_running_one_is_kept(tmp_path):
    from studio.core import Studio

    datasets = tmp_path / "home" / "datasets"
    old = datasets / ".import-killed"
    (old).mkdir(parents=True)
    (old / "data.parquet").write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    stale_lock = datasets / ".import-killed-with-lock"
    stale_lock.mkdir()
    (stale_lock / ".importing").touch()  # its importer is gone, so nobody holds the lock
    busy = datasets / ".import-busy"
    busy.mkdir()
    with open(busy / ".importing", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # an import still working (here: this test holds its lock)
        Studio(tmp_path / "home")
        assert sorted(p.name for p in datasets.iterdir()) == [".import-busy"]


def test_resume_wait_blocks_and_exits_with_the_runs_outcome(tmp_path, tiny_model_dir, tiny_params):
    from studio.core import Studio

    home = tmp_path / "home"
    studio = Studio(home)
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params={**tiny_params, "num_train_epochs": 2, "save_steps": 2})
    for _ in range(600):
        if studio.get_run(run_id)["step"] >= 2:
            break
        time.sleep(0.2)
    studio.cancel(run_id)
    assert studio.wait(run_id, poll_s=0.3)["status"] == "cancelled"

    data = tmp_path / "away.parquet"  # the run's data gone: the resumed run fails, and says so
    dataset_file = json.loads((studio.run_dir(run_id) / "job.json").read_text())["dataset"]["path"]
    os.rename(dataset_file, data)
    failed = studio_cmd(home, "resume", run_id, "--wait")
    assert failed.returncode == 1
    assert f"run {run_id} failed: " in failed.stderr

    os.rename(data, dataset_file)
    done = studio_cmd(home, "resume", run_id, "--wait")
    assert done.returncode == 0, done.stderr
    assert "adapter: " in done.stderr
    assert Studio(home).get_run(run_id)["status"] == "completed"


def test_a_corrupt_or_truncated_parquet_file_is_one_sentence_and_stores_nothing(studio, tmp_path):
    import pandas as pd

    good = tmp_path / "good.parquet"
    pd.DataFrame({"prompt": ["How long is the warranty?"] * 50, "completion": ["27 months."] * 50}).to_parquet(good)
    data = good.read_bytes()
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"PAR1" + b"not really parquet" + b"PAR1")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(data[:600] + data[-8:])  # the footer's promise, without the file it describes
    for path in (fake, truncated):
        with pytest.raises(DataError) as err:
            studio.import_dataset(path)
        assert str(err.value).startswith(f"{path.name}: not a readable Parquet file (")
        assert "\n" not in str(err.value)
    assert studio.list_datasets() == [] and os.listdir(studio.datasets_dir) == []


def test_matmul_measurement_is_kept_for_the_next_process(tmp_path, monkeypatch):
    """Measured once per machine: a restarted studio or a run's worker reads it instead of measuring
    again beside a training run (where it came out wrong and took 49 s for bf16 on a CPU without it)."""
    import json

    from pipelines import hardware

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    hardware.matmul_flops.cache_clear()
    try:
        measured = hardware.matmul_flops("cpu", False)
        kept = json.loads(hardware.measurements_file().read_text())
        assert hardware.measurements_file() == tmp_path / "tune-studio" / "matmul.json"
        assert kept == {hardware._machine("cpu", False): measured} and measured > 1e8
        # what is kept is what the next process gets (a value no measurement would give)
        kept[hardware._machine("cpu", False)] = 123.0
        hardware.measurements_file().write_text(json.dumps(kept))
        hardware.matmul_flops.cache_clear()
        assert hardware.matmul_flops("cpu", False) == 123.0
        # an unreadable file is measured again and replaced
        hardware.measurements_file().write_text("{not json")
        hardware.matmul_flops.cache_clear()
        assert hardware.matmul_flops("cpu", False) > 1e8
        assert json.loads(hardware.measurements_file().read_text())[hardware._machine("cpu", False)] > 1e8
        # the optimizer's speed is kept beside it, under its own name
        hardware.optimizer_seconds_per_weight.cache_clear()
        per_weight = hardware.optimizer_seconds_per_weight("cpu")
        assert 0 < per_weight < 1e-6
        kept = json.loads(hardware.measurements_file().read_text())
        assert kept[hardware._machine("cpu", False, "adamw s/weight")] == per_weight and len(kept) == 2
    finally:
        hardware.matmul_flops.cache_clear()
        hardware.optimizer_seconds_per_weight.cache_clear()


def test_a_figure_measured_while_something_else_ran_is_replaced_by_a_faster_one(tmp_path, monkeypatch):
    """Kept for good, a figure taken beside a training run made every estimate 2-4x too long; measured
    again where nothing runs (the server's start), the faster of old and new is kept."""
    import json

    from pipelines import hardware

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fp32, adamw = hardware._machine("cpu", False), hardware._machine("cpu", False, "adamw s/weight")
    hardware.measurements_file().parent.mkdir(parents=True)
    # a matmul as slow as a busy machine's, an AdamW step faster than any (kept: it is the faster)
    hardware.measurements_file().write_text(json.dumps({fp32: 1e6, adamw: 1e-15, "another machine": 5.0}))
    try:
        hardware.matmul_flops("cpu", False)  # read once in this process, then measured again
        kept = hardware.remeasure("cpu")
        assert kept[fp32] > 1e8 and kept[adamw] == 1e-15 and kept["another machine"] == 5.0
        assert json.loads(hardware.measurements_file().read_text()) == kept
        assert hardware._machine("cpu", True) not in kept  # never needed here: not measured
        assert hardware.matmul_flops("cpu", False) == kept[fp32]  # what this process uses from now on
    finally:
        hardware.matmul_flops.cache_clear()
        hardware.optimizer_seconds_per_weight.cache_clear()


def test_the_server_measures_again_only_once_nothing_trains_and_the_machine_is_quiet(tmp_path, monkeypatch):
    """A server started beside a test suite measured the machine 2x slow and estimated 77 s for a 39 s
    run all session: it waits for no run and a quiet CPU, measures, then waits again."""
    import json
    import threading

    from pipelines import hardware

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fp32 = hardware._machine("cpu", False)
    hardware.measurements_file().parent.mkdir(parents=True)
    hardware.measurements_file().write_text(json.dumps({fp32: 1e6}))  # as slow as a busy machine's
    state = {"busy": True, "quiet": False, "asked": 0}

    def busy():
        state["asked"] += 1
        return state["busy"]

    stop = threading.Event()
    watch = threading.Thread(target=hardware.remeasure_when_quiet, args=(busy, lambda: state["quiet"], 0.05, 60, stop))
    watch.start()
    try:
        def kept():
            return json.loads(hardware.measurements_file().read_text())[fp32]

        time.sleep(0.5)
        assert state["asked"] >= 3 and kept() == 1e6  # a run trains: nothing measured
        state["busy"] = False
        time.sleep(0.5)
        assert kept() == 1e6  # no run, but another program takes the CPU
        state["quiet"] = True
        deadline = time.monotonic() + 30
        while kept() == 1e6 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kept() > 1e8
        asked = state["asked"]
        time.sleep(0.5)
        assert state["asked"] == asked  # measured: it waits the hour before asking again
    finally:
        stop.set()
        watch.join(10)
        hardware.matmul_flops.cache_clear()
        hardware.optimizer_seconds_per_weight.cache_clear()


def test_a_machine_whose_cores_are_all_working_is_not_quiet():
    import subprocess
    import sys

    from pipelines import hardware

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        time.sleep(0.5)
        assert hardware.cpu_busy_share() > 0.8
        assert not hardware.machine_quiet()
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()
