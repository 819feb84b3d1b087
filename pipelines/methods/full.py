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


def train_last_blocks(model, params) -> None:
    """Freeze all but the last `freeze_trainable_layers` decoder blocks (and the final norm)."""
    blocks = model.model.layers
    n = min(params.freeze_trainable_layers, len(blocks))
    for p in model.parameters():
        p.requires_grad_(False)
    for block in list(blocks)[len(blocks) - n:]:
        for p in block.parameters():
            p.requires_grad_(True)
    for p in model.model.norm.parameters():
        p.requires_grad_(True)

