"""QLoRA: the frozen base is stored in 4-bit NF4 (with the quantization constants quantized
again: double quantization) and a LoRA adapter trains on top in higher precision."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.lora import LoraParams
from pipelines.methods.params import param


@dataclass
class QLoraParams(LoraParams):
    bnb_4bit_quant_type: str = param(
        "nf4", label="4-bit format",
        help="'nf4' (NormalFloat) is built for the bell-shaped spread of model weights and is "
        "what the QLoRA paper uses; 'fp4' is a plain 4-bit float, usually a little worse.",
        target="quantization", choices=["nf4", "fp4"], advanced=True)
    bnb_4bit_use_double_quant: bool = param(
        True, label="Double quantization",
        help="Also compresses the scaling constants of the 4-bit blocks: saves about 0.4 bits "
        "per weight (≈3 GB on a 65B model) at no measurable quality cost.",
        target="quantization", advanced=True)
    optim: str = param(
        "auto", label="Optimizer",
        help="'auto' picks the paged 8-bit AdamW on a GPU (optimizer state 4x smaller, paged out "
        "when GPU memory runs short) and the 8-bit AdamW on a CPU, where paging does not exist. "
        "'adamw_torch' keeps full-precision optimizer state.",
        target="trainer", choices=["auto", "adamw_torch", "adamw_bnb_8bit", "paged_adamw_8bit",
                                   "paged_adamw_32bit"], advanced=True)


def quantization_config(params: QLoraParams, compute_dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=params.bnb_4bit_quant_type,
                              bnb_4bit_use_double_quant=params.bnb_4bit_use_double_quant,
                              bnb_4bit_compute_dtype=compute_dtype)


def resolve_optim(choice: str, cuda: bool) -> str:
    """The optimizer name TRL gets. bitsandbytes' 8-bit AdamW runs on CPU too; paging needs a GPU."""
    if choice == "auto":
        return "paged_adamw_8bit" if cuda else "adamw_bnb_8bit"
    if not cuda and choice.startswith("paged_"):
        from pipelines.methods.params import ConfigError

        raise ConfigError(f"optimizer '{choice}' pages memory between GPU and CPU and needs a CUDA GPU; "
                          "on this machine use 'auto', 'adamw_bnb_8bit' or 'adamw_torch'")
    return choice
