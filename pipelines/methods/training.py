"""Training parameters shared by every method (`Training`) and by the supervised ones (`SFTTraining`).

Names equal TRL's config fields (`SFTConfig`, `DPOConfig`, ...) wherever TRL has the concept;
`eval_fraction` is the studio's own (TRL takes a ready-made eval dataset instead).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.params import param


@dataclass
class Training:
    learning_rate: float = param(
        2e-4,
        label="Learning rate",
        help="How big each update step is. Higher learns faster but can overshoot and forget; "
        "lower is safer but slower. Adapters like LoRA take 1e-4 to 1e-3; training the whole "
        "model wants about 1e-5; methods that learn only a few numbers (prompt tuning, VeRA, "
        "IA3) need 1e-2 or more.",
        target="trainer",
        min=1e-7,
        max=1.0,
    )
    num_train_epochs: float = param(
        3.0,
        label="Epochs",
        help="How many times the model reads your whole dataset. Small datasets (a few hundred "
        "examples) need 5-10 to learn facts; thousands of examples need 1-3. Too many and it "
        "repeats your examples word for word on everything.",
        target="trainer",
        min=0.1,
        max=100,
        step=0.5,
    )
    per_device_train_batch_size: int = param(
        8,
        label="Batch size",
        help="Examples processed together in one step. Bigger is smoother and faster per "
        "example but needs more memory.",
        target="trainer",
        min=1,
        max=256,
        step=1,
    )
    gradient_accumulation_steps: int = param(
        1,
        label="Gradient accumulation",
        help="Add up this many batches before each update, to act like a bigger batch without "
        "the memory. Effective batch = batch size x this.",
        target="trainer",
        min=1,
        max=128,
        step=1,
        advanced=True,
    )
    max_length: int = param(
        512,
        label="Max length (tokens)",
        help="Longest example, in tokens; longer ones are cut at the end. Longer needs more "
        "memory and time.",
        target="trainer",
        min=16,
        max=32768,
        step=16,
    )
    gradient_checkpointing: bool = param(
        False,
        label="Gradient checkpointing",
        help="Recomputes parts of the model instead of storing them: much less memory, about "
        "30% slower. Turn on if training runs out of memory.",
        target="trainer",
        advanced=True,
    )
    eval_fraction: float = param(
        0.1,
        label="Held-out fraction",
        help="Share of examples kept aside (never trained on) to measure whether the model "
        "generalises. 0 = no held-out check. Not used when the dataset was imported with its "
        "own held-out split (then every run is measured on the same rows). A run started from "
        "another run's result holds out only examples whose prompts no run behind it trained on "
        "(on that run's own dataset, the rows it held out).",
        target="studio",
        min=0.0,
        max=0.5,
        step=0.05,
    )
    eval_steps: int = param(
        0,
        label="Check held-out rows every N steps",
        help="How often to measure the model on the held-out rows during training (the loss; a preference "
        "method also measures the reward margin, and on pairs the share ranked right). 0 = automatically, "
        "about ten times per run.",
        target="trainer",
        min=0,
        max=100000,
        step=1,
        advanced=True,
    )
    early_stopping_patience: int = param(
        0,
        label="Early stopping patience",
        help="Stop when the held-out loss (or the figure chosen in 'Early stopping watches', where the method "
        "has it) has not improved for this many checks in a row - the sign the model has started memorising "
        "instead of learning - and keep the weights of the best check as the result (a checkpoint is saved at "
        "every new best, which takes disk and time for a whole model). 0 = never stop early.",
        target="studio",
        min=0,
        max=100,
        step=1,
        advanced=True,
    )
    save_steps: int = param(
        20,
        label="Checkpoint every N steps",
        help="How often progress is saved to disk. A crashed or cancelled run resumes from the "
        "last checkpoint, so at most this many steps are lost; saving often costs a little time.",
        target="trainer",
        min=1,
        max=100000,
        step=1,
        advanced=True,
    )
    seed: int = param(
        42,
        label="Seed",
        help="Fixes the random choices (data shuffle, held-out split, initial weights), so the "
        "same settings give the same run.",
        target="trainer",
        min=0,
        max=2**31 - 1,
        step=1,
        advanced=True,
    )


# What the held-out checks of a method that scores replies are compared by: its best check is the
# result of a run with early stopping, and the run stops after `patience` checks that do not beat it.
# (SFT measures only its loss.) The metric each one reads is named in pipelines/callbacks.best_metric.
STOP_ON_HELP = ("What the held-out checks are compared by when early stopping is on (patience above 0): the "
                "best check's weights are the result, and the run stops after that many checks without a "
                "better one. loss: what training lowers. ")
PAIR_STOP_ON = {"loss": "held-out loss, lowest is best", "accuracy": "held-out pairs ranked right, highest is best",
                "margin": "held-out reward margin, highest is best"}
PAIR_STOP_HELP = STOP_ON_HELP + (
    "accuracy: the share of held-out pairs ranked right (the preferred reply scored higher); a few "
    "held-out pairs reach 100% early, and the run stops soon after. margin: how far the preferred "
    "replies score above the others; it often keeps growing while the loss rises again, so the run stops later.")
GOOD_BAD_STOP_ON = {"loss": "held-out loss, lowest is best", "margin": "held-out reward margin, highest is best"}
GOOD_BAD_STOP_HELP = STOP_ON_HELP + (
    "margin: how far the replies marked good score above those marked bad. It needs held-out replies "
    "of both marks and a batch size of 2 or more; otherwise the loss is watched, and the log says so.")


def _stop_on(choices: dict, help: str):
    return param("loss", label="Early stopping watches", help=help, target="studio", choices=list(choices),
                 choice_help=choices, advanced=True, after="early_stopping_patience")


@dataclass
class PairStopping:
    """For methods that learn from preference pairs (DPO, ORPO, SimPO, CPO, a reward model)."""
    early_stopping_on: str = _stop_on(PAIR_STOP_ON, PAIR_STOP_HELP)


@dataclass
class GoodBadStopping:
    """KTO: replies marked good or bad one at a time, no pairs to rank."""
    early_stopping_on: str = _stop_on(GOOD_BAD_STOP_ON, GOOD_BAD_STOP_HELP)


@dataclass
class SFTTraining(Training):
    completion_only_loss: bool = param(
        True,
        label="Learn from answers only",
        help="On: the model is only taught to write the answers, not to repeat the questions. "
        "Leave on for question/answer data.",
        target="trainer",
        advanced=True,
    )
