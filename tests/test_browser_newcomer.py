"""A newcomer's first run in a real browser, without a wrong turn: one click sets up a quick first
run; a model that cannot load and an
out-of-range setting are refused by name before anything is queued; the run says what it is doing
(or counts its steps) from its first seconds; a run started after the page opened can be overlaid in Compare runs;
'Chat with this run' and a fresh Chat tab put the tuned model next to its base; a vote between a
model and itself is refused."""

from __future__ import annotations

import re

import pytest

from tests.test_browser import fill, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_first_hour_without_a_wrong_turn(server, page, studio, tiny_model_dir):  # noqa: F811
    from playwright.sync_api import expect

    page.goto(server)
    expect(page.get_by_text("Fine-tune a language model")).to_be_visible(timeout=30_000)

    # the quick first run sets a recipe that shows learning within minutes on the bundled FAQ
    page.click("#train-quick")
    expect(page.locator("#train-setup")).to_contain_text("Set up a quick first run", timeout=30_000)
    expect(page.locator("#train-method input")).to_have_value("LoRA")
    expect(page.locator("#param-num_train_epochs input").first).to_have_value("3")
    expect(page.locator("#train-estimate")).to_contain_text(re.compile("in all|Estimate|estimate"), timeout=60_000)

    # a hub model this offline machine cannot fetch: refused now, not a failed run a minute later
    fill(page, "train-model", "someorg/somemodel")
    page.click("#start-training")
    expect(page.locator("#train-message")).to_contain_text(
        "Could not start: model 'someorg/somemodel' is not downloaded on this machine", timeout=30_000)
    # a setting out of range: the message names the field as the form shows it
    fill(page, "train-model", tiny_model_dir)
    fill(page, "param-num_train_epochs", 0)
    page.click("#start-training")
    expect(page.locator("#train-message")).to_contain_text(
        "Could not start: 'Epochs' (num_train_epochs): expected a value from", timeout=30_000)
    # ... and it stays to be read: the clearing of a refusal by an edit of the field, run behind the edit's
    # queued save, came after Start's reply on a busy machine and wiped it 0.2 s after it appeared
    page.wait_for_timeout(1500)
    expect(page.locator("#train-message")).to_contain_text("Could not start: 'Epochs'", timeout=1_000)
    assert studio.store.list_runs() == [] and not any(studio.runs_dir.iterdir())

    # the run says what it does before its first step, then counts steps
    fill(page, "param-num_train_epochs", 1)
    fill(page, "param-max_length", 64)
    page.click("#start-training")
    expect(page.locator("#train-message")).to_contain_text("Started run", timeout=30_000)
    run_id = studio.store.list_runs()[0]["id"]
    # (with the next run's process waiting ready, the tiny model can pass its phases between two of
    # the panel's 2-s refreshes and show its steps first; test_app checks each phase's words)
    expect(page.locator("#run-progress")).to_contain_text(
        re.compile(r"starting|loading the model|measuring the model|step \d+ of \d+"), timeout=30_000)
    expect(page.locator("#run-status")).to_contain_text("completed", timeout=180_000)
    expect(page.locator("#run-progress")).to_contain_text("step", timeout=10_000)

    # Compare runs offers the run started after the page opened
    page.get_by_text("Compare runs").click()
    page.locator("#compare-runs input").click()
    expect(page.get_by_role("option", name=run_id)).to_be_visible(timeout=10_000)
    page.keyboard.press("Escape")

    # Chat with this run: the tuned model next to the model it learned from
    page.click("#run-chat")
    expect(page.locator("#chat-model-b input")).to_have_value(re.compile(re.escape(f"({run_id})")), timeout=30_000)
    expect(page.locator("#chat-model-a input")).to_have_value(f"Base model: {tiny_model_dir}")

    # a fresh page's Chat tab starts the same way, never the base against itself
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#chat-model-b input")).to_have_value(re.compile(re.escape(f"({run_id})")), timeout=30_000)
    expect(page.locator("#chat-model-a input")).to_have_value(f"Base model: {tiny_model_dir}")

    # both sides the same model: the replies come, the vote buttons are off (the note says why) and nothing
    # is stored
    # (the tab's own refresh, still on its way after the reload, may put the run back up on a slow
    # machine: CI once voted run against base here; wait for it, then check the pick held)
    for _ in range(3):
        fill(page, "chat-model-b", f"base:{tiny_model_dir}")
        page.wait_for_timeout(2000)
        if page.locator("#chat-model-b input").input_value() == f"Base model: {tiny_model_dir}":
            break
    expect(page.locator("#chat-model-b input")).to_have_value(f"Base model: {tiny_model_dir}")
    page.get_by_text("Generation settings").click()
    fill(page, "chat-max-new-tokens", 8)
    fill(page, "chat-prompt", "How long is the warranty?")
    page.click("#chat-send")
    expect(page.locator("#chat-send")).to_have_text("Send", timeout=60_000)  # both replies written
    expect(page.locator("#chat-a")).to_contain_text("warranty")
    expect(page.locator("#chat-same-note")).to_contain_text("a vote needs two different models")
    for key in ("a", "b", "tie", "both_bad"):
        expect(page.locator(f"#chat-vote-{key}")).to_be_disabled()
    assert studio.store.list_votes() == []
