"""Padding-free SFT batches (pipelines/packing.py): the same loss and gradients as each row on its
own, no attention across rows, and tokens/s counting real tokens only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipelines import packing
from pipelines.events import RunEvents
from pipelines.train_sft import build_trainer
from tests.conftest import FAQ
from tests.test_train_sft import tiny_job


def _trainer(tmp_path, tiny_model_dir, source=FAQ, **params):
    job = tiny_job(tmp_path, tiny_model_dir, {"eval_fraction": 0.0, "max_length": 64, **params}, source=source)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
    return trainer


def _lora_grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_a_padding_free_batch_gives_each_rows_own_loss_and_gradients(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("STUDIO_BF16", "0")  # exact comparison in float32
    trainer = _trainer(tmp_path, tiny_model_dir, per_device_train_batch_size=4)
    assert trainer.packed
    model = trainer.model
    # make the adapter non-zero so every path through it counts
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    rows = [trainer.train_dataset[i] for i in range(4)]
    lengths = [len(r["input_ids"]) for r in rows]
    assert len(set(lengths)) > 1  # rows of different lengths, laid end to end
    batch = trainer.data_collator(rows)
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch["cu_seq_lens_q"].tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]

    loss, _, learned, _aux = packing.answer_loss(model, batch)
    loss.backward()
    packed_grads = _lora_grads(model)
    model.zero_grad()

    # reference: every row alone (no padding, no packing), the same tokens learned
    total, count = 0.0, 0
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor(row["labels"])  # TRL's: -100 on the prompt
        assert (labels == -100).any() and (labels != -100).any()
        logits = model(input_ids=ids).logits[0, :-1]
        target = labels[1:]
        keep = target != -100
        total = total + F.cross_entropy(logits[keep], target[keep], reduction="sum")
        count += int(keep.sum())
    reference = total / count
    reference.backward()
    assert learned == count
    assert torch.allclose(loss, reference, atol=1e-5), (loss, reference)
    for name, grad in _lora_grads(model).items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5), name


def test_rows_in_one_batch_do_not_see_each_other(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("STUDIO_BF16", "0")
    trainer = _trainer(tmp_path, tiny_model_dir, per_device_train_batch_size=2)
    rows = [trainer.train_dataset[i] for i in range(2)]
    changed = [dict(rows[0], input_ids=[(t + 7) % 1000 for t in rows[0]["input_ids"]]), rows[1]]
    model = trainer.model.eval()
    with torch.no_grad():
        a = model(**{k: v for k, v in trainer.data_collator(rows).items() if k != "labels"}).logits[0]
        b = model(**{k: v for k, v in trainer.data_collator(changed).items() if k != "labels"}).logits[0]
    first = len(rows[0]["input_ids"])
    assert not torch.allclose(a[:first], b[:first])  # the first row changed...
    assert torch.allclose(a[first:], b[first:], atol=1e-5)  # ...the second did not notice


def test_tokens_seen_are_real_tokens_and_prompt_methods_keep_padded_batches(tmp_path, tiny_model_dir):
    # one epoch of 24 rows of the FAQ: 3 steps of 8, every token counted
    few = tmp_path / "few.jsonl"
    few.write_text("".join(FAQ.read_text().splitlines(keepends=True)[:24]))
    params = {"num_train_epochs": 1, "per_device_train_batch_size": 8}
    trainer = _trainer(tmp_path, tiny_model_dir, source=few, **params)
    trainer.train()
    real = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    assert len(trainer.train_dataset) == 24 and trainer.state.global_step == 3
    assert trainer.state.num_input_tokens_seen == real

    job = tiny_job(tmp_path / "p", tiny_model_dir, {"eval_fraction": 0.0, "max_length": 64, **params}, source=few)
    job["method"] = "prompt"
    run_dir = tmp_path / "p" / "run"
    run_dir.mkdir(parents=True)
    prompt, _ = build_trainer(job, run_dir, RunEvents(run_dir))
    assert not prompt.packed
    prompt.train()
    assert 0 < prompt.state.num_input_tokens_seen <= real  # attention-mask count: padding left out


def test_the_blockwise_loss_equals_cross_entropy_over_whole_logits(monkeypatch):
    monkeypatch.setattr(packing, "_chunk", lambda weight: 3)  # 7 rows: blocks of 3, 3 and 1
    torch.manual_seed(0)
    hidden = torch.randn(7, 5, requires_grad=True)
    weight = torch.randn(11, 5, requires_grad=True)
    targets = torch.tensor([0, 3, 10, 4, 4, 7, 1])
    total, correct = packing._ChunkedNLL.apply(hidden, weight, targets, torch.float32)
    total.backward()
    logits = hidden.detach() @ weight.detach().t()
    assert int(correct) == int((logits.argmax(-1) == targets).sum())

    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    reference = F.cross_entropy(h2 @ w2.t(), targets, reduction="sum")
    reference.backward()
    assert torch.allclose(total, reference, atol=1e-5)
    assert torch.allclose(hidden.grad, h2.grad, atol=1e-5) and torch.allclose(weight.grad, w2.grad, atol=1e-5)
    # by hand: sum over rows of log(sum_j e^(logit_j)) - logit_target
    import math

    by_hand = sum(math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(logits.tolist(), targets.tolist()))
    assert abs(float(total) - by_hand) < 1e-4


def test_a_batch_without_learned_tokens_gives_zero_not_nan(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("STUDIO_BF16", "0")
    trainer = _trainer(tmp_path, tiny_model_dir, per_device_train_batch_size=2)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    batch["labels"][:] = -100  # e.g. answers cut away by max_length
    for items in (None, torch.tensor(0)):  # alone, and as a gradient-accumulation window of none
        loss, correct, learned, _aux = packing.answer_loss(trainer.model, batch, items)
        loss.backward()
        assert float(loss) == 0.0 and learned == 0 and int(correct) == 0


def test_models_whose_attention_rows_cannot_reproduce_keep_padded_batches():
    from transformers import Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config

    assert packing.model_supports(LlamaConfig()) and packing.model_supports(Qwen2Config())
    assert not packing.model_supports(MistralConfig(sliding_window=4096))  # a window: not row-causal
    assert not packing.model_supports(Gemma2Config())  # sliding layers and soft-capped scores
    # hybrids: their convolution and linear-attention layers would carry one row into the next
    from transformers import Lfm2Config, Qwen3NextConfig

    assert not packing.model_supports(Lfm2Config(num_hidden_layers=4, full_attn_idxs=[1, 3]))  # LFM2-350M's kind
    assert not packing.model_supports(Qwen3NextConfig())
    # attention transformers cannot switch (the estimate said padding-free, the run padded)
    from transformers import BloomConfig, MptConfig

    assert not packing.model_supports(BloomConfig()) and not packing.model_supports(MptConfig())


def test_held_out_loss_is_per_token_whatever_the_batch_size(tmp_path, tiny_model_dir, monkeypatch):
    """Transformers averaged each held-out batch's loss with one weight per batch, so the untrained model on
    one held-out set read 2.815 at batch 8 and 2.835 at batch 4 (a walkthrough's two runs). The held-out
    loss is now the summed loss over every held-out answer token over their count, at any batch size."""
    monkeypatch.setenv("STUDIO_BF16", "0")  # exact comparison in float32
    losses = {}
    for batch in (8, 3):
        trainer = _trainer(tmp_path / f"b{batch}", tiny_model_dir, per_device_train_batch_size=batch,
                           eval_fraction=0.25)
        assert trainer.packed and len(trainer.eval_dataset) > 8
        gen = torch.Generator().manual_seed(0)  # one adapter in both, far from uniform: rows' losses differ
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        losses[batch] = trainer.evaluate()["eval_loss"]
    total, count = 0.0, 0
    with torch.no_grad():  # reference: each held-out row alone, every answer token once
        for row in trainer.eval_dataset:
            logits = trainer.model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            target = torch.tensor(row["labels"])[1:]
            keep = target != -100
            total += float(F.cross_entropy(logits[keep], target[keep], reduction="sum"))
            count += int(keep.sum())
    assert abs(losses[8] - losses[3]) < 1e-5, losses
    assert abs(losses[3] - total / count) < 1e-5, (losses, total / count)


def _tiny(model_type: str):
    from transformers import AutoModelForCausalLM, CONFIG_MAPPING

    torch.manual_seed(0)
    sizes = {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
             "num_hidden_layers": 2, "vocab_size": 128}
    if model_type == "falcon":
        sizes = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 128,
                 "new_decoder_architecture": True, "num_kv_heads": 2, "alibi": False}
    config = CONFIG_MAPPING[model_type](**sizes)
    return AutoModelForCausalLM.from_config(config).float()


@pytest.mark.parametrize("model_type", ["llama", "stablelm", "falcon", "nemotron"])
def test_rows_stay_apart_where_a_decoder_layer_does_not_pass_the_boundaries_on(model_type):
    """StableLM's, Falcon's and Nemotron's decoder layers call their attention without the row boundaries TRL's
    collator gives the model: a training step failed ("a training batch with neither row boundaries nor a mask")
    and an evaluation attended across rows. Now each packed row's logits and loss are its own, in training (with
    gradient checkpointing, whose recompute in the backward pass reads them again) and in evaluation."""
    model = _tiny(model_type)
    assert packing.model_supports(model.config) and packing.switch(model)
    rows = [torch.randint(0, 128, (1, 5)), torch.randint(0, 128, (1, 7))]
    packed = torch.cat(rows, dim=1)
    bounds = torch.tensor([0, 5, 12], dtype=torch.int32)
    batch = {"input_ids": packed, "position_ids": torch.cat([torch.arange(5), torch.arange(7)])[None],
             "cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": 7, "max_length_k": 7}
    model.eval()
    with torch.no_grad():
        alone = torch.cat([model(input_ids=r).logits[0] for r in rows])
        together = model(**batch).logits[0]
    assert torch.allclose(together, alone, atol=1e-5)

    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    labels = packed.clone()
    labels[0, 5] = -100  # (the collator's: a row's first token is not the last one's next)
    loss, _correct, count, _aux = packing.answer_loss(model, {**batch, "labels": labels})
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.eval()  # each row alone (no dropout in these models: the same numbers as in training)
    expected = sum(F.cross_entropy(model(input_ids=r, attention_mask=torch.ones_like(r)).logits[0, :-1], r[0, 1:],
                                   reduction="sum") for r in rows)
    (expected / count).backward()
    assert count == 10 and torch.allclose(loss, expected / count, atol=1e-5)
    for name, grad in grads.items():
        assert torch.allclose(grad, model.get_parameter(name).grad, atol=1e-5), name


def test_a_stablelm_is_estimated(tmp_path):
    """The estimate's measured training step failed for a StableLM ("a training batch with neither row
    boundaries nor a mask"): the Train tab and the advisor said "Could not advise" for any StableLM."""
    from pipelines import estimates

    folder = tmp_path / "tiny-stablelm"
    _tiny("stablelm").save_pretrained(folder)
    found = estimates.estimate(str(folder), "lora", lengths=[40] * 8)
    assert found.peak_bytes > 0 and found.seconds_per_epoch > 0


def test_a_mixture_of_experts_keeps_its_load_balancing_loss(tmp_path, tiny_moe_dir, monkeypatch):
    """TRL adds a mixture of experts' load-balancing loss (router_aux_loss_coef x aux_loss) on its padded path;
    the padding-free loss dropped it, and the router of a full fine-tune trained without balancing."""
    monkeypatch.setenv("STUDIO_BF16", "0")
    trainer = _trainer(tmp_path, tiny_moe_dir, per_device_train_batch_size=2)
    assert trainer.packed and trainer.aux_loss_enabled and trainer.router_aux_loss_coef == 0.001
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    model = trainer.model.train()
    torch.manual_seed(0)
    loss = trainer.compute_loss(model, dict(batch))
    answers, _correct, _learned, aux = packing.answer_loss(model, dict(batch), router=True)
    assert aux is not None and aux > 0
    assert torch.allclose(loss, answers + 0.001 * aux, atol=1e-6)
    assert trainer._metrics["train"]["aux_loss"] == [pytest.approx(aux.item())]
    # held out: the answers' loss alone
    model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.compute_loss(model, dict(batch)), packing.answer_loss(model, dict(batch))[0])
