"""The labeling service as the Label tab uses it: hand-out under the overlap, labels, undo, side
shuffling, concurrent labelers, refused input, export to TRL data, and labels that survive a killed
process. Real SQLite workspaces on tmp_path; no mocks, no model."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from pipelines import labeling
from pipelines.data import DataError
from studio import label_service as ls
from studio.core import Studio
from studio.label_service import LabelError

ROOT = Path(__file__).resolve().parent.parent


def pairs_file(folder: Path, n: int, name: str = "pairs.jsonl") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps({"prompt": f"question {k}", "response_a": f"answer A {k}",
                                        "response_b": f"answer B {k}", "model_a": "alpha", "model_b": "beta"}) + "\n"
                            for k in range(n)))
    return path


def new_project(studio, folder: Path, n: int = 6, overlap: int = 1, name: str = "proj") -> str:
    return ls.import_project(studio, name=name, path=pairs_file(folder, n, f"{name}.jsonl"), overlap=overlap)["id"]


def shown(studio, ref, labeler) -> dict | None:
    return ls.next_item(studio, ref, labeler)["item"]


def label_next(studio, ref, labeler, choice="left") -> tuple[dict, int]:
    item = shown(studio, ref, labeler)
    assert item is not None, f"{labeler} got nothing to label"
    return item, ls.submit(studio, ref, item["item_id"], labeler, choice)


def screen(item: dict, want: str) -> str:
    """The screen click that stores the canonical choice `want` for this shown item."""
    if want == "a":
        return "right" if item["flipped"] else "left"
    if want == "b":
        return "left" if item["flipped"] else "right"
    return want


def label_until_done(studio, ref, labelers, choose=lambda labeler, item: "left") -> dict[str, list[int]]:
    """Labelers take turns, one item each, until none of them gets an item. Returns the item ids
    each labeler was handed, in order."""
    handed = {name: [] for name in labelers}
    active = list(labelers)
    while active:
        for name in list(active):
            item = shown(studio, ref, name)
            if item is None:
                active.remove(name)
                continue
            handed[name].append(item["item_id"])
            ls.submit(studio, ref, item["item_id"], name, choose(name, item))
    return handed


# --- assignment ----------------------------------------------------------------------------------

def test_overlap_one_gives_each_item_to_exactly_one_labeler(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=7, overlap=1)
    handed = label_until_done(studio, ref, ["ann", "bob", "cat"])
    labels = studio.store.list_labels(ref)
    per_item = Counter(lb["item_id"] for lb in labels)
    assert len(per_item) == 7 and set(per_item.values()) == {1}
    assert sorted(i for ids in handed.values() for i in ids) == sorted(per_item)
    assert all(len(ids) >= 2 for ids in handed.values())  # shared out, not one labeler doing all


def test_overlap_two_three_labelers_fill_exactly_and_never_repeat(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=9, overlap=2)
    items = [it["id"] for it in studio.store.label_items(ref)]
    skipped = set(items[::3])  # ann skips these when they reach her: others must still fill them

    def choose(name, item):
        return "skip" if name == "ann" and item["item_id"] in skipped else "left"

    handed = label_until_done(studio, ref, ["ann", "bob", "cat"], choose)
    for name, ids in handed.items():
        assert len(ids) == len(set(ids)), f"{name} was handed an item twice"
    labels = studio.store.list_labels(ref)
    assert len({(lb["item_id"], lb["labeler"]) for lb in labels}) == len(labels)
    decided = Counter(lb["item_id"] for lb in labels if lb["choice"] != "skip")
    assert {i: decided[i] for i in items} == {i: 2 for i in items}
    assert any(lb["choice"] == "skip" for lb in labels)  # the skips happened and did not count
    assert {it["id"]: it["labels"] for it in studio.store.label_items(ref)} == {i: 2 for i in items}


def test_least_labelled_item_goes_first(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=4, overlap=2)
    first, _ = label_next(studio, ref, "ann")
    assert first["position"] == 0
    assert shown(studio, ref, "bob")["position"] == 1  # not item 0, which already has a label
    assert shown(studio, ref, "cat")["position"] == 1  # on bob's screen, but overlap 2 leaves room
    assert shown(studio, ref, "dan")["position"] == 2  # item 1 is full with the two screens
    label_next(studio, ref, "bob")
    assert shown(studio, ref, "bob")["position"] == 2  # unlabelled items first: item 0 waits


@pytest.mark.parametrize("overlap, second_gets", [(1, 1), (2, 0)])
def test_item_on_a_screen_counts_towards_the_overlap(studio, tmp_path, overlap, second_gets):
    ref = new_project(studio, tmp_path, n=3, overlap=overlap)
    held = shown(studio, ref, "ann")
    assert held["position"] == 0
    assert shown(studio, ref, "ann")["item_id"] == held["item_id"]  # a reload shows the same item
    assert shown(studio, ref, "bob")["position"] == second_gets


def test_done_state_when_every_item_has_its_labels(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=2, overlap=1)
    label_next(studio, ref, "ann")
    label_next(studio, ref, "ann")
    for name in ("ann", "bob"):
        out = ls.next_item(studio, ref, name)
        assert out["item"] is None
        assert out["done_reason"] == "every item has its labels"
    assert out["progress"] == {"mine": 0, "skipped": 0, "returnable": 0, "labels": 2, "items": 2, "complete": 2,
                                "open": 0, "overlap": 1, "unanswered": 0, "stopped": False, "status": "ready"}


def test_an_item_with_a_late_holders_label_too_does_not_make_the_project_look_done(studio, tmp_path, monkeypatch):
    """A hold that lapsed still lets its holder's label in, so an item can have one past the overlap: the
    labels' sum then reached items x overlap with an item still unlabelled (on someone's screen), and a
    newcomer was told "every item has its labels"."""
    from studio import store

    ref = new_project(studio, tmp_path, n=2, overlap=1)
    late = shown(studio, ref, "ann")  # ann holds item 1 and leaves it open past her hold
    monkeypatch.setattr(store, "LEASE_S", -1)  # her hold lapses: item 1 goes to bob
    assert label_next(studio, ref, "bob")[0]["item_id"] == late["item_id"]
    monkeypatch.setattr(store, "LEASE_S", 600)
    ls.submit(studio, ref, late["item_id"], "ann", "left")  # her label still counts: item 1 has 2
    waiting = shown(studio, ref, "cy")  # item 2, on cy's screen
    assert waiting["item_id"] != late["item_id"]
    out = ls.next_item(studio, ref, "dee")
    assert out["item"] is None and out["progress"]["labels"] == 2 and out["progress"]["complete"] == 1
    assert out["done_reason"].startswith("you have labelled every item you can; the rest wait for other people")


def test_done_state_when_the_rest_is_with_others_or_labelled_by_you(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=2, overlap=2)
    label_next(studio, ref, "ann")
    label_next(studio, ref, "ann")
    out = ls.next_item(studio, ref, "ann")
    assert out["item"] is None
    assert out["done_reason"].startswith("you have labelled every item you can; the rest wait for other people")
    # (nothing left that could be hers: "open" counts the items still wanting labels she has not given)
    assert out["progress"] == {"mine": 2, "skipped": 0, "returnable": 0, "labels": 2, "items": 2, "complete": 0,
                                "open": 0, "overlap": 2, "unanswered": 0, "stopped": False, "status": "ready"}

    ref1 = new_project(studio, tmp_path, n=1, overlap=1, name="one")
    assert shown(studio, ref1, "ann") is not None  # on ann's screen
    out = ls.next_item(studio, ref1, "bob")
    assert out["item"] is None
    assert out["done_reason"].startswith("you have labelled every item you can; the rest wait for other people")


def test_a_project_being_answered_hands_out_what_is_answered_and_says_what_is_coming(studio):
    """Items arrive as their prompts are answered (the generation job's own test runs the models): the
    labeler gets them meanwhile, and the end of what is answered says the rest is coming, or that a stop
    left it unanswered; an answer that arrives twice is one item."""
    from components.label_tab import view

    studio.store.add_label_project(id="p-live", name="live", overlap=1, status="generating",
                                   source={"kind": "two models", "models": ["a", "b"], "prompts": 5})
    waiting = ls.next_item(studio, "live", "ann")  # shown as coming, where a label can only be refused
    assert waiting["item"] is None and waiting["done_reason"] == (
        "no prompt is answered yet; 5 more prompts are being answered: each appears here as soon as it is answered")
    assert view(studio, "p-live", "ann")[2].startswith("<h3>Waiting for the first answer</h3>")
    with pytest.raises(LabelError, match=r"^project 'live' has no answers yet; its items can be labelled as soon as "
                                         r"the first prompt is answered$"):
        ls.undo(studio, "live", "ann")
    answered = [{"position": n, "prompt": [{"role": "user", "content": f"q{n}"}], "answer_a": f"a{n}",
                 "answer_b": f"b{n}", "model_a": "a", "model_b": "b"} for n in (0, 1)]
    assert studio.store.add_label_items("p-live", answered) == 2
    assert studio.store.add_label_items("p-live", answered[1:]) == 0  # looked at again: no second copy
    while (item := shown(studio, "live", "ann")) is not None:
        ls.submit(studio, "live", item["item_id"], "ann", "left")
    out = ls.next_item(studio, "live", "ann")
    assert out["done_reason"] == ("every answered item has its labels; 3 more prompts are being answered: each "
                                  "appears here as soon as it is answered")
    assert out["progress"]["unanswered"] == 3
    shown_now = view(studio, "p-live", "ann")
    assert "(2 items × 1) · 3 more prompts being answered ·" in shown_now[1]
    assert shown_now[2].startswith("<h3>Nothing left for now</h3>")

    studio.store.add_label_items("p-live", [{**answered[0], "position": 2}], status="cancelled")
    assert ls.next_item(studio, "live", "ann")["item"]["position"] == 2  # what the job answered before it stopped
    while (item := shown(studio, "live", "ann")) is not None:
        ls.submit(studio, "live", item["item_id"], "ann", "left")
    assert ls.next_item(studio, "live", "ann")["done_reason"] == (
        "every answered item has its labels; answering was stopped with 2 prompts left: *Resume answering* "
        "under *New project* adds them")
    assert "(3 items × 1) · 2 more prompts not answered (answering stopped) ·" in view(studio, "p-live", "ann")[1]
    from components.label_projects import project_choices, projects_table, summary

    # the table and the list say how far it got ("cancelled" alone read as the project dropped), and so does
    # the overview, whose counts are of the answered prompts
    assert projects_table(studio)["data"][0][1:3] == ["stopped: 3 of 5 answered", 3]
    assert project_choices(studio) == [("live (3 items, 1 labeler each, stopped)", "p-live")]
    overview = summary(studio, "p-live")
    # a table with no rows is hidden (three empty tables stood under a text that said they could not be measured)
    assert [table["visible"] for table in overview[1:]] == [True, False, True, False]  # labelers, κ, wins, review
    assert overview[0].split("\n\n")[0] == (
        "**live**: 3 items, 3 with all their labels (1 per item); 3 labels. Answering stopped with 2 prompts left: "
        "*Resume answering* under *New project* adds them.")

    # a stopped project whose job folder is gone keeps what it has (its answers are looked for at each look)
    assert ls.coming({"status": "failed", "items": 4, "source": {"prompts": 5}}) == (
        "answering failed with 1 prompt left: *Resume answering* under *New project* adds it")
    studio.store.add_label_project(id="p-gone", name="gone", overlap=1, status="cancelled", job_id="g-gone",
                                   source={"kind": "two models", "models": ["a", "b"], "prompts": 5})
    assert ls.project(studio, "gone")["items"] == 0

    studio.store.add_label_project(id="p-none", name="none", overlap=1, status="failed",
                                   source={"kind": "two models", "models": ["a", "b"], "prompts": 5})
    with pytest.raises(LabelError, match=r"^project 'none' failed before any prompt was answered; resume "
                                         r"answering first$"):
        ls.next_item(studio, "none", "ann")


# --- submit, undo, skip --------------------------------------------------------------------------

def test_submitting_twice_stores_one_label(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=3)
    item = shown(studio, ref, "ann")
    first = ls.submit(studio, ref, item["item_id"], "ann", "left")
    again = ls.submit(studio, ref, item["item_id"], "ann", "right")  # a double click / retried request
    assert again == first
    labels = studio.store.list_labels(ref)
    assert [lb["id"] for lb in labels] == [first]
    assert labels[0]["choice"] == ("b" if item["flipped"] else "a")  # the first answer stands
    assert studio.store.get_label_item(item["item_id"])["labels"] == 1
    # from the page: a different second choice is told apart from one that was saved (the page said "Saved:
    # right is better" of a correction sent before the first click's answer, the first one kept)
    assert ls.choose(studio, ref, item["item_id"], "ann", "right") == "left"
    assert ls.choose(studio, ref, item["item_id"], "ann", "left") is None  # the same again: as saved
    other = shown(studio, ref, "ann")
    assert ls.choose(studio, ref, other["item_id"], "ann", "tie") is None  # a new label
    assert ls.choose(studio, ref, other["item_id"], "ann", "right") == "tie"
    assert [lb["choice"] for lb in studio.store.list_labels(ref)] == [labels[0]["choice"], "tie"]
    for flip in (False, True):
        for choice in ("left", "right", "tie", "both_bad", "skip"):
            assert ls.screen_choice(ls.canonical(choice, flip), flip) == choice


def test_undo_takes_back_the_last_label_and_its_item_comes_back_first(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=4, overlap=1)
    assert ls.undo(studio, ref, "ann") is None  # nothing to undo yet
    first, _ = label_next(studio, ref, "ann")
    second, second_id = label_next(studio, ref, "ann")
    bob_item, bob_id = label_next(studio, ref, "bob")
    assert shown(studio, ref, "ann")["position"] == 3  # ann now holds the last item

    undone = ls.undo(studio, ref, "ann")
    assert undone["id"] == second_id and undone["item_id"] == second["item_id"]
    assert shown(studio, ref, "ann")["item_id"] == second["item_id"]  # before the item she held
    assert studio.store.get_label_item(second["item_id"])["labels"] == 0
    assert {lb["id"] for lb in studio.store.list_labels(ref)} == {bob_id, _label_id(studio, ref, first)}

    ls.submit(studio, ref, second["item_id"], "ann", "tie")
    assert shown(studio, ref, "ann")["position"] == 3  # then the item she held before undo
    ls.undo(studio, ref, "ann")
    ls.undo(studio, ref, "ann")
    assert ls.undo(studio, ref, "ann") is None  # all of hers taken back
    assert [lb["id"] for lb in studio.store.list_labels(ref)] == [bob_id]  # bob's untouched


def _label_id(studio, ref, item) -> int:
    return next(lb["id"] for lb in studio.store.list_labels(ref) if lb["item_id"] == item["item_id"])


def test_skip_does_not_count_towards_the_overlap(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=2, overlap=1)
    skipped, _ = label_next(studio, ref, "ann", "skip")
    assert studio.store.get_label_item(skipped["item_id"])["labels"] == 0
    assert shown(studio, ref, "ann")["item_id"] != skipped["item_id"]  # never back to who skipped it
    assert shown(studio, ref, "bob")["item_id"] == skipped["item_id"]  # still open for others
    ls.submit(studio, ref, skipped["item_id"], "bob", "right")
    progress = ls.next_item(studio, ref, "bob")["progress"]
    assert progress["labels"] == 1 and progress["mine"] == 1
    # her skip is hers: counted apart from her labels
    assert {k: v for k, v in ls.next_item(studio, ref, "ann")["progress"].items() if k in ("mine", "skipped")} \
        == {"mine": 0, "skipped": 1}


def test_skipped_items_come_back_when_asked(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=2, overlap=1)
    first, _ = label_next(studio, ref, "ann", "skip")
    second, _ = label_next(studio, ref, "ann", "left")
    done = ls.next_item(studio, ref, "ann")
    assert done["item"] is None and done["progress"]["skipped"] == 1
    assert done["done_reason"] == ("you have labelled every item you can and skipped 1; *Bring back my skips* shows "
                                   "it to you again, or anyone else who opens this project can label it")
    assert ls.bring_back_skips(studio, ref, "ann") == 1
    again = ls.next_item(studio, ref, "ann")
    assert again["item"]["item_id"] == first["item_id"] and again["progress"]["skipped"] == 0
    assert studio.store.get_label_item(second["item_id"])["labels"] == 1  # the label given stays
    assert ls.bring_back_skips(studio, ref, "bob") == 0


def test_a_skip_others_have_filled_since_stays_a_skip(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=1, overlap=1)
    skipped, _ = label_next(studio, ref, "ann", "skip")
    ls.submit(studio, ref, skipped["item_id"], "bob", "left")  # bob gives the one label it wants
    done = ls.next_item(studio, ref, "ann")
    assert done["done_reason"] == "every item has its labels"
    assert (done["progress"]["skipped"], done["progress"]["returnable"]) == (1, 0)  # nothing to bring back
    assert ls.bring_back_skips(studio, ref, "ann") == 0
    assert [lb["choice"] for lb in studio.store.list_labels(ls.project(studio, ref)["id"])
            if lb["labeler"] == "ann"] == ["skip"]  # her skip is still on record


# --- sides --------------------------------------------------------------------------------------

def test_sides_are_shuffled_per_item_and_labeler_and_stable(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=24, overlap=2)
    items = studio.store.label_items(ref)
    ann = [ls.flipped(ref, it["id"], "ann") for it in items]
    bob = [ls.flipped(ref, it["id"], "bob") for it in items]
    assert len(set(ann)) == 2  # some items flipped for ann, some not
    assert ann != bob  # and not the same pattern for bob

    seen = {}
    for _ in range(len(items)):
        first = shown(studio, ref, "ann")
        assert shown(studio, ref, "ann") == first  # a reload shows the same sides
        item = studio.store.get_label_item(first["item_id"])
        assert first["flipped"] == ls.flipped(ref, item["id"], "ann")
        assert (first["left"], first["right"]) == ((item["answer_b"], item["answer_a"]) if first["flipped"]
                                                    else (item["answer_a"], item["answer_b"]))
        seen[first["item_id"]] = first
        ls.submit(studio, ref, first["item_id"], "ann", "left")
    labels = {lb["item_id"]: lb for lb in studio.store.list_labels(ref)}
    for item_id, item in seen.items():  # "left" means the answer shown on the left, whichever it was
        assert labels[item_id]["choice"] == ("b" if item["flipped"] else "a")
        assert labels[item_id]["flipped"] == item["flipped"]
    assert any(item["flipped"] for item in seen.values())


def test_an_answer_the_length_limit_cut_off_is_marked_on_its_side(studio):
    """Generated answers cut off at max_new_tokens were shown like finished ones: a labeler could take a
    missing end for the model's choice. The mark follows the answer to whichever side it is shown on."""
    from components.dataset_note import cut_chosen_note
    from components.label_tab import cut_mark, view

    items = [{"prompt": [{"role": "user", "content": f"Question {n}?"}], "answer_a": f"Finished {n}.",
              "answer_b": f"Cut {n}, and then", "cut_a": False, "cut_b": True, "model_a": "base:x",
              "model_b": "run:y"} for n in range(12)]
    # and one answer twice, cut both times: the import leaves that pair out, so its cut winner is not counted
    items.append({**items[0], "prompt": [{"role": "user", "content": "Question 12?"}], "answer_a": "Same, and",
                  "answer_b": "Same, and", "cut_a": True})
    studio.store.add_label_project(id="p1", name="cuts", overlap=1, status="ready", items=items,
                                   source={"kind": "two models", "models": ["base:x", "run:y"], "max_new_tokens": 64})
    twice = next(it["id"] for it in studio.store.label_items("p1") if it["answer_a"] == it["answer_b"])
    assert [(it["cut_a"], it["cut_b"]) for it in studio.store.label_items("p1") if it["id"] != twice] == \
        [(False, True)] * 12
    flips = []
    for _ in items:
        item = shown(studio, "p1", "ann")
        if item["item_id"] == twice:
            ls.submit(studio, "p1", item["item_id"], "ann", "left")
            continue
        flips.append(item["flipped"])
        assert (item["left_cut"], item["right_cut"]) == ((True, False) if item["flipped"] else (False, True))
        left, right = view(studio, "p1", "ann")[3:5]
        cut, whole = (left, right) if item["flipped"] else (right, left)
        assert cut.endswith(cut_mark(64)) and "Cut " in cut and "label-cut" not in whole
        ls.submit(studio, "p1", item["item_id"], "ann", "left")
    assert set(flips) == {True, False}  # seen on both sides
    # "left" won each time: the cut answer B won where it was on the left. The export says how many winners
    # stop mid-sentence (training on them teaches that)
    row = ls.export(studio, "p1")
    assert row["meta"]["origin"]["cut_chosen"] == sum(flips)
    assert cut_chosen_note(row) == (f" ⚠️ {sum(flips)} of the 12 winning answers were cut off (at the project's "
                                    "*Longest answer (tokens)*): training on an answer that stops mid-sentence "
                                    "teaches the model to stop there too. A project with a higher *Longest answer "
                                    "(tokens)* gives whole answers.")
    # chat votes merged in count too: a winning reply cut off in the Chat tab
    from studio import chat_service

    prompt = [{"role": "user", "content": "Chat question?"}]
    for unfinished in (["a"], []):
        chat_service.record_vote(studio, voter="ann", model_a="base:x", model_b="run:y", winner="a", blind=True,
                                 prompt_a=prompt, prompt_b=prompt, reply_a=f"Reply {len(unfinished)}, and",
                                 reply_b="Other.", settings={"unfinished": unfinished})
    row = ls.export(studio, "p1", with_votes=True)
    assert row["meta"]["origin"]["cut_chosen"] == sum(flips) + 1
    assert cut_chosen_note(row).startswith(f" ⚠️ {sum(flips) + 1} of the 14 winning answers were cut off (at the "
                                           "project's *Longest answer (tokens)*, or at the chat's *Max new tokens*, "
                                           "or by *Stop*)")
    # each cause gets its fix: a project's limit does nothing for a reply cut in the Chat tab
    assert cut_chosen_note(row).endswith("A project with a higher *Longest answer (tokens)* gives whole answers. "
                                         "Raise *Max new tokens* under the Chat tab's Generation settings for whole "
                                         "replies.")
    only_votes = {**row["meta"]["origin"], "cut_chosen": 1, "cut_votes": 1}
    assert cut_chosen_note({"meta": {"origin": only_votes}}) == (
        " ⚠️ 1 of the 14 winning answers was cut off (at the chat's *Max new tokens*, or by *Stop*): training on an "
        "answer that stops mid-sentence teaches the model to stop there too. Raise *Max new tokens* under the Chat "
        "tab's Generation settings for whole replies.")
    assert cut_mark(64) == ('<p class="label-cut"><i>✂ Cut off: the answer reached this project\'s longest answer '
                            "(64 tokens) before the model ended it.</i></p>")


def test_items_of_a_workspace_made_before_cut_offs_were_kept_read_as_whole(tmp_path):
    import sqlite3

    home = tmp_path / "home"
    home.mkdir()
    db = sqlite3.connect(home / "studio.db")
    db.execute("CREATE TABLE label_projects (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL, "
               "overlap INTEGER NOT NULL CHECK (overlap >= 1), source TEXT NOT NULL, status TEXT NOT NULL, "
               "job_id TEXT, error TEXT)")
    db.execute("CREATE TABLE label_items (id INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL, "
               "position INTEGER NOT NULL, prompt TEXT NOT NULL, answer_a TEXT NOT NULL, answer_b TEXT NOT NULL, "
               "model_a TEXT NOT NULL, model_b TEXT NOT NULL, labels INTEGER NOT NULL DEFAULT 0, "
               "UNIQUE (project_id, position))")
    db.execute("INSERT INTO label_projects VALUES ('p1', 'old', 1, 1, '{\"kind\": \"two models\"}', 'ready', NULL, NULL)")
    db.execute("INSERT INTO label_items (project_id, position, prompt, answer_a, answer_b, model_a, model_b) "
               "VALUES ('p1', 0, ?, 'A.', 'B.', 'base:x', 'run:y')", (json.dumps([{"role": "user", "content": "Q?"}]),))
    db.commit()
    db.close()
    studio = Studio(home)
    assert [(it["cut_a"], it["cut_b"]) for it in studio.store.label_items("p1")] == [(False, False)]
    item = shown(studio, "p1", "ann")
    assert (item["left_cut"], item["right_cut"]) == (False, False)


# --- concurrency --------------------------------------------------------------------------------

def test_concurrent_labelers_lose_and_duplicate_nothing(studio, tmp_path):
    labelers, per_labeler, overlap = 8, 60, 2
    ref = new_project(studio, tmp_path, n=300, overlap=overlap)
    acked: dict[str, list[int]] = {f"labeler{k}": [] for k in range(labelers)}
    errors: list[BaseException] = []
    start = threading.Barrier(labelers)

    def work(name):
        rng = random.Random(name)
        try:
            start.wait()
            for _ in range(per_labeler):
                item = shown(studio, ref, name)
                if item is None:
                    return
                acked[name].append(ls.submit(studio, ref, item["item_id"], name,
                                             rng.choice(["left", "right", "tie", "both_bad"])))
        except BaseException as err:  # noqa: BLE001 - every failure is a finding
            errors.append(err)

    threads = [threading.Thread(target=work, args=(name,)) for name in acked]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert {name: len(ids) for name, ids in acked.items()} == {name: per_labeler for name in acked}
    all_acked = [i for ids in acked.values() for i in ids]
    labels = studio.store.list_labels(ref)
    assert len(labels) == len(all_acked) == len(set(all_acked))  # none lost, none twice
    assert {lb["id"] for lb in labels} == set(all_acked)
    assert all(lb["labeler"] == name for name, ids in acked.items()
               for lb in labels if lb["id"] in set(ids))
    assert len({(lb["item_id"], lb["labeler"]) for lb in labels}) == len(labels)
    per_item = Counter(lb["item_id"] for lb in labels)
    assert max(per_item.values()) <= overlap
    assert {it["id"]: it["labels"] for it in studio.store.label_items(ref) if it["labels"]} == dict(per_item)
    assert studio.store.integrity_check() == "ok"


# --- bad input ----------------------------------------------------------------------------------

def test_pairs_file_missing_an_answer_is_refused_with_nothing_written(studio, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,response_a,response_b\nhi,hello,hey\nwhat time is it,noon,\nbye,ciao,see you\n")
    with pytest.raises(DataError) as err:
        ls.import_project(studio, name="p", path=path, overlap=2)
    assert str(err.value) == "pairs.csv, row 3, column 'response_b': is empty; expected text"
    assert studio.store.list_label_projects() == []

    path = tmp_path / "upload123.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response_a": "x", "response_b": "y"}) + "\n"
                    + json.dumps({"prompt": "b", "response_a": "x", "response_b": "y"}) + "\n"
                    + json.dumps({"prompt": "c", "response_a": "x"}) + "\n")
    with pytest.raises(DataError) as err:
        ls.import_project(studio, name="p", path=path, source_name="my pairs.jsonl")
    assert str(err.value) == ("my pairs.jsonl, line 3: missing column 'response_b' (a pair needs response_a "
                              "and response_b; found: prompt, response_a)")
    assert studio.store.list_label_projects() == []
    # and the name is still free: the refused imports left nothing behind
    assert ls.import_project(studio, name="p", path=pairs_file(tmp_path, 2))["items"] == 2


def test_duplicate_project_name_and_empty_labeler_are_refused(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=2, name="weekly review")
    with pytest.raises(LabelError) as err:
        ls.import_project(studio, name=" weekly review ", path=pairs_file(tmp_path, 3, "other.jsonl"))
    assert str(err.value) == "a labeling project named 'weekly review' already exists; pick another name"
    assert len(studio.store.list_label_projects()) == 1
    for name in ("", "   "):
        with pytest.raises(LabelError) as err:
            ls.next_item(studio, ref, name)
        assert str(err.value) == "enter your name as labeler first"
        with pytest.raises(LabelError) as err:
            ls.submit(studio, ref, 1, name, "left")
        assert str(err.value) == "enter your name as labeler first"
    with pytest.raises(LabelError) as err:
        ls.submit(studio, ref, 1, "ann", "maybe")
    assert str(err.value) == "'maybe' is not one of left, right, tie, both_bad, skip"
    assert studio.store.list_labels(ref) == []


# --- export -------------------------------------------------------------------------------------

# canonical choices by item position for labelers ann, bob, cat (overlap 3)
PLAN = {0: ("a", "a", "b"),                        # 2 vs 1: answer A wins, agreement 2/3
        1: ("b", "b", "b"),                        # unanimous: answer B wins
        2: ("tie", "tie", "tie"),                  # a tie: left out
        3: ("both_bad", "both_bad", "both_bad"),   # both bad: left out
        4: ("a", "b", "tie")}                      # no majority: left out
NAMES = ("ann", "bob", "cat")


@pytest.fixture
def voted(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=5, overlap=3, name="exp")
    label_until_done(studio, ref, NAMES, lambda name, item: screen(item, PLAN[item["position"]][NAMES.index(name)]))
    assert len(studio.store.list_labels(ref)) == 15
    return ref


def _turns(role, content):
    return [{"role": role, "content": content}]


def test_export_rows_by_majority(studio, voted):
    rows, origin = ls.export_rows(studio, voted)
    assert rows == [
        {"prompt": _turns("user", "question 0"), "chosen": _turns("assistant", "answer A 0"),
         "rejected": _turns("assistant", "answer B 0")},
        {"prompt": _turns("user", "question 1"), "chosen": _turns("assistant", "answer B 1"),
         "rejected": _turns("assistant", "answer A 1")}]
    assert origin["pairs"] == 2 and origin["labels"] == 15 and origin["votes"] == 0
    strict, _ = ls.export_rows(studio, voted, min_agreement=0.9)
    assert [r["prompt"] for r in strict] == [_turns("user", "question 1")]  # the 2-vs-1 item is dropped


def test_an_agreement_bar_outside_0_to_1_is_refused(studio, voted):
    """80 meant as 80% left out every item and said the project had no clear winner yet."""
    with pytest.raises(LabelError) as err:
        ls.export(studio, voted, min_agreement=80)
    assert str(err.value) == "min agreement 80 is not a share between 0 and 1 (for 80% write 0.8)"
    with pytest.raises(LabelError) as err:
        ls.export_rows(studio, voted, min_agreement=-0.5)
    assert str(err.value) == "min agreement -0.5 is not a share between 0 and 1"
    assert studio.store.list_datasets() == []


def test_an_item_one_person_labelled_does_not_pass_an_agreement_bar(studio, voted, tmp_path):
    """One label is 1 of 1 in agreement: it read 100% and passed every bar, so "keep items whose
    labelers agree at least 90%" kept items nobody else had looked at."""
    single = new_project(studio, tmp_path, n=3, overlap=2, name="single")
    label_until_done(studio, single, ["ann"], lambda name, item: screen(item, "a"))
    assert [agg["agreement"] for agg in labeling.aggregate(studio.store.list_labels(single)).values()] == [None] * 3
    rows, origin = ls.export_rows(studio, single)
    assert len(rows) == 3 and origin["alone"] == 0  # no bar: a majority of one is kept
    with pytest.raises(LabelError) as err:
        ls.export(studio, single, min_agreement=0.5)
    assert str(err.value) == ("project 'single' has no item with a clear winner yet at agreement 50% or more: "
                              "ties, 'both bad' and split items are left out, and 3 labelled by one person only "
                              "(agreement needs two)")
    assert [d["name"] for d in studio.store.list_datasets()] == []
    # a second labeler on one item: that item now has an agreement to measure, and passes
    item = shown(studio, single, "bob")
    ls.submit(studio, single, item["item_id"], "bob", screen(item, "a"))
    rows, origin = ls.export_rows(studio, single, min_agreement=0.9)
    assert len(rows) == 1 and origin["alone"] == 2


def test_exported_preference_dataset_is_trl_conversational(studio, voted):
    from datasets import load_dataset

    row = ls.export(studio, voted, kind="preference")
    data = load_dataset("parquet", data_files=row["path"])["train"]
    assert sorted(data.column_names) == ["chosen", "prompt", "rejected"]
    assert data.num_rows == 2
    for record in data:
        for column in ("prompt", "chosen", "rejected"):
            assert isinstance(record[column], list)
            assert all(set(turn) == {"role", "content"} for turn in record[column])
    assert data[0]["chosen"] == _turns("assistant", "answer A 0")
    assert row["meta"]["origin"]["project"] == "exp"
    # the same labels again: the dataset made then, and it says so ("Made" over a dataset that existed)
    again = ls.export(studio, voted, kind="preference", name="another name")
    assert (row["exported_before"], again["exported_before"], again["id"], again["name"]) == (
        False, True, row["id"], row["name"])


def test_exported_kto_dataset_has_two_bool_rows_per_pair(studio, voted):
    from datasets import load_dataset

    row = ls.export(studio, voted, kind="kto")
    data = load_dataset("parquet", data_files=row["path"])["train"]
    assert sorted(data.column_names) == ["completion", "label", "prompt"]
    assert data.features["label"].dtype == "bool"
    assert data["label"] == [True, False, True, False]
    assert data[0]["completion"] == _turns("assistant", "answer A 0")
    assert data[1]["completion"] == _turns("assistant", "answer B 0")


def test_export_with_chat_votes(studio, voted):
    common = {"voter": "dee", "model_a": "base:default", "model_b": "run:r1", "blind": True,
              "prompt_a": _turns("user", "a vote prompt"), "prompt_b": _turns("user", "a vote prompt"),
              "reply_a": "vote reply A", "reply_b": "vote reply B", "settings": {"temperature": 0.7}}
    decisive = studio.store.add_vote(winner="b", **common)
    studio.store.add_vote(winner="tie", **common)  # not a pair: left out
    rows, origin = ls.export_rows(studio, voted, with_votes=True)
    assert len(rows) == 3
    assert rows[-1] == {"prompt": _turns("user", "a vote prompt"), "chosen": _turns("assistant", "vote reply B"),
                        "rejected": _turns("assistant", "vote reply A")}
    assert origin["votes"] == 1 and origin["vote_ids"] == [decisive] and origin["pairs"] == 2
    assert len(ls.export_rows(studio, voted)[0]) == 2  # without votes unless asked


def test_kto_export_leaves_out_pairs_whose_two_answers_are_the_same(studio, voted):
    """One model sampled twice can give the same answer on both sides: as KTO rows that was the same reply
    marked good and bad at once (the preference import already drops such a pair, and says so)."""
    same = {"voter": "dee", "model_a": "base:default", "model_b": "run:r1", "blind": True,
            "prompt_a": _turns("user", "same?"), "prompt_b": _turns("user", "same?"),
            "reply_a": "The same reply.", "reply_b": "The same reply. ", "settings": {}}
    studio.store.add_vote(winner="a", **same)
    rows, origin = ls.export_rows(studio, voted, kind="kto", with_votes=True)
    assert [r["prompt"] for r in rows] == [_turns("user", f"question {i}") for i in (0, 0, 1, 1)]
    assert origin["same_answers"] == 1 and origin["votes"] == 1


def test_export_with_no_clear_winner_is_refused(studio, tmp_path):
    ref = new_project(studio, tmp_path, n=2, overlap=1, name="undecided")
    label_next(studio, ref, "ann", "tie")
    with pytest.raises(LabelError) as err:
        ls.export(studio, ref)
    assert str(err.value) == ("project 'undecided' has no item with a clear winner yet: ties, 'both bad' and "
                              "split items are left out")
    assert studio.store.list_datasets() == []


def test_train_on_labels_of_two_base_models_starts_from_the_one_that_won_more(studio, tmp_path):
    """A project that compared two base models set DPO up on the built-in model, to learn another model's answers;
    it starts from the base model compared whose answers won more items (Chat's votes do the same)."""
    path = tmp_path / "bases.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"question {k}", "response_a": f"answer A {k}",
                                        "response_b": f"answer B {k}", "model_a": "base:/models/one",
                                        "model_b": "base:/models/two"}) + "\n" for k in range(4)))
    ref = ls.import_project(studio, name="bases", path=path)["id"]
    label_until_done(studio, ref, ["ann"], lambda _name, item: screen(item, "a" if item["position"] == 0 else "b"))
    start = ls.training_start(studio, ref)
    assert start["model"] == "/models/two" and start["dataset"]["rows"] == 4


def test_a_reload_past_a_lapsed_hold_hands_out_another_item_once_others_have_it(studio, tmp_path):
    """Ann's hold lapsed and Bob was handed the item (overlap 1): Ann's reload handed it to her again, whether Bob
    had labelled it yet or not, and her label split a clear item into a disagreement the export leaves out."""
    import time

    from studio.store import LEASE_S

    t0 = time.time()
    for bob_labelled in (True, False):
        ref = new_project(studio, tmp_path, n=2, overlap=1, name=f"lapsed {bob_labelled}")
        item = studio.store.next_label_item(ref, "ann", 1, now=t0)
        later = t0 + LEASE_S + 1  # her hold has lapsed
        assert studio.store.next_label_item(ref, "bob", 1, now=later) == item
        if bob_labelled:
            studio.store.add_label(item_id=item, project_id=ref, labeler="bob", choice="a", flipped=False)
        again = studio.store.next_label_item(ref, "ann", 1, now=later + 1)  # her reload
        assert again is not None and again != item


def test_an_item_shown_again_past_its_lapsed_hold_is_held_afresh(studio, tmp_path):
    """Ann came back after 11 minutes to the item she held: it was on her screen, and Bob was handed it too a
    second later (overlap 1), because her hold kept its old time."""
    import time

    from studio.store import LEASE_S

    ref = new_project(studio, tmp_path, n=2, overlap=1, name="back")
    t0 = time.time()
    item = studio.store.next_label_item(ref, "ann", 1, now=t0)
    later = t0 + LEASE_S + 60
    assert studio.store.next_label_item(ref, "ann", 1, now=later) == item  # nobody else had it: hers again
    bobs = studio.store.next_label_item(ref, "bob", 1, now=later + 1)
    assert bobs is not None and bobs != item


# --- durability ---------------------------------------------------------------------------------

def test_labels_wait_for_the_disk_and_holds_do_not(studio, tmp_path):
    """A label is committed with synchronous=FULL (durable through a power cut), a hold with NORMAL.
    Checked on the connections this thread used for both: a PRAGMA re-run from the statement cache
    does nothing, so switching the level per transaction on one connection would silently stay
    at whichever level was set first."""
    ref = new_project(studio, tmp_path, n=3)
    label_next(studio, ref, "ann")
    label_next(studio, ref, "ann")
    with studio.store._connect() as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with studio.store._connect(durable=False) as db:
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


CHILD = """
import sys, time
from studio.core import Studio
from studio import label_service as ls

studio, ref = Studio(sys.argv[1]), sys.argv[2]
while True:
    out = ls.next_item(studio, ref, "ann")
    if out["item"] is None:
        break
    print(ls.submit(studio, ref, out["item"]["item_id"], "ann", "left"), flush=True)
time.sleep(600)
"""


def test_acknowledged_labels_survive_kill_9(tmp_path):
    home = tmp_path / "home"
    ref = new_project(Studio(home), tmp_path, n=400, overlap=1)
    wanted = 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home), ref], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    acked = []
    try:
        while len(acked) < wanted:
            line = child.stdout.readline()
            assert line, f"the labeling process ended early: {child.stderr.read()}"
            acked.append(int(line))
        os.kill(child.pid, signal.SIGKILL)  # while it is still labeling
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    fresh = Studio(home)
    assert fresh.store.integrity_check() == "ok"
    labels = fresh.store.list_labels(ref)
    assert set(acked) <= {lb["id"] for lb in labels}
    assert len(labels) == len({lb["item_id"] for lb in labels})
    per_item = Counter(lb["item_id"] for lb in labels)
    assert {it["id"]: it["labels"] for it in fresh.store.label_items(ref) if it["labels"]} == dict(per_item)
    # the workspace goes on: ann gets the item she held when the process died, or the next one
    item = shown(fresh, ref, "ann")
    assert item is not None and item["item_id"] not in per_item


def test_a_name_with_a_slash_is_refused_and_nothing_is_written(studio, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "p", "response_a": "x", "response_b": "y"}\n')
    with pytest.raises(LabelError, match=r"^the project name '\.\./out' has a slash; use letters, digits, spaces "
                                         r"and other punctuation$"):
        ls.import_project(studio, name="../out", path=pairs)
    with pytest.raises(LabelError, match=r"^the labeler name 'a/b' has a slash"):
        ls._labeler("a/b")
    assert studio.store.list_label_projects() == []


def test_a_half_written_answer_line_is_cut_before_more_are_appended(tmp_path):
    from pipelines.label_gen import drop_partial_line, read_candidates

    path = tmp_path / "candidates.jsonl"
    path.write_text('{"position": 0, "answer_a": "x", "answer_b": "y"}\n{"position": 1, "answ')
    with open(drop_partial_line(path), "a") as out:
        out.write('{"position": 1, "answer_a": "x", "answer_b": "z"}\n')
    assert sorted(read_candidates(tmp_path)) == [0, 1]


def test_the_note_of_a_project_answered_in_the_background_follows_it_to_its_end(studio, tmp_path):
    """It said "being answered in the background" after the table said ready, said nothing of a
    generation that stopped, and followed whichever project was picked rather than the one it was about."""
    import gradio as gr

    from components.label_projects import IN_BACKGROUND, answered_note

    ref = new_project(studio, tmp_path, n=2, name="made")
    said = f"Made **made**, picked above: 2 prompts {IN_BACKGROUND} (progress in the table)."
    for status, note in (("generating", gr.skip()),
                         ("ready", "**made** is ready: its answers are in; press *Start labeling*."),
                         ("failed", "**made** stopped answering (failed) at 2 of 2 prompts: the answered ones can "
                                    "be labelled; *Resume answering* goes on from the first prompt without "
                                    "answers.")):
        studio.store.set_label_project_status(ref, status)
        assert answered_note(studio, ref, said) == note, status
    assert answered_note(studio, ref, "Stopping: the answers so far are kept") == gr.skip()  # a newer note stays
    assert answered_note(studio, None, said) == gr.skip()


def test_the_overview_says_when_too_few_labels_test_the_position(studio, tmp_path):
    """"Left chosen 3 times, right 0 times." alone read as a finding (a walkthrough): below the labels the
    position check needs, the overview says it cannot tell yet."""
    from components.label_projects import summary
    from pipelines.labeling import POSITION_MIN_LABELS

    ref = new_project(studio, tmp_path, n=3)
    label_until_done(studio, ref, ["ann"])
    said = summary(studio, ref)[0]
    assert "Position check: left chosen 3 times, right 0 times (too few to tell whether the side sways " \
           f"labelers: the check needs {POSITION_MIN_LABELS} decisive labels)." in said


def test_an_export_larger_than_the_upload_limit_is_made(tmp_path):
    """The export is the studio's own file: held to the upload limit, a project's many long answers were
    refused at *Export to Data* with a size error naming a file the person never saw."""
    studio = Studio(tmp_path / "home", max_upload_bytes=1000)
    ref = new_project(studio, tmp_path, n=7)
    assert (tmp_path / "proj.jsonl").stat().st_size < 1000
    label_until_done(studio, ref, ["ann"])
    assert len("".join(json.dumps(r) + "\n" for r in ls.export_rows(studio, ref)[0])) > 1000
    assert ls.export(studio, ref)["rows"] == 7


def test_stop_and_resume_of_a_project_whose_job_folder_is_gone_say_so(studio):
    """The answering job's folder deleted (to free disk): Stop raised FileNotFoundError, Resume TypeError."""
    for pid, status in (("p-gen", "generating"), ("p-stop", "cancelled")):
        studio.store.add_label_project(id=pid, name=pid, overlap=1, status=status, job_id=f"g-{pid}",
                                       source={"kind": "two models", "models": ["a", "b"], "prompts": 5})
    gone = "the folder of its answering job ({}) is gone, and its prompts with it; the 0 answered stay to label"
    with pytest.raises(LabelError) as err:
        ls.cancel_generation(studio, "p-gen")
    assert str(err.value) == "project 'p-gen': " + gone.format(studio.run_dir("g-p-gen"))
    with pytest.raises(LabelError) as err:
        ls.resume_generation(studio, "p-stop")
    assert str(err.value) == "project 'p-stop': " + gone.format(studio.run_dir("g-p-stop"))
    assert ls.project(studio, "p-stop")["status"] == "cancelled" and not studio.run_dir("g-p-stop").exists()


def test_a_resume_whose_process_cannot_start_leaves_the_project_stopped(studio, monkeypatch):
    """The status was set to 'generating' before the spawn: a spawn that failed (no memory to fork) left the
    project 'answering: queued' for ever, Stop doing nothing and Resume disabled."""
    from pipelines.events import JOB, read_json, write_json

    studio.store.add_label_project(id="p-stop", name="p-stop", overlap=1, status="cancelled", job_id="g-p-stop",
                                   source={"kind": "two models", "models": ["a", "b"], "prompts": 5})
    job_dir = studio.run_dir("g-p-stop")
    job_dir.mkdir(parents=True)
    job = {"id": "g-p-stop", "runner": "pipelines.label_gen", "queued_at": 1.0, "sides": [{"spec": "a"}, {"spec": "b"}]}
    write_json(job_dir / JOB, job)

    def no_worker(*_args, **_kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(studio, "spawn", no_worker)
    with pytest.raises(LabelError) as err:
        ls.resume_generation(studio, "p-stop")
    assert str(err.value) == ("the answering process could not be started (Cannot allocate memory); project 'p-stop' "
                              "stays cancelled: resume it once the machine has room")
    assert ls.project(studio, "p-stop")["status"] == "cancelled"
    assert read_json(job_dir / JOB) == job


def test_a_labeler_waiting_on_items_others_hold_is_not_told_done_and_gets_them_when_a_hold_lapses(
        studio, tmp_path, monkeypatch):
    """Bob labelled what he could while Ann held item 1 (overlap 1): he was shown "✅ Done" and the tab stopped
    looking, so when her hold lapsed (she left) nothing brought him the item."""
    from components import label_tab
    from studio import store

    ref = new_project(studio, tmp_path, n=2, overlap=1, name="held")
    anns = shown(studio, ref, "ann")
    label_next(studio, ref, "bob")  # bob gets and labels the other item
    state, _line, prompt, *_ = label_tab.view(studio, ref, "bob")
    assert state["item"] is None and prompt.startswith("<h3>Nothing left for now</h3>")
    assert "or are on someone else&#x27;s screen" in prompt
    t0 = 1_000_000.0
    waiting = label_tab.answers_now(ls.progress(studio, ref, "bob"), now=t0)
    assert waiting is not None  # the timer keeps looking for him ...
    assert label_tab.answers_now(ls.progress(studio, ref, "bob"), now=t0 + label_tab.RECHECK_S) != waiting
    monkeypatch.setattr(store, "LEASE_S", -1)  # ... and when ann's hold lapses, her item comes to him
    state, *_ = label_tab.view(studio, ref, "bob")
    assert state["item"] == anns["item_id"]
    ls.submit(studio, ref, state["item"], "bob", "left")
    state, _line, prompt, *_ = label_tab.view(studio, ref, "bob")
    assert prompt.startswith("<h3>✅ Done</h3>") and label_tab.answers_now(ls.progress(studio, ref, "bob")) is None


def test_the_command_line_says_when_labels_were_exported_before(studio, voted, capsys):
    """`label export --name X` of labels exported before printed the first export's name with no word that X
    was not used."""
    from studio.cli import main

    home = ["--home", str(studio.home)]
    assert main(["label", "export", voted, "--name", "first", *home]) == 0
    capsys.readouterr()
    assert main(["label", "export", voted, "--name", "second", *home]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "these labels were exported before, as first (the name given, second, is not used)"
    assert err[1].startswith("first: ")
