"""Bottleneck adapters as studio methods: Houlsby (serial, after attention and after the
feed-forward block), Pfeiffer (serial, after the feed-forward block) and the parallel adapter
(beside the feed-forward block). The tuner itself is pipelines/methods/native/bottleneck.py."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.lora import LoraTraining
from pipelines.methods.params import param, with_defaults
from pipelines.methods.setup import Setup

ACTIVATIONS = ["silu", "relu", "gelu"]

BottleneckTraining = with_defaults(LoraTraining, "BottleneckTraining", learning_rate=1e-3)


@dataclass
class BottleneckParams(BottleneckTraining):
    reduction_factor: int = param(
        16,
        label="Reduction factor",
        help="How much narrower the adapter's middle is than the model: the model's width divided by this. "
        "16 (the AdapterHub default) gives a 36-wide adapter on the built-in model; lower = more "
        "capacity and more trainable weights.",
        target="peft", min=1, max=256, step=1,
    )
    non_linearity: str = param(
        "silu",
        label="Non-linearity",
        help="The function between the adapter's two layers. 'silu' matches the model's own feed-forward "
        "layers; 'relu' and 'gelu' are what the original papers used.",
        target="peft", choices=ACTIVATIONS, advanced=True,
    )
    dropout: float = param(
        0.0,
        label="Dropout",
        help="Randomly ignores part of the adapter's input while training, so the model does not just "
        "memorise. Try 0.05-0.1 if held-out loss rises while training loss falls.",
        target="peft", min=0.0, max=0.5, step=0.01, advanced=True,
    )


@dataclass
class ParallelAdapterParams(BottleneckParams):
    scaling: float = param(
        4.0,
        label="Output scale",
        help="Multiplies the parallel adapter's output before it joins the feed-forward block's. He et al. "
        "found 4 best for an adapter beside the feed-forward block; 1 = unscaled.",
        target="peft", min=0.01, max=32.0, step=0.5,
    )


PLACES = {"houlsby": ["o_proj", "down_proj"], "pfeiffer": ["down_proj"], "parallel": ["mlp"]}


def _config(params, setup: Setup | None, where: str):
    from pipelines.methods.native import register
    from pipelines.methods.native.bottleneck import BottleneckConfig

    register()
    return BottleneckConfig(
        task_type="CAUSAL_LM", target_modules=PLACES[where],
        reduction_factor=params.reduction_factor,
        scaling=getattr(params, "scaling", 1.0),
        placement="parallel" if where == "parallel" else "serial",
        non_linearity=params.non_linearity, dropout=params.dropout)


def houlsby_config(params, setup: Setup | None = None):
    return _config(params, setup, "houlsby")


def pfeiffer_config(params, setup: Setup | None = None):
    return _config(params, setup, "pfeiffer")


def parallel_config(params, setup: Setup | None = None):
    return _config(params, setup, "parallel")
