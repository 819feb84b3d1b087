"""Help me choose: the advisor's rules case by case (pipelines/advisor.py, a pure function of the
facts), then `studio advise` gathering real facts (dataset, estimates) on the tiny model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from pipelines.advisor import Facts, recommend
from pipelines.methods import METHODS, parse

GB = 1024**3


def facts(goal="facts", rows=500, kind="sft", available=24, **peaks_gb) -> Facts:
    peaks = {"lora": 3, "qlora": 2, "full": 31} | peaks_gb
    keys = [k for k in peaks if k in {"facts": ["lora", "qlora", "full"], "style": ["lora", "qlora", "full"]}.get(
        goal, [{"preferences": "dpo", "feedback": "kto", "checkable": "grpo"}.get(goal)])]
    return Facts(goal=goal, rows=rows, data_kind=kind, available_bytes=int(available * GB), where="memory",
                 peak_bytes={k: int(peaks.get(k, 3) * GB) for k in keys},
                 seconds_per_epoch={k: 60.0 for k in keys}, batch_size={k: 8 for k in keys}, longest_tokens=190,
                 max_length={k: 512 for k in keys})


def test_the_issues_example_full_does_not_fit_so_lora_with_its_reasons():
    advice = recommend(facts(rows=500))
    assert advice.method == "lora"
    assert advice.settings == {"r": 16, "num_train_epochs": 8, "max_length": 192, "learning_rate": 1e-3}
    said = "\n".join(advice.reasons)
    assert ("Full tuning needs about 31.0 GB here, more than the 85% of your 24.0 GB of memory a run should take (the "
            "rest is the system's and the other programs'): **LoRA** needs about 3.0 GB") in said
    assert "learns facts well from a few hundred examples" in said
    assert "8 epochs because your set has 500 rows to train on: a small set needs several passes" in said
    assert "95% of your rows are at most 190 tokens" in said
    assert "about 8 min for the whole run" in said  # 60 s per epoch x 8


def test_lots_of_data_and_memory_to_spare_is_full_tuning():
    advice = recommend(facts(rows=20_000, full=6))
    assert advice.method == "full"
    assert advice.settings["num_train_epochs"] == 1 and advice.settings["learning_rate"] == 2e-5
    assert "r" not in advice.settings
    assert "you have 20000 rows, enough for every weight to learn" in advice.reasons[0]


def test_full_would_fit_but_a_small_set_still_gets_an_adapter():
    advice = recommend(facts(rows=120, full=6))
    assert advice.method == "lora" and advice.settings["num_train_epochs"] == 8
    assert advice.reasons[0].startswith("Full tuning would fit (6.0 GB), but with 120 rows an adapter learns as well")


def test_lora_does_not_fit_qlora_does():
    advice = recommend(facts(available=4, lora=3.8, qlora=2.5, full=31))
    assert advice.method == "qlora" and advice.settings["r"] == 16
    assert ("LoRA needs about 3.8 GB here, more than the 85% of your 4.0 GB of memory a run should take (the rest "
            "is the system's and the other programs'): **QLoRA**") in advice.reasons[0]
    assert "a little slower per step, nearly LoRA's quality" in advice.reasons[0]  # (both 60 s an epoch here)
    slow = dataclasses.replace(facts(available=4, lora=3.8, qlora=2.5, full=31))
    slow.seconds_per_epoch["qlora"] = 240.0  # the unpacking of 4-bit weights, measured on this machine
    assert "each step about 4.0x LoRA's here (its 4-bit weights are unpacked as they are used)" in \
        recommend(slow).reasons[0]


def test_nothing_fits_says_so_and_recommends_no_method():
    advice = recommend(facts(available=1, lora=3, qlora=2, full=31))
    assert advice.method is None and advice.settings == {}
    assert "**Nothing fits at its default settings**: even QLoRA needs about 2.0 GB, more than the 85% of your 1.0 GB" in advice.reasons[-1]
    # QLoRA's own figure when LoRA's is the smaller (it quoted LoRA's 2.1 GB as QLoRA's)
    advice = recommend(facts(available=1, lora=2.1, qlora=2.6, full=31))
    assert "even QLoRA needs about 2.6 GB, more than the 85% of your 1.0 GB" in advice.reasons[-1]


def test_style_takes_a_lower_rank_than_facts():
    assert recommend(facts(goal="style")).settings["r"] == 8
    assert recommend(facts(goal="facts")).settings["r"] == 16


@pytest.mark.parametrize("rows, epochs", [(20, 10), (120, 8), (1500, 4), (5000, 2), (50_000, 1)])
def test_epochs_follow_the_size_of_the_set(rows, epochs):
    assert recommend(facts(rows=rows, full=40)).settings["num_train_epochs"] == epochs


def test_max_length_is_only_ever_lowered_below_what_was_estimated():
    long_rows = dataclasses.replace(facts(), longest_tokens=3000)
    advice = recommend(long_rows)
    assert "max_length" not in advice.settings
    assert ("Max length stays 512 tokens: more than 5% of your rows are longer (95% are at most 3000 tokens) and "
            "are cut at 512;") in "\n".join(advice.reasons)
    # rows that fit: none is cut (it said 5% were, at their own length)
    fitting = recommend(dataclasses.replace(facts(), longest_tokens=500))
    assert "max_length" not in fitting.settings
    assert ("Max length stays 512 tokens: 95% of your rows are at most 500 tokens, so almost nothing is cut."
            in fitting.reasons)


def test_a_batch_taking_over_half_the_memory_is_split_with_accumulation():
    advice = recommend(facts(available=8, lora=5))
    assert advice.settings["per_device_train_batch_size"] == 4
    assert advice.settings["gradient_accumulation_steps"] == 2
    assert recommend(facts(available=24, lora=3)).settings.get("per_device_train_batch_size") is None


def test_lighter_settings_come_before_a_four_bit_model():
    """LoRA that did not fit at its defaults was given up for QLoRA (a 4-bit model, slower per step here, a little
    worse), where a shorter max length, a batch of one row accumulated or gradient checkpointing fit it: those are
    advised first, in that order, as the field's memory guides do."""
    from pipelines.advisor import Lighter, lighter_steps

    assert lighter_steps(8, 512, 190) == [
        {"max_length": 192},
        {"max_length": 192, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8},
        {"max_length": 192, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8,
         "gradient_checkpointing": True}]
    assert lighter_steps(1, 512, 600) == [{"gradient_checkpointing": True}]  # nothing else to give up
    one_row = {"max_length": 192, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8}
    tight = facts(available=4, lora=3.8, qlora=2.5)
    light = dataclasses.replace(tight, lighter={"lora": Lighter(one_row, int(3.0 * GB), 90.0)})
    advice = recommend(light)
    assert advice.method == "lora"
    assert advice.settings == {"r": 16, "num_train_epochs": 8, **one_row, "learning_rate": 1e-3}
    assert ("**LoRA** needs about 3.8 GB at its defaults here, more than the 85% of your 4.0 GB of memory a run should "
            "take (the rest is the system's and the other programs'). With a max length of 192 tokens and a batch "
            "of 1 row with 8 accumulation steps (the same 8 rows per update) it needs about 3.0 GB, which fits: "
            "those are set below") in advice.reasons[0]
    assert "about 12 min for the whole run" in advice.reasons[-1]  # at its own speed: 90 s per epoch x 8
    # not enough: QLoRA, which says what was tried; QLoRA at its defaults over too, its own lighter settings
    over = dataclasses.replace(tight, lighter={"lora": Lighter(one_row, int(3.5 * GB))})
    advice = recommend(over)
    assert advice.method == "qlora" and advice.settings["per_device_train_batch_size"] == 4  # (over half: split)
    assert advice.reasons[0].startswith("LoRA needs about 3.8 GB here (3.5 GB even with a max length of 192 tokens "
                                        "and a batch of 1 row with 8 accumulation steps")
    checkpointed = {**one_row, "gradient_checkpointing": True}
    qlora_over = dataclasses.replace(over, peak_bytes={**over.peak_bytes, "qlora": int(3.6 * GB)},
                                     lighter={**over.lighter, "qlora": Lighter(checkpointed, int(2.9 * GB))})
    advice = recommend(qlora_over)
    assert advice.method == "qlora" and advice.settings["gradient_checkpointing"] is True
    assert ("**QLoRA** keeps the frozen model in 4 bits and needs about 2.9 GB with a max length of 192 tokens, a "
            "batch of 1 row with 8 accumulation steps (the same 8 rows per update) and gradient checkpointing") \
        in advice.reasons[0]
    parse(METHODS["qlora"].params, advice.settings)
    # nothing fits even so: a smaller model (lowering what was lowered already is no advice)
    none = dataclasses.replace(qlora_over, lighter={**over.lighter, "qlora": Lighter(checkpointed, int(3.5 * GB))})
    advice = recommend(none)
    assert advice.method is None
    assert advice.reasons[-1].startswith("**Nothing fits**: even QLoRA needs about 3.6 GB")
    assert advice.reasons[-1].endswith("Choose a smaller model.") and "lower the batch" not in advice.reasons[-1]


def test_the_lighter_settings_are_the_first_the_estimates_fit(studio, tiny_model_dir):
    """studio/advise.py estimates `lighter_steps` in turn on the real model and data: the first whose peak fits."""
    from pipelines.advisor import HEADROOM, lighter_steps
    from studio import advise
    from studio import method_service as ms

    model = str(tiny_model_dir)
    steps = lighter_steps(8, 512, 100)
    peaks = [ms.estimate(studio, model, "lora", s, "quillpad_faq").peak_bytes for s in [None, *steps]]
    assert peaks[2] < peaks[1] <= peaks[0]  # one row at a time holds less than eight
    available = int(peaks[2] / HEADROOM) + 1  # the defaults and the shorter length do not fit; one row does
    light = advise._lighter(studio, model, "lora", "quillpad_faq", 8, 512, 100, available)
    assert light.settings == steps[1] and light.peak_bytes == peaks[2]
    assert advise._lighter(studio, model, "lora", "quillpad_faq", 8, 512, 100, 1).settings == steps[-1]  # the last


@pytest.mark.parametrize("goal, kind, method", [("preferences", "preference", "dpo"), ("feedback", "kto", "kto"),
                                                 ("checkable", "prompts", "grpo")])
def test_each_kind_of_feedback_has_its_method(goal, kind, method):
    advice = recommend(facts(goal=goal, kind=kind))
    assert advice.method == method
    assert not any("does not fit this goal" in r for r in advice.reasons)


def test_data_of_the_wrong_kind_is_named_with_what_the_goal_needs():
    advice = recommend(facts(goal="preferences", kind="sft"))
    assert advice.reasons[0] == (
        "**Your dataset does not fit this goal:** it is sft data; this goal needs pairs: a prompt with a better and a "
        "worse answer (chat votes and labels export as pairs). Pick or import such a dataset; the advice below "
        "assumes one.")
    assert "max_length" not in advice.settings  # the lengths of the wrong data say nothing
    from studio.advise import as_yaml

    assert yaml.safe_load(as_yaml(advice, "default", "d-sft"))["dataset"] == "YOUR_DATASET"  # not the wrong data


def test_smaller_or_faster_points_to_export_not_training():
    advice = recommend(facts(goal="smaller"))
    assert advice.method is None and "GGUF with 4-bit quantization (Q4_K_M)" in advice.reasons[0]


def test_every_recommended_setting_is_a_valid_setting_of_its_method():
    for goal in ("facts", "style", "preferences", "feedback", "checkable"):
        for rows in (30, 800, 30_000):
            advice = recommend(facts(goal=goal, rows=rows, full=6))
            names = set(METHODS[advice.method].params.__dataclass_fields__)
            assert set(advice.settings) <= names, (goal, advice.method, set(advice.settings) - names)
            parse(METHODS[advice.method].params, advice.settings)


def test_unknown_goal_is_refused():
    with pytest.raises(ValueError, match="^unknown goal 'faster'; choose one of: facts, style,"):
        recommend(facts(goal="faster"))


def test_cli_advise_reads_the_dataset_and_this_machine(studio, tiny_model_dir, tmp_path, capsys):
    from studio.cli import main

    rows = tmp_path / "support.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"What is part {i}?", "completion": f"Part {i} is a gear."}) + "\n"
                            for i in range(40)))
    assert main(["data", "import", str(rows), "--home", str(studio.home)]) == 0
    capsys.readouterr()
    [imported] = [d["id"] for d in studio.list_datasets()]
    assert main(["advise", "--goal", "facts", "--dataset", imported, "--model", str(tiny_model_dir),
                 "--home", str(studio.home)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Use LoRA\nSettings: rank 16, epochs 10, max length (tokens) 128,")
    # the rows a run trains on: the 4 it holds out to check itself are not (the advice counted them)
    assert "10 epochs because your set has 36 rows to train on (4 more are held out to check it)" in out
    config = yaml.safe_load(out.split("(save it as a .yaml file, or use --save FILE):\n", 1)[1])
    assert config == {"model": str(tiny_model_dir), "dataset": imported, "method": "lora",
                      "params": {"r": 16, "num_train_epochs": 10, "max_length": 128, "learning_rate": 0.001}}
    # the printed config is one `studio train` takes as it is
    parse(METHODS["lora"].params, config["params"])


def test_cli_advice_for_checkable_answers_is_a_config_studio_train_starts(studio, tiny_model_dir, tmp_path, capsys):
    """The printed GRPO config had no reward functions: `studio train` refused it ("reinforcement learning needs
    at least one reward function"). It carries the Train form's default."""
    from studio.cli import main, read_config

    assert main(["advise", "--goal", "checkable", "--dataset", "arithmetic_prompts", "--model", str(tiny_model_dir),
                 "--home", str(studio.home)]) == 0
    printed = capsys.readouterr().out.split("(save it as a .yaml file, or use --save FILE):\n", 1)[1]
    assert yaml.safe_load(printed)["rewards"] == [{"name": "number", "weight": 1.0}]
    # --save writes that config to a file, and says how to start it
    saved = tmp_path / "advised.yaml"
    argv = ["advise", "--goal", "checkable", "--dataset", "arithmetic_prompts", "--model", str(tiny_model_dir),
            "--home", str(studio.home), "--save", str(saved)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.endswith(f"\nsaved the config to {saved}; start it with: studio train {saved}\n")
    assert "# a config for" not in out and saved.read_text() == printed
    # a file already there (perhaps edited since) is kept: one line, exit 2
    saved.write_text("# my edits\n" + printed)
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {saved} exists; remove it or choose another file\n"
    assert saved.read_text().startswith("# my edits\n") and list(tmp_path.glob(".*.tmp")) == []
    run_id = studio.start_run(**read_config(saved))
    studio.cancel(run_id)
    assert studio.get_run(run_id)["method"] == "grpo"


def test_pairs_asked_for_with_examples_in_train_advise_on_the_users_own_pairs(studio, tiny_model_dir, tmp_path,
                                                                              capsys):
    """Asked how to learn from pairs while Train still held the FAQ examples, the advice said the data did
    not fit, and "Use these settings" then trained on the bundled sample pairs, not the user's."""
    from studio.cli import main

    pairs = tmp_path / "my_pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": f"Kind answer {i}.", "rejected": "No."}) + "\n"
                             for i in range(12)))
    own = studio.import_dataset(pairs)
    assert main(["advise", "--goal", "preferences", "--dataset", "quillpad_faq", "--model", str(tiny_model_dir),
                 "--home", str(studio.home)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Use DPO\n")
    assert ("- For your dataset my_pairs (preference data, 12 rows): the one chosen, Quillpad support FAQ, "
            "is sft data.\n") in out
    assert "does not fit" not in out
    assert yaml.safe_load(out.split("(save it as a .yaml file, or use --save FILE):\n", 1)[1])["dataset"] == own["id"]
    # the Train tab starts a method on the user's newest data of its kind, not on a sample
    from components.train_tab import dataset_choices, first_dataset

    assert first_dataset(dataset_choices(studio, "dpo")) == own["id"]
    assert first_dataset(dataset_choices(studio, "grpo")) == "arithmetic_prompts"
    # the RLHF route has prompts of its own on the page: the sign-off pairs' questions, for a reward model to score
    for method in ("ppo", "grpo"):
        assert "signoff_prompts" in [value for _label, value in dataset_choices(studio, method)]
    rows = studio.resolve_dataset("signoff_prompts")
    assert (rows["kind"], rows["rows"]) == ("prompts", 40)


@pytest.mark.parametrize("method, goal, kind, per_epoch, epochs", [
    ("dpo", "preferences", "preference", 3, 4),  # 11 pairs in batches of 4: 3 steps an epoch, 2 epochs = 6
    ("kto", "feedback", "kto", 2, 5),
    ("kto", "feedback", "kto", 1, 10),  # capped: more passes over a handful of rows only memorise it
])
def test_a_small_set_gets_enough_epochs_for_the_steps_the_train_tab_asks(method, goal, kind, per_epoch, epochs):
    """Applied DPO/KTO advice on a dozen rows was then called too small by the Train tab ("Only 6 training
    steps"): the advice now gives it the epochs for about ten steps, and says why."""
    small = dataclasses.replace(facts(goal=goal, kind=kind, rows=11), epochs={method: 2.0},
                                steps_per_epoch={method: per_epoch})
    advice = recommend(small)
    assert advice.settings["num_train_epochs"] == epochs
    said = next(r for r in advice.reasons if r.startswith(f"{epochs} epochs:"))
    assert said.startswith(f"{epochs} epochs: one pass over your 11 rows is only {per_epoch} training step")
    assert ("More rows would teach it more" in said) == (epochs == 10)
    from studio.method_service import FEW_STEPS

    assert per_epoch * epochs >= FEW_STEPS
    enough = dataclasses.replace(small, steps_per_epoch={method: 5})  # 10 steps at the default: left as it is
    assert "num_train_epochs" not in recommend(enough).settings


def test_checkable_answers_get_the_measured_grpo_recipe():
    """"Get checkable answers right" said *Use GRPO* with no setting at all, and *Use these settings in Train*
    applied the form's defaults (1 epoch, variety 1.0), not the recipe measured on the arithmetic sample."""
    import yaml as yml

    from tests.conftest import ROOT

    recipe = yml.safe_load((ROOT / "examples" / "grpo-arithmetic.yaml").read_text())["params"]
    advice = recommend(facts(goal="checkable", kind="prompts"))
    assert advice.settings["num_train_epochs"] == recipe["num_train_epochs"]
    assert advice.settings["temperature"] == recipe["temperature"]
    said = "\n".join(advice.reasons)
    assert "3 epochs and *Variety while training* 0.7: the recipe measured on the arithmetic sample" in said
    assert "check each prompt's `answer` column: without one, check the reply's form" in said
    from pipelines.methods import METHODS, parse

    parse(METHODS["grpo"].params, advice.settings)  # settings the form takes


def test_grpo_advice_gives_one_epoch_count_and_the_time_counts_the_checks():
    """A small prompts set got "2 epochs ... (10 steps in all)" and then "3 epochs and Variety while training":
    two figures, the second the one set. The whole run's time left out the held-out checks the Train tab adds."""
    few = dataclasses.replace(facts(goal="checkable", rows=10, kind="prompts"), steps_per_epoch={"grpo": 5},
                              epochs={"grpo": 1.0})
    advice = recommend(few)
    said = "\n".join(advice.reasons)
    assert advice.settings["num_train_epochs"] == 3.0 and advice.settings["temperature"] == 0.7
    assert "3 epochs and *Variety while training* 0.7" in said and "2 epochs" not in said
    tiny = dataclasses.replace(few, steps_per_epoch={"grpo": 1})  # 3 epochs are 3 steps: more, in one figure
    advice = recommend(tiny)
    said = "\n".join(advice.reasons)
    assert advice.settings["num_train_epochs"] == 10 and said.count(" epochs") == 1
    assert "10 epochs: one pass over your 10 rows is only 1 training step" in said
    assert "\n*Variety while training* 0.7: the recipe measured" in said

    checked = dataclasses.replace(facts(rows=500), eval_seconds={"lora": 120.0})
    assert "about 10 min for the whole run" in "\n".join(recommend(checked).reasons)  # 60 s x 8 + 120 s
