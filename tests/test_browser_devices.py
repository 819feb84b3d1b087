"""The Devices section in a real browser: an unavailable strategy is marked and refused with its reason;
DDP on two CPU processes shows what each device holds and runs to the end."""

from __future__ import annotations

import pytest
import yaml

from pipelines import devices as dev
from tests.test_browser import page, server  # noqa: F401  (fixtures)
from tests.test_browser_rl import choose, fill_visible

pytestmark = pytest.mark.browser


def test_pick_a_strategy_see_its_memory_and_start_ddp(server, page, studio, tiny_model_dir):  # noqa: F811
    from playwright.sync_api import expect

    page.goto(server)
    expect(page.get_by_text("Fine-tune a language model")).to_be_visible(timeout=30_000)
    fill_visible(page, "train-model", tiny_model_dir)
    fill_visible(page, "param-num_train_epochs", 0.25)
    fill_visible(page, "param-max_length", 64)
    page.get_by_text("Devices: several GPUs or machines").click()
    expect(page.locator("#devices-machine")).to_contain_text(dev.machine_text(dev.gpu_count()))

    if not dev.deepspeed_installed():  # marked in the list, and refused with the same reason
        zero1 = dict((v, k) for k, v in dev.strategy_choices(dev.gpu_count()))["zero1"]
        assert "Unavailable here: DeepSpeed is not installed" in zero1
        choose(page, "devices-strategy", zero1)
        page.click("#start-training")
        expect(page.locator("#train-message")).to_contain_text(
            "Could not start: strategy 'zero1' (DeepSpeed ZeRO stage 1) cannot run here: DeepSpeed is not "
            "installed here (pip install deepspeed)", timeout=30_000)
        assert studio.store.list_runs() == []

    ddp = dict((v, k) for k, v in dev.strategy_choices(dev.gpu_count()))["ddp"]
    choose(page, "devices-strategy", ddp)
    fill_visible(page, "devices-num_processes", 2)
    expect(page.locator("#train-estimate")).to_contain_text("DDP, 2 processes: about", timeout=60_000)
    expect(page.locator("#train-estimate")).to_contain_text("GB on each device")

    page.click("#start-training")
    expect(page.locator("#train-message")).to_contain_text("Started run", timeout=30_000)
    run_id = studio.store.list_runs()[0]["id"]
    expect(page.locator("#run-status")).to_contain_text("completed", timeout=240_000)
    run_dir = studio.run_dir(run_id)
    assert yaml.safe_load((run_dir / "accelerate.yaml").read_text())["num_processes"] == 2
    assert (run_dir / "rank1.log").exists()
    assert studio.adapter_dir(run_id).exists()
