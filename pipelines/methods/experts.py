"""ESFT (Wang et al. 2024, "Let the Expert Stick to His Last: Expert-Specialized Fine-Tuning for Sparse
Architectural Large Language Models"): in a mixture-of-experts model, train only the experts your data
is routed to most; attention, the routers, shared experts and every other expert stay as they were.

Relevance, measured on the training rows before the first step (as the authors' scripts do, on a sample
of `score_tokens` tokens), from the experts each layer's router really picks for each token and their
routing weights, read where it hands them to the experts:
  token selection ratio of expert e = (tokens that picked e) / (k * tokens)     [ESFT-Token]
  average gate score of expert e   = (sum of e's routing weights) / (sum of all) [ESFT-Gate]
both summing to 1 over a layer's experts. Per layer, experts in order of relevance are taken until
their relevance adds up to `expert_threshold` (the paper's p; 0.2 in the authors' scripts).

Transformers 5 keeps a layer's experts in one tensor per projection ([experts, ...]): every expert
tensor trains, and a gradient hook zeroes the rows of the experts not chosen. With no weight decay,
AdamW never moves those rows (their moments stay 0, and so does 0 / (sqrt(0) + eps)). The optimizer's
moments cover whole tensors, so memory is that of training every expert; the estimate counts them all.
The choice is saved beside the run (experts.json) and read back on resume."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.methods.full import FullParams
from pipelines.methods.params import ConfigError, param, with_defaults

CHOICE = "experts.json"  # in the run folder: which experts train, and each one's relevance
SCORES = {"token": "the share of tokens routed to the expert (ESFT-Token, the authors' default)",
          "gate": "the share of routing weight the expert receives (ESFT-Gate)"}

# few weights move (a few experts per layer): the paper trains at 1e-5 on large sets; the studio's small
# sets need more
EsftTraining = with_defaults(FullParams, "EsftTraining", learning_rate=5e-5)


@dataclass
class EsftParams(EsftTraining):
    expert_threshold: float = param(
        0.2, label="Share of routing to cover",
        help="In each layer, the most-used experts are chosen until together they take this share of your "
        "data's routing. Higher = more experts learn (more change, more forgetting); the authors use 0.2.",
        target="studio", min=0.01, max=1.0, step=0.05)
    expert_score: str = param(
        "token", label="Relevance measure", help="How an expert's use by your data is measured.",
        target="studio", choices=list(SCORES), choice_help=SCORES, advanced=True)
    score_tokens: int = param(
        8192, label="Tokens to measure",
        help="How many training tokens are run through the model to measure which experts they use.",
        target="studio", min=16, max=1_000_000, step=1, advanced=True)


def expert_modules(model) -> list:
    """Each mixture-of-experts layer's experts (one module holding them all), in order."""
    return [m for n, m in model.named_modules() if n.endswith(".experts") and hasattr(m, "num_experts")]


def expert_tensors(model) -> list[list]:
    """Per mixture-of-experts layer, in order: its experts' weight tensors ([experts, ...] each)."""
    layers = [[p for p in m.parameters(recurse=False) if p.dim() >= 2 and p.shape[0] == m.num_experts]
              for m in expert_modules(model)]
    return [tensors for tensors in layers if tensors]


def _no_experts(model_type: str) -> ConfigError:
    return ConfigError(f"ESFT trains the experts of a mixture-of-experts model, and {model_type} has none: use "
                       "Freeze tuning or LoRA for a dense model")


def check_model(config) -> None:
    """Refused before a run starts: a model whose configuration declares no experts."""
    from pipelines.methods.elsewhere import experts

    if not experts(config):
        raise _no_experts(config.model_type)


def train_experts(model, params) -> None:
    """Every expert tensor learns (the gradient hooks narrow it to the chosen experts); nothing else."""
    layers = expert_tensors(model)
    if not layers:
        raise _no_experts(model.config.model_type)
    for p in model.parameters():
        p.requires_grad_(False)
    for tensors in layers:
        for p in tensors:
            p.requires_grad_(True)


def tally(picked, weights, experts: int, score: str):
    """Per expert: how many of the tokens' picks chose it ("token"), or the routing weight it received
    ("gate"), from each token's chosen experts ([tokens, k]) and their routing weights ([tokens, k])."""
    import torch

    add = None if score == "token" else torch.as_tensor(weights, dtype=torch.float64).reshape(-1).cpu()
    return torch.bincount(torch.as_tensor(picked).reshape(-1).cpu(), weights=add, minlength=experts).double()


def shares(totals) -> list[float]:
    """A layer's tallies as shares summing to 1: each expert's relevance."""
    return (totals / (totals.sum() or 1.0)).tolist()


def relevance(picked, weights, experts: int, score: str) -> list[float]:
    """One layer's relevance per expert from each token's chosen experts and their routing weights."""
    return shares(tally(picked, weights, experts, score))


def choose(scores: list[float], threshold: float) -> list[int]:
    """The most relevant experts, in order, until their relevance reaches `threshold` (at least one;
    never one that no token uses)."""
    chosen, covered = [], 0.0
    for e in sorted(range(len(scores)), key=lambda e: (-scores[e], e)):
        if covered >= threshold - 1e-9 or (chosen and scores[e] <= 0):
            break
        chosen.append(e)
        covered += scores[e]
    return chosen


def measure(model, batches, params) -> list[list[float]]:
    """Each mixture-of-experts layer's relevance per expert over up to `score_tokens` training tokens.

    What each layer's router really chose is read where it hands the tokens to the experts
    (`experts(hidden, top_k_index, top_k_weights)`), so any router (softmax or sigmoid, grouped, with a
    bias, normalised weights) is measured as it routes."""
    import torch

    modules = expert_modules(model)
    totals = [torch.zeros(m.num_experts, dtype=torch.float64) for m in modules]
    state = {"keep": None, "tokens": 0}

    def record(layer):
        def hook(_module, args, kwargs):
            ids = args[1] if len(args) > 1 else kwargs["top_k_index"]
            weights = args[2] if len(args) > 2 else kwargs["top_k_weights"]
            keep = state["keep"]
            if keep is not None and len(keep) == len(ids):  # padding tokens route too: not counted
                ids, weights = ids[keep], weights[keep]
            totals[layer] += tally(ids, weights, len(totals[layer]), params.expert_score)
        return hook

    handles = [m.register_forward_pre_hook(record(i), with_kwargs=True) for i, m in enumerate(modules)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items() if k != "labels"}
                mask = inputs.get("attention_mask")
                state["keep"] = mask.reshape(-1).bool() if mask is not None else None
                model(**inputs, use_cache=False, logits_to_keep=1)  # the routing, not the vocabulary's logits
                state["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
                if state["tokens"] >= params.score_tokens:
                    break
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [shares(t) for t in totals]


def restrict(layers: list[list], chosen: list[list[int]]) -> None:
    """Zero the gradient of every expert not chosen, in each layer's expert tensors."""
    import torch

    for tensors, keep in zip(layers, chosen):
        for p in tensors:
            mask = torch.zeros(p.shape[0], *([1] * (p.dim() - 1)), dtype=torch.bool, device=p.device)
            mask[keep] = True
            # where, not a product: an inf or NaN in an unchosen row's gradient must not reach its weights
            p.register_hook(lambda grad, mask=mask: torch.where(mask, grad, torch.zeros((), dtype=grad.dtype,
                                                                                         device=grad.device)))


def esft_callbacks(model, params) -> list:
    from transformers import TrainerCallback

    class ChooseExperts(TrainerCallback):
        """Before the first step: measure (or, on resume, read back) which experts train."""

        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
            from pipelines.events import write_json

            path = Path(args.output_dir).parent / CHOICE
            layers = expert_tensors(model)
            if path.exists():
                chosen = json.loads(path.read_text())["experts"]
            elif state.global_step:  # measured again on a partly trained model, it could choose others
                raise RuntimeError(f"ESFT resumes at step {state.global_step} but {path} (which experts learn) "
                                   "is missing")
            else:
                scores = measure(model, train_dataloader, params)
                chosen = [choose(s, params.expert_threshold) for s in scores]
                write_json(path, {"score": params.expert_score, "threshold": params.expert_threshold,
                                  "experts": chosen, "relevance": [[round(v, 4) for v in s] for s in scores]})
            restrict(layers, chosen)
            experts = layers[0][0].shape[0] if layers else 0
            trained = sum(map(len, chosen))
            print(f"ESFT: {trained} of {experts * len(chosen)} experts learn "
                  f"({', '.join(f'layer {i}: {c}' for i, c in enumerate(chosen))})", flush=True)

    return [ChooseExperts()]
