"""Methods that train tiny per-channel scales of the existing model: IA3 (scales keys, values
and the MLP) and LayerNorm tuning (the normalisation weights)."""

from __future__ import annotations

from pipelines.methods.lora import LoraTraining
from pipelines.methods.params import with_defaults
from pipelines.methods.setup import Setup

# Scaling vectors are few and start at 1: they need a high learning rate to move.
IA3Params = with_defaults(LoraTraining, "IA3Params", learning_rate=1e-2)
LNTuningParams = with_defaults(LoraTraining, "LNTuningParams", learning_rate=5e-3)


# The paper's placement: rescale attention keys and values, and the MLP's input to its down projection (a
# feed-forward module, so the scale goes on its input), as each family names them: Llama-style k_proj,
# v_proj, down_proj; where keys and values come out of one fused layer (Phi-3 qkv_proj, GPT-2 c_attn,
# GPT-NeoX query_key_value, MPT Wqkv) that layer, queries included; GPT-2's mlp.c_proj, GPT-NeoX's
# dense_4h_to_h, OPT's and Phi-2's fc2 for the down projection. (PEFT's own table disagrees between
# families, q for k on Qwen, and has no Phi-3.)
IA3_FEEDFORWARD = ["down_proj", "mlp.c_proj", "dense_4h_to_h", "fc2"]
IA3_TARGETS = ["k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", *IA3_FEEDFORWARD]

# Every normalisation layer: the blocks' and the final one, however a family names them (input_layernorm,
# post_attention_layernorm, norm; Qwen3's q_norm and k_norm; GPT-2's ln_1, ln_2, ln_f; GPT-NeoX's
# final_layer_norm). PEFT's own table holds only post_attention_layernorm for Qwen, and nothing for Phi-3
# or Mixtral (a run failed with "Please specify target_modules").
NORM_MODULES = r".*(norm|ln_[^.]*)"


def ia3_config(params, setup: Setup | None = None):
    from peft import IA3Config

    return IA3Config(task_type="CAUSAL_LM", target_modules=IA3_TARGETS, feedforward_modules=IA3_FEEDFORWARD)


def ln_tuning_config(params, setup: Setup | None = None):
    from peft import LNTuningConfig

    return LNTuningConfig(task_type="CAUSAL_LM", target_modules=NORM_MODULES)
