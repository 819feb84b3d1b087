"""The app builds on a temporary workspace, with a widget for every declared parameter."""

from __future__ import annotations

import json

import gradio as gr

from pipelines.methods import METHODS, describe
from studio.app import build_app
from tests.conftest import FAQ, ROOT


def test_app_builds_with_generated_form(studio):
    app = build_app(studio)
    assert isinstance(app, gr.Blocks)
    elem_ids = {c.get("props", {}).get("elem_id") for c in app.config["components"]}
    for method in METHODS.values():
        for info in describe(method.params):
            assert f"param-{info.name}" in elem_ids, info.name
    assert {"start-training", "runs-table", "train-dataset"} <= elem_ids


def test_app_holds_no_state_between_workspaces(tmp_path):
    from studio.core import Studio

    a, b = Studio(tmp_path / "a"), Studio(tmp_path / "b")
    a.import_dataset(__import__("tests.conftest", fromlist=["FAQ"]).FAQ, name="mine")
    from components.train_tab import dataset_choices

    assert ("mine (120 rows)", a.store.list_datasets()[0]["id"]) in dataset_choices(a)
    assert all(value != a.store.list_datasets()[0]["id"] for _label, value in dataset_choices(b))


def test_compare_lists_only_settings_that_differ_and_overlays_curves(studio):
    import json

    from components.charts import curves_figure
    from components.runs_panel import config_diff, run_titles

    dataset = studio.import_dataset(__import__("tests.conftest", fromlist=["FAQ"]).FAQ)
    for run_id, r, epochs in (("ra", 8, 10.0), ("rb", 16, 8.0)):
        params = {"r": r, "learning_rate": 0.001, "num_train_epochs": epochs}
        studio.store.add_run(id=run_id, method="lora", model="default", dataset_id=dataset["id"],
                             status="completed", params=params)
        run_dir = studio.run_dir(run_id)
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text("".join(
            json.dumps({"step": s, "loss": 2.0 / s, "learning_rate": 1e-3}) + "\n" for s in (1, 2, 3)))
    # named as the Train form names them; 10 epochs read as 10, not 10.0
    assert config_diff(studio, ["ra", "rb"]) == [["Epochs", "10", "8"], ["Rank", "8", "16"]]
    fig = curves_figure({"ra": [{"step": 1, "loss": 1.0}], "rb": [{"step": 1, "loss": 2.0}]},
                        run_names=run_titles(studio, ["ra", "rb"]))
    assert [(t.legendgrouptitle.text, t.name) for t in fig.data] == [("ra: epochs 10, rank 8", "training loss"),
                                                                     ("rb: epochs 8, rank 16", "training loss")]
    # two settings one label names: GRPO's beta and PPO's kl_coef are both the "KL leash" (GRPO's went missing)
    for run_id, method, params in (("rg", "grpo", {"beta": 0.04}), ("rp", "ppo", {"kl_coef": 0.05})):
        studio.store.add_run(id=run_id, method=method, model="default", dataset_id=dataset["id"],
                             status="completed", params=params)
    diff = config_diff(studio, ["rg", "rp"])
    assert ["KL leash (beta)", "0.04", "-"] in diff and ["KL leash (kl_coef)", "-", "0.05"] in diff


def test_train_tab_offers_only_datasets_the_method_can_use(studio):
    from components.train_tab import dataset_choices, model_choices

    pairs = studio.import_dataset(__import__("tests.conftest", fromlist=["ROOT"]).ROOT / "assets" / "samples"
                                  / "quillpad_preferences.jsonl", name="pairs")
    lora, dpo, kto = (dict((v, k) for k, v in dataset_choices(studio, m)) for m in ("lora", "dpo", "kto"))
    assert "quillpad_faq" in lora and pairs["id"] not in lora and "signoff_preferences" not in lora
    assert pairs["id"] in dpo and "signoff_preferences" in dpo and "quillpad_faq" not in dpo
    assert kto == {}
    assert model_choices(studio) == [("Built-in SmolLM2-135M-Instruct (default)", "default")]


def test_progress_keeps_the_step_while_the_run_evaluates_between_steps():
    import time

    from components.runs_panel import progress_html

    row = {"status": "running", "step": 6, "max_steps": 20, "started": time.time() - 30,
           "training_since": time.time() - 20, "first_step": 0, "phase": "evaluating on the held-out rows"}
    shown = progress_html(row, [])
    assert "step 6 of 20 · 30%" in shown and shown.endswith("· evaluating on the held-out rows</span></div>")
    loading = progress_html({**row, "step": 0, "phase": "loading the model and the data"}, [])
    assert "loading the model and the data… · elapsed" in loading and "· 20 training steps to go" in loading
    after = progress_html({**row, "step": 20, "phase": "measuring the model after training"}, [])
    assert "measuring the model after training… · elapsed" in after and after.endswith(
        " · all 20 training steps done</span></div>")
    # a Cancel shows at once, before the worker stops at the end of its step
    stopping = progress_html({**row, "phase": "training", "cancelling": True}, [])
    assert "cancelling: saving a checkpoint at the end of step 7, then it stops…" in stopping
    last = progress_html({**row, "step": 19, "phase": "training", "cancelling": True}, [])
    assert "finishing: the last step is under way, so the run completes and saves its result…" in last


def test_the_progress_says_when_other_programs_slow_the_run():
    """A walkthrough's run took 2:56 beside its estimate of about a minute: other programs kept the CPU busy,
    and only a log line that had scrolled away said so."""
    import time

    from components.runs_panel import progress_html

    row = {"status": "running", "step": 6, "max_steps": 20, "started": time.time() - 30,
           "training_since": time.time() - 20, "first_step": 0, "phase": "training"}
    busy = [{"step": s, "loss": 1.0, "time": time.time() - 20 + s, "others_cores": c}
            for s, c in ((1, 0.2), (2, 1.1), (3, 1.3), (4, 1.0))]
    assert progress_html(row, busy).endswith(" · slowed: other programs are using 1.1 CPU cores</span></div>")
    # the studio's own page and server (a few tenths of a core) are not "other programs"
    calm = [{**m, "others_cores": 0.3} for m in busy]
    assert "other programs" not in progress_html(row, calm)
    done = progress_html({**row, "status": "completed", "step": 20, "finished": time.time()}, busy)
    assert done.endswith(" · other programs used 0.9 CPU cores on average meanwhile (it ran slower than it "
                         "can)</span></div>")


def test_the_preference_summary_says_on_how_many_pairs_it_stands():
    from components.runs_panel import preference_summary

    one = {"eval_rewards/accuracies_before": 0.0, "eval_rewards/accuracies_after": 1.0, "eval_rows": 1}
    assert preference_summary(one) == ("Held-out preference accuracy (preferred answer scored higher): 0% before, "
                                       "100% after on 1 held-out pair (few: each pair moves it by 100 points)")
    # DPO from its reference: every pair level before the first step, which is no preference, not 0% right
    level = {**one, "eval_rewards/margins_before": 0.0}
    assert preference_summary(level).startswith("Held-out preference accuracy (preferred answer scored higher): no "
                                                "preference before (the model started as its reference: every pair "
                                                "scored level), 100% after on 1 held-out pair")
    many = {**one, "eval_rewards/accuracies_after": 0.75, "eval_rows": 40, "eval_rewards/margins_after": 0.5}
    assert preference_summary(many).endswith("75% after on 40 held-out pairs; reward margin 0.50 (higher = "
                                             "clearer preference)")


def test_loading_the_page_keeps_a_chat_model_picked_while_it_loaded(studio):
    """The page's load answer used to set both chat pickers to the default pair: a model picked while it
    was on its way (a blind battle's side A, in the browser test) was put back to the built-in model.
    Unless the default changed (a run finished since the page was made), it sends no picker value."""
    app = build_app(studio)
    (load,) = [f for f in app.fns.values() if f.name == "on_load"]
    *_, model_a, model_b, _results, _note, _scorer = load.fn(None, "base:default", "base:default", {}, {})
    assert "value" not in model_a and "value" not in model_b
    assert model_a["choices"] and model_b["choices"]


def test_loading_the_page_puts_up_the_chat_pair_this_browser_kept(studio, tiny_model_dir):
    """A reload put the default pair up again: a comparison picked by hand had to be picked anew. The
    pair the browser kept comes back while both sides can still be chatted with."""
    app = build_app(studio)
    (load,) = [f for f in app.fns.values() if f.name == "on_load"]
    typed = f"base:{tiny_model_dir}"
    *_, model_a, model_b, _results, _note, _scorer = load.fn(None, "base:default", "base:default", {},
                                                             {"a": typed, "b": "base:default"})
    assert (model_a["value"], model_b["value"]) == (typed, "base:default")
    # shown already (the page kept it): nothing sent, so a pick made while the load was on its way stays
    *_, model_a, model_b, _results, _note, _scorer = load.fn(None, typed, "base:default", {},
                                                             {"a": typed, "b": "base:default"})
    assert "value" not in model_a and "value" not in model_b
    # a folder typed without 'base:' (the picker takes one) comes back too
    *_, model_a, _model_b, _results, _note, _scorer = load.fn(None, "base:default", "base:default", {},
                                                              {"a": str(tiny_model_dir), "b": "base:default"})
    assert model_a["value"] == str(tiny_model_dir)
    # a run that is gone, a folder deleted since (an exported model), one model against itself, or nothing
    # kept: the page's own pair stays
    for kept in ({"a": "run:gone", "b": "base:default"}, {"a": "base:default", "b": "base:default"}, {},
                 {"a": "", "b": "base:default"}, {"a": f"base:{tiny_model_dir}-deleted", "b": "base:default"}):
        *_, model_a, model_b, _results, _note, _scorer = load.fn(None, "base:default", "base:default", {}, kept)
        assert "value" not in model_a and "value" not in model_b, kept


def test_opening_train_estimates_once_the_model_waited_for_is_ready(studio, tiny_model_dir):
    """The line said the estimate waits for the built-in model; once it is ready (prepared by a first look
    at a dataset, here a model that needs none), opening Train estimates instead of waiting for an edit."""
    from components import train_tab

    app = build_app(studio)
    (fn,) = [f for f in app.fns.values() if f.name == "estimate_once_prepared"]
    values = [c.value for c in fn.inputs[4:]]  # shown line, model, dataset, method, then each setting as drawn
    line = fn.fn(None, train_tab.NOT_PREPARED, str(tiny_model_dir), None, "lora", *values)
    assert line != train_tab.NOT_PREPARED and "GB" in line
    assert not isinstance(fn.fn(None, "Peak memory ...", str(tiny_model_dir), None, "lora", *values), str)  # shown: kept


def test_opening_the_data_tab_the_first_time_shows_the_newest_dataset(studio, tmp_path, tiny_model_dir):
    """A browser's first visit showed an empty Data tab until a dataset was picked (a later visit showed the
    last one looked at). Opening the tab with none shown puts up the newest, unless this browser kept one
    the page's load puts back, or the tokens would be counted by the built-in model not prepared yet (its
    conversion would start for a person passing through)."""
    app = build_app(studio)
    (opened,) = [f for f in app.fns.values() if f.name == "<lambda>" and len(f.inputs) == 3
                 and f.inputs[1].__class__.__name__ == "BrowserState" and f.outputs[0] is f.inputs[0]]
    model = str(tiny_model_dir)
    assert "value" not in opened.fn(None, {}, model)  # no dataset yet: nothing to show
    older = studio.import_dataset(FAQ, name="older")
    (tmp_path / "newer.jsonl").write_text(FAQ.read_text().replace("Quillpad", "Inkpad"))
    newer = studio.import_dataset(tmp_path / "newer.jsonl")
    # nothing kept, a dataset deleted elsewhere since, or the picker cleared (a dataset deleted here)
    for first_visit in ({}, None, {"dataset": "gone-since"}, {"dataset": None}):
        assert opened.fn(None, first_visit, model)["value"] == newer["id"], first_visit
    assert "value" not in opened.fn(None, {"dataset": older["id"]}, model)  # the load puts this one back
    assert "value" not in opened.fn(older["id"], {}, model)  # one shown stays
    assert opened.fn("gone-since", {}, model)["value"] is None  # (the view says it was deleted)
    # a bundled sample stored since (the Train tab's estimate reads it on the page's load) comes after them
    sample = studio.resolve_dataset("signoff_preferences")
    assert studio.list_datasets()[0]["id"] == sample["id"]
    assert opened.fn(None, {}, model)["value"] == newer["id"]
    assert "value" not in opened.fn(None, {}, "default")  # the built-in model is not prepared in this workspace
    assert not (studio.model_cache / "smollm2-135m-instruct").exists()


def test_the_load_restores_picks_of_an_earlier_page_never_those_this_page_saved(studio, tiny_model_dir):
    """Picks are saved as soon as they change, also while the page still loads; the load's restore then
    read this page's own picks, saved a moment before the next pick (GRPO chosen after the model was typed),
    and set the method back to LoRA (CI: test_chat_scores_both_replies_with_a_reward_model). The picks
    carry the page that saved them, and the restore brings back only an earlier page's."""
    from types import SimpleNamespace

    import gradio as gr

    app = build_app(studio)
    save = next(f for f in app.fns.values() if f.name == "save_picks")
    (restore,) = [f for f in app.fns.values() if f.name == "restore"]
    this = SimpleNamespace(session_hash="page-now")
    picks = save.fn(str(tiny_model_dir), "signoff_preferences", "dpo", this)
    assert picks == {"model": str(tiny_model_dir), "dataset": "signoff_preferences", "method": "dpo",
                     "page": "page-now"}
    ups = restore.fn(picks, {}, "dpo", this)  # (DPO: the method the page shows)
    assert len(ups) == len(restore.outputs)
    assert all(u == gr.skip() for i, u in enumerate(ups) if i != 1)
    # only the list of the method shown, which the load may have replaced with the list of the method before
    assert "value" not in ups[1] and "signoff_preferences" in [v for _label, v in ups[1]["choices"]]
    assert "quillpad_faq" not in [v for _label, v in ups[1]["choices"]]
    ups = restore.fn({**picks, "page": "page-before"}, {}, "lora", this)  # kept by the page before a reload
    assert ups[0]["value"] == str(tiny_model_dir) and ups[-1]["value"] == "dpo"
    assert ups[1]["value"] == "signoff_preferences"


def test_a_first_chat_with_the_built_in_model_says_it_prepares_it(studio, tiny_model_dir):
    """A first chat converts the built-in model (seconds to a minute) before any reply: the page said nothing
    meanwhile. The chat's notice says so at once; with a model ready to load it says nothing."""
    from components.chat_tab import new_battle
    from studio.method_service import PREPARING

    app = build_app(studio)
    respond = next(f for f in app.fns.values() if f.name == "respond")
    settings = ("", 0.0, 1.0, 8, 1.0, -1)
    replies = respond.fn("Hi", [], [], new_battle(), "base:default", f"base:{tiny_model_dir}", False, *settings)
    assert next(replies)[4] == PREPARING
    replies.close()  # nothing converted: the test workspace keeps the built-in model unprepared
    assert not (studio.model_cache / "smollm2-135m-instruct").exists()
    replies = respond.fn("Hi", [], [], new_battle(), f"base:{tiny_model_dir}", f"base:{tiny_model_dir}", False,
                         *settings)
    assert next(replies)[4] == ""
    assert all(update[4] != PREPARING for update in replies)


def test_a_big_import_says_how_far_it_is_in_the_message_line(studio, tmp_path, monkeypatch):
    """The rows read were sent as a Gradio progress text without a fraction done, which the page never
    shows: a big file imported for minutes under a bare "processing". They now come in the message line."""
    import json

    from pipelines import importer

    monkeypatch.setattr(importer, "PROGRESS_EVERY_S", 0.0)  # every 1,000 rows, however fast
    rows = tmp_path / "many.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
                            for i in range(2500)))
    app = build_app(studio)
    on_import = next(f for f in app.fns.values() if f.name == "on_import")
    values = [c.value for c in on_import.inputs]
    values[0] = str(rows)  # the upload; the sample, name, kind, ... as the page draws them
    said = [update[0] for update in on_import.fn(*values)][1:]  # (the first clears the dataset made)
    import re

    assert [re.sub(r"\(\d+ s\)", "(N s)", text) for text in said[:2]] == [
        "Importing: 1,000 rows read and checked (N s)…", "Importing: 2,000 rows read and checked (N s)…"]
    assert said[2].startswith("Imported **many**") and len(said) == 3
    assert [d["rows"] for d in studio.list_datasets()] == [2500]


def test_import_names_the_broken_row_the_upload_named_not_the_columns(studio, tmp_path):
    """A CSV whose 6th row has one cell: the upload said so, but Import checked the columns first and
    blamed them ("expected columns messages | ..., or map yours (e.g. --map ...)"), with the CLI's syntax.
    Import now says what the upload said, and stores nothing."""
    import os

    rows = ["question,answer"] + [f"Question {i}?,Answer {i}." for i in range(1, 5)] + ["A lone cell"]
    bad = tmp_path / "support_missingcol.csv"
    bad.write_text("\n".join(rows + ["Question 7?,Answer 7."]) + "\n")
    app = build_app(studio)
    on_import = next(f for f in app.fns.values() if f.name == "on_import")
    values = [c.value for c in on_import.inputs]
    values[0] = str(bad)
    before = (studio.list_datasets(), sorted(os.listdir(studio.datasets_dir)))
    said = [update[0] for update in on_import.fn(*values)][1:]
    assert (studio.list_datasets(), sorted(os.listdir(studio.datasets_dir))) == before
    assert said == ["**Not imported:** support_missingcol.csv, row 6: has 1 cell but the header has 2 columns "
                    "(question, answer); give the row a cell for each column (or tick *Skip rows that cannot be "
                    "read*, under *Name, duplicates, held-out split*, to leave such rows out)"]


def test_an_import_that_fails_says_it_made_no_dataset_first(studio, tmp_path):
    """An import that failed before its first message (an upload gone from disk) left the previous import's
    id as 'made', and the Train tab picked that dataset again over a pick made since. The first update says
    none is made; the Train tab's pick follows only an import that succeeded."""
    app = build_app(studio)
    on_import = next(f for f in app.fns.values() if f.name == "on_import")
    values = [c.value for c in on_import.inputs]
    values[0] = str(tmp_path / "gone.csv")
    values[-1] = {}
    updates = on_import.fn(*values)
    assert next(updates)[-1] is None
    try:
        for _ in updates:
            pass
    except Exception:  # noqa: BLE001  (how it fails is Gradio's to show)
        pass
    (pick,) = [f for f in app.fns.values() if f.trigger_after == on_import._id and
               any(o.elem_id == "train-dataset" for o in f.outputs)]
    assert pick.trigger_only_on_success, "the Train tab's pick follows a failed import"
    assert studio.list_datasets() == []


def test_an_upload_with_thumbs_is_mapped_to_kto_labels_on_the_page(studio, tmp_path):
    """The page maps the marks column to `label` at upload and says why; one Import then stores KTO."""
    from components import data_tab

    path = tmp_path / "feedback.csv"
    path.write_text("question,answer,rating\nReset?,Hold it 10 s.,up\nWaterproof?,No.,down\n")
    unset = [data_tab.NOT_MAPPED] * len(data_tab.MAP_TARGETS)
    message, _table, updates, box = data_tab.check_source(studio, str(path), None, "auto", "line", *unset)
    assert message.startswith("Column **rating** holds good/bad marks on the replies: it is mapped below to "
                              "*label*, so the file is read as **KTO** data")
    mapped = [u["value"] for u in updates]
    assert dict(zip(data_tab.MAP_TARGETS, mapped)) == {
        **dict.fromkeys(data_tab.MAP_TARGETS, data_tab.NOT_MAPPED),
        "prompt": "question", "completion": "answer", "label": "rating"}
    assert box["open"] is True
    again, *_ = data_tab.check_source(studio, str(path), None, "auto", "line", *mapped)
    assert again.startswith("Detected **KTO (prompt, completion, label)** in a CSV file")
    said, _choices = data_tab.import_source(studio, str(path), None, "", "auto", "line", False, 0, 42, *mapped)
    assert said.startswith("Imported **feedback**")
    assert [d["kind"] for d in studio.list_datasets()] == ["kto"]


def test_a_run_from_the_built_in_model_names_it_not_its_spec(studio):
    from components.runs_panel import lineage

    assert lineage(studio, {"parent_id": None, "model": "default", "dataset_id": None}) == [
        "Started from the built-in SmolLM2-135M-Instruct."]  # it said "the base model `default`"
    assert lineage(studio, {"parent_id": None, "model": "/m/tiny", "dataset_id": None}) == [
        "Started from the base model `/m/tiny`."]


def test_the_method_table_marks_the_methods_that_train_on_the_chosen_data(studio, tiny_model_dir, tmp_path):
    """A KTO dataset chosen in Train: the table listed all methods alike, nothing said which could use it."""
    from studio import method_service as ms

    thumbs = tmp_path / "thumbs.jsonl"
    thumbs.write_text("".join(f'{{"prompt": "Q{i}?", "completion": "A{i}.", "label": {str(i % 2 == 0).lower()}}}\n'
                              for i in range(8)))
    kto = studio.import_dataset(thumbs)["id"]
    # the methods that train on thumbs come first: KTO's row came after a minute and a half of others
    table = ms.catalogue(studio, str(tiny_model_dir), kto)
    next(table)
    rows = next(table)  # (the rest is measured as the tab shows them)
    assert [r[0] for r in rows] == ["KTO", "KTO (full weights)"] and rows[0][2] == "KTO ✓ your data"
    order = ms.catalogue_order(studio, kto)
    assert order[:2] == ["kto", "kto_full"] and sorted(order) == sorted(METHODS) and order[2] == "full"
    assert next(ms.catalogue(studio, str(tiny_model_dir), "quillpad_faq"))[0][:3] == ["Full fine-tuning", "Full",
                                                                                  "SFT ✓ your data"]
    assert ms.catalogue_order(studio, None) == list(METHODS)


def test_thumbs_mapped_at_upload_still_name_the_first_row_import_would_stop_at(studio, tmp_path):
    from components import data_tab

    path = tmp_path / "gaps.csv"
    path.write_text("prompt,completion,rating\nReset?,Hold it 10 s.,up\nWaterproof?,No.,\n")  # a reply not rated
    unset = [data_tab.NOT_MAPPED] * len(data_tab.MAP_TARGETS)
    message, *_ = data_tab.check_source(studio, str(path), None, "auto", "line", *unset)
    assert message.startswith("Column **rating** holds good/bad marks")
    assert message.endswith("Import would stop here: **gaps.csv, row 3, column 'rating': is empty; expected true "
                            "or false (or up/down)**")


def test_advice_for_a_question_changed_meanwhile_is_dropped(studio, tiny_model_dir, monkeypatch):
    """Advise, then another question picked before the answer came: the answer landed under the new
    question (and Apply used it)."""
    from types import SimpleNamespace

    from studio import advise

    app = build_app(studio)
    on_ask, on_goal = (next(f.fn for f in app.fns.values() if f.name == name) for name in ("on_ask", "on_goal"))
    page = SimpleNamespace(session_hash="page-1")
    real = advise.advise

    def changed_meanwhile(*args):
        on_goal("facts", page)  # the radio moved while the advice was worked out
        return real(*args)

    monkeypatch.setattr(advise, "advise", changed_meanwhile)
    assert on_ask("preferences", str(tiny_model_dir), "quillpad_faq", page) == (gr.skip(),) * 3
    monkeypatch.setattr(advise, "advise", real)
    said, kept, _apply = on_ask("facts", str(tiny_model_dir), "quillpad_faq", page)
    assert said.startswith("### Use **LoRA**") and kept["method"] == "lora"


def test_headers_named_ours_but_for_case_import_and_an_unread_answer_column_is_pointed_out(studio, tmp_path):
    """'Prompt,Completion' (a spreadsheet's capitals) was refused while saying 'Prompt' looks like 'prompt';
    'prompt,answer_text_x' imported as prompts alone, the answers dropped without a word at upload."""
    from components import data_tab

    unset = [data_tab.NOT_MAPPED] * len(data_tab.MAP_TARGETS)
    caps = tmp_path / "caps.csv"
    caps.write_text("Prompt,Completion\nReset?,Hold it 10 s.\nWaterproof?,No.\n")
    message, *_ = data_tab.check_source(studio, str(caps), None, "auto", "line", *unset)
    assert message == ("Detected **prompt/completion** in a CSV file → stored as **sft** data. Press Import to "
                       "check every row.")
    said, _choices = data_tab.import_source(studio, str(caps), None, "", "auto", "line", False, 0, 42, *unset)
    assert said.startswith("Imported **caps**")
    (row,) = studio.list_datasets()
    assert row["kind"] == "sft" and row["meta"]["case_mapped"] == {"prompt": "Prompt", "completion": "Completion"}
    assert studio.import_dataset(caps)["id"] == row["id"]  # the same file, the same options: one dataset

    odd = tmp_path / "odd.csv"
    odd.write_text("prompt,answer_text_x\nReset?,Hold it 10 s.\nWaterproof?,No.\n")
    message, _table, _updates, box = data_tab.check_source(studio, str(odd), None, "auto", "line", *unset)
    assert message.endswith("→ stored as **prompts** data. Press Import to check every row. Column **answer_text_x** "
                            "is not read: if one holds the answers, map it to *completion* below to import examples "
                            "instead.")
    assert box["open"] is True
    mapped = [("answer_text_x" if t == "completion" else data_tab.NOT_MAPPED) for t in data_tab.MAP_TARGETS]
    message, *_ = data_tab.check_source(studio, str(odd), None, "auto", "line", *mapped)
    assert "stored as **sft** data" in message and "not read" not in message
    # names matched by case only where nothing fits as named: a topic in 'Label' stays beside examples, a
    # 'Text' column does not turn a question and its answer into raw text, a case-matched column is read
    topics = tmp_path / "topics.csv"
    topics.write_text("prompt,completion,Label\nReset?,Hold it 10 s.,billing\n")
    message, *_ = data_tab.check_source(studio, str(topics), None, "auto", "line", *unset)
    assert message.startswith("Detected **prompt/completion**") and "stored as **sft** data" in message
    notes = tmp_path / "notes.csv"
    notes.write_text("question,answer,Text\nReset?,Hold it 10 s.,a note\n")
    message, *_ = data_tab.check_source(studio, str(notes), None, "auto", "line", *unset)
    assert message.startswith("Columns **question** and **answer** look like a question and its answer")
    sums = tmp_path / "sums.csv"
    sums.write_text("Prompt,Answer\nWhat is 2+2?,4\n")
    message, *_ = data_tab.check_source(studio, str(sums), None, "auto", "line", *unset)
    assert "stored as **prompts** data" in message and "not read" not in message and "Questions alone" not in message
    # questions alone: what they can train, and what an answer column would make of them
    questions = tmp_path / "questions.csv"
    questions.write_text("prompt\nWhat is 2+2?\nReset?\n")
    message, *_ = data_tab.check_source(studio, str(questions), None, "auto", "line", *unset)
    assert message.endswith("→ stored as **prompts** data. Press Import to check every row. Questions alone teach by "
                            "reinforcement learning (GRPO, with reward functions) or become a labeling project (Label "
                            "tab: the model answers, you pick); to teach answers by example, add a column with them.")


def test_a_model_that_cannot_chat_leaves_the_conversation_as_it_was(studio, tmp_path, tiny_model_dir):
    """A typed path that is no model: one sentence, the prompt kept, and the conversation as before (two
    '…' replies stayed, as if both models were still writing)."""
    from components.chat_tab import new_battle, shown

    app = build_app(studio)
    (respond,) = [f for f in app.fns.values() if f.name == "respond" and f.inputs[0].elem_id == "chat-prompt"][:1]
    before = shown([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])  # as on the page
    missing = str(tmp_path / "no-such-model")
    *_, last = respond.fn("How long is the warranty?", before, before, new_battle(), f"base:{missing}",
                          f"base:{tiny_model_dir}",
                          False, "", 0.7, 0.9, 16, 1.1, 7)
    chat_a, chat_b, state, prompt, said, *_controls = last
    assert (chat_a["value"], chat_b["value"], state, prompt) == (before, before, new_battle(),
                                                                 "How long is the warranty?")
    assert (chat_a["label"], chat_b["label"]) == ("Model A", "Model B")
    assert said.startswith(f"**Cannot chat:** model '{missing}' is neither 'default'")
    # Regenerate with it: the last exchange comes back (it was taken off for the new replies)
    (redo,) = [f for f in app.fns.values() if f.name == "redo"]
    *_, last = redo.fn(before, before, new_battle(), f"base:{missing}", f"base:{tiny_model_dir}", False, "", 0.7, 0.9,
                       16, 1.1, 7)
    assert (last[0]["value"], last[1]["value"], last[2]) == (before, before, new_battle())
    assert last[4].startswith("**Cannot chat:**")


def test_create_pressed_twice_makes_one_project_and_says_so(studio, tmp_path, monkeypatch):
    """The second press of Create found the name taken and said only 'Could not create the project', over
    the first press's success."""
    import json

    from components import label_projects

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{n}?", "response_a": f"A{n}", "response_b": f"B{n}"}) + "\n"
                             for n in range(3)))
    app = build_app(studio)
    (create,) = [f for f in app.fns.values() if f.name == "on_create"]

    def press():
        return create.fn(" answers ", 1, "file", "dataset", None, None, "", None, None, 0.7, 64, str(pairs))

    first, second = press(), press()
    assert first[0] == "Made **answers** with 3 items, picked above: press *Start labeling*."
    assert second[0] == "Made **answers**, picked above (Create was pressed again: still one project)."
    assert second[3] == first[3] and len(studio.store.list_label_projects()) == 1
    monkeypatch.setattr(label_projects, "AGAIN_WITHIN_S", 0)  # a name taken before: refused as it was
    assert press()[0] == ("**Could not create the project:** a labeling project named 'answers' already exists; "
                          "pick another name")


def test_opening_label_keeps_the_models_picked_for_a_new_project(studio, tiny_model_dir):
    """Opening the Label tab put the default pair back in New project's model pickers: models picked,
    then a look at the Chat tab, were lost. They stay while they can be picked; a run deleted since or
    a folder gone is replaced by the default."""
    app = build_app(studio)
    (opened,) = [f for f in app.fns.values() if f.name == "on_open" and f.fn.__module__ == "components.label_tab"]
    typed = f"base:{tiny_model_dir}"
    _project, _name, _dataset, model_a, model_b = opened.fn(None, None, typed, "base:default", {}, None)
    assert (model_a["value"], model_b["value"]) == (typed, "base:default")
    _project, _name, _dataset, model_a, model_b = opened.fn(None, None, "run:gone", f"{typed}-deleted", {}, None)
    assert (model_a["value"], model_b["value"]) == ("base:default", "base:default")
    # the page's pair from before any run finished (the built-in model twice) gives way to the default pair:
    # kept, it made Create refuse "the same model" (a newcomer's walkthrough)
    from tests.test_chat import finished_on_the_built_in_model

    finished_on_the_built_in_model(studio, "r20261205-100000-bbbb")
    _project, _name, _dataset, model_a, model_b = opened.fn(None, None, "base:default", "base:default", {}, None)
    assert (model_a["value"], model_b["value"]) == ("base:default", "run:r20261205-100000-bbbb")
    # the run picked to answer twice (Model 2, hidden then, held the same run): Model 1 stays that run
    run = "run:r20261205-100000-bbbb"
    _project, _name, _dataset, model_a, model_b = opened.fn(None, None, run, run, {}, None)
    assert (model_a["value"], model_b["value"]) == (run, "base:default")


def test_a_state_sent_to_the_page_is_not_changed_after(studio, tiny_model_dir, monkeypatch):
    """Gradio keeps a yielded State by reference; the chat changed the one it had sent as the replies went
    on, so after a Stop between two page updates the battle said a reply the page showed cut short had
    ended (and a cut winner was stored as finished). Side A here ends on its third token; B runs to the
    limit."""
    import copy

    from components import chat_tab
    from components.chat_tab import new_battle
    from studio import chat_service

    monkeypatch.setattr(chat_tab, "STREAM_EVERY_S", 0.0)  # an update per token
    real, made, stop = chat_service.decoders, [], {}

    def decoders(*args):
        decs = real(*args)
        if stop:
            decs[0].stop_ids = {stop["token"]}
        made.append(decs)
        return decs

    monkeypatch.setattr(chat_service, "decoders", decoders)
    app = build_app(studio)
    (respond,) = [f for f in app.fns.values() if f.name == "respond" and f.inputs[0].elem_id == "chat-prompt"][:1]
    spec = f"base:{tiny_model_dir}"
    args = ("How long is the warranty?", [], [], new_battle(), spec, spec, False, "", 1.0, 1.0, 8, 1.0, 7)  # seeded
    list(respond.fn(*args))
    tokens = made[-1][0].generated
    third = next(k for k in range(2, len(tokens)) if tokens[k] not in tokens[:k])
    stop["token"] = tokens[third]
    sent = [(out[2], copy.deepcopy(out[2])) for out in respond.fn(*args) if isinstance(out[2], dict)]
    assert made[-1][0].done and not made[-1][0].cut_off and made[-1][1].cut_off
    ended = [kept["ended"] for _obj, kept in sent]
    assert ended[-1] == ["a"] and [] in ended[1:-1] and ["a"] in ended[1:-1]  # sent before and after A ended
    assert all(obj == kept for obj, kept in sent), "a state the page was sent changed afterwards"


def test_did_it_help_points_only_at_figures_the_panel_shows(studio):
    """After preference or RL training the panel said "The held-out figures above are a rough guide" also
    where none were shown: reinforcement learning shows its mean reward, a run without held-out rows
    nothing. Once blind votes are in, it gives them instead."""
    from components.runs_panel import blind_line
    from pipelines.events import ADAPTER, STATUS, write_json
    from studio import chat_service

    studio.store.add_run(id="r20261205-100000-aaaa", method="grpo", model="default", dataset_id=None,
                         status="completed", params={})
    (studio.run_dir("r20261205-100000-aaaa") / ADAPTER).mkdir(parents=True)
    write_json(studio.run_dir("r20261205-100000-aaaa") / STATUS, {"status": "completed", "finished": 1.0})
    row = studio.get_run("r20261205-100000-aaaa")
    tail = ("hether people prefer its replies is what a blind battle against the built-in model tells: press "
            "*Compare with the previous model*.")
    for summary, guide in (({"reward_first": 0.1, "reward_last": 0.4}, "The mean reward above is a rough guide; w"),
                           ({"eval_loss_before": 2.0, "eval_loss_after": 1.9},
                            "The held-out figures above are a rough guide; w"),
                           ({"eval_rewards/accuracies_before": 0.0, "eval_rewards/accuracies_after": 0.75},
                            "The held-out figures above are a rough guide; w"),
                           ({}, "W"), ({"eval_loss_after": 1.9}, "W")):  # (the panel shows that line with both)
        assert blind_line(studio, {**row, "summary": summary}) == f"**Did it help?** {guide}{tail}", summary
    prompt = [{"role": "user", "content": "Question?"}]
    chat_service.record_vote(studio, voter="ana", model_a="run:r20261205-100000-aaaa", model_b="base:default",
                             winner="a", blind=True, prompt_a=prompt, prompt_b=prompt, reply_a="from A",
                             reply_b="from B", settings={})
    assert blind_line(studio, {**row, "summary": {}}).startswith(
        "**Blind votes against the built-in model:** 1 so far, it won 1, lost 0, tied or both bad 0: ")


def test_stop_and_resume_answering_without_a_project_say_to_pick_one(studio):
    """With no project picked (after a reload), Stop answering said "no labeling project '' (see 'studio label
    status')": empty quotes, and a command-line tool named to a person in the browser."""
    app = build_app(studio)
    for name, said in (("on_cancel", "**Nothing to stop:** pick a project above first."),
                       ("on_resume", "**Nothing to resume:** pick a project above first.")):
        (fn,) = [f for f in app.fns.values() if f.name == name and f.fn.__module__ == "components.label_projects"]
        message, *_rest = fn.fn(None)
        assert message == said


def test_the_quick_run_says_how_long_where_the_estimate_cannot_yet(studio):
    """The quick run's note said "the line above Start says how long it takes here" while that line said the
    estimate would come once the built-in model was prepared. Until then the note gives the measured time."""
    from pipelines import models

    app = build_app(studio)
    (quick,) = [f for f in app.fns.values() if f.name == "on_quick"]
    message = next(v for v in quick.fn({}) if isinstance(v, str) and v.startswith("Set up"))
    assert "(a few minutes on a 2-core CPU, 1.9 min of training measured, after about half a minute that prepares " \
           "the built-in model on first use)" in message and "line above Start" not in message
    (studio.model_cache / models.DEFAULT_MODEL).mkdir(parents=True)
    (studio.model_cache / models.DEFAULT_MODEL / "model.safetensors").write_bytes(b"")
    message = next(v for v in quick.fn({}) if isinstance(v, str) and v.startswith("Set up"))
    assert "(the line above Start says how long it takes here)" in message
    # shown right under the quick run's button (under Start, it was below the fold: "did it start?")
    assert quick.fn({})[[o.elem_id for o in quick.outputs].index("train-setup")] == message


def test_an_export_is_picked_in_the_data_tab_it_names(studio):
    """"Exported … in the Data tab", and the Data tab opened with no dataset picked: the person had to find it
    in the list. The chat's and the Label tab's exports both pick what they made."""
    from tests.test_chat import vote

    vote(studio, "a")
    app = build_app(studio)
    for module in ("components.chat_tab", "components.label_projects"):
        (export,) = [f for f in app.fns.values() if f.name == "on_export" and f.fn.__module__ == module]
        (show,) = [f for f in app.fns.values() if f.trigger_after == export._id
                   and any(o.elem_id == "data-datasets" for o in f.outputs)]
        if module == "components.chat_tab":
            message, made = export.fn("battle votes")
            assert message.startswith("Exported **battle votes**") and made == studio.list_datasets()[0]["id"]
            assert show.fn(made)["value"] == made
        else:  # nothing made: the list as it is, the pick left alone
            message, made = export.fn(None, "preference", 0, False, "")
            assert message == "**Nothing exported:** pick a project above first." and made is None
            assert "value" not in show.fn(made)


def test_a_refused_vote_leaves_the_battle_as_the_page_has_it(studio):
    """A vote refused while the replies streamed sent back the battle it had read at the click: answered
    after the replies had finished (a busy server), it put the unfinished round back over the finished one."""
    from components.chat_tab import new_battle

    app = build_app(studio)
    vote = next(f for f in app.fns.values() if f.name == "on_vote")
    streaming = {**new_battle(), "specs": ["base:default", "run:r1"], "complete": False}
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]
    out = vote.fn(history, history, streaming, "Ann", "", 0.7, 0.9, 24, 1.1, 7, None)
    assert out[3] == "Wait until both replies are finished (or press Stop)."
    assert out[2] == gr.skip() and studio.store.list_votes() == []


def test_a_vote_on_two_sides_that_answered_different_conversations_is_refused(studio):
    """A walkthrough emptied one side (its panel's own clear icon) and asked again: that side answered the new
    prompt alone, the other after the earlier exchange, and the vote was stored as a pair on one prompt."""
    from components.chat_tab import new_battle

    app = build_app(studio)
    vote = next(f for f in app.fns.values() if f.name == "on_vote")
    done = {**new_battle(), "specs": ["base:default", "run:r1"], "complete": True, "blind": True}
    fresh = [{"role": "user", "content": "Name one animal."}, {"role": "assistant", "content": "A cat."}]
    longer = [{"role": "user", "content": "Name one colour."}, {"role": "assistant", "content": "Red."}, *fresh]
    out = vote.fn(fresh, longer, done, "Ann", "", 0.7, 0.9, 24, 1.1, 7, None)
    assert out[3] == ("The two sides answered different conversations, so their replies cannot be compared: press "
                      "Clear and ask again.")
    assert out[2] == gr.skip() and studio.store.list_votes() == []
    vote.fn(longer, longer, done, "Ann", "", 0.7, 0.9, 24, 1.1, 7, None)  # the same conversation: stored
    assert len(studio.store.list_votes()) == 1


def test_a_few_pairs_set_up_for_preference_training_say_what_so_few_teach(studio, tmp_path):
    """Train on these preferences raised 2 votes' run to 10 steps without a word on what 2 pairs teach: a
    walkthrough's run gave back a winning reply word for word, a wrong fact in it too."""
    from studio import method_service

    pairs = [json.loads(line) for line in (ROOT / "assets" / "samples" / "signoff_preferences.jsonl").read_text()
             .splitlines()]

    def why(count):
        path = tmp_path / f"votes{count}.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in pairs[:count]))
        return method_service.enough_epochs(studio, "dpo", studio.import_dataset(path)["id"])

    settings, said = why(3)
    assert settings == {"num_train_epochs": 10}
    assert said.endswith("steps to move the model. With 2 pairs the run learns the preferred replies nearly word "
                         "for word, a wrong fact in them too; pairs that agree on one thing (tone, length, a closing "
                         "line) carry over to new questions, and 10 or more give a preference the held-out check "
                         "can measure.")
    settings, said = why(13)  # 12 train, 3 steps an epoch: still raised, and no longer "so few"
    assert settings and said.endswith("steps to move the model.")


def test_train_on_these_labels_says_when_the_run_will_hold_nothing_out(studio, tmp_path):
    """One labelled pair cannot be split: the note before Start says the run will show its training loss only
    (a walkthrough's 3-pair run had no held-out check and was not told). Six pairs hold one out: not said."""
    from components.loop import NOT_MEASURED
    from tests.test_label_service import label_until_done, new_project

    app = build_app(studio)
    (press,) = [f for f in app.fns.values() if f.name == "on_train_labels"]
    for n, told in ((1, True), (6, False)):
        ref = new_project(studio, tmp_path, n=n, name=f"proj{n}")
        label_until_done(studio, ref, ["ann"])
        made, message, *_ = press.fn(None, ref, "preference", 0.0, False, f"labels {n}", "lora", {})
        assert made.startswith("Made") and (NOT_MEASURED in made) is told, made
        assert (NOT_MEASURED in message) is told
    assert NOT_MEASURED.startswith(" No pair is held out to measure the run")


def test_stop_and_resume_answering_are_pressable_only_when_they_would_act(studio):
    """Both buttons looked pressable with no project picked: Stop is while the picked project's answers are being
    written, Resume once that stopped short, neither otherwise; the table's tick follows a status change."""
    app = build_app(studio)
    buttons = next(f for f in app.fns.values() if f.name == "answer_buttons")
    (tick,) = [f for f in app.fns.values() if f.name == "on_tick" and f.fn.__qualname__.startswith("build_new.")]
    for pid, status in (("p-gen", "generating"), ("p-stop", "cancelled"), ("p-fail", "failed"), ("p-ok", "ready")):
        studio.store.add_label_project(id=pid, name=pid, overlap=1, status=status,
                                       source={"kind": "two models", "models": ["a", "b"], "prompts": 5})
    pressable = {pid: tuple(u["interactive"] for u in buttons.fn(pid)) for pid in (None, "p-gen", "p-stop", "p-fail",
                                                                                  "p-ok", "gone")}
    assert pressable == {None: (False, False), "p-gen": (True, False), "p-stop": (False, True),
                         "p-fail": (False, True), "p-ok": (False, False), "gone": (False, False)}
    *_, stop, resume = tick.fn(None, "", None, "p-gen")
    assert (stop["interactive"], resume["interactive"]) == (True, False)
    shown = tick.fn(None, "", None, "p-gen")[1]
    studio.store.set_label_project_status("p-gen", "cancelled")  # stopped since
    *_, stop, resume = tick.fn(shown, "", None, "p-gen")
    assert (stop["interactive"], resume["interactive"]) == (False, True)


def test_a_press_sets_up_its_own_pages_estimate_and_its_epochs_go_back_for_more_pairs(studio, tmp_path,
                                                                                    small_vocab_model_dir):
    """Train on these labels, pressed on a page: until the page shows DPO's fields, that page's estimate is for the
    10 epochs set up, not the SFT run's 1 epoch the fields still held ("Only 1 training step"); another page's is
    its own. A later press on enough pairs sets DPO's default again: the 10 an earlier press had kept stood for 40
    pairs, without a word. And a setting kept by an older version (renamed since) reached the estimate, which
    refused it: "Estimate unavailable: unknown parameter"."""
    from types import SimpleNamespace

    from tests.test_label_service import label_until_done, new_project

    app = build_app(studio)
    (press,) = [f for f in app.fns.values() if f.name == "on_train_labels"]
    estimate = next(f for f in app.fns.values() if f.name == "on_estimate")  # (wired to several events)
    epochs_at = estimate.inputs.index(press.outputs[8])  # DPO's epochs field, which the press sets from DPO
    page, other = SimpleNamespace(session_hash="page-1"), SimpleNamespace(session_hash="page-2")
    ref = new_project(studio, tmp_path, n=3, name="few")
    label_until_done(studio, ref, ["ann"])
    kept = {"dpo": {"learning_rate": 5e-6, "an_old_setting": 7}}
    out = press.fn(page, ref, "preference", 0.0, False, "few labels", "lora", kept)
    assert "Set to 10 epochs:" in out[1]
    dataset = out[4]["value"]

    def shown_for(request, epochs):
        values = [c.value for c in estimate.inputs]
        values[:3] = [str(small_vocab_model_dir), dataset, "dpo"]
        values[epochs_at] = epochs
        return estimate.fn(request, *values)

    stale = shown_for(page, 1)
    assert "per epoch × 10)" in stale, stale  # (and no "Estimate unavailable: unknown parameter 'an_old_setting'")
    assert "per epoch × 1)" in shown_for(other, 1)  # another page: its own fields
    assert "per epoch × 10)" in shown_for(page, 10)

    many = new_project(studio, tmp_path, n=40, name="many")
    label_until_done(studio, many, ["ann"])
    message = press.fn(page, many, "preference", 0.0, False, "many labels", "lora", {"dpo": {"num_train_epochs": 10}})[1]
    assert message.endswith("Set to 2 epochs, DPO's default (36 pairs train (4 held out to measure the run), "
                            "9 training steps per epoch), not the 10 kept from before."), message


def test_the_label_overview_says_what_its_figures_mean(studio, tmp_path):
    """A walkthrough's overview: the disagreements listed items as 1, 3, 6, 13 … 81 of a 12-item project (the
    catalogue's ids) with choices "a", "b", "both_bad" nobody saw; an α of -0.22 without a word; and a project of
    one labeler per item, every item labelled, told its α was "not measurable yet" and that "about 1 more
    labelled item" would tell."""
    from components.label_projects import summary
    from tests.test_label_service import label_until_done, new_project, screen

    split = new_project(studio, tmp_path, n=4, overlap=2, name="split")
    label_until_done(studio, split, ["ann", "bob"],
                     choose=lambda who, item: screen(item, "a" if who == "ann" or item["position"] == 0 else "b"))
    said, _labelers, _kappa, _wins, review = summary(studio, split)
    assert "Krippendorff's α **-" in said and "Below 0 they disagree more often than chance would" in said
    assert [row[0] for row in review["value"]["data"]] == [2, 3, 4]  # the items' numbers in the project
    assert review["value"]["data"][0][2] == "ann: A better, bob: B better"

    alone = new_project(studio, tmp_path, n=3, overlap=1, name="alone")
    label_until_done(studio, alone, ["ann"], choose=lambda who, item: screen(item, "a"))
    said, _labelers, _kappa, wins, _review = summary(studio, alone)
    assert "α not measurable: each item gets one labeler (a project with 2 or more per item measures it)" in said
    assert "Below 0" not in said
    assert wins["value"]["data"][0][-1].endswith(": can't tell: too few items")


def test_a_correction_sent_before_the_first_clicks_answer_says_the_first_one_stands(studio, tmp_path):
    """A labeler clicked *Left*, then *Right* before the page had the answer (slow under load): the second click
    came with the item still on the page, its label was the first one kept, and the page said "Saved: right is
    better". It says the item was saved as the first click, and how to change it."""
    import inspect
    import time

    from studio import label_service as ls
    from tests.test_label_service import new_project, shown

    ref = new_project(studio, tmp_path, n=3)
    item = shown(studio, ref, "ann")
    app = build_app(studio)
    said = {inspect.getclosurevars(f.fn).nonlocals["choice"]: f for f in app.fns.values() if f.name == "on_choose"}
    state = {"project": ref, "item": item["item_id"], "labeler": "ann", "shown": time.time() - 5}
    first = said["left"].fn(state, "ann", "", None)
    assert first[5] == "Saved: left is better."
    again = said["right"].fn(state, "ann", "", None)  # the same state: sent before the first answer came
    assert again[5] == ("**Not changed:** you had already saved this item as *left is better*. Press *Undo* to "
                        "label it again.")
    labels = studio.store.list_labels(ref)
    assert [ls.screen_choice(lb["choice"], bool(lb["flipped"])) for lb in labels] == ["left"]


def test_use_these_settings_puts_every_advised_setting_in_the_form(studio):
    """The advice for checkable answers shows *Variety while training 0.7* (the measured recipe); *Use these
    settings in Train* left the form at 1.0, and the run trained at 1.0 under advice saying 0.7."""
    app = build_app(studio)
    (apply,) = [f for f in app.fns.values() if f.name == "on_apply"]
    advice = {"method": "grpo", "settings": {"num_train_epochs": 3, "temperature": 0.7}, "dataset": None}
    out = apply.fn(advice, {"grpo": {"temperature": 1.2, "max_completion_length": 48}}, None)
    shown = {u.get("label"): u.get("value") for u in out if isinstance(u, dict) and u.get("visible")}
    assert shown["Variety while training"] == 0.7 and shown["Epochs"] == 3
    assert shown["Longest reply (tokens)"] == 48  # a setting the advice leaves alone stays as kept


def test_a_double_press_of_undo_takes_back_one_label_and_keeps_its_reason(studio, tmp_path):
    """Undo pressed twice at once (a double click, U twice) took back two labels, and the second's reason
    overwrote the first's in the box: that reason was lost. A second and a third press take nothing; one a moment
    later does."""
    import time

    from studio import label_service as ls
    from tests.test_label_service import new_project, shown

    ref = new_project(studio, tmp_path, n=3)
    for why in ("first reason", "second reason"):
        ls.submit(studio, ref, shown(studio, ref, "ann")["item_id"], "ann", "left", why)
    app = build_app(studio)
    (undo,) = [f for f in app.fns.values() if f.name == "on_undo_read"]
    state = {"project": ref, "item": None, "labeler": "ann", "shown": time.time() - 5}
    first = undo.fn(state, ref, "ann", None)
    assert (first[5], first[-1]) == ("Took back your last label: choose again.", "second reason")
    for _third_too in range(2):  # the same state: sent before the first answer came
        again = undo.fn(state, ref, "ann", None)
        assert again[5].startswith("**Not undone again:** that came ") and again[-1] == gr.skip()
    assert [lb["reason"] for lb in studio.store.list_labels(ref)] == ["first reason"]
    from components.label_tab import MIN_LOOK_S

    time.sleep(MIN_LOOK_S)
    later = undo.fn(first[0], ref, "ann", None)  # pressed again on purpose
    assert later[5] == "Took back your last label: choose again." and later[-1] == "first reason"
    assert studio.store.list_labels(ref) == []


def test_a_name_changed_without_start_labels_nothing_under_either_name(studio, tmp_path):
    """B typed their name over A's and pressed 1 without Start: the label was saved as A's (the name the item was
    shown to), and Undo took back A's labels."""
    import time

    from studio import label_service as ls
    from studio.app import build_app
    from tests.test_label_service import new_project, shown

    ref = new_project(studio, tmp_path, n=3)
    ls.submit(studio, ref, shown(studio, ref, "ann")["item_id"], "ann", "left")
    item = shown(studio, ref, "ann")
    app = build_app(studio)
    fns = {f.name: f for f in app.fns.values()}
    state = {"project": ref, "item": item["item_id"], "labeler": "ann", "shown": time.time() - 5}
    (left,) = [f for f in app.fns.values() if f.name == "on_choose" and "label-left" in str(
        [app.blocks[t[0]].elem_id for t in f.targets if t[0] in app.blocks])]
    refused = left.fn(state, "bob", "", None)
    said = ("this item was shown to **ann**, and the name is now **bob**. Press *Start labeling* to label as bob.")
    assert refused[5] == "**Not saved:** " + said
    undone = fns["on_undo_read"].fn(state, ref, "bob", None)
    assert undone[5] == "**Could not undo:** " + said
    assert [(lb["labeler"], lb["item_id"]) for lb in studio.store.list_labels(ref)] == [
        ("ann", studio.store.list_labels(ref)[0]["item_id"])]
    assert left.fn(state, " ann ", "", None)[5] == "Saved: left is better."  # the same name, spaces apart


def test_label_presses_run_one_at_a_time_in_the_order_pressed(studio):
    """Choose and Undo were separate listeners that Gradio ran side by side: an Undo pressed straight after a
    choice reached the database first and took back the label before the one meant."""
    from studio.app import build_app

    app = build_app(studio)
    pressed = [f for f in app.fns.values() if f.name in ("on_choose", "on_undo_read", "handler")
               and any(app.blocks[t[0]].elem_id and app.blocks[t[0]].elem_id.startswith("label-")
                       for t in f.targets if t[0] in app.blocks)]
    assert len(pressed) >= 6  # the choices, Undo, Bring back my skips
    assert {(f.concurrency_id, f.concurrency_limit) for f in pressed} == {("label-actions", 1)}


def test_the_mean_reward_says_its_scale_and_its_steps():
    """A walkthrough read "0.69 in the first steps, 1.00 in the last" of two reward functions as full marks (the
    most was 2.0), and the chart's last point (0.625, one step) beside it as a contradiction."""
    from components.runs_panel import reward_line

    summary = {"reward_first": 0.69, "reward_last": 1.0, "reward_steps": 2}
    two = [{"name": "number", "weight": 1.0}, {"name": "regex", "weight": 1.0}]
    assert reward_line(summary, two) == ("Mean reward of the replies it wrote: 0.69 over its first 2 logged steps, "
                                         "1.00 over its last 2 (out of 2.00: 2 functions, each scoring a reply from "
                                         "0 to 1; higher is better)")
    weighted = [{"name": "number", "weight": 2.0}, {"name": "length", "weight": -0.5}]
    assert reward_line({**summary, "reward_steps": 1}, weighted).endswith(
        "0.69 over its first 1 logged step, 1.00 over its last 1 (out of 2.00, down to -0.50: 2 functions, each "
        "scoring a reply from 0 to 1 times its weight; higher is better)")
    # a run from before the steps were kept, and PPO's reward model (a score with no fixed scale)
    assert reward_line({"reward_first": 0.1, "reward_last": 0.4}, None) == (
        "Mean reward of the replies it wrote: 0.10 in the first steps, 0.40 in the last (higher is better)")


def test_a_reward_models_held_out_line_says_what_training_added():
    """"100% before, 100% after, on 10 pairs (50% = chance)": a walkthrough could not tell whether the reward
    model learned anything. Past 90% before, the line says the pairs were ranked right from the start, and the
    lead of the preferred reply's score is what training added."""
    from components.runs_panel import ranked_line

    clear = {"eval_accuracy_before": 1.0, "eval_accuracy_after": 1.0, "eval_pairs": 10, "eval_margin_before": 0.59,
             "eval_margin_after": 1.21}
    assert ranked_line(clear) == (
        "Held-out pairs ranked right (preferred reply scored higher): 100% before, 100% after, on 10 pairs (50% = "
        "chance): right before training already (the pairs differ in a way it saw at once); the preferred reply's "
        "score leads by 0.59 before, 1.21 after (on average), which is what training added: a wider lead tells "
        "the replies apart more surely.")
    learned = {**clear, "eval_accuracy_before": 0.5, "eval_accuracy_after": 0.8}
    assert ranked_line(learned).endswith("50% before, 80% after, on 10 pairs (50% = chance); the preferred reply's "
                                         "score leads by 0.59 before, 1.21 after (on average).")
    # training added no lead (or none is known from before): not said to have; a lead below 0 is signed
    assert ranked_line({**clear, "eval_margin_after": 0.4}).endswith(
        "saw at once); the preferred reply's score leads by 0.59 before, 0.40 after (on average).")
    assert ranked_line({k: v for k, v in clear.items() if k != "eval_margin_before"}).endswith(
        "saw at once); the preferred reply's score leads by 1.21 (on average).")
    assert ranked_line({**learned, "eval_margin_before": -0.3, "eval_margin_after": 0.2}).endswith(
        "; the preferred reply's score minus the rejected one's: -0.30 before, +0.20 after (on average).")
    old = {"eval_accuracy_after": 0.8, "eval_pairs": 10}  # a run from before the leads were kept
    assert ranked_line(old) == ("Held-out pairs ranked right (preferred reply scored higher): 80% after, on 10 "
                                "pairs (50% = chance)")


def test_the_new_project_form_takes_a_random_sample_of_the_prompts(studio, tiny_model_dir):
    from studio import label_service as ls
    from studio.app import build_app

    (create,) = [f for f in build_app(studio).fns.values() if f.name == "on_create"]
    said, *_ = create.fn("few", 1, "twice", "typed", None, None, "One?\nTwo?\nThree?", f"base:{tiny_model_dir}", None,
                         1.0, 1, None, 2)
    assert said.startswith("Made **few**, picked above: 2 prompts (a random sample of 3) are being answered"), said
    found = ls.project(studio, "few")
    assert found["source"]["prompts"] == 2 and found["source"]["sampled_from"] == 3
    from tests.test_label_gen import until

    until(studio, "few")  # (one-token answers: its worker ends before the folder goes)


def test_the_compare_overlay_follows_runs_that_are_still_training(studio):
    """The overlaid curves were drawn when runs were picked and never again: a run compared while it trained
    showed frozen curves."""
    import json

    from studio.app import build_app
    from tests.test_browser_compare import finished_run

    dataset = studio.import_dataset(FAQ)
    finished_run(studio, "r-one", "lora", dataset["id"], 5, 4)
    finished_run(studio, "r-two", "dora", dataset["id"], 5, 4)
    fns = {f.name: f for f in build_app(studio).fns.values() if getattr(f.fn, "__module__", None) == "components.runs_panel"}
    figure, _diff, axis, drawn_from = fns["on_compare"].fn(["r-one", "r-two"])
    assert drawn_from == [["r-one", 10], ["r-two", 10]]
    assert fns["on_compare_tick"].fn(["r-one", "r-two"], axis, drawn_from) == (gr.skip(), gr.skip())  # no change
    with open(studio.run_dir("r-two") / "metrics.jsonl", "a") as out:  # r-two's trainer logs a step more
        out.write(json.dumps({"step": 11, "epoch": 2.2, "loss": 0.5, "learning_rate": 1e-3}) + "\n")
    redrawn, now = fns["on_compare_tick"].fn(["r-one", "r-two"], axis, drawn_from)
    assert now == [["r-one", 10], ["r-two", 11]]
    steps = [max(trace.x) for trace in redrawn.data if trace.name == "training loss"]
    assert sorted(steps) == [10, 11]


def test_a_signed_in_voter_votes_under_their_user_name(studio):
    """With --auth-file each person signs in: a vote went under the name last typed in that browser (someone
    else's, on a shared one) before the user name; labels went under the user name already."""
    from types import SimpleNamespace

    from components.chat_tab import new_battle

    app = build_app(studio)
    vote = next(f for f in app.fns.values() if f.name == "on_vote")
    done = {**new_battle(), "specs": ["base:default", "run:r1"], "complete": True}
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    vote.fn(history, history, done, "Bob typed here", "", 0.7, 0.9, 24, 1.1, 7, SimpleNamespace(username="alice"))
    assert [v["voter"] for v in studio.store.list_votes()] == ["alice"]


def test_named_sides_follow_the_pickers_when_they_are_swapped(studio, tiny_model_dir, peaky_model_dir):
    """Named (not blind), the two pickers swapped mid-conversation kept each side's old model: side A went on
    answering with the model now picked for B, under A's picker. The swap starts a new conversation, each side
    with its picker's model; the same pickers again go on with it."""
    from components.chat_tab import new_battle, plain, side_labels

    app = build_app(studio)
    (respond,) = [f for f in app.fns.values() if f.name == "respond" and f.inputs[0].elem_id == "chat-prompt"][:1]
    tiny, peaky = f"base:{tiny_model_dir}", f"base:{peaky_model_dir}"
    settings = ("", 0.7, 0.9, 4, 1.1, 7)

    def asked(*args):
        *_, (chat_a, chat_b, state, *_rest) = respond.fn(*args, *settings)
        chat_a, chat_b = (c["value"] if isinstance(c, dict) else c for c in (chat_a, chat_b))
        return chat_a, chat_b, state, [m["content"] for m in plain(chat_a) if m["role"] == "user"]

    chat_a, chat_b, state, prompts = asked("Hi", [], [], new_battle(), tiny, peaky, False)
    assert state["specs"] == [tiny, peaky] and prompts == ["Hi"]
    chat_a, chat_b, state, prompts = asked("And now?", chat_a, chat_b, state, peaky, tiny, False)
    assert state["specs"] == [peaky, tiny] and prompts == ["And now?"]  # a new conversation, on the pickers' sides
    labels = side_labels(studio, state)
    assert str(peaky_model_dir) in labels[0] and str(tiny_model_dir) in labels[1]
    *_, prompts = asked("Once more?", chat_a, chat_b, state, peaky, tiny, False)
    assert prompts == ["And now?", "Once more?"]
