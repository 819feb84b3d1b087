"""The reward composer of the Train tab (reinforcement learning): tick the functions that say what a
good reply is, weigh them, fill in their settings. Built from pipelines/rewards.py's declarations."""

from __future__ import annotations

import gradio as gr

from components.forms import widget
from pipelines import rewards
from pipelines.methods import describe
from pipelines.rewards import DEFAULT  # what a new GRPO run starts with


def reward_model_choices(studio) -> list[tuple[str, str]]:
    """Finished reward-model runs, newest first, for the 'A reward model's score' function."""
    datasets = studio.dataset_titles()
    return [(f"{r['id']} (trained on {datasets.get(r['dataset_id'], '?')})", r["id"])
            for r in studio.reward_model_runs()]


def build(studio) -> tuple[list, callable, callable, list]:
    """(widgets in a fixed order, collect(*values) -> the reward list for start_run, refresh() ->
    updates of the lists that follow the runs (for page load), their widgets)."""
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
                fields = [run_picker(studio) if (key, info.name) == ("reward_model", "run") else
                          widget(info, prefix=f"reward-{key}-") for info in describe(reward.options)]
        use.change(lambda on: gr.update(visible=on), use, row, show_progress="hidden")
        for field in fields:
            if getattr(field, "elem_id", None) == RUN_PICKER:  # reward models finished since the page opened
                use.change(lambda on, run: picked(run) if on else gr.skip(), [use, field], field,
                           show_progress="hidden")
        layout.append((key, options))
        widgets += [use, weight, *fields]

    pickers = [w for w in widgets if getattr(w, "elem_id", None) == RUN_PICKER]

    def picked(run=None):
        """The finished reward models; the one picked or typed stays, else the newest is put up."""
        choices = reward_model_choices(studio)
        return gr.update(choices=choices, value=run if run else choices[0][1] if choices else None)

    def refresh():
        return [picked() for _ in pickers]

    def collect(*values) -> list[dict]:
        out, i = [], 0
        for key, options in layout:
            use, weight, opts = values[i], values[i + 1], values[i + 2:i + 2 + len(options)]
            i += 2 + len(options)
            if use:
                out.append({"name": key, "weight": weight, **dict(zip(options, opts))})
        return out

    return widgets, collect, refresh, pickers


RUN_PICKER = "reward-reward_model-run"


def run_picker(studio):
    """The reward model to score with: a list of the finished ones (an id can still be typed)."""
    info = next(i for i in describe(rewards.REWARDS["reward_model"].options) if i.name == "run")
    choices = reward_model_choices(studio)
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None, allow_custom_value=True,
                       label=info.label, elem_id=RUN_PICKER,
                       info="A finished 'Reward model' run (newest first). Its score of each reply, squashed to "
                            "0-1, is the reward: replies like the ones people preferred score near 1. None yet? "
                            "Train one with the method 'Reward model' on preference pairs.")
