"""RLAIF end to end: `studio judge` labels a preference dataset with a judge model in a background
job, the judged pairs become a catalogue dataset with the agreement in its origin, and a reward model
can train on it; refusals are one line and start nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import studio_cmd
from tests.test_pref_train import PAIRS


def test_judge_cli_makes_a_dataset_with_the_agreement(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    done = studio_cmd(home, "judge", str(PAIRS), "--judge", str(tiny_model_dir), "--limit", "6")
    assert done.returncode == 0, done.stderr
    dataset_id = done.stdout.strip()
    last = done.stderr.strip().splitlines()[-1]
    # not at a terminal: a line per tenth of the pairs, not a redrawn line that grew every second
    progress = [line for line in done.stderr.splitlines() if line.endswith("pairs judged")]
    assert "\r" not in done.stderr and len(progress) == len(set(progress))  # (a short job may show none)
    assert last.startswith("quillpad_preferences judged by tiny-llama")
    assert ": 6 preference pairs. The judge agreed with the original choices on " in last
    assert "pairs, asked in both orders; asked once (either order), " in last

    from studio.core import Studio

    studio = Studio(home)
    row = studio.store.get_dataset(dataset_id)
    assert row["kind"] == "preference" and row["rows"] == 6
    # the judge's own numbers per pair are not columns of the user's the import dropped ("ignored columns:
    # judge_p, human_agrees, judge_sure, judge" was said of the studio's own dataset)
    from studio.cli_data import summary_line

    assert "ignored" not in summary_line(row) and row["meta"]["ignored_columns"] == []
    origin = row["meta"]["origin"]
    assert origin["kind"] == "judge" and origin["judge"] == str(tiny_model_dir) and origin["pairs"] == 6
    assert 0 <= origin["agreement_both_orders"] <= 1 and len(origin["interval_both_orders"]) == 2
    # a judge near a coin flip on every pair is said to be one
    assert 0 <= origin["certainty"] <= 1
    # a choice is reversed only where the judge was sure enough of the other answer: said, with the pairs kept
    assert origin["min_sure"] == 0.55 and origin["reversed"] + origin["unsure_kept"] <= 6
    assert f"It reversed {origin['reversed']} of the 6 choices" in last
    assert (f"kept {origin['unsure_kept']} as they were, being less than 55% sure" in last) == (origin["unsure_kept"] > 0)
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
    unsure = studio_cmd(home, "judge", str(PAIRS), "--judge", str(tiny_model_dir), "--min-sure", "0.3")
    assert unsure.returncode == 2 and unsure.stderr.strip() == (
        "error: how sure the judge must be to reverse a choice is 0.3; give a share from 0.5 (any lean) to below 1")
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
    counted = {**sure, "min_sure": 0.6, "reversed": 1, "unsure_kept": 2}
    assert agreement_text(counted, False) == (
        "The judge agreed with the original choices on 50% [13%-87%] of 3 pairs (one order asked). It reversed 1 of "
        "the 3 choices and kept 2 as they were, being less than 60% sure of either answer")
    assert agreement_text({**counted, "unsure_kept": 0}, False).endswith(". It reversed 1 of the 3 choices")
    assert agreement_text({**counted, "unsure_kept": 0, "too_long_kept": 2}, False).endswith(
        ". It reversed 1 of the 3 choices. 2 more pairs were longer than the judge reads at once, kept as they were")


def test_one_order_picks_that_follow_the_position_are_said_to(tmp_path):
    """Asked once, every other pair shows the stored choice second: a judge that always picks the first answer,
    however sure, agrees half the time, and was reported as a plain 50% with no warning."""
    from studio.judge_service import agreement_text

    summary = {"pairs": 10, "agreement_both_orders": 0.5, "interval_both_orders": [0.24, 0.76],
               "agreement_one_order": 0.5, "interval_one_order": [0.24, 0.76], "certainty": 0.8,
               "picks_first_shown": 1.0}
    assert agreement_text(summary, False) == (
        "The judge agreed with the original choices on 50% [24%-76%] of 10 pairs (one order asked). ⚠️ Its picks "
        "mostly followed the position: it chose the answer shown first in 100% of the pairs, so this order of the "
        "answers says little. Ask in both orders, try a larger judge model, or read a sample of the pairs before "
        "training on them")
    assert "⚠️" not in agreement_text({**summary, "picks_first_shown": 0.6}, False)


def test_a_judge_job_is_cancelled_from_the_cli_and_keeps_nothing(studio, tiny_model_dir, capsys):
    """`studio cancel` looked a judge job up among the runs ("no run with id"): a long job held the queue,
    and its dataset could not be deleted, with no way to stop it."""
    from studio import judge_service
    from studio.cli import main

    before = {d["id"] for d in studio.list_datasets()}
    job_id = judge_service.start(studio, str(PAIRS), str(tiny_model_dir), rationale=True)
    assert main(["cancel", job_id, "--home", str(studio.home)]) == 0
    # (what it read before the cancel, if anything, is kept for the next job with this judge)
    assert capsys.readouterr().out.strip() in (
        f"cancel requested for {job_id}: it stops without making a dataset",
        f"cancel requested for {job_id}: it stops without making a dataset; the pairs it has read are kept for the "
        "next job with the same judge")
    found = judge_service.wait(studio, job_id, poll_s=0.2)
    assert found["status"] == "cancelled"
    assert not (studio.run_dir(job_id) / "judged.jsonl").exists()
    assert {d["id"] for d in studio.list_datasets()} - before == {studio.resolve_dataset(str(PAIRS))["id"]}
    assert judge_service.finished_uncollected(studio) == [] and judge_service.active(studio) is None
    with pytest.raises(judge_service.JudgeError, match=f"^judge job {job_id} is cancelled; only a queued or running"):
        judge_service.cancel(studio, job_id)


def test_a_judge_that_cannot_choose_or_a_failed_start_leaves_no_job(studio, tiny_model_dir, tmp_path, monkeypatch):
    """A judge whose tokenizer has no chat template was queued, loaded, and failed with "ValueError: …"; a
    start whose worker could not be started left a job 'queued' for ever, its dataset in use."""
    from studio import judge_service

    from tests.conftest import without_chat_template

    plain = without_chat_template(tiny_model_dir, tmp_path / "no-template")
    with pytest.raises(judge_service.JudgeError) as err:
        judge_service.start(studio, str(PAIRS), str(plain))
    assert str(err.value).startswith("the judge model's tokenizer has no chat template; pick an instruction-tuned")
    with pytest.raises(judge_service.JudgeError, match=r"^the number of pairs to judge is -3; judge at least one"):
        judge_service.start(studio, str(PAIRS), str(tiny_model_dir), limit=-3)

    def no_worker(*_args, **_kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(studio, "spawn", no_worker)
    with pytest.raises(OSError):
        judge_service.start(studio, str(PAIRS), str(tiny_model_dir))
    assert not [p for p in studio.runs_dir.iterdir() if p.name.startswith("j")]
    from studio import dataset_service

    assert dataset_service.users(studio, studio.resolve_dataset(str(PAIRS))["id"])["active"] == []


def test_a_job_nobody_waited_for_becomes_one_dataset_with_its_held_out_pairs(studio, tiny_model_dir):
    """The page made the judged dataset only while the tab that started the job stayed open: a reload, and the
    job's pairs never became one. The pairs an import set aside were not judged at all, and a judged copy of a
    dataset near the upload limit (larger: the judge's numbers added to each row) was refused."""
    from pipelines.importer import ImportOptions
    from studio import judge_service

    source = studio.import_dataset(PAIRS, name="quill", options=ImportOptions(heldout=0.25))
    assert source["meta"]["heldout_rows"] == 3
    studio.max_upload_bytes = PAIRS.stat().st_size + 100
    job_id = judge_service.start(studio, source["id"], str(tiny_model_dir), both_orders=False)
    assert judge_service.active(studio) == job_id
    assert judge_service.wait(studio, job_id, poll_s=0.2)["status"] == "completed"
    assert judge_service.active(studio) is None and judge_service.finished_uncollected(studio) == [job_id]
    [(collected, row)] = judge_service.collect_finished(studio)
    assert collected == job_id and row["rows"] == 12 and row["meta"]["heldout_rows"] == 3
    # the same pairs set aside as in the source (drawn again, pairs a run trained on were held out)
    from pipelines.data import load_rows

    def prompts(path):
        return sorted(r["prompt"][0]["content"] if isinstance(r["prompt"], list) else r["prompt"]
                      for r in load_rows(path))

    held = Path(source["path"]).with_name("heldout.parquet")
    assert prompts(Path(row["path"]).with_name("heldout.parquet")) == prompts(held)
    assert row["meta"]["origin"]["job"] == job_id and row["meta"]["origin"]["both_orders"] is False
    assert judge_service.collect_finished(studio) == [] and judge_service.finished_uncollected(studio) == []
    # a job collected before its collection was written down is not announced again, nor made twice
    (studio.run_dir(job_id) / judge_service.COLLECTED).unlink()
    assert judge_service.collect_finished(studio) == []
    assert [d["id"] for d in studio.list_datasets() if d["name"].startswith("quill judged")] == [row["id"]]
    assert not judge_service.both_orders(studio, job_id)
    # ... nor brought back once deleted (the look for finished jobs made it again, and announced it)
    from studio import dataset_service

    dataset_service.delete(studio, row["id"])
    (studio.run_dir(job_id) / judge_service.COLLECTED).unlink()
    assert judge_service.collect_finished(studio) == []
    assert not [d for d in studio.list_datasets() if d["name"].startswith("quill judged")]
    # a folder left by a start whose worker never ran reads as queued: not followed for ever by every page
    stale = studio.runs_dir / "j-never-started"
    stale.mkdir()
    (stale / "job.json").write_text(json.dumps({"id": stale.name, "created": 1.0}))
    assert judge_service.active(studio) is None


def test_judging_again_with_the_same_judge_asks_only_the_pairs_not_read_before(studio, tiny_model_dir, tmp_path):
    """A cancelled or failed job's readings were lost with it, and the same pairs judged again with another bar
    to reverse a choice were all read again: now the next job with the same judge takes up what was read."""
    import shutil

    from studio import judge_service

    first = judge_service.start(studio, str(PAIRS), str(tiny_model_dir), both_orders=False, limit=3)
    assert judge_service.wait(studio, first, poll_s=0.2)["status"] == "completed"
    # a second job over more pairs reads only those the first had not
    more = judge_service.start(studio, str(PAIRS), str(tiny_model_dir), both_orders=False, limit=5)
    assert judge_service.wait(studio, more, poll_s=0.2)["status"] == "completed"
    assert judge_service.kept_readings(studio, more) == 2  # only the pairs the first had not read
    summary = judge_service.state(studio, more)["summary"]
    assert summary["reused"] == 3 and summary["pairs"] == 5

    again = judge_service.start(studio, str(PAIRS), str(tiny_model_dir), both_orders=False, limit=6, min_sure=0.9)
    job = json.loads((studio.run_dir(again) / "job.json").read_text())
    assert job["earlier_readings"] == [str(studio.run_dir(j) / "readings.jsonl") for j in (first, more)]
    found = judge_service.wait(studio, again, poll_s=0.2)
    assert found["status"] == "completed" and found["summary"]["reused"] == 5
    text = judge_service.agreement_text(found["summary"], both_orders=False)
    assert "5 of the pairs were read by an earlier job with this judge (one that stopped, or the same pairs " \
           "judged before) and not asked again" in text
    row = judge_service.collect(studio, again)
    assert row["meta"]["origin"]["reused"] == 5 and row["meta"]["origin"]["min_sure"] == 0.9

    # a job started while another with this judge is still queued takes up what that one reads first
    queued = judge_service.start(studio, str(PAIRS), str(tiny_model_dir), both_orders=False, limit=8)
    behind = judge_service.start(studio, str(PAIRS), str(tiny_model_dir), both_orders=False, limit=8, min_sure=0.8)
    listed = json.loads((studio.run_dir(behind) / "job.json").read_text())["earlier_readings"]
    assert listed[-1] == str(studio.run_dir(queued) / "readings.jsonl")
    assert judge_service.wait(studio, queued, poll_s=0.2)["summary"]["reused"] == 6
    assert judge_service.wait(studio, behind, poll_s=0.2)["summary"]["reused"] == 8

    # another judge (a copy elsewhere is another model to the log) reads every pair itself
    other = tmp_path / "other-judge"
    shutil.copytree(tiny_model_dir, other)
    alone = judge_service.start(studio, str(PAIRS), str(other), both_orders=False, limit=2)
    assert json.loads((studio.run_dir(alone) / "job.json").read_text())["earlier_readings"] == []
    assert judge_service.wait(studio, alone, poll_s=0.2)["summary"]["reused"] == 0


def test_a_stopped_job_says_what_it_kept(studio, tiny_model_dir):
    from studio import judge_service

    job_id = judge_service.start(studio, str(PAIRS), str(tiny_model_dir), both_orders=False, limit=1)
    assert judge_service.wait(studio, job_id, poll_s=0.2)["status"] == "completed"
    assert judge_service.stopped_text(studio, job_id, "cancelled") == (
        "no dataset was made; the 1 pair it read is kept, so judging these pairs again with the same judge goes on "
        "from where it stopped")
    (studio.run_dir(job_id) / "readings.jsonl").unlink()
    assert judge_service.stopped_text(studio, job_id, "failed") == "no pairs were kept"


def test_the_judge_panel_says_before_a_press_that_it_needs_pairs(studio):
    """An sft dataset picked in the Data tab offered *Judge the pairs*, which refused only once pressed."""
    from studio.app import build_app
    from tests.conftest import FAQ

    faq, pairs = studio.import_dataset(FAQ, name="faq"), studio.import_dataset(PAIRS, name="pairs")
    on_chosen = next(f for f in build_app(studio).fns.values() if f.name == "on_chosen")
    said, button = on_chosen.fn(faq["id"], None)
    assert said == ("*faq* holds sft data: a judge compares the two answers of preference pairs (prompt, chosen, "
                    "rejected); pick such a dataset above.") and button["interactive"] is False
    assert on_chosen.fn(pairs["id"], None) == ("", {"interactive": True, "__type__": "update"})
    assert on_chosen.fn(pairs["id"], "j-at-work")[1]["interactive"] is False  # (a job followed keeps it off)
