"""Methods named in the field that are not a trainable option here: what each is, why it cannot train
the chosen model in this studio, and what to use instead (ESFT trains mixture-of-experts models: its card
is for a dense one). Shown in the Method tab and `studio methods`."""

from __future__ import annotations

from dataclasses import dataclass

# config fields that count a mixture-of-experts model's experts (Mixtral, Qwen-MoE, DeepSeek, OLMoE, ...)
EXPERT_FIELDS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


@dataclass(frozen=True)
class Card:
    key: str
    label: str
    what: str
    why_not: str
    instead: str
    paper: str


CARDS = [
    Card("hypertuning", "HyperTuning",
         "A separate 'hypermodel', trained beforehand on many tasks, reads a few examples of your task and "
         "writes the adapter (or soft prompt) for the model directly — no training steps on your data.",
         "It needs a hypermodel pretrained for this exact model, and none exists for the built-in model or "
         "for most local models; training one takes a multi-task run far larger than any fine-tune.",
         "LoRA (a few minutes on a few hundred examples here), or prompt tuning for the smallest result.",
         "Phang et al., 2022, HyperTuning: Toward Adapting Large Language Models without Back-propagation"),
    Card("esft", "ESFT (expert-specialized fine-tuning)",
         "In a mixture-of-experts model, each token is handled by a few 'expert' sub-networks. ESFT measures "
         "which experts your data uses most and trains only those, leaving the rest untouched.",
         "It needs a mixture-of-experts model; {model}.",
         "Freeze tuning (only the last blocks learn: the closest idea for a dense model) or LoRA.",
         "Wang et al., 2024, Let the Expert Stick to His Last: Expert-Specialized Fine-Tuning for Sparse "
         "Architectural Large Language Models"),
    Card("quiet_star", "Quiet-STaR",
         "Teaches a model to 'think before it speaks': it writes short hidden rationales between tokens and "
         "learns, by reinforcement, the ones that make the following text more likely.",
         "It is a continued-pretraining method: it generates several thoughts at every position of long web "
         "text, needing orders of magnitude more compute than a fine-tune, plus new special tokens and a "
         "mixing head.",
         "GRPO with a reward for a reasoning format (for example 'matches a format' for "
         "'<think>…</think> Answer: …') and one for the right answer.",
         "Zelikman et al., 2024, Quiet-STaR: Language Models Can Teach Themselves to Think Before Speaking"),
]


def experts(config) -> int:
    """How many experts a model's config declares (0: a dense model)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return max((int(getattr(text, name, 0) or 0) for name in EXPERT_FIELDS), default=0)


def why_not(card: Card, model_label: str) -> str:
    """The card's reason for the chosen model (ESFT's card is only shown for a dense one)."""
    if card.key != "esft":
        return card.why_not
    return card.why_not.format(model=f"{model_label} is a dense model (no experts in its configuration)")


def shown(n_experts: int) -> list[Card]:
    """The cards for a model: ESFT trains a mixture-of-experts model (it is in the catalogue), so its
    card only explains why not for a dense one."""
    return [c for c in CARDS if not (c.key == "esft" and n_experts)]


def as_markdown(model_label: str, n_experts: int) -> str:
    return "\n\n".join(f"**{c.label}** — {c.what}\n\n*Why not here:* {why_not(c, model_label)} "
                       f"*Use instead:* {c.instead} <small>({c.paper})</small>" for c in shown(n_experts))
