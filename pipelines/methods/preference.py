"""Preference tuning: the model learns which of two answers people prefer (DPO and its losses,
ORPO, SimPO, CPO) or which answers are good or bad one at a time (KTO).

Field names are those of TRL's `DPOConfig`, `KTOConfig`, `ORPOConfig` and `CPOConfig`. Defaults
follow the papers and TRL, with learning rates raised for LoRA (an adapter moves far fewer
weights than full tuning, whose TRL default is 1e-6); the LoRA learning rate and epochs are
the ones bench/pref_quality.py measured for DPO on the built-in model, shared by the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.methods.lora import LoraFieldsNoDropout, lora_config
from pipelines.methods.params import ConfigError, param, with_defaults
from pipelines.methods.setup import Setup
from pipelines.methods.training import GoodBadStopping, PairStopping, Training

# LoRA learning rate and epochs: measured with bench/pref_quality.py on the built-in model.
# Measured with DPO + imitation of the preferred answers (sft_weight 1): at 5e-5 (3 epochs) or 2e-4
# (2 epochs) 0 of 20 held-out replies showed the trait the preferred answers add; at 5e-4 for 2
# epochs 18 of 20. An adapter on this small model moves slowly: LoRA SFT's default is 1e-3.
# the shared Epochs spoke of examples repeated word for word: these methods learn a preference between answers
PREF_EPOCHS = ("How many times the model goes through your preferences (pairs of answers, or answers marked good "
               "or bad). A few hundred need 2-3. Too many and it pushes the rejected answers away so hard that its "
               "other replies change too (odd wording, forgotten facts): more passes stop helping once the held-out "
               "check stops improving.")
PreferenceLoraTraining = with_defaults(Training, "PreferenceLoraTraining", helps={"num_train_epochs": PREF_EPOCHS},
                                       learning_rate=5e-4, num_train_epochs=2.0, per_device_train_batch_size=4)
# Full-weight preference tuning: TRL's and the DPO paper's small step.
PreferenceFullTraining = with_defaults(Training, "PreferenceFullTraining", helps={"num_train_epochs": PREF_EPOCHS},
                                       learning_rate=1e-6, num_train_epochs=3.0, per_device_train_batch_size=4)

BETA_HELP = ("How far the model may move from where it started. Higher = smaller, safer changes that "
             "stay close to the starting model; lower = it follows the preferences more boldly but may "
             "drift (odd wording, forgotten facts). 0.1 is the usual choice.")


@dataclass
class LoraPreference(LoraFieldsNoDropout):
    use_dora: bool = param(
        False,
        label="DoRA",
        help="Learn the adapter as DoRA (a length and a direction per weight) instead of plain LoRA: often "
        "a little better at the same rank, a little slower per step.",
        target="peft",
        advanced=True,
    )


DPO_LOSSES = {
    "sigmoid": "the original DPO: push the preferred answer's likelihood up and the other's down, "
               "relative to the starting model",
    "ipo": "IPO: like DPO but stops once the gap is big enough, so it does not overfit small or "
           "near-duplicate datasets",
    "hinge": "SLiC hinge: only pairs the model still gets wrong (or barely right) teach it",
    "robust": "robust DPO: for noisy labels; set 'Label noise' to the share you think is wrong",
    "bco_pair": "BCO: judges each answer on its own as good or bad, steadier on small datasets",
    "sppo_hard": "SPPO: pushes the preferred answer to a fixed target instead of a relative gap",
    "nca_pair": "NCA: keeps the preferred answer's absolute likelihood from dropping",
    "apo_zero": "APO-zero: when the preferred answers are better than what the model writes now",
    "apo_down": "APO-down: when the model already writes answers as good as the preferred ones",
    "sigmoid_norm": "DPO with each answer's score divided by its length, so long answers are not favoured",
}


@dataclass
class DPOFields:
    beta: float = param(0.1, label="Beta (how far to move)", help=BETA_HELP, target="trainer", min=0.001,
                        max=10.0, step=0.01)
    loss_type: str = param(
        "sigmoid",
        label="Loss",
        help="How a preference pair turns into a training signal. Keep 'sigmoid' (DPO) unless you know "
        "your labels are noisy (robust), your dataset is small or repetitive (ipo), or your preferred "
        "answers are better (apo_zero) or no better (apo_down) than the model's own.",
        target="trainer",
        choices=list(DPO_LOSSES),
        choice_help=DPO_LOSSES,
    )
    sft_weight: float = param(
        1.0,
        label="Also imitate the preferred answers",
        help="Adds plain learning of the preferred answers (as in example-based training) to the preference, "
        "with this weight (the RPO recipe, also used for Llama 3). Without it DPO can win by only making the "
        "rejected answers unlikely, and the model drifts: on the built-in model DPO alone learned to ramble "
        "on instead of adding what the preferred answers add. 0 = DPO alone.",
        target="studio",
        min=0.0,
        max=10.0,
        step=0.1,
    )
    label_smoothing: float = param(
        0.0,
        label="Label noise",
        help="Only for the 'robust' loss: the share of pairs you think are labeled the wrong way round "
        "(0.1 = one in ten). Robust DPO then learns what most labels agree on.",
        target="trainer",
        min=0.0,
        max=0.49,
        step=0.01,
        advanced=True,
    )


@dataclass
class DPOParams(LoraPreference, DPOFields, PairStopping, PreferenceLoraTraining):
    pass


@dataclass
class DPOFullParams(DPOFields, PairStopping, PreferenceFullTraining):
    pass


KTO_LOSSES = {"kto": "KTO: judges each answer as good or bad against the model's average, as in the paper",
              "apo_zero_unpaired": "APO-zero: raises good answers and lowers bad ones without the average"}


@dataclass
class KTOFields:
    beta: float = param(0.1, label="Beta (how far to move)", help=BETA_HELP, target="trainer", min=0.001,
                        max=10.0, step=0.01)
    desirable_weight: float = param(
        1.0,
        label="Weight of good answers",
        help="How much each thumbs-up example counts. When you have far more thumbs-down than thumbs-up, "
        "raise this so the two sides weigh about the same (the KTO paper keeps weight x count within "
        "1 to 4/3 of the other side).",
        target="trainer", min=0.01, max=100.0, step=0.1, advanced=True)
    undesirable_weight: float = param(
        1.0,
        label="Weight of bad answers",
        help="How much each thumbs-down example counts; raise it when thumbs-down examples are the rare "
        "ones.",
        target="trainer", min=0.01, max=100.0, step=0.1, advanced=True)
    loss_type: str = param("kto", label="Loss", help="How a good or bad answer turns into a training "
                           "signal. Keep 'kto' unless you know you need the other.", target="trainer",
                           choices=list(KTO_LOSSES), choice_help=KTO_LOSSES, advanced=True)


# KTO estimates the model's average from mismatched answers within a batch: a batch needs 2+.
KTOTraining = with_defaults(PreferenceLoraTraining, "KTOTraining", per_device_train_batch_size=8)


@dataclass
class KTOParams(LoraPreference, KTOFields, GoodBadStopping, KTOTraining):
    pass


KTOFullTraining = with_defaults(PreferenceFullTraining, "KTOFullTraining", per_device_train_batch_size=8)


@dataclass
class KTOFullParams(KTOFields, GoodBadStopping, KTOFullTraining):
    pass


@dataclass
class ORPOFields:
    beta: float = param(
        0.1,
        label="Preference weight",
        help="How much the preference counts against simply learning the preferred answers (ORPO's "
        "lambda). Higher = pushes harder away from the rejected answers; 0.1 is the paper's choice.",
        target="trainer", min=0.001, max=10.0, step=0.01)


@dataclass
class ORPOParams(LoraPreference, ORPOFields, PairStopping, PreferenceLoraTraining):
    pass


# the ORPO paper's full-weight learning rate
ORPOFullTraining = with_defaults(PreferenceFullTraining, "ORPOFullTraining", learning_rate=8e-6)


@dataclass
class ORPOFullParams(ORPOFields, PairStopping, ORPOFullTraining):
    pass


@dataclass
class SimPOFields:
    beta: float = param(
        2.0,
        label="Beta (reward scale)",
        help="How sharply SimPO separates preferred from rejected answers. SimPO has no starting model "
        "to stay near, so its beta is larger than DPO's: the paper uses 2 to 2.5.",
        target="trainer", min=0.01, max=20.0, step=0.1)
    simpo_gamma: float = param(
        1.0,
        label="Target margin",
        help="How much better (per token) the preferred answer must score before a pair stops teaching. "
        "The paper keeps it at about half of beta.",
        target="trainer", min=0.0, max=10.0, step=0.1, advanced=True)


@dataclass
class SimPOParams(LoraPreference, SimPOFields, PairStopping, PreferenceLoraTraining):
    pass


@dataclass
class CPOFields:
    beta: float = param(0.1, label="Beta", help="How sharply CPO separates preferred from rejected answers; "
                        "0.1 is the paper's choice.", target="trainer", min=0.001, max=10.0, step=0.01)
    cpo_alpha: float = param(
        1.0,
        label="Weight of learning the preferred answers",
        help="CPO also learns to write the preferred answers (like SFT); this is how much that part "
        "counts. 0 = preference only.",
        target="trainer", min=0.0, max=10.0, step=0.1, advanced=True)


@dataclass
class CPOParams(LoraPreference, CPOFields, PairStopping, PreferenceLoraTraining):
    pass


def preference_lora_config(params, setup: Setup | None = None):
    return lora_config(params, setup, use_dora=params.use_dora)


def check_kto(params) -> None:
    """KTO estimates the model's average answer from the other rows of a batch: it needs two or more."""
    if params.loss_type == "kto" and params.per_device_train_batch_size < 2:
        raise ConfigError("parameter 'per_device_train_batch_size': KTO compares each answer with the others in "
                          "its batch, so it needs a batch size of 2 or more")
