"""The estimate's line above Start: its times add up, and a run too short to learn says so."""

from __future__ import annotations

import os

import pytest

from pipelines.estimates import Estimate
from studio.method_service import fmt_seconds, summary_line


def estimate(**given) -> Estimate:
    return Estimate(**{"method": "dpo", "total_params": 1000, "trainable_params": 10, "weights_bytes": 4000,
                       "training_bytes": 1000, "runtime_bytes": 100, "peak_bytes": 2**30,
                       "available_bytes": 8 * 2**30, "device": "cpu", **given})


def test_times_under_ten_minutes_keep_their_seconds_so_the_parts_add_up():
    assert [fmt_seconds(s) for s in (41, 89.6, 95, 120, 136, 599, 600, 5400)] == \
        ["41 s", "90 s", "1 min 35 s", "2 min", "2 min 16 s", "9 min 59 s", "10 min", "1.5 h"]
    line = summary_line(estimate(seconds_per_epoch=95, eval_seconds=41, rows=300, steps_per_epoch=38), 1)
    assert "training takes about **2 min 16 s in all** (1 min 35 s per epoch × 1, plus 41 s measuring" in line
    assert "Only" not in line


def test_a_run_of_few_steps_says_it_will_barely_change_the_model():
    # 3 preference pairs from 4 chat votes, batch 4, one epoch: one step
    line = summary_line(estimate(seconds_per_epoch=5, rows=3, steps_per_epoch=1), 1)
    assert line.endswith("\n\n⚠️ **Only 1 training step** (3 training rows, 1 step per epoch): too few for the "
                         "model to change much. Add epochs or examples, or lower the batch size.")
    line = summary_line(estimate(method="grpo", seconds_per_epoch=5, rows=12, steps_per_epoch=3), 3)
    assert "**Only 9 training steps** (12 training prompts, 3 steps per epoch)" in line
    assert "Only" not in summary_line(estimate(seconds_per_epoch=5, rows=40, steps_per_epoch=5), 2)
    assert "Only" not in summary_line(estimate(seconds_per_epoch=5, rows=40, steps_per_epoch=5))  # epochs unknown


def test_the_estimate_counts_the_training_rows_the_run_will_have(studio, tiny_model_dir, tmp_path):
    """4 chat votes at a held-out share of 0.1: the run holds 1 out and trains on 3, where the estimate
    said 4 (it rounded 4 x 0.9 up); the run's own split decides both."""
    import json

    from pipelines import data
    from studio import method_service

    for n, fraction in ((4, 0.1), (7, 0.5), (2, 0.1), (50, 0.1)):
        path = tmp_path / f"votes-{n}.jsonl"
        path.write_text("".join(json.dumps({"prompt": f"question {i}?", "chosen": "yes", "rejected": "no"}) + "\n"
                                for i in range(n)))
        row = studio.import_dataset(path, name=f"votes {n}")
        lengths = method_service._training_lengths(studio, str(tiny_model_dir), row["id"], fraction)
        assert len(lengths) == len(data.split_indices(n, fraction, 0)[0]), (n, fraction)
    assert len(data.split_indices(4, 0.1, 0)[0]) == 3
    # KTO holds out two rows at least (one would be compared with itself): 10 thumbs train on 8
    path = tmp_path / "thumbs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {i}?", "completion": "yes", "label": i % 2 == 0}) + "\n"
                            for i in range(10)))
    row = studio.import_dataset(path, name="thumbs")
    assert method_service.estimate(studio, str(tiny_model_dir), "kto", {"eval_fraction": 0.1}, row["id"]).rows == 8
    # pairs of one prompt stay on one side (data.split_plan): the estimate counts that split, not a row split
    path = tmp_path / "repeated.jsonl"
    pairs = [{"prompt": "the same question?", "chosen": f"yes {i}", "rejected": "no"} for i in range(6)]
    pairs += [{"prompt": f"question {i}?", "chosen": "yes", "rejected": "no"} for i in range(2)]
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    row = studio.import_dataset(path, name="repeated")
    stored = data.load_rows(row["path"])
    for fraction, seed in ((0.1, 42), (0.3, 42), (0.3, 5)):
        train, held = data.split(stored, fraction, seed, "preference")
        assert method_service._split_rows(studio, row["id"], fraction, "preference", seed) == (len(train), len(held),
                                                                                               False)
    assert method_service.estimate(studio, str(tiny_model_dir), "dpo", {"eval_fraction": 0.3}, row["id"]).rows == 6


def test_the_time_from_start_to_the_saved_result_counts_what_runs_here_took_outside_training(studio, tiny_model_dir,
                                                                                              monkeypatch):
    """"About 9 s" took 21 s from Start: the estimate counted the training steps only. Once a run has
    finished here, the line adds what runs took to start and to save, and says it is measured so."""
    from components.train_tab import estimate_text
    from studio import method_service

    from pipelines import hardware

    monkeypatch.setattr(hardware, "SHARED_CORES", float("inf"))  # the suite's other worker may share the CPU: any speed counts
    model = str(tiny_model_dir)
    params = {"num_train_epochs": 0.1, "per_device_train_batch_size": 8, "max_length": 64, "r": 8}
    assert method_service.past_runs(studio, model, "lora") == method_service.PastRuns(None, None)
    before = estimate_text(studio, model, "quillpad_faq", "lora", params)
    assert "in all** (" in before and ", plus loading the model at the start and saving at the end" in before
    run_id = studio.start_run(model=model, dataset="quillpad_faq", method="lora", params=params)
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    past = method_service.past_runs(studio, model, "lora")
    took = row["finished"] - studio.get_run(run_id)["started"]
    assert 1 <= past.overhead_s <= took + 5  # spawning, imports, loading: seconds, never more than the whole run
    assert past.tokens_per_s > 0
    other = method_service.past_runs(studio, model, "dpo")  # no DPO run yet: any method's start, no speed
    assert (other.overhead_s, other.tokens_per_s) == (past.overhead_s, None)
    # the times at the speed the run reached: tokens per second as estimated = as measured
    raw = method_service.estimate(studio, model, "lora", params, "quillpad_faq")
    est = method_service.calibrated(raw, past)
    factor = (raw.tokens_per_epoch / raw.seconds_per_epoch) / past.tokens_per_s
    expected = past.tokens_per_s if 1 / 3 <= factor <= 3 else raw.tokens_per_epoch / raw.seconds_per_epoch / min(
        3.0, max(1 / 3, factor))  # far off (another batch or length): moved at most 3x
    assert est.tokens_per_epoch / est.seconds_per_epoch == pytest.approx(expected)
    assert est.eval_seconds / est.seconds_per_epoch == pytest.approx(raw.eval_seconds / raw.seconds_per_epoch)
    after = estimate_text(studio, model, "quillpad_faq", "lora", params)
    assert "from Start to the saved result** (starting, loading the model and saving took" in after
    line = summary_line(estimate(seconds_per_epoch=9, rows=300, steps_per_epoch=38), 1, overhead=12)
    assert "about **9 s in all** (9 s per epoch × 1), about **21 s from Start to the saved result** (starting, " \
           "loading the model and saving took 12 s in the last runs here)" in line


def test_a_runs_time_outside_training_ends_at_its_last_record(tmp_path):
    """The held-out check after the last step is part of the estimate's training time: counted in the
    time outside training too (from the last step's record), it was counted twice."""
    import json

    from pipelines.events import HEARTBEAT, JOB, METRICS, STATUS
    from studio import method_service

    (tmp_path / JOB).write_text(json.dumps({"method": "lora"}))
    (tmp_path / HEARTBEAT).write_text(json.dumps({"training_since": 10.0}))
    (tmp_path / STATUS).write_text(json.dumps({"started": 5.0, "finished": 40.0}))
    records = [{"step": 1, "loss": 2.0, "time": 20.0, "tokens_per_s": 100.0},
               {"step": 2, "loss": 1.5, "time": 30.0, "tokens_per_s": 120.0},
               {"step": 2, "eval_loss": 1.7, "time": 35.0}]
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records))
    # start: 10 - 5; end: 40 - 35, after the check (not 40 - 30)
    assert method_service._run_times(str(tmp_path)) == (10.0, 120.0)


def test_a_speed_measured_while_other_processes_took_the_cpu_does_not_set_the_estimate(tmp_path):
    """A DPO run beside a test suite trained at 17 tokens/s against 58 alone, and the estimate of every
    run after it read 1.5x long. Each training log says what share of the machine other processes took
    meanwhile; the speed is the median of the stretches they left it alone, and a run they shared the
    CPU with for most of its steps is not taken at all."""
    import json

    from pipelines import hardware
    from pipelines.events import HEARTBEAT, JOB, METRICS, STATUS
    from studio import method_service

    (tmp_path / JOB).write_text(json.dumps({"method": "dpo"}))
    (tmp_path / HEARTBEAT).write_text(json.dumps({"training_since": 10.0}))
    (tmp_path / STATUS).write_text(json.dumps({"started": 5.0, "finished": 40.0}))
    records = [{"step": 1, "loss": 2.0, "time": 15.0, "tokens_per_s": 20.0, "others_cores": 0.0},  # warm-up
               {"step": 2, "loss": 1.9, "time": 20.0, "tokens_per_s": 58.0, "others_cores": 0.34},  # (the page)
               {"step": 3, "loss": 1.8, "time": 25.0, "tokens_per_s": 17.0, "others_cores": 1.22},
               {"step": 4, "loss": 1.7, "time": 30.0, "tokens_per_s": 60.0, "others_cores": hardware.SHARED_CORES},
               {"step": 5, "loss": 1.6, "time": 35.0, "tokens_per_s": 56.0}]  # (an older run: not measured)
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records))
    assert method_service._run_times(str(tmp_path)) == (10.0, 58.0)
    # most of its steps beside them: its start and end were slowed too, and nothing of it is taken
    for r in records[2:]:
        r["others_cores"] = 1.0
    (tmp_path / METRICS).write_text("".join(json.dumps(r) + "\n" for r in records))
    assert method_service._run_times.__wrapped__(str(tmp_path)) is None


def test_the_share_of_the_cpu_other_processes_take_is_measured():
    """By hand: 200 ticks of the machine, 160 of them working, 100 of those this process's: 60 others'.
    Then a process that spins on one core while this one sleeps takes a share of the machine."""
    import subprocess
    import sys
    import time

    from pipelines import hardware

    assert hardware.others_share((1000, 400, 100), (1200, 560, 200)) == pytest.approx(0.3)
    assert hardware.others_share((1000, 400, 100), (1200, 500, 200)) == 0.0  # (this process's time, rounded)
    assert hardware.others_share(None, (1200, 500, 200)) is None
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        time.sleep(0.3)
        before = hardware.cpu_sample()
        time.sleep(1.5)
        after = hardware.cpu_sample()
    finally:
        spin.kill()
    assert hardware.others_cores(before, after) >= 0.8  # one core, most of it at least


def test_with_no_dataset_picked_the_memory_is_said_to_be_the_worst_case():
    """KTO with no KTO data read 10.5 GB beside DPO's 4.0 GB on its pairs, with nothing to say why."""
    line = summary_line(estimate(peak_bytes=int(5.5 * 2**30)), 2)
    assert line.startswith("Expected peak memory at most 5.5 GB (no dataset picked: every row counted at the max "
                           "length; a dataset gives its own figure and the time) — fits in your 8 GB of RAM. ")
    assert "(no dataset picked: a 512-token prompt and full-length replies each; " in summary_line(
        estimate(method="grpo"), 1)  # an RL form has no max length
    assert summary_line(estimate(rows=40, seconds_per_epoch=5, steps_per_epoch=5), 2).startswith(
        "Expected peak memory 1.0 GB — fits")


def test_a_method_with_no_data_of_its_kind_says_where_to_get_some(studio, tiny_model_dir):
    """KTO before any thumbs were imported: the dataset box was blank and the line said only 'no dataset
    picked', as if one had been forgotten; that there was none to pick came after Start."""
    from components.form_memory import defaults
    from components.train_tab import estimate_text

    line = estimate_text(studio, str(tiny_model_dir), None, "kto", defaults("kto"))
    assert line.startswith("**No data for KTO yet:** it trains on replies marked good or bad (a true/false "
                           "`label` column); import some on the Data tab.\n\nExpected peak memory at most ")
    # DPO has bundled pairs: with none picked, only the worst case
    assert estimate_text(studio, str(tiny_model_dir), None, "dpo", defaults("dpo")).startswith(
        "Expected peak memory at most ")


def test_a_preference_runs_estimate_is_calibrated_on_the_real_tokens_its_trainer_counts(studio, tiny_model_dir,
                                                                                        monkeypatch):
    """A DPO run pads each batch's chosen and rejected answers to the longest of them, and its curves
    count the tokens without that padding. Preference runs were never calibrated (only padding-free
    methods were): a DPO estimate stayed 1.37x short from Start on an AMX CPU after any number of DPO
    runs here. Now the estimate counts the real tokens the trainer counts, and a finished run's speed
    sets its times."""
    import json

    from pipelines import data
    from studio import method_service

    from pipelines import hardware

    monkeypatch.setattr(hardware, "SHARED_CORES", float("inf"))  # the suite's other worker may share the CPU: any speed counts
    model = str(tiny_model_dir)
    pairs = data.load_rows(studio.resolve_dataset("quillpad_preferences")["path"])
    tokenizer = studio.tokenizer(model)

    def tokens(texts):
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    full = tokens([tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=False)
                   for row in pairs for side in ("chosen", "rejected")])
    prompts = tokens([tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
                      for row in pairs])
    # a length that cuts some answers and no prompt (TRL drops a pair whose prompt alone fills it)
    cut = max(max(prompts) + 1, sorted(full)[len(full) // 2])
    assert cut < max(full)
    # every pair trains (the estimate takes the lengths of the first rows, not of the split's own)
    params = {"num_train_epochs": 1, "per_device_train_batch_size": 4, "max_length": cut, "eval_fraction": 0}
    raw = method_service.estimate(studio, model, "dpo", params, "quillpad_preferences")
    # the trainer's count, by hand: each of a pair's two sequences (prompt + answer) cut at max_length
    assert raw.real_tokens_per_epoch == sum(min(cut, n) for n in full) < raw.tokens_per_epoch  # padding: more
    run_id = studio.start_run(model=model, dataset="quillpad_preferences", method="dpo", params=params)
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    # what TRL counted over the epoch, from its own log at the last checkpoint
    last = max(studio.run_dir(run_id).rglob("checkpoint-*/trainer_state.json"), key=lambda f: int(
        f.parent.name.split("-")[1]))
    counted = max(log.get("num_tokens", 0) for log in json.loads(last.read_text())["log_history"])
    assert counted == raw.real_tokens_per_epoch
    # the speeds on the curves say how many cores other processes kept busy meanwhile (over half a second
    # at least: a tiny model's steps are shorter, and their logs are read together)
    from pipelines.events import read_metrics

    shared = [m["others_cores"] for m in read_metrics(studio.run_dir(run_id)) if "others_cores" in m]
    assert shared and all(0.0 <= cores <= os.cpu_count() for cores in shared)
    past = method_service.past_runs(studio, model, "dpo")  # a preference run's speed is taken now
    assert past.tokens_per_s > 0
    # at a speed within the nudge's bounds, the times are those of the real tokens at that speed (not of
    # the padded ones, which the trainer does not count)
    speed = raw.real_tokens_per_epoch / raw.seconds_per_epoch * 1.5
    est = method_service.calibrated(raw, method_service.PastRuns(past.overhead_s, speed))
    assert est.seconds_per_epoch == pytest.approx(raw.real_tokens_per_epoch / speed)
    assert est.seconds_per_epoch != pytest.approx(raw.tokens_per_epoch / speed)


def test_a_run_trains_on_the_cores_other_processes_leave(monkeypatch):
    """A DPO run beside one process spinning on a core took 286 s against 17 s alone: torch's threads
    wait for each other by spinning, and one on a core the other process held kept the rest waiting
    (bench/run_time_estimate.py --beside-first 1: 38 s now). The run uses one thread fewer per core
    others take, and all of them again once they stop."""
    import subprocess
    import sys
    import time

    import torch

    from pipelines import hardware
    from pipelines.callbacks import ShareTheCpu

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        share = ShareTheCpu(cores=2)
        spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
        try:
            time.sleep(0.3)
            share.on_train_begin(None, None, None)  # looks a quarter second: one core of two taken
        finally:
            spin.kill()
        assert (share.threads, torch.get_num_threads()) == (1, 1)
        share.on_step_end(None, None, None)  # (within a second of the last look: no new look)
        assert share.threads == 1
        # a second during which nobody else worked (by hand: 200 ticks, 100 working, all of them this process's)
        samples = iter([(1200, 500, 200)])
        monkeypatch.setattr(hardware, "cpu_sample", lambda: next(samples))
        share._cpu, share._since = (1000, 400, 100), time.time() - share.WINDOW_S
        share.on_step_end(None, None, None)
        assert (share.threads, torch.get_num_threads()) == (2, 2)
        # the end of training gives back every thread, whatever the last look saw
        torch.set_num_threads(1)
        share.threads = 1
        share.on_train_end(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_checks_before_and_after_training_share_the_cpu_too(tmp_path):
    """Beside one spinning process, DPO's held-out check before its first step took 28 s against 2 s alone
    (it ran before ShareTheCpu's look at the start of training). The check before training runs on the
    cores others leave and keeps them for the training that follows; a check after training gives them back."""
    import subprocess
    import sys
    from types import SimpleNamespace

    import torch

    from pipelines.callbacks import ShareTheCpu, evaluate_sharing, measure_before
    from pipelines.events import RunEvents

    class Trainer:  # what the checks use of a transformers Trainer
        def __init__(self, callbacks):
            self.callback_handler = SimpleNamespace(callbacks=callbacks)
            self.args = SimpleNamespace(device=torch.device("cpu"))
            self.threads_seen = []

        def evaluate(self):
            self.threads_seen.append(torch.get_num_threads())
            return {"eval_loss": 1.0}

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 20: pass"])
    try:
        share = ShareTheCpu(cores=2)
        trainer = Trainer([share])
        __import__("time").sleep(0.3)
        measure_before(trainer, RunEvents(tmp_path))
        assert trainer.threads_seen == [1] and torch.get_num_threads() == 1  # kept for the training
        share.on_train_begin(None, None, None)  # (watching already: no second look)
        share.on_train_end(None, None, None)
        assert torch.get_num_threads() == 2
        assert evaluate_sharing(trainer) == {"eval_loss": 1.0}
        assert trainer.threads_seen == [1, 1] and torch.get_num_threads() == 2  # given back after the check
        # a trainer without the callback (a test's own) evaluates as it is
        assert evaluate_sharing(Trainer([])) == {"eval_loss": 1.0}
    finally:
        spin.kill()
        torch.set_num_threads(before)
