"""Prompt-learning methods: the model stays untouched and a few learned 'virtual tokens' are
put in front of every input — as embeddings (prompt tuning), produced by a small network
(P-tuning), or as keys and values in every layer (prefix tuning)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.lora import LoraTraining
from pipelines.methods.params import ConfigError, param, with_defaults
from pipelines.methods.setup import Setup

# Only a few thousand numbers learn, so these methods need a far higher learning rate.
PromptTraining = with_defaults(LoraTraining, "PromptTraining", learning_rate=3e-2)

VIRTUAL_HELP = ("How many learned tokens go in front of every input. More can hold more "
                "behaviour but make every input longer; 10-30 is typical.")


def instruction_param():
    """The starting instruction a prefix is computed from (prefix tuning, MAM's prefix)."""
    return param(
        "Answer the question accurately and briefly:", label="Starting instruction",
        help="The prefix starts as what the model itself computes for these words (repeated or "
        "cut to the prefix's length), so training starts from a sensible context "
        "instead of noise.",
        target="studio")


def instruction_ids(model_path: str, text: str, n: int) -> list[int]:
    """The instruction's tokens, repeated or cut to exactly n."""
    from pipelines.models import load_tokenizer

    ids = load_tokenizer(model_path)(text, add_special_tokens=False)["input_ids"]
    return (ids * (n // max(1, len(ids)) + 1))[:n]


@dataclass
class PrefixParams(PromptTraining):
    num_virtual_tokens: int = param(20, label="Virtual tokens", help=VIRTUAL_HELP,
                                    target="peft", min=1, max=512, step=1)
    prefix_init_text: str = instruction_param()
    prefix_projection: bool = param(
        False, label="Reparameterise through a small network",
        help="Learn the prefix through a two-layer network (as in the original paper) for more "
        "stable training; costs many more trainable weights while training, and starts from "
        "random values instead of the instruction above.",
        target="peft", advanced=True)


def check_prefix(params: PrefixParams) -> None:
    """An empty starting instruction has no tokens to start the prefix from (the run stopped with a
    RuntimeError about a float tensor of indices)."""
    if not params.prefix_projection and not params.prefix_init_text.strip():
        raise ConfigError("parameter 'prefix_init_text': the starting instruction is empty; write a few words for "
                          "the prefix to start from")


def check_prompt(params: PromptTuningParams) -> None:
    """The same for a soft prompt started from text (PEFT divided by its number of tokens)."""
    if params.prompt_tuning_init == "TEXT" and not params.prompt_tuning_init_text.strip():
        raise ConfigError("parameter 'prompt_tuning_init_text': the starting instruction is empty; write a few "
                          "words for the soft prompt to start from, or start it from RANDOM")


def prefix_from_text(model, params: PrefixParams, setup: Setup) -> None:
    """Start the prefix as the keys and values the model itself computes for an instruction.

    PEFT starts prefixes at random, and random keys and values in every layer wreck a small
    model's answers (held-out loss 2.75 -> 10.7 on the built-in model before the first step);
    starting from real activations (as Li & Liang did) begins at the base model's quality."""
    import torch

    from pipelines.models import forward_with_cache

    config = model.active_peft_config
    if config.prefix_projection:  # the prefix comes out of an MLP: there is no table to fill
        return
    n = config.num_virtual_tokens
    ids = instruction_ids(setup.model_path, params.prefix_init_text, n)
    with torch.no_grad():
        _, cache = forward_with_cache(model.get_base_model(), None, input_ids=torch.tensor([ids]))
        # PEFT reads row t as (layer, key/value, head, dim) flattened
        kv = torch.stack([torch.stack([layer.keys[0], layer.values[0]]) for layer in cache.layers])
        table = model.prompt_encoder[model.active_adapter].embedding.weight
        table.copy_(kv.permute(3, 0, 1, 2, 4).reshape(n, -1).to(table.dtype))


def prefix_config(params: PrefixParams, setup: Setup | None = None):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=params.num_virtual_tokens,
                              prefix_projection=params.prefix_projection)


@dataclass
class PromptTuningParams(PromptTraining):
    num_virtual_tokens: int = param(20, label="Virtual tokens", help=VIRTUAL_HELP,
                                    target="peft", min=1, max=512, step=1)
    prompt_tuning_init: str = param(
        "TEXT", label="Start from",
        help="'TEXT' starts the virtual tokens as the words of the instruction below, which "
        "trains faster and more reliably than 'RANDOM' on small models.",
        target="peft", choices=["TEXT", "RANDOM"])
    prompt_tuning_init_text: str = param(
        "Answer the question accurately and briefly:", label="Starting instruction",
        help="Used with 'TEXT': a plain instruction describing the task; its tokens are "
        "repeated or cut to the number of virtual tokens.",
        target="peft")


def prompt_config(params: PromptTuningParams, setup: Setup | None = None):
    from peft import PromptTuningConfig

    text = params.prompt_tuning_init == "TEXT"
    return PromptTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=params.num_virtual_tokens,
        prompt_tuning_init=params.prompt_tuning_init,
        prompt_tuning_init_text=params.prompt_tuning_init_text if text else None,
        tokenizer_name_or_path=(setup.model_path if setup and text else None),
    )


@dataclass
class PTuningParams(PromptTraining):
    num_virtual_tokens: int = param(20, label="Virtual tokens", help=VIRTUAL_HELP,
                                    target="peft", min=1, max=512, step=1)
    encoder_reparameterization_type: str = param(
        "MLP", label="Prompt encoder",
        help="The small network that produces the virtual tokens: 'MLP' is simple and fast; "
        "'LSTM' (the original P-tuning) links neighbouring tokens.",
        target="peft", choices=["MLP", "LSTM"], advanced=True)
    encoder_hidden_size: int = param(
        128, label="Encoder width",
        help="Width of the prompt encoder network. Wider can learn more; only used while "
        "training (the saved adapter keeps just the virtual tokens).",
        target="peft", min=8, max=4096, step=8, advanced=True)


def ptuning_config(params: PTuningParams, setup: Setup | None = None):
    from peft import PromptEncoderConfig

    return PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=params.num_virtual_tokens,
                               encoder_reparameterization_type=params.encoder_reparameterization_type,
                               encoder_hidden_size=params.encoder_hidden_size)
