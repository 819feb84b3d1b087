"""Full fine-tuning (every weight learns) and freeze tuning (only the last N blocks learn).
The result is a whole model, not an adapter."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.params import param, with_defaults
from pipelines.methods.training import SFTTraining

# Every weight moves, so a small learning rate keeps the model from forgetting what it knew.
FullParams = with_defaults(SFTTraining, "FullParams", learning_rate=2e-5, num_train_epochs=3.0)


# Fewer weights move than in full tuning, so freeze tuning can take a bigger step.
FreezeTraining = with_defaults(FullParams, "FreezeTraining", learning_rate=1e-4)


@dataclass
class FreezeParams(FreezeTraining):
    freeze_trainable_layers: int = param(
        4, label="Blocks to train",
        help="How many of the model's last transformer blocks learn; the rest stay frozen. "
        "Fewer = less memory and less forgetting; the last blocks shape the wording most.",
        target="studio", min=1, max=200, step=1)


def train_everything(model, params) -> None:
    for p in model.parameters():
        p.requires_grad_(True)


def decoder_blocks(model) -> tuple[str, object]:
    """(dotted name, module list) of the model's transformer blocks, wherever its family keeps them
    (model.layers in Llama and most, transformer.h in GPT-2, gpt_neox.layers, model.decoder.layers in
    OPT): the module list as long as the configuration's layer count, else the longest. Freeze tuning
    and BAdam read model.model.layers or '.layers.N.' names, and stopped with AttributeError or
    IndexError on the other families."""
    import torch.nn as nn

    from pipelines.methods.params import ConfigError

    # within the language model's own body where the model says which it is (not a vision tower of as many
    # blocks); the first list in the order of the modules: the blocks come before the lists inside them
    root, prefix = model, ""
    try:
        decoder = model.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        decoder = None
    if decoder is not None and decoder is not model:
        prefix = next((f"{name}." for name, m in model.named_modules() if m is decoder), None)
        root, prefix = (decoder, prefix) if prefix is not None else (model, "")
    lists = [(prefix + name, m) for name, m in root.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(config, "num_hidden_layers", None)
    found = [item for item in lists if len(item[1]) == layers] or sorted(lists, key=lambda x: -len(x[1]))
    if not found:
        raise ConfigError("this model has no list of transformer blocks to train block by block; use LoRA or "
                          "full fine-tuning")
    return found[0]


FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f")


def final_norms(model, blocks_name: str) -> list:
    """The normalisation beside the blocks applied after the last one (model.norm, transformer.ln_f): one
    with a final norm's name, or one registered after the blocks. Not a norm applied before the first
    block (Bloom's word_embeddings_layernorm): training it sends the backward pass through every frozen
    block, which freeze tuning is there to spare."""
    parent_name, _, own = blocks_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    names = [name for name, _ in parent.named_children()]
    after = names[names.index(own) + 1:] if own in names else []
    return [m for name, m in parent.named_children() if name != own and "norm" in type(m).__name__.lower()
            and (name in FINAL_NORMS or name in after)]


def train_last_blocks(model, params) -> None:
    """Freeze all but the last `freeze_trainable_layers` decoder blocks (and the final norm)."""
    name, blocks = decoder_blocks(model)
    n = min(params.freeze_trainable_layers, len(blocks))
    for p in model.parameters():
        p.requires_grad_(False)
    for block in list(blocks)[len(blocks) - n:]:
        for p in block.parameters():
            p.requires_grad_(True)
    for norm in final_norms(model, name):
        for p in norm.parameters():
            p.requires_grad_(True)

