"""BAdam on the tiny model: one block learns at a time and the turns follow `switch_every`; the
optimizer's saved state brings a resumed run back to the same block with the same Adam moments;
the estimate counts the optimizer state of one block."""

from __future__ import annotations

import copy

import torch

from pipelines.methods import METHODS, parse
from pipelines.methods.blockwise import block_optimizer, first_block_only, state_bytes


def _model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def _step(model, optimizer, ids):
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _moved(before, model):
    return {n.split(".")[2] if ".layers." in n else n for n, p in model.named_parameters()
            if not torch.equal(before[n], p)}


def test_one_block_learns_at_a_time_in_turns(tiny_model_dir):
    model = _model(tiny_model_dir)
    params = parse(METHODS["badam"].params, {"switch_every": 2, "learning_rate": 1e-3})
    first_block_only(model, params)
    optimizer = block_optimizer(model, params)
    ids = torch.randint(0, 100, (2, 10))
    turns = []
    for _ in range(3):  # two steps per block: block 0, block 1, then block 0 again
        before = _snapshot(model)
        _step(model, optimizer, ids)
        _step(model, optimizer, ids)
        turns.append(_moved(before, model))
    assert turns == [{"0"}, {"1"}, {"0"}]  # embeddings, final norm and output layer never move
    learning = {n for n, p in model.named_parameters() if p.requires_grad}
    assert learning and all(".layers.1." in n for n in learning)  # the next turn's block is set up


def test_a_resumed_optimizer_continues_the_same_block_with_its_moments(tiny_model_dir):
    params = parse(METHODS["badam"].params, {"switch_every": 2, "learning_rate": 1e-3})
    ids = torch.randint(0, 100, (2, 10))
    model = _model(tiny_model_dir)
    first_block_only(model, params)
    optimizer = block_optimizer(model, params)
    for _ in range(3):  # block 0 twice, then block 1 once
        _step(model, optimizer, ids)
    # a copy, as a checkpoint on disk is: loading would otherwise share the live moment tensors
    saved_weights, saved_state = _snapshot(model), copy.deepcopy(optimizer.state_dict())
    assert saved_state["badam"]["active"] == 1 and saved_state["badam"]["step"] == 3

    resumed = _model(tiny_model_dir)  # as the trainer resumes: a fresh optimizer, then the checkpoint
    first_block_only(resumed, params)
    again = block_optimizer(resumed, params)
    with torch.no_grad():
        for name, p in resumed.named_parameters():
            p.copy_(saved_weights[name])
    again.load_state_dict(saved_state)
    assert {n for n, p in resumed.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}
    for a, b in zip(optimizer.base_optimizer.state.values(), again.base_optimizer.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])

    _step(model, optimizer, ids)
    _step(resumed, again, ids)
    for name, p in resumed.named_parameters():
        assert torch.allclose(p, dict(model.named_parameters())[name], atol=1e-6), name


def test_estimate_counts_one_blocks_optimizer_state(tiny_model_dir):
    model = _model(tiny_model_dir)
    block = sum(p.numel() for n, p in model.named_parameters() if ".layers.0." in n)
    assert state_bytes(str(tiny_model_dir), None) == 12 * block
