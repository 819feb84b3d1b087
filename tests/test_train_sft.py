"""SFT runs on the tiny model: a run in its own process leaves the run directory the issue
describes (every method's learning and reloading is in test_methods_train.py)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from pipelines import data, evals, importer
from pipelines.events import RunEvents, read_metrics
from pipelines.train_sft import build_trainer
from tests.conftest import FAQ

METRIC_KEYS = {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s"}


def tiny_job(tmp_path, tiny_model_dir, params, source=FAQ):
    parquet = tmp_path / "ds" / importer.DATA
    importer.import_file(source, parquet.parent)
    return {"method": "lora", "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
            "dataset": {"path": str(parquet)}, "params": params}


def test_run_in_its_own_process_writes_the_run_directory(studio, tiny_model_dir, tiny_params):
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params=tiny_params)
    row = studio.wait(run_id, poll_s=0.5)
    run_dir = studio.run_dir(run_id)
    assert row["status"] == "completed", (run_dir / "train.log").read_text()[-2000:]
    assert studio.store.get_run(run_id)["status"] == "completed"

    job = json.loads((run_dir / "job.json").read_text())
    assert job["method"] == "lora" and job["params"]["r"] == tiny_params["r"]
    metrics = read_metrics(run_dir)
    assert METRIC_KEYS <= set().union(*(m.keys() for m in metrics if "loss" in m))
    # the held-out rows are measured before the first step, about ten times, and not twice at the end
    checks = [m["step"] for m in metrics if "eval_loss" in m]
    every = evals.every(row["max_steps"], 0, evals.PER_RUN["sft"])
    assert checks[0] == 0 and checks[-1] == row["max_steps"] and len(set(checks)) == len(checks)
    assert len(checks) == evals.passes(row["max_steps"], every) <= 12
    assert row["summary"]["eval_loss_after"] == [m["eval_loss"] for m in metrics if "eval_loss" in m][-1]
    log = (run_dir / "train.log").read_text()
    assert "run completed" in log
    # written for people: no progress-bar redraws, no libraries' deprecation notices
    assert "it/s]" not in log and "examples/s]" not in log and "FutureWarning" not in log
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (run_dir / "adapter").iterdir()}
    assert row["step"] == row["max_steps"] > 0


def test_a_worker_that_crashes_is_reported_failed(studio, tiny_model_dir, tiny_params, broken_model_dir):
    broken = broken_model_dir
    run_id = studio.start_run(model=str(broken), dataset="quillpad_faq", method="lora", params=tiny_params)
    row = studio.wait(run_id, poll_s=0.5)
    assert row["status"] == "failed"
    assert row["error"] and "\n" not in row["error"]
    log = (studio.run_dir(run_id) / "train.log").read_text()
    assert f"failed: {row['error']}" in log and "Traceback" not in log  # one sentence in the log...
    assert "Traceback" in (studio.run_dir(run_id) / "error.txt").read_text()  # ...the details beside it
    assert not (studio.run_dir(run_id) / "adapter").exists()


def test_a_worker_that_exits_before_reporting_stays_failed_for_every_reader(studio):
    """A worker that dies before it writes any status is known only from its exit code, which one
    reader reaps. Two readers at once (a page's tick and the waiting process's watch thread) both
    see the failure, and so does a later Studio that never had the process."""
    import threading
    import time

    from studio.core import Studio

    job_dir = studio.run_dir("r-no-job")
    job_dir.mkdir(parents=True)
    studio.spawn("r-no-job", job_dir)  # no job.json: the worker exits with code 2 before reporting
    studio._procs["r-no-job"].wait(timeout=60)
    seen = []
    readers = [threading.Thread(target=lambda: seen.append(studio.job_state("r-no-job"))) for _ in range(4)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    expected = "the training process exited with code 2 before starting: "
    late = Studio(studio.home).job_state("r-no-job")
    for state in [*seen, studio.job_state("r-no-job"), late]:
        assert state["status"] == "failed" and state["error"].startswith(expected), state
    assert "no readable job.json" in late["error"]
    assert "r-no-job" not in studio._procs


def test_a_resumed_run_whose_worker_is_killed_before_reporting_fails(studio, tiny_model_dir, tiny_params,
                                                                    broken_model_dir):
    """A resumed run has its earlier attempt's status beside it: a worker killed before it reports
    (out of memory while starting) was read as that status, and the run stayed 'queued' for ever."""
    broken = broken_model_dir
    run_id = studio.start_run(model=str(broken), dataset="quillpad_faq", method="lora", params=tiny_params)
    assert studio.wait(run_id, poll_s=0.5)["status"] == "failed"
    studio.resume(run_id)
    studio._procs[run_id].kill()  # before the new worker can write anything
    studio._procs[run_id].wait(timeout=60)
    row = studio.get_run(run_id)
    assert row["status"] == "failed", row
    assert row["error"] == ("the training process was killed by SIGKILL (the system does this when memory runs out; "
                            "so does kill -9) before starting; resume it to start again from step 0 (it had saved "
                            "no checkpoint yet)")
    assert studio.store.get_run(run_id)["status"] == "failed"
    assert not studio.busy()


def test_recover_leaves_a_just_resumed_run_and_marks_one_whose_worker_never_reported(studio):
    """A listing (`studio runs`, a server's start) read a just-resumed run's earlier "running" status, found its pid
    dead and marked the run interrupted while its new worker started; a resumed run whose worker never reported,
    its starter gone, stayed queued for ever."""
    import time

    from pipelines.events import read_json, write_json
    from studio.core import NEVER_STARTED_S

    for run_id, queued_ago in (("r-just-resumed", 1), ("r-never-reported", NEVER_STARTED_S + 60)):
        studio.store.add_run(id=run_id, method="lora", model="default", dataset_id=None, status="queued", params={})
        run_dir = studio.run_dir(run_id)
        run_dir.mkdir()
        now = time.time()
        write_json(run_dir / "status.json", {"status": "running", "pid": 2**22 + 17, "time": now - queued_ago - 100})
        write_json(run_dir / "job.json", {"queued_at": now - queued_ago})
    assert studio.recover() == ["r-never-reported"]
    assert studio.get_run("r-just-resumed")["status"] == "queued"
    gone = studio.get_run("r-never-reported")
    assert gone["status"] == "interrupted" and gone["error"] == (
        "its process ended before it reported anything (killed while starting, or the machine restarted); resume it")
    assert read_json(studio.run_dir("r-never-reported") / "status.json")["status"] == "interrupted"


def test_a_run_whose_worker_ended_before_reporting_reads_failed_at_once(studio, tiny_model_dir, tiny_params):
    """`studio train` without --wait exits; its worker killed while starting showed 'queued' to every later look
    (another process, which cannot learn the exit code) until a listing, five minutes on, marked it. The pid its
    starter wrote down tells at once."""
    from studio.core import Studio

    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora", params=tiny_params)
    worker = studio._procs.pop(run_id)  # (the starter's own record: gone with the command that started it)
    worker.kill()  # before it can write anything
    worker.wait(timeout=60)
    later = Studio(studio.home)  # a server's page, a moment after (`studio runs` recovers first: interrupted)
    looked = later.get_run(run_id)
    assert looked["status"] == "failed" and looked["error"].startswith(
        "the training process ended before it reported anything (last log: ")
    assert later.recover() == []  # (failed already: the look wrote it down)
    assert later.store.get_run(run_id)["status"] == "failed"
    # a resume is a new attempt: its worker's pid, not the dead one, decides (it was read as gone at once)
    later.resume(run_id)
    assert later.recover() == []
    assert later.wait(run_id, poll_s=0.5)["status"] == "completed"


def test_a_recorded_worker_is_told_by_its_pid_and_start_so_a_pid_used_again_is_not_it(tmp_path):
    """Once a worker's pid is given to another process, the run must not read as started again (queued, a
    look later)."""
    import os

    from pipelines.events import process_started, worker_gone, write_json

    write_json(tmp_path / "job.json", {"queued_at": 5.0})
    mine = process_started(os.getpid())
    assert mine is not None
    for started, gone in ((mine, False), (mine + 1, True), (None, False)):  # (None: a start not known)
        write_json(tmp_path / "worker.json", {"pid": os.getpid(), "started": started, "queued_at": 5.0})
        assert worker_gone(tmp_path) is gone, started
    write_json(tmp_path / "worker.json", {"pid": os.getpid(), "started": mine, "queued_at": 4.0})  # an earlier attempt's
    assert not worker_gone(tmp_path)
    write_json(tmp_path / "worker.json", {"pid": 2**22 + 17, "started": 1, "queued_at": 5.0})  # no such process
    assert worker_gone(tmp_path)


def test_bad_parameters_are_refused_before_anything_is_written(studio, tiny_model_dir):
    from pipelines.methods import ConfigError

    with pytest.raises(ConfigError, match="^parameter 'lora_dropout': expected a value from 0.0 to 0.5, got 0.9$"):
        studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                         params={"lora_dropout": 0.9})
    assert studio.store.list_runs() == [] and list(studio.runs_dir.iterdir()) == []


def test_early_stopping_is_wired_to_held_out_loss(tmp_path, tiny_model_dir, tiny_params):
    from transformers import EarlyStoppingCallback

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    params = {**tiny_params, "early_stopping_patience": 2, "eval_steps": 3}
    trainer, _ = build_trainer(tiny_job(tmp_path, tiny_model_dir, params), run_dir, RunEvents(run_dir))
    stoppers = [c for c in trainer.callback_handler.callbacks if isinstance(c, EarlyStoppingCallback)]
    assert len(stoppers) == 1 and stoppers[0].early_stopping_patience == 2
    assert (trainer.args.metric_for_best_model, trainer.args.greater_is_better) == ("eval_loss", False)
    assert trainer.args.eval_steps == 3

    plain, _ = build_trainer(tiny_job(tmp_path / "b", tiny_model_dir, tiny_params), run_dir, RunEvents(run_dir))
    assert not any(isinstance(c, EarlyStoppingCallback) for c in plain.callback_handler.callbacks)


@pytest.mark.parametrize("source", ["faq", "text"])
def test_data_tab_rendering_matches_what_the_trainer_tokenizes(tmp_path, tiny_model_dir, tiny_params, source):
    """The Data tab's 'as training sees it' and token counts are TRL's own tokenization."""
    from pipelines import dataset_stats

    job = tiny_job(tmp_path, tiny_model_dir, {**tiny_params, "eval_fraction": 0.0, "max_length": 512})
    if source == "text":
        (tmp_path / "notes.txt").write_text("The Quillpad is an e-ink notebook.\nIt charges over USB-C.\n")
        importer.import_file(tmp_path / "notes.txt", tmp_path / "text")
        job["dataset"]["path"] = str(tmp_path / "text" / importer.DATA)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    rows = data.load_rows(job["dataset"]["path"])[:2]
    lengths = dataset_stats.token_lengths(rows, tokenizer)
    for i, row in enumerate(rows):
        seen = trainer.train_dataset[i]
        shown = dataset_stats.render_example(row, tokenizer, max_length=512)
        assert shown["tokens"] == len(seen["input_ids"]) == lengths[i]
        # TRL marks the context with label -100 (older versions: completion_mask 0)
        learned = [t for t, label in zip(seen["input_ids"], seen.get("labels") or seen["input_ids"]) if label != -100]
        assert shown["learned_tokens"] == len(learned)
        assert shown["learned"] == tokenizer.decode(learned)
        assert shown["context_tokens"] == len(seen["input_ids"]) - len(learned)
        assert (shown["context_tokens"] == 0) == (source == "text")  # plain text is learned whole


def test_early_stopping_ends_with_the_best_checks_weights(studio, tiny_model_dir, tmp_path):
    """Early stopping stopped `patience` checks after the best one and saved the weights of the last
    step: the result is now the best check's weights (as `load_best_model_at_end` does), and the run
    says which step it kept and its held-out loss."""
    from safetensors.torch import load_file

    from components.runs_panel import progress_html, status_markdown

    rng = random.Random(0)
    words = "apple river stone cloud lamp tiger paper violin garden honey mirror rocket".split()
    source = tmp_path / "random.jsonl"  # answers of random words: past a point, learning is memorising
    source.write_text("".join(json.dumps({"prompt": f"Say something about item {i}.",
                                          "completion": " ".join(rng.choices(words, k=12))}) + "\n"
                              for i in range(20)))
    dataset = studio.import_dataset(source)["id"]
    params = {"learning_rate": 3e-2, "num_train_epochs": 30, "per_device_train_batch_size": 4, "max_length": 64,
              "r": 8, "lora_alpha": 16, "eval_fraction": 0.2, "eval_steps": 2, "early_stopping_patience": 2}
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset, method="lora", params=params)
    row = studio.wait(run_id, poll_s=0.5)
    run_dir = studio.run_dir(run_id)
    assert row["status"] == "completed", (run_dir / "train.log").read_text()[-2000:]
    summary, metrics = row["summary"], read_metrics(run_dir)
    checks = {m["step"]: m["eval_loss"] for m in metrics if "eval_loss" in m and m["step"] > 0}
    kept = summary["kept_step"]
    assert checks[kept] == min(checks.values()) == summary["eval_loss_after"]
    assert summary["steps"] == kept + 2 * 2  # two checks without a better loss, then it stopped
    saved = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    best = load_file(run_dir / "checkpoints" / f"checkpoint-{kept}" / "adapter_model.safetensors")
    assert saved.keys() == best.keys() and all(torch.equal(saved[k], best[k]) for k in saved)
    assert f"early stopping: the result is the weights of step {kept}" in (run_dir / "train.log").read_text()
    shown = status_markdown(studio, row, metrics)
    assert (f"Early stopping: the result is the weights of step {kept}, where the held-out loss was lowest; "
            f"training went on to step {kept + 4} without beating it, then stopped.") in shown
    bar = progress_html(row, metrics)
    assert f"stopped early at step {kept + 4} of {row['max_steps']}" in bar and "width:100.0%" in bar
    assert "memorising" not in shown  # the overfitting warning's advice has been followed


def test_a_prefix_made_by_its_network_keeps_its_last_weights(tmp_path, tiny_model_dir, tiny_params):
    """Prefix tuning with its network on saves the prefix the network made: loading a check back into
    the running network failed ('size mismatch') at the end of an early-stopping run. Such a run keeps
    its last weights and says why; the plain prefix loads its best check back."""
    from pipelines.callbacks import keeps_last
    from pipelines.methods import METHODS

    params = {"num_train_epochs": 1, "max_length": 64, "early_stopping_patience": 2}
    for projection, kept in ((True, True), (False, False)):
        run_dir = tmp_path / f"run-{projection}"
        run_dir.mkdir()
        job = {**tiny_job(tmp_path / f"d-{projection}", tiny_model_dir, {**params, "prefix_projection": projection}),
               "method": "prefix"}
        trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
        assert bool(keeps_last(trainer, METHODS["prefix"])) is kept
    assert "network" in keeps_last(trainer, METHODS["ptuning"])  # the method's own reason


def test_an_sft_run_holds_out_whole_prompts_and_chat_offers_those(studio, tmp_path, tiny_model_dir, tiny_params):
    """Examples that give one question several answers: a row split held out answers to questions the run
    trained on (through their siblings), so its held-out loss measured recall and Chat's "held-out prompts"
    offered trained questions. The split keeps a prompt's rows on one side and stays in the run's folder;
    a run from before splits were kept resumes on its row split."""
    from pipelines.events import CHECKPOINTS, HELDOUT_ROWS, JOB
    from studio import chat_service

    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Answer {i}, take {take}."}]}
            for i in range(10) for take in range(3)]
    path = tmp_path / "takes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = studio.import_dataset(path)
    job = {"method": "lora", "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": dataset, "params": {**tiny_params, "eval_fraction": 0.2, "seed": 7}}
    run_dir = studio.run_dir("r-takes")
    run_dir.mkdir(parents=True)
    (run_dir / JOB).write_text(json.dumps(job))

    def asked(split):
        return [p[-1]["content"] for p in split["prompt"]]

    trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
    held, trained = asked(trainer.eval_dataset), asked(trainer.train_dataset)
    assert (len(held), len(set(held))) == (6, 2) and not set(held) & set(trained) and len(trained) == 24
    assert sorted(chat_service.prompt_suggestions(studio, "heldout", "r-takes")) == sorted(set(held))
    assert asked(build_trainer(job, run_dir, RunEvents(run_dir))[0].eval_dataset) == held  # resumed: the same

    (run_dir / HELDOUT_ROWS).unlink()  # a run from before splits were kept, with a checkpoint: by row
    (run_dir / CHECKPOINTS / "checkpoint-2").mkdir(parents=True)
    by_row = data.split_indices(30, 0.2, 7)[1]
    assert asked(build_trainer(job, run_dir, RunEvents(run_dir))[0].eval_dataset) == [
        rows[i]["messages"][0]["content"] for i in by_row]
    assert len({rows[i]["messages"][0]["content"] for i in by_row}) > 2  # which mixed trained questions in

    # a run continuing that one on the same data is measured on what it never trained on: its kept split,
    # or, for a parent from before splits were kept, its row split (not a split by prompt of its own)
    child_dir = studio.run_dir("r-takes-more")
    child_dir.mkdir()
    (child_dir / JOB).write_text(json.dumps({**job, "parent_id": "r-takes"}))
    (run_dir / HELDOUT_ROWS).unlink()
    assert asked(build_trainer(job, child_dir, RunEvents(child_dir))[0].eval_dataset) == [
        rows[i]["messages"][0]["content"] for i in by_row]
    (run_dir / HELDOUT_ROWS).write_text(json.dumps({"rows": 30, "heldout": [0, 1, 2]}))
    (child_dir / HELDOUT_ROWS).unlink()
    child = build_trainer({**job, "parent_id": "r-takes"}, child_dir, RunEvents(child_dir))[0]
    assert asked(child.eval_dataset) == ["Question 0?"] * 3
    # and its learning rate climbs over its first 10% of steps: a fresh Adam's first full-size step knocked
    # the trained adapter off what it knew (bench/continue_quality.py); a new run starts at full rate
    assert (child.args.warmup_steps, trainer.args.warmup_steps) == (0.1, 0)


def test_held_out_rows_too_long_to_keep_an_answer_leave_a_run_without_checks(studio, tmp_path, tiny_model_dir):
    """TRL leaves out a row whose prompt fills the max length: with every held-out row left out, the run trained,
    then failed before saving ("KeyError: 'eval_loss'"), and every resume failed again."""
    from pipelines.importer import ImportOptions

    long_prompt = " ".join(["Please read all of this carefully before you answer."] * 30)
    rows = [{"prompt": f"Short question {i}?", "completion": f"Short answer {i}."} for i in range(8)]
    rows += [{"prompt": f"{long_prompt} ({i})", "completion": "Fine."} for i in range(2)]
    source = tmp_path / "long.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = studio.import_dataset(source, name="long", options=ImportOptions(heldout_last=2))
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset["id"], method="lora",
                              params={"num_train_epochs": 1, "per_device_train_batch_size": 4, "max_length": 64,
                                      "r": 4})
    row = studio.wait(run_id)
    assert row["status"] == "completed", row["error"]
    log = (studio.run_dir(run_id) / "train.log").read_text()
    assert ("data: 0 training and 2 held-out rows left out, no answer token of theirs within the max length of 64 "
            "tokens; 8 training rows, 0 held out") in log
    assert "data: no held-out row is left, so the run trains without held-out checks" in log
    assert (studio.adapter_dir(run_id) / "adapter_model.safetensors").exists()
    assert "eval_loss_after" not in row["summary"]

    every = tmp_path / "every.jsonl"
    every.write_text("".join(json.dumps({"prompt": f"{long_prompt} ({i})", "completion": "Fine."}) + "\n"
                             for i in range(4)))
    dataset = studio.import_dataset(every, name="every", options=ImportOptions(heldout=0.0))
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset["id"], method="lora",
                              params={"num_train_epochs": 1, "max_length": 64, "r": 4, "eval_fraction": 0})
    row = studio.wait(run_id)
    assert row["status"] == "failed" and row["error"] == (
        "every training row was left out: none has an answer token within the max length of 64 tokens (the prompts "
        "fill it); raise the max length")
