"""The Data tab in a real browser: a good file imports and previews, a file with unknown columns
is mapped for the user (question/answer), and a bad file gets the same one sentence as the CLI, with nothing stored."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from studio.core import SAMPLES_DIR
from tests.test_browser import fill, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def choose(browser_page, elem_id, option):
    """Pick an option of a dropdown (the Method tab's tests use it too)."""
    from playwright.sync_api import expect

    browser_page.locator(f"#{elem_id} input").click()
    browser_page.get_by_role("option", name=option, exact=True).click()
    # the list closes before the next dropdown opens (otherwise two lists offer the same name)
    expect(browser_page.get_by_role("option")).to_have_count(0)


def drop_file(browser_page, selector, path):
    """Drop a file on an element, as a person drags one there from their desktop."""
    browser_page.locator(selector).first.evaluate("""(element, [name, text]) => {
        const carried = new DataTransfer();
        carried.items.add(new File([text], name, {type: "text/csv"}));
        for (const type of ["dragenter", "dragover", "drop"])
            element.dispatchEvent(new DragEvent(type, {dataTransfer: carried, bubbles: true, cancelable: true}));
    }""", [path.name, path.read_text()])


def open_with(page, server, model_dir, source):
    """The Data tab, counting with `model_dir`'s tokenizer, with `source` uploaded."""
    page.goto(server)
    page.get_by_role("tab", name="Data").click()
    fill(page, "data-model", model_dir)
    page.locator("#data-upload input[type=file]").set_input_files(str(source))


def test_upload_good_mapped_and_bad_files(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    alpaca = tmp_path / "recipes.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"Give step {i}", "input": "", "output": f"Step {i}."}) + "\n"
                              for i in range(30)))
    faq = tmp_path / "faq.csv"
    faq.write_text("question,answer\nWhat is the battery life?,About 19 days.\n=1+1,Formulas stay text.\n")
    bad = tmp_path / "ratings.jsonl"
    bad.write_text(json.dumps({"prompt": "Q", "completion": "A", "label": True}) + "\n"
                   + json.dumps({"prompt": "Q", "completion": "B", "label": "maybe"}) + "\n")

    page.goto(server)
    page.get_by_role("tab", name="Data").click()
    fill(page, "data-model", tiny_model_dir)  # count tokens without converting the default model
    # tables without rows stay hidden (Gradio would show columns named 1, 2, 3)
    expect(page.locator("#data-raw")).to_be_hidden()
    expect(page.locator("#data-preview")).to_be_hidden()

    # a good file: detected, imported, previewed with statistics and the rendered example
    page.locator("#data-upload input[type=file]").set_input_files(str(alpaca))
    expect(page.locator("#data-detected")).to_contain_text("Detected Alpaca", timeout=30_000)
    expect(page.locator("#data-raw")).to_contain_text("Give step 0")
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text("Imported recipes", timeout=30_000)
    expect(page.locator("#data-summary")).to_contain_text("30 rows of sft data", timeout=120_000)  # first use prepares the built-in model (its tokenizer counts)
    expect(page.locator("#data-summary")).to_contain_text("0 rows are over the max length")
    expect(page.locator("#data-example")).to_contain_text("Step 0.")
    expect(page.locator("#data-lengths .main-svg").first).to_be_visible()
    assert [d["name"] for d in studio.list_datasets()] == ["recipes"]

    # question/answer columns: mapped for the user (one click: Import). The file is dropped on the table
    # of the dataset shown, with the first file still in the box: it replaces it (the table took it, and
    # nothing happened)
    drop_file(page, "#data-preview", faq)
    expect(page.locator("#data-upload")).to_contain_text(re.compile(r"faq\s*\.csv"), timeout=30_000)
    expect(page.locator("#data-detected")).to_contain_text(
        re.compile("look like a question and its answer|Detected prompt/completion"), timeout=30_000)
    expect(page.locator("#data-map-prompt input")).to_have_value("question")
    expect(page.locator("#data-map-completion input")).to_have_value("answer")
    # the RL prompts' target is named for what it holds: 'answer: (not mapped)' read as the answers left out
    expect(page.locator("#data-map-completion")).to_contain_text("completion (the reply to learn)")
    expect(page.locator("#data-map-answer")).to_contain_text("answer (RL prompts: the reference to check by)")
    expect(page.locator("#data-detected")).not_to_contain_text("--map")
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text("Imported faq", timeout=30_000)
    expect(page.locator("#data-preview")).to_contain_text("=1+1")
    # the Train tab is on it (LoRA trains on examples): it stayed on the FAQ sample, picked by hand after
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-dataset input")).to_have_value(re.compile(r"^faq \(\d+ rows\)$"), timeout=30_000)
    page.get_by_role("tab", name="Data").click()

    # replies with thumbs up/down: the marks are mapped to KTO's label, not dropped
    page.locator("#data-upload button[aria-label='Clear']").click()
    thumbs = tmp_path / "thumbs.csv"
    thumbs.write_text("prompt,completion,rating\nReset?,Hold it 10 s.,up\nWaterproof?,No.,down\n")
    page.locator("#data-upload input[type=file]").set_input_files(str(thumbs))
    expect(page.locator("#data-detected")).to_contain_text("Column rating holds good/bad marks", timeout=30_000)
    expect(page.locator("#data-map-label input")).to_have_value("rating")
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text("2 rows of kto data", timeout=30_000)
    page.get_by_role("tab", name="Train").click()  # (and stays on the examples: LoRA does not train on thumbs)
    expect(page.locator("#train-dataset input")).to_have_value(re.compile(r"^faq \(\d+ rows\)$"), timeout=30_000)
    page.get_by_role("tab", name="Data").click()

    # a file that cannot be read as a table, after the mapped one: its own message, no page error
    # (the mapping kept 'question', which this file's choices lack, and the page refused it); the
    # look before Import and Import name the same first bad row (row 3, before row 4's extra cell)
    page.locator("#data-upload button[aria-label='Clear']").click()
    expect(page.locator("#data-map-prompt input")).to_have_value("(not mapped)")
    expect(page.locator("#data-map-completion input")).to_have_value("(not mapped)")
    broken = tmp_path / "bad_rows.csv"
    broken.write_text("prompt,completion\nHi,Hello\n,Missing prompt\nQ3,A3,extra\n")
    page.locator("#data-upload input[type=file]").set_input_files(str(broken))
    expect(page.locator("#data-detected")).to_contain_text(
        "Import would stop here: bad_rows.csv, row 3, column 'prompt': is empty", timeout=30_000)
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text(
        "Not imported: bad_rows.csv, row 3, column 'prompt': is empty", timeout=30_000)
    expect(page.locator(".toast-body")).to_have_count(0)
    # ... or, asked to, without the rows that cannot be read, said with the first of them
    page.get_by_role("button", name="Name, duplicates, held-out split").click()
    page.locator("#data-skip-bad input").check()
    # the first look follows the box: the row is left out, no longer said to stop Import
    expect(page.locator("#data-detected")).to_contain_text(
        "it leaves out rows that cannot be read, as Skip rows that cannot be read asks (2 rows among the first rows read; "
        "the first of them: row 3, column 'prompt': is empty", timeout=30_000)
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text(
        "1 row of sft data from bad_rows.csv", timeout=30_000)
    expect(page.locator("#data-message")).to_contain_text(
        "2 rows skipped that could not be read (the first: row 3, column 'prompt': is empty; expected text)")
    page.locator("#data-skip-bad input").uncheck()
    expect(page.locator("#data-detected")).to_contain_text("Import would stop here: bad_rows.csv, row 3", timeout=30_000)

    # a bad file: one sentence naming file, line and column; nothing stored
    page.locator("#data-upload button[aria-label='Clear']").click()
    expect(page.locator("#data-message")).not_to_contain_text("Not imported")  # it was about the file cleared
    page.locator("#data-upload input[type=file]").set_input_files(str(bad))
    expect(page.locator("#data-detected")).to_contain_text("Detected KTO", timeout=30_000)
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text(
        'Not imported: ratings.jsonl, line 2, column \'label\': expected true or false, got "maybe"', timeout=30_000)
    assert sorted(d["name"] for d in studio.list_datasets()) == ["bad_rows", "faq", "recipes", "thumbs"]
    assert len(list(studio.datasets_dir.iterdir())) == 4

    # malformed JSON: the slip in plain words, and the line's text around it shown as it is in the file (its
    # <b> as typed, in a code span), not as the page's Markdown or HTML
    page.locator("#data-upload button[aria-label='Clear']").click()
    slip = tmp_path / "slip.jsonl"
    slip.write_text('{"prompt": "Q", "completion": "<b>Hi</b> *x*",}\n')
    page.locator("#data-upload input[type=file]").set_input_files(str(slip))
    expect(page.locator("#data-detected")).to_contain_text(
        "slip.jsonl, line 1: malformed JSON at character 47: a comma before the closing }: JSON allows no comma "
        "after the last item; the text there:", timeout=30_000)
    expect(page.locator("#data-detected code")).to_have_text('…etion": "<b>Hi</b> *x*",▸}')
    assert len(list(studio.datasets_dir.iterdir())) == 4  # (bad_rows, imported without its unreadable rows)


def test_a_preference_pair_shows_both_replies(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    """The rendered example of a pair shows the preferred reply (made more likely) and the rejected one (made
    less likely), not only the preferred one."""
    from playwright.sync_api import expect

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Kind answer {i}.",
                                         "rejected": f"Rude answer {i}."}) + "\n" for i in range(4)))
    open_with(page, server, tiny_model_dir, pairs)
    expect(page.locator("#data-detected")).to_contain_text("Detected", timeout=30_000)
    page.get_by_role("button", name="Name, duplicates, held-out split").click()
    fill(page, "data-name", "kind pairs")
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text("Imported kind pairs", timeout=30_000)
    # the name was this import's: the next file is not imported under it too
    expect(page.locator("#data-name textarea, #data-name input").first).to_have_value("")
    example = page.locator("#data-example")
    expect(example).to_contain_text("Kind answer 0.", timeout=30_000)
    expect(example).to_contain_text("Rude answer 0.")
    expect(example).to_contain_text("rejected reply (made less likely)")  # the legend names each part

    # a reload shows the same dataset, counted with the same model (it was blank, then the built-in model's)
    page.reload()
    page.get_by_role("tab", name="Data").click()
    expect(page.locator("#data-summary")).to_contain_text("pairs", timeout=30_000)
    expect(page.locator("#data-summary")).to_contain_text(f"Tokens per example with {tiny_model_dir}'s tokenizer")
    expect(example).to_contain_text("Rude answer 0.")
    expect(page.locator("#data-model input, #data-model textarea").first).to_have_value(str(tiny_model_dir))


@pytest.mark.slow
def test_the_first_look_says_it_prepares_the_built_in_model(server, page, studio, tmp_path):  # noqa: F811
    """The first token counts with the built-in model convert it (seconds to a minute): the page said only
    "processing" meanwhile. It now says what it is doing, with the rows and summary, then shows the counts."""
    from playwright.sync_api import expect

    from studio.method_service import PREPARING

    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
                            for i in range(4)))
    page.goto(server)
    # the page's load has settled (its estimate waits for the built-in model), as a person reads it first
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-upload input[type=file]").set_input_files(str(rows))
    expect(page.locator("#data-detected")).to_contain_text("Detected", timeout=30_000)
    page.click("#data-import")
    expect(page.get_by_text(PREPARING).first).to_be_visible(timeout=30_000)
    # the summary and the stored rows need no tokenizer: shown at once (the sentence alone was, half a minute)
    expect(page.locator("#data-summary")).to_contain_text("4 rows of sft data")
    expect(page.locator("#data-preview")).to_contain_text("Question 0?")
    # a reload meanwhile shows the dataset again
    page.reload()
    page.get_by_role("tab", name="Data").click()
    expect(page.locator("#data-datasets input")).to_have_value("qa — sft, 4 rows", timeout=30_000)
    expect(page.locator("#data-summary")).to_contain_text("Tokens per example with **default**'s tokenizer".replace(
        "**", ""), timeout=120_000)
    expect(page.get_by_text(PREPARING)).to_have_count(0)


def test_delete_a_dataset_after_saying_what_it_touches(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    """Delete asks first (Keep it keeps it); Delete it removes the files and takes the dataset off the Data
    tab's list and the Train tab's, which shows another dataset in its place."""
    from playwright.sync_api import expect

    recipes = tmp_path / "recipes.jsonl"
    recipes.write_text("".join(json.dumps({"prompt": f"Give step {i}", "completion": f"Step {i}."}) + "\n"
                               for i in range(30)))
    row = studio.import_dataset(recipes)
    page.goto(server)
    choose(page, "train-dataset", "recipes (30 rows)")  # the Train tab trains on it
    page.get_by_role("tab", name="Label").click()  # and a labeling project is being made from its prompts
    page.get_by_role("tab", name="New project").click()
    choose(page, "label-new-dataset", "recipes (sft, 30 rows)")

    # made after the page (another window, the command line): listed when the Data tab is opened
    studio.import_dataset(SAMPLES_DIR / "quillpad_faq.jsonl")
    page.get_by_role("tab", name="Data").click()
    # this browser's first look at the tab: the newest of the person's own datasets is shown (the tab was
    # empty), not the sample stored after it, once its tokens can be counted with no conversion of the
    # built-in model first (not prepared in this workspace). The opening's answer first: on a busy machine (CI)
    # the page sent it after the tokenizer typed next, and it counted with that one
    page.locator("#data-datasets input").click()
    expect(page.get_by_role("option", name="Sample: Quillpad support FAQ — sft, 120 rows")).to_be_visible(
        timeout=30_000)
    page.keyboard.press("Escape")
    expect(page.get_by_role("option")).to_have_count(0)
    fill(page, "data-model", tiny_model_dir)
    expect(page.locator("#data-datasets input")).to_have_value("")
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("tab", name="Data").click()
    expect(page.locator("#data-datasets input")).to_have_value("recipes — sft, 30 rows")
    page.locator("#data-datasets input").click()
    expect(page.get_by_role("option", name="Sample: Quillpad support FAQ — sft, 120 rows")).to_be_visible()
    page.get_by_role("option", name="recipes — sft, 30 rows").click()
    expect(page.locator("#data-summary")).to_contain_text("30 rows of sft data", timeout=30_000)
    question = page.locator("#data-delete-question")
    page.click("#data-delete")
    expect(question).to_have_text("Delete recipes (30 rows of sft data)? The studio's copy of it is deleted (the file "
                                  "it was imported from is not touched) and it leaves every list; no run learned from "
                                  "it. This cannot be undone.", timeout=30_000)
    page.click("#data-delete-no")
    expect(question).to_be_hidden()
    assert Path(row["path"]).is_file()

    page.click("#data-delete")
    page.click("#data-delete-yes")
    expect(page.locator("#data-delete-message")).to_have_text("Deleted recipes: no run learned from it.",
                                                              timeout=30_000)
    expect(question).to_be_hidden()
    expect(page.locator("#data-datasets input")).to_have_value("")
    expect(page.locator("#data-summary")).to_contain_text("Pick a dataset")
    page.click("#data-delete")
    expect(page.locator("#data-delete-message")).to_have_text("Pick a dataset above to delete it.", timeout=30_000)
    page.locator("#data-datasets input").click()
    expect(page.get_by_role("option", name="recipes — sft, 30 rows")).to_have_count(0)
    page.get_by_role("option", name="Sample: Quillpad support FAQ — sft, 120 rows").click()
    expect(page.locator("#data-delete-message")).to_have_text("")  # about no dataset picked: gone with that
    assert [d["name"] for d in studio.list_datasets()] == ["quillpad_faq"] and not Path(row["path"]).exists()

    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#train-dataset input")).to_have_value(re.compile("^Sample: Quillpad support FAQ"))
    page.locator("#train-dataset input").click()
    expect(page.get_by_role("option", name="recipes (30 rows)")).to_have_count(0)

    # the labeling project's pick is gone too: Create asks for a dataset (Gradio refused the deleted one)
    page.get_by_role("tab", name="Label").click()
    page.get_by_role("tab", name="New project").click()
    expect(page.locator("#label-new-dataset input")).to_have_value("", timeout=30_000)
    fill(page, "label-new-name", "steps")
    page.click("#label-create")
    expect(page.locator("#label-new-message")).to_have_text(
        "Could not create the project: pick a dataset for the prompts", timeout=30_000)


def test_a_pairs_tables_show_every_column_side_by_side(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    """The file's first records and the stored rows of preference pairs: the columns share the table's width
    (sized by their text, a long prompt took it all and pushed chosen and rejected out of sight)."""
    from playwright.sync_api import expect

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({
        "prompt": f"Question {i}: " + "tell me everything about the warranty, the battery and the export formats " * 2,
        "chosen": f"Answer {i}, kept short.", "rejected": f"Other {i}."}) + "\n" for i in range(5)))
    open_with(page, server, tiny_model_dir, pairs)
    expect(page.locator("#data-raw")).to_contain_text("Other 0.", timeout=30_000)
    page.click("#data-import")
    expect(page.locator("#data-preview")).to_contain_text("Other 0.", timeout=60_000)
    for table in ("#data-raw", "#data-preview"):
        box = page.locator(table).bounding_box()
        headers = dict(page.locator(table).evaluate(
            "e => Array.from(e.querySelectorAll('th')).map(h => [h.innerText.trim(), h.getBoundingClientRect().right])"))
        assert {"prompt", "chosen", "rejected"} <= set(headers), headers
        assert all(right <= box["x"] + box["width"] + 1 for right in headers.values()), (table, headers, box)


def test_a_conversation_shows_every_reply_as_learned(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    """A chat transcript of several replies: the summary says every reply is learned, and the example marks
    the first reply learned as well as the last (it was context, and only the last reply was learned)."""
    from playwright.sync_api import expect

    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"Ticket {i}: colour?"}, {"role": "assistant", "content": "Teal, sir."},
        {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "Glad to help."}]}) + "\n"
        for i in range(3)))
    open_with(page, server, tiny_model_dir, chats)
    expect(page.locator("#data-detected")).to_contain_text("Detected", timeout=30_000)
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text("3 multi-turn conversations (every reply is learned)",
                                                          timeout=30_000)
    example = page.locator("#data-example")
    expect(example).to_contain_text("Glad to help.", timeout=30_000)
    colour = """(said) => [...document.querySelectorAll('#data-example .token')]
        .filter(s => s.innerText.includes(said)).map(s => s.style.backgroundColor)"""
    first, between, last = (page.evaluate(colour, said) for said in ("Teal, sir.", "Thanks.", "Glad to help."))
    # the legend's colours: learned green, context grey
    assert first == last == ["rgb(220, 252, 231)"] and between == ["rgba(128, 128, 128, 0.5)"]
    # another row, picked by its number
    expect(example).to_contain_text("Ticket 0:")
    expect(page.get_by_text("Row 1 of 3, exactly as training sees it")).to_be_visible()
    page.locator("#data-example-row input").fill("3")
    expect(example).to_contain_text("Ticket 2:", timeout=30_000)
    expect(page.get_by_text("Row 3 of 3, exactly as training sees it")).to_be_visible()
