"""The Train form in a real browser: what was picked and typed survives a reload, and a setting every
method shares follows a change of method while method-specific ones (the learning rate) do not."""

from __future__ import annotations

import json
import re

import pytest

from components.form_memory import PREFIX
from pipelines.methods import METHODS
from studio.core import SAMPLES
from tests.test_browser import fill, page, server  # noqa: F401  (fixtures)
from tests.test_browser_data import drop_file
from tests.test_browser_rl import choose

pytestmark = pytest.mark.browser
SETTINGS_KEY = f"{PREFIX}settings"  # where the browser keeps every method's settings


def visible_value(page, elem_id):  # noqa: F811
    """The value of the field the shown method has (a hidden field is not on the page)."""
    return page.locator(f"#{elem_id}:visible input").first


def test_the_form_survives_a_reload_and_shared_edits_follow_the_method(server, page, studio, tiny_model_dir):  # noqa: F811
    from playwright.sync_api import expect

    from components.form_memory import defaults

    page.goto(server)
    expect(page.get_by_text("Fine-tune a language model")).to_be_visible(timeout=30_000)

    fill(page, "train-model", str(tiny_model_dir))
    fill(page, "param-num_train_epochs", 2)
    # the total time before Start follows the epochs
    expect(page.locator("#train-estimate")).to_contain_text("per epoch × 2", timeout=60_000)
    fill(page, "param-learning_rate", 0.005)
    choose(page, "train-method", "DoRA")
    # epochs (shared) came along; the learning rate is DoRA's own default
    expect(visible_value(page, "param-num_train_epochs")).to_have_value("2", timeout=30_000)
    expect(visible_value(page, "param-learning_rate")).to_have_value(str(defaults("dora")["learning_rate"]))
    # the estimate for DoRA (the server is busy while it measures the model; the edits saved meanwhile
    # reach the browser's storage late)
    expect(page.locator("#train-estimate")).to_contain_text("per epoch × 2", timeout=60_000)
    stored = page.evaluate(f"localStorage.getItem('{SETTINGS_KEY}')")
    fill_visible = visible_value(page, "param-max_length")
    fill_visible.fill("96")
    fill_visible.press("Tab")

    # a reload brings back the method and what was typed, for DoRA and for LoRA
    page.wait_for_function(f"localStorage.getItem('{SETTINGS_KEY}') !== {json.dumps(stored)}", timeout=30_000)
    page.reload()
    expect(page.locator("#train-method input")).to_have_value("DoRA", timeout=30_000)
    expect(page.locator("#train-model input")).to_have_value(str(tiny_model_dir))
    expect(visible_value(page, "param-max_length")).to_have_value("96", timeout=30_000)
    expect(visible_value(page, "param-num_train_epochs")).to_have_value("2")
    choose(page, "train-method", "LoRA")
    expect(visible_value(page, "param-learning_rate")).to_have_value("0.005", timeout=30_000)
    expect(visible_value(page, "param-max_length")).to_have_value("96", timeout=30_000)  # the DoRA edit followed back

    # a reload on a method that learns from other data (GRPO: prompts) shows that method whole: its
    # description and its reward functions (the change that follows the reload carried the dataset of
    # the method before, Gradio refused it, and the page kept LoRA's description with a red "Error")
    picks = page.evaluate(f"localStorage.getItem('{PREFIX}picks')")
    choose(page, "train-method", "GRPO")
    expect(page.locator("#reward-number")).to_be_visible(timeout=30_000)
    page.wait_for_function(f"localStorage.getItem('{PREFIX}picks') !== {json.dumps(picks)}", timeout=30_000)
    page.reload()
    expect(page.locator("#train-method input")).to_have_value("GRPO", timeout=30_000)
    expect(page.get_by_text(METHODS["grpo"].summary[:60])).to_be_visible(timeout=30_000)
    expect(page.locator("#reward-number")).to_be_visible()
    expect(page.get_by_text(METHODS["lora"].summary[:60])).to_have_count(0)
    expect(page.locator("[data-testid='toast-body'].error")).to_have_count(0)  # no refusal on the way
    assert studio.store.list_runs() == []


def test_a_model_picked_is_kept_while_its_estimate_still_measures(server, page, studio, tmp_path_factory,  # noqa: F811
                                                                   real_tokenizer_dir):
    """The pick used to be saved only after the estimate, which measures a new model for seconds: a
    reload meanwhile brought back the model before. The estimate is held here at the profiler it
    measures with, so the pick must be saved (and survive a reload) while it waits."""
    from playwright.sync_api import expect

    from pipelines import estimates
    from tests.conftest import _tiny

    fresh = _tiny(tmp_path_factory, real_tokenizer_dir, "unmeasured-llama", "Llama", rms_norm_eps=1e-5)
    page.goto(server)
    # the load's estimate (the built-in model is not prepared in a test workspace)
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    picks = page.evaluate(f"localStorage.getItem('{PREFIX}picks')")
    with estimates._PROFILER:  # a model not measured yet: its estimate waits here
        fill(page, "train-model", str(fresh))
        page.wait_for_function(f"localStorage.getItem('{PREFIX}picks') !== {json.dumps(picks)}", timeout=15_000)
        page.reload()
        expect(page.locator("#train-model input")).to_have_value(str(fresh), timeout=30_000)
    expect(page.locator("#train-estimate")).to_contain_text("per epoch", timeout=120_000)


def import_on_the_data_tab(page, put_file, detected: str, imported: str):  # noqa: F811
    """Import a file on the Data tab (`put_file` puts it in the upload box), then back to the Train tab."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Data").click()
    put_file()
    expect(page.locator("#data-detected")).to_contain_text(detected, timeout=30_000)
    page.click("#data-import")
    expect(page.locator("#data-message")).to_contain_text(imported, timeout=30_000)
    page.get_by_role("tab", name="Train").click()


def pick_dataset(page, option):  # noqa: F811
    """choose(), again if the list opened while the page was still replacing its choices (after a reload
    or a change of method, the option was not in it once)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for _ in range(3):
        try:
            return choose(page, "train-dataset", option)
        except (PlaywrightTimeout, AssertionError):
            page.mouse.click(1, 1)
    choose(page, "train-dataset", option)


def test_each_kind_of_data_comes_back_to_the_dataset_last_picked_for_it(server, page, studio, tmp_path):  # noqa: F811
    """DPO on the Sign-off pairs, then KTO (no data of its kind here) and GRPO, then DPO again: the
    Sign-off pairs, where the first sample came back before and a run was started on the wrong set.
    Kept over a reload and the quick run's change of method; a newer import of its kind wins."""
    from playwright.sync_api import expect

    signoff, pairs = (f"Sample: {SAMPLES[name][2]}" for name in ("signoff_preferences", "quillpad_preferences"))
    shown = page.locator("#train-dataset input")
    page.goto(server)
    # the load has settled (its estimate comes last), as a person reads the page before picking: a method
    # picked while it loads is test_a_method_picked_while_the_page_loads_offers_its_own_datasets
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    choose(page, "train-method", "DPO")
    expect(shown).to_have_value(pairs, timeout=30_000)  # DPO's list is in (a pick before it was replaced)
    pick_dataset(page, signoff)
    choose(page, "train-method", "KTO")
    expect(shown).to_have_value("", timeout=30_000)  # no KTO data imported
    choose(page, "train-method", "GRPO")
    expect(shown).to_have_value(f"Sample: {SAMPLES['arithmetic_prompts'][2]}", timeout=30_000)
    choose(page, "train-method", "DPO")
    expect(shown).to_have_value(signoff, timeout=30_000)

    # and after a reload (once the page has kept the LoRA pick it reloads on)
    picks = page.evaluate(f"localStorage.getItem('{PREFIX}picks')")
    choose(page, "train-method", "LoRA")
    expect(shown).to_have_value(f"Sample: {SAMPLES['quillpad_faq'][2]}", timeout=30_000)
    page.wait_for_function(f"localStorage.getItem('{PREFIX}picks') !== {json.dumps(picks)}", timeout=30_000)
    page.reload()
    expect(page.locator("#train-method input")).to_have_value("LoRA", timeout=30_000)
    # the reload's restore has settled (its estimate comes last): a switch meanwhile raced its change
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    choose(page, "train-method", "DPO")
    expect(shown).to_have_value(signoff, timeout=30_000)

    # the other pairs picked, then the quick run (LoRA, set with its dataset by the page): DPO comes back to them
    pick_dataset(page, pairs)
    page.click("#train-quick")
    expect(page.locator("#train-method input")).to_have_value("LoRA", timeout=30_000)
    choose(page, "train-method", "DPO")
    expect(shown).to_have_value(pairs, timeout=30_000)

    # pairs imported on the Data tab: they were imported to train on, over the sample picked before
    mine = tmp_path / "my_pairs.jsonl"
    mine.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."})
                            + "\n" for i in range(6)))
    choose(page, "train-method", "LoRA")
    import_on_the_data_tab(page, lambda: page.locator("#data-upload input[type=file]").set_input_files(str(mine)),
                           "Detected", "Imported my_pairs")
    choose(page, "train-method", "DPO")
    expect(shown).to_have_value("my_pairs (6 rows)", timeout=30_000)

    # examples imported, then the quick run pressed on LoRA (its method already shown: no change of method
    # runs): LoRA comes back to the FAQ sample the quick run set, not to the import before it
    examples = tmp_path / "my_examples.jsonl"
    examples.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
                                for i in range(6)))
    # dropped on the tab: it replaces the pairs in the upload box
    import_on_the_data_tab(page, lambda: drop_file(page, "#data-message", examples), "stored as sft data",
                           "Imported my_examples")
    choose(page, "train-method", "LoRA")
    expect(shown).to_have_value("my_examples (6 rows)", timeout=30_000)
    page.click("#train-quick")
    expect(page.locator("#train-setup")).to_contain_text("Set up a quick first run", timeout=30_000)
    expect(page.locator("#train-start-here")).to_be_visible()  # its Start, under the note (and the button pressed)
    expect(shown, "the quick run's dataset").to_have_value(f"Sample: {SAMPLES['quillpad_faq'][2]}", timeout=30_000)
    choose(page, "train-method", "DPO")
    expect(shown).to_have_value("my_pairs (6 rows)", timeout=30_000)
    # the quick run's note went with its recipe (it said "LoRA on the FAQ sample" over a DPO form), and its Start
    expect(page.locator("#train-setup")).not_to_contain_text("Set up a quick first run", timeout=10_000)
    expect(page.locator("#train-start-here")).to_be_hidden()
    choose(page, "train-method", "LoRA")
    expect(shown, "LoRA back after DPO").to_have_value(f"Sample: {SAMPLES['quillpad_faq'][2]}", timeout=30_000)
    assert studio.store.list_runs() == []


def test_a_change_of_method_answered_late_keeps_what_the_quick_run_set(server, page, studio, tmp_path):  # noqa: F811
    """The page sends one pick of a method as two changes, the second after the first's reply. In CI
    the second reached the server before the quick run was pressed and its answer came after the quick
    run's: it put back the dataset before (the import, not the quick run's FAQ sample), and the FAQ was
    not what LoRA came back to. Here that answer is held back until the quick run has answered."""
    from playwright.sync_api import expect

    faq = f"Sample: {SAMPLES['quillpad_faq'][2]}"
    examples = tmp_path / "my_examples.jsonl"
    examples.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
                                for i in range(6)))
    studio.import_dataset(examples, name="my_examples")
    shown = page.locator("#train-dataset input")
    page.goto(server)
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    choose(page, "train-method", "DPO")
    expect(shown).to_have_value(f"Sample: {SAMPLES['quillpad_preferences'][2]}", timeout=30_000)

    switch = page.evaluate("window.gradio_config.dependencies.find(d => d.api_name === 'on_method').id")
    sent, held = [], []

    def answer_the_second_late(route):
        sent_now = route.request.post_data_json or {}
        if sent_now.get("fn_index") != switch or (sent_now.get("data") or [None])[0] != "lora":
            return route.continue_()  # (DPO's second change can still be on its way)
        sent.append(route)
        if len(sent) == 2:  # run on the server now, its answer kept from the page for now
            held.append((route, route.fetch()))
        else:
            route.continue_()

    page.route("**/run/predict", answer_the_second_late)
    choose(page, "train-method", "LoRA")
    expect(shown).to_have_value("my_examples (6 rows)", timeout=30_000)  # the newest of its kind
    for _ in range(60):
        if held:
            break
        page.wait_for_timeout(500)
    if not held:  # (sent twice in every run before; once, under CI load, it was sent once: nothing to guard then)
        page.unroute("**/run/predict")
        pytest.skip(f"Gradio sent the pick's change {len(sent)} time(s) this run, not twice: the late second answer "
                    "this test holds back never came (if this is always so, this test and on_method's guard can go)")
    page.click("#train-quick")
    expect(page.locator("#train-setup")).to_contain_text("Set up a quick first run", timeout=30_000)
    expect(shown).to_have_value(faq, timeout=30_000)
    for route, response in held:
        route.fulfill(response=response)
    page.unroute("**/run/predict")
    page.wait_for_timeout(3_000)  # the late answer is in
    assert shown.input_value() == faq
    # and the FAQ is what LoRA comes back to
    choose(page, "train-method", "DPO")
    choose(page, "train-method", "LoRA")
    expect(shown).to_have_value(faq, timeout=30_000)
    # what the quick run asked for is used once: a dataset picked on LoRA since is what LoRA comes back to
    pick_dataset(page, "my_examples (6 rows)")
    choose(page, "train-method", "DPO")
    choose(page, "train-method", "LoRA")
    expect(shown).to_have_value("my_examples (6 rows)", timeout=30_000)


@pytest.mark.parametrize("held_event, sent_to", [("on_load", "**/queue/join*"), ("restore", "**/run/predict")])
def test_a_method_picked_while_the_page_loads_offers_its_own_datasets(server, page, studio, held_event,  # noqa: F811
                                                                       sent_to):
    """The load's dataset list, and the one of the restore of the kept form that follows it, are for the
    method the page showed when each was sent. Answered after a method was picked (a loaded machine, a
    person quicker than the load), they put the SFT datasets under it: under DPO the Sign-off pairs could
    not be picked, under GRPO (CI) the prompts imported. Each is held back here until DPO is picked."""
    from playwright.sync_api import expect

    signoff, pairs = (f"Sample: {SAMPLES[name][2]}" for name in ("signoff_preferences", "quillpad_preferences"))
    config = page.request.get(f"{server}/config").json()
    event = next(d["id"] for d in config["dependencies"] if d.get("api_name") == held_event)
    held = []

    def hold(route):
        if (route.request.post_data_json or {}).get("fn_index") == event and not held:
            held.append(route)
        else:
            route.continue_()

    page.route(sent_to, hold)
    page.goto(server)
    expect(page.get_by_text("Fine-tune a language model")).to_be_visible(timeout=30_000)
    for _ in range(120):  # sent, with LoRA shown (the restore once the load has answered)
        if held:
            break
        page.wait_for_timeout(500)
    assert held, f"the page's {held_event} was not held back"
    shown = page.locator("#train-dataset input")
    choose(page, "train-method", "DPO")
    expect(shown).to_have_value(pairs, timeout=30_000)
    held[0].continue_()
    page.unroute(sent_to)
    page.wait_for_timeout(5_000)  # its answer, and what follows it, are in
    expect(page.locator("#train-method input")).to_have_value("DPO")
    pick_dataset(page, signoff)
    expect(shown).to_have_value(signoff, timeout=30_000)
    assert studio.store.list_runs() == []


def test_what_was_typed_comes_back_after_a_reload_with_nothing_picked_from_a_list(server, page, studio):  # noqa: F811
    """The form came back from the kept settings only once a model, dataset or method had been picked:
    a newcomer's quick run (3 epochs) came back after a reload as the defaults' 8, and its run took 4:30
    instead of 1:40 (walkthrough). Typed values and the quick run's come back with nothing picked."""
    from playwright.sync_api import expect

    from components.train_tab import QUICK_RUN

    def kept_now():
        return page.evaluate(f"localStorage.getItem('{SETTINGS_KEY}')")

    page.goto(server)
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    stored = kept_now()
    fill(page, "param-num_train_epochs", 2)
    page.wait_for_function(f"localStorage.getItem('{SETTINGS_KEY}') !== {json.dumps(stored)}", timeout=30_000)
    page.reload()
    expect(visible_value(page, "param-num_train_epochs")).to_have_value("2", timeout=30_000)

    stored = kept_now()
    page.click("#train-quick")
    expect(page.locator("#train-setup")).to_contain_text("Set up a quick first run", timeout=30_000)
    expect(visible_value(page, "param-num_train_epochs")).to_have_value(f"{QUICK_RUN['num_train_epochs']:g}")
    page.wait_for_function(f"localStorage.getItem('{SETTINGS_KEY}') !== {json.dumps(stored)}", timeout=30_000)
    page.reload()
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    expect(visible_value(page, "param-num_train_epochs")).to_have_value(f"{QUICK_RUN['num_train_epochs']:g}",
                                                                        timeout=30_000)
    expect(visible_value(page, "param-learning_rate")).to_have_value(f"{QUICK_RUN['learning_rate']:g}")
    assert studio.store.list_runs() == []


def type_into(page, elem_id, value):  # noqa: F811
    """Typed into the shown method's field, then left with Tab (as a person does)."""
    box = visible_value(page, elem_id)
    box.fill(value)
    box.press("Tab")


def test_a_wrong_setting_is_said_at_once_and_goes_once_put_right(server, page, studio, tiny_model_dir):  # noqa: F811
    """A walkthrough set the learning rate to -1 and the epochs to 0: the estimate named the learning rate,
    kept naming it after it was put right, and the epochs were named only by a second Start. Now each wrong
    value is named as it is typed, both in one line, and the line is estimated again once they are right."""
    from playwright.sync_api import expect

    page.goto(server)
    expect(page.get_by_text("Fine-tune a language model")).to_be_visible(timeout=30_000)
    fill(page, "train-model", str(tiny_model_dir))
    estimate = page.locator("#train-estimate")
    expect(estimate).to_contain_text("per epoch", timeout=60_000)
    # (the page's load and the model's change ask for more than one estimate; on a busy machine one asked before
    # the typing below could land after the check of it, and put a plain estimate back: CI once)
    expect(estimate).not_to_contain_text(re.compile(r"queue|processing"), timeout=30_000)
    page.wait_for_timeout(2000)
    type_into(page, "param-learning_rate", "-1")  # (not a setting that changes the cost: it was not said before Start)
    expect(estimate).to_contain_text("Estimate unavailable: 'Learning rate' (learning_rate): expected a value from "
                                     "1e-07 to 1.0, got -1.0", timeout=30_000)
    type_into(page, "param-num_train_epochs", "0")
    expect(estimate).to_contain_text("got -1.0; 'Epochs' (num_train_epochs): expected a value from 0.1 to 100, "
                                     "got 0.0", timeout=30_000)
    page.click("#start-training")
    expect(page.locator("#train-message")).to_contain_text("'Learning rate' (learning_rate)", timeout=30_000)
    expect(page.locator("#train-message")).to_contain_text("'Epochs' (num_train_epochs)")
    assert studio.store.list_runs() == []
    type_into(page, "param-num_train_epochs", "1")
    expect(estimate).not_to_contain_text("Epochs", timeout=30_000)
    expect(estimate).to_contain_text("'Learning rate'")
    type_into(page, "param-learning_rate", "0.0005")  # put right: the estimate comes back
    expect(estimate).to_contain_text("per epoch", timeout=30_000)
    expect(estimate).not_to_contain_text("unavailable")
