"""The Chat tab in a real browser: a blind battle streams two replies with hidden names, a vote
reveals them, is stored, shows in the results, and exports as a preference dataset."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from tests.test_browser import fill, page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_blind_battle_vote_reveal_and_export(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    other = tmp_path / "other-tiny"  # another model: the tiny one with its weights nudged
    shutil.copytree(tiny_model_dir, other)
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    nudged = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for param in nudged.parameters():
        param.data += 0.5 * torch.randn_like(param)
    nudged.save_pretrained(other)
    page.goto(server)
    page.get_by_role("tab", name="Chat").click()
    # no run yet: both sides are the built-in model, and the page says a vote needs two before any wait
    expect(page.locator("#chat-same-note")).to_contain_text("a vote needs two different models", timeout=30_000)
    expect(page.locator("#chat-vote-a")).to_be_disabled()  # (the buttons say it too)
    # what a vote teaches, next to the buttons: a win for the better of two wrong replies was trained on as it was
    expect(page.locator("#chat-vote-help")).to_contain_text("teaches the winner as it is, its facts too")
    fill(page, "chat-model-a", f"base:{tiny_model_dir}")
    fill(page, "chat-model-b", f"base:{other}")
    expect(page.locator("#chat-same-note")).not_to_contain_text("a vote needs", timeout=10_000)
    expect(page.locator("#chat-vote-a")).to_be_enabled()
    # (the answer to the second pick lands next: typed into a number box at that moment, a value can be lost
    # in the page, which a person picking a model and then a seed does not meet)
    page.wait_for_timeout(1000)
    page.get_by_text("Generation settings").click()
    for _ in range(3):  # (still, CI once lost the seed typed: typed again until the page holds it)
        fill(page, "chat-seed", 7)
        page.wait_for_timeout(500)
        if page.locator("#chat-seed input").input_value() == "7":
            break
    expect(page.locator("#chat-seed input")).to_have_value("7")
    fill(page, "chat-max-new-tokens", 24)  # streaming 256 random tokens to both sides costs a busy machine a minute
    # a named round first: switching to blind takes its conversation (and the names over it) off the page
    fill(page, "chat-prompt", "Hello there?")
    page.click("#chat-send")
    expect(page.locator("#chat-vote-message")).to_contain_text("stopped at Max new tokens (24)", timeout=60_000)
    expect(page.locator("#chat-a")).to_contain_text(str(tiny_model_dir))
    # how long the pair of replies took, under Stop (both ran to the limit: 2 x 24 tokens)
    expect(page.locator("#chat-progress")).to_contain_text(re.compile(r"Written in \d+ s: 48 tokens, [\d.]+ tokens/s"))
    # the replies scroll below the model's name, not under it (a streaming reply ran under "A: ...")
    for side in ("chat-a", "chat-b"):
        label, replies = (page.locator(f"#{side} {part}").first.bounding_box()
                          for part in ("[data-testid=block-label]", ".bubble-wrap"))
        assert replies["y"] >= label["y"] + label["height"], (side, label, replies)
    page.locator("#chat-blind input").check()
    expect(page.locator("#chat-vote-message")).to_contain_text("Blind battle: each round puts the two models on "
                                                                "random sides")
    expect(page.locator("#chat-a")).not_to_contain_text("Hello there?")
    expect(page.locator("#chat-a")).not_to_contain_text(str(tiny_model_dir))
    expect(page.locator("#chat-a")).to_contain_text("hidden until you vote")
    expect(page.locator("#chat-progress")).to_have_text("")  # how long the replies gone took goes with them
    fill(page, "chat-voter", "Ann")
    fill(page, "chat-prompt", "How long is the warranty?")
    page.click("#chat-send")

    expect(page.locator("#chat-a")).to_contain_text("How long is the warranty?", timeout=30_000)
    expect(page.locator("#chat-b")).to_contain_text("How long is the warranty?")
    expect(page.locator("#chat-a")).to_contain_text("hidden until you vote")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # a system prompt typed after the replies were asked for is not what they were written under: the vote
    # keeps the settings of its replies (it read the boxes when cast, and the pair's export opened with it)
    fill(page, "chat-system", "Answer in French.")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # a vote waits for both replies to finish
        if studio.store.list_votes():  # a click that timed out may still have landed: never click twice
            break
        try:  # while both sides stream, the page scrolls the chat: a click may not land at once
            page.click("#chat-vote-a", timeout=3000)
        except PlaywrightTimeout:
            continue
        page.wait_for_timeout(1000)
        if studio.store.list_votes() or "Vote stored" in page.locator("#chat-vote-message").inner_text():
            break
        # (or, once both are done, that 24 tokens cut them off: the page says so after a stream)
        expect(page.locator("#chat-vote-message")).to_contain_text(
            re.compile("Wait until both replies are finished|stopped at Max new tokens \\(24\\)"))
    expect(page.locator("#chat-vote-message")).to_contain_text("Vote stored: A is better", timeout=10_000)
    # (the winner was cut off at 24 tokens: said with the vote, not only at the export)
    expect(page.locator("#chat-vote-message")).to_contain_text(
        "The winning reply was cut short (by Stop, or at Max new tokens): Train on these preferences teaches it as "
        "it stands, cut off.")
    expect(page.locator("#chat-vote-message")).to_contain_text(str(tiny_model_dir))
    expect(page.locator("#chat-vote-message")).to_contain_text(str(other))
    (stored,) = studio.store.list_votes()
    assert stored["blind"] and stored["winner"] == "a" and stored["voter"] == "Ann"
    assert {stored["model_a"], stored["model_b"]} == {f"base:{tiny_model_dir}", f"base:{other}"}
    assert stored["prompt_a"] == [{"role": "user", "content": "How long is the warranty?"}]
    assert stored["reply_a"].strip() and stored["reply_b"].strip()
    assert stored["settings"]["system_prompt"] == "" and stored["settings"]["max_new_tokens"] == 24
    assert stored["settings"]["unfinished"] == ["a", "b"]  # both tiny models run on past 24 tokens: cut off

    page.click("#chat-vote-b")  # the same reply cannot be voted twice
    expect(page.locator("#chat-vote-message")).to_contain_text("already voted")
    assert len(studio.store.list_votes()) == 1
    # Regenerate after the names were shown, with a fixed seed: the same two replies would come back word for
    # word, and a vote on them was stored as blind from someone who had just seen which model wrote which
    page.click("#chat-regenerate")
    expect(page.locator("#chat-vote-message")).to_contain_text("Not a new blind round: with a fixed Seed",
                                                                timeout=30_000)
    for _ in range(3):
        fill(page, "chat-seed", -1)
        page.wait_for_timeout(500)
        if page.locator("#chat-seed input").input_value() == "-1":
            break
    # with new replies: a new blind round, the sides shuffled again (it asked the same sides, names hidden once
    # more, and stored the next vote as blind from someone who knew them)
    page.click("#chat-regenerate")
    expect(page.locator("#chat-vote-message")).to_contain_text("A new blind round on the same prompt",
                                                                timeout=30_000)
    expect(page.locator("#chat-a")).to_contain_text("hidden until you vote")
    expect(page.locator("#chat-a")).not_to_contain_text(str(tiny_model_dir))
    expect(page.locator("#chat-vote-message")).to_contain_text("stopped at Max new tokens (24)", timeout=120_000)

    page.get_by_text("Results and export").click()
    expect(page.locator("#chat-results")).to_contain_text("100%", timeout=10_000)
    fill(page, "chat-export-name", "battle votes")
    page.click("#chat-export")
    expect(page.locator("#chat-export-message")).to_contain_text("Exported battle votes", timeout=30_000)
    # the winning reply was cut off: trained on, it teaches stopping mid-sentence, and the export says so
    expect(page.locator("#chat-export-message")).to_contain_text(
        "⚠️ The winning reply was cut off (at Max new tokens, or by Stop)")
    assert [(d["name"], d["kind"], d["rows"]) for d in studio.list_datasets()] == [("battle votes", "preference", 1)]
    # two vote buttons clicked at once on the regenerated pair: both read the page's state before either
    # vote came back, and both were stored
    page.evaluate("() => ['#chat-vote-a', '#chat-vote-b'].forEach(id => document.querySelector(id).click())")
    expect(page.locator("#chat-vote-message")).to_contain_text("Vote stored", timeout=10_000)
    page.wait_for_timeout(3000)  # (the later of the two answers)
    assert len(studio.store.list_votes()) == 2
    # and whichever answer came last, the round is over: the next prompt starts a new blind round (the
    # refused click's answer put back the unvoted state, and the next prompt went on with the named sides)
    fill(page, "chat-prompt", "Can I export to PDF?")
    page.click("#chat-send")
    expect(page.locator("#chat-a")).to_contain_text("Can I export to PDF?", timeout=30_000)
    expect(page.locator("#chat-a")).not_to_contain_text("How long is the warranty?")
    expect(page.locator("#chat-a")).to_contain_text("hidden until you vote")

    # the name votes go under is kept by this browser
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#chat-voter textarea, #chat-voter input").first).to_have_value("Ann", timeout=30_000)
    expect(page.locator("#chat-blind input")).to_be_checked()  # still a blind battle, as switched
    # between the same two models (a reload put up the built-in model on both sides again)
    expect(page.locator("#chat-model-a input")).to_have_value(f"base:{tiny_model_dir}", timeout=30_000)
    expect(page.locator("#chat-model-b input")).to_have_value(f"base:{other}")
    expect(page.locator("#chat-a")).to_contain_text("hidden until you vote")
    # the generation settings too (Max new tokens went back to 256: minute-long replies again)
    page.get_by_text("Generation settings").click()
    expect(page.locator("#chat-max-new-tokens input[type=number]")).to_have_value("24", timeout=30_000)
    expect(page.locator("#chat-seed input")).to_have_value("-1")
    # ... and is the Label tab's name too: one person, one name, typed once
    page.get_by_role("tab", name="Label").click()
    expect(page.locator("#label-labeler textarea, #label-labeler input").first).to_have_value("Ann", timeout=30_000)
    # typed, then the tab switched at once, on a busy server (its answer to the typing held back here): the new
    # name still follows (the switch read the kept name before the server's answer had stored it: "Ann")
    held = []

    def hold_the_typed_name(route):
        if (route.request.post_data_json or {}).get("data") == ["Ann B."]:
            held.append(route)
        else:
            route.continue_()

    page.route("**/run/predict", hold_the_typed_name)
    fill(page, "label-labeler", "Ann B.")
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#chat-voter textarea, #chat-voter input").first).to_have_value("Ann B.", timeout=15_000)
    page.unroute("**/run/predict")
    for route in held:
        route.continue_()
    # cleared to vote anonymously: cleared on the Label tab too, and after a reload (the name came back)
    fill(page, "chat-voter", "")
    page.get_by_role("tab", name="Label").click()
    expect(page.locator("#label-labeler textarea, #label-labeler input").first).to_have_value("", timeout=30_000)
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Generation settings").click()
    expect(page.locator("#chat-max-new-tokens input[type=number]")).to_have_value("24", timeout=30_000)  # loaded
    page.wait_for_timeout(1000)
    expect(page.locator("#chat-voter textarea, #chat-voter input").first).to_have_value("")
    page.get_by_role("tab", name="Label").click()
    page.wait_for_timeout(1000)
    expect(page.locator("#label-labeler textarea, #label-labeler input").first).to_have_value("")
    # ...and nothing else of what was typed: Gradio's run history would keep each event's inputs
    stored_text = page.evaluate("() => Object.keys(localStorage).map(k => k + localStorage.getItem(k)).join(' ')")
    assert "warranty" not in stored_text and "run-history" not in stored_text
    # the prompts to compare on are listed as their section opens (the list stayed empty until *Next prompt*)
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Prompts to compare on").click()
    page.wait_for_timeout(1500)
    page.locator("#chat-suggested input").click()
    expect(page.get_by_role("option", name="How long is the warranty?")).to_be_visible(timeout=10_000)
    expect(page.locator("#chat-prompt textarea")).to_have_value("")  # listed, not put in the box
    page.get_by_role("option", name="How long is the warranty?").click()  # picked: put in the box
    expect(page.locator("#chat-prompt textarea")).to_have_value("How long is the warranty?")
    expect(page.locator("#chat-suggested input")).to_have_value("How long is the warranty?")
    # a question typed over it is no longer the picked prompt: the picker lets go of it (it named a prompt
    # that was not the one sent)
    page.locator("#chat-prompt textarea").select_text()
    page.keyboard.insert_text("What does Quillpad cost?")  # pasted over it (no key pressed: no input event)
    expect(page.locator("#chat-suggested input")).to_have_value("", timeout=10_000)
    expect(page.locator("#chat-prompt textarea")).to_have_value("What does Quillpad cost?")


def test_send_says_it_is_answering_until_the_replies_end_or_are_stopped(server, page, tiny_model_dir):  # noqa: F811
    """A prompt sent while the replies streamed did nothing and said nothing: Send now reads "Answering…" and
    takes no click, nor does the prompt box, until the replies end or Stop ends them (what was written
    stays, and the page says it was stopped)."""
    from playwright.sync_api import expect

    page.goto(server)
    page.get_by_role("tab", name="Chat").click()
    fill(page, "chat-model-a", f"base:{tiny_model_dir}")
    fill(page, "chat-model-b", f"base:{tiny_model_dir}")
    page.get_by_text("Generation settings").click()
    fill(page, "chat-max-new-tokens", 1024)  # random weights: ~1,000 tokens each side, long enough to watch
    send = page.locator("#chat-send")
    fill(page, "chat-prompt", "Tell me everything?")
    send.click()
    expect(send).to_have_text("Answering…", timeout=10_000)
    expect(send).to_be_disabled()
    # nor Enter in the box, nor Regenerate, starts a second answer over the first (Enter did: the two wrote
    # over each other's conversation and a turn was lost); Stop is on only now
    box = page.locator("#chat-prompt textarea")
    expect(box).to_be_disabled()
    expect(page.locator("#chat-regenerate")).to_be_disabled()
    expect(page.locator("#chat-a")).to_contain_text("Tell me everything?", timeout=30_000)
    page.click("#chat-stop")
    expect(page.locator("#chat-vote-message")).to_contain_text("Stopped: the replies stand as they are")
    # the "Writing…" line gone (its text: once in CI, Gradio's own status badge over the line also read "Error",
    # the cancelled event's, which the page's text is not)
    expect(page.locator("#chat-progress")).not_to_contain_text("Writing")
    expect(page.locator("#chat-progress")).not_to_contain_text("Written")
    expect(send).to_have_text("Send", timeout=10_000)
    expect(send).to_be_enabled()
    expect(box).to_be_enabled()
    expect(page.locator("#chat-stop")).to_be_disabled()
    expect(page.locator("#chat-a")).to_contain_text("Tell me everything?")  # the stopped round stays on the page

    fill(page, "chat-max-new-tokens", 8)
    fill(page, "chat-prompt", "And briefly?")
    page.locator("#chat-prompt textarea").press("Enter")
    expect(page.locator("#chat-vote-message")).to_contain_text("stopped at Max new tokens (8)", timeout=60_000)
    expect(send).to_have_text("Send", timeout=10_000)  # back when the replies end by themselves
    expect(send).to_be_enabled()
    expect(page.locator("#chat-b")).to_contain_text("And briefly?")


def tiny_on_both_sides(page, server, model_dir):
    """The Chat tab with the tiny model on both sides, 8 new tokens a reply."""
    page.goto(server)
    page.get_by_role("tab", name="Chat").click()
    fill(page, "chat-model-a", f"base:{model_dir}")
    fill(page, "chat-model-b", f"base:{model_dir}")
    page.wait_for_timeout(1000)  # (the answer to the second pick lands next: a value typed then can be lost)
    page.get_by_text("Generation settings").click()
    for _ in range(3):
        fill(page, "chat-max-new-tokens", 8)
        page.wait_for_timeout(500)
        if page.locator("#chat-max-new-tokens input").first.input_value() == "8":
            break


def test_a_prompt_shows_as_it_was_sent(server, page, tiny_model_dir):  # noqa: F811
    """A prompt's `<b>this</b>` came out bold and its `<script>…</script>` was gone (the models had the whole
    text): the prompt shows as sent, Markdown, HTML, spaces and line breaks too, and Regenerate asks it again
    as sent."""
    from playwright.sync_api import expect

    tiny_on_both_sides(page, server, tiny_model_dir)
    sent = "Is <b>this</b> *bold*? <script>x</script> end\n\n    indented & [a](b) `code`"
    fill(page, "chat-prompt", sent)
    page.click("#chat-send")
    expect(page.locator("#chat-vote-message")).to_contain_text("stopped at Max new tokens (8)", timeout=60_000)
    for side in ("chat-a", "chat-b"):
        prompt = page.locator(f"#{side} .chat-verbatim")
        expect(prompt).to_have_count(1)
        assert prompt.inner_text() == sent
        assert page.locator(f"#{side} b, #{side} em").count() == 0
    page.click("#chat-regenerate")
    expect(page.locator("#chat-progress")).to_contain_text("Written in", timeout=60_000)
    prompt = page.locator("#chat-a .chat-verbatim")
    expect(prompt).to_have_count(1)
    assert prompt.inner_text() == sent


def test_a_reply_panels_own_clear_icon_clears_both_sides(server, page, tiny_model_dir):  # noqa: F811
    """Each reply panel has a clear icon of its own: it emptied that side alone, and the next prompt was
    answered by one side fresh and by the other after the earlier exchange (a vote on them was stored)."""
    from playwright.sync_api import expect

    tiny_on_both_sides(page, server, tiny_model_dir)
    fill(page, "chat-prompt", "Name one colour.")
    page.click("#chat-send")
    expect(page.locator("#chat-vote-message")).to_contain_text("stopped at Max new tokens (8)", timeout=60_000)
    page.locator("#chat-a").get_by_role("button", name="Clear").click()
    for side in ("chat-a", "chat-b"):
        expect(page.locator(f"#{side}")).not_to_contain_text("Name one colour.")
    expect(page.locator("#chat-vote-message")).to_have_text("")  # (the note on the replies gone went too)
    fill(page, "chat-prompt", "Name one animal.")
    page.click("#chat-send")
    expect(page.locator("#chat-progress")).to_contain_text("Written in", timeout=60_000)
    for side in ("chat-a", "chat-b"):  # both answered the one new conversation
        expect(page.locator(f"#{side}")).to_contain_text("Name one animal.")
        expect(page.locator(f"#{side}")).not_to_contain_text("Name one colour.")


def test_a_model_that_cannot_be_had_is_said_at_once_and_the_tab_stays_usable(server, page, tiny_model_dir):  # noqa: F811
    """A hub id typed in, not downloaded, on a machine without the model hub: 90 s of "Answering…", then an
    "Error" badge on both sides and a tab locked until a reload. Now one sentence at once, the page usable."""
    from playwright.sync_api import expect

    page.goto(server)
    page.get_by_role("tab", name="Chat").click()
    fill(page, "chat-model-a", f"base:{tiny_model_dir}")
    fill(page, "chat-model-b", "someorg/somemodel")
    fill(page, "chat-prompt", "Hello?")
    started = time.monotonic()
    page.click("#chat-send")
    message = page.locator("#chat-vote-message")
    expect(message).to_contain_text("Cannot chat: model 'someorg/somemodel' is not downloaded on this machine",
                                    timeout=30_000)
    assert time.monotonic() - started < 30
    send = page.locator("#chat-send")
    expect(send).to_have_text("Send", timeout=10_000)
    expect(send).to_be_enabled()
    expect(page.locator("#chat-prompt textarea")).to_have_value("Hello?")  # the prompt is kept to send again
    expect(page.locator("#chat-progress")).to_have_text("")
    # put right, the same prompt is answered
    fill(page, "chat-model-b", f"base:{tiny_model_dir}")
    page.get_by_text("Generation settings").click()
    fill(page, "chat-max-new-tokens", 8)
    page.click("#chat-send")
    expect(page.locator("#chat-progress")).to_contain_text("Written in", timeout=60_000)
    expect(page.locator("#chat-a")).to_contain_text("Hello?")


def test_blind_battle_switched_off_stays_off_after_a_reload(server, page):  # noqa: F811
    """The browser keeps Blind battle as it was switched: switched off, a reload put it back on (a false
    value was never stored, so the true one before it came back)."""
    from playwright.sync_api import expect

    page.goto(server)
    page.get_by_role("tab", name="Chat").click()
    blind = page.locator("#chat-blind input")
    for on in (True, False, True, False):
        blind.set_checked(on)
        page.wait_for_timeout(500)
        page.reload()
        expect(page.locator('#studio-tabs [data-tab-id="chat"]')).to_have_attribute("aria-selected", "true",
                                                                                   timeout=30_000)
        page.wait_for_timeout(1000)  # (the page's kept values come back with its load)
        if on:
            expect(blind).to_be_checked(timeout=10_000)
            expect(page.locator("#chat-model-a")).to_contain_text("One contender")
        else:
            expect(blind).not_to_be_checked()
            expect(page.locator("#chat-model-a")).to_contain_text("Model A")
        # the two pickers' boxes side by side at one height (one had a help line, the other none)
        a, b = (page.locator(f"#chat-model-{side} input").bounding_box() for side in "ab")
        assert abs(a["y"] - b["y"]) < 2, (on, a, b)
        # ... each wider than the blind switch beside them (in a third of the row a run's name was cut off)
        switch = page.locator("#chat-blind").bounding_box()
        assert min(a["width"], b["width"]) > 1.5 * switch["width"], (a, b, switch)


def test_switching_blind_while_the_replies_stream_stops_them(server, page, studio, tiny_model_dir, tmp_path):  # noqa: F811
    """Blind switched on while a named round's replies streamed: the switch emptied the chat and hid the names,
    and the next streamed update wrote the named round back under the hidden labels (the other way round,
    names shown over a shuffled round, its vote stored as blind from someone who believed they saw names)."""
    from playwright.sync_api import expect

    other = tmp_path / "other-tiny"
    shutil.copytree(tiny_model_dir, other)
    page.goto(server)
    page.get_by_role("tab", name="Chat").click()
    fill(page, "chat-model-a", f"base:{tiny_model_dir}")
    fill(page, "chat-model-b", f"base:{other}")
    page.wait_for_timeout(1000)
    page.get_by_text("Generation settings").click()
    fill(page, "chat-max-new-tokens", 1024)  # long replies: still streaming when the switch is pressed
    fill(page, "chat-prompt", "Hello there?")
    page.click("#chat-send")
    expect(page.locator("#chat-progress")).to_contain_text("Writing:", timeout=60_000)
    page.locator("#chat-blind input").check()
    expect(page.locator("#chat-a")).to_contain_text("hidden until you vote", timeout=10_000)
    page.wait_for_timeout(3000)  # (the stream's next updates, had it gone on)
    expect(page.locator("#chat-a")).not_to_contain_text("Hello there?")
    expect(page.locator("#chat-a")).to_contain_text("hidden until you vote")
    expect(page.locator("#chat-send")).to_be_enabled(timeout=10_000)
