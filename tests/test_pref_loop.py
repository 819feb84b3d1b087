"""The loop on the tiny model through the studio's public functions: an SFT run, chat votes on it,
'Train on these preferences' (votes -> dataset -> DPO on the voted run), a blind battle of the
new run against its parent, a vote and the win rate; plus the refusals around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import arena, chat
from pipelines.data import DataError
from pipelines.events import JOB
from pipelines.methods import ConfigError
from studio import chat_service
from studio.core import RunError
from tests.conftest import FAQ
from tests.test_cli import studio_cmd, write_config

QUESTIONS = ["How long is the warranty?", "How do I reset it?", "What is the support email?"]


def replies(studio, specs, question, seed):
    settings = chat.GenerationSettings(temperature=0.8, max_new_tokens=8, seed=seed)
    decs = chat_service.decoders(studio, specs, [[{"role": "user", "content": question}]] * 2, settings)
    for texts in chat.stream(decs):
        pass
    return texts, settings


def vote(studio, specs, question, winner, seed=1, blind=False):
    (a, b), settings = replies(studio, specs, question, seed)
    prompt = [{"role": "user", "content": question}]
    return chat_service.record_vote(studio, voter="tester", model_a=specs[0], model_b=specs[1], winner=winner,
                                    blind=blind, prompt_a=prompt, prompt_b=prompt, reply_a=a or "(silence)",
                                    reply_b=b or "(silence)", settings=vars(settings))  # the random model's


def test_votes_to_dpo_on_the_voted_run_to_a_blind_battle_with_its_parent(studio, tiny_model_dir, tiny_params):
    base = f"base:{tiny_model_dir}"
    parent = studio.start_run(model=str(tiny_model_dir), dataset=str(FAQ), method="lora",
                              params={**tiny_params, "num_train_epochs": 0.2})
    assert studio.wait(parent, poll_s=0.5)["status"] == "completed"

    for i, question in enumerate(QUESTIONS):  # the tuned run wins twice, the base once, one tie
        vote(studio, [f"run:{parent}", base], question, "a" if i < 2 else "b", seed=i)
    vote(studio, [f"run:{parent}", base], "Hello?", "tie")

    start = chat_service.preference_start(studio, "my votes")
    dataset = start["dataset"]
    assert start["model"] == f"run:{parent}" and start["votes"] == 3
    # a vote between two identical replies teaches nothing: the import drops it and says where
    differing = sum(v["reply_a"].strip() != v["reply_b"].strip() for v in studio.store.list_votes()
                    if v["winner"] in ("a", "b"))
    assert (dataset["kind"], dataset["rows"]) == ("preference", differing)
    assert dataset["meta"]["untaught_pairs"] == 3 - differing
    assert differing >= 1
    assert dataset["meta"]["origin"]["votes"] == 3 and f"run:{parent}" in dataset["meta"]["origin"]["models"]

    child = studio.start_run(model=start["model"], dataset=dataset["id"], method="dpo",
                             params={"learning_rate": 5e-3, "num_train_epochs": 1, "per_device_train_batch_size": 2,
                                     "max_length": 64, "eval_fraction": 0.0})
    row = studio.wait(child, poll_s=0.5)
    assert row["status"] == "completed", row["error"]
    job = json.loads((studio.run_dir(child) / JOB).read_text())
    assert job["parent_id"] == parent and job["start"] == f"run:{parent}"
    assert job["init_adapter"] == str(studio.adapter_dir(parent))  # the voted run's adapter keeps training
    assert row["model"] == str(tiny_model_dir) and row["parent_id"] == parent
    log = (studio.run_dir(child) / "train.log").read_text()
    assert f"adapter of {parent}" in log
    metrics = [json.loads(line) for line in (studio.run_dir(child) / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in m and "rewards/accuracies" in m for m in metrics)

    new, previous = chat_service.previous_model(studio, child)
    assert (new, previous) == (f"run:{child}", f"run:{parent}")
    assert chat_service.prompt_suggestions(studio, "votes")[:3] == QUESTIONS
    # a blind re-comparison of the child (no held-out pairs: eval_fraction 0) falls back to the votes' prompts:
    # less those it trained on, which would favour it (offered, a verdict leant to "better" on them)
    taught = {v["prompt_a"][-1]["content"] for v in studio.store.list_votes()
              if v["winner"] in ("a", "b") and v["reply_a"].strip() != v["reply_b"].strip()}
    untrained = [q for q in [*QUESTIONS, "Hello?"] if q not in taught]
    assert chat_service.prompt_suggestions(studio, "votes", child) == untrained
    from studio.app import build_app

    (on_next,) = [f for f in build_app(studio).fns.values() if f.name == "on_next"]
    suggested, prompt, _said = on_next.fn(None, "votes", new, previous, None)  # the prompts from the votes
    assert suggested["choices"] == untrained and prompt == untrained[0]
    offered = chat_service.prompt_suggestions(studio, "votes", parent)  # the parent trained on none of them
    assert offered == [*QUESTIONS, "Hello?"]
    vote(studio, [previous, new], "Is it waterproof?", "b", blind=True)
    (rate,) = [r for r in arena.win_rates(studio.store.list_votes()) if {r["first"], r["second"]} == {new, previous}]
    new_rate = rate["win_rate"] if rate["first"] == new else 1 - rate["win_rate"]
    assert rate["votes"] == 1 and new_rate == 1.0 and rate["low"] <= rate["win_rate"] <= rate["high"]


def test_start_points_that_cannot_work_are_refused_before_anything_is_written(studio, tiny_model_dir, tiny_params):
    with pytest.raises(RunError, match=r"^no run with id 'r-nope' \(see 'studio runs'\)$"):
        studio.start_run(model="run:r-nope", dataset="quillpad_preferences", method="dpo")
    with pytest.raises(DataError, match=r"^dataset 'quillpad_faq' holds sft data; DPO trains on preference data, "
                                        r"so pick an example \(SFT\) method such as LoRA or another dataset$"):
        studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="dpo")
    with pytest.raises(DataError, match=r"^dataset 'quillpad_preferences' holds preference data; LoRA trains on "
                                        r"sft or text data, so pick a preference method such as DPO or another "
                                        r"dataset$"):
        studio.start_run(model=str(tiny_model_dir), dataset="quillpad_preferences", method="lora")
    with pytest.raises(ConfigError, match=r"^parameter 'per_device_train_batch_size': KTO compares each answer "
                                          r"with the others in its batch, so it needs a batch size of 2 or more$"):
        studio.start_run(model=str(tiny_model_dir), dataset="quillpad_preferences", method="kto",
                         params={"per_device_train_batch_size": 1})
    assert studio.store.list_runs() == [] and not any(studio.runs_dir.iterdir())


def test_cli_trains_dpo_and_refuses_the_wrong_kind_of_data(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    params = {"learning_rate": 5e-3, "num_train_epochs": 1, "max_length": 64, "eval_fraction": 0.25}
    config = write_config(tmp_path / "dpo.yaml", model=str(tiny_model_dir), dataset="quillpad_preferences",
                          method="dpo", params=params)
    done = studio_cmd(home, "train", str(config), "--wait")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.split()[0]
    assert (home / "runs" / run_id / "adapter" / "adapter_model.safetensors").exists()
    status = json.loads((home / "runs" / run_id / "status.json").read_text())
    assert "eval_rewards/accuracies_after" in status["summary"]
    assert status["summary"]["eval_rows"] > 0  # the run panel says on how many pairs the accuracy stands

    wrong = write_config(tmp_path / "wrong.yaml", model=str(tiny_model_dir), dataset=str(FAQ), method="kto")
    refused = studio_cmd(home, "train", str(wrong))
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: dataset 'quillpad_faq' holds sft data; KTO trains on kto data, so "
                                      "pick an example (SFT) method such as LoRA or another dataset")
    assert [p.name for p in (home / "runs").glob("r*")] == [run_id]


def test_held_out_prompts_offered_for_a_kto_run_are_ones_it_never_trained_on(studio, tmp_path, tiny_model_dir):
    """Chat's held-out prompts for a run are the ones its trainer held out: for a KTO export (each pair as
    two rows of one prompt) a split by prompt, kept in the run's folder, not a row split of the file,
    whose prompts were mostly trained on through their sibling reply. A run from before splits were kept
    split by row, and is offered that split."""
    from pipelines import data
    from pipelines.events import HELDOUT_ROWS, JOB, RunEvents
    from pipelines.train_pref import build_trainer

    path = tmp_path / "kto.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"Question {i}?"}],
             "completion": [{"role": "assistant", "content": f"{mark} answer {i}"}], "label": mark == "good"}
            for i in range(10) for mark in ("good", "bad")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = studio.import_dataset(path)
    run_dir = studio.run_dir("r-kto")
    run_dir.mkdir(parents=True)
    params = {"eval_fraction": 0.2, "seed": 7, "per_device_train_batch_size": 4, "max_length": 64}
    job = {"method": "kto", "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": dataset, "params": params}
    (run_dir / JOB).write_text(json.dumps(job))
    trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))

    def asked(split):
        return {p[-1]["content"] for p in split["prompt"]}

    held, trained = asked(trainer.eval_dataset), asked(trainer.train_dataset)
    assert len(held) == 2 and len(trainer.eval_dataset) == 4 and not held & trained
    assert sorted(chat_service.prompt_suggestions(studio, "heldout", "r-kto")) == sorted(held)
    # built again (a resumed run): the same split, read from the run's folder
    assert asked(build_trainer(job, run_dir, RunEvents(run_dir))[0].eval_dataset) == held

    (run_dir / HELDOUT_ROWS).unlink()  # a run from before splits were kept: it held out by row
    stored = data.load_rows(Path(dataset["path"]))
    by_row = data.split_plan(stored, 0.2, 7, "kto", by_prompt=False)[1]
    assert sorted(chat_service.prompt_suggestions(studio, "heldout", "r-kto")) == sorted(
        {stored[i]["prompt"][-1]["content"] for i in by_row})


def test_a_run_from_another_runs_result_holds_out_only_prompts_no_run_behind_it_trained_on(
        studio, tmp_path, tiny_model_dir, tiny_params):
    """A second *Train on these preferences* makes a new dataset of all the votes, the first run's among
    them, and starts from the first run: split like any file, half its held-out pairs were pairs the model
    it starts from had trained on, and its held-out accuracy read high for that. Now a run holds out only
    prompts that no run behind it (parent, grandparent: of any data kind) trained on; the ones a run
    behind it held out count as new. Its training keeps every row."""
    from pipelines import lineage, train_pref, train_sft
    from pipelines.data import load_rows, split_plan
    from pipelines.methods import METHODS
    from studio import method_service
    from pipelines.events import HELDOUT_ROWS, STATUS, RunEvents, write_json

    def turn(text, role="user"):
        return [{"role": role, "content": text}]

    def pairs(questions):
        return [{"prompt": turn(f"Question {i}?"), "chosen": turn(f"Yes {i}.", "assistant"),
                 "rejected": turn(f"No {i}.", "assistant")} for i in questions]

    def examples(questions):
        return [{"messages": turn(f"Question {i}?") + turn(f"Answer {i}.", "assistant")} for i in questions]

    def imported(name, rows):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return studio.import_dataset(path, name=name)

    def run(run_id, trainer_of, method, dataset, parent=None, fraction=0.5):
        job = {"method": method, "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
               "dataset": dataset, "parent_id": parent,
               "params": {**tiny_params, "eval_fraction": fraction, "seed": 7}}
        if method == "dpo":
            job["params"] = {k: v for k, v in job["params"].items() if k != "lora_alpha"}
        run_dir = studio.run_dir(run_id)
        run_dir.mkdir(parents=True)
        (run_dir / JOB).write_text(json.dumps(job))
        # the Train tab's estimate counts the rows the run will train on and hold out, from where it starts
        counted = method_service._split_rows(studio, dataset["id"], fraction, METHODS[method].data_kind, 7,
                                             f"run:{parent}" if parent else "default")
        trainer = trainer_of(job, run_dir, RunEvents(run_dir))[0]
        studio.store.add_run(id=run_id, method=method, model="default", dataset_id=dataset["id"],
                             status="completed", params=job["params"], parent_id=parent)
        write_json(run_dir / STATUS, {"status": "completed", "finished": 1.0})
        assert counted == (len(trainer.train_dataset), len(trainer.eval_dataset), False)

        def asked(split):
            return {p[-1]["content"] for p in split["prompt"]}

        return asked(trainer.train_dataset), asked(trainer.eval_dataset), len(trainer.train_dataset) + len(
            trainer.eval_dataset)

    faq = imported("faq", examples(range(6)))
    sft_trained, sft_held, _ = run("r-sft", train_sft.build_trainer, "lora", faq)
    assert sft_trained and sft_held and len(sft_trained | sft_held) == 6
    votes = imported("votes", pairs(range(2, 14)))  # (chat votes: on some of the FAQ's questions, and others)
    trained, held, rows = run("r-dpo", train_pref.build_trainer, "dpo", votes, parent="r-sft")
    assert rows == 12 and held and not held & sft_trained  # the SFT run's held-out question may be held out
    assert sft_trained & {f"Question {i}?" for i in range(2, 14)} <= trained  # what SFT trained on trains here too
    # before: a split of the 12 pairs as if no run were behind this one
    unaware = {f"Question {i}?" for i in split_plan(load_rows(Path(votes["path"])), 0.5, 7, "preference")[1]}
    assert unaware & sft_trained  # (which this seed shows: the test would pass on the old split otherwise)

    # a blind re-comparison of the DPO run is offered its held-out prompts, then those of the run it started
    # from that it did not train on either (its one held-out pair was all it was offered after a few votes)
    offered = chat_service.prompt_suggestions(studio, "heldout", "r-dpo")
    assert set(offered[:len(held)]) == held and set(offered[len(held):]) == sft_held - trained - held
    assert sft_held - trained - held and sft_held & trained  # (both kinds: this seed shows the filter works)

    # once each prompt offered has a vote between the two, Next prompt says so instead of asking one again
    from studio.app import build_app

    (on_next,) = [f for f in build_app(studio).fns.values() if f.name == "on_next"]
    for question in sft_held:
        asked = [{"role": "user", "content": question}]
        chat_service.record_vote(studio, voter="me", model_a="run:r-sft", model_b="base:default", winner="a",
                                 blind=True, prompt_a=asked, prompt_b=asked, reply_a="Yes.", reply_b="No.",
                                 settings={})
    assert on_next.fn(None, "heldout", "run:r-sft", "base:default", None)[2] == (
        f"Each of the {len(sft_held)} held-out prompts has a vote between these two models. Type your own question "
        "to go on (the prompts it trained on would favour the tuned model).")

    # the first run's dataset deleted: what that run trained on was kept in its folder first
    from studio import dataset_service

    before = lineage.trained_by(studio.runs_dir, "r-sft")
    dataset_service.delete(studio, faq["id"])
    assert (studio.run_dir("r-sft") / lineage.TRAINED).exists()
    assert lineage.trained_by(studio.runs_dir, "r-sft") == before and len(before) == len(sft_trained)

    # a third run, SFT again, from the DPO run: neither run behind it trained on what it holds out
    more, more_held, rows = run("r-sft2", train_sft.build_trainer, "lora", imported("faq2", examples(range(16))),
                                parent="r-dpo")
    assert rows == 16 and more_held and not more_held & (sft_trained | trained)
    assert json.loads((studio.run_dir("r-sft2") / HELDOUT_ROWS).read_text())["rows"] == 16  # kept: a resume reads it
    # a run that keeps training the DPO run on its own file holds out what that run held out, counted so
    counted = method_service._split_rows(studio, votes["id"], 0.5, "preference", 7, "run:r-dpo")
    assert counted == (12 - len(held), len(held), False)


def test_compare_with_the_previous_model_offers_no_vote_prompt_the_run_trained_on(studio, tmp_path):
    """A second round on the votes (run 2 from run 1, all votes, nothing held out): *Compare with the previous
    model* had no held-out prompt and offered every voted prompt, each one run 2 trained on, whose preferred
    reply a small run learns nearly word for word: the blind verdict leant to "better" for that alone."""
    from pipelines.events import ADAPTER, STATUS, write_json
    from studio.app import build_app

    def asked(question):
        return [{"role": "user", "content": question}]

    questions = [f"Question {i}?" for i in range(4)]
    for n, question in enumerate(questions):
        chat_service.record_vote(studio, voter="me", model_a="run:r1", model_b="base:default", winner="a",
                                 blind=True, prompt_a=asked(question), prompt_b=asked(question),
                                 reply_a=f"Yes {n}.", reply_b=f"No {n}.", settings={"system_prompt": ""})
    trained = arena.preference_rows(studio.store.list_votes()[:3])  # run 2's votes: all but the newest
    path = tmp_path / "votes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in trained))
    dataset = studio.import_dataset(path, name="votes")
    for run_id, parent in (("r1", None), ("r2", "r1")):
        studio.store.add_run(id=run_id, method="dpo", model="default", dataset_id=dataset["id"],
                             status="completed", params={"eval_fraction": 0.0}, parent_id=parent)
        (studio.run_dir(run_id) / ADAPTER).mkdir(parents=True)
        write_json(studio.run_dir(run_id) / STATUS, {"status": "completed", "finished": 1.0})
        write_json(studio.run_dir(run_id) / JOB, {"method": "dpo", "dataset": dataset, "parent_id": parent,
                                                  "params": {"eval_fraction": 0.0, "seed": 7}})
    (compare,) = [f for f in build_app(studio).fns.values()
                  if f.name == "on_compare" and f.fn.__module__ == "components.loop"]
    shown = compare.fn("r2")
    assert shown[4] == "votes" and shown[5]["choices"] == ["Question 3?"] and shown[6] == "Question 3?"
    assert shown[12].endswith("Prompts from the chat votes it did not train on: press *Send*, vote, then *Next "
                              "prompt*.")
    # every voted prompt trained on: none offered, and it says why
    studio.store.add_vote(voter="me", model_a="run:r1", model_b="base:default", winner="tie", blind=True,
                          prompt_a=asked("Question 0?"), prompt_b=asked("Question 0?"), reply_a="A", reply_b="B",
                          settings={}, turn=None)
    with_all = [*trained, *arena.preference_rows(studio.store.list_votes()[3:4])]
    path.write_text("".join(json.dumps(r) + "\n" for r in with_all))
    studio.length_cache.clear()
    job = {"method": "dpo", "dataset": studio.import_dataset(path, name="all votes"), "parent_id": "r1",
           "params": {"eval_fraction": 0.0, "seed": 7}}
    write_json(studio.run_dir("r2") / JOB, job)
    shown = compare.fn("r2")
    assert shown[5]["choices"] == [] and shown[6] == ""
    assert shown[12].endswith("No prompt to offer: it trained on every voted prompt, and those would favour it. "
                              "Type questions of your own, then *Send* and vote.")


def test_a_grpo_run_is_offered_no_held_out_prompt_it_trained_on(studio):
    """GRPO holds nothing out, yet *Compare with the previous model* worked out a 10% split it never made and
    offered "Prompts it never trained on, from its dataset's held-out rows": sums the run had trained on (one
    was in its own table of training replies). It offers none, and says why."""
    from pipelines.events import ADAPTER, STATUS, write_json
    from studio.app import build_app

    dataset = studio.resolve_dataset("arithmetic_prompts")
    studio.store.add_run(id="r-grpo", method="grpo", model="default", dataset_id=dataset["id"], status="completed",
                         params={})
    (studio.run_dir("r-grpo") / ADAPTER).mkdir(parents=True)
    write_json(studio.run_dir("r-grpo") / STATUS, {"status": "completed", "finished": 1.0})
    write_json(studio.run_dir("r-grpo") / JOB, {"method": "grpo", "dataset": dataset, "params": {"seed": 42}})
    assert chat_service.heldout_rows(studio, "r-grpo") == []
    assert chat_service.prompt_suggestions(studio, "heldout", "r-grpo") == []
    (compare,) = [f for f in build_app(studio).fns.values()
                  if f.name == "on_compare" and f.fn.__module__ == "components.loop"]
    shown = compare.fn("r-grpo")
    assert shown[5]["choices"] == [] and "never trained on" not in shown[12]
    assert shown[12].endswith("No prompt to offer: it has no held-out prompt (it trained on every prompt it read) "
                              "and there are no votes yet. Type questions of your own that are not in its data, then "
                              "*Send* and vote.")
    assert not chat_service.holds_out(studio, "r-grpo") and chat_service.holds_out(studio, "r-gone")
