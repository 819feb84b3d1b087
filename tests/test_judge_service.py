"""RLAIF end to end: `studio judge` labels a preference dataset with a judge model in a background
job, the judged pairs become a catalogue dataset with the agreement in its origin, and a reward model
can train on it; refusals are one line and start nothing."""

from __future__ import annotations

import json

from tests.test_cli import studio_cmd
from tests.test_pref_train import PAIRS


def test_judge_cli_makes_a_dataset_with_the_agreement(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    done = studio_cmd(home, "judge", str(PAIRS), "--judge", str(tiny_model_dir), "--limit", "6")
    assert done.returncode == 0, done.stderr
    dataset_id = done.stdout.strip()
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("quillpad_preferences judged by tiny-llama")
    assert ": 6 preference pairs. The judge agreed with the original choices on " in last
    assert "pairs, asked in both orders; asked once (either order), " in last

    from studio.core import Studio

    studio = Studio(home)
    row = studio.store.get_dataset(dataset_id)
    assert row["kind"] == "preference" and row["rows"] == 6
    origin = row["meta"]["origin"]
    assert origin["kind"] == "judge" and origin["judge"] == str(tiny_model_dir) and origin["pairs"] == 6
    assert 0 <= origin["agreement_both_orders"] <= 1 and len(origin["interval_both_orders"]) == 2
    # a judge near a coin flip on every pair is said to be one
    assert 0 <= origin["certainty"] <= 1
    assert ("It was hardly decided" in last or "It chose by position" in last) == (origin["certainty"] < 0.1)
    # the judged pairs hold the same answers, each pair in the judge's order
    original = [json.loads(line) for line in PAIRS.read_text().splitlines()][:6]
    from pipelines.data import load_rows

    judged = load_rows(studio.resolve_dataset(dataset_id)["path"])
    for pair, got in zip(original, judged):
        assert {got["chosen"][0]["content"], got["rejected"][0]["content"]} == {pair["chosen"], pair["rejected"]}

    # usable by the preference methods and the reward model
    trained = studio.start_run(model=str(tiny_model_dir), dataset=dataset_id, method="reward_model",
                               params={"num_train_epochs": 1, "max_length": 64, "eval_fraction": 0.0,
                                       "save_steps": 1000})
    assert studio.wait(trained)["status"] == "completed"


def test_judge_refusals_start_nothing(tmp_path, tiny_model_dir):
    from tests.conftest import FAQ

    home = tmp_path / "home"
    refused = studio_cmd(home, "judge", str(FAQ), "--judge", str(tiny_model_dir))
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: dataset 'quillpad_faq' holds sft data; a judge compares the two "
                                      "answers of preference pairs (prompt, chosen, rejected)")
    missing = studio_cmd(home, "judge", str(PAIRS), "--judge", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: model '")
    assert not [p for p in (home / "runs").iterdir() if p.name.startswith("j")]


def test_agreement_text_reads_the_shares_and_warns_of_an_undecided_judge():
    from studio.judge_service import agreement_text

    summary = {"pairs": 3, "agreement_both_orders": 0.0, "interval_both_orders": [0.0, 0.56],
               "agreement_one_order": 0.5, "interval_one_order": [0.13, 0.87], "certainty": 0.02}
    assert agreement_text(summary, True) == (
        "The judge agreed with the original choices on 0% [0%-56%] of 3 pairs, asked in both orders; asked once "
        "(either order), 50% [13%-87%] on average. ⚠️ It was hardly decided: its preference averaged 51-49 between "
        "the answers, close to a coin flip, so this order of the answers says little. Try a larger judge model, or "
        "read a sample of the pairs before training on them")
    biased = {**summary, "picks_first_shown": 0.9}  # sure each time, but of the first answer shown
    assert agreement_text(biased, True).endswith(
        "on average. ⚠️ It chose by position: the answer shown first in 90% of its readings, so with both orders its "
        "preferences cancel out near 50/50 and this order of the answers says little. Try a larger judge model, or "
        "read a sample of the pairs before training on them")
    sure = {**summary, "certainty": 0.6}
    assert agreement_text(sure, False) == ("The judge agreed with the original choices on 50% [13%-87%] of 3 pairs "
                                           "(one order asked)")
