"""The Method tab in a real browser: the comparison table fills in for the chosen model, a
method's card explains it with its expected memory, and 'Train with this method' hands it to
the Train tab, whose estimate line follows."""

from __future__ import annotations

import re

import pytest

from pipelines.methods import METHODS
from studio import method_service as ms
from tests.test_browser import fill, page, server  # noqa: F401 (fixtures)
from tests.test_browser_data import choose

pytestmark = pytest.mark.browser


def test_compare_choose_and_train_with_a_method(server, page, studio, small_vocab_model_dir):  # noqa: F811
    from playwright.sync_api import expect

    tiny_model_dir = small_vocab_model_dir  # the table probes every method: a small output layer keeps it quick

    page.goto(server)
    expect(page.get_by_text("Fine-tune a language model")).to_be_visible(timeout=30_000)
    fill(page, "train-model", str(tiny_model_dir))
    estimate = page.locator("#train-estimate")
    expect(estimate).to_contain_text("Expected peak memory", timeout=60_000)
    expect(estimate).to_contain_text("fits in your")

    page.get_by_role("tab", name="Method").click()
    table, progress = page.locator("#method-table"), page.locator("#method-progress")
    expect(progress).to_contain_text("Measuring each method on this machine", timeout=30_000)  # says it is busy
    for method in METHODS.values():  # every method gets its row, filled in as it is measured
        expect(table).to_contain_text(method.label, timeout=180_000)
    expect(progress).to_contain_text(f"All {len(METHODS)} methods measured", timeout=30_000)
    expect(table).to_contain_text("100.00%")  # full fine-tuning trains every weight
    # which methods train on the data chosen in Train (the FAQ's examples): marked, and counted
    sft = sum(m.data_kind == "sft" for m in METHODS.values())
    expect(progress).to_contain_text(f"{sft} of them train on sft data like the dataset chosen in Train")
    expect(table).to_contain_text("SFT ✓ your data")
    expect(table.get_by_text("PREFERENCE", exact=True).first).to_be_visible()
    card = page.locator("#method-card")
    expect(card).to_contain_text("When to use:", timeout=30_000)
    expect(card.locator("h3")).to_have_text("LoRA")  # not "LoRA (LoRA)"
    page.get_by_text("Named in the field, not trainable here").click()  # and why, for this model
    elsewhere = page.locator("#method-elsewhere")
    for name in ("HyperTuning", "ESFT", "Quiet-STaR"):
        expect(elsewhere).to_contain_text(name)
    expect(elsewhere).to_contain_text(f"'{tiny_model_dir}' is a dense model (no experts in its configuration)")

    # a click on a row opens that method's card
    table.get_by_text("QLoRA", exact=True).click()
    expect(page.locator("#method-choice input")).to_have_value("QLoRA", timeout=30_000)
    expect(card).to_contain_text(METHODS["qlora"].summary[:40], timeout=30_000)
    expect(card.locator("h3")).to_have_text("QLoRA (LoRA family)")

    choose(page, "method-choice", "DoRA")
    expect(card).to_contain_text(METHODS["dora"].summary[:40], timeout=30_000)
    expect(card).to_contain_text("fits in your")
    page.locator("#method-use").click()

    expect(page.locator("#train-method input")).to_have_value("DoRA", timeout=30_000)
    expect(page.locator("#start-training")).to_be_visible()
    expect(estimate).to_contain_text("Expected peak memory", timeout=60_000)

    # back on Method, its picker and card are on the Train tab's method (they showed LoRA)
    page.get_by_role("tab", name="Method").click()
    expect(page.locator("#method-choice input")).to_have_value("DoRA", timeout=30_000)
    expect(card.locator("h3")).to_have_text("DoRA (LoRA family)", timeout=30_000)

    # a reload opens Method again once the Train form is back: opened at once, it measured for the page's
    # first model and dataset (the built-in model, the FAQ sample) while the table said "chosen in Train"
    expect(card).to_contain_text("At its default settings on this model:", timeout=30_000)
    # the card's own words (read while an update was under way, it held Gradio's timer: "0.4s")
    words = card.locator("h3, p")
    expect(card.locator(".progress-text")).to_have_count(0, timeout=30_000)
    before = words.all_inner_texts()
    page.reload()
    # (it opens once the page's load has brought the form back: on a loaded CI machine that took over 30 s)
    expect(page.locator('#studio-tabs [data-tab-id="method"]')).to_have_attribute("aria-selected", "true",
                                                                                 timeout=90_000)
    expect(page.locator("#train-model input")).to_have_value(str(tiny_model_dir), timeout=30_000)
    expect(card).to_contain_text("At its default settings on this model:", timeout=60_000)
    expect(words).to_have_text(before, timeout=30_000)


def test_help_me_choose_advises_and_fills_the_train_form(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    import json

    from playwright.sync_api import expect

    pairs = tmp_path / "my_pairs.jsonl"  # the user's own preference pairs, imported before
    pairs.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"A kind answer {i}.",
                                         "rejected": f"No. {i}"}) + "\n" for i in range(12)))
    studio.import_dataset(pairs)
    page.goto(server)
    expect(page.get_by_text("Fine-tune a language model")).to_be_visible(timeout=30_000)
    fill(page, "train-model", str(tiny_model_dir))
    fill(page, "param-num_train_epochs", 2)  # an edit of LoRA's the advice replaces
    expect(page.locator("#train-estimate")).to_contain_text("Expected peak memory", timeout=60_000)

    page.get_by_role("tab", name="Method").click()
    page.get_by_text("Help me choose").click()
    page.get_by_text("Change its style or format").click()
    page.click("#advisor-ask")
    answer = page.locator("#advisor-answer")
    expect(answer).to_contain_text("Use LoRA", timeout=120_000)
    expect(answer).to_contain_text("Rank 8: a style or format is a small change")
    expect(answer).to_contain_text("8 epochs because your set has 108 rows to train on (12 more are held out")  # the FAQ
    page.click("#advisor-apply")

    expect(page.locator("#train-method input")).to_have_value("LoRA", timeout=30_000)
    expect(page.locator("#param-r input").first).to_have_value("8")
    expect(page.locator("#param-num_train_epochs input").first).to_have_value("8")
    expect(page.locator("#param-max_length input").first).to_have_value("128")
    expect(page.locator("#start-training")).to_be_visible()

    # a second question asked while the first is answered: the last one is answered (it was dropped,
    # and the old advice stood under the new question)
    page.get_by_role("tab", name="Method").click()
    page.get_by_text("Make it prefer better answers").click()
    expect(answer).to_be_empty()  # the advice answered another question
    page.click("#advisor-ask")
    page.get_by_text("Teach it facts").click()
    page.click("#advisor-ask")
    expect(answer).to_contain_text("Rank 16: facts need room", timeout=120_000)
    expect(answer).not_to_contain_text("DPO")

    # pairs asked for while Train holds examples: the advice is for the user's own pairs, and applying
    # it trains on them (not on the bundled sample pairs)
    page.get_by_text("Make it prefer better answers").click()
    page.click("#advisor-ask")
    expect(answer).to_contain_text("For your dataset my_pairs (preference data, 12 rows): the one chosen, "
                                   "Quillpad support FAQ, is sft data", timeout=120_000)
    page.click("#advisor-apply")
    expect(page.locator("#train-method input")).to_have_value("DPO", timeout=30_000)
    expect(page.locator("#train-dataset input")).to_have_value("my_pairs (12 rows)")


def test_measuring_the_methods_waits_while_a_run_trains(server, page, studio, tiny_model_dir, tiny_params,  # noqa: F811
                                                        tmp_path):
    import json
    import shutil

    from playwright.sync_api import expect

    # a model of its own shape: none of its methods measured yet in this test session
    fresh = tmp_path / "fresh-tiny"
    shutil.copytree(tiny_model_dir, fresh)
    config = json.loads((fresh / "config.json").read_text())
    (fresh / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1.1e-5}))
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params={**tiny_params, "num_train_epochs": 100})

    page.goto(server)
    fill(page, "train-model", str(fresh))
    page.get_by_role("tab", name="Method").click()
    progress = page.locator("#method-progress")
    expect(progress).to_contain_text("0 of", timeout=30_000)
    expect(progress).to_contain_text("Measuring the rest waits while a run trains (it would slow the run down)",
                                     timeout=60_000)
    studio.cancel(run_id)
    assert studio.wait(run_id, poll_s=0.5)["status"] in ("cancelled", "completed")
    expect(progress).to_contain_text(re.compile(r"Measuring each method on this machine: \d+ of \d+ done"),
                                     timeout=60_000)
    # another tab stops it: what was measured is kept, nothing more is
    page.get_by_role("tab", name="Train").click()
    counts = []  # (the method being measured when the tab changed is finished: seconds)
    for _ in range(7):
        counts.append(sum(ms.measured(studio, str(fresh), key) for key in METHODS))
        page.wait_for_timeout(3000)
    assert counts[-1] == counts[-4] < len(METHODS), counts  # nothing measured in the last 9 s
