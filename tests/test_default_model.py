"""The embedded SmolLM2-135M-Instruct: converted once from its GGUF, replies sensibly, trains."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipelines import generation
from pipelines.events import read_metrics

pytestmark = pytest.mark.slow


def test_embedded_model_converts_once_replies_and_trains(studio):
    path = Path(studio.resolve_model("default"))
    weights = path / "model.safetensors"
    assert weights.exists() and (path / "tokenizer.json").exists()
    stamp = weights.stat().st_mtime_ns
    assert studio.resolve_model("default") == str(path)
    assert weights.stat().st_mtime_ns == stamp  # cached, not converted again

    model, tokenizer = generation.load_for_chat("default", studio.model_cache)
    answer = generation.reply(model, tokenizer, [{"role": "user", "content": "What is the capital of France?"}],
                              max_new_tokens=16)
    assert "Paris" in answer

    run_id = studio.start_run(model="default", dataset="quillpad_faq", method="lora",
                              params={"num_train_epochs": 0.1, "per_device_train_batch_size": 4,
                                      "max_length": 128})
    row = studio.wait(run_id, poll_s=1)
    assert row["status"] == "completed", row["error"]
    losses = [m["loss"] for m in read_metrics(studio.run_dir(run_id)) if "loss" in m]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)

    tuned, tokenizer = generation.load_for_chat("default", studio.model_cache, studio.adapter_dir(run_id))
    assert generation.reply(tuned, tokenizer, [{"role": "user", "content": "Hi!"}], max_new_tokens=8)
