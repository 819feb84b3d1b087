"""Reinforcement learning (GRPO) on a tiny model: the reward rises, the adapter reloads outside the
studio, the samples and curves are written, and impossible settings are refused before anything
is written. The reward functions themselves are checked in test_rewards.py."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from pipelines import events as ev
from pipelines.methods import METHODS, ConfigError
from studio.core import RunError
from tests.test_cli import studio_cmd


PROMPTS = [f"Question {i}?" for i in range(8)]
REPLY_TOKENS = 8


def sampled_replies(model, tokenizer, n: int = 8, seed: int = 1) -> list[list[int]]:
    torch.manual_seed(seed)
    out = []
    for prompt in PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            gen = model.generate(ids, do_sample=True, temperature=1.0, max_new_tokens=REPLY_TOKENS,
                                 num_return_sequences=n, pad_token_id=tokenizer.pad_token_id)
        out += [g[ids.shape[1]:].tolist() for g in gen]
    return out


def share_containing(replies: list[list[int]], token: int) -> float:
    return sum(token in r for r in replies) / len(replies)


@pytest.mark.parametrize("method, passes", [(k, 1) for k, m in METHODS.items() if m.rewards] + [("grpo", 2)])
def test_rl_raises_a_toy_reward_and_the_adapter_reloads(method, passes, studio, tmp_path, peaky_model_dir):
    """Each method raises a toy reward; GRPO with two passes over each batch of replies (the paper's μ) raises it
    from half the batches written, in as many steps, which its estimate foresaw."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(peaky_model_dir)
    base = AutoModelForCausalLM.from_pretrained(peaky_model_dir).eval()
    before_replies = sampled_replies(base, tokenizer)
    # the toy reward: "the reply contains this word", for the word the base model writes most often
    token, _count = Counter(t for r in before_replies for t in set(r)).most_common(1)[0]
    word = tokenizer.decode([token]).strip()
    before = share_containing(before_replies, token)
    assert 0.1 < before < 0.6, before  # some replies earn it, most do not: GRPO has something to learn

    prompts = tmp_path / "toy.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "answer": word}) + "\n" for p in PROMPTS))
    dataset = studio.import_dataset(prompts, name="toy")
    assert dataset["kind"] == "prompts"
    if method == "ppo":  # one reply per prompt: all 8 prompts each step, 6 steps
        params, steps = {"num_train_epochs": 6, "per_device_train_batch_size": 8}, 6
    else:  # 8 replies per prompt, 16 per step: 4 steps per epoch, 6 steps (the reward is near 1 by step 3)
        params, steps = {"num_train_epochs": 1.5, "per_device_train_batch_size": 16, "num_generations": 8}, 6
    if passes > 1:  # 3 batches of replies written, each learned from twice: 6 steps again
        params.update(num_train_epochs=0.75, num_iterations=passes)
    run_id = studio.start_run(
        model=str(peaky_model_dir), dataset=dataset["id"], method=method,
        params={"learning_rate": 1e-2, "max_completion_length": REPLY_TOKENS, "r": 8, "lora_alpha": 16,
                "save_steps": 1000, **params},
        # (as a pattern: the word is a piece of a word, and "contains the answer" matches whole words)
        rewards=[{"name": "regex", "weight": 1.0, "pattern": "(?s).*" + re.escape(word) + ".*"}])
    row = studio.wait(run_id)
    assert row["status"] == "completed", row.get("error")
    run_dir = studio.run_dir(run_id)

    # the adapter, loaded with plain PEFT outside the studio, writes the rewarded word far more often
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(peaky_model_dir),
                                      str(run_dir / "adapter")).eval()
    after = share_containing(sampled_replies(tuned, tokenizer), token)
    assert after >= before + 0.2, (before, after)

    # the curves: weighted reward, the function's own part, KL and reply length at every step
    metrics = [m for m in ev.read_metrics(run_dir) if "reward" in m]
    assert len(metrics) == steps // passes  # (rewards are logged as each batch of replies is written)
    if passes > 1:  # the steps the estimate planned (the Method tab's figure), 3 batches written, each learned twice
        from pipelines import estimates

        chosen = {k: v for k, v in studio.get_run(run_id)["params"].items() if k != "rewards"}
        planned = estimates.estimate(str(peaky_model_dir), method, chosen, lengths=[10] * len(PROMPTS))
        assert planned.steps_per_epoch * 0.75 == steps == row["summary"]["steps"]
        logged = [m for m in ev.read_metrics(run_dir) if "loss" in m]
        assert [m["step"] for m in logged] == list(range(1, steps + 1))
        # a step on a batch written before is no 0 tokens/s: its time counts in the next batch's figure
        assert [("tokens_per_s" in m) for m in logged] == [True, False] * 3
        assert all(m["tokens_per_s"] > 0 for m in logged if "tokens_per_s" in m)
    assert all({"rewards/regex/mean", "kl", "completions/mean_length", "loss"} <= set(m) for m in metrics)
    summary = json.loads((run_dir / ev.STATUS).read_text())["summary"]
    assert summary["reward_last"] > summary["reward_first"]
    # the panel gives the reward its scale (1.00 with two functions read as full marks) and its steps
    from components.runs_panel import status_markdown

    said = status_markdown(studio, studio.get_run(run_id), ev.read_metrics(run_dir))
    k = summary["reward_steps"]
    assert (f"{summary['reward_first']:.2f} over its first {k} logged step{'s' if k != 1 else ''}, "
            f"{summary['reward_last']:.2f} over its last {k} (out of 1.00: 1 function, each scoring a reply from 0 "
            "to 1; higher is better)") in said
    # the newest scored replies, for the Train tab's table
    samples = json.loads((run_dir / "samples.json").read_text())
    assert samples["step"] == steps and len(samples["samples"]) == 8
    first = samples["samples"][0]
    assert first["prompt"] in PROMPTS and first["rewards"]["regex"] in (0.0, 1.0)
    assert first["reward"] == first["rewards"]["regex"]
    assert "rewards: Matches a format ×1 (pattern=(?s).*" in (run_dir / "train.log").read_text()
    assert studio.get_run(run_id)["params"]["rewards"] == [f"Matches a format ×1 (pattern=(?s).*{re.escape(word)}.*)"]


def _prompts(studio, tmp_path, rows, name="p"):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return studio.import_dataset(path, name=name)["id"]


@pytest.mark.parametrize("params,rewards,message", [
    ({"per_device_train_batch_size": 6, "num_generations": 4}, [{"name": "contains"}],
     "parameter 'num_generations': 4 replies per prompt do not divide the 6 replies of a step (batch size 6 x "
     "gradient accumulation 1); pick a batch size that is a multiple of 4"),
    ({}, [], "reinforcement learning needs at least one reward function: list them under 'rewards' (available: "
             "contains, exact, number, regex, json, length, code, reward_model)"),
    ({}, [{"name": "rhyme"}], "unknown reward function 'rhyme'; available: contains, exact, number, regex, json, "
                              "length, code, reward_model"),
    ({}, [{"name": "reward_model"}], "reward 'A reward model's score' (reward_model): pick the reward model run to "
                                     "score with (in a config file, its id, e.g. r20261130-120000-abcd)"),
    ({}, [{"name": "regex", "pattern": "(unclosed"}],
     "reward 'Matches a format' (regex): the pattern '(unclosed' is not a valid regular expression (missing ), "
     "unterminated subpattern at position 0)"),
    ({}, [{"name": "contains", "weight": float("nan")}],
     "reward 'Contains the answer' (contains): weight must be a number from -10 to 10, got nan"),
    ({}, [{"name": "length", "target_words": 0}],
     "reward 'Length near a target' (length): parameter 'target_words': expected a value from 1 to 5000, got 0"),
    ({}, [{"name": "number", "weight": 0}, {"name": "contains", "weight": 0.0}],
     "every reward function has weight 0: every reply would score 0 and the model would learn nothing; give at "
     "least one of them a weight other than 0"),
    ({}, [{"name": "code"}], "reward 'Code passes the tests' (code) compares each reply with the row's 'tests' "
                             "column, but dataset 'p' has none in row 1; import prompts with the column 'tests', "
                             "or choose other reward functions"),
    ({}, [{"name": "number"}], "reward 'The number is right' (number) compares the last number of each reply with "
                               "the row's answer, but in dataset 'p' row 2's answer 'blue' has no number"),
    # TRL leaves out a last batch of prompts too few to fill a step: here, every prompt (a run of no step)
    ({"per_device_train_batch_size": 16, "num_generations": 4}, [{"name": "contains"}],
     "parameter 'per_device_train_batch_size': a step writes 16 replies, 4 to each of 4 prompts, and dataset 'p' "
     "holds 2 prompts: no step could be taken; lower the batch size (or the gradient accumulation), or import more "
     "prompts"),
    ({"max_completion_length": 1016}, [{"name": "contains"}],
     "parameter 'max_completion_length': the longest prompt of dataset 'p' (row 2, 40 tokens) plus a reply of "
     "1016 tokens does not fit the model's 1024-token context; shorten that prompt or the longest reply"),
])
def test_impossible_rl_settings_are_refused_before_anything_is_written(studio, tmp_path, tiny_model_dir,
                                                                        params, rewards, message):
    dataset = _prompts(studio, tmp_path, [{"prompt": "What is 2 + 2?", "answer": "4"},
                                          {"prompt": "What colour is the sky on a clear day?", "answer": "blue"}])
    with pytest.raises(ConfigError) as err:
        studio.start_run(model=str(tiny_model_dir), dataset=dataset, method="grpo", params=params, rewards=rewards)
    assert str(err.value) == message
    assert studio.list_runs() == [] and not any(studio.runs_dir.iterdir())


def test_rewards_belong_to_reinforcement_learning_only(studio, tmp_path, tiny_model_dir):
    from tests.conftest import FAQ

    dataset = studio.import_dataset(FAQ, name="faq")["id"]
    with pytest.raises(ConfigError, match="^LoRA learns from examples, not from reward functions"):
        studio.start_run(model=str(tiny_model_dir), dataset=dataset, method="lora", rewards=[{"name": "contains"}])
    prompts = _prompts(studio, tmp_path, [{"prompt": "Hi?", "answer": "hello"}])
    with pytest.raises(Exception, match="holds prompts data; LoRA trains on sft or text data, so pick a "
                                        "reinforcement-learning method"):
        studio.start_run(model=str(tiny_model_dir), dataset=prompts, method="lora")


def test_cli_trains_grpo_from_a_config_listing_its_rewards(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    prompts = tmp_path / "sums.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"What is {a} + {a}?", "answer": str(2 * a)}) + "\n"
                               for a in range(4)))
    config = tmp_path / "grpo.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "dataset": str(prompts), "method": "grpo",
        "params": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "num_generations": 2,
                   "max_completion_length": 8, "save_steps": 1000},
        "rewards": [{"name": "number", "weight": 1.0},
                    {"name": "regex", "weight": 0.5, "pattern": r"(?s).*Answer: \d+"}]}))
    done = studio_cmd(home, "train", str(config), "--wait")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    log = (home / "runs" / run_id / "train.log").read_text()
    assert r"rewards: The number is right ×1; Matches a format ×0.5 (pattern=(?s).*Answer: \d+)" in log
    metrics = ev.read_metrics(home / "runs" / run_id)
    assert {"rewards/number/mean", "rewards/regex/mean", "reward"} <= set(metrics[-1])

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": str(tiny_model_dir), "dataset": str(prompts), "method": "grpo",
                                   "rewards": [{"name": "regex", "weight": 1, "patern": "x"}]}))
    refused = studio_cmd(home, "train", str(bad))
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: reward 'Matches a format' (regex): unknown setting 'patern' "
                                      "(did you mean 'pattern'?); its settings are: pattern")


def test_reward_model_learns_separable_pairs_and_reloads_with_the_same_accuracy(studio, tmp_path, tiny_model_dir):
    from pipelines import reward_model
    from pipelines.data import load_rows
    from pipelines.importer import HELDOUT, ImportOptions

    topics = ["battery", "warranty", "price", "colour", "screen", "pen", "case", "charger", "update", "size"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({
        "prompt": f"Tell me about the {t} ({i}).",
        "chosen": f"Happy to help! The {t} is described in section {i} of the guide.",
        "rejected": "No."}) + "\n" for i in range(4) for t in topics))
    dataset = studio.import_dataset(pairs, name="pairs", options=ImportOptions(heldout=0.25))
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset["id"], method="reward_model",
                              params={"learning_rate": 3e-3, "num_train_epochs": 3, "per_device_train_batch_size": 4,
                                      "max_length": 64, "r": 8, "lora_alpha": 16, "save_steps": 1000,
                                      # its checks read the margin it watches (a name the checks lack fails the run)
                                      "early_stopping_patience": 3, "early_stopping_on": "margin"})
    row = studio.wait(run_id)
    assert row["status"] == "completed", row.get("error")
    summary = row["summary"]
    assert summary["eval_pairs"] == 10
    assert summary["eval_accuracy_after"] == 1.0 >= summary["eval_accuracy_before"]  # a random head may luck out
    assert summary["eval_margin_after"] > 1.0  # ... but only training separates the pairs by a wide margin
    assert summary["eval_margin_before"] < summary["eval_margin_after"]  # the lead the panel says training added
    metrics = ev.read_metrics(studio.run_dir(run_id))
    assert any("accuracy" in m for m in metrics) and any("eval_accuracy" in m for m in metrics)

    # outside the studio: the saved adapter and score head rank the held-out pairs as the run measured
    model, tokenizer = reward_model.load(str(tiny_model_dir), studio.run_dir(run_id) / "adapter")
    heldout = load_rows(Path(studio.resolve_dataset(dataset["id"])["path"]).with_name(HELDOUT))
    chosen = reward_model.score(model, tokenizer, [r["prompt"] + r["chosen"] for r in heldout])
    rejected = reward_model.score(model, tokenizer, [r["prompt"] + r["rejected"] for r in heldout])
    assert sum(c > r for c, r in zip(chosen, rejected)) / len(heldout) == summary["eval_accuracy_after"]

    # the Chat tab's scorer gives the same numbers, and keeps the model loaded for the next replies
    from components import runs_panel
    from studio import chat_service

    conversations = [heldout[0]["prompt"] + heldout[0]["chosen"], heldout[0]["prompt"] + heldout[0]["rejected"]]
    assert chat_service.score_replies(studio, run_id, conversations) == pytest.approx([chosen[0], rejected[0]],
                                                                                       abs=1e-5)
    assert list(studio.reward_scorers) == [run_id]
    assert chat_service.scorer_choices(studio) == [("Off", ""), (f"Reward model {run_id} (trained on pairs)", run_id)]

    # a reward model is not a model to chat with or start from, but GRPO can learn from its scores
    assert run_id not in [r["id"] for r in studio.model_runs()]
    assert [r["id"] for r in studio.reward_model_runs()] == [run_id]
    with pytest.raises(RunError, match=f"^run {run_id} is a reward model: it scores replies rather than writing"):
        studio.tuned_model(run_id)
    # nor one to put in a blind battle: its button is off, and the comparison says why
    with pytest.raises(chat_service.ChatError, match=f"^run {run_id} is a reward model: it scores replies rather "
                                                     "than writing them, so it has no replies to compare"):
        chat_service.previous_model(studio, run_id)
    states = runs_panel.button_states("completed", "reward_model")
    assert [s["interactive"] for s in states] == [False, False, True, False, True]
    assert runs_panel.button_states("completed", "lora")[3]["interactive"] is True
    # the highlighted next step: Chat (the reward model's scoring, a tuned model's replies) and, after
    # preference or reward training, the blind battle against the model it started from
    assert [s["variant"] for s in states[3:]] == ["secondary", "primary"]
    assert [s["variant"] for s in runs_panel.button_states("completed", "lora")[3:]] == ["secondary", "primary"]
    for method in ("dpo", "kto", "grpo"):
        assert [s["variant"] for s in runs_panel.button_states("completed", method)[3:]] == ["primary", "secondary"]
    prompts = _prompts(studio, tmp_path, [{"prompt": f"Tell me about the {t}."} for t in topics[:4]])
    with pytest.raises(RunError, match="^no run with id 'r-nope'"):
        studio.start_run(model=str(tiny_model_dir), dataset=prompts, method="grpo",
                         rewards=[{"name": "reward_model", "run": "r-nope"}])
    grpo = studio.start_run(model=str(tiny_model_dir), dataset=prompts, method="grpo",
                            params={"num_train_epochs": 1, "per_device_train_batch_size": 4, "num_generations": 2,
                                    "max_completion_length": 8, "save_steps": 1000},
                            rewards=[{"name": "reward_model", "run": run_id}])
    assert studio.wait(grpo)["status"] == "completed"
    scored = [m["rewards/reward_model/mean"] for m in ev.read_metrics(studio.run_dir(grpo)) if "reward" in m]
    assert len(scored) == 2 and all(0 < v < 1 for v in scored)
    assert f"reward model {run_id} loaded" in (studio.run_dir(grpo) / "train.log").read_text()
    # its new score head is no news: no load report (in terminal colours) in either run's log
    for log in (studio.run_dir(run_id) / "train.log", studio.run_dir(grpo) / "train.log"):
        assert "LOAD REPORT" not in log.read_text() and "\x1b[" not in log.read_text()


def test_ppo_cancelled_mid_run_resumes_from_its_checkpoint(studio, tmp_path, tiny_model_dir):
    import time

    dataset = _prompts(studio, tmp_path, [{"prompt": f"Question {i}?", "answer": "yes"} for i in range(4)])
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset, method="ppo",
                              params={"num_train_epochs": 8, "per_device_train_batch_size": 4,
                                      "max_completion_length": 8, "save_steps": 100},
                              rewards=[{"name": "contains"}])
    run_dir = studio.run_dir(run_id)
    deadline = time.time() + 300
    while len(ev.read_metrics(run_dir)) < 2 and time.time() < deadline:
        time.sleep(0.5)
    studio.cancel(run_id)
    row = studio.wait(run_id)
    assert row["status"] == "cancelled"
    done = row["summary"]["steps"]
    assert (run_dir / "checkpoints" / f"checkpoint-{done}" / "value_head.pt").exists()  # saved on cancel
    assert not (run_dir / "adapter").exists()

    studio.resume(run_id)
    row = studio.wait(run_id)
    assert row["status"] == "completed", row.get("error")
    steps = [m["step"] for m in ev.read_metrics(run_dir)]
    assert steps == list(range(1, 9))  # every step once: the resumed run went on from the checkpoint
    assert f"resuming from checkpoint-{done}" in (run_dir / "train.log").read_text()
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists() and (run_dir / "value_head.pt").exists()
    # the same run uninterrupted ends with the same weights: the checkpoint kept the value head, the optimizer's
    # moments and the random state the replies are drawn with (the test compared step numbers only)
    from safetensors.torch import load_file

    whole = studio.start_run(model=str(tiny_model_dir), dataset=dataset, method="ppo",
                             params={"num_train_epochs": 8, "per_device_train_batch_size": 4,
                                     "max_completion_length": 8, "save_steps": 100},
                             rewards=[{"name": "contains"}])
    assert studio.wait(whole)["status"] == "completed"
    resumed, straight = (load_file(str(studio.run_dir(r) / "adapter" / "adapter_model.safetensors"))
                         for r in (run_id, whole))
    assert resumed.keys() == straight.keys()
    assert all(torch.allclose(resumed[k], straight[k], atol=1e-6) for k in resumed), done
    heads = [torch.load(studio.run_dir(r) / "value_head.pt") for r in (run_id, whole)]
    assert all(torch.allclose(heads[0][k], heads[1][k], atol=1e-6) for k in heads[0])
    assert [m["reward"] for m in ev.read_metrics(run_dir)] == [m["reward"] for m in ev.read_metrics(
        studio.run_dir(whole))]


def test_grpo_resumed_between_two_passes_writes_replies_at_the_uninterrupted_runs_steps(studio, tmp_path,
                                                                                         tiny_model_dir):
    """Two passes over each batch of replies, a checkpoint every 3 steps: checkpoint-3 falls between the two
    passes over the second batch. A run that crashed after it wrote its replies one step out of phase once
    resumed (at steps 4 and 6, the third batch's prompts learned from once); it writes them again for the
    batch it was in (step 4: they are not kept in a checkpoint), then at step 5, as the uninterrupted run.
    With gradient accumulation (2 here), as TRL counts: each batch it trained on, not each step."""
    import shutil

    dataset = _prompts(studio, tmp_path, [{"prompt": f"Question {i}?", "answer": "yes"} for i in range(6)])
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset, method="grpo",
                              params={"num_train_epochs": 1, "per_device_train_batch_size": 2,
                                      "gradient_accumulation_steps": 2, "num_generations": 2, "num_iterations": 2,
                                      "max_completion_length": 8, "save_steps": 3},
                              rewards=[{"name": "contains"}])
    assert studio.wait(run_id)["status"] == "completed"
    run_dir = studio.run_dir(run_id)

    def written():  # the steps that wrote a batch of replies (rewards are logged as they are scored)
        return [m["step"] for m in ev.read_metrics(run_dir) if "reward" in m]

    assert written() == [1, 3, 5] and (run_dir / "checkpoints" / "checkpoint-3").is_dir()
    # as a crash during step 6 leaves it: checkpoint-3 the newest whole one, no adapter saved
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-6")
    shutil.rmtree(run_dir / "adapter")
    status = json.loads((run_dir / ev.STATUS).read_text())
    (run_dir / ev.STATUS).write_text(json.dumps({**status, "status": "failed", "error": "the machine went down",
                                                 "summary": None}))

    studio.resume(run_id)
    row = studio.wait(run_id)
    assert row["status"] == "completed", row.get("error")
    assert "resuming from checkpoint-3" in (run_dir / "train.log").read_text()
    assert [m["step"] for m in ev.read_metrics(run_dir) if "loss" in m] == list(range(1, 7))
    assert written() == [1, 3, 4, 5]


@pytest.mark.parametrize("key", ["grpo", "rloo"])
def test_from_an_ia3_parent_the_kl_reference_is_the_parent(key, tmp_path, tiny_model_dir):
    """GRPO and RLOO started from a run's adapter hold the policy near that adapter. TRL copies it into its
    frozen "ref" adapter only for weights named `.default.` (LoRA's): an IA3 parent's scales (`ia3_l.default`)
    stayed at IA3's start, the base model, and the KL penalty pulled the run back from what its parent learned."""
    from pipelines import importer
    from pipelines.events import RunEvents
    from pipelines.train_rl import build_trainer
    from tests.test_pref_train import trained_ia3_parent

    trained_ia3_parent(tiny_model_dir, tmp_path / "parent")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "answer": "yes"}) + "\n" for p in PROMPTS))
    importer.import_file(prompts, tmp_path / "data")
    job = {"method": key, "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(tmp_path / "data" / importer.DATA), "name": "p"},
           "params": {"max_completion_length": 8, "per_device_train_batch_size": 4, "num_generations": 4},
           "rewards": [{"name": "contains", "weight": 1.0}],
           "init_adapter": str(tmp_path / "parent"), "parent_id": "r-parent"}
    run_dir = tmp_path / "runs" / "run"
    run_dir.mkdir(parents=True)
    trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
    weights = dict(trainer.model.named_parameters())
    scales = [n for n in weights if n.endswith("ia3_l.default")]
    assert scales and all(torch.equal(weights[n], weights[n.removesuffix("default") + "ref"]) for n in scales)


def test_reward_model_pairs_over_max_length_are_counted_as_left_out(studio, tmp_path, tiny_model_dir):
    """TRL's reward trainer leaves out a pair whose reply is longer than Max length (the help said it was cut):
    the run counted them as trained on and measured, and with every held-out pair too long it failed with a
    KeyError at the end."""
    long = " ".join(["word"] * 80)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": long if i < 2 else "Yes, gladly.",
                                         "rejected": "No."}) + "\n" for i in range(8)))
    dataset = studio.import_dataset(pairs, name="pairs")
    params = {"num_train_epochs": 1, "per_device_train_batch_size": 2, "max_length": 48, "eval_fraction": 0.0,
              "save_steps": 1000}
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset["id"], method="reward_model", params=params)
    row = studio.wait(run_id)
    assert row["status"] == "completed", row.get("error")
    assert row["summary"]["train_rows"] == 6 and row["summary"]["long_pairs_left_out"] == 2
    assert "2 of 8 pairs have a prompt and reply longer than Max length (48 tokens) and are left out" in \
        (studio.run_dir(run_id) / "train.log").read_text()
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": long, "rejected": "No."}) + "\n"
                             for i in range(8)))
    dataset = studio.import_dataset(pairs, name="all long")
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset["id"], method="reward_model", params=params)
    row = studio.wait(run_id)
    assert row["status"] == "failed"
    assert row["error"] == ("every training pair has a prompt and reply longer than Max length (48 tokens), and a "
                            "reward model reads each reply whole; raise Max length")


def test_a_reward_model_from_an_adapter_run_is_refused_before_anything_is_written(studio, tiny_model_dir):
    """The InstructGPT recipe (reward model from the SFT model) with a LoRA run as its start was queued, loaded,
    and failed in the worker: 'LlamaForSequenceClassification' object has no attribute 'prepare_inputs_for…'."""
    parent = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params={"num_train_epochs": 0.1, "max_length": 128, "per_device_train_batch_size": 4,
                                      "r": 4})
    assert studio.wait(parent)["status"] == "completed"
    before = sorted(p.name for p in studio.runs_dir.iterdir())
    with pytest.raises(RunError) as err:
        studio.start_run(model=f"run:{parent}", dataset="quillpad_preferences", method="reward_model")
    assert str(err.value) == (f"run {parent} learned a LoRA adapter, and a reward model puts its score head on whole "
                              "weights; start it from the base model or a Full or Freeze run, or export this run "
                              "merged (Export tab) and start from that folder")
    assert sorted(p.name for p in studio.runs_dir.iterdir()) == before and len(studio.store.list_runs()) == 1
