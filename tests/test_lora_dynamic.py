"""DyLoRA's rank truncation and Delta-LoRA's base update, each against a hand computation on a
LoRA layer of the tiny model; the saved DyLoRA adapter is a plain LoRA of the chosen rank."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from pipelines.methods import METHODS, ConfigError, parse
from pipelines.methods.lora_dynamic import (RankTruncation, _lora_layers, delta_callbacks, dylora_callbacks,
                                            save_dylora)
from pipelines.methods.setup import Setup


def _lora_model(key, tiny_model_dir, **values):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    method = METHODS[key]
    params = parse(method.params, values)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           method.peft_config(params, Setup(model_path=str(tiny_model_dir))))
    with torch.no_grad():  # B starts at zero; give it values, as training would
        for layer in _lora_layers(model):
            layer.lora_B["default"].weight.normal_(0, 0.1)
    return model, params


def test_dylora_trains_the_adapter_cut_to_the_drawn_rank(tiny_model_dir):
    model, params = _lora_model("dylora", tiny_model_dir, r=4, lora_alpha=8, export_rank=3, target_modules="attention")
    truncation = RankTruncation(model, params)
    layer = _lora_layers(model)[0]
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(1, 2, A.shape[1])
    base = layer.get_base_layer()(x)
    model.train()
    truncation.rank = 2
    # α/b · B[:, :b] A[:b] x with b = 2
    expected = base + (8 / 2) * x @ A[:2].T @ B[:, :2].T
    assert torch.allclose(layer(x), expected, atol=1e-6)
    model.eval()  # held-out checks and the saved adapter use the rank to save
    assert torch.allclose(layer(x), base + (8 / 3) * x @ A[:3].T @ B[:, :3].T, atol=1e-6)

    draws = []
    for step in range(200):
        truncation.draw(step)
        draws.append(truncation.rank)
    assert set(draws) == {1, 2, 3, 4}
    truncation.draw(17)
    again = truncation.rank
    truncation.draw(17)
    assert truncation.rank == again  # a resumed run draws the same ranks


def test_dylora_saves_a_plain_lora_of_the_chosen_rank(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, params = _lora_model("dylora", tiny_model_dir, r=8, export_rank=2)
    dylora_callbacks(model, params)
    model.eval()
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    expected = model(input_ids=ids).logits
    save_dylora(model, tmp_path / "adapter", params)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 2 and config["peft_type"] == "LORA"
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    assert _lora_layers(reloaded)[0].lora_A["default"].weight.shape[0] == 2
    assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)


def test_dylora_refuses_a_rank_to_save_outside_its_range():
    with pytest.raises(ConfigError) as error:
        METHODS["dylora"].validate(parse(METHODS["dylora"].params, {"r": 8, "export_rank": 16}))
    assert str(error.value) == "DyLoRA needs smallest rank ≤ rank to save ≤ rank; got 1, 16 and 8"


def test_delta_lora_moves_the_base_by_the_change_of_the_product(tiny_model_dir):
    model, params = _lora_model("delta_lora", tiny_model_dir, lora_alpha=32, r=16, delta_scale=2.0, delta_start=1)
    callback = delta_callbacks(model, params)[0]
    layers = _lora_layers(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    ids = torch.randint(0, 100, (2, 8))

    def step(global_step):
        state = SimpleNamespace(global_step=global_step)
        model(input_ids=ids, labels=ids).loss.backward()
        before = [(layer.get_base_layer().weight.detach().clone(), layer.lora_A["default"].weight.detach().clone(),
                   layer.lora_B["default"].weight.detach().clone()) for layer in layers]
        callback.on_pre_optimizer_step(None, state, None)
        optimizer.step()
        callback.on_optimizer_step(None, state, None)
        optimizer.zero_grad()
        return before

    before = step(0)  # before delta_start: plain LoRA, the base stays
    assert all(torch.equal(w, layer.get_base_layer().weight) for (w, _a, _b), layer in zip(before, layers))
    before = step(1)
    for (w, a, b), layer in zip(before, layers):
        a2, b2 = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        # W' = W + λ · (α/r) · (B'A' − BA) with λ = 2, α/r = 2
        assert torch.allclose(layer.get_base_layer().weight, w + 2.0 * 2.0 * (b2 @ a2 - b @ a), atol=1e-6)
    assert not torch.equal(before[0][0], layers[0].get_base_layer().weight)
    assert not any(p.requires_grad for p in (layer.get_base_layer().weight for layer in layers))


def test_delta_lora_refuses_dropout():
    with pytest.raises(ConfigError) as error:
        METHODS["delta_lora"].validate(parse(METHODS["delta_lora"].params, {"lora_dropout": 0.1}))
    assert str(error.value).startswith("Delta-LoRA needs dropout 0")


def test_delta_lora_resumes_with_the_base_weights_it_moved(tiny_model_dir, tmp_path):
    """A run stopped after step 3 and resumed ends where an uninterrupted run ends: the checkpoint
    carries the moved base weights, which PEFT's adapter checkpoint alone would lose."""
    import itertools
    import shutil

    from pipelines import importer
    from pipelines.events import CHECKPOINTS, RunEvents
    from pipelines.train_sft import build_trainer
    from tests.conftest import FAQ

    source = tmp_path / "faq24.jsonl"
    with open(FAQ) as f:
        source.write_text("".join(itertools.islice(f, 24)))
    importer.import_file(source, tmp_path / "ds")
    job = {"method": "delta_lora", "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(tmp_path / "ds" / importer.DATA)},
           "params": {"learning_rate": 1e-2, "num_train_epochs": 1, "per_device_train_batch_size": 4,
                      "max_length": 48, "eval_fraction": 0.0, "save_steps": 3}}

    def run(name, resume=None):
        run_dir = tmp_path / name
        run_dir.mkdir()
        if resume:
            shutil.copytree(resume, run_dir / CHECKPOINTS / resume.name)
        trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
        trainer.train(resume_from_checkpoint=str(run_dir / CHECKPOINTS / resume.name) if resume else None)
        return trainer.model, run_dir

    whole, whole_dir = run("whole")
    resumed, _ = run("resumed", resume=whole_dir / CHECKPOINTS / "checkpoint-3")
    original = _lora_model("delta_lora", tiny_model_dir)[0]
    for (name, a), (_n, b), (_o, w0) in zip(_weights(whole), _weights(resumed), _weights(original)):
        assert not torch.equal(a, w0), name  # the base did move
        assert torch.allclose(a, b, atol=1e-6), name


def _weights(model):
    return [(name, m.get_base_layer().weight.detach()) for name, m in model.named_modules()
            if m in set(_lora_layers(model))]
