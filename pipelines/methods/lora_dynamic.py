"""LoRA variants that change what a training step does, on PEFT's LoRA layers:

- DyLoRA (Valipour et al. 2023, "DyLoRA: Parameter-Efficient Tuning of Pre-trained Models using
  Dynamic Search-Free Low-Rank Adaptation"): each step trains the adapter truncated to a random rank
  b between a minimum and the full rank (the first b rows of A and columns of B, scaled by α/b), so
  every truncation of the one adapter works on its own. The studio saves it truncated to the rank you
  choose, as a plain LoRA adapter of that rank (mergeable, exportable). All components up to b learn
  (the paper's un-frozen variant).
- Delta-LoRA (Zi et al. 2023, "Delta-LoRA: Fine-Tuning High-Rank Parameters with the Delta of
  Low-Rank Matrices"): after each optimizer step the frozen base weight also moves, by λ times the
  change of the adapter's product: W ← W + λ·s·(B'A' − BA). It needs no gradient or optimizer state
  for W; the base weights change, so the result is a whole model (base + adapter folded in)."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from pipelines.methods.lora import LoraParams
from pipelines.methods.params import ConfigError, param

# ---- DyLoRA -----------------------------------------------------------------------------------


@dataclass
class DyLoraParams(LoraParams):
    min_rank: int = param(
        1, label="Smallest rank trained",
        help="Each step trains the adapter cut to a random rank between this and the full rank, so that every "
        "cut in that range works on its own.",
        target="studio", min=1, max=512, step=1, advanced=True)
    export_rank: int = param(
        8, label="Rank to save",
        help="The finished adapter is saved cut to this rank, as an ordinary LoRA adapter: smaller and faster "
        "than the full rank, with no retraining. Anything between the smallest rank and the full rank works.",
        target="studio", min=1, max=512, step=1)


def check_dylora(params) -> None:
    if not params.min_rank <= params.export_rank <= params.r:
        raise ConfigError(f"DyLoRA needs smallest rank ≤ rank to save ≤ rank; got {params.min_rank}, "
                          f"{params.export_rank} and {params.r}")


def _lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer) and "default" in m.lora_A]


class RankTruncation:
    """Forward hooks on every LoRA layer's A: keep the first b of its r outputs and rescale the
    layer's α/r to α/b (α/√b with rsLoRA). While training b is drawn per step; in eval mode it is
    the rank to save, so held-out losses and the saved adapter agree."""

    def __init__(self, model, params):
        self.params, self.rank = params, params.export_rank
        self.handles = [layer.lora_A["default"].register_forward_hook(self._hook(layer.r["default"]))
                        for layer in _lora_layers(model)]

    def draw(self, step: int) -> None:
        # a pure function of the step: a resumed run trains the same ranks
        self.rank = random.Random(self.params.seed * 1_000_003 + step).randint(self.params.min_rank, self.params.r)

    def _hook(self, r: int):
        import torch

        def cut(module, _inputs, out):
            b = min(self.rank if module.training else self.params.export_rank, r)
            if b >= r:
                return out
            factor = math.sqrt(r / b) if self.params.use_rslora else r / b
            keep = torch.zeros(r, dtype=out.dtype, device=out.device)
            keep[:b] = factor
            return out * keep
        return cut


def dylora_callbacks(model, params):
    from transformers import TrainerCallback

    truncation = RankTruncation(model, params)

    class DrawRank(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            truncation.draw(state.global_step)

    return [DrawRank()]


def save_dylora(model, out: Path, params) -> None:
    """The adapter cut to the rank to save: a plain PEFT LoRA of rank k whose α/k is DyLoRA's scale at b = k."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    # a run continued from a DyLoRA parent trains the parent's saved rank: it cannot save a larger one
    k = min(params.export_rank, model.peft_config["default"].r)
    model.save_pretrained(str(out))  # config, README; the weights are rewritten below
    state = get_peft_model_state_dict(model)
    cut = {}
    for name, tensor in state.items():
        if "lora_A" in name:
            tensor = tensor[:k]
        elif "lora_B" in name:
            tensor = tensor[:, :k]
        cut[name] = tensor.contiguous()
    save_file(cut, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = json.loads((out / "adapter_config.json").read_text())
    config["r"] = k
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))


# ---- Delta-LoRA -------------------------------------------------------------------------------


@dataclass
class DeltaLoraParams(LoraParams):
    delta_scale: float = param(
        2.0, label="Base update ratio (λ)",
        help="After each step the model's own weights move by this many times the change of the adapter. "
        "The paper uses 2; 0 is plain LoRA.",
        target="studio", min=0.0, max=10.0, step=0.5)
    delta_start: int = param(
        0, label="Start after N steps",
        help="Steps of plain LoRA before the model's own weights start moving along (the paper waits 500 "
        "steps on large data sets, so the adapter's direction is settled first).",
        target="studio", min=0, max=100000, step=1, advanced=True)


def plain_layers_only(label: str):
    """check_model for a method that works on each LoRA layer's plain weight matrix (DyLoRA's rank cut, Delta-LoRA's
    moved base weights): a mixture-of-experts model whose experts sit in one tensor has LoRA on those tensors too
    (all-linear), which they cannot handle (AttributeError, or a shape mismatch mid-run)."""
    def check(config) -> None:
        from pipelines.methods.elsewhere import experts

        if experts(config):
            raise ConfigError(f"{label} works on plain weight matrices, and this mixture-of-experts model "
                              f"({config.model_type}) keeps its experts in one tensor; use LoRA")
    return check


def check_delta(params) -> None:
    if params.lora_dropout:
        raise ConfigError("Delta-LoRA needs dropout 0: the base weights follow the adapter's change, which "
                          "dropout would make a different function from the one that learned")


DELTA_BASE = "delta_base.safetensors"  # in each checkpoint: the base weights as the adapter moved them


def delta_callbacks(model, params):
    import torch
    from peft.utils import transpose
    from safetensors.torch import load_file, save_file
    from transformers import TrainerCallback

    from pipelines.methods.params import ConfigError

    wanted = set(_lora_layers(model))
    named = [(name, m) for name, m in model.named_modules() if m in wanted]
    layers = [m for _name, m in named]

    class FollowTheAdapter(TrainerCallback):
        before: list = []

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            if state.global_step >= params.delta_start:
                self.before = [(layer.lora_A["default"].weight.detach().clone(),
                                layer.lora_B["default"].weight.detach().clone()) for layer in layers]

        def on_optimizer_step(self, args, state, control, **kwargs):
            if not self.before:
                return
            with torch.no_grad():
                for layer, (a, b) in zip(layers, self.before):
                    a2, b2 = layer.lora_A["default"].weight, layer.lora_B["default"].weight
                    scale = params.delta_scale * layer.scaling["default"]
                    weight = layer.get_base_layer().weight
                    # GPT-2's Conv1D holds its weight transposed (in x out): the change as it holds it
                    change = transpose(b2 @ a2 - b @ a, layer.fan_in_fan_out)
                    weight.add_(change.to(weight.dtype), alpha=scale)
            self.before = []

        def on_save(self, args, state, control, **kwargs):
            # a checkpoint of a PEFT model holds the adapter only: the moved base weights go beside it
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                save_file({name: m.get_base_layer().weight.detach().contiguous() for name, m in named},
                          str(folder / DELTA_BASE))

        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                return
            saved = Path(args.output_dir) / f"checkpoint-{state.global_step}" / DELTA_BASE
            if not saved.exists():
                raise ConfigError(f"the checkpoint at step {state.global_step} has no {DELTA_BASE}: Delta-LoRA "
                                  "cannot resume without the base weights it moved; start the run again")
            weights = load_file(str(saved))
            with torch.no_grad():
                for name, m in named:
                    m.get_base_layer().weight.copy_(weights[name])

    return [FollowTheAdapter()]


def save_merged(model, out: Path, params) -> None:
    """The base weights moved too: the result is the whole model with the adapter folded in."""
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out))
