"""A real browser (Debian's Chromium through Playwright) loads the studio and starts a run."""

from __future__ import annotations

import re
import shutil
import socket
import zipfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(studio, monkeypatch):
    from pipelines import hardware
    from studio.launch import serve

    # the page's browser and the suite's other worker share the CPU with the runs: their speed counts here
    monkeypatch.setattr(hardware, "SHARED_CORES", float("inf"))
    port = free_port()
    app = serve(studio, port=port, block=False)
    yield f"http://127.0.0.1:{port}"
    app.close()


@pytest.fixture
def page():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        page = browser.new_page()
        yield page
        browser.close()


def fill(page, elem_id, value):
    box = page.locator(f"#{elem_id} input, #{elem_id} textarea").first
    box.fill(str(value))
    box.press("Tab")


def test_start_a_run_from_the_page(server, page, studio, tiny_model_dir):
    from playwright.sync_api import expect

    page.goto(server)
    expect(page.get_by_text("Fine-tune a language model")).to_be_visible(timeout=30_000)

    # A model that does not exist: one clear sentence, nothing started.
    fill(page, "train-model", "no such model")
    page.click("#start-training")
    expect(page.locator("#train-message")).to_contain_text(
        "Could not start: model 'no such model' is neither 'default'", timeout=30_000)
    assert studio.store.list_runs() == []

    fill(page, "train-model", tiny_model_dir)
    # the refusal was about the model: another model picked, it no longer stands
    expect(page.locator("#train-message")).not_to_contain_text("Could not start", timeout=10_000)
    fill(page, "param-num_train_epochs", 1)
    fill(page, "param-max_length", 64)
    # Start pressed twice 0.25 s apart (it started two identical runs, one of them queued): one run. The
    # page drops the second press while the first is being answered (a busy machine: CI), or the studio
    # answers it with the run the first started; pressed again after the answer, it is that run, said so
    page.evaluate("() => { const start = document.querySelector('#start-training'); start.click();"
                  " setTimeout(() => start.click(), 250); }")
    expect(page.locator("#train-message")).to_contain_text("Started run", timeout=30_000)
    page.click("#start-training")
    expect(page.locator("#train-message")).to_contain_text("Start was pressed again: still one run", timeout=30_000)
    (run,) = studio.store.list_runs()
    run_id = run["id"]
    expect(page.locator("#train-message")).to_contain_text(run_id)
    expect(page.locator("#runs-table")).to_be_in_viewport(timeout=10_000)  # brought into view to watch it
    expect(page.locator("#runs-table")).to_contain_text(run_id, timeout=10_000)
    expect(page.locator("#run-status")).to_contain_text("completed", timeout=180_000)
    assert studio.get_run(run_id)["params"]["num_train_epochs"] == 1
    assert studio.adapter_dir(run_id).exists()
    # the adapter downloads from the panel as one .zip holding its files (a path on the server was all it said)
    with page.expect_download() as fetched:
        page.locator("#run-status a", has_text=".zip").click()
    assert fetched.value.suggested_filename.endswith(f"-{run_id}.zip")
    with zipfile.ZipFile(fetched.value.path()) as archive:
        held = {Path(name).name: archive.read(name) for name in archive.namelist()}
    assert held["adapter_model.safetensors"] == (studio.adapter_dir(run_id) / "adapter_model.safetensors").read_bytes()
    expect(page.locator("#run-status")).to_contain_text("PeftModel.from_pretrained(base,")
    # every column of the runs table in sight, the start time included (a long dataset name pushed it out)
    table = page.locator("#runs-table").bounding_box()
    started = page.locator("#runs-table").get_by_text("Started", exact=True).first.bounding_box()
    assert started["x"] + started["width"] <= table["x"] + table["width"]
    # the log box shows its last lines, where the run says it is done
    log = page.locator("#run-log textarea")
    expect(log).to_have_value(re.compile("completed", re.I), timeout=30_000)
    page.wait_for_function("() => { const t = document.querySelector('#run-log textarea');"
                           " return t.scrollHeight > t.clientHeight && t.scrollTop + t.clientHeight >= t.scrollHeight - 2; }",
                           timeout=10_000)
    # the estimate now counts what this run took to start and save, without a reload
    expect(page.locator("#train-estimate")).to_contain_text("from Start to the saved result", timeout=30_000)
    # the finished run is offered to start from without a reload (the list kept the page's load)
    page.locator("#train-model input").click()
    expect(page.get_by_role("option", name=re.compile(f"^Result of run {run_id}: LoRA"))).to_be_visible(timeout=10_000)


def plotted_points(page) -> int:
    return page.locator("#run-curves .point").count()


def test_reload_reattaches_and_the_curve_grows(server, page, studio, tiny_model_dir, tiny_params):
    from playwright.sync_api import expect

    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                              params={**tiny_params, "num_train_epochs": 4})
    page.goto(server)
    expect(page.locator("#run-status")).to_contain_text(run_id, timeout=30_000)
    expect(page.locator("#run-status")).to_contain_text("running", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('#run-curves .point').length > 3", timeout=60_000)

    page.reload()  # a closed and reopened tab: no click needed to see the live run again
    expect(page.locator("#run-status")).to_contain_text(run_id, timeout=30_000)
    page.wait_for_function("document.querySelectorAll('#run-curves .point').length > 3", timeout=30_000)
    before = plotted_points(page)
    page.wait_for_function(f"document.querySelectorAll('#run-curves .point').length > {before}",
                           timeout=30_000)
    expect(page.locator("#run-progress")).to_contain_text("ETA")

    page.click("#run-cancel")
    expect(page.locator("#run-action")).to_contain_text(f"Cancelling {run_id}")
    expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=60_000)
    assert studio.get_run(run_id)["status"] == "cancelled"
    # once it has stopped, the line under the buttons says so ("Cancelling…" stood there after the stop)
    expect(page.locator("#run-action")).to_contain_text(f"Cancelled {run_id} at step", timeout=10_000)
    expect(page.locator("#run-action")).to_contain_text("Resume continues from its newest checkpoint")

    # a resume reads as one: where it picks up from (it looked like a new run at step "-", from 0:00)
    page.click("#run-resume")
    expect(page.locator("#run-progress")).to_contain_text("resumed from the checkpoint at step", timeout=60_000)
    expect(page.locator("#run-progress")).not_to_contain_text("step 0 of")
    page.click("#run-cancel")
    expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=60_000)

    # another run picked in the table: what Cancel said about the first one goes
    other = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="lora",
                             params={**tiny_params, "num_train_epochs": 0.1})
    expect(page.locator("#runs-table")).to_contain_text(other, timeout=30_000)
    page.locator("#runs-table [data-testid='cell-0-0']").click()  # the newest run is the first row
    expect(page.locator("#run-status")).to_contain_text(other, timeout=30_000)
    expect(page.locator("#run-action")).not_to_contain_text("Cancelling")


def test_a_refusal_goes_once_the_setting_is_changed(server, page, tiny_model_dir):
    """'Could not start: Epochs ... got 0.0' stayed under Start after Epochs was put right, beside a good
    estimate (a walkthrough). A change of any setting takes the refusal away; Start says it again if it stands."""
    from playwright.sync_api import expect

    page.goto(server)
    expect(page.locator("#train-estimate")).to_contain_text("built-in model is prepared", timeout=60_000)
    fill(page, "train-model", tiny_model_dir)
    page.wait_for_timeout(2000)
    fill(page, "param-num_train_epochs", 0)
    page.click("#start-training")
    message = page.locator("#train-message")
    expect(message).to_contain_text("Could not start: 'Epochs' (num_train_epochs): expected a value from 0.1 to 100",
                                    timeout=30_000)
    fill(page, "param-num_train_epochs", 3)
    expect(message).to_have_text("", timeout=10_000)
    expect(page.locator("#train-estimate")).to_contain_text("Expected peak memory", timeout=30_000)
    # another field out of range: said by Start again, and gone once that field is put right
    fill(page, "param-learning_rate", 5)
    page.click("#start-training")
    expect(message).to_contain_text("Could not start: 'Learning rate' (learning_rate)", timeout=30_000)
    fill(page, "param-learning_rate", 0.0002)
    expect(message).to_have_text("", timeout=10_000)
