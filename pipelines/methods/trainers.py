"""Which TRL config and trainer classes a method's `trl` name means (imported on demand)."""

from __future__ import annotations

import os

# ORPO and CPO live in trl.experimental, which warns on every import; the studio pins TRL's version
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def trl_classes(name: str) -> tuple[type, type]:
    """(config class, trainer class) for 'sft', 'dpo', 'kto', 'grpo', 'reward', 'orpo' or 'cpo'."""
    if name == "sft":
        from trl import SFTConfig, SFTTrainer

        return SFTConfig, SFTTrainer
    if name == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if name == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    if name == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    if name == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    if name == "ppo":  # the studio's own loop (pipelines/ppo.py): TRL 1.x has no PPO; the shared settings
        from transformers import TrainingArguments  # keep transformers' names, there is no trainer class

        return TrainingArguments, None
    if name == "reward":
        from trl import RewardConfig, RewardTrainer

        return RewardConfig, RewardTrainer
    if name == "orpo":  # TRL 1.x keeps ORPO and CPO (SimPO is CPO's 'simpo' loss) in trl.experimental
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOConfig, ORPOTrainer
    if name == "cpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        return CPOConfig, CPOTrainer
    raise ValueError(f"unknown TRL trainer '{name}'")
