"""BAdam (Luo et al. 2024, "BAdam: A Memory Efficient Full Parameter Optimization Method for Large
Language Models"): full-weight training one transformer block at a time. Every `switch_every`
optimizer steps the next block becomes the only one that learns; Adam's moments, an fp32 copy and
gradients exist only for that block, so the optimizer's memory is a block's, not the model's.

The PyPI package `badam` (the authors' BlockOptimizer) does the block switching. The studio adds what
a resumable run needs: the optimizer's saved state records which block was learning, where the block
order stood and how many steps it took, and loading it re-creates that block's fp32 copy from the
resumed weights (badam alone would restart at its first block and overwrite the resumed block with
the weights it copied before the checkpoint was loaded), and gives every block K steps per turn
(badam's first turn is one step)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from pipelines.methods.full import FullParams
from pipelines.methods.params import param, with_defaults

# one block at a time learns: a full-tuning-sized step suits it (the paper fine-tunes Llama 2 at 1e-5 to 1e-6
# on large data; the studio's small sets need a few times more)
BAdamTraining = with_defaults(FullParams, "BAdamTraining", learning_rate=5e-5)
ORDERS = {"ascending": "first block to last, then again", "descending": "last block to first, then again",
          "random": "a fresh random order each round (the paper's random reshuffling)"}


@dataclass
class BAdamParams(BAdamTraining):
    switch_every: int = param(
        10, label="Steps per block",
        help="How many optimizer steps one block learns before the next one takes over. The paper uses 50-100 "
        "on large data sets; on a few hundred examples a smaller number lets every block learn within an epoch.",
        target="studio", min=1, max=100000, step=1)
    switch_mode: str = param(
        "ascending", label="Block order",
        help="In which order the blocks take their turns.", target="studio", choices=list(ORDERS),
        choice_help=ORDERS, advanced=True)


def _blocks(model) -> list[str]:
    """The name prefix of each transformer block, in order (embeddings and the output layer stay frozen)."""
    from pipelines.methods.full import decoder_blocks

    name, blocks = decoder_blocks(model)
    return [f"{name}.{i}." for i in range(len(blocks))]


def first_block_only(model, params) -> None:
    """What learns before the optimizer takes over: the first block (also what the memory estimate
    probes: with the first block learning, backward runs through every block above it)."""
    first = _blocks(model)[0]
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(first))


def block_optimizer(model, params):
    import torch
    from badam import BlockOptimizer

    class StudioBlockOptimizer(BlockOptimizer):
        def step(self, *args, **kwargs):
            # badam switches after steps 1, 1 + K, 1 + 2K, ...: the first block got one step. Here every turn is
            # K steps. (No ZeRO-3 path: the studio runs optimizer-owning methods in one process or under DDP.)
            self.step_single_gpu(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # as badam does: the old block's fp32 copy and moments are freed
            if self.global_step % self.switch_block_every == 0:
                self.switch_trainable_params()

        def switch_trainable_params(self, verbose=None):
            self.active_block = self.current_block_idx  # badam moves current_block_idx on to the next one
            super().switch_trainable_params(verbose=0)

        def studio_state_dict(self):
            state = self.base_optimizer.state_dict()
            state["badam"] = {"active": self.active_block, "next": self.current_block_idx,
                              "order": list(getattr(self, "block_order", [])), "step": self.global_step}
            return state

        def load_state_dict(self, state):
            state = dict(state)
            info = state.pop("badam", None)
            if info is not None:  # back to the block that was learning, its fp32 copy from the resumed weights
                self.current_block_idx = info["active"]
                self.switch_trainable_params()
                self.current_block_idx, self.block_order, self.global_step = info["next"], info["order"], info["step"]
            self.base_optimizer.load_state_dict(state)

    blocks = _blocks(model)
    torch.manual_seed(params.seed)  # the random block order (badam draws it with torch's generator)
    base = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=params.learning_rate,
                             weight_decay=0.0)
    with warnings.catch_warnings():  # badam warns that fp32 weights cost memory: the studio trains in fp32 on CPUs
        warnings.simplefilter("ignore", UserWarning)
        optimizer = StudioBlockOptimizer(base_optimizer=base, named_parameters_list=list(model.named_parameters()),
            block_prefix_list=[[b] for b in blocks], switch_block_every=params.switch_every,
            switch_mode=params.switch_mode, start_block=0 if params.switch_mode == "ascending" else None, verbose=0)
    optimizer.state_dict = optimizer.studio_state_dict  # badam binds the base optimizer's there
    return optimizer


def state_bytes(model_path: str, params) -> int:
    """Adam's two fp32 moments and the fp32 working copy of the largest block: 12 bytes per weight,
    counted on the model's shapes (meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path))
    sizes = {prefix: 0 for prefix in _blocks(model)}
    for name, p in model.named_parameters():
        for prefix in sizes:
            if name.startswith(prefix):
                sizes[prefix] += p.numel()
    return 12 * max(sizes.values())
