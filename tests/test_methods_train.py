"""Every declared method, on the tiny model: a few steps lower the loss, the artifact saves,
reloads outside the studio with the same logits, and the chat decoder talks through it."""

from __future__ import annotations

import itertools
from pathlib import Path

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


def test_adalora_trains_on_its_orthogonality_regulariser_and_logs_the_loss_without_it(tmp_path, tiny_model_dir,
                                                                                       small_dataset):
    """PEFT adds the regulariser to the model's own loss, which TRL never reads: AdaLoRA trained without it. Now
    its gradient is in, its value logged apart, and the loss is the answer tokens' (comparable across methods)."""
    from pipelines.methods.lora_relatives import orthogonality

    trainer = _trained("adalora", tmp_path, tiny_model_dir, small_dataset)
    model = trainer.model.train()
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    # the regulariser as PEFT's own forward adds it to a loss computed with labels
    config = model.peft_config["default"]
    with torch.no_grad():
        with_reg = model(**inputs).loss
        config.orth_reg_weight, weight = 0.0, config.orth_reg_weight
        plain = model(**inputs).loss
        config.orth_reg_weight = weight
    penalty = orthogonality(model)
    assert penalty.item() == pytest.approx((with_reg - plain).item(), rel=1e-4) and penalty.item() > 0.1

    def loss_and_grads(reg_weight):
        config.orth_reg_weight = reg_weight
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(inputs))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if "lora_A" in n}

    value, grads = loss_and_grads(weight)
    value_off, grads_off = loss_and_grads(0.0)
    config.orth_reg_weight = weight
    assert value == pytest.approx(value_off, abs=1e-6)  # the value: the answer tokens' loss alone
    assert any(not torch.allclose(grads[n], grads_off[n]) for n in grads)  # the gradient: the regulariser's too
    assert trainer._metrics["train"]["orthogonality"][0].item() == pytest.approx(penalty.item(), rel=1e-4)


def test_adalora_resumes_in_its_final_phase(studio, tiny_model_dir, tmp_path):
    """A resumed AdaLoRA run built its config afresh, without the ranks it had settled on: in its final phase
    PEFT masked by that missing pattern and failed at the first step of every resume."""
    import shutil

    from pipelines.events import newest_checkpoint

    import json

    few = tmp_path / "few.jsonl"  # one step an epoch
    few.write_text("".join(json.dumps({"prompt": f"Question {i}?", "completion": f"Answer {i}."}) + "\n"
                           for i in range(4)))
    dataset = studio.import_dataset(few, name="few", options=importer.ImportOptions(heldout=0.0))
    params = {"num_train_epochs": 10, "per_device_train_batch_size": 4, "max_length": 96, "save_steps": 1,
              "init_r": 4, "target_r": 2, "tinit_fraction": 0.0, "tfinal_fraction": 0.3, "eval_fraction": 0}
    run_id = studio.start_run(model=str(tiny_model_dir), dataset=dataset["id"], method="adalora", params=params)
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    run_dir, total = studio.run_dir(run_id), row["max_steps"]
    # the state a kill in the final phase leaves: its checkpoint before the last step, no result, status failed
    shutil.rmtree(newest_checkpoint(run_dir))
    shutil.rmtree(studio.adapter_dir(run_id))
    assert newest_checkpoint(run_dir).name == f"checkpoint-{total - 1}"
    RunEvents(run_dir).status("failed", error="the training process was killed by SIGKILL")
    studio.resume(run_id)
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    assert (studio.adapter_dir(run_id) / "adapter_config.json").exists()


def test_adalora_resumed_chooses_its_ranks_from_the_whole_runs_importance(tmp_path, tiny_model_dir, small_dataset):
    """AdaLoRA keeps the ranks whose weights scored most important, smoothed over every step so far. A resumed run
    started those scores at zero: it chose from the steps since the resume alone. Its checkpoint keeps them, and a
    run resumed from it starts with the scores the run had at that step."""
    import shutil

    from transformers import TrainerCallback

    from pipelines.methods.lora_relatives import IMPORTANCE, SCORES

    settings = {"tinit_fraction": 0.0, "tfinal_fraction": 0.0, "init_r": 6, "target_r": 2, "num_train_epochs": 2,
                "save_steps": 1}
    halfway, scores = tmp_path / "kept" / "checkpoint-5", {}

    def allocator(model):
        return model.base_model.rankallocator

    class Keep(TrainerCallback):  # the checkpoint at step 5 and the scores then (a run keeps its newest two)
        def on_save(self, args, state, control, model=None, **kwargs):
            if state.global_step == 5:
                shutil.copytree(Path(args.output_dir) / halfway.name, halfway)
                scores.update({k: {n: t.clone() for n, t in getattr(allocator(model), k).items()} for k in SCORES})

    whole = _trained("adalora", tmp_path / "whole", tiny_model_dir, small_dataset, **settings)
    whole.add_callback(Keep())
    whole.train()
    assert whole.state.global_step >= 10 and (halfway / IMPORTANCE).exists()
    assert scores["exp_avg_ipt"] and all(t.abs().sum() > 0 for t in scores["exp_avg_ipt"].values())
    resumed = {}

    class Look(TrainerCallback):  # what the run resumes with, once the studio's own callback has run
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            resumed.update({k: {n: t.clone() for n, t in getattr(allocator(model), k).items()} for k in SCORES})

    again = _trained("adalora", tmp_path / "again", tiny_model_dir, small_dataset, **settings)
    again.add_callback(Look())
    shutil.copytree(halfway, Path(again.args.output_dir) / halfway.name)
    again.train(resume_from_checkpoint=str(Path(again.args.output_dir) / halfway.name))
    for kind in SCORES:
        assert resumed[kind].keys() == scores[kind].keys(), kind
        assert all(torch.equal(resumed[kind][n], scores[kind][n]) for n in scores[kind]), kind
    assert again.state.global_step == whole.state.global_step


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
