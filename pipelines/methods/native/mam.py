"""The MAM adapter (He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer
Learning", section 4.6: "Mix-And-Match"): prefix tuning on every attention layer plus a scaled
parallel adapter beside every feed-forward block, as one PEFT tuner (see native/__init__.py).

PEFT's prefix tuning is a prompt-learning method that cannot share a model with layer tuners, so
the prefix is native too: `PrefixAttention` wraps a llama-style attention module (q/k/v/o
projections and rotary positions) and puts `prefix_length` learned keys and values in front of the
keys and values it attends to, at every call; they are never written into the KV cache, so
generation with a cache sees them on each step. The feed-forward part is bottleneck.py's parallel
adapter. Like the studio's prefix tuning, the prefix starts as the keys and values the model itself
computes for an instruction (random prefixes wreck a small model's answers)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from pipelines.methods.native import peft_type
from pipelines.methods.native.base import NativeTuner
from pipelines.methods.native.bottleneck import ACTIVATIONS, BottleneckLayer


@dataclass
class MamConfig(PeftConfig):
    target_modules: list[str] | str | None = field(default=None, metadata={"help": "attention and feed-forward"})
    prefix_length: int = field(default=30, metadata={"help": "learned keys and values per attention layer"})
    reduction_factor: int = field(default=16, metadata={"help": "the parallel adapter's middle: width / this"})
    scaling: float = field(default=4.0, metadata={"help": "multiplies the parallel adapter's output"})
    non_linearity: str = field(default="silu", metadata={"help": "the adapter's activation"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input while training"})
    placement: str = field(default="parallel", metadata={"help": "the adapter reads the block's input"})
    exclude_modules: list[str] | str | None = field(default=None, metadata={"help": "modules never adapted"})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "unused; PEFT's interface"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = peft_type("MAM")
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(f"non_linearity must be one of {', '.join(ACTIVATIONS)}")


def _extend_mask(mask, batch: int, q_len: int, kv_len: int, prefix: int, device, eager: bool):
    """The attention mask with `prefix` always-visible key positions in front."""
    if mask is None:
        # what a missing mask means to SDPA: one query sees every key; several queries are causal from the
        # first key on (transformers only leaves the mask out when nothing comes before them, e.g. a prefill
        # into an empty static cache, whose unused slots this keeps out of reach)
        rows = torch.arange(q_len, device=device)[:, None] + (kv_len if q_len == 1 else 0)
        real = torch.arange(kv_len, device=device)[None, :] <= rows
        full = torch.cat([torch.ones(q_len, prefix, dtype=torch.bool, device=device), real], dim=1)
        full = full[None, None].expand(batch, 1, q_len, prefix + kv_len)
        if eager:  # the eager path adds its mask to the scores
            return torch.zeros(full.shape, device=device).masked_fill(~full, torch.finfo(torch.float32).min)
        return full
    if mask.dtype == torch.bool:
        pad = torch.ones(*mask.shape[:-1], prefix, dtype=torch.bool, device=mask.device)
    else:
        pad = torch.zeros(*mask.shape[:-1], prefix, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


class PrefixAttention(nn.Module, BaseTunerLayer):
    adapter_layer_names = ("mam_prefix_keys", "mam_prefix_values")
    other_param_names = ()
    what = "a MAM adapter"

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: MamConfig):
        super().__init__()
        self.base_layer = base_layer
        self.mam_prefix_keys = nn.ParameterDict()
        self.mam_prefix_values = nn.ParameterDict()
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.capture: list | None = None  # set to a list to record this layer's own keys and values
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: MamConfig, **_kwargs) -> None:
        attn = self.base_layer
        heads = attn.k_proj.out_features // attn.head_dim
        weight = attn.k_proj.weight
        shape = (heads, config.prefix_length, attn.head_dim)
        # zeros until `start_from_text` fills them with the model's own keys and values
        self.mam_prefix_keys[adapter_name] = nn.Parameter(torch.zeros(shape, device=weight.device))
        self.mam_prefix_values[adapter_name] = nn.Parameter(torch.zeros(shape, device=weight.device))
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise ValueError(f"{self.what} cannot be merged into the weights: its prefix is extra keys and values")

    def unmerge(self) -> None:
        pass

    def _project(self, hidden_states, name: str | None):
        """Queries, keys and values (before rotary positions) with adapter `name` active, or none."""
        attn = self.base_layer
        return attn.q_proj(hidden_states), attn.k_proj(hidden_states), attn.v_proj(hidden_states)

    def _weigh_prefix(self, mask, hidden_states, name: str, prefix: int):
        """The attention mask (prefix columns in front) the prefix is attended through."""
        return mask

    def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kwargs):
        attn = self.base_layer
        active = [] if self.disable_adapters else [a for a in self.active_adapters if a in self.mam_prefix_keys]
        if not active and self.capture is None:
            return attn(hidden_states, position_embeddings=position_embeddings, attention_mask=attention_mask,
                        **kwargs)
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        family = sys.modules[type(attn).__module__]  # the model's own rotary and eager attention
        cache = kwargs.pop("cache", None)  # (an empty cache is falsy: test for None)
        if cache is None:
            cache = kwargs.pop("past_key_values", None)
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, attn.head_dim)
        query, key, value = (p.view(hidden_shape).transpose(1, 2)
                             for p in self._project(hidden_states, active[0] if active else None))
        cos, sin = position_embeddings
        query, key = family.apply_rotary_pos_emb(query, key, cos, sin)
        if self.capture is not None:
            self.capture.append((key.detach(), value.detach()))
        if cache is not None:
            key, value = cache.update(key, value, attn.layer_idx, kwargs=kwargs)
        q_len, kv_len = query.shape[2], key.shape[2]
        implementation = attn.config._attn_implementation
        if active and implementation not in ("sdpa", "eager"):
            raise ValueError(f"a MAM adapter's prefix works with the 'sdpa' and 'eager' attention implementations, "
                             f"not {implementation!r}")
        if active:
            name = active[0]
            prefix_k = self.mam_prefix_keys[name].to(key.dtype).expand(key.shape[0], -1, -1, -1)
            prefix_v = self.mam_prefix_values[name].to(value.dtype).expand(value.shape[0], -1, -1, -1)
            key, value = torch.cat([prefix_k, key], dim=2), torch.cat([prefix_v, value], dim=2)
            attention_mask = _extend_mask(attention_mask, query.shape[0], q_len, kv_len, prefix_k.shape[2],
                                          query.device, implementation == "eager")
            attention_mask = self._weigh_prefix(attention_mask, hidden_states, name, prefix_k.shape[2])
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation,
                                                          family.eager_attention_forward)
        out, weights = interface(attn, query, key, value, attention_mask,
                                 dropout=0.0 if not attn.training else attn.attention_dropout,
                                 scaling=attn.scaling, **kwargs)
        out = attn.o_proj(out.reshape(*input_shape, -1).contiguous())
        return out, weights

    def __repr__(self) -> str:
        return "mam." + super().__repr__()


class MamModel(NativeTuner):
    prefix: str = "mam_"
    layer_types = (PrefixAttention, BottleneckLayer)
    what = "a MAM adapter"
    attention_layer = PrefixAttention  # UniPELT's adds gates and LoRA

    def _new_layer(self, peft_config, adapter_name, target, target_name):
        if target_name != "self_attn":
            return BottleneckLayer(target, adapter_name, peft_config, self.hidden_size)
        missing = [part for part in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim") if not hasattr(target, part)]
        extra = [part for part in ("q_norm", "k_norm", "use_rope", "softcap", "clip_qkv") if hasattr(target, part)]
        if missing or extra:
            raise ValueError(f"{self.what}'s prefix needs llama-style attention; {type(target).__name__} "
                             f"{'lacks ' + ', '.join(missing) if missing else 'also has ' + ', '.join(extra)}")
        return self.attention_layer(target, adapter_name, peft_config)


def start_from_text(model, ids: list[int]) -> None:
    """Fill every prefix with the keys and values the base model computes for `ids` (as many tokens
    as the prefix is long), adapters off. The text is placed at positions -n..-1, right in front of an
    input that starts at 0, as if it preceded every input (rotary positions are relative)."""
    layers = [m for m in model.modules() if isinstance(m, PrefixAttention)]
    for layer in layers:
        layer.capture = []
    try:
        with torch.no_grad(), model.disable_adapter():
            n = len(ids)
            model.get_base_model()(input_ids=torch.tensor([ids], device=model.device), use_cache=False,
                                   position_ids=torch.arange(-n, 0, device=model.device)[None])
        with torch.no_grad():
            for layer in layers:
                key, value = layer.capture[0]
                for name in layer.mam_prefix_keys:
                    layer.mam_prefix_keys[name].copy_(key[0])
                    layer.mam_prefix_values[name].copy_(value[0])
    finally:
        for layer in layers:
            layer.capture = None
