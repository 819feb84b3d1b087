"""Plotly figures of training curves: one run, or several overlaid."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pipelines.curves import is_preference, is_reward_model, is_rl, reward_parts, series, thinned

PANELS = [("Loss (training and held-out)", ("loss", "eval_loss")), ("Learning rate", ("learning_rate",)),
          ("Gradient norm", ("grad_norm",)), ("Tokens per second", ("tokens_per_s",))]
# preference runs: is the preferred answer winning, by how much, and how far has the model moved
PREFERENCE_PANELS = [
    ("Loss (training and held-out)", ("loss", "eval_loss")),
    ("Preference accuracy (preferred scored higher)", ("rewards/accuracies", "eval_rewards/accuracies")),
    ("Reward margin (preferred minus rejected)", ("rewards/margins", "eval_rewards/margins")),
    ("Rewards of preferred and rejected answers; KL", ("rewards/chosen", "rewards/rejected", "eval_rewards/chosen",
                                                        "eval_rewards/rejected", "kl")),
]
# KTO: single replies marked good or bad, no pairs to rank (TRL logs no accuracy for it): how each kind
# of reply moves, the gap between them, and how far the model has moved from where it started
KTO_KL = "KTO's KL baseline (0: replies to other prompts no likelier than at the start)"
KTO_PANELS = [
    ("Loss (training and held-out)", ("loss", "eval_loss")),
    ("Rewards of replies marked good and bad", ("rewards/chosen", "rewards/rejected", "eval_rewards/chosen",
                                                "eval_rewards/rejected")),
    ("Reward margin (good minus bad)", ("rewards/margins", "eval_rewards/margins")),
    # TRL's KL term: replies paired with other prompts, how much likelier than at the start, floored at 0
    # (it read "how far the model moved" and stayed at 0 while the rewards moved to -5)
    (KTO_KL, ("kl",)),
]
KTO_LABELS = {"kl": "KL baseline", "rewards/chosen": "marked good", "rewards/rejected": "marked bad",
              "eval_rewards/chosen": "marked good, held-out", "eval_rewards/rejected": "marked bad, held-out",
              "rewards/margins": "training replies", "eval_rewards/margins": "held-out replies"}
# reinforcement learning: is the reward rising (and which function's part), how far has the model
# moved from where it started, how long are its replies
RL_PANELS = [
    ("Mean reward (and each function's part)", ("reward",)),  # the parts are added per run
    ("KL from the start (how far the model moved)", ("kl",)),
    ("Reply length (tokens)", ("completions/mean_length",)),
    ("Loss", ("loss",)),
]
REWARD_MODEL_PANELS = [
    ("Loss (training and held-out)", ("loss", "eval_loss")),
    ("Pairs ranked right (preferred scored higher)", ("accuracy", "eval_accuracy")),
    ("Score margin (preferred minus rejected)", ("margin", "eval_margin")),
    ("Learning rate", ("learning_rate",)),
]
LABELS = {"loss": "training loss", "eval_loss": "held-out loss", "learning_rate": "learning rate",
          "grad_norm": "gradient norm", "tokens_per_s": "tokens/s",
          "rewards/accuracies": "training pairs", "eval_rewards/accuracies": "held-out pairs",
          "rewards/margins": "training pairs", "eval_rewards/margins": "held-out pairs",
          "rewards/chosen": "preferred", "rewards/rejected": "rejected", "kl": "KL from the start",
          "eval_rewards/chosen": "preferred, held-out", "eval_rewards/rejected": "rejected, held-out",
          "reward": "weighted reward", "completions/mean_length": "mean reply length",
          "accuracy": "training pairs", "eval_accuracy": "held-out pairs", "margin": "training pairs",
          "eval_margin": "held-out pairs"}
MARKED = 300  # a series of more points than this is drawn as a line only
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
# shares from 0 to 1: drawn on that scale, as percentages (all at 100%, plotly's own range ran to 2)
SHARES = {"rewards/accuracies", "eval_rewards/accuracies", "accuracy", "eval_accuracy"}
DOTTED = {"eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "rewards/rejected", "kl", "eval_accuracy",
          "eval_margin", "eval_rewards/chosen", "eval_rewards/rejected"}


def without_level_start(data: dict) -> dict:
    """Preference accuracy where every pair scored level (the margin 0 too: a model that starts as its own
    reference, DPO's first held-out check) is no point: TRL counts only pairs scored higher, and the
    chart's 0 read as "every pair ranked wrong at the start", where the summary says no preference yet."""
    for accuracy, margin in (("rewards/accuracies", "rewards/margins"),
                             ("eval_rewards/accuracies", "eval_rewards/margins")):
        if accuracy not in data or margin not in data:
            continue
        level = {s for s, v in zip(*data[margin]) if v == 0}
        kept = [(s, v) for s, v in zip(*data[accuracy]) if not (v == 0 and s in level)]
        if kept:
            data[accuracy] = ([s for s, _ in kept], [v for _, v in kept])
        else:
            del data[accuracy]
    return data


def steps_per_epoch(metrics: list[dict]) -> float | None:
    """A run's optimizer steps per epoch, from its last logged epoch (None: it logged none yet)."""
    last = max(((m["step"], m["epoch"]) for m in metrics if m.get("epoch") and m.get("step")), default=None)
    return last[0] / last[1] if last else None


def best_axis(runs: dict[str, list[dict]]) -> str:
    """"epoch" where the compared runs' steps cover different amounts of data (another batch size or
    dataset: step 10 of one is the end of its first epoch, of the other a third of it), else "step"."""
    per_epoch = [steps_per_epoch(m) for m in runs.values()]
    if len(runs) < 2 or None in per_epoch:
        return "step"
    return "epoch" if max(per_epoch) > 1.05 * min(per_epoch) else "step"


def curves_figure(runs: dict[str, list[dict]], parts: dict[str, dict] | None = None,
                  objectives: dict[str, str] | None = None, along: str = "step",
                  run_names: dict[str, str] | None = None) -> go.Figure:
    """runs: run id -> metrics records. One run: each series its own colour, the same in every panel
    (training pairs, held-out pairs), named once in the legend. Several runs: each run its own
    colour and a legend group, the series told apart by their dashes. Markers make the first steps visible before
    there is a line to draw. parts: run id -> its reward functions' names and weights
    (rewards.parts): each function's line is its part of the reward (weight x mean score), so the
    parts add up to the reward. objectives: run id -> what its loss measures ("next-token loss", "DPO
    loss"): runs of different objectives have their losses named by it, and the loss panel says they
    are not on one scale (an SFT run's 2.1 beside a DPO run's 0.69 read as DPO learning better).
    along: "step", or "epoch" (each run's steps over its steps per epoch; a run that logged no epoch
    keeps all on steps). run_names: run id -> the title of its group in the legend (the id where none)."""
    rl = any(is_rl(m) for m in runs.values())
    objective = {run_id: (objectives or {}).get(run_id) or "loss" for run_id in runs}
    mixed = len(set(objective.values())) > 1
    if rl:
        panels = RL_PANELS
    elif any(is_reward_model(m) for m in runs.values()):
        panels = REWARD_MODEL_PANELS
    else:
        panels = PREFERENCE_PANELS if any(is_preference(m) for m in runs.values()) else PANELS
    data_of = {run_id: series(metrics) for run_id, metrics in runs.items()}
    labels = LABELS
    if panels is PREFERENCE_PANELS and not any(
            name in data for data in data_of.values() for name in ("rewards/accuracies", "eval_rewards/accuracies")):
        panels, labels = KTO_PANELS, {**LABELS, **KTO_LABELS}  # KTO: no pairs, so no accuracy to draw
    # (chosen before this: a DPO run whose every point so far is level is still a DPO run)
    data_of = {run_id: without_level_start(data) for run_id, data in data_of.items()}
    if not rl and panels is not KTO_PANELS and not any("kl" in data for data in data_of.values()):  # DPO logs none
        panels = [(title.removesuffix("; KL"), names) for title, names in panels]
    if mixed:
        panels = [(f"Loss: {' vs '.join(dict.fromkeys(o.replace(' loss', '') for o in objective.values()))}, not one scale"
                   if "loss" in names else title, names) for title, names in panels]
    elif len(runs) == 1 and objectives and "+" in objective[next(iter(runs))]:  # one run: a loss of two parts named
        panels = [(f"Loss: {objective[next(iter(runs))].replace(' loss', '')} (training and held-out)"
                   if "loss" in names else title, names) for title, names in panels]
    per_epoch = {run_id: steps_per_epoch(metrics) for run_id, metrics in runs.items()}
    if along == "epoch" and None in per_epoch.values():
        along = "step"
    fig = make_subplots(rows=2, cols=2, subplot_titles=[title for title, _ in panels],
                        horizontal_spacing=0.1, vertical_spacing=0.2)
    several = len(runs) > 1
    colours: dict = {}  # legend entry (a series; of a run, with several) -> colour, in order of first appearance
    for i, (run_id, metrics) in enumerate(runs.items()):
        data = data_of[run_id]
        for panel, (_title, names) in enumerate(panels):
            if rl and panel == 0:
                names = (*names, *reward_parts(metrics))
            for name in names:
                if name not in data:
                    continue
                steps, values = data[name]
                what = labels.get(name) or name.removeprefix("rewards/").removesuffix("/mean")
                if name.startswith("rewards/") and what in (parts or {}).get(run_id, {}):
                    what, weight = parts[run_id][what]
                    values = [weight * v for v in values]
                    what = f"{what} ×{weight:g}"
                if mixed and name in ("loss", "eval_loss"):
                    what = f"{what} ({objective[run_id]})"
                steps, values = thinned(steps, values)  # (a long run's every step is more than can be drawn)
                if along == "epoch":
                    steps = [round(step / per_epoch[run_id], 4) for step in steps]
                # several runs: a legend group per run, titled with what sets it apart (the ids alone told
                # nothing), its series under it; one run: each series its own colour
                key = (run_id, what) if several else what
                first = key not in colours
                if first:
                    colours[key] = PALETTE[(i if several else len(colours)) % len(PALETTE)]
                group = {"legendgroup": run_id, "legendgrouptitle": {"text": (run_names or {}).get(run_id, run_id)},
                         "hovertemplate": f"%{{y:.4g}} at {along} %{{x}}<extra>{run_id}: {what}</extra>"} \
                    if several else {"legendgroup": what}
                fig.add_trace(go.Scatter(  # (markers show the first steps; on a long run they hid the line)
                    x=steps, y=values, name=what, mode="lines+markers" if len(steps) <= MARKED else "lines",
                    showlegend=first, **group,
                    line={"color": colours[key],
                          "dash": "dot" if several and (name in DOTTED or name.startswith("rewards/")) else "solid"},
                    marker={"size": 7 if name.startswith("eval_") else 4},
                ), row=panel // 2 + 1, col=panel % 2 + 1)
    for panel, (_title, names) in enumerate(panels):
        if SHARES & set(names):
            fig.update_yaxes(range=[-0.03, 1.03], tickformat=".0%", row=panel // 2 + 1, col=panel % 2 + 1)
        if "learning_rate" in names:  # as the form writes it (1e-4): plotly's own ticks read "100μ"
            fig.update_yaxes(tickformat="~e", row=panel // 2 + 1, col=panel % 2 + 1)
    # "step" under the lower panels only: under the upper ones it ran into the lower panels' titles
    fig.update_xaxes(title_text=along, title_standoff=4, row=2)
    last = max((max(steps) for data in data_of.values() for steps, _ in data.values() if steps), default=0)
    if along == "step" and last <= 10:  # a short run: whole steps (plotly's own ticks read 0, 0.5, 1, 1.5, 2)
        fig.update_xaxes(tick0=0, dtick=1)
    fig.update_annotations(font_size=13)  # the panel titles
    # several runs: a legend group per run, its series stacked under its title; the panels keep their size
    entries = max((sum(1 for key in colours if key[0] == run_id) for run_id in runs), default=0) if several else 0
    fig.update_layout(height=max(540, 420 + 21 * (entries + 1)), margin={"l": 50, "r": 20, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.14, "yanchor": "top"}, template="plotly_white")
    return fig


def length_histogram(lengths: list[int], max_length: int, estimated: bool = False) -> go.Figure:
    """Token lengths per example, with the training max length drawn where cutting starts."""
    fig = go.Figure(go.Histogram(x=lengths, nbinsx=40, marker_color="#4c78a8", name="examples"))
    longest = max(lengths, default=0)
    over = sum(n > max_length for n in lengths)
    title = f"Tokens per example ({over} of {len(lengths)} {'sampled ' if estimated else ''}over max length)"
    fig.update_layout(title=title, xaxis_title="tokens", yaxis_title="examples", height=300,
                      margin=dict(l=40, r=20, t=50, b=40), bargap=0.05, showlegend=False)
    if longest and longest * FAR_BELOW < max_length:
        # rows far shorter than the max length: the axis is theirs, the max length said at its edge (drawn at 512,
        # every bar of 20-90 tokens sat in the leftmost pixels)
        fig.update_xaxes(range=[0, longest * 1.1])
        fig.add_annotation(x=1, xref="paper", y=1, yref="paper", xanchor="right", yanchor="bottom", showarrow=False,
                           text=f"max length {max_length} →", font={"color": "#e45756"})
    else:
        fig.add_vline(x=max_length, line_dash="dash", line_color="#e45756",
                      annotation_text=f"max length {max_length}", annotation_position="top")
    return fig


FAR_BELOW = 3  # the longest row this many times under the max length: the histogram's axis ends near it
