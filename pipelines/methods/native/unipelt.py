"""UniPELT (Mao et al. 2022, "UniPELT: A Unified Framework for Parameter-Efficient Language Model
Tuning"): LoRA on the query and value projections, a prefix on every attention layer and a
Pfeiffer adapter after every feed-forward block, each behind a learned gate sigmoid(W x + b) that
decides, token by token, how much that part contributes. The model learns which of the three suits
the task (and layer) instead of the user choosing.

- LoRA: q = W_q x + G_L(x) * (alpha / r) B_q A_q x, and the same for v, G_L read from the
  attention's input x.
- Adapter: h + G_A(h) * up(act(down(h))) on the feed-forward output h (bottleneck.py, gated).
- Prefix: the paper scales the prefix by G_P(x). Here G_P multiplies the weight each query gives
  the prefix before the softmax, i.e. log G_P is added to the prefix's attention scores: 1 = plain
  prefix tuning, 0 = no prefix, per token. AdapterHub instead averages its gates over the sequence,
  which mixes packed examples and differs between a forward pass and generation with a KV cache;
  a per-token gate does neither.

The gates start near 1/2 (AdapterHub's start: small weights, zero bias); LoRA's B and the
adapter's up projection start at zero, and the prefix as the model's own keys and values for an
instruction (see mam.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.methods.native import peft_type
from pipelines.methods.native.bottleneck import BottleneckLayer, gate
from pipelines.methods.native.mam import MamConfig, MamModel, PrefixAttention


@dataclass
class UniPeltConfig(MamConfig):
    r: int = field(default=8, metadata={"help": "LoRA's rank on the query and value projections"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA's change is scaled by alpha / r"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on LoRA's input while training"})
    prefix_length: int = field(default=10, metadata={"help": "learned keys and values per attention layer"})
    scaling: float = field(default=1.0, metadata={"help": "multiplies the adapter's output"})
    placement: str = field(default="serial", metadata={"help": "the adapter reads the block's output"})
    gated: bool = field(default=True, metadata={"help": "the adapter behind a learned gate (LoRA's and the "
                                                        "prefix's gates are always there)"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = peft_type("UNIPELT")


class GatedAttention(PrefixAttention):
    """MAM's prefix attention plus gated LoRA on q and v and a gate on the prefix."""

    # flat containers keyed by adapter name: PEFT takes the name out of a saved key only just before the
    # parameter's own name (a nested ModuleDict would save it and fail to load under another name)
    adapter_layer_names = PrefixAttention.adapter_layer_names + (
        "unipelt_q_A", "unipelt_q_B", "unipelt_v_A", "unipelt_v_B", "unipelt_lora_gate", "unipelt_prefix_gate")
    other_param_names = ("unipelt_scaling",)
    what = "a UniPELT adapter"

    def update_layer(self, adapter_name: str, config: UniPeltConfig, **kwargs) -> None:
        if not hasattr(self, "unipelt_q_A"):
            for name in self.adapter_layer_names[2:] + ("unipelt_dropout",):
                setattr(self, name, nn.ModuleDict())
            self.unipelt_scaling: dict[str, float] = {}
        attn = self.base_layer
        device = attn.q_proj.weight.device
        width = attn.q_proj.in_features
        for part in ("q", "v"):
            down = nn.Linear(width, config.r, bias=False)
            up = nn.Linear(config.r, getattr(attn, f"{part}_proj").out_features, bias=False)
            nn.init.kaiming_uniform_(down.weight, a=5 ** 0.5)  # LoRA's (and PEFT's) start
            nn.init.zeros_(up.weight)
            getattr(self, f"unipelt_{part}_A")[adapter_name] = down.to(device)
            getattr(self, f"unipelt_{part}_B")[adapter_name] = up.to(device)
        self.unipelt_lora_gate[adapter_name] = gate(width).to(device)
        self.unipelt_prefix_gate[adapter_name] = gate(width).to(device)
        self.unipelt_dropout[adapter_name] = nn.Dropout(config.lora_dropout) if config.lora_dropout else nn.Identity()
        self.unipelt_scaling[adapter_name] = config.lora_alpha / config.r
        super().update_layer(adapter_name, config, **kwargs)

    def _project(self, hidden_states, name: str | None):
        query, key, value = super()._project(hidden_states, name)
        if name is None or name not in self.unipelt_q_A:
            return query, key, value
        x = hidden_states.to(self.unipelt_lora_gate[name].weight.dtype)
        weight = self.unipelt_scaling[name] * torch.sigmoid(self.unipelt_lora_gate[name](x))
        x = self.unipelt_dropout[name](x)
        query = query + (weight * self.unipelt_q_B[name](self.unipelt_q_A[name](x))).to(query.dtype)
        value = value + (weight * self.unipelt_v_B[name](self.unipelt_v_A[name](x))).to(value.dtype)
        return query, key, value

    def _weigh_prefix(self, mask, hidden_states, name: str, prefix: int):
        """Adds log G_P(x) to the prefix's scores: each prefix key's weight before the softmax's
        normalisation is multiplied by G_P, so the prefix's share becomes g Z_P / (g Z_P + Z_rest)."""
        if name not in self.unipelt_prefix_gate:
            return mask
        layer = self.unipelt_prefix_gate[name]
        log_gate = F.logsigmoid(layer(hidden_states.to(layer.weight.dtype)))  # (batch, queries, 1)
        if mask.dtype == torch.bool:  # SDPA's form: True = may attend
            mask = torch.zeros(mask.shape, dtype=hidden_states.dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(hidden_states.dtype).min)
        batch, queries = log_gate.shape[:2]
        mask = mask.to(hidden_states.dtype).expand(batch, -1, queries, -1)
        scores = log_gate[:, None].to(mask.dtype).expand(-1, mask.shape[1], -1, prefix)
        return torch.cat([mask[..., :prefix] + scores, mask[..., prefix:]], dim=-1)

    def __repr__(self) -> str:
        return "unipelt." + super().__repr__()


class UniPeltModel(MamModel):
    prefix: str = "unipelt_"
    layer_types = (GatedAttention, BottleneckLayer)
    what = "a UniPELT adapter"
    attention_layer = GatedAttention
