"""Relatives of LoRA that change the shape of the learned patch: VeRA (shared random
matrices, only scaling vectors learn), AdaLoRA (the rank budget moves to where it helps),
LoHa and LoKr (Hadamard and Kronecker products, from the LyCORIS family)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from pipelines.methods.lora import TARGET_HELP, LoraTraining, targets
from pipelines.methods.params import ConfigError, param, with_defaults
from pipelines.methods.setup import Setup

# VeRA learns only two small vectors per layer, so it needs a much higher learning rate.
VeraTraining = with_defaults(LoraTraining, "VeraTraining", learning_rate=1e-2)


@dataclass
class VeraParams(VeraTraining):
    r: int = param(
        256,
        label="Rank of the shared random matrices",
        help="VeRA shares one pair of frozen random matrices across all layers and learns only "
        "two small scaling vectors per layer, so a high rank (256+) adds almost no weights to learn or "
        "save. Every token still goes through those matrices: at 256 a step on the built-in model "
        "computes about half again as much as the model alone (the time estimate counts it).",
        target="peft", min=1, max=4096, step=1,
    )
    d_initial: float = param(
        0.1,
        label="Starting scale",
        help="Initial value of the learned scaling vector d. The run always starts from the original "
        "model (the other vector starts at 0); this sets how strongly the first steps can move it. The "
        "paper found 0.1 works across tasks; at 0 nothing would ever learn.",
        target="peft", min=0.001, max=1.0, step=0.01, advanced=True,
    )
    vera_dropout: float = param(
        0.0,
        label="Dropout",
        help="Randomly ignores part of the change while training so the model does not just "
        "memorise. Try 0.05-0.1 if held-out loss rises while training loss falls.",
        target="peft", min=0.0, max=0.5, step=0.01, advanced=True,
    )
    target_modules: str = param("all-linear", label="Where to adapt", help=TARGET_HELP,
                                target="peft", choices=["attention", "all-linear"])


def vera_config(params: VeraParams, setup: Setup | None = None):
    from peft import VeraConfig

    # save_projection: the random matrices go into the saved file, so the adapter reloads
    # exactly on any machine (not regenerated from a seed by a possibly different PRNG).
    return VeraConfig(task_type="CAUSAL_LM", r=params.r, d_initial=params.d_initial,
                      vera_dropout=params.vera_dropout, target_modules=targets(params.target_modules),
                      save_projection=True)


@dataclass
class AdaLoraParams(LoraTraining):
    init_r: int = param(
        12,
        label="Starting rank per layer",
        help="Every layer starts with this rank; during training AdaLoRA takes rank away from "
        "layers where it matters least and keeps it where it helps.",
        target="peft", min=1, max=256, step=1,
    )
    target_r: int = param(
        8,
        label="Final average rank",
        help="The average rank per layer left at the end: the total budget. Lower = smaller "
        "adapter; the budget is spent where the model needs it.",
        target="peft", min=1, max=256, step=1,
    )
    lora_alpha: int = param(
        32,
        label="Alpha",
        help="Strength of the learned change; as in LoRA, higher = bigger changes per step.",
        target="peft", min=1, max=1024, step=1,
    )
    tinit_fraction: float = param(
        0.1,
        label="Warm-up before pruning (share of training)",
        help="Share of the run trained at the full starting rank before any rank is taken "
        "away, so the importance scores are measured on a model that has started to learn.",
        target="studio", min=0.0, max=0.8, step=0.05, advanced=True,
    )
    tfinal_fraction: float = param(
        0.2,
        label="Settle after pruning (share of training)",
        help="Share of the run at the end trained with the final ranks fixed, to polish them.",
        target="studio", min=0.0, max=0.8, step=0.05, advanced=True,
    )
    deltaT: int = param(
        1,
        label="Re-allocate every N steps",
        help="How often the rank budget is re-allocated between layers while pruning.",
        target="peft", min=1, max=1000, step=1, advanced=True,
    )
    target_modules: str = param("all-linear", label="Where to adapt", help=TARGET_HELP,
                                target="peft", choices=["attention", "all-linear"])


def check_adalora(params: AdaLoraParams) -> None:
    """AdaLoRA prunes from the starting rank down to the final average: a final rank as large as the
    starting one leaves nothing to prune, and PEFT's pruning stopped the run at its first budget step
    ("kthvalue(): selected number k out of range")."""
    if params.target_r >= params.init_r:
        raise ConfigError(f"parameter 'target_r': the final average rank ({params.target_r}) must be below the "
                          f"starting rank ({params.init_r}), which AdaLoRA prunes down to it; for a fixed rank use "
                          "LoRA")


def adalora_config(params: AdaLoraParams, setup: Setup | None = None):
    from peft import AdaLoraConfig

    setup = setup or Setup()
    total = max(setup.total_steps, 3)
    tinit = int(total * params.tinit_fraction)
    tfinal = int(total * params.tfinal_fraction)
    if tinit + tfinal >= total:  # PEFT needs at least one step where the budget moves
        tinit, tfinal = 0, 0
    return AdaLoraConfig(task_type="CAUSAL_LM", init_r=params.init_r, target_r=params.target_r,
                         lora_alpha=params.lora_alpha, tinit=tinit, tfinal=tfinal, deltaT=params.deltaT,
                         total_step=total, target_modules=targets(params.target_modules))


def orthogonality(model):
    """AdaLoRA's orthogonality regulariser (Zhang et al. 2023, "AdaLoRA", eq. 4), as PEFT's AdaLoraModel.forward
    computes it: its weight x the mean over the adapter's A and B matrices of ||P P^T - I||_F. None for any
    other model. PEFT adds it to the model's own loss, which TRL's SFTTrainer never reads (it builds the loss
    from the answer tokens' log-probabilities): every AdaLoRA run trained without it."""
    import torch
    from peft.tuners.adalora import AdaLoraModel

    base = getattr(model, "base_model", None)
    if not isinstance(base, AdaLoraModel):
        return None
    name = base.trainable_adapter_name
    weight = base.peft_config[name].orth_reg_weight
    terms = []
    for key, p in base.model.named_parameters():
        if ("lora_A" in key or "lora_B" in key) and name in key and p.numel():
            cov = p @ p.T if "lora_A" in key else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)))
    return weight * torch.stack(terms).mean() if terms and weight > 0 else None


RANKS = "adalora_ranks.json"  # in a checkpoint: the rank pattern AdaLoRA had settled on
# ... and the importance it measured (the smoothed sensitivity and uncertainty of every adapter weight, which
# choose the ranks kept): without them a resumed run chose from a few steps' measures, not the whole run's
IMPORTANCE = "adalora_importance.safetensors"
SCORES = ("exp_avg_ipt", "exp_avg_unc")


def save_importance(model, folder) -> None:
    """The rank allocator's smoothed scores into a checkpoint folder (nothing before its first step)."""
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    tensors = {f"{kind}/{name}": value.detach().contiguous().cpu() for kind in SCORES
               for name, value in (getattr(allocator, kind, None) or {}).items()}
    if tensors:
        from safetensors.torch import save_file

        save_file(tensors, str(Path(folder) / IMPORTANCE))


def load_importance(model, folder) -> bool:
    """The scores a checkpoint kept, back in the rank allocator (PEFT starts them at zero for a name it has no
    `ipt` for: one is set too). False: none kept (a checkpoint from before its first step, or an older one)."""
    saved = Path(folder) / IMPORTANCE
    allocator = getattr(getattr(model, "base_model", None), "rankallocator", None)
    if allocator is None or not saved.exists():
        return False
    import torch
    from safetensors.torch import load_file

    params = dict(model.base_model.model.named_parameters())  # (named as the allocator reads them: from its model)
    for key, value in load_file(str(saved)).items():
        kind, name = key.split("/", 1)
        if name in params:
            getattr(allocator, kind)[name] = value.to(params[name].device, params[name].dtype)
            allocator.ipt.setdefault(name, torch.zeros_like(params[name]))
    return True


@contextlib.contextmanager
def unresized(model, folder):
    """A checkpoint of an AdaLoRA model at its full starting rank, its rank pattern kept beside it (RANKS).
    PEFT saves an adapter cut down to its pattern, which is right for the result but not for a checkpoint:
    a resumed run loaded the cut weights into the full-rank model its optimizer's moments belong to, and in
    the final phase masked them by a pattern it no longer had (it failed at the first step of every resume)."""
    config = getattr(model, "peft_config", {}).get("default")
    adalora = type(config).__name__ == "AdaLoraConfig"
    if adalora:  # (also before a pattern is settled on: the scores count from the first step)
        Path(folder).mkdir(parents=True, exist_ok=True)
        save_importance(model, folder)
    pattern = getattr(config, "rank_pattern", None) if adalora else None
    if pattern is None:
        yield
        return
    import json

    (Path(folder) / RANKS).write_text(json.dumps(pattern))
    config.rank_pattern = None
    try:
        yield
    finally:
        config.rank_pattern = pattern


def adalora_callbacks(model, params):
    """AdaLoRA only moves its rank budget if someone calls `update_and_allocate` after each
    optimizer step, with the gradients still present; the HF Trainer never does on its own."""
    from transformers import TrainerCallback

    class RankAllocation(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # a resumed run: the ranks its checkpoint had settled on (`unresized`), once its weights are in
            import json
            from pathlib import Path

            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.global_step and (checkpoint / RANKS).exists():
                model.peft_config["default"].rank_pattern = json.loads((checkpoint / RANKS).read_text())
            if state.global_step:
                load_importance(model, checkpoint)

        def on_optimizer_step(self, args, state, control, **kwargs):
            # after optimizer.step(), before zero_grad(): PEFT's documented place
            model.base_model.update_and_allocate(state.global_step)

    return [RankAllocation()]


@dataclass
class LycorisParams(LoraTraining):
    r: int = param(8, label="Rank", help="Size of the learned change; LoHa and LoKr express more "
                   "with a given rank than LoRA, so 4-16 is usually enough.",
                   target="peft", min=1, max=256, step=1)
    alpha: int = param(8, label="Alpha", help="Strength of the learned change relative to the "
                       "rank (alpha / rank); equal to the rank is the usual start.",
                       target="peft", min=1, max=1024, step=1)
    module_dropout: float = param(
        0.0, label="Module dropout",
        help="Chance of switching a whole layer's change off for a step, so the model does not "
        "lean on one layer. Try 0.05-0.1 if held-out loss rises while training loss falls.",
        target="peft", min=0.0, max=0.5, step=0.01, advanced=True)
    target_modules: str = param("all-linear", label="Where to adapt", help=TARGET_HELP,
                                target="peft", choices=["attention", "all-linear"])


def loha_config(params: LycorisParams, setup: Setup | None = None):
    from peft import LoHaConfig

    return LoHaConfig(task_type="CAUSAL_LM", r=params.r, alpha=params.alpha,
                      module_dropout=params.module_dropout, target_modules=targets(params.target_modules))


@dataclass
class LokrParams(LycorisParams):
    decompose_both: bool = param(
        False, label="Factor both sides",
        help="Also split the smaller Kronecker factor into two low-rank matrices: even fewer "
        "weights, a little less expressive.",
        target="peft", advanced=True)


def lokr_config(params: LokrParams, setup: Setup | None = None):
    from peft import LoKrConfig

    return LoKrConfig(task_type="CAUSAL_LM", r=params.r, alpha=params.alpha, module_dropout=params.module_dropout,
                      decompose_both=params.decompose_both, target_modules=targets(params.target_modules))

