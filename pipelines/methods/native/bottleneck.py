"""Bottleneck adapters: a small two-layer network (down to a few dimensions, a non-linearity, back
up) added to a block's output, implemented natively as a PEFT tuner (see native/__init__.py), because
AdapterHub's `adapters` package pins transformers 4.x.

- Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP": serial adapters after the
  attention output and after the feed-forward output, before each residual sum.
- Pfeiffer et al. 2021, "AdapterFusion": one serial adapter, after the feed-forward block only.
- He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning": a parallel
  adapter beside the feed-forward block, reading its input, output scaled by s (4 in the paper).

Serial: out = f(x) + s * up(act(down(f(x)))); parallel: out = f(x) + s * up(act(down(x))).
`up` starts at zero, so an untrained adapter leaves the model exactly as it was (Houlsby's
near-identity start). The non-linearity makes the change impossible to fold into the weights: the
result is an adapter that loads beside its base (chat, continued training), not mergeable."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from pipelines.methods.native import peft_type
from pipelines.methods.native.base import NativeTuner

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU}


@dataclass
class BottleneckConfig(PeftConfig):
    target_modules: list[str] | str | None = field(default=None, metadata={"help": "modules whose output is adapted"})
    reduction_factor: int = field(default=16, metadata={"help": "the adapter's middle is the model's width / this"})
    scaling: float = field(default=1.0, metadata={"help": "multiplies the adapter's output"})
    placement: str = field(default="serial", metadata={"help": "'serial' reads the module's output, 'parallel' its input"})
    non_linearity: str = field(default="silu", metadata={"help": "activation between down and up"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input while training"})
    exclude_modules: list[str] | str | None = field(default=None, metadata={"help": "modules never adapted"})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "unused; PEFT's interface"})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = peft_type("BOTTLENECK")
        if self.placement not in ("serial", "parallel"):
            raise ValueError(f"placement must be 'serial' or 'parallel', not {self.placement!r}")
        if self.non_linearity not in ACTIVATIONS:
            raise ValueError(f"non_linearity must be one of {', '.join(ACTIVATIONS)}")


def _dims(module: nn.Module, hidden: int) -> tuple[int, int]:
    """(input, output) width of the adapted module: a linear layer's own, else the model's width
    (a whole feed-forward block maps the hidden state to itself)."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return hidden, hidden


def gate(width: int) -> nn.Linear:
    """UniPELT's gate: sigmoid(W x + b) per token, from small weights and a zero bias, as AdapterHub
    initialises its gates (near 1/2 unless x is very large)."""
    layer = nn.Linear(width, 1)
    nn.init.normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class BottleneckLayer(nn.Module, BaseTunerLayer):
    adapter_layer_names = ("bottleneck_down", "bottleneck_up", "bottleneck_gate")
    other_param_names = ("bottleneck_scaling", "bottleneck_placement")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: BottleneckConfig, hidden: int):
        super().__init__()
        self.base_layer = base_layer
        self.hidden = hidden
        self.in_features, self.out_features = _dims(base_layer, hidden)
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self.bottleneck_gate = nn.ModuleDict()  # UniPELT's: how much of the change each token takes
        self.bottleneck_act = nn.ModuleDict()
        self.bottleneck_dropout = nn.ModuleDict()
        self.bottleneck_scaling: dict[str, float] = {}
        self.bottleneck_placement: dict[str, str] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: BottleneckConfig, **_kwargs) -> None:
        width = self.out_features if config.placement == "serial" else self.in_features
        size = max(1, self.hidden // config.reduction_factor)
        down = nn.Linear(width, size)
        up = nn.Linear(size, self.out_features)
        # Houlsby's near-identity start: a small random down projection, a zero up projection
        nn.init.normal_(down.weight, std=1e-2)
        nn.init.zeros_(down.bias)
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        # PEFT moves a new adapter to its base layer's `.weight`, which a whole feed-forward block does not have
        device = next(self.base_layer.parameters()).device
        self.bottleneck_down[adapter_name] = down.to(device)
        self.bottleneck_up[adapter_name] = up.to(device)
        if getattr(config, "gated", False):
            self.bottleneck_gate[adapter_name] = gate(width).to(device)
        self.bottleneck_act[adapter_name] = ACTIVATIONS[config.non_linearity]()
        self.bottleneck_dropout[adapter_name] = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.bottleneck_scaling[adapter_name] = config.scaling
        self.bottleneck_placement[adapter_name] = config.placement
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise ValueError("a bottleneck adapter cannot be merged into the weights: it adds a small network "
                         "with a non-linearity, not a change of a weight")

    def unmerge(self) -> None:
        pass

    def forward(self, x: torch.Tensor, *args, **kwargs):
        out = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return out
        for name in self.active_adapters:
            if name not in self.bottleneck_down:
                continue
            down = self.bottleneck_down[name]
            source = out if self.bottleneck_placement[name] == "serial" else x
            h = self.bottleneck_dropout[name](source.to(down.weight.dtype))
            change = self.bottleneck_up[name](self.bottleneck_act[name](down(h)))
            if name in self.bottleneck_gate:
                change = torch.sigmoid(self.bottleneck_gate[name](source.to(down.weight.dtype))) * change
            out = out + (self.bottleneck_scaling[name] * change).to(out.dtype)
        return out

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()


class BottleneckModel(NativeTuner):
    prefix: str = "bottleneck_"
    layer_types = (BottleneckLayer,)
    what = "a bottleneck adapter"

    def _new_layer(self, peft_config, adapter_name, target, target_name):
        return BottleneckLayer(target, adapter_name, peft_config, self.hidden_size)
