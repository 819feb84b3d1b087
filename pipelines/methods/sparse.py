"""Sparse fine-tuning: a fixed, small set of individual weights learns and every other weight
stays frozen. PEFT's SHiRA (Bhardwaj et al. 2024, "Sparse High Rank Adapters") is the
maintained implementation: per adapted matrix it trains r x (rows + columns) entries (as many
weights as a rank-r LoRA), chosen once before training. The change is sparse but of high rank,
and it folds into the weights exactly (mergeable).

Chosen over SMT (Sparse Matrix Tuning: the sub-blocks with the largest warm-up gradients) because
it is maintained in PEFT and its adapter reloads and merges there; the paper's weight-magnitude
mask (SHiRA-WM) is offered beside its random mask (SHiRA-Rand)."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.lora import TARGET_HELP, LoraTraining, targeted, targets
from pipelines.methods.params import param, with_defaults
from pipelines.methods.setup import Setup

# Each chosen entry is a weight of the model itself, moved directly as in full tuning but far
# fewer of them: between full tuning's 2e-5 and LoRA's 1e-3.
ShiraTraining = with_defaults(LoraTraining, "ShiraTraining", learning_rate=2e-4)


@dataclass
class ShiraParams(ShiraTraining):
    r: int = param(
        16,
        label="Budget (as a LoRA rank)",
        help="How many weights learn in each adapted matrix: as many as a LoRA of this rank would train "
        "(rank x (rows + columns)), but spread over single entries of the matrix, so the change is not "
        "limited to that rank. 16 trains about 5% of each matrix of the built-in model.",
        target="peft", min=1, max=512, step=1,
    )
    mask: str = param(
        "weight",
        label="Which weights learn",
        help="How the learning weights are picked, once, before training.",
        target="studio", choices=["weight", "random"],
        choice_help={"weight": "the largest existing weights of each matrix (the paper's SHiRA-WM): they "
                     "carry most of what the layer does",
                     "random": "a random spread over each matrix (SHiRA-Rand, the paper's default)"},
    )
    target_modules: str = param("all-linear", label="Where to adapt", help=TARGET_HELP,
                                target="peft", choices=["attention", "all-linear"])


def largest_weights_mask(base_layer, r: int, **_kwargs):
    """1 on the r x (rows + columns) entries of largest magnitude, 0 elsewhere (SHiRA-WM)."""
    import torch

    weight = base_layer.weight
    count = r * (weight.shape[0] + weight.shape[1])
    flat = torch.zeros(weight.numel(), dtype=weight.dtype, device=weight.device)
    flat[weight.detach().abs().flatten().topk(count).indices] = 1
    return flat.view_as(weight)


def random_masks(seed: int):
    """SHiRA-Rand with a seed of its own per matrix: PEFT's `random_mask` reseeds every matrix with the same
    seed, which gives every matrix of a shape the same entries. Layers are built in a fixed order, so a
    rebuilt model (a resumed run) draws the same masks."""
    import itertools

    from peft.tuners.shira.mask_functions import random_mask

    counter = itertools.count()

    def mask(base_layer, r: int, **_kwargs):
        return random_mask(base_layer, r, random_seed=seed + next(counter))
    return mask


def check_budget(params: ShiraParams, model_path: str) -> None:
    """r x (rows + columns) entries must fit in every adapted matrix (PEFT's limit), said in one sentence."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    chosen = targets(params.target_modules)
    limits = []  # (the largest r the matrix holds, its name, its shape)
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and last != "lm_head" and targeted(name, chosen):
            rows, cols = module.weight.shape
            limits.append((rows * cols // (rows + cols), last, rows, cols))
    from pipelines.methods.params import ConfigError

    if not limits:
        raise ConfigError(f"SHiRA found no linear layers to adapt for '{params.target_modules}' in this model")
    limit, last, rows, cols = min(limits)
    if params.r > limit:
        raise ConfigError(f"SHiRA's budget r = {params.r} asks for more weights than {last} ({rows} x {cols}) has; "
                          f"use r ≤ {limit}")


def shira_config(params: ShiraParams, setup: Setup | None = None):
    import torch
    from peft import ShiraConfig

    # SHiRA builds its change as a sparse tensor from the indices it chose itself, every forward pass;
    # torch warned in the server's and the run's log that its invariant checks are "implicitly disabled.
    # Memory errors (e.g. SEGFAULT) will occur ...": said explicitly, as torch asks, off as they were.
    torch.sparse.check_sparse_tensor_invariants.disable()
    if setup is not None and setup.model_path:
        check_budget(params, setup.model_path)
    config = ShiraConfig(task_type="CAUSAL_LM", r=params.r, target_modules=targets(params.target_modules))
    # the chosen entries are saved with the adapter (their indices), so a reload needs no mask
    config.mask_fn = largest_weights_mask if params.mask == "weight" else random_masks(params.seed)
    return config
