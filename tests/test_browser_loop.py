"""The loop in a real browser: Chat results -> 'Train on these preferences' -> the Train tab set to
DPO on the votes, starting from the voted run -> Start -> the finished run shows its lineage ->
'Compare with the previous model' opens a blind battle of the new run against its parent."""

from __future__ import annotations

import re

import pytest

from components.form_memory import defaults
from studio import chat_service
from tests.conftest import FAQ
from tests.test_browser import fill, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def voted_parent(studio, tiny_model_dir, tiny_params) -> str:
    """A finished LoRA run and two blind votes between it and its base, on two questions (two votes on one
    question would leave nothing held out that the run never trained on)."""
    parent = studio.start_run(model=str(tiny_model_dir), dataset=studio.import_dataset(FAQ)["id"], method="lora",
                              params={**tiny_params, "num_train_epochs": 0.2})
    assert studio.wait(parent, poll_s=0.5)["status"] == "completed"
    for winner, question, (a, b) in (("a", "How long is the warranty?", ("27 months.", "No idea.")),
                                     ("b", "How do I reset it?", ("Ask later.", "Hold power 12 s."))):
        prompt = [{"role": "user", "content": question}]
        chat_service.record_vote(studio, voter="me", model_a=f"run:{parent}", model_b=f"base:{tiny_model_dir}",
                                 winner=winner, blind=True, prompt_a=prompt, prompt_b=prompt, reply_a=a,
                                 reply_b=b, settings={})
    return parent


def test_votes_to_training_to_a_blind_rematch(server, page, studio, tiny_model_dir, tiny_params):  # noqa: F811
    from playwright.sync_api import expect

    parent = voted_parent(studio, tiny_model_dir, tiny_params)
    page.goto(server)
    # a quick SFT setting: one epoch (shared settings follow a change of method picked by hand)
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    fill(page, "param-num_train_epochs", 1)
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Results and export").click()
    fill(page, "chat-export-name", "my warranty votes")  # the name the dataset is made under
    page.click("#chat-train-prefs")
    expect(page.locator("#train-method input")).to_have_value("DPO", timeout=30_000)
    # the Train tab from its top, where what was set shows (it opened scrolled to where the button was)
    expect(page.locator("#train-model")).to_be_in_viewport(timeout=10_000)
    expect(page.locator("#train-model input")).to_have_value(f"Result of run {parent}: LoRA on Quillpad support FAQ")
    dataset = studio.list_datasets()[0]
    assert dataset["kind"] == "preference" and dataset["rows"] == 2 and dataset["name"] == "my warranty votes"
    expect(page.locator("#train-dataset input")).to_have_value(f"{dataset['name']} (2 rows)")
    # ... but not into the preference run set up for you: it starts from DPO's own settings, with the
    # epochs two votes need to make about 10 steps (DPO's default made a 2-step run of a few votes)
    assert defaults("dpo")["num_train_epochs"] < 10
    expect(page.locator("#param-num_train_epochs:visible input").first).to_have_value("10")
    # why, above what it set, in view as the tab opens (under Start it was below the fold)
    setup = page.locator("#train-setup")
    expect(setup).to_contain_text(
        "Set to 10 epochs: 1 pair trains (1 held out to measure the run), 1 training step per epoch")
    expect(setup).to_contain_text("Set to DPO on it, starting from run")
    expect(setup).to_be_in_viewport()

    # started from where it is said (Start is at the foot of the long form)
    here = page.locator("#train-start-here")
    expect(here).to_be_in_viewport()
    here.click()
    expect(page.locator("#train-message")).to_contain_text("Started run", timeout=30_000)
    expect(setup).to_have_text("")  # set up, then started: its "press Start training" is done
    expect(here).to_be_hidden()
    child = next(r["id"] for r in studio.list_runs() if r["id"] != parent)
    assert studio.wait(child, poll_s=0.5)["status"] == "completed"
    assert studio.get_run(child)["parent_id"] == parent and studio.get_run(child)["method"] == "dpo"
    expect(page.locator("#run-status")).to_contain_text(f"Started from run {parent}", timeout=30_000)
    expect(page.locator("#run-status")).to_contain_text(f"Started from run {parent} (LoRA).")
    expect(page.locator("#run-status")).to_contain_text(f"made from 2 chat votes between {tiny_model_dir} and "
                                                        f"LoRA run {parent}")
    expect(page.locator("#run-curves")).to_contain_text("Preference accuracy", timeout=30_000)
    # the loop's next step is the highlighted button (the highlighted Chat was taken for it), and the run says why
    expect(page.locator("#run-status")).to_contain_text(
        f"Did it help? The held-out figures above are a rough guide; whether people prefer its replies is what a "
        f"blind battle against LoRA run {parent} tells: press Compare with the previous model.")
    expect(page.locator("#run-compare-previous")).to_have_class(re.compile(r"\bprimary\b"))
    expect(page.locator("#run-chat")).to_have_class(re.compile(r"\bsecondary\b"))

    page.click("#run-compare-previous")
    expect(page.locator("#chat-blind input")).to_be_checked(timeout=30_000)
    # what the export said before training ('Made chat votes ...') is not news of this comparison
    expect(page.locator("#chat-export-message")).to_have_text("")
    expect(page.locator("#chat-model-a input")).to_have_value(f"Tuned: DPO on {dataset['name']}"
                                                              f" on {tiny_model_dir} ({child})")
    expect(page.locator("#chat-model-b input")).to_have_value(f"Tuned: LoRA on Quillpad support FAQ on {tiny_model_dir}"
                                                              f" ({parent})")
    expect(page.locator("#chat-prompt textarea")).not_to_have_value("")
    # the pickers name the two contenders, not the sides (each round shuffles them)
    expect(page.locator("#chat-model-a")).to_contain_text("One contender")
    expect(page.locator("#chat-model-b")).to_contain_text("The other contender")
    page.click("#chat-send")
    expect(page.locator("#chat-a")).to_contain_text("hidden until you vote", timeout=30_000)
    # the replies' first update has come (it empties the box; under load it landed after the Next prompt below,
    # and took the prompt that put there: the labels above were the comparison's, set before the send)
    expect(page.locator("#chat-prompt textarea")).to_have_value("", timeout=30_000)

    # the prompts offered are the DPO data's held-out pair's, then the held-out ones of the run it started from
    # that neither trained on (the one held-out pair was all it was offered); once one has a vote between the
    # two, Next prompt goes on to the next
    held, *behind = chat_service.prompt_suggestions(studio, "heldout", child)
    assert len(behind) > 10 and held not in behind  # the FAQ's held-out paraphrases
    prompt = [{"role": "user", "content": held}]
    chat_service.record_vote(studio, voter="me", model_a=f"run:{parent}", model_b=f"run:{child}", winner="b",
                             blind=True, prompt_a=prompt, prompt_b=prompt, reply_a="No idea.",
                             reply_b="27 months.", settings={})
    page.click("#chat-next-prompt")  # (the comparison opened the prompts' section)
    expect(page.locator("#chat-prompt textarea")).to_have_value(behind[0], timeout=30_000)
    # the comparison was asked for: a reload keeps its pair, blind (it put up the newest run against its base,
    # still blind, and the next votes went to a pair nobody asked for)
    page.reload()
    expect(page.locator("#train-estimate")).to_contain_text("Expected peak memory", timeout=60_000)  # loaded
    expect(page.locator('#studio-tabs [data-tab-id="chat"]')).to_have_attribute("aria-selected", "true",
                                                                               timeout=30_000)  # (it was open)
    page.wait_for_timeout(1000)
    expect(page.locator("#chat-model-a input")).to_have_value(f"Tuned: DPO on {dataset['name']} on {tiny_model_dir} "
                                                              f"({child})", timeout=30_000)
    expect(page.locator("#chat-model-b input")).to_have_value(f"Tuned: LoRA on Quillpad support FAQ on "
                                                              f"{tiny_model_dir} ({parent})")
    expect(page.locator("#chat-blind input")).to_be_checked()
    expect(page.locator("#chat-model-a")).to_contain_text("One contender")
    # a pair picked by hand after it is what the next reload keeps
    page.locator("#chat-model-b input").click()
    page.get_by_role("option", name=f"Base model: {tiny_model_dir}").click()
    expect(page.locator("#chat-model-b input")).to_have_value(f"Base model: {tiny_model_dir}")
    page.wait_for_timeout(500)
    page.reload()
    expect(page.locator("#train-estimate")).to_contain_text("Expected peak memory", timeout=60_000)
    page.wait_for_timeout(1000)
    expect(page.locator("#chat-model-b input")).to_have_value(f"Base model: {tiny_model_dir}", timeout=30_000)
    expect(page.locator("#chat-model-a input")).to_have_value(f"Tuned: DPO on {dataset['name']} on {tiny_model_dir} "
                                                              f"({child})")
    # back in Train, the run's blind votes against where it started say what they show so far
    page.get_by_role("tab", name="Train").click()
    page.locator("#runs-table [data-testid='cell-0-0']").click()  # the newest run, the DPO one
    # (the low end is 1/40 = 2.5%: shown 2% or 3% as the last bit of its search falls)
    expect(page.locator("#run-status")).to_contain_text(re.compile(
        re.escape(f"Blind votes against LoRA run {parent}: 1 so far, it won 1, lost 0, tied or both bad 0: 100% (")
        + "[23]" + re.escape("–100%): can't tell yet: about 7 more votes at this rate would tell.")), timeout=30_000)

    # a second *Train on these preferences* with DPO shown: the epochs it sets, over the person's own, are
    # what a reload shows (the epochs kept before came back)
    fill(page, "param-num_train_epochs", 30)
    # (kept by the browser through a server round trip: on a busy machine a press at once could be answered
    # first, and the 30 stored after the epochs it set; a person takes longer to go and press it)
    page.wait_for_timeout(1500)
    page.get_by_role("tab", name="Chat").click()
    if not page.locator("#chat-train-prefs").is_visible():
        page.get_by_text("Results and export").click()
    page.click("#chat-train-prefs")
    expect(page.locator("#train-setup")).to_contain_text("epochs:", timeout=30_000)
    epochs = page.locator("#param-num_train_epochs:visible input").first
    expect(epochs).not_to_have_value("30", timeout=10_000)
    set_to = epochs.input_value()
    page.wait_for_timeout(500)
    page.reload()
    expect(page.locator("#train-estimate")).to_contain_text("Expected peak memory", timeout=60_000)
    expect(page.locator("#train-method input")).to_have_value("DPO")
    expect(page.locator("#param-num_train_epochs:visible input").first).to_have_value(set_to, timeout=10_000)
    # Chat with this run, for a run continued from another: beside that run (it put up the first base model, and
    # said "the model it was trained from")
    page.locator("#runs-table [data-testid='cell-0-0']").click()
    expect(page.locator("#run-status")).to_contain_text(f"Started from run {parent}", timeout=30_000)
    page.click("#run-chat")
    expect(page.locator("#chat-vote-message")).to_contain_text(
        f"The run's tuned model (B) next to the run it continued from, {parent} (A)", timeout=30_000)
    expect(page.locator("#chat-model-a input")).to_have_value(f"Tuned: LoRA on Quillpad support FAQ on "
                                                              f"{tiny_model_dir} ({parent})")


def test_the_estimate_after_train_on_these_is_for_what_was_set(server, page, studio, tiny_model_dir,  # noqa: F811
                                                                tiny_params):
    """Train on these preferences sets the method, the data and the epochs a few votes need: every estimate
    the page shows from then on is for those. (The page's fields follow the method's change a step later; an
    estimate made meanwhile read the SFT run's epochs with DPO and warned of a one-step run for seconds.)"""
    from playwright.sync_api import expect

    parent = voted_parent(studio, tiny_model_dir, tiny_params)
    page.goto(server)
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    fill(page, "param-num_train_epochs", 1)  # an SFT setting the preference run does not take
    page.wait_for_timeout(1500)
    # every text the estimate shows from the press on, as the page shows it
    page.evaluate("""() => { const el = document.getElementById('train-estimate'); window.__shown = [];
        new MutationObserver(() => window.__shown.push(el.innerText))
            .observe(el, {childList: true, subtree: true, characterData: true}); }""")
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Results and export").click()
    page.click("#chat-train-prefs")
    expect(page.locator("#train-estimate")).to_contain_text("per epoch × 10", timeout=60_000)
    page.wait_for_timeout(3000)  # anything later too
    shown = [text for text in page.evaluate("window.__shown") if "per epoch ×" in text]
    wrong = [text for text in shown if not re.search(r"per epoch × 10\b", text)]
    assert shown and not wrong, "\n".join(wrong)
    assert not any("Only" in text for text in shown), shown


def test_a_comparison_opened_on_a_fresh_page_can_be_voted_on(server, page, studio, tiny_model_dir,  # noqa: F811
                                                              tiny_params):
    """A page opened once the DPO run has finished puts it up against its base; *Compare with the previous model*
    then sets both pickers, and the page sent the first's change with the other still on the DPO run (it against
    itself). Both changes at once both read the vote buttons as on: the first turned them off, the second left
    them so, and the blind re-comparison could not be voted on, with no word of why (a walkthrough)."""
    from playwright.sync_api import expect

    parent = voted_parent(studio, tiny_model_dir, tiny_params)
    child = studio.start_run(model=f"run:{parent}", dataset="signoff_preferences", method="dpo",
                             params={"num_train_epochs": 0.1, "max_length": 64})
    assert studio.wait(child, poll_s=0.5)["status"] == "completed"
    page.goto(server)
    page.locator("#runs-table [data-testid='cell-0-0']").click()  # the newest run, the DPO one
    expect(page.locator("#run-status")).to_contain_text(f"Started from run {parent}", timeout=30_000)
    page.click("#run-compare-previous")
    expect(page.locator("#chat-blind input")).to_be_checked(timeout=30_000)
    for key in ("a", "b", "tie", "both_bad"):
        expect(page.locator(f"#chat-vote-{key}")).to_be_enabled(timeout=10_000)
    expect(page.locator("#chat-same-note")).not_to_contain_text("same model")
    # where the prompts offered come from: the DPO data's held-out pairs, then its parent's held-out rows
    expect(page.locator("#chat-vote-message")).to_contain_text(
        "Prompts it never trained on, from its dataset's held-out pairs and then from those of the runs behind it: "
        "press Send, vote, then Next prompt.")
