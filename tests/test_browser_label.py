"""Two labelers in two browser contexts label one project with the keyboard: a choice per key, undo,
skip and tie; each gets every item at most once, both answers shuffled per labeler; then the
overview shows their agreement and the export hands a preference dataset to the Train tab."""

from __future__ import annotations

import json

import pytest

from components.label_tab import MIN_LOOK_S
from studio import label_service as ls
from tests.test_browser import CHROMIUM, fill, server  # noqa: F401  (the server fixture)
from tests.test_browser_data import choose

pytestmark = pytest.mark.browser

PAIRS = [
    {"prompt": f"Question {n}?", "response_a": f"Good answer {n}.", "response_b": f"Bad answer {n}.",
     "model_a": "good", "model_b": "bad"} for n in range(1, 5)
]


@pytest.fixture
def browser():
    import shutil

    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        yield browser
        browser.close()


def open_label_tab(browser, url, name, project_label):
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    page.goto(url)
    page.get_by_role("tab", name="Label").click()
    box = page.locator("#label-labeler textarea, #label-labeler input").first
    box.fill(name)
    page.locator("#label-project input").click()
    page.get_by_role("option", name=project_label).click()
    page.click("#label-start")
    expect(page.locator("#label-progress")).to_contain_text(f"{name}: 0 labelled", timeout=30_000)
    return page


def press(page, key, said, name, labelled, read=False):
    """A key, then wait for its answer: the message and this labeler's new count (the same message
    twice in a row would otherwise be read before the next item arrives)."""
    from playwright.sync_api import expect

    page.locator("#label-prompt").click()  # focus on the page, not in a text field
    if not read:  # a person reads the item first (faster is taken for a double press)
        page.wait_for_timeout(1000 * MIN_LOOK_S)
    page.keyboard.press(key)
    counts = labelled if isinstance(labelled, str) else f"{labelled} labelled"  # or "2 labelled, 1 skipped"
    expect(page.locator("#label-progress")).to_contain_text(f"{name}: {counts}", timeout=30_000)
    expect(page.locator("#label-message")).to_contain_text(said, timeout=30_000)


def being_answered(studio, project_id: str, name: str, prompts: int, question: str):
    """A project whose two models' answers are coming in, as a generation job adds them; returns
    answered(n, status=None), which adds prompt n's answers (and the project's new status, at its end)."""
    studio.store.add_label_project(id=project_id, name=name, overlap=1, status="generating",
                                   source={"kind": "two models", "models": ["a", "b"], "prompts": prompts})

    def answered(n, status=None):
        studio.store.add_label_items(project_id, [{
            "position": n, "prompt": [{"role": "user", "content": question.format(n=n)}],
            "answer_a": f"Answer A {n}.", "answer_b": f"Answer B {n}.", "model_a": "a", "model_b": "b"}], status)
    return answered


def shown_item(studio, project_id, page, name):
    """The item on the page, found by its prompt; and whether its answer A is on the right."""
    text = page.locator("#label-prompt").inner_text()
    item = next(it for it in studio.store.label_items(project_id) if it["prompt"][0]["content"] in text)
    return item, ls.flipped(project_id, item["id"], name)


def test_two_labelers_with_the_keyboard(server, browser, studio, tmp_path):
    from playwright.sync_api import expect

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))

    # the first labeler makes the project from a pairs file in the New project view
    ann = browser.new_context().new_page()
    ann.goto(server)
    ann.get_by_role("tab", name="Label").click()
    # before any project, the view says what it is for and how to begin (it was an empty grey bar)
    expect(ann.locator("#label-prompt")).to_contain_text("Pick a project above (or make one under New project), "
                                                         "type your name and press Start labeling.", timeout=30_000)
    ann.get_by_role("tab", name="New project").click()
    # typed and left with Tab, as a person does (a fill without leaving the box was once not taken: the
    # project was made with 1 per item, under load in CI)
    overlap = ann.locator("#label-new-overlap input")
    overlap.fill("2")
    overlap.press("Tab")
    expect(overlap).to_have_value("2")
    ann.get_by_label("A file with two answers per prompt").check()
    ann.locator("#label-new-pairs input[type=file]").set_input_files(str(pairs))
    ann.click("#label-create")  # no name yet: refused, and the refusal goes once one is typed
    expect(ann.locator("#label-new-message")).to_contain_text("Could not create the project: give the project a name",
                                                              timeout=30_000)
    ann.locator("#label-new-name input, #label-new-name textarea").first.fill("answers")
    expect(ann.locator("#label-new-message")).not_to_contain_text("Could not create", timeout=10_000)
    ann.click("#label-create")
    expect(ann.locator("#label-new-message")).to_contain_text("Made answers with 4 items, picked above",
                                                              timeout=30_000)
    project = ls.project(studio, "answers")
    label = "answers (4 items, 2 labelers each)"
    # the new project is the one picked: Start labeling works on it at once
    expect(ann.locator("#label-project input")).to_have_value(label, timeout=10_000)
    # pressed here without a name, Start shows the Label view with its answer (it answered in the hidden view)
    ann.click("#label-start")
    expect(ann.locator("#label-message")).to_contain_text("Enter your name first", timeout=10_000)
    expect(ann.locator("#label-message")).to_be_visible()
    expect(ann.locator("#label-prompt")).to_contain_text("type your name and press Start labeling")  # (went blank)
    ann.close()

    ann = open_label_tab(browser, server, "ann", label)
    bob = open_label_tab(browser, server, "bob", label)

    # ann: left (key 1), then undo (key u) brings the same item back, then a tie (key 3)
    first, _flip = shown_item(studio, project["id"], ann, "ann")
    reason = ann.locator("#label-reason textarea, #label-reason input").first
    reason.fill("clearer steps")
    press(ann, "1", "Saved: left is better (with your reason)", "ann", 1)
    expect(reason).to_have_value("")
    press(ann, "u", "Took back your last label", "ann", 0)
    assert shown_item(studio, project["id"], ann, "ann")[0]["id"] == first["id"]
    expect(reason).to_have_value("clearer steps")  # the reason came back with the item
    press(ann, "3", "Saved: a tie (with your reason)", "ann", 1, read=True)  # the item Undo brought back was read
    # bob labels every item: the good answer each time, wherever it is shown. His first key goes down twice
    # (a double press, a held key): the second came as the next item appeared, so it is not saved on it
    item, flip = shown_item(studio, project["id"], bob, "bob")
    press(bob, "2" if flip else "1", "is better", "bob", 1)
    # (pressed as soon as the first press's answer shows: on a loaded CI machine that took longer than the
    # look time itself, and the second press was saved; a longer look for it keeps it a double press)
    from components import label_tab

    try:
        label_tab.MIN_LOOK_S = 10.0
        bob.keyboard.press("2" if flip else "1")
        expect(bob.locator("#label-message")).to_contain_text("Not saved: that came", timeout=30_000)
    finally:
        label_tab.MIN_LOOK_S = MIN_LOOK_S
    expect(bob.locator("#label-message")).to_contain_text("too soon to have read it")
    expect(bob.locator("#label-progress")).to_contain_text("bob: 1 labelled")
    assert [lb["item_id"] for lb in studio.store.list_labels(project["id"]) if lb["labeler"] == "bob"] == [item["id"]]
    for n in range(2, 5):
        item, flip = shown_item(studio, project["id"], bob, "bob")
        expect(bob.locator("#label-left-text")).to_contain_text("Bad" if flip else "Good")
        press(bob, "2" if flip else "1", "right is better" if flip else "left is better", "bob", n)
    expect(bob.locator("#label-prompt")).to_contain_text("Done", timeout=30_000)
    # ann: a skip (key s: counted apart from her labels), then the good answer on the rest
    skipped, _flip = shown_item(studio, project["id"], ann, "ann")
    press(ann, "s", "Saved: skipped", "ann", "1 labelled, 1 skipped")
    done = 1
    while "Done" not in ann.locator("#label-prompt").inner_text():
        item, flip = shown_item(studio, project["id"], ann, "ann")
        done += 1
        press(ann, "2" if flip else "1", "is better", "ann", f"{done} labelled, 1 skipped")
    expect(ann.locator("#label-prompt")).to_contain_text("you have labelled every item you can and skipped 1")
    # the skipped item comes back when she asks, and she skips it again
    ann.get_by_role("button", name="Bring back my skips (1)").click()
    expect(ann.locator("#label-message")).to_contain_text("Brought back 1 skipped item", timeout=30_000)
    assert shown_item(studio, project["id"], ann, "ann")[0]["id"] == skipped["id"]
    press(ann, "s", "Saved: skipped", "ann", f"{done} labelled, 1 skipped")
    expect(ann.locator("#label-prompt")).to_contain_text("Done")

    labels = studio.store.list_labels(project["id"])
    by = {(lb["labeler"], lb["item_id"]): lb["choice"] for lb in labels}
    assert len(by) == len(labels) == 8  # nobody got an item twice
    assert sum(lb["labeler"] == "bob" for lb in labels) == 4
    assert all(choice == "a" for (who, _i), choice in by.items() if who == "bob")
    assert by[("ann", first["id"])] == "tie" and sorted(by.values()).count("skip") == 1
    assert all(it["labels"] <= 2 for it in studio.store.label_items(project["id"]))

    # the overview: both labelers, their agreement, the models revealed
    ann.get_by_role("tab", name="Overview and export").click()  # counted as it opens: no Refresh needed
    expect(ann.locator("#label-summary")).to_contain_text("7 labels", timeout=30_000)
    expect(ann.locator("#label-kappa")).to_contain_text("ann & bob")
    expect(ann.locator("#label-winrates")).to_contain_text("good")
    # ... and the labels become DPO training data in the Train tab
    fill(ann, "label-export-name", "ann and bob's picks")  # the name the dataset is made under
    ann.click("#label-train")
    expect(ann.locator("#train-method input")).to_have_value("DPO", timeout=30_000)
    dataset = studio.list_datasets()[0]
    assert dataset["kind"] == "preference" and dataset["rows"] == 3  # the tied item has no majority
    assert dataset["name"] == "ann and bob's picks"
    expect(ann.locator("#train-dataset input")).to_have_value(f"{dataset['name']} (3 rows)")
    expect(ann.locator("#train-setup")).to_contain_text("3 preference pairs from the labels. Set to DPO on it")
    choose(ann, "train-method", "ORPO")  # the person's own pick: "Set to DPO… press Start" would mislead now
    expect(ann.locator("#train-setup")).to_have_text("", timeout=10_000)


def test_a_project_answered_in_the_background_says_when_it_is_ready(server, browser, studio, tiny_model_dir):
    """The note made with the project said its prompts "are being answered in the background" after the
    table said ready: it now says the project is ready."""
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    page.goto(server)
    page.get_by_role("tab", name="Label").click()
    # no project yet: Start says so first (it asked for a name, which would not have helped)
    page.click("#label-start")
    expect(page.locator("#label-message")).to_have_text("Pick a project above (or make one under New project).",
                                                        timeout=30_000)
    page.get_by_role("tab", name="New project").click()
    # nothing to stop or resume with no project picked (both looked pressable)
    expect(page.locator("#label-cancel-generation")).to_be_disabled()
    expect(page.locator("#label-resume-generation")).to_be_disabled()
    fill(page, "label-new-name", "sampled")
    # with only the built-in model to offer, it answers twice (two models were it on both sides, refused)
    expect(page.get_by_label("One model answers twice (sampled)")).to_be_checked()
    expect(page.locator("#label-new-model-b")).to_be_hidden()
    # its one model picker is "Model" ("Model 1" asked where the second was)
    expect(page.locator("#label-new-model-a [data-testid=block-info]")).to_have_text("Model", timeout=10_000)
    page.get_by_label("Typed here").check()
    # (a prompt typed twice made two items of it, without a word)
    fill(page, "label-new-typed", "How long is the warranty?\nCan I export to PDF?\nHow long is the warranty?")
    fill(page, "label-new-model-a", f"base:{tiny_model_dir}")
    page.locator("#label-new-model-a input").press("Enter")
    # a look at another tab keeps the model picked (opening Label put the default pair back)
    page.get_by_role("tab", name="Chat").click()
    page.get_by_role("tab", name="Label").click()
    expect(page.locator("#label-new-model-a input")).to_have_value(f"base:{tiny_model_dir}", timeout=30_000)
    page.locator("#label-new-max-tokens input[type=number]").fill("16")
    page.locator("#label-new-max-tokens input[type=number]").press("Enter")
    page.click("#label-create")
    expect(page.locator("#label-new-message")).to_contain_text("2 prompts (1 typed again was left out) are being "
                                                               "answered in the background",
                                                               timeout=30_000)
    expect(page.locator("#label-new-message")).to_contain_text("sampled is ready", timeout=180_000)
    assert ls.project(studio, "sampled")["status"] == "ready"
    expect(page.locator("#label-cancel-generation")).to_be_disabled()  # answered: nothing to stop
    expect(page.locator("#label-resume-generation")).to_be_disabled()

    # a reload opens the Label tab again (it opened Train), with what opening it shows: the project made
    # since the page was built is offered
    page.reload()
    expect(page.locator('#studio-tabs [data-tab-id="label"]')).to_have_attribute("aria-selected", "true",
                                                                                timeout=30_000)
    page.locator("#label-project input").click()
    expect(page.get_by_role("option", name="sampled (2 items, 1 labeler each)")).to_be_visible(timeout=30_000)

    # an answer the 16-token limit cut off says so under it (its end is missing, not the model's choice)
    page.get_by_role("option", name="sampled (2 items, 1 labeler each)").click()
    page.locator("#label-labeler textarea, #label-labeler input").first.fill("cat")
    page.click("#label-start")
    expect(page.locator("#label-progress")).to_contain_text("cat: 0 labelled", timeout=30_000)
    item, flip = shown_item(studio, ls.project(studio, "sampled")["id"], page, "cat")
    cuts = (item["cut_b"], item["cut_a"]) if flip else (item["cut_a"], item["cut_b"])
    for side, cut in zip(("left", "right"), cuts):
        mark = page.locator(f"#label-{side}-text .label-cut")
        expect(mark).to_have_count(int(cut))
        if cut:
            expect(mark).to_have_text("✂ Cut off: the answer reached this project's longest answer (16 tokens) "
                                      "before the model ended it.")
    assert item["cut_a"] or item["cut_b"], "the tiny model should run on past 16 tokens"

    # a reload keeps the project picked and shows where this labeler is in it (it had to be picked again)
    page.reload()
    expect(page.locator("#label-project input")).to_have_value("sampled (2 items, 1 labeler each)", timeout=30_000)
    expect(page.locator("#label-progress")).to_contain_text("cat: 0 labelled", timeout=30_000)
    expect(page.locator("#label-left")).to_be_enabled()


def test_answers_that_come_while_the_labeler_waits_are_shown_without_a_press(server, browser, studio):
    """The Label view follows a project being answered, with no press: the first answer replaces "Waiting
    for the first answer" (it said "no answers yet" until Start was pressed again), the next one replaces
    "Nothing left for now", a stop and a resume are said as they happen, and with an item in hand only the
    progress line moves."""
    from playwright.sync_api import expect

    answered = being_answered(studio, "p-live", "live", 5, "Question {n} answered meanwhile?")

    page = open_label_tab(browser, server, "ann", "live (0 items, 1 labeler each, answering)")
    prompt, progress = page.locator("#label-prompt"), page.locator("#label-progress")
    expect(prompt).to_contain_text("Waiting for the first answer")
    expect(prompt).to_contain_text("5 more prompts are being answered: each appears here as soon as it is answered")
    expect(page.locator("#label-left")).to_be_disabled()

    answered(0)
    expect(prompt).to_contain_text("Question 0 answered meanwhile?", timeout=15_000)
    expect(page.locator("#label-project input")).to_have_value("live (1 item, 1 labeler each, answering)",
                                                               timeout=15_000)
    expect(progress).to_contain_text("(1 item × 1) · 4 more prompts being answered")
    press(page, "1", "is better", "ann", 1)
    expect(prompt).to_contain_text("Nothing left for now")

    answered(1, status="cancelled")  # the last answer before a stop
    expect(prompt).to_contain_text("Question 1 answered meanwhile?", timeout=15_000)
    press(page, "1", "is better", "ann", 2)
    expect(prompt).to_contain_text("answering was stopped with 3 prompts left: Resume answering under New "
                                   "project adds them")
    expect(progress).to_contain_text("(2 items × 1) · 3 more prompts not answered (answering stopped)")

    studio.store.set_label_project_status("p-live", "generating")  # resumed
    expect(prompt).to_contain_text("3 more prompts are being answered", timeout=15_000)
    answered(2)
    expect(prompt).to_contain_text("Question 2 answered meanwhile?", timeout=15_000)
    answered(3)  # with an item in hand: the line moves, the item stays
    expect(progress).to_contain_text("(4 items × 1) · 1 more prompt being answered", timeout=15_000)
    expect(prompt).to_contain_text("Question 2 answered meanwhile?")
    press(page, "2", "is better", "ann", 3)
    assert [lb["item_id"] for lb in studio.store.list_labels("p-live")] == [
        it["id"] for it in studio.store.label_items("p-live")[:3]]


def test_a_long_and_a_short_answer_start_at_one_height(server, browser, studio):  # noqa: F811
    """The shorter answer sat lower than the longer one beside it (its heading took the difference): a
    labeler's eye jumped between them. Both start on one line, as tall as each other."""
    from playwright.sync_api import expect

    studio.store.add_label_project(id="p-len", name="lengths", overlap=1, status="ready",
                                   source={"kind": "two models", "models": ["a", "b"], "prompts": 1})
    studio.store.add_label_items("p-len", [{
        "position": 0, "prompt": [{"role": "user", "content": "How long is the warranty?"}],
        "answer_a": "It lasts a long time. " * 30, "answer_b": "27 months.", "model_a": "a", "model_b": "b"}], "ready")
    page = open_label_tab(browser, server, "ann", "lengths (1 item, 1 labeler each)")
    expect(page.locator("#label-right-text")).not_to_be_empty(timeout=30_000)
    left, right = (page.locator(f"#label-{side}-text").bounding_box() for side in ("left", "right"))
    assert abs(left["y"] - right["y"]) < 2 and abs(left["height"] - right["height"]) < 2, (left, right)


def test_names_show_as_typed(server, browser, studio, tmp_path, tiny_model_dir):
    """A project named `Tone <img src=x onerror=…>` showed a broken image in every note about it, and a dataset
    named `My prompts <b>test</b>` showed "test" in bold: names show as typed, in the notes and in refusals
    that quote them."""
    from playwright.sync_api import expect

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    preferences = tmp_path / "preferences.jsonl"
    preferences.write_text("".join(json.dumps({"prompt": p["prompt"], "chosen": p["response_a"],
                                               "rejected": p["response_b"]}) + "\n" for p in PAIRS))
    page = browser.new_context().new_page()
    page.goto(server)
    page.get_by_role("tab", name="Data").click()
    fill(page, "data-model", tiny_model_dir)  # (token counts without converting the built-in model)
    page.locator("#data-upload input[type=file]").set_input_files(str(preferences))
    expect(page.locator("#data-detected")).to_contain_text("Detected", timeout=30_000)
    page.get_by_role("button", name="Name, duplicates, held-out split").click()
    data_name = "My prompts <b>test</b> & *stars*"
    fill(page, "data-name", data_name)
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text(f"Imported {data_name}", timeout=30_000)
    expect(page.locator("#data-summary")).to_contain_text(data_name, timeout=30_000)
    assert page.locator("#data-message b, #data-message em, #data-summary em").count() == 0

    page.get_by_role("tab", name="Label").click()
    page.get_by_role("tab", name="New project").click()
    name = "Tone <img src=x onerror=alert(1)> _test_"
    page.get_by_label("A file with two answers per prompt").check()
    page.locator("#label-new-pairs input[type=file]").set_input_files(str(pairs))
    fill(page, "label-new-name", name)
    page.click("#label-create")
    message = page.locator("#label-new-message")
    expect(message).to_contain_text(f"Made {name} with 4 items", timeout=30_000)
    assert message.locator("img").count() == 0
    page.click("#label-create")  # pressed again: still one project, named as typed
    expect(message).to_contain_text(f"Made {name}, picked above (Create was pressed again", timeout=30_000)
    assert message.locator("img").count() == 0


def test_the_overview_follows_answers_coming_in(server, browser, studio):
    """Opened while the last prompt was being answered, the overview said "11 items … 1 more prompt is being
    answered" beside the list's 12 until Refresh was pressed: it follows the answers now, and the end."""
    from playwright.sync_api import expect

    answered = being_answered(studio, "p-follow", "follow", 2, "Question {n}?")

    answered(0)
    page = open_label_tab(browser, server, "ann", "follow (1 item, 1 labeler each, answering)")
    page.get_by_role("tab", name="Overview and export").click()
    summary = page.locator("#label-summary")
    expect(summary).to_contain_text("1 items, 0 with all their labels", timeout=30_000)
    expect(summary).to_contain_text("1 more prompt is being answered")
    answered(1, "ready")
    expect(summary).to_contain_text("2 items, 0 with all their labels", timeout=30_000)
    expect(summary).not_to_contain_text("being answered")
