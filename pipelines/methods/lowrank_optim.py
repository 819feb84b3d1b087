"""Memory-efficient optimizers for full-weight training: GaLore and APOLLO, through transformers'
`optim` ("galore_adamw", "apollo_adamw"; the packages galore-torch and apollo-torch).

Every weight learns, as in full fine-tuning, but the optimizer keeps its state for the big matrices
(attention and feed-forward) in a small subspace: GaLore projects each gradient onto its top `rank`
singular directions and keeps Adam's moments there (Zhao et al., 2024, "GaLore: Memory-Efficient LLM
Training by Gradient Low-Rank Projection"); APOLLO keeps moments of a random projection and only uses
them to scale the raw gradient per channel (Zhu et al., 2025, "APOLLO: SGD-like Memory, AdamW-level
Performance"). Embeddings and norms keep ordinary AdamW state.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from pipelines.methods.full import FullParams
from pipelines.methods.params import param, with_defaults

# the big matrices whose optimizer state is kept low-rank (transformers' optim_target_modules: regexes
# over module names, here every attention and feed-forward projection)
TARGETS = [r".*attn.*", r".*mlp.*"]

# GaLore's update is the projected Adam step times `scale`: a learning rate between full tuning's and
# LoRA's suits it (the paper fine-tunes RoBERTa at 1e-5 to 3e-5 with scale 2-4)
GaLoreTraining = with_defaults(FullParams, "GaLoreTraining", learning_rate=1e-4)


@dataclass
class GaLoreParams(GaLoreTraining):
    rank: int = param(
        128, label="Projection rank",
        help="How many directions of each weight matrix's gradient the optimizer remembers. Smaller = less "
        "memory for the optimizer; too small and it learns slowly. Each matrix keeps at most its own size.",
        target="optim_args", min=1, max=4096, step=1)
    update_proj_gap: int = param(
        200, label="Re-project every N steps",
        help="How often the directions are recomputed from the current gradient (a small SVD per matrix). "
        "More often follows the training better and costs a little time each time.",
        target="optim_args", min=1, max=100000, step=1, advanced=True)
    scale: float = param(
        0.25, label="Update scale",
        help="The projected update is multiplied by this before it is applied: like a second learning rate "
        "for the big matrices. GaLore's authors use 0.25 with a high learning rate, or 2-4 with a low one.",
        target="optim_args", min=0.01, max=100.0, advanced=True)


APOLLOTraining = with_defaults(FullParams, "APOLLOTraining", learning_rate=1e-4)


@dataclass
class APOLLOParams(APOLLOTraining):
    rank: int = param(
        128, label="Projection rank",
        help="Size of the random projection the optimizer measures each gradient through. Its state grows "
        "with this; 1 with 'tensor' scaling is APOLLO-Mini, almost the memory of plain SGD.",
        target="optim_args", min=1, max=4096, step=1)
    scale_type: str = param(
        "channel", label="Scaling",
        help="'channel' gives every output channel its own step size (the default); 'tensor' one per "
        "matrix, for the smallest state (use it with rank 1).",
        target="optim_args", choices=["channel", "tensor"], advanced=True)
    update_proj_gap: int = param(
        200, label="New projection every N steps",
        help="How often the random projection is drawn again. Its state is tiny either way.",
        target="optim_args", min=1, max=100000, step=1, advanced=True)
    scale: float = param(
        1.0, label="Update scale",
        help="Multiplies the scaled update, like a second learning rate for the big matrices. APOLLO-Mini "
        "(rank 1, tensor scaling) wants a large one, about 128.",
        target="optim_args", min=0.01, max=1000.0, advanced=True)


def optim_args(values: dict) -> str:
    """transformers' `optim_args` string ("rank=128,update_proj_gap=200,scale=0.25")."""
    return ",".join(f"{name}={value}" for name, value in values.items())


@lru_cache(maxsize=8)
def _shapes(model_path: str) -> tuple[list[tuple[int, int]], list[int]]:
    """(the targeted matrices' shapes, the other weights' sizes, tied weights once), from the model's
    config on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    targeted, shapes = set(), []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and any(re.fullmatch(p, name) for p in TARGETS):
            shapes.append(tuple(module.weight.shape))
            targeted.add(id(module.weight))
    others, seen = [], set()
    for p in model.parameters():
        if id(p) not in targeted and id(p) not in seen:
            seen.add(id(p))
            others.append(p.numel())
    return shapes, others


def state_bytes(model_path: str, params) -> int:
    """AdamW state under a low-rank optimizer: for each targeted matrix (m x n, short side s, long side l)
    two moments of r x l and GaLore's projector s x r (APOLLO's random one is as large); every other
    weight keeps AdamW's two full-size moments. All fp32. Counted on the model's shapes (meta device)."""
    shapes, others = _shapes(model_path)
    total = 0
    for shape in shapes:
        short, long = sorted(shape)
        r = min(params.rank, short)
        total += 4 * (2 * r * long + short * r)
    return total + 8 * sum(others)


def projection_seconds(model_path: str, params, steps: int, device: str) -> float:
    """GaLore's own work over a run of `steps` optimizer steps (galore_torch's GaLoreProjector): every
    targeted matrix's gradient (m x n) is decomposed at the first step and again every
    `update_proj_gap` steps, at this machine's measured SVD speed (about 6 s for the built-in model's
    210 matrices on a 2-core AMD EPYC); and at every step it is projected down to rank r and the update
    back up, two fp32 products of 2·r·m·n FLOPs each."""
    from pipelines import hardware

    shapes, _ = _shapes(model_path)
    svds = math.ceil(steps / params.update_proj_gap) * sum(m * n * min(m, n) for m, n in shapes)
    products = steps * sum(4 * min(params.rank, m, n) * m * n for m, n in shapes)
    return svds * hardware.svd_seconds_per_unit(device) + products / hardware.matmul_flops(device, False)
