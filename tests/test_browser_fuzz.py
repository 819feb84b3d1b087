"""Issue #18's fuzz corpus through the Data tab in a real browser: a sample of bad files, each
answered with the CLI's one sentence (file named) and nothing stored, and two tricky good ones."""

from __future__ import annotations

import os
import re

import pytest

from tests.fuzz_corpus import bad_cases, good_cases, path_of, write_corpus
from tests.test_browser import fill, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

# refused at the first look (binary, UTF-16, 1,200 unknown columns) and only when every row is read
# (a later row misses a field, no pair can teach, a header names a column twice); each takes ~15 s here
BAD_SAMPLE = ("photo.jsonl", "utf16.jsonl", "many_columns.csv", "missing_field.jsonl", "same_pairs.jsonl",
              "duplicate_columns.csv")
GOOD_SAMPLE = {"formulas.csv": "Detected prompt/completion",
               "conversational_pairs.jsonl": "Detected preference (prompt, chosen, rejected)"}


def test_bad_files_get_one_sentence_and_good_ones_import(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    write_corpus(tmp_path)
    cases = {c.name: c for c in bad_cases() + good_cases()}
    page.goto(server)
    page.get_by_role("tab", name="Data").click()
    fill(page, "data-model", tiny_model_dir)  # count tokens without converting the default model
    upload = page.locator("#data-upload input[type=file]")
    message = page.locator("#data-message")

    detected = page.locator("#data-detected")
    looked = re.compile("Cannot use this file|Cannot tell|Detected|look like")  # the first look is done

    def clear():
        page.locator("#data-upload button[aria-label='Clear']").click()
        expect(detected).to_have_text("", timeout=30_000)

    for name in BAD_SAMPLE:
        case = cases[name]
        before = (studio.list_datasets(), sorted(os.listdir(studio.datasets_dir)))
        upload.set_input_files(str(path_of(tmp_path, case)))
        expect(detected).to_contain_text(looked, timeout=30_000)
        page.click("#data-import")
        # the sentence's start (its end may hold the CLI's --map example, which Markdown may restyle)
        expect(message).to_contain_text(f"Not imported: {(case.says or case.has[0])[:100]}", timeout=30_000)
        shown = message.inner_text()
        assert "\n" not in shown.strip() and len(shown) < 700, shown  # one sentence, short
        assert (studio.list_datasets(), sorted(os.listdir(studio.datasets_dir))) == before
        clear()

    for name, says in GOOD_SAMPLE.items():
        upload.set_input_files(str(path_of(tmp_path, cases[name])))
        expect(detected).to_contain_text(says, timeout=30_000)
        page.click("#data-import")
        expect(message).to_contain_text(f"Imported {name.rsplit('.', 1)[0]}", timeout=30_000)
        page.locator("#data-upload button[aria-label='Clear']").click()
    expect(page.locator("#data-preview")).to_contain_text("What do you want?", timeout=30_000)
    assert sorted(d["name"] for d in studio.list_datasets()) == ["conversational_pairs", "formulas"]
    assert len(os.listdir(studio.datasets_dir)) == 2
