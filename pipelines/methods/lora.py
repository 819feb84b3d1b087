"""LoRA SFT: small low-rank matrices learned beside frozen weights."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.params import param, with_defaults
from pipelines.methods.training import SFTTraining

# What "attention" means for the llama-style models the studio targets.
ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


# Adapters train far fewer weights than the model has, so they take a higher learning rate
# than full fine-tuning. Measured on the built-in model and the sample FAQ (bench/faq_quality.py):
# 3 epochs at 1e-3 answered 3/40 held-out questions, 8 epochs 28/40.
LoraTraining = with_defaults(SFTTraining, "LoraTraining", learning_rate=1e-3, num_train_epochs=8.0)


@dataclass
class LoraParams(LoraTraining):
    r: int = param(
        16,
        label="Rank",
        help="Size of the learned change. Higher can learn more (and more facts) but trains "
        "more weights; 8-32 fits most tasks.",
        target="peft",
        min=1,
        max=512,
        step=1,
    )
    lora_alpha: int = param(
        32,
        label="Alpha",
        help="Strength of the learned change relative to the rank; usually 2 x rank. Higher = "
        "bigger changes per step.",
        target="peft",
        min=1,
        max=1024,
        step=1,
    )
    lora_dropout: float = param(
        0.0,
        label="Dropout",
        help="Randomly ignores part of the change while training, so the model does not just "
        "memorise. Off by default (it costs ~20% speed on CPU); try 0.05-0.1 if held-out loss "
        "rises while training loss falls.",
        target="peft",
        min=0.0,
        max=0.5,
        step=0.01,
    )
    target_modules: str = param(
        "all-linear",
        label="Where to adapt",
        help="'attention' adapts only the attention layers (fewer weights, gentler); "
        "'all-linear' adapts every layer (learns more, usually better quality).",
        target="peft",
        choices=["attention", "all-linear"],
    )
    use_rslora: bool = param(
        False,
        label="rsLoRA scaling",
        help="Scales the change by alpha/sqrt(rank) instead of alpha/rank, which keeps high "
        "ranks (64+) learning as well as low ones. Useful when you raise the rank.",
        target="peft",
        advanced=True,
    )


def lora_config(params: LoraParams):
    """PEFT's LoraConfig for these parameters."""
    from peft import LoraConfig

    targets = ATTENTION_MODULES if params.target_modules == "attention" else "all-linear"
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=params.r,
        lora_alpha=params.lora_alpha,
        lora_dropout=params.lora_dropout,
        target_modules=targets,
        use_rslora=params.use_rslora,
    )
