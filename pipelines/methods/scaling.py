"""Methods that train tiny per-channel scales of the existing model: IA3 (scales keys, values
and the MLP) and LayerNorm tuning (the normalisation weights)."""

from __future__ import annotations

from pipelines.methods.lora import LoraTraining
from pipelines.methods.params import with_defaults
from pipelines.methods.setup import Setup

# Scaling vectors are few and start at 1: they need a high learning rate to move.
IA3Params = with_defaults(LoraTraining, "IA3Params", learning_rate=1e-2)
LNTuningParams = with_defaults(LoraTraining, "LNTuningParams", learning_rate=5e-3)


def ia3_config(params, setup: Setup | None = None):
    from peft import IA3Config

    # The paper's placement: rescale attention keys and values, and the MLP's input to its
    # down projection (a feed-forward module, so the scale goes on its input).
    return IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                     feedforward_modules=["down_proj"])


def ln_tuning_config(params, setup: Setup | None = None):
    from peft import LNTuningConfig

    return LNTuningConfig(task_type="CAUSAL_LM")
