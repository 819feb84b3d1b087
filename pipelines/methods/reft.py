"""ReFT as studio methods: LoReFT and DiReFT edit the hidden states of chosen transformer blocks
instead of the weights. The tuner itself is pipelines/methods/native/reft.py."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.lora import LoraTraining
from pipelines.methods.params import ConfigError, param, with_defaults
from pipelines.methods.setup import Setup

# An intervention is a few thousand weights per block: the ReFT paper trains it at 1e-3 to 9e-3
# (4e-3 for instruction following).
ReftTraining = with_defaults(LoraTraining, "ReftTraining", learning_rate=4e-3)

LAYERS = {"all": "every block", "quarters": "the blocks at 1/4, 1/2 and 3/4 of the depth",
          "middle": "the middle block only"}


@dataclass
class ReftParams(ReftTraining):
    rank: int = param(
        4,
        label="Rank (edited dimensions)",
        help="How many directions of the hidden state each intervention may edit. The ReFT paper uses "
        "4 for instruction following; higher edits more and trains more weights (still far fewer than LoRA).",
        target="peft", min=1, max=256, step=1,
    )
    layers: str = param(
        "all",
        label="Which blocks",
        help="The transformer blocks whose output is edited. Editing every block learns the most; fewer "
        "blocks make an even smaller adapter.",
        target="studio", choices=list(LAYERS), choice_help=LAYERS,
    )
    first_positions: int = param(
        0,
        label="Edit only the first N tokens",
        help="0 edits every token of the prompt and the reply. N > 0 edits only each example's first N "
        "tokens (the start of the prompt, as in the paper's 'f' positions): the edit then reaches the "
        "reply only through attention, a lighter touch.",
        target="peft", min=0, max=4096, step=1, advanced=True,
    )
    dropout: float = param(
        0.0,
        label="Dropout",
        help="Randomly ignores part of the edit while training, so the model does not just memorise. The "
        "paper used 0.05; try it if held-out loss rises while training loss falls.",
        target="peft", min=0.0, max=0.5, step=0.01, advanced=True,
    )


def block_indices(choice: str, count: int) -> list[int]:
    """The blocks `choice` names in a model of `count` blocks."""
    if choice == "all":
        return list(range(count))
    if choice == "middle":
        return [count // 2]
    return sorted({max(0, min(count - 1, round(count * f))) for f in (0.25, 0.5, 0.75)})


def _layer_count(setup: Setup | None) -> int:
    from transformers import AutoConfig

    if setup is not None and setup.num_layers:
        return setup.num_layers
    if setup is None or not setup.model_path:
        raise ConfigError("ReFT needs the model's folder to choose its blocks")
    return AutoConfig.from_pretrained(setup.model_path).get_text_config().num_hidden_layers


def _config(params: ReftParams, setup: Setup | None, kind: str):
    from pipelines.methods.native import register
    from pipelines.methods.native.reft import ReftConfig

    register()
    blocks = block_indices(params.layers, _layer_count(setup))
    return ReftConfig(task_type="CAUSAL_LM", target_modules=rf".*\.layers\.({'|'.join(map(str, blocks))})",
                      rank=params.rank, kind=kind, first_positions=params.first_positions, dropout=params.dropout)


def loreft_config(params: ReftParams, setup: Setup | None = None):
    return _config(params, setup, "loreft")


def direft_config(params: ReftParams, setup: Setup | None = None):
    return _config(params, setup, "direft")
