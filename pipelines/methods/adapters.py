"""Bottleneck adapters as studio methods: Houlsby (serial, after attention and after the
feed-forward block), Pfeiffer (serial, after the feed-forward block), the parallel adapter
(beside the feed-forward block), MAM (a parallel adapter plus a prefix on every attention
layer) and UniPELT (LoRA, a prefix and a Pfeiffer adapter, each behind a learned gate). The tuners
are pipelines/methods/native/bottleneck.py, native/mam.py and native/unipelt.py."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.lora import LoraTraining
from pipelines.methods.params import ConfigError, param, with_defaults
from pipelines.methods.prompts import instruction_ids, instruction_param
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


@dataclass
class MamParams(ParallelAdapterParams):
    prefix_length: int = param(
        30,
        label="Prefix length",
        help="How many learned keys and values every attention layer sees in front of the input (the paper's "
        "30). More can hold more behaviour and make every step a little slower.",
        target="peft", min=1, max=512, step=1,
    )
    prefix_init_text: str = instruction_param()


# attention the MAM prefix re-implements exactly (q/k/v/o projections, rotary positions, nothing else)
MAM_MODELS = ("llama",)


def _name(params) -> str:
    return "UniPELT" if isinstance(params, UniPeltParams) else "MAM"


def check_mam(params: MamParams) -> None:
    if not params.prefix_init_text.strip():
        raise ConfigError(f"{_name(params)}'s starting instruction is empty: write a few words for the prefix to "
                          "start from")


def _check_attention(params, setup: Setup | None) -> None:
    if setup is not None and setup.model_path:
        from transformers import AutoConfig

        kind = AutoConfig.from_pretrained(setup.model_path).get_text_config().model_type
        if kind not in MAM_MODELS:
            instead = ("LoRA, or the Pfeiffer adapter" if _name(params) == "UniPELT"
                       else "the parallel adapter, or prefix tuning")
            raise ConfigError(f"{_name(params)}'s prefix is written for llama-style attention, and '{kind}' models "
                              f"compute attention differently; use {instead}")


def mam_config(params: MamParams, setup: Setup | None = None):
    from pipelines.methods.native import register
    from pipelines.methods.native.mam import MamConfig

    _check_attention(params, setup)
    register()
    return MamConfig(task_type="CAUSAL_LM", target_modules=["self_attn", "mlp"], prefix_length=params.prefix_length,
                     reduction_factor=params.reduction_factor, scaling=params.scaling,
                     non_linearity=params.non_linearity, dropout=params.dropout)


@dataclass
class UniPeltParams(BottleneckParams):
    r: int = param(
        8,
        label="LoRA rank",
        help="Size of the LoRA part's learned change to the attention's queries and values (the paper's 8). "
        "Higher can learn more and trains more weights.",
        target="peft", min=1, max=512, step=1,
    )
    lora_alpha: int = param(
        16,
        label="LoRA alpha",
        help="Strength of the LoRA part relative to its rank; usually 2 x rank.",
        target="peft", min=1, max=1024, step=1,
    )
    prefix_length: int = param(
        10,
        label="Prefix length",
        help="How many learned keys and values every attention layer sees in front of the input (the paper's "
        "10). More can hold more behaviour and make every step a little slower.",
        target="peft", min=1, max=512, step=1,
    )
    prefix_init_text: str = instruction_param()
    dropout: float = param(
        0.0,
        label="Dropout",
        help="Randomly ignores part of the LoRA part's and the adapter's input while training, so the model does "
        "not just memorise. Try 0.05-0.1 if held-out loss rises while training loss falls.",
        target="peft", min=0.0, max=0.5, step=0.01, advanced=True,
    )


def unipelt_config(params: UniPeltParams, setup: Setup | None = None):
    from pipelines.methods.native import register
    from pipelines.methods.native.unipelt import UniPeltConfig

    _check_attention(params, setup)
    register()
    return UniPeltConfig(task_type="CAUSAL_LM", target_modules=["self_attn", "down_proj"], r=params.r,
                         lora_alpha=params.lora_alpha, lora_dropout=params.dropout,
                         prefix_length=params.prefix_length, reduction_factor=params.reduction_factor,
                         non_linearity=params.non_linearity, dropout=params.dropout)


def mam_from_text(model, params: MamParams, setup: Setup) -> None:
    """Start every prefix as the model's own keys and values for the starting instruction."""
    from pipelines.methods.native.mam import start_from_text

    start_from_text(model, instruction_ids(setup.model_path, params.prefix_init_text, params.prefix_length))
