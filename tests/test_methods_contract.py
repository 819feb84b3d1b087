"""Every declared method honours the declaration contract (rule 1 of DESIGN.md)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from transformers import BitsAndBytesConfig

from pipelines.methods import METHODS, ConfigError, Setup, describe, parse
from pipelines.methods.trainers import trl_classes

BNB_FIELDS = set(inspect.signature(BitsAndBytesConfig).parameters)


@pytest.mark.parametrize("key", sorted(METHODS))
def test_every_parameter_is_explained_and_its_default_is_valid(key):
    for info in describe(METHODS[key].params):
        assert info.label, info.name
        assert len(info.help) > 30, f"{key}.{info.name}: help should speak to a non-expert"
        assert isinstance(info.default, info.type), f"{key}.{info.name}: default has the wrong type"
        if info.choices is not None:
            assert info.default in info.choices
        if info.min is not None:
            assert info.min <= info.default <= info.max, f"{key}.{info.name}: default outside range"
        elif info.type in (int, float) and info.choices is None:
            pytest.fail(f"{key}.{info.name}: a number needs a range")


@pytest.mark.parametrize("key", sorted(METHODS))
def test_names_match_trl_and_peft(key, tiny_model_dir):
    method = METHODS[key]
    config_cls = trl_classes(method.trl)[0]
    trainer_fields = {f.name for f in dataclasses.fields(config_cls)}
    defaults = parse(method.params, {})
    peft_fields = set()
    if method.peft_config is not None:
        config = method.peft_config(defaults, Setup(model_path=str(tiny_model_dir), total_steps=100))
        peft_fields = {f.name for f in dataclasses.fields(type(config))}
    for info in describe(method.params):
        if info.target == "trainer":
            assert info.name in trainer_fields, f"{key}.{info.name} is not a {config_cls.__name__} field"
        elif info.target == "peft":
            assert info.name in peft_fields, f"{key}.{info.name} is not a field of the PEFT config"
        elif info.target == "quantization":
            assert info.name in BNB_FIELDS, f"{key}.{info.name} is not a BitsAndBytesConfig argument"
        else:  # the studio's own concept: must not shadow a TRL/PEFT name
            assert info.name not in trainer_fields | peft_fields | BNB_FIELDS, f"{key}.{info.name} exists in TRL/PEFT"
        if info.name == "loss_type":  # every offered loss is one this TRL knows, and each is explained
            meta = config_cls.__dataclass_fields__["loss_type"].metadata
            for choice in info.choices:
                assert choice in (meta.get("choices") or []) or f"'{choice}'" in meta["help"], f"{key}: {choice}"
            assert set(info.choice_help or {}) == set(info.choices), f"{key}: every loss explained"


@pytest.mark.parametrize("key", sorted(METHODS))
def test_method_card_is_complete(key):
    method = METHODS[key]
    assert method.key == key
    assert method.data_kind in ("sft", "preference", "kto", "text", "prompts")
    assert method.summary and method.when_to_use
    assert isinstance(method.mergeable, bool)


def test_parse_rejects_bad_values_with_one_sentence():
    params = METHODS["lora"].params
    with pytest.raises(ConfigError, match=r"^parameter 'r': expected a value from 1 to 512, got 0$"):
        parse(params, {"r": 0})
    with pytest.raises(ConfigError, match=r"^parameter 'target_modules': expected one of attention, all-linear, got 'mlp'$"):
        parse(params, {"target_modules": "mlp"})
    with pytest.raises(ConfigError, match=r"^parameter 'r': expected a whole number, got 2.5$"):
        parse(params, {"r": 2.5})
    with pytest.raises(ConfigError, match=r"^unknown parameter 'rank'; this method accepts: "):
        parse(params, {"rank": 8})
    # a typo of a real name: the closest one is suggested (YAML configs are typed by hand)
    with pytest.raises(ConfigError, match=r"^unknown parameter 'lerning_rate' \(did you mean 'learning_rate'\?\); "):
        parse(params, {"lerning_rate": 1e-4})


def test_parse_coerces_form_and_yaml_values():
    p = parse(METHODS["lora"].params, {"r": "8", "use_rslora": "true", "learning_rate": "1e-4"})
    assert (p.r, p.use_rslora, p.learning_rate) == (8, True, 1e-4)


def test_lora_config_follows_the_declaration():
    method = METHODS["lora"]
    cfg = method.peft_config(parse(method.params, {"r": 4, "target_modules": "attention", "use_rslora": True}))
    assert cfg.r == 4 and cfg.use_rslora
    assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= set(cfg.target_modules)  # (and other families' names)


def test_an_optimizer_this_machine_cannot_run_is_refused_before_the_run(studio, tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("paged optimizers run on this machine")
    with pytest.raises(ConfigError, match=r"^optimizer 'paged_adamw_8bit' pages memory between GPU and CPU and "
                                          r"needs a CUDA GPU; on this machine use 'auto', 'adamw_bnb_8bit' or "
                                          r"'adamw_torch'$"):
        studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method="qlora",
                         params={"optim": "paged_adamw_8bit"})
    assert studio.store.list_runs() == [] and not any(studio.runs_dir.iterdir())


def peft_model_in_a_new_process(tiny_model_dir, key: str, then: str, params: str = "None"):
    """(stdout, stderr) of a fresh Python that builds method `key`'s PEFT model on the tiny model with
    every warning shown, then runs `then` (a notice a process gives once must not have been given by
    another test already)."""
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('default'); import torch; import pipelines.methods as m; "
            "from peft import get_peft_model; from transformers import AutoModelForCausalLM; "
            f"model = AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r}); "
            f"method = m.METHODS[{key!r}]; params = {params}; "
            f"peft = get_peft_model(model, method.peft_config(params, m.Setup())); {then}")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_layernorm_tuning_leaves_no_peft_fault_notice_in_the_log(tiny_model_dir):
    """PEFT warned "Unsupported layer type ...LlamaRMSNorm... proceed at your own risk" whenever the Method
    table measured LayerNorm tuning: it read as a fault in the server's log. It trains those weights
    as plain ones (its training test checks), so the notice is silenced, and only it."""
    _, err = peft_model_in_a_new_process(tiny_model_dir, "ln_tuning",
                                         "warnings.warn('Unsupported layer type something else', UserWarning)")
    assert "RMSNorm" not in err and "Unsupported layer type something else" in err


def test_shira_leaves_no_sparse_memory_errors_notice_in_the_log(tiny_model_dir):
    """torch warned "Sparse invariant checks are implicitly disabled. Memory errors (e.g. SEGFAULT) will
    occur ..." at SHiRA's first forward pass (the Method table measures it): the studio says they are
    off explicitly, as torch asks, and SHiRA still runs."""
    out, err = peft_model_in_a_new_process(tiny_model_dir, "shira",
                                           "print(peft(input_ids=torch.tensor([[1, 2, 3]])).logits.shape)",
                                           params="m.parse(method.params, {})")
    assert "Sparse invariant" not in err and "torch.Size([1, 3," in out


def test_help_shown_under_a_field_keeps_its_asterisks_in_code():
    """The page's help under a field reads a pair of asterisks as emphasis even inside `code`: the regex
    reward's example `(?s).*Answer: \\d+` showed as "(?s).Answer: \\d+", the rest in italics. A help text
    with an asterisk in code has no other."""
    import re

    from pipelines.rewards import REWARDS

    infos = [(key, info) for key, method in METHODS.items() for info in describe(method.params)]
    infos += [(key, info) for key, reward in REWARDS.items() for info in describe(reward.options)]
    assert any(key == "regex" for key, _info in infos)
    for key, info in infos:
        if any("*" in code for code in re.findall(r"`([^`]*)`", info.help)):
            assert info.help.count("*") == 1, f"{key}.{info.name}: {info.help}"


def test_epochs_are_explained_in_each_kind_of_learnings_own_terms():
    """The shared Epochs help said "repeats your examples word for word" to GRPO, RLOO, PPO and the reward
    model, which learn from no example reply."""
    for key in ("grpo", "rloo", "ppo", "reward_model"):
        (epochs,) = [info for info in describe(METHODS[key].params) if info.name == "num_train_epochs"]
        assert "word for word" not in epochs.help, key
        assert ("prompts" if key != "reward_model" else "pairs") in epochs.help, key
    for key in ("dpo", "dpo_full", "kto", "kto_full", "orpo", "orpo_full", "simpo", "cpo"):
        (epochs,) = [info for info in describe(METHODS[key].params) if info.name == "num_train_epochs"]
        assert "word for word" not in epochs.help and "preferences" in epochs.help, key
    (lora,) = [info for info in describe(METHODS["lora"].params) if info.name == "num_train_epochs"]
    assert "word for word" in lora.help  # examples' own help unchanged


def test_dropout_is_offered_only_where_training_keeps_it():
    """LoRA's Dropout was offered to DPO, KTO, ORPO, SimPO, CPO, the reward model and PPO, whose trainers switch every
    dropout off (TRL's disable_dropout, on by default for them; PPO's own), so it did nothing; GRPO and RLOO were
    told to watch a held-out loss they do not have (there it adds noise to the policy ratio). A stored run's value
    is dropped, not refused, on resume."""
    from pipelines.methods.params import parse

    helps = {key: {info.name for info in describe(METHODS[key].params)} for key in METHODS}
    for key in ("dpo", "kto", "orpo", "simpo", "cpo", "reward_model", "grpo", "rloo", "ppo"):
        assert "lora_dropout" not in helps[key], key
    assert "lora_dropout" in helps["lora"]
    parsed = parse(METHODS["dpo"].params, {"lora_dropout": 0.05, "r": 8})
    assert parsed.r == 8 and not hasattr(parsed, "lora_dropout")
    assert METHODS["dpo"].peft_config(parsed, None).lora_dropout == 0.0
    with pytest.raises(ConfigError, match="^unknown parameter 'lora_dropot'"):
        parse(METHODS["dpo"].params, {"lora_dropot": 0.05})


def test_grpo_and_rloo_offer_their_clip_with_the_passes_it_acts_on():
    """'Step clipping' (epsilon) changed nothing while TRL learned from each batch of replies once (the ratio it
    clips is 1): it is offered beside the passes over each batch (num_iterations), and set without them it is
    refused, not ignored."""
    for key in ("grpo", "rloo"):
        names = [info.name for info in describe(METHODS[key].params)]
        assert names.index("epsilon") == names.index("num_iterations") + 1, key
        METHODS[key].validate(parse(METHODS[key].params, {"num_iterations": 2, "epsilon": 0.1}))
        with pytest.raises(ConfigError) as refused:  # (as a run's start checks it)
            METHODS[key].validate(parse(METHODS[key].params, {"epsilon": 0.1}))
        assert str(refused.value) == ("parameter 'epsilon': Step clipping (0.1) acts only with more than one pass over "
                                      "each batch of replies; raise 'Passes over each batch of replies' "
                                      "(num_iterations), or leave the clip at its 0.2")


def _tiny_family(family: str):
    """A one-block model of another family, random weights, built here (the studio meets them as local folders)."""
    import transformers as tf

    small = {"vocab_size": 100, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    config = {
        "gpt2": tf.GPT2Config(n_layer=1, n_embd=32, n_head=2, **small),
        "gpt_neox": tf.GPTNeoXConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                     **small),
        "phi3": tf.Phi3Config(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                              intermediate_size=64, **small),
        "qwen3": tf.Qwen3Config(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                                intermediate_size=64, head_dim=16, **small),
    }[family]
    return tf.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("family, attention", [
    ("gpt2", {"attn.c_attn", "attn.c_proj"}),  # (its MLP has a c_proj too: left alone)
    ("gpt_neox", {"attention.query_key_value", "attention.dense"}),
    ("phi3", {"self_attn.qkv_proj", "self_attn.o_proj"}),  # (only o_proj was adapted: its q, k, v are fused)
    ("qwen3", {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}),
])
def test_attention_means_each_familys_attention_layers(family, attention):
    """'attention' named Llama's q/k/v/o_proj only: Phi-3 adapted o_proj alone, GPT-2 and GPT-NeoX failed with
    PEFT's error."""
    from pipelines.methods import adapted
    from peft import LoraConfig

    spec = METHODS["lora"]
    model = adapted(_tiny_family(family), spec.peft_config(parse(spec.params, {"target_modules": "attention"})))
    assert isinstance(spec.peft_config(parse(spec.params, {})), LoraConfig)
    wrapped = {".".join(name.split(".lora_A.")[0].split(".")[-2:]) for name, _ in model.named_parameters()
               if ".lora_A." in name}
    assert wrapped == attention


@pytest.mark.parametrize("family, norms", [
    ("qwen3", {"input_layernorm", "post_attention_layernorm", "q_norm", "k_norm", "norm"}),
    ("phi3", {"input_layernorm", "post_attention_layernorm", "norm"}),
    ("gpt2", {"ln_1", "ln_2", "ln_f"}),
])
def test_layernorm_tuning_trains_every_norm_of_each_family(family, norms):
    """PEFT's own table held only post_attention_layernorm for Qwen and nothing for Phi-3 (a raw ValueError)."""
    from pipelines.methods import adapted

    spec = METHODS["ln_tuning"]
    model = adapted(_tiny_family(family), spec.peft_config(parse(spec.params, {})))
    trained = {name.split(".ln_tuning_layers")[0].rsplit(".", 1)[-1] for name, p in model.named_parameters()
               if p.requires_grad}
    assert trained == norms


@pytest.mark.parametrize("family, scaled", [
    ("phi3", {"qkv_proj", "down_proj"}),
    ("gpt2", {"c_attn", "c_proj"}),
    ("gpt_neox", {"query_key_value", "dense_4h_to_h"}),
])
def test_ia3_scales_keys_values_and_the_down_projection_of_each_family(family, scaled):
    from pipelines.methods import adapted

    spec = METHODS["ia3"]
    model = adapted(_tiny_family(family), spec.peft_config(parse(spec.params, {})))
    names = {name.split(".ia3_l")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert {n.rsplit(".", 1)[-1] for n in names} == scaled
    assert not any(n.endswith("attn.c_proj") for n in names)  # GPT-2's attention output is no down projection


def test_a_family_whose_layers_no_target_names_is_refused_in_one_sentence():
    from pipelines.methods import ConfigError, adapted
    from peft import LoraConfig

    with pytest.raises(ConfigError) as err:
        adapted(_tiny_family("gpt2"), LoraConfig(target_modules=["nowhere_proj"]))
    assert str(err.value) == ("none of this model's layers (GPT2LMHeadModel) has a name this adapter's targets know; "
                              "pick 'all-linear' as the layers to adapt, or use LoRA")


def test_vera_refuses_a_starting_scale_that_learns_nothing():
    """VeRA's other vector starts at 0: with d_initial 0 every gradient is 0, and the run ended as the base model."""
    with pytest.raises(ConfigError, match=r"^parameter 'd_initial': expected a value from 0.001 to 1.0, got 0.0$"):
        parse(METHODS["vera"].params, {"d_initial": 0})


def test_delta_lora_moves_a_conv1d_base_weight_by_the_adapters_change_as_the_layer_holds_it():
    """GPT-2's Conv1D holds its weight transposed: Delta-LoRA's update failed with a shape mismatch on c_attn at
    the first optimizer step (and would have added the transposed change to a square c_proj)."""
    import torch
    from types import SimpleNamespace

    from pipelines.methods import adapted
    from pipelines.methods.lora_dynamic import _lora_layers, delta_callbacks

    spec = METHODS["delta_lora"]
    params = parse(spec.params, {"lora_dropout": 0.0, "delta_start": 0, "target_modules": "all-linear"})
    model = adapted(_tiny_family("gpt2"), spec.peft_config(params))
    (callback,) = delta_callbacks(model, params)
    layer = next(m for m in _lora_layers(model) if m.fan_in_fan_out and m.get_base_layer().weight.shape[0]
                 != m.get_base_layer().weight.shape[1])
    before = layer.get_base_layer().weight.detach().clone()
    state = SimpleNamespace(global_step=1)
    callback.on_pre_optimizer_step(None, state, None)
    a, b = layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()
    with torch.no_grad():  # what an optimizer step does to the adapter
        layer.lora_A["default"].weight.add_(0.01)
        layer.lora_B["default"].weight.add_(0.02)
    callback.on_optimizer_step(None, state, None)
    a2, b2 = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = before + params.delta_scale * layer.scaling["default"] * (b2 @ a2 - b @ a).T
    assert torch.allclose(layer.get_base_layer().weight, expected, atol=1e-6)


def test_methods_working_on_plain_weight_matrices_refuse_fused_expert_models(tiny_moe_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_moe_dir)
    for key, label in (("delta_lora", "Delta-LoRA"), ("dylora", "DyLoRA")):
        with pytest.raises(ConfigError) as err:
            METHODS[key].check_model(config)
        assert str(err.value) == (f"{label} works on plain weight matrices, and this mixture-of-experts model "
                                  f"({config.model_type}) keeps its experts in one tensor; use LoRA")
