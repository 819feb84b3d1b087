"""GaLore and APOLLO: the trainer really gets the low-rank optimizer with the form's settings, and the
estimate counts its smaller state (hand-computed on the tiny model's shapes)."""

from __future__ import annotations

import pytest

from pipelines.events import JOB, RunEvents, read_json
from pipelines.methods import METHODS, parse
from pipelines.methods.lowrank_optim import state_bytes


def test_optimizer_state_is_counted_per_matrix(tiny_model_dir):
    """Tiny llama: hidden 64, feed-forward 128, 2 layers, 4 heads of 16, 2 key/value heads; vocabulary
    tied. With rank 8 each projection (short side s, long side l) keeps two 8 x l moments and an s x 8
    projector; the embedding (vocab x 64) and the three norms per layer... keep AdamW's two moments."""
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    params = parse(METHODS["galore"].params, {"rank": 8})

    def matrix(a, b):  # fp32 bytes
        short, long = sorted((a, b))
        return 4 * (2 * 8 * long + short * 8)

    per_layer = (matrix(64, 64) + matrix(32, 64) + matrix(32, 64) + matrix(64, 64)  # q, k, v, o
                 + matrix(128, 64) + matrix(128, 64) + matrix(64, 128))  # gate, up, down
    full_moments = 8 * (vocab * 64 + 2 * (64 + 64) + 64)  # embedding, 2 norms per layer, final norm
    assert state_bytes(str(tiny_model_dir), params) == 2 * per_layer + full_moments


def test_the_estimate_keeps_less_optimizer_state_than_full_tuning(tiny_model_dir):
    from pipelines.estimates import estimate

    full = estimate(str(tiny_model_dir), "full", {"max_length": 64})
    galore = estimate(str(tiny_model_dir), "galore", {"max_length": 64, "rank": 4})
    assert galore.trainable_params == full.trainable_params  # every weight learns in both
    assert galore.training_bytes < full.training_bytes


@pytest.mark.parametrize("key, package, settings", [
    ("galore", "galore_torch", {"rank": 4, "update_proj_gap": 5, "scale": 0.5}),
    ("apollo", "apollo_torch", {"rank": 2, "scale_type": "tensor", "scale": 8.0}),
])
def test_the_trainer_gets_the_low_rank_optimizer_with_the_forms_settings(studio, tiny_model_dir, key, package,
                                                                          settings):
    from pipelines.train_sft import build_trainer

    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method=key,
                              params={**settings, "num_train_epochs": 0.1, "max_length": 64})
    row = studio.wait(run_id)
    assert row["status"] == "completed", row["error"]
    assert (studio.run_dir(run_id) / "model" / "model.safetensors").exists()  # a whole model, like full tuning
    run_dir = studio.run_dir(run_id)
    trainer, _ = build_trainer(read_json(run_dir / JOB), run_dir, RunEvents(run_dir))
    optimizer = trainer.create_optimizer()
    assert type(optimizer).__module__.split(".")[0] == package  # not torch's AdamW
    low_rank = [g for g in optimizer.param_groups if "rank" in g]
    assert low_rank and all(g["rank"] == settings["rank"] for g in low_rank)
    assert low_rank[0]["scale"] == settings["scale"]
    projected = {id(p) for g in low_rank for p in g["params"]}
    names = [n for n, p in trainer.model.named_parameters() if id(p) in projected]
    assert names and all(("attn" in n or "mlp" in n) and n.endswith("proj.weight") for n in names)
