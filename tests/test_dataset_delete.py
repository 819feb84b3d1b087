"""Deleting a dataset: refused while a run or judge job reads it, then its files go and it leaves every
list, while the runs that learned from it keep their models and still name it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipelines.data import DataError
from pipelines.importer import IMPORTING_PREFIX
from studio.core import RunError, Studio, dataset_title, deletion_effects
from tests.test_cli import studio_cmd
from tests.test_jobs import wait_until


def test_deletion_waits_for_runs_then_keeps_their_history(studio, tiny_model_dir, tiny_params):
    from components import dataset_delete, runs_panel
    from studio import chat_service

    row = studio.resolve_dataset("quillpad_faq")
    folder = Path(row["path"]).parent
    done = studio.start_run(model=str(tiny_model_dir), dataset=row["id"], method="lora",
                            params={**tiny_params, "num_train_epochs": 0.15})
    stopped = studio.start_run(model=str(tiny_model_dir), dataset=row["id"], method="lora",
                               params={**tiny_params, "num_train_epochs": 1, "save_steps": 2})

    # both read it now: refused, with nothing touched
    busy = (f"dataset 'Quillpad support FAQ' is in use by runs {done}, {stopped}: wait for them to end or "
            "cancel them, then delete it")
    with pytest.raises(DataError) as refused:
        studio.delete_dataset(row["id"])
    assert str(refused.value) == busy
    assert folder.is_dir() and studio.store.get_dataset(row["id"]) is not None
    # the Data tab says so at the first press, without asking to confirm
    box, question, said, asked = dataset_delete.ask(studio, row["id"])
    assert said == f"**Cannot delete it now:** {busy}." and asked is None and box["visible"] is False

    assert studio.wait(done, poll_s=0.3)["status"] == "completed"
    wait_until(lambda: studio.get_run(stopped)["step"] >= 2)
    studio.cancel(stopped)
    assert studio.wait(stopped, poll_s=0.3)["status"] == "cancelled"

    users = studio.dataset_users(row["id"])
    assert users == {"active": [], "stopped": [stopped], "finished": [done]}
    effects = (f"run {done} keeps its model but cannot be continued; the stopped run {stopped} can no longer "
               "be resumed")
    assert deletion_effects(users) == effects
    box, question, said, asked = dataset_delete.ask(studio, row["id"])
    assert box["visible"] is True and asked == row["id"] and said == ""
    assert question == (f"Delete **Quillpad support FAQ** (120 rows of sft data)? Its files leave this machine and "
                        f"it leaves every list; {effects}. This cannot be undone.")

    box, said, shown, asked = dataset_delete.delete(studio, row["id"], lambda: ["the list after"])
    assert said == f"Deleted **Quillpad support FAQ**: {effects}."
    assert shown["choices"] == ["the list after"] and shown["value"] is None and asked is None
    assert not folder.exists() and not list(folder.parent.glob(f"{IMPORTING_PREFIX}*"))
    assert studio.list_datasets() == [] and studio.store.get_dataset(row["id"]) is None
    # a second press of "Delete it", sent before the first one's answer: nothing new is said
    assert dataset_delete.delete(studio, row["id"], lambda: [])[1:3] == (dataset_delete.gr.skip(),) * 2

    # what learned from it still names it; what needs its rows says why it cannot
    assert studio.dataset_titles()[row["id"]] == "Quillpad support FAQ (deleted)"
    assert f"Tuned: LoRA on Quillpad support FAQ (deleted) on {tiny_model_dir} ({done})" in [
        label for label, _value in chat_service.choices(studio)]
    assert studio.result_dir(done).is_dir()
    assert runs_panel.lineage(studio, studio.get_run(done))[1] == ("Learned from **Quillpad support FAQ** (120 rows "
                                                                   "of sft data, deleted since).")
    with pytest.raises(RunError) as no_resume:
        studio.resume(stopped)
    assert str(no_resume.value) == (f"run {stopped} trained on dataset 'Quillpad support FAQ', which was deleted: it "
                                    "cannot be resumed (start a new run on another dataset)")
    assert studio.get_run(stopped)["status"] == "cancelled"
    with pytest.raises(DataError) as no_continue:
        studio.continue_run(done, 1)
    assert str(no_continue.value) == (f"dataset 'Quillpad support FAQ' ({row['id']}) was deleted; import it again "
                                      "or pick another dataset")
    with pytest.raises(DataError, match=r"^dataset 'Quillpad support FAQ' is deleted already$"):
        studio.delete_dataset(row["id"])

    # the sample picked again is imported afresh; a new studio on the workspace lists only that one
    again = studio.resolve_dataset("quillpad_faq")
    assert again["id"] != row["id"] and Path(again["path"]).is_file()
    assert [d["id"] for d in Studio(studio.home).list_datasets()] == [again["id"]]


def test_a_judge_job_reading_the_pairs_holds_them(studio, tiny_model_dir):
    from studio import judge_service

    row = studio.resolve_dataset("quillpad_preferences")
    job = judge_service.start(studio, row["id"], str(tiny_model_dir), limit=2)
    with pytest.raises(DataError) as refused:
        studio.delete_dataset(row["id"])
    assert str(refused.value) == (f"dataset '{dataset_title(row['name'])}' is in use by judge job {job}: wait for it "
                                  "to end or cancel it, then delete it")
    assert Path(row["path"]).is_file()
    wait_until(lambda: studio.job_state(job, worker="judge process")["status"] == "completed")
    studio.delete_dataset(row["id"])
    assert not Path(row["path"]).exists() and studio.list_datasets() == []


def test_a_deletion_cut_short_is_finished_by_the_next_start(studio):
    """Killed between moving the folder aside and the catalogue's mark: the row is still there (no
    half-deleted dataset on a list) and the folder set aside goes when the studio starts again."""
    aside = studio.datasets_dir / f"{IMPORTING_PREFIX}deleted-d-gone"
    aside.mkdir()
    (aside / "data.parquet").write_bytes(b"rows")
    os.utime(aside, (time.time() - 120, time.time() - 120))
    Studio(studio.home)
    assert not aside.exists()


def test_cli_deletes_with_what_it_touched(tmp_path):
    home = tmp_path / "home"
    dataset_id = Studio(home).resolve_dataset("quillpad_faq")["id"]
    done = studio_cmd(home, "data", "delete", dataset_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"deleted quillpad_faq ({dataset_id}, 120 rows): no run learned from it"
    assert "no datasets yet" in studio_cmd(home, "data", "list").stdout
    again = studio_cmd(home, "data", "delete", dataset_id)
    assert again.returncode != 0 and again.stdout == ""
    assert again.stderr.strip().endswith("dataset 'Quillpad support FAQ' is deleted already")
