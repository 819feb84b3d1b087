"""MeZO: zeroth-order full-weight training with the memory of inference (Malladi et al., 2023,
"Fine-Tuning Language Models with Just Forward Passes", Algorithm 1).

Each step measures the loss twice on the same batch — with every weight nudged by +eps·z and by
-eps·z, z a random direction drawn from a seed — and moves the weights along z by the difference:
theta <- theta - lr · (L(theta + eps·z) - L(theta - eps·z)) / (2·eps) · z. No backward pass, no
gradients and no optimizer state are ever stored; z is regenerated from its seed instead of kept.
It needs many more steps than a gradient method: the help says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.full import FullParams
from pipelines.methods.params import param, with_defaults

# the paper fine-tunes OPT at 1e-6 to 1e-7 for 20k-100k steps; a 135M model on a small set takes 1e-5
MeZOTraining = with_defaults(FullParams, "MeZOTraining", learning_rate=1e-5, num_train_epochs=20.0,
                             per_device_train_batch_size=16)


@dataclass
class MeZOParams(MeZOTraining):
    zo_eps: float = param(
        1e-3, label="Nudge size",
        help="How far every weight is pushed each way (in random directions) to measure which way the "
        "loss falls. Too small and rounding hides the difference; too large and the measure is crude. "
        "The paper's 1e-3 works for most models.",
        target="studio", min=1e-6, max=1e-1, advanced=True)


def validate(params) -> None:
    from pipelines.methods.params import ConfigError

    if params.gradient_accumulation_steps != 1:
        raise ConfigError("parameter 'gradient_accumulation_steps': MeZO updates the weights after every batch, "
                          "so it accumulates nothing; leave it at 1 (a bigger batch size smooths its steps)")


def perturb(params, seed: int, scale: float) -> None:
    """theta += scale · z, with z ~ N(0, I) drawn again from `seed` (never stored)."""
    import torch

    generators = {}
    for p in params:
        gen = generators.get(p.device)
        if gen is None:
            gen = generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
        p.add_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype), alpha=scale)


def zo_step(params, loss, seed: int, eps: float, lr: float) -> tuple[float, float]:
    """One MeZO step in place (Algorithm 1): the loss at theta + eps·z and theta - eps·z, then
    theta <- theta - lr · slope · z with slope = (L+ - L-) / (2·eps). `loss()` measures the current
    weights. Returns (L+, L-)."""
    perturb(params, seed, eps)
    plus = float(loss())
    perturb(params, seed, -2 * eps)
    minus = float(loss())
    perturb(params, seed, eps)  # back where it started
    slope = (plus - minus) / (2 * eps)  # the loss's slope along z
    perturb(params, seed, -lr * slope)  # the same z, regenerated: a step down the slope
    return plus, minus


def trainer_class():
    """StudioSFTTrainer whose training step is MeZO's: two forward passes, an in-place update."""
    import torch

    from pipelines.sft_trainer import StudioSFTTrainer

    class MeZOTrainer(StudioSFTTrainer):
        zo_eps = 1e-3

        def training_step(self, model, inputs, num_items_in_batch=None):
            # both passes must measure the same function: dropout off (the model stays in training mode,
            # so the trainer's metrics still count as training ones)
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.eval()
            inputs = self._prepare_inputs(inputs)
            params = [p for p in model.parameters() if p.requires_grad]
            seed = int(torch.randint(0, 2**31 - 1, (1,)))
            with torch.no_grad():
                plus, minus = zo_step(params, lambda: self.compute_loss(model, inputs,
                                                                        num_items_in_batch=num_items_in_batch),
                                      seed, self.zo_eps, self.lr_scheduler.get_last_lr()[0])
            # the optimizer afterwards finds no gradient and changes nothing; the scheduler still steps
            return torch.tensor((plus + minus) / 2, device=self.args.device)

    return MeZOTrainer
