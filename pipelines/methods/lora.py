"""LoRA and the variants that keep its shape (rank-r matrices A and B beside frozen weights)
but change how they are scaled, initialised or optimised: rsLoRA, DoRA, PiSSA, OLoRA, LoRA+,
LoRA-FA. QLoRA (qlora.py) is LoRA on a 4-bit base."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipelines.methods.params import only, param, with_defaults
from pipelines.methods.setup import Setup
from pipelines.methods.training import SFTTraining

# What "attention" means: the attention's own linear layers, as each family names them (PEFT matches a name
# as the module's name or its end after a dot). Llama-style (Qwen, Mistral, Gemma, SmolLM): q/k/v/o_proj;
# Phi-3: qkv_proj, o_proj; GPT-2: attn.c_attn, attn.c_proj (its MLP has a c_proj too); GPT-NeoX, Falcon,
# Bloom: query_key_value and the attention's dense; MPT: Wqkv, out_proj. With the Llama names alone,
# "attention" adapted only o_proj on Phi-3 and failed on GPT-2 and GPT-NeoX.
ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "attn.c_proj", "query_key_value",
                     "attention.dense", "self_attention.dense", "Wqkv", "out_proj"]


def targets(choice: str):
    return ATTENTION_MODULES if choice == "attention" else "all-linear"


def targeted(name: str, chosen) -> bool:
    """Whether a linear layer's module name is one `targets()` names (PEFT's rule: the name, or its end)."""
    return chosen == "all-linear" or any(name == key or name.endswith("." + key) for key in chosen)


# Adapters train far fewer weights than the model has, so they take a higher learning rate
# than full fine-tuning. Measured on the built-in model and the sample FAQ (bench/faq_quality.py):
# 3 epochs at 1e-3 answered 3/40 held-out questions, 8 epochs 28/40.
LoraTraining = with_defaults(SFTTraining, "LoraTraining", learning_rate=1e-3, num_train_epochs=8.0)

TARGET_HELP = ("'attention' adapts only the attention layers (fewer weights, gentler); 'all-linear' "
               "adapts every linear layer (learns more, usually better quality; on a mixture-of-experts model "
               "whose experts are held in one tensor, the experts are not among them).")


@dataclass
class LoraFields:
    """The adapter's own settings, shared by LoRA for SFT and the preference methods' LoRA."""
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
        "all-linear", label="Where to adapt", help=TARGET_HELP, target="peft",
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


# The preference and reward trainers of TRL (disable_dropout, on by default) and the studio's PPO switch every
# dropout off (a policy's log-probabilities are compared with its reference's), so LoRA's Dropout did nothing
# there. GRPO and RLOO keep it on in TRL, where it makes the probability of a reply differ between the pass that
# scores it and the one that learns from it (noise in their ratio), and they learn from replies written afresh
# each step, which seldom calls for it: their LoRA has no Dropout either.
LoraFieldsNoDropout = only(LoraFields, "LoraFieldsNoDropout",
                           [f.name for f in dataclasses.fields(LoraFields) if f.name != "lora_dropout"])


@dataclass
class LoraParams(LoraFields, LoraTraining):  # training fields first, then the adapter's
    pass


# rsLoRA: its scaling alpha/sqrt(r) lets a high rank learn at the pace of a low one, so it
# starts at rank 64 (alpha 16 gives the same scale, 2.0, as LoRA's 32/16).
RsLoraParams = with_defaults(LoraParams, "RsLoraParams", r=64, lora_alpha=16, use_rslora=True)


@dataclass
class PissaParams(LoraParams):
    init_lora_weights: str = param(
        "pissa_niter_4",
        label="How to find the main directions",
        help="PiSSA starts the adapter from the largest directions of each weight (its SVD). "
        "'pissa_niter_4' finds them with a fast approximation (seconds, even on big models); "
        "'pissa' computes them exactly (slower on big models, same result in practice).",
        target="peft",
        choices=["pissa_niter_4", "pissa"],
        advanced=True,
    )


@dataclass
class LoraPlusParams(LoraParams):
    loraplus_lr_ratio: float = param(
        16.0,
        label="B/A learning-rate ratio",
        help="LoRA+ trains the B matrices this many times faster than the A matrices, which "
        "learns faster at the same cost. 16 is the paper's recommendation; 1 = plain LoRA.",
        target="studio",
        min=1.0,
        max=100.0,
        step=1.0,
    )


def lora_config(params, setup: Setup | None = None, **extra):
    """PEFT's LoraConfig for these parameters; `extra` carries a variant's fixed choices."""
    from peft import LoraConfig

    fields = {"r": params.r, "lora_alpha": params.lora_alpha, "lora_dropout": getattr(params, "lora_dropout", 0.0),
                  "target_modules": targets(params.target_modules), "use_rslora": params.use_rslora}
    if hasattr(params, "init_lora_weights"):
        fields["init_lora_weights"] = params.init_lora_weights
    return LoraConfig(task_type="CAUSAL_LM", **{**fields, **extra})


def dora_config(params, setup: Setup | None = None):
    return lora_config(params, setup, use_dora=True)


def olora_config(params, setup: Setup | None = None):
    return lora_config(params, setup, init_lora_weights="olora")


def loraplus_optimizer(model, params):
    """LoRA+: B matrices learn `loraplus_lr_ratio` times faster than A (PEFT's recipe)."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=params.learning_rate,
                                     loraplus_lr_ratio=params.loraplus_lr_ratio)


def lorafa_optimizer(model, params):
    """LoRA-FA: A stays frozen at its random start, B learns with a projected gradient, so
    the activations A needs for its own gradient are never kept (less memory)."""
    from peft.optimizers import create_lorafa_optimizer

    return create_lorafa_optimizer(model, r=params.r, lora_alpha=params.lora_alpha, lr=params.learning_rate)
