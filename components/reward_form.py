"""The reward composer of the Train tab (reinforcement learning): tick the functions that say what a
good reply is, weigh them, fill in their settings. Built from pipelines/rewards.py's declarations."""

from __future__ import annotations

import gradio as gr

from components.forms import widget
from pipelines import rewards
from pipelines.methods import describe

# What a new GRPO run starts with: right numbers (the bundled arithmetic prompts' task)
DEFAULT = ("number",)


def build() -> tuple[list, callable]:
    """(widgets in a fixed order, collect(*values) -> the reward list for start_run)."""
    gr.Markdown("**Reward functions** — what makes a reply good. Each scores a reply from 0 to 1; the run's "
                "reward is their weighted sum, and every function gets its own curve.")
    layout, widgets = [], []
    for key, reward in rewards.REWARDS.items():
        with gr.Group():
            use = gr.Checkbox(value=key in DEFAULT, label=reward.label, info=reward.help, elem_id=f"reward-{key}")
            options = [info.name for info in describe(reward.options)]
            with gr.Row(visible=key in DEFAULT) as row:
                # narrow beside its settings; alone it fills the row (a narrow one left an empty grey box)
                weight = gr.Number(value=1.0, label="Weight", step=0.1, min_width=90, scale=0 if options else 1,
                                   info="How much it counts (negative = a penalty)", elem_id=f"reward-{key}-weight")
                fields = [widget(info, prefix=f"reward-{key}-") for info in describe(reward.options)]
        use.change(lambda on: gr.update(visible=on), use, row, show_progress="hidden")
        layout.append((key, options))
        widgets += [use, weight, *fields]

    def collect(*values) -> list[dict]:
        out, i = [], 0
        for key, options in layout:
            use, weight, opts = values[i], values[i + 1], values[i + 2:i + 2 + len(options)]
            i += 2 + len(options)
            if use:
                out.append({"name": key, "weight": weight, **dict(zip(options, opts))})
        return out

    return widgets, collect
