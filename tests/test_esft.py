"""ESFT on a tiny mixture-of-experts model: relevance and choice checked by hand, only the chosen
experts move, and a dense model is refused in one sentence."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines.methods import METHODS, parse
from pipelines.methods.experts import CHOICE, choose, relevance
from pipelines.methods.params import ConfigError
from tests.conftest import FAQ

# three tokens, two experts each (k = 2), four experts
PICKED = [[0, 1], [0, 2], [0, 1]]
WEIGHTS = [[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]]


def test_relevance_and_choice_by_hand():
    # expert 0 picked 3 times of 6, expert 1 twice, expert 2 once, expert 3 never
    assert relevance(PICKED, WEIGHTS, 4, "token") == pytest.approx([3 / 6, 2 / 6, 1 / 6, 0])
    # routing weight: 0.6 + 0.7 + 0.5 = 1.8, 0.4 + 0.5 = 0.9, 0.3; of 3.0
    assert relevance(PICKED, WEIGHTS, 4, "gate") == pytest.approx([0.6, 0.3, 0.1, 0])
    token = relevance(PICKED, WEIGHTS, 4, "token")
    assert choose(token, 0.2) == [0]  # the first expert already covers 0.5
    assert choose(token, 0.6) == [0, 1]  # 0.5, then 0.83
    assert choose(relevance(PICKED, WEIGHTS, 4, "gate"), 0.95) == [0, 1, 2]
    assert choose([0.25, 0.25, 0.25, 0.25], 0.5) == [0, 1]  # ties: the lower number first
    assert choose(token, 1.0) == [0, 1, 2]  # an expert no token uses is never chosen


def _weights(path):
    from transformers import AutoModelForCausalLM

    return {n: p.detach().clone() for n, p in AutoModelForCausalLM.from_pretrained(path).named_parameters()}


def test_only_the_chosen_experts_learn(studio, tiny_moe_dir):
    from tests.test_methods_train import tiny_params

    dataset = studio.import_dataset(FAQ, name="faq")
    params = {**tiny_params("esft"), "expert_threshold": 0.3, "num_train_epochs": 2}
    run_id = studio.start_run(model=str(tiny_moe_dir), dataset=dataset["id"], method="esft", params=params)
    run = studio.wait(run_id)
    assert run["status"] == "completed", run.get("error")

    choice = json.loads((studio.run_dir(run_id) / CHOICE).read_text())
    assert choice["score"] == "token" and choice["threshold"] == 0.3
    for scores, chosen in zip(choice["relevance"], choice["experts"]):
        assert sum(scores) == pytest.approx(1.0, abs=1e-3)
        assert chosen == choose(scores, 0.3)  # the rule, on what was measured
        # experts the data uses but that were not chosen: only the gradient mask keeps them still
        assert any(score > 0 for e, score in enumerate(scores) if e not in chosen)

    before, after = _weights(tiny_moe_dir), _weights(studio.result_dir(run_id))
    assert before.keys() == after.keys()
    for name in before:
        if ".mlp.experts." not in name:  # attention, routers, norms, embeddings: untouched
            assert torch.equal(before[name], after[name]), name
            continue
        layer = int(name.split(".layers.")[1].split(".")[0])
        for expert in range(8):
            moved = not torch.equal(before[name][expert], after[name][expert])
            assert moved == (expert in choice["experts"][layer]), (name, expert)


def test_a_dense_model_is_refused_before_anything_starts(studio, tiny_model_dir):
    dataset = studio.import_dataset(FAQ, name="faq")
    with pytest.raises(ConfigError, match=r"^ESFT trains the experts of a mixture-of-experts model, and llama has "
                                          r"none: use Freeze tuning or LoRA for a dense model$"):
        studio.start_run(model=str(tiny_model_dir), dataset=dataset["id"], method="esft")
    assert studio.store.list_runs() == []


def test_the_threshold_is_checked_like_every_setting():
    with pytest.raises(ConfigError, match="expert_threshold"):
        parse(METHODS["esft"].params, {"expert_threshold": 0})
