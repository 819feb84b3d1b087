"""Every declared method, on the tiny model: a few steps lower the loss, the artifact saves,
reloads outside the studio with the same logits, and the chat decoder talks through it."""

from __future__ import annotations

import itertools

import pytest
import torch

from pipelines import chat, importer
from pipelines.events import RunEvents
from pipelines.methods import METHODS, parse
from pipelines.train_sft import build_trainer, save
from tests.conftest import FAQ, greedy_tokens

PROBE = "How long does the Quillpad battery last?"


# AdaLoRA's singular values start at zero with small random A/B around them, IA3 only rescales
# three places per block, and ESFT moves a few experts' feed-forward weights: on a random tiny
# model they need a larger push to show.
TINY_LR = {"adalora": 0.1, "ia3": 0.3, "mezo": 1e-3, "esft": 3e-2}


def tiny_params(key: str) -> dict:
    """Method defaults, but a learning rate 10x higher: a random tiny model must move visibly
    in six steps."""
    default = parse(METHODS[key].params, {})
    # a zeroth-order method (MeZO) measures one random direction per step: it needs many more steps
    epochs = 10 if METHODS[key].zeroth_order else 1
    return {"learning_rate": TINY_LR.get(key, min(default.learning_rate * 10, 0.3)), "num_train_epochs": epochs,
            "per_device_train_batch_size": 4, "max_length": 48, "eval_fraction": 0.0, "save_steps": 1000}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faq24")
    source = folder / "faq24.jsonl"
    with open(FAQ) as f:
        source.write_text("".join(itertools.islice(f, 24)))
    importer.import_file(source, folder / "ds")
    return folder / "ds" / importer.DATA


def reload(key: str, tiny_model_dir, out):
    """The saved artifact loaded the way a user would, without the studio."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    method = METHODS[key]
    if method.artifact == "model":
        return AutoModelForCausalLM.from_pretrained(out)
    kwargs = {}
    if method.quantized:  # same 4-bit base as in training, to reproduce its logits exactly
        from pipelines.methods.qlora import quantization_config

        kwargs = {"quantization_config": quantization_config(parse(method.params, {}), torch.bfloat16),
                      "dtype": torch.bfloat16}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, **kwargs)
    return PeftModel.from_pretrained(base, out)


@pytest.mark.parametrize("key", [k for k, m in METHODS.items() if m.data_kind == "sft"])
def test_method_learns_saves_reloads_and_generates(key, tmp_path, tiny_model_dir, tiny_moe_dir, small_dataset):
    if key == "esft":  # trains a mixture-of-experts model's experts only
        tiny_model_dir = tiny_moe_dir
    job = {"method": key, "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(small_dataset)}, "params": tiny_params(key)}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    before = trainer.evaluate(trainer.train_dataset)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(trainer.train_dataset)["eval_loss"]
    assert after < before - 0.05, f"{key}: loss {before:.3f} -> {after:.3f}"

    probe = tokenizer([PROBE], return_tensors="pt")
    # the trained weights as they are saved: accelerate wraps forward in bf16 autocast for training
    # on a bf16-capable CPU or GPU, which a reload outside the studio does not have
    from accelerate.utils import extract_model_from_parallel

    plain = extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False).eval()
    with torch.no_grad():
        trained = plain(**probe).logits.float()
    out = save(trainer, tokenizer, run_dir, key)
    assert out.name == METHODS[key].artifact
    reloaded = reload(key, tiny_model_dir, out).eval()
    with torch.no_grad():
        again = reloaded(**probe).logits.float()
    # QLoRA computes in bf16 (8 significant bits) on a 4-bit base: its logits agree to bf16
    # precision; everything else to float32 rounding
    tol = 5e-2 if METHODS[key].quantized else 1e-4
    torch.testing.assert_close(again, trained, atol=tol, rtol=tol)

    # the chat path: the studio's decoder on the saved result, greedy = model.generate
    cache = chat.ModelCache(tmp_path / "models")
    base_spec = str(out) if METHODS[key].artifact == "model" else str(tiny_model_dir)
    entry, name = cache.get(base_spec, None if METHODS[key].artifact == "model" else out)
    settings = chat.GenerationSettings(temperature=0.0, max_new_tokens=6, repetition_penalty=1.0)
    decoder = chat.Decoder(entry, name, [{"role": "user", "content": PROBE}], settings)
    for _ in chat.stream([decoder]):
        pass
    assert decoder.generated, f"{key}: no tokens generated"
    if not METHODS[key].quantized:  # the chat copy is unquantized; the QLoRA reload is 4-bit
        ref = greedy_tokens(reloaded, decoder.prompt_ids, 6)
        assert decoder.generated == ref[:len(decoder.generated)]


def _trained(key, tmp_path, tiny_model_dir, dataset, **overrides):
    job = {"method": key, "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(dataset)}, "params": {**tiny_params(key), **overrides}}
    (tmp_path / "run").mkdir(parents=True)
    trainer, _tok = build_trainer(job, tmp_path / "run", RunEvents(tmp_path / "run"))
    return trainer


def test_adalora_really_moves_its_rank_budget(tmp_path, tiny_model_dir, small_dataset):
    """Without `update_and_allocate` after each step every layer keeps its starting rank."""
    trainer = _trained("adalora", tmp_path, tiny_model_dir, small_dataset, tinit_fraction=0.0,
                       tfinal_fraction=0.0, init_r=6, target_r=2, num_train_epochs=2)
    trainer.train()
    singular = [p for n, p in trainer.model.named_parameters() if n.endswith("lora_E.default")]
    kept = sum(int((p != 0).sum()) for p in singular)
    assert kept <= 2 * len(singular) < 6 * len(singular), f"{kept} singular values kept of {6 * len(singular)}"
    assert trainer.model.peft_config["default"].rank_pattern  # the final ranks, saved with the adapter


def test_lorafa_keeps_a_frozen_and_loraplus_speeds_up_b(tmp_path, tiny_model_dir, small_dataset):
    fa = _trained("lorafa", tmp_path / "fa", tiny_model_dir, small_dataset)
    a_before = {n: p.detach().clone() for n, p in fa.model.named_parameters() if "lora_A" in n}
    fa.train()
    assert all(torch.equal(p, a_before[n]) for n, p in fa.model.named_parameters() if "lora_A" in n)

    plus = _trained("loraplus", tmp_path / "plus", tiny_model_dir, small_dataset)
    rates = sorted({group["lr"] for group in plus.optimizer.param_groups if group["params"]})
    assert rates[-1] == pytest.approx(16 * rates[0])


def test_qlora_trains_a_4bit_base_with_an_8bit_optimizer(tmp_path, tiny_model_dir, small_dataset):
    import bitsandbytes as bnb

    trainer = _trained("qlora", tmp_path, tiny_model_dir, small_dataset)
    trainer.train()
    base_layers = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert base_layers and all(m.weight.quant_type == "nf4" for m in base_layers)
    assert all(m.weight.quant_state.nested for m in base_layers)  # double quantization
    # bitsandbytes' 8-bit AdamW (it keeps tensors under 4096 weights, like this tiny model's, in
    # 32 bits; the default model's LoRA matrices get 8-bit moments)
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert trainer.args.optim == "adamw_bnb_8bit"
    assert type(optimizer).__module__.startswith("bitsandbytes") and optimizer.args.optim_bits == 8
