"""The studio's own PEFT tuners (bottleneck adapters, LoReFT/DiReFT) and SHiRA's weight mask:
hand-computed forward passes, an untrained adapter that leaves the model as it was, LoReFT's
rotation staying orthonormal, reload in a fresh process outside the studio, chat beside LoRA on
one base, and the export refusal."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from pipelines.methods import METHODS, parse
from pipelines.methods.native import register
from pipelines.methods.setup import Setup
from tests.conftest import ROOT

register()


def _peft(key: str, tiny_model_dir, **values):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    method = METHODS[key]
    config = method.peft_config(parse(method.params, values), Setup(model_path=str(tiny_model_dir)))
    return get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)


def _randomize(model, prefix: str) -> None:
    """Give an adapter's zero-started weights values, as training would."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if prefix in name and "parametrizations" not in name:
                p.add_(torch.randn_like(p) * 0.05)


def test_serial_and_parallel_bottleneck_compute_the_papers_formulas():
    from pipelines.methods.native.bottleneck import BottleneckConfig, BottleneckLayer

    base = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    for placement, scaling in [("serial", 1.0), ("parallel", 4.0)]:
        # hidden 2, reduction 2: a one-wide bottleneck
        layer = BottleneckLayer(base, "default", BottleneckConfig(reduction_factor=2, placement=placement,
                                                                  scaling=scaling, non_linearity="relu"), hidden=2)
        assert torch.equal(layer(x), base(x))  # up starts at zero: the untouched layer
        down, up = layer.bottleneck_down["default"], layer.bottleneck_up["default"]
        with torch.no_grad():
            down.weight.copy_(torch.tensor([[1.0, 1.0]] if placement == "serial" else [[1.0, -1.0, 1.0]]))
            down.bias.fill_(-1.0)
            up.weight.copy_(torch.tensor([[2.0], [-1.0]]))
            up.bias.copy_(torch.tensor([0.5, 0.0]))
        out = base(x)  # [7, 1]
        # serial reads the output: relu(7 + 1 - 1) = 7; parallel reads the input: relu(1 - 2 + 3 - 1) = 1
        middle = 7.0 if placement == "serial" else 1.0
        expected = out + scaling * torch.tensor([[2.0 * middle + 0.5, -middle]])
        assert torch.allclose(layer(x), expected), placement


def test_loreft_and_direft_compute_the_papers_formulas():
    from pipelines.methods.native.reft import Intervention, ReftConfig

    h = torch.tensor([[1.0, 2.0, -1.0]])
    R = torch.tensor([[0.0, 1.0, 0.0]])  # one orthonormal row
    W, b = torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([0.5])
    lo = Intervention(3, ReftConfig(rank=1, kind="loreft"))
    assert torch.allclose(lo(h), h)  # W = R and b = 0 at the start: the identity
    with torch.no_grad():
        lo.rotate.weight = R  # through the orthogonal parametrization's right inverse
        lo.source.weight.copy_(W)
        lo.source.bias.copy_(b)
    # h + Rᵀ(Wh + b − Rh) = h + [0, 1, 0] * (2 + 0.5 − 2) = [1, 2.5, −1]
    assert torch.allclose(lo(h), torch.tensor([[1.0, 2.5, -1.0]]), atol=1e-6)

    di = Intervention(3, ReftConfig(rank=1, kind="direft"))
    assert torch.allclose(di(h), h)
    with torch.no_grad():
        di.rotate.weight.copy_(R)
        di.source.weight.copy_(W)
        di.source.bias.copy_(b)
    # h + Rᵀ(Wh + b) = h + [0, 1, 0] * 2.5 = [1, 4.5, −1]
    assert torch.allclose(di(h), torch.tensor([[1.0, 4.5, -1.0]]))


def test_loreft_rotation_stays_orthonormal_while_it_learns(tiny_model_dir):
    model = _peft("loreft", tiny_model_dir, rank=4)
    ids = torch.randint(0, 100, (2, 12))
    before = model(input_ids=ids).logits.detach()
    with model.disable_adapter():
        assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-5)  # untrained: the base
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == 2 * (2 * 4 * 64 + 4)  # 2 blocks: R, W (4x64) and b
    opt = torch.optim.AdamW(trainable, lr=0.05)
    for _ in range(5):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    for module in model.modules():
        if module.__class__.__name__ == "Intervention":
            r = module.rotate.weight
            assert torch.allclose(r @ r.T, torch.eye(4), atol=1e-5)
    assert not torch.allclose(model(input_ids=ids).logits, before)


def test_reft_on_the_first_positions_leaves_later_tokens_alone(tiny_model_dir):
    model = _peft("direft", tiny_model_dir, first_positions=3, layers="middle")
    _randomize(model, "reft_")
    layer = next(m for m in model.modules() if m.__class__.__name__ == "ReftLayer")
    seen = {}
    layer.base_layer.register_forward_hook(lambda _m, _a, out: seen.update(h=out.clone()))
    captured = {}
    layer.register_forward_hook(lambda _m, _a, out: captured.update(h=out))
    # two examples packed in one row: positions restart at the second
    positions = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3]])
    model(input_ids=torch.randint(0, 100, (1, 9)), position_ids=positions)
    changed = (captured["h"] - seen["h"]).abs().sum(-1)[0] > 0
    assert changed.tolist() == [True, True, True, False, False, True, True, True, False]


@pytest.mark.parametrize("key", ["houlsby", "pfeiffer", "parallel_adapter", "mam", "unipelt", "loreft", "direft"])
def test_native_adapter_reloads_in_a_fresh_process_with_the_same_logits(key, tiny_model_dir, tmp_path):
    model = _peft(key, tiny_model_dir)
    _randomize(model, "reft_" if "reft" in key else "bottleneck_")
    _randomize(model, "mam_prefix")
    _randomize(model, "unipelt_")
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    expected = model(input_ids=ids).logits
    out = tmp_path / "adapter"
    model.save_pretrained(out)
    assert (out / "adapter_model.safetensors").exists()
    kind = json.loads((out / "adapter_config.json").read_text())["peft_type"]
    assert kind == ("REFT" if "reft" in key else key.upper() if key in ("mam", "unipelt") else "BOTTLENECK")
    script = (
        "import sys, torch\n"
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM\n"
        "from pipelines.methods.native import register\n"
        "register()\n"
        f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r}), {str(out)!r},"
        " adapter_name='another')\n"  # saved as 'default': the name must not be part of the saved keys
        f"torch.save(model(input_ids=torch.tensor({ids.tolist()})).logits, {str(tmp_path / 'logits.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True)
    assert torch.allclose(torch.load(tmp_path / "logits.pt"), expected, atol=1e-5)


def test_chat_holds_lora_and_bottleneck_adapters_beside_one_base(tiny_model_dir, tmp_path):
    from pipelines.chat import ModelCache, _active

    ids = torch.tensor([[1, 5, 9, 14]])
    dirs, expected = {}, {}
    keys = ["lora", "parallel_adapter", "houlsby", "pfeiffer"]
    for key in keys:
        model = _peft(key, tiny_model_dir)
        _randomize(model, "lora_B" if key == "lora" else "bottleneck_")
        dirs[key] = tmp_path / key
        model.save_pretrained(dirs[key])
        expected[key] = model(input_ids=ids).logits
    cache = ModelCache(tmp_path / "models")
    base, _ = cache.get(str(tiny_model_dir))
    with torch.no_grad():
        plain = base.model(input_ids=ids).logits
        for key in keys:
            entry, name = cache.get(str(tiny_model_dir), dirs[key])
            with _active(entry, name):
                assert torch.allclose(entry.model(input_ids=ids).logits, expected[key], atol=1e-5), key
            with _active(entry, None):
                assert torch.allclose(entry.model(input_ids=ids).logits, plain, atol=1e-6), key
    # LoRA shares the base's copy; the parallel adapter (another PEFT type) has its own, and the serial
    # ones a third: a parallel adapter wraps the feed-forward block a serial one reaches into
    assert len(cache._entries) == 3


@pytest.mark.parametrize("key, words", [("houlsby", "a bottleneck adapter cannot be merged"),
                                        ("loreft", "a ReFT adapter cannot be merged"),
                                        ("mam", "a MAM adapter cannot be merged"),
                                        ("unipelt", "a UniPELT adapter cannot be merged")])
def test_export_refuses_to_merge_what_no_weight_can_hold(key, words, tiny_model_dir, tmp_path):
    from pipelines.export import ExportError
    from pipelines.export.merge import merge_adapter

    model = _peft(key, tiny_model_dir)
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ExportError) as error:
        merge_adapter(str(tiny_model_dir), tmp_path / "adapter", tmp_path / "merged")
    assert str(error.value).startswith(words)
    assert str(error.value).endswith("so it only works loaded beside its base (train LoRA or SHiRA to get a "
                                     "mergeable result)")
    assert not (tmp_path / "merged").exists()
    assert METHODS[key].beside_base and not METHODS["shira"].beside_base


def test_shira_weight_mask_trains_the_largest_entries(tiny_model_dir):
    from pipelines.methods.sparse import largest_weights_mask

    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -9.0, 0.2, 0.3], [5.0, 0.0, -0.4, 0.5],
                                         [0.6, 0.7, 8.0, -0.8]]))
    # r = 1 keeps 1 x (3 + 4) = 7 of the 12 entries: everything but the five smallest |w|
    mask = largest_weights_mask(layer, 1)
    assert mask.tolist() == [[0, 1, 0, 0], [1, 0, 0, 1], [1, 1, 1, 1]]

    model = _peft("shira", tiny_model_dir, r=2, mask="weight")
    for module in model.modules():
        if hasattr(module, "shira_indices") and "default" in module.shira_indices:
            weight = module.get_base_layer().weight
            rows, cols = module.shira_indices["default"].long()
            count = 2 * (weight.shape[0] + weight.shape[1])
            assert len(rows) == count == module.shira_weight["default"].numel()
            smallest_chosen = weight.abs()[rows, cols].min()
            assert (weight.abs() > smallest_chosen).sum() < count  # nothing larger was left out


def test_reft_on_some_blocks_is_estimated_on_the_probe_model(tiny_model_dir):
    from pipelines import estimates

    for layers in ["middle", "quarters"]:
        result = estimates.estimate(str(tiny_model_dir), "loreft", {"layers": layers})
        assert result.trainable_params == (1 if layers == "middle" else 2) * (2 * 4 * 64 + 4)


def test_shira_refuses_a_budget_no_matrix_can_hold_and_varies_its_random_masks(tiny_model_dir):
    from pipelines.methods import ConfigError

    method = METHODS["shira"]
    with pytest.raises(ConfigError) as error:  # the smallest adapted matrix: k_proj, 32 x 64 (grouped keys)
        method.peft_config(parse(method.params, {"r": 40}), Setup(model_path=str(tiny_model_dir)))
    assert str(error.value) == "SHiRA's budget r = 40 asks for more weights than k_proj (32 x 64) has; use r ≤ 21"
    model = _peft("shira", tiny_model_dir, mask="random", r=2)
    masks = [m.shira_indices["default"] for name, m in model.named_modules() if name.endswith("q_proj")]
    assert len(masks) == 2 and not torch.equal(masks[0], masks[1])


def test_mam_prefix_is_attended_by_every_query_in_front_of_the_causal_keys(tiny_model_dir):
    """One attention layer by hand: softmax over [q·prefix keys, q·causal keys] times [prefix values; values]."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    from pipelines.methods.native.mam import PrefixAttention

    model = _peft("mam", tiny_model_dir, prefix_length=3)
    _randomize(model, "mam_prefix")
    layer = next(m for m in model.modules() if isinstance(m, PrefixAttention))
    attn = layer.base_layer
    base = model.get_base_model()
    ids = torch.tensor([[4, 8, 15, 16, 23]])
    seen = {}
    layer.register_forward_hook(lambda _m, args, kwargs, out: seen.update(h=args[0] if args else kwargs["hidden_states"],
                                                                          pe=kwargs["position_embeddings"], out=out[0]),
                                with_kwargs=True)
    with torch.no_grad():
        model(input_ids=ids)
        h, (cos, sin) = seen["h"], seen["pe"]
        shape = (1, 5, -1, attn.head_dim)
        q = attn.q_proj(h).view(shape).transpose(1, 2)
        k = attn.k_proj(h).view(shape).transpose(1, 2)
        v = attn.v_proj(h).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys = torch.cat([layer.mam_prefix_keys["default"][None], k], dim=2)
        values = torch.cat([layer.mam_prefix_values["default"][None], v], dim=2)
        groups = attn.num_key_value_groups
        scores = q @ repeat_kv(keys, groups).transpose(-1, -2) * attn.scaling
        causal = torch.ones(5, 8, dtype=torch.bool)
        causal[:, 3:] = torch.tril(torch.ones(5, 5, dtype=torch.bool))
        scores = scores.masked_fill(~causal, float("-inf"))
        expected = attn.o_proj((scores.softmax(-1) @ repeat_kv(values, groups)).transpose(1, 2).reshape(1, 5, -1))
    assert torch.allclose(seen["out"], expected, atol=1e-5)
    # the eager path (an additive mask) agrees with SDPA's (a boolean one)
    with torch.no_grad():
        sdpa = model(input_ids=ids).logits
        base.set_attn_implementation("eager")
        assert torch.allclose(model(input_ids=ids).logits, sdpa, atol=1e-5)


def test_mam_prefix_starts_as_the_models_own_keys_and_values_for_the_instruction(tiny_model_dir):
    """Also: the prefix is as if the instruction preceded the input, and MAM refuses what it cannot run."""
    from pipelines.methods.adapters import mam_from_text
    from pipelines.methods.native.mam import PrefixAttention

    method = METHODS["mam"]
    params = parse(method.params, {"prefix_length": 4})
    model = _peft("mam", tiny_model_dir, prefix_length=4)
    setup = Setup(model_path=str(tiny_model_dir))
    mam_from_text(model, params, setup)
    from pipelines.models import load_tokenizer

    ids = load_tokenizer(str(tiny_model_dir))(params.prefix_init_text, add_special_tokens=False)["input_ids"][:4]
    with torch.no_grad(), model.disable_adapter():
        # the instruction right in front of an input that starts at position 0
        cache = model.get_base_model()(input_ids=torch.tensor([ids]), use_cache=True,
                                       position_ids=torch.arange(-4, 0)[None]).past_key_values
    layers = [m for m in model.modules() if isinstance(m, PrefixAttention)]
    for layer, cached in zip(layers, cache.layers):
        assert torch.allclose(layer.mam_prefix_keys["default"], cached.keys[0], atol=1e-6)
        assert torch.allclose(layer.mam_prefix_values["default"], cached.values[0], atol=1e-6)


def test_mam_refuses_an_empty_instruction_and_other_attention(tiny_model_dir, tmp_path):
    from transformers import AutoConfig

    from pipelines.methods import ConfigError

    method = METHODS["mam"]
    with pytest.raises(ConfigError) as error:
        method.validate(parse(method.params, {"prefix_init_text": "  "}))
    assert str(error.value) == ("MAM's starting instruction is empty: write a few words for the prefix to start "
                                "from")
    config = AutoConfig.from_pretrained(tiny_model_dir).to_dict()
    config["model_type"] = "qwen3"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as error:
        method.peft_config(parse(method.params, {}), Setup(model_path=str(tmp_path)))
    assert str(error.value) == ("MAM's prefix is written for llama-style attention, and 'qwen3' models compute "
                                "attention differently; use the parallel adapter, or prefix tuning")


def test_unipelt_gates_weigh_lora_the_prefix_and_the_adapter_token_by_token(tiny_model_dir):
    """One attention layer and one adapter by hand, with gates sigmoid(W x + b) that differ per token:
    q = W_q h + g_L (alpha/r) B_q A_q h (and v), the prefix's softmax weight times g_P, and the
    feed-forward output plus g_A times the adapter's change."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    from pipelines.methods.native.bottleneck import BottleneckLayer
    from pipelines.methods.native.unipelt import GatedAttention

    model = _peft("unipelt", tiny_model_dir, prefix_length=3, r=2, lora_alpha=4)
    _randomize(model, "mam_prefix")
    _randomize(model, "unipelt_")
    _randomize(model, "bottleneck_")
    layer = next(m for m in model.modules() if isinstance(m, GatedAttention))
    attn = layer.base_layer
    with torch.no_grad():  # gates that differ clearly between tokens
        for g in (layer.unipelt_lora_gate["default"], layer.unipelt_prefix_gate["default"]):
            g.weight.mul_(3)
    ids = torch.tensor([[4, 8, 15, 16, 23]])
    seen = {}
    layer.register_forward_hook(lambda _m, args, kwargs, out: seen.update(h=args[0] if args else kwargs["hidden_states"],
                                                                          pe=kwargs["position_embeddings"], out=out[0]),
                                with_kwargs=True)
    ffn = next(m for m in model.modules() if isinstance(m, BottleneckLayer))
    ffn.register_forward_hook(lambda _m, args, out: seen.update(x=args[0], ffn=out))
    with torch.no_grad():
        model(input_ids=ids)
        h, (cos, sin) = seen["h"], seen["pe"]
        g_lora = torch.sigmoid(layer.unipelt_lora_gate["default"](h))
        g_prefix = torch.sigmoid(layer.unipelt_prefix_gate["default"](h))[0, :, 0]
        assert g_prefix.max() - g_prefix.min() > 0.1
        lora = {part: getattr(layer, f"unipelt_{part}_B")["default"].weight @ getattr(layer, f"unipelt_{part}_A")[
            "default"].weight for part in "qv"}
        shape = (1, 5, -1, attn.head_dim)
        q = (attn.q_proj(h) + g_lora * 2 * h @ lora["q"].T).view(shape).transpose(1, 2)
        k = attn.k_proj(h).view(shape).transpose(1, 2)
        v = (attn.v_proj(h) + g_lora * 2 * h @ lora["v"].T).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        keys = torch.cat([layer.mam_prefix_keys["default"][None], k], dim=2)
        values = torch.cat([layer.mam_prefix_values["default"][None], v], dim=2)
        groups = attn.num_key_value_groups
        weights = (q @ repeat_kv(keys, groups).transpose(-1, -2) * attn.scaling).exp()
        weights[..., :3] *= g_prefix[:, None]  # each query's gate on the prefix
        causal = torch.ones(5, 8, dtype=torch.bool)
        causal[:, 3:] = torch.tril(torch.ones(5, 5, dtype=torch.bool))
        weights = weights * causal
        weights = weights / weights.sum(-1, keepdim=True)
        expected = attn.o_proj((weights @ repeat_kv(values, groups)).transpose(1, 2).reshape(1, 5, -1))
        assert torch.allclose(seen["out"], expected, atol=1e-5)

        out = ffn.base_layer(seen["x"])
        down, up = ffn.bottleneck_down["default"], ffn.bottleneck_up["default"]
        g_adapter = torch.sigmoid(ffn.bottleneck_gate["default"](out))
        assert torch.allclose(seen["ffn"], out + g_adapter * up(torch.nn.functional.silu(down(out))), atol=1e-6)
        # the eager path (an additive mask) agrees with SDPA's (a boolean one)
        sdpa = model(input_ids=ids).logits
        model.get_base_model().set_attn_implementation("eager")
        assert model.get_base_model().config._attn_implementation == "eager"
        assert torch.allclose(model(input_ids=ids).logits, sdpa, atol=1e-5)
    # every gate learns: the prefix's through the attention mask
    model(input_ids=ids, labels=ids).loss.backward()
    for gate in (layer.unipelt_lora_gate, layer.unipelt_prefix_gate, ffn.bottleneck_gate):
        assert gate["default"].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("key, attention", [("mam", "sdpa"), ("unipelt", "sdpa"), ("unipelt", "eager")])
def test_prefix_adapters_give_the_same_next_token_with_and_without_the_kv_cache(key, attention, tiny_model_dir):
    """Generation reuses cached keys and values; the prefix and UniPELT's per-token gates must not change."""
    model = _peft(key, tiny_model_dir, prefix_length=4)
    model.get_base_model().set_attn_implementation(attention)
    assert model.get_base_model().config._attn_implementation == attention
    _randomize(model, "mam_prefix")
    _randomize(model, "unipelt_")
    _randomize(model, "bottleneck_")
    ids = torch.tensor([[3, 9, 27, 81, 50, 7], [3, 9, 27, 81, 50, 7]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # one row padded on the left
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        first = model(input_ids=ids[:, :5], attention_mask=mask[:, :5], use_cache=True)
        step = model(input_ids=ids[:, 5:], attention_mask=mask, past_key_values=first.past_key_values).logits[:, -1]
    assert torch.allclose(step, full, atol=1e-4)
