"""ReFT (Wu et al. 2024, "ReFT: Representation Finetuning for Language Models") as a PEFT tuner:
instead of changing weights, it edits the hidden state h that chosen transformer blocks output,
inside an r-dimensional subspace. `pyreft` pins transformers 4.45, so this follows its
interventions (pyreft/interventions.py) natively:

- LoReFT:  Φ(h) = h + Rᵀ(W h + b − R h), R (r×d) with orthonormal rows, kept so by a QR
  parametrization (`Orthonormal`); W, b a linear map.
- DiReFT:  Φ(h) = h + Rᵀ(W h + b), R not constrained (no orthogonality, no subtraction: cheaper).

The studio starts both as the identity (LoReFT: W = R, b = 0; DiReFT: W = 0, b = 0), so an untrained
intervention leaves the model exactly as it was; pyreft starts W at random. `first_positions` = 0
edits every position; N > 0 edits only each example's first N tokens (positions restart per
example in packed batches), like pyreft's "f{N}" locations."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from pipelines.methods.native import peft_type
from pipelines.methods.native.base import NativeTuner


@dataclass
class ReftConfig(PeftConfig):
    target_modules: list[str] | str | None = field(default=None, metadata={"help": "the blocks whose output is edited"})
    rank: int = field(default=4, metadata={"help": "dimension of the edited subspace"})
    kind: str = field(default="loreft", metadata={"help": "'loreft' or 'direft'"})
    first_positions: int = field(default=0, metadata={"help": "0: every position; N: each example's first N"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the edit while training"})
    exclude_modules: list[str] | str | None = field(default=None, metadata={"help": "blocks never edited"})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "unused; PEFT's interface"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = peft_type("REFT")
        if self.kind not in ("loreft", "direft"):
            raise ValueError(f"kind must be 'loreft' or 'direft', not {self.kind!r}")


class Orthonormal(nn.Module):
    """A parametrization that keeps a matrix's rows orthonormal: the Q factor of its transpose's QR
    decomposition, signs fixed so that it is unique (O(d·r²) per call; torch's own orthogonal
    parametrization solves a d×d system per call for a wide matrix, 49 ms per block at d = 576)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, r = torch.linalg.qr(x.T)
        sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
        return (q * sign).T

    def right_inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x  # an orthonormal matrix is its own preimage


class Intervention(nn.Module):
    """One block's edit of its output hidden states."""

    def __init__(self, hidden: int, config: ReftConfig):
        super().__init__()
        self.kind = config.kind
        rotate = nn.Linear(hidden, config.rank, bias=False)
        nn.init.orthogonal_(rotate.weight)
        if self.kind == "loreft" and not rotate.weight.is_meta:  # (the estimate counts weights on meta)
            # R's rows stay orthonormal whatever the optimizer does
            nn.utils.parametrize.register_parametrization(rotate, "weight", Orthonormal())
        self.rotate = rotate
        self.source = nn.Linear(hidden, config.rank)
        with torch.no_grad():
            if self.kind == "loreft":
                self.source.weight.copy_(self.rotate.weight)  # W = R: Wh + b − Rh = 0 at the start
            else:
                self.source.weight.zero_()
            self.source.bias.zero_()
        self.dropout = nn.Dropout(config.dropout) if config.dropout else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r = self.rotate.weight  # (rank, hidden)
        x = h.to(r.dtype)
        edit = self.source(x)
        if self.kind == "loreft":
            edit = edit - x @ r.T
        return h + self.dropout(edit @ r).to(h.dtype)


class ReftLayer(nn.Module, BaseTunerLayer):
    adapter_layer_names = ("reft_intervention",)
    other_param_names = ("reft_first_positions",)

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: ReftConfig, hidden: int):
        super().__init__()
        self.base_layer = base_layer
        self.hidden = hidden
        self.reft_intervention = nn.ModuleDict()
        self.reft_first_positions: dict[str, int] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: ReftConfig, **_kwargs) -> None:
        intervention = Intervention(self.hidden, config)
        # PEFT moves a new adapter to its base layer's `.weight`, which a whole block does not have
        self.reft_intervention[adapter_name] = intervention.to(next(self.base_layer.parameters()).device)
        self.reft_first_positions[adapter_name] = config.first_positions
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise ValueError("a ReFT intervention cannot be merged into the weights: it edits hidden states")

    def unmerge(self) -> None:
        pass

    def _positions(self, h: torch.Tensor, kwargs: dict) -> torch.Tensor:
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = kwargs.get("cache_position")
        if positions is None:
            positions = torch.arange(h.shape[1], device=h.device)
        return positions.reshape(-1, h.shape[1]) if positions.dim() > 1 else positions.unsqueeze(0)

    def forward(self, *args, **kwargs):
        out = self.base_layer(*args, **kwargs)
        if self.disable_adapters:
            return out
        h = out[0] if isinstance(out, tuple) else out
        for name in self.active_adapters:
            if name not in self.reft_intervention:
                continue
            edited = self.reft_intervention[name](h)
            first = self.reft_first_positions[name]
            if first:
                keep = (self._positions(h, kwargs) < first).unsqueeze(-1)
                edited = torch.where(keep, edited, h)
            h = edited
        return (h, *out[1:]) if isinstance(out, tuple) else h

    def __repr__(self) -> str:
        return "reft." + super().__repr__()


class ReftModel(NativeTuner):
    prefix: str = "reft_"
    layer_types = (ReftLayer,)
    what = "a ReFT intervention"

    def _new_layer(self, peft_config, adapter_name, target, target_name):
        return ReftLayer(target, adapter_name, peft_config, self.hidden_size)

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        # the adapter name sits right after `reft_intervention`, above the intervention's own modules
        return key.replace(f".reft_intervention.{adapter_name}.", ".reft_intervention.")
