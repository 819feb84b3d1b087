"""Compare runs in a real browser: two finished runs of another batch size, overlaid along epochs
(picked for the user, as their steps per epoch differ), each titled by what sets it apart, and back
along steps on request."""

from __future__ import annotations

import json

import pytest

from tests.test_browser import page, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def finished_run(studio, run_id, method, dataset_id, steps_per_epoch, batch):
    """A run as its worker leaves it: the row, and its metrics file (two epochs of a falling loss)."""
    studio.store.add_run(id=run_id, method=method, model="default", dataset_id=dataset_id, status="completed",
                         params={"per_device_train_batch_size": batch, "num_train_epochs": 2})
    folder = studio.run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "epoch": round(s / steps_per_epoch, 4), "loss": 2.0 - s / (10 * steps_per_epoch),
                    "learning_rate": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0})
        + "\n" for s in range(1, 2 * steps_per_epoch + 1)))


def test_runs_of_another_batch_size_are_overlaid_along_epochs(server, page, studio):  # noqa: F811
    from playwright.sync_api import expect

    from tests.conftest import FAQ

    dataset = studio.import_dataset(FAQ)
    finished_run(studio, "r-small-batch", "lora", dataset["id"], 10, 4)
    finished_run(studio, "r-big-batch", "dora", dataset["id"], 5, 8)
    page.goto(server)
    # opened once the page is up: on a busy CI machine a click while the page still loaded left it closed
    expect(page.locator("#runs-table")).to_contain_text("r-big-batch", timeout=30_000)
    for _ in range(3):
        page.get_by_text("Compare runs").click()
        try:
            expect(page.locator("#compare-runs")).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            continue
    curves = page.locator("#compare-curves")
    for n, run_id in enumerate(("r-small-batch", "r-big-batch")):
        # picked by keyboard: a click on the second run's option missed, the list moving as the plot came
        page.locator("#compare-runs input").click()
        page.keyboard.type(run_id)
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        # the figure drawn before the next pick (it pushes the page down as it comes: a moving option)
        expect(curves.locator(".legendtext" if n else ".x3title").first).to_be_visible(timeout=30_000)
    expect(page.locator("#compare-along input[value=epoch]")).to_be_checked(timeout=30_000)
    expect(curves.locator(".x3title")).to_have_text("epoch", timeout=30_000)
    # each run's legend group is titled by what sets it apart, its series under it
    expect(curves).to_contain_text("r-small-batch: LoRA, batch size 4")
    expect(curves).to_contain_text("r-big-batch: DoRA, batch size 8")
    expect(curves.locator(".legendtext", has_text="training loss")).to_have_count(2)

    page.locator("#compare-along").get_by_text("Training steps").click()
    expect(curves.locator(".x3title")).to_have_text("step", timeout=30_000)
    expect(page.locator("#compare-along input[value=step]")).to_be_checked()
