"""Models merged with each other, through mergekit (arcee-ai/mergekit): a weighted average, SLERP,
task arithmetic, TIES and DARE. Each method is declared once with help for a non-expert; the UI,
the CLI and the check before a job starts read it from here.

Merging works weight by weight, so every model must have the same architecture and shapes (the
same base model, tuned in different ways, is the usual case).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipelines.export import ExportError, atomic_folder, run_stoppable
from pipelines.export.merge import folder_bytes


@dataclass(frozen=True)
class MergeMethod:
    key: str  # mergekit's name
    label: str
    summary: str
    needs_base: bool  # works on each model's difference from a common base model
    uses_weights: bool
    uses_density: bool
    uses_t: bool = False
    weights_help: str = ""  # what a weight typed for a model does (the Export tab's and the CLI's help)


MERGE_METHODS = {m.key: m for m in [
    MergeMethod("linear", "Weighted average",
                "Averages the models' weights, each with the weight you give it. Simple and predictable; "
                "works best when the models started from the same base.",
                needs_base=False, uses_weights=True, uses_density=False,
                weights_help="How much each model counts (shares, made to add up to 1); empty = equal shares."),
    MergeMethod("slerp", "SLERP (two models)",
                "Moves from the first model towards the second along a curve rather than a straight line, "
                "which keeps the weights' size the way the models had it. The interpolation factor t says "
                "how far: 0 = the first model, 1 = the second, 0.5 = halfway. Often the best way to blend "
                "a tuned model back with its base to keep general skills.",
                needs_base=False, uses_weights=False, uses_density=False, uses_t=True),
    MergeMethod("task_arithmetic", "Task arithmetic",
                "Takes what each tuned model learned (its weights minus the base's) and adds those changes "
                "to the base, scaled by each model's weight. Combines skills learned separately; a weight "
                "below 0 removes a behaviour instead.",
                needs_base=True, uses_weights=True, uses_density=False,
                weights_help="Each tuned model's change is scaled by its weight and added to the base (1 = its "
                "whole change, below 0 removes it); empty = equal shares of the tuned models."),
    MergeMethod("ties", "TIES",
                "Task arithmetic that first keeps only each model's largest changes (the density: 0.5 keeps "
                "the top half) and, where models disagree on the direction of a change, follows the "
                "majority. Less interference than plain addition when merging several models.",
                needs_base=True, uses_weights=True, uses_density=True,
                weights_help="Typed, each tuned model's kept changes are scaled by its weight and added up (1, 1 adds "
                "both whole where they agree; below 0 removes a change). Empty = the TIES paper's merge: each kept "
                "change averaged over the models that agree on its sign."),
    MergeMethod("dare_ties", "DARE",
                "Drops a random share of each model's changes (keeping the density: 0.5 keeps half) and "
                "scales the rest up to make up for it, then merges like TIES. Tuned models' changes are "
                "highly redundant, so most can go; good for merging many models.",
                needs_base=True, uses_weights=True, uses_density=True,
                weights_help="Each tuned model's kept, scaled-up changes are scaled again by its weight and added "
                "up (below 0 removes a change); empty = equal shares of the tuned models."),
]}

_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "vocab_size")


def check(method: str, models: list[str], base: str | None, weights: list[float] | None = None,
          t: float = 0.5, density: float = 0.5) -> MergeMethod:
    """Refuse, in one sentence, settings that cannot work, before any job starts. `models` and `base`
    name the models (refs or folders); check_same_shape looks at their configs."""
    if method not in MERGE_METHODS:
        raise ExportError(f"unknown merge method '{method}'; choose one of {', '.join(MERGE_METHODS)}")
    spec = MERGE_METHODS[method]
    twice = [m for m in dict.fromkeys(models) if models.count(m) > 1]
    if twice:
        raise ExportError(f"{twice[0]} is named twice; a merge takes each model once (its weight says how much)")
    if spec.uses_t and len(models) != 2:
        raise ExportError(f"SLERP blends exactly two models; {len(models)} were given")
    if spec.needs_base and not base:
        raise ExportError(f"{spec.label} adds each model's changes to a base model; pick the base they were "
                          "tuned from")
    if not spec.needs_base and len(models) < 2:
        raise ExportError(f"{spec.label} needs at least two models; {len(models)} given")
    if spec.needs_base and not [m for m in models if m != base]:
        raise ExportError(f"{spec.label} needs at least one tuned model besides the base")
    if weights is not None and spec.uses_weights:
        if len(weights) != len(models):
            raise ExportError(f"{len(weights)} weights for {len(models)} models; give one weight per model")
        if not all(math.isfinite(w) for w in weights):
            raise ExportError("every weight must be a finite number")
        if method == "linear" and sum(weights) <= 0:
            raise ExportError("the weights of a weighted average must add up to more than 0")
    if spec.uses_t and not (math.isfinite(t) and 0 <= t <= 1):
        raise ExportError(f"the interpolation factor t must be between 0 and 1; got {t}")
    if spec.uses_density and not (math.isfinite(density) and 0 < density <= 1):
        raise ExportError(f"the density must be more than 0 and at most 1; got {density}")
    return spec


def check_same_shape(folders: list[str]) -> None:
    shapes = {}
    for folder in folders:
        config = Path(folder) / "config.json"
        if not config.exists():
            raise ExportError(f"{folder} has no config.json; expected a Hugging Face model folder")
        # mergekit falls back to pickle weights (pytorch_model.bin) where there is no model.safetensors:
        # the studio loads safetensors only
        if not any((Path(folder) / name).exists() for name in ("model.safetensors", "model.safetensors.index.json")):
            raise ExportError(f"{folder} has no model.safetensors; merging reads safetensors weights only")
        try:
            found = json.loads(config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ExportError(f"{config} is not valid JSON ({err})") from None
        shapes[folder] = (tuple(found.get("architectures") or ()), *(found.get(k) for k in _SHAPE_KEYS))
    first, *rest = list(dict.fromkeys(folders))
    for other in rest:
        if shapes[other] != shapes[first]:
            raise ExportError(f"{other} and {first} differ in architecture or size; merging needs models "
                              "of the same shape (usually the same base model, tuned differently)")


def merge_models(method: str, models: list[str], out_dir: Path, base: str | None = None,
                 weights: list[float] | None = None, t: float = 0.5, density: float = 0.5,
                 seed: int = 0, cancelled=None) -> dict:
    """Write the merge of `models` (local folders) at `out_dir`, all or nothing. cancelled: a
    callable polled while mergekit works; once it says yes the merge stops with Cancelled (a cancel
    was only seen after the merge, minutes later on a big model)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    spec = check(method, models, base, weights, t, density)
    check_same_shape([*models, *([base] if base else [])])
    # equal shares of the models merged: for the methods that add changes to a base, of the tuned models
    # only (a share given to the base, which adds no change, was lost: task arithmetic of one tuned model
    # and its base kept half of what it learned)
    changes = [m for m in models if m != base] if spec.needs_base else models
    given = weights is not None
    weights = weights if weights is not None else [1.0 / len(changes) if m in changes else 0.0 for m in models]
    if spec.uses_t:
        base = models[0]  # mergekit's SLERP goes from its base model (t = 0) to the other
        entries = [{"model": m} for m in models]
        parameters = {"t": t}
    else:
        entries = []
        for model, weight in zip(models, weights):
            if model not in changes:
                continue  # the base is the starting point, not one of the changes added to it
            params = {"weight": weight}
            if spec.uses_density:
                params["density"] = density
            entries.append({"model": model, "parameters": params})
        # a weighted average's weights are shares; every other method's scale its model's change, as the tab
        # says (mergekit's TIES divides by the weights of the models that agree: one model's weight did
        # nothing, and a weight below 0 added the change it was meant to remove). Without weights, TIES is the
        # paper's: each kept change averaged over the models that agree on its sign
        parameters = ({"normalize": True} if method == "linear" else {"normalize": False} if method == "ties" and given
                      else {})
    config = {"merge_method": method, "models": entries, "dtype": _dtype(models[0])}
    if parameters:
        config["parameters"] = parameters
    if spec.needs_base or spec.uses_t:
        config["base_model"] = base
    options = MergeOptions(quiet=True, copy_tokenizer=True, random_seed=seed, trust_remote_code=False,
                           write_model_card=True)
    with atomic_folder(out_dir) as tmp:
        run_stoppable(lambda: run_merge(MergeConfiguration.model_validate(config), str(tmp), options), cancelled)
        if not (tmp / "tokenizer_config.json").exists():
            # mergekit logs a tokenizer it could not copy and goes on: a "completed" model that chat and GGUF
            # export then failed on. The tokenizer of the model it starts from, as a folder's own files
            from pipelines.export.merge import copy_tokenizer

            copy_tokenizer(Path(config.get("base_model") or models[0]), tmp)
    return {"folder": str(out_dir), "bytes": folder_bytes(out_dir), "config": config}


def _dtype(folder: str) -> str:
    found = json.loads((Path(folder) / "config.json").read_text())
    return str(found.get("dtype") or found.get("torch_dtype") or "float32")
