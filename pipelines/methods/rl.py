"""Reinforcement learning: the model writes its own replies and learns from their rewards.

GRPO (Group Relative Policy Optimization, DeepSeekMath, arXiv:2402.03300; TRL's `GRPOTrainer`):
for each prompt the model writes a group of replies, the reward functions (pipelines/rewards.py)
score them, and each reply's advantage is how much better it did than its group's average - no
value model needed. A clipped policy ratio (as in PPO) and a KL penalty keep each step small.

RLOO (REINFORCE Leave-One-Out, Ahmadian et al. 2024, arXiv:2402.14740; TRL's `RLOOTrainer`): the same
loop, each reply's baseline being the mean reward of the other replies to its prompt.

Field names are TRL's `GRPOConfig` / `RLOOConfig` ones. Training trains a LoRA adapter; the reference for the KL
penalty is the same weights with the adapter switched off.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.preference import LoraPreference
from pipelines.methods.lora import LoraFieldsNoDropout
from pipelines.methods.params import ConfigError, only, param, with_defaults
from pipelines.methods.training import PairStopping, Training

# Shared settings that mean something for RL. Batch = replies per step (TRL counts completions):
# 8 = two prompts with four replies each. The learning rate is a LoRA one (GRPO papers' 1e-6 is
# for full weights); bench/grpo_quality.py measured it on the built-in model.
# the shared Epochs spoke of examples repeated word for word: these methods write their own replies
RL_EPOCHS = ("How many times the model goes through your prompts, writing replies to each and learning from their "
             "rewards. More passes raise the reward further; too many and it can learn to game the checks (a reply "
             "that scores well without being good: read the table of its newest replies).")
RLTraining = only(Training, "RLTraining", ["learning_rate", "num_train_epochs", "per_device_train_batch_size",
                                            "gradient_accumulation_steps", "gradient_checkpointing",
                                            "save_steps", "seed"], helps={"num_train_epochs": RL_EPOCHS},
                  learning_rate=1e-4, num_train_epochs=1.0, per_device_train_batch_size=8, save_steps=10)

GRPO_LOSSES = {
    "dapo": "DAPO: every reply token counts the same across the batch, so long replies are not favoured "
            "(TRL's default)",
    "grpo": "the original GRPO: each reply's loss is averaged over its own tokens, which favours short "
            "right replies and long wrong ones",
    "dr_grpo": "Dr. GRPO: divides by a fixed length instead, removing GRPO's length bias",
    "bnpo": "like DAPO, counting tokens within each small batch only",
}
SCALES = {
    "group": "divide by the spread of rewards within each prompt's group (the original GRPO)",
    "batch": "divide by the spread across the whole batch (steadier when some prompts are easy)",
    "none": "do not divide (Dr. GRPO: avoids over-weighting prompts where all replies score alike)",
}


@dataclass
class SamplingFields:
    """What every method that writes its own replies to learn from shares (GRPO, RLOO)."""
    num_generations: int = param(
        4, label="Replies per prompt",
        help="How many replies the model writes to each prompt. They are scored and compared with each "
        "other: replies better than their group's average become more likely, worse ones less. More "
        "replies = a clearer signal but slower steps. The batch size must be a multiple of this.",
        target="trainer", min=2, max=64, step=1)
    max_completion_length: int = param(
        64, label="Longest reply (tokens)",
        help="Replies are cut at this many tokens while training. Longer allows more reasoning but every "
        "step writes this much per reply, which is most of an RL step's time.",
        target="trainer", min=8, max=4096, step=8)
    temperature: float = param(
        1.0, label="Variety while training",
        help="How adventurous the replies written for training are. The model only learns when replies "
        "to the same prompt differ in reward, so keep some variety: 0.7-1.0.",
        target="trainer", min=0.1, max=2.0, step=0.05)
    beta: float = param(
        0.04, label="KL leash",
        help="How strongly the model is held near where it started (the KL penalty). Higher = safer, "
        "smaller changes that keep its old manners; 0 = no leash (faster, but it may drift into odd text "
        "that games the reward). 0.04 is the GRPO paper's value.",
        target="trainer", min=0.0, max=1.0, step=0.01)
    num_iterations: int = param(
        1, label="Passes over each batch of replies",
        help="How many training steps learn from each batch of replies the model writes (the GRPO paper's μ). "
        "Each batch is written once, so 2 passes over half as many batches (half the epochs) take as many steps "
        "in less time: writing is a large part of each step (the estimate counts both). The later passes learn "
        "from replies an earlier version of the model wrote; Step clipping keeps them from pushing too far. "
        "1 = learn from each batch once.",
        target="trainer", min=1, max=8, step=1, advanced=True)
    epsilon: float = param(
        0.2, label="Step clipping",
        help="With more than one pass: how far a pass may move each reply's probability from where it was when "
        "the reply was written before it stops pushing (PPO's clip; 0.2 = 20%). Smaller = more careful passes. "
        "With one pass it never acts.", target="trainer", min=0.01, max=1.0, step=0.01, advanced=True)


@dataclass
class GRPOFields(SamplingFields):
    loss_type: str = param(
        "dapo", label="Loss", help="How the rewards of replies of different lengths are averaged. Keep "
        "'dapo' unless you follow a paper that uses another.", target="trainer",
        choices=list(GRPO_LOSSES), choice_help=GRPO_LOSSES, advanced=True)
    scale_rewards: str = param(
        "group", label="Reward scaling", help="How a reply's advantage over its group is scaled.",
        target="trainer", choices=list(SCALES), choice_help=SCALES, advanced=True)


@dataclass
class GRPOParams(LoraPreference, GRPOFields, RLTraining):
    pass


@dataclass
class RLOOFields(SamplingFields):
    normalize_advantages: bool = param(
        False, label="Normalise advantages",
        help="Divide each batch's advantages by their spread. Off follows the RLOO paper; on can steady "
        "training when rewards are on very different scales.", target="trainer", advanced=True)


@dataclass
class RLOOParams(LoraPreference, RLOOFields, RLTraining):
    pass


def check_grpo(params) -> None:
    """TRL groups each prompt's replies inside one batch: the replies per step must hold whole groups. A clip set
    for one pass over each batch would change nothing (the ratio it bounds is 1): refused, not ignored."""
    if params.num_iterations == 1 and params.epsilon != SamplingFields.epsilon:
        raise ConfigError(f"parameter 'epsilon': Step clipping ({params.epsilon:g}) acts only with more than one pass "
                          "over each batch of replies; raise 'Passes over each batch of replies' (num_iterations), "
                          "or leave the clip at its 0.2")
    replies = params.per_device_train_batch_size * params.gradient_accumulation_steps
    if replies % params.num_generations:
        raise ConfigError(f"parameter 'num_generations': {params.num_generations} replies per prompt do not divide "
                          f"the {replies} replies of a step (batch size {params.per_device_train_batch_size} x "
                          f"gradient accumulation {params.gradient_accumulation_steps}); pick a batch size that is "
                          f"a multiple of {params.num_generations}")


def check(method, params, entries: list[dict], dataset_row: dict, model_path: str) -> None:
    """Before a run is queued (one sentence each): every row has what the rewards compare with, and
    the longest prompt plus the longest reply fits the model's context."""
    from pathlib import Path

    from pipelines import data, models, rewards

    rows = data.load_rows(Path(dataset_row["path"]))
    rewards.check_rows(entries, rows, dataset_row["name"])
    if hasattr(params, "num_generations"):  # TRL leaves out a last batch of prompts too few to fill a step
        replies = params.per_device_train_batch_size * params.gradient_accumulation_steps
        if len(rows) * params.num_generations < replies:
            raise ConfigError(f"parameter 'per_device_train_batch_size': a step writes {replies} replies, "
                              f"{params.num_generations} to each of {replies // params.num_generations} prompts, "
                              f"and dataset '{dataset_row['name']}' holds {len(rows)} prompt"
                              f"{'s' if len(rows) != 1 else ''}: no step could be taken; lower the batch size "
                              "(or the gradient accumulation), or import more prompts")
    tokenizer = models.load_tokenizer(model_path)
    longest, where = 0, 0
    for i, row in enumerate(rows, start=1):
        text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n > longest:
            longest, where = n, i
    context = models.context_length(model_path)
    if context and longest + params.max_completion_length > context:
        raise ConfigError(f"parameter 'max_completion_length': the longest prompt of dataset "
                          f"'{dataset_row['name']}' (row {where}, {longest} tokens) plus a reply of "
                          f"{params.max_completion_length} tokens does not fit the model's {context}-token "
                          "context; shorten that prompt or the longest reply")


# A reward model learns to score replies the way the preference pairs rank them. Learning rate
# and epochs: measured by bench/reward_model_quality.py on the built-in model and the sample pairs.
RewardTraining = with_defaults(Training, "RewardTraining", helps={"num_train_epochs": (
    "How many times the model reads your pairs, learning to score the preferred reply higher. A few dozen to a few "
    "hundred pairs need 3-5; too many and it learns these pairs by heart (its held-out pairs ranked right stop "
    "rising while its training loss still falls)."),
    # TRL's reward trainer leaves out a pair with an answer longer than this, where other trainers cut it
    "max_length": ("Longest prompt and reply, in tokens. A reward model reads each reply whole: a pair with a "
                   "longer one is left out (the log says how many). Longer needs more memory and time.")},
    learning_rate=1e-4, num_train_epochs=4.0,
                               per_device_train_batch_size=4, eval_fraction=0.25, max_length=512)


@dataclass
class RewardModelFields:
    center_rewards_coefficient: float = param(
        0.01, label="Keep scores near zero",
        help="A small pull of the scores towards zero (Eisenstein et al., 2023), so they stay comparable "
        "between runs and do not drift to huge numbers; it does not change which reply ranks higher. 0 = off.",
        target="trainer", min=0.0, max=1.0, step=0.01, advanced=True)


@dataclass
class RewardModelParams(LoraFieldsNoDropout, RewardModelFields, PairStopping, RewardTraining):
    pass


def reward_lora_config(params, setup=None):
    """LoRA on a sequence-classification copy of the model: the adapter and a new one-number score head
    (trained in full: it starts random) are what the run saves."""
    from peft import LoraConfig

    from pipelines.methods.lora import targets

    return LoraConfig(task_type="SEQ_CLS", r=params.r, lora_alpha=params.lora_alpha, lora_dropout=0.0,
                      target_modules=targets(params.target_modules), use_rslora=params.use_rslora,
                      modules_to_save=["score"])


# PPO runs the studio's own loop (pipelines/train_ppo.py): the shared training settings keep
# transformers' TrainingArguments names; the batch counts prompts (one reply each).
PPOTraining = only(Training, "PPOTraining", ["learning_rate", "num_train_epochs", "per_device_train_batch_size",
                                             "save_steps", "seed"], helps={"num_train_epochs": RL_EPOCHS},
                   learning_rate=1e-4, num_train_epochs=2.0, per_device_train_batch_size=8, save_steps=10)


@dataclass
class PPOFields:
    max_completion_length: int = param(
        48, label="Longest reply (tokens)",
        help="Replies are cut at this many tokens while training; writing them is most of a PPO step's time.",
        target="studio", min=8, max=4096, step=8)
    temperature: float = param(
        1.0, label="Variety while training",
        help="How adventurous the replies written for training are: PPO learns from the difference between "
        "what it tried and what it expected, so keep some variety (0.7-1.0).",
        target="studio", min=0.1, max=2.0, step=0.05)
    kl_coef: float = param(
        0.05, label="KL leash",
        help="How strongly the model is held near where it started: every reply token pays this much times how "
        "much more likely the tuned model finds it than the starting model (InstructGPT's KL penalty). Higher "
        "= safer, smaller changes; too low and the model learns to game the reward model with odd text.",
        target="studio", min=0.0, max=1.0, step=0.01)
    cliprange: float = param(
        0.2, label="Step clipping",
        help="How far one update may change a reply's probability (PPO's clip range): 0.2 = about 20% per "
        "update. Smaller is steadier and slower.",
        target="studio", min=0.01, max=1.0, step=0.01, advanced=True)
    vf_coef: float = param(
        0.1, label="Value loss weight",
        help="PPO also learns to predict how good a reply will turn out (the value head); this is how much "
        "that part counts against improving the replies.",
        target="studio", min=0.0, max=10.0, step=0.05, advanced=True)
    ppo_epochs: int = param(
        2, label="Updates per batch",
        help="How many times each batch of written replies is learned from before new ones are written. More "
        "squeezes more from each (slow) batch of replies, but drifts from what the model wrote.",
        target="studio", min=1, max=16, step=1, advanced=True)


@dataclass
class PPOParams(LoraPreference, PPOFields, PPOTraining):
    pass
