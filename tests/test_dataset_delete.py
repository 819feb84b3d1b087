"""Deleting a dataset: refused for a bundled sample and while a run or judge job reads it; then the
studio's copy goes and the dataset leaves every list, while the runs that learned from it keep their
models and still name it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipelines.data import DataError
from pipelines.importer import IMPORTING_PREFIX, ImportOptions
from studio import dataset_service
from studio.core import SAMPLES_DIR, RunError, Studio, dataset_title, is_sample
from studio.store import DatasetGone
from tests.test_cli import studio_cmd
from tests.test_jobs import wait_until


def faq_copy(studio, name="faq"):
    """The FAQ sample imported as the user's own dataset (a bundled sample is not deleted)."""
    return studio.import_dataset(SAMPLES_DIR / "quillpad_faq.jsonl", name=name)


def test_deletion_waits_for_runs_then_keeps_their_history(studio, tiny_model_dir, tiny_params, monkeypatch):
    from components import dataset_delete, runs_panel
    from studio import chat_service

    row = faq_copy(studio)
    folder = Path(row["path"]).parent
    done = studio.start_run(model=str(tiny_model_dir), dataset=row["id"], method="lora",
                            params={**tiny_params, "num_train_epochs": 0.15})
    stopped = studio.start_run(model=str(tiny_model_dir), dataset=row["id"], method="lora",
                               params={**tiny_params, "num_train_epochs": 3, "save_steps": 2})

    # both read it now: refused, with nothing touched
    busy = (f"dataset 'faq' is in use by runs {done}, {stopped}: wait for them to end or cancel them, then "
            "delete it")
    with pytest.raises(DataError) as refused:
        dataset_service.delete(studio, row["id"])
    assert str(refused.value) == busy
    assert folder.is_dir() and studio.store.get_dataset(row["id"]) is not None
    # the Data tab says so at the first press, without asking to confirm
    box, question, said, _listed, asked = dataset_delete.ask(studio, row["id"], list)
    assert said == f"**Not deleted:** {busy}." and asked is None and box["visible"] is False

    assert studio.wait(done, poll_s=0.3)["status"] == "completed"
    wait_until(lambda: studio.get_run(stopped)["step"] >= 2)
    studio.cancel(stopped)
    assert studio.wait(stopped, poll_s=0.3)["status"] == "cancelled"

    found = dataset_service.users(studio, row["id"])
    assert found == {"active": [], "stopped": [stopped], "finished": [done]}
    effects = (f"run {done} keeps its model but cannot be continued; the stopped run {stopped} can no longer "
               "be resumed")
    assert dataset_service.effects(found) == effects
    box, question, said, _listed, asked = dataset_delete.ask(studio, row["id"], list)
    assert box["visible"] is True and asked == row["id"] and said == ""
    assert question == (f"Delete **faq** (120 rows of sft data)? The studio's copy of it is deleted (the file it was "
                        f"imported from is not touched) and it leaves every list; {effects}. This cannot be undone.")

    box, said, shown, asked = dataset_delete.delete(studio, row["id"], lambda: ["the list after"])
    assert said == f"Deleted **faq**: {effects}."
    assert shown["choices"] == ["the list after"] and shown["value"] is None and asked is None
    assert not folder.exists() and not list(folder.parent.glob(f"{IMPORTING_PREFIX}*"))
    assert studio.list_datasets() == [] and studio.store.get_dataset(row["id"]) is None
    assert (SAMPLES_DIR / "quillpad_faq.jsonl").is_file()  # the file it came from stays
    # a second press of "Delete it", sent before the first one's answer: nothing new is said
    _box, said, shown, _asked = dataset_delete.delete(studio, row["id"], lambda: [])
    assert said == dataset_delete.gr.skip() and shown["choices"] == []
    # a page that still lists it, later (another window deleted it): it says where it went
    monkeypatch.setattr(dataset_delete, "AGAIN_WITHIN_S", 0)
    elsewhere = "**faq** was deleted (in another window or from the command line)."
    assert dataset_delete.delete(studio, row["id"], lambda: [])[1] == elsewhere
    assert dataset_delete.ask(studio, row["id"], lambda: [])[2] == elsewhere

    # what learned from it still names it; what needs its rows says why it cannot
    assert studio.dataset_titles()[row["id"]] == "faq (dataset deleted)"
    assert f"Tuned: LoRA on faq (dataset deleted) on {tiny_model_dir} ({done})" in [
        label for label, _value in chat_service.choices(studio)]
    assert studio.result_dir(done).is_dir()
    assert runs_panel.lineage(studio, studio.get_run(done))[1] == ("Learned from **faq** (120 rows of sft data, "
                                                                   "deleted since).")
    # the runs panel offers neither Resume nor Continue for them (Chat and Compare stay)
    for run_id, status in ((stopped, "cancelled"), (done, "completed")):
        facts = runs_panel.button_facts(studio, run_id, status)
        assert facts == (status, "lora", True)
        assert [b["interactive"] for b in runs_panel.button_states(*facts)] == [False, False, False,
                                                                                 status == "completed",
                                                                                 status == "completed"]
    with pytest.raises(RunError) as no_resume:
        studio.resume(stopped)
    assert str(no_resume.value) == (f"run {stopped} trained on dataset 'faq', which was deleted: it cannot be resumed "
                                    "(start a new run on another dataset)")
    assert studio.get_run(stopped)["status"] == "cancelled"
    with pytest.raises(RunError) as no_continue:
        studio.continue_run(done, 1)
    assert str(no_continue.value) == (f"run {done} learned from dataset 'faq', which was deleted: it cannot be "
                                      "continued; to train it further, start a run from its result on another "
                                      "dataset (Train tab)")
    with pytest.raises(DataError, match=r"^dataset 'faq' was deleted already$"):
        dataset_service.delete(studio, row["id"])
    with pytest.raises(DataError, match=rf"^dataset 'faq' \({row['id']}\) was deleted; import it again or pick"):
        studio.start_run(model=str(tiny_model_dir), dataset=row["id"], method="lora", params=tiny_params)

    # the same file imported again is a new dataset; a new studio on the workspace lists only that one
    again = faq_copy(studio)
    assert again["id"] != row["id"] and Path(again["path"]).is_file()
    assert [d["id"] for d in Studio(studio.home).list_datasets()] == [again["id"]]


def test_a_bundled_sample_is_not_deleted(studio, tiny_model_dir, tiny_params):
    from components import data_tab, dataset_delete, form_memory, label_projects, train_tab

    row = studio.resolve_dataset("quillpad_faq")
    said = "'Quillpad support FAQ' is a bundled sample: it ships with the studio and stays on offer in the Train tab"
    with pytest.raises(DataError) as refused:
        dataset_service.delete(studio, row["id"])
    assert str(refused.value) == said
    assert dataset_delete.ask(studio, row["id"], list)[2] == f"**Not deleted:** {said}."
    assert Path(row["path"]).is_file() and studio.store.get_dataset(row["id"])
    # the same file imported with a held-out split is the user's (named after the file, as the sample is)
    theirs = studio.import_dataset(SAMPLES_DIR / "quillpad_faq.jsonl", options=ImportOptions(heldout=0.1))
    assert theirs["name"] == "quillpad_faq" and theirs["id"] != row["id"]
    # and named as theirs: the Data tab listed it as "Sample: Quillpad support FAQ" too, two alike entries
    assert data_tab.dataset_choices(studio) == [(f"quillpad_faq — sft, {theirs['rows']} rows", theirs["id"]),
                                                (f"Sample: Quillpad support FAQ — sft, {row['rows']} rows", row["id"])]
    assert studio.dataset_titles() == {theirs["id"]: "quillpad_faq", row["id"]: "Quillpad support FAQ"}
    # and offered as theirs: the Train and Label tabs left it out (the sample stood for it), and the Train
    # tab's pick after the import came back to the sample, without the held-out split
    assert (f"quillpad_faq ({theirs['rows']} rows)", theirs["id"]) in train_tab.dataset_choices(studio)
    assert (f"quillpad_faq (sft, {theirs['rows']} rows)", theirs["id"]) in label_projects.prompt_datasets(studio)
    assert form_memory.imported_pick(studio, theirs["id"], {}) == {"sft": theirs["id"]}
    assert form_memory.imported_pick(studio, row["id"], {}) == {"sft": "quillpad_faq"}
    # a sample stored by an older studio, whose import options lacked some of today's, is still the sample
    older = {k: v for k, v in row["meta"]["options"].items() if k != "dedupe"}
    assert is_sample({**row, "meta": {**row["meta"], "options": older}})
    # a run on theirs, then theirs deleted: Continue says why not (titling the job's copy of the row, which
    # has no import options, raised KeyError)
    done = studio.start_run(model=str(tiny_model_dir), dataset=theirs["id"], method="lora",
                            params={**tiny_params, "num_train_epochs": 0.1})
    assert studio.wait(done, poll_s=0.3)["status"] == "completed"
    dataset_service.delete(studio, theirs["id"])
    assert [d["id"] for d in studio.list_datasets()] == [row["id"]]
    with pytest.raises(RunError, match=rf"^run {done} learned from dataset 'quillpad_faq', which was deleted"):
        studio.continue_run(done, 1)


def test_a_start_that_looked_before_a_deletion_starts_nothing(studio, tiny_model_dir, tiny_params, monkeypatch):
    """A start reads its dataset, then another window (or process) deletes it before the run's row is
    written: refused in one sentence, with no run folder or row left behind."""
    row = faq_copy(studio)
    looked = studio.resolve_dataset(row["id"])
    dataset_service.delete(studio, row["id"])
    monkeypatch.setattr(studio, "resolve_dataset", lambda ref: looked)  # what the start read before
    with pytest.raises(DataError, match=r"^dataset 'faq' was deleted; import it again or pick another dataset$"):
        studio.start_run(model=str(tiny_model_dir), dataset=row["id"], method="lora", params=tiny_params)
    assert studio.store.list_runs() == [] and list(studio.runs_dir.iterdir()) == []


def test_the_catalogue_keeps_runs_and_deletions_apart_across_processes(studio):
    """Another process (the command line) starting a run or deleting meanwhile: the catalogue's own
    statements refuse the second, whatever either process looked at before."""
    row = faq_copy(studio)
    studio.store.add_run(id="r-other", method="lora", model="default", dataset_id=row["id"], status="queued",
                         params={})
    assert studio.store.mark_dataset_deleted(row["id"]) is False  # a run of another process reads it
    studio.store.update_run_status("r-other", "completed", None)
    assert studio.store.mark_dataset_deleted(row["id"]) is True
    with pytest.raises(DatasetGone):
        studio.store.add_run(id="r-late", method="lora", model="default", dataset_id=row["id"], status="queued",
                             params={})
    assert studio.store.get_run("r-late") is None


def test_a_judge_job_reading_the_pairs_holds_them(studio, tiny_model_dir):
    from studio import judge_service

    row = studio.import_dataset(SAMPLES_DIR / "quillpad_preferences.jsonl", name="pairs")
    job = judge_service.start(studio, row["id"], str(tiny_model_dir), limit=2)
    with pytest.raises(DataError) as refused:
        dataset_service.delete(studio, row["id"])
    assert str(refused.value) == (f"dataset 'pairs' is in use by judge job {job}: wait for it to end or cancel it, "
                                  "then delete it")
    assert Path(row["path"]).is_file()
    wait_until(lambda: studio.job_state(job, worker="judge process")["status"] == "completed")
    dataset_service.delete(studio, row["id"])
    assert not Path(row["path"]).exists() and studio.list_datasets() == []
    with pytest.raises(DataError, match=r"^dataset 'pairs' \(d\S+\) was deleted; "):  # refused before any job
        judge_service.start(studio, row["id"], str(tiny_model_dir), limit=2)
    assert sorted(p.name for p in studio.runs_dir.glob("j*")) == [job]


def test_a_deletion_cut_short_is_finished_by_the_next_start(studio):
    """Killed after the catalogue's mark (made first) and before the folder went, or while it was being
    removed: the dataset is off every list at once, and what was left goes when the studio starts again."""
    row = faq_copy(studio)
    assert studio.store.mark_dataset_deleted(row["id"])  # (then killed)
    assert studio.list_datasets() == [] and Path(row["path"]).is_file()
    aside = studio.datasets_dir / f"{IMPORTING_PREFIX}deleted-d-other-abc123"  # killed while removing it
    aside.mkdir()
    (aside / "data.parquet").write_bytes(b"rows")
    os.utime(aside, (time.time() - 120, time.time() - 120))
    Studio(studio.home)
    assert not Path(row["path"]).parent.exists() and not aside.exists()
    assert sorted(p.name for p in studio.datasets_dir.iterdir()) == []


def test_cli_deletes_with_what_it_touched(tmp_path):
    home = tmp_path / "home"
    notes = tmp_path / "notes.csv"
    notes.write_text("prompt,completion\nWhat is it?,A notebook.\nHow long?,19 days.\n")
    studio = Studio(home)
    dataset_id = studio.import_dataset(notes)["id"]
    sample_id = studio.resolve_dataset("quillpad_faq")["id"]
    done = studio_cmd(home, "data", "delete", dataset_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"deleted notes ({dataset_id}, 2 rows): no run learned from it"
    assert dataset_id not in studio_cmd(home, "data", "list").stdout
    for refused, said in ((dataset_id, "dataset 'notes' was deleted already"),
                          (sample_id, f"'{dataset_title(studio.store.get_dataset(sample_id))}' is a bundled sample")):
        again = studio_cmd(home, "data", "delete", refused)
        assert again.returncode != 0 and again.stdout == ""
        assert said in again.stderr.strip().splitlines()[-1]
    shown = studio_cmd(home, "data", "show", dataset_id)
    assert shown.returncode != 0 and "dataset 'notes' was deleted already (see 'studio data list')" in shown.stderr


def test_a_dataset_folder_the_catalogue_does_not_name_is_put_back_in_it(studio, tmp_path):
    """An import stopped between putting its folder in place and writing its row left a whole dataset nothing
    named; a catalogue lost or reset lost every dataset's row. Each is put back from its own meta.json, never
    removed; a young folder (an import in another process, about to write its row) is left alone."""
    import shutil

    kept = studio.import_dataset(SAMPLES_DIR / "quillpad_faq.jsonl")
    lost = studio.import_dataset(SAMPLES_DIR / "quillpad_preferences.jsonl", name="prefs")
    folder = Path(lost["path"]).parent
    with studio.store._connect() as db:  # (as a catalogue that lost the row)
        db.execute("DELETE FROM datasets WHERE id = ?", (lost["id"],))
    young = studio.datasets_dir / "d20261206-000001-beef"
    shutil.copytree(folder, young)
    old = time.time() - 3600
    os.utime(folder, (old, old))
    junk = studio.datasets_dir / "notes"
    junk.mkdir()
    os.utime(junk, (old, old))
    Studio(studio.home)
    back = studio.store.get_dataset(lost["id"])
    assert back is not None and back["kind"] == "preference" and back["rows"] == lost["rows"]
    assert back["path"] == lost["path"] and back["source_sha256"] == lost["source_sha256"]
    assert young.exists() and studio.store.get_dataset(young.name) is None
    assert junk.exists() and Path(kept["path"]).exists()
    assert sorted(d["id"] for d in studio.list_datasets()) == sorted([kept["id"], lost["id"]])
