"""Runs panel: the runs table, live curves, progress, log; cancel, resume, continue; compare."""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import gradio as gr

from components.charts import best_axis, curves_figure
from components.export_tab import download_link
from components.text import literal, quoted
from pipelines.curves import WORSE_THAN_BEST, format_duration, overfitting_warning, progress
from pipelines import arena, dataset_stats, hardware, rewards
from pipelines.events import (ACTIVE_STATUSES, EVALUATING, HELDOUT_ROWS, JOB, RESUMABLE_STATUSES, SAMPLES,
                              log_tail, newest_checkpoint, read_json, read_metrics)
from pipelines.data import DataError
from pipelines.methods import METHODS, ConfigError, describe
from pipelines.models import ModelError
from studio import adapter_download, chat_service
from studio.core import RunError, dataset_title

RUN_COLUMNS = ["Run", "Status", "Method", "Progress", "Dataset", "Started"]
# every column in the panel's width, a long dataset name wrapped (it pushed Started out of sight)
RUN_WIDTHS = ["24%", "14%", "12%", "12%", "22%", "16%"]


def method_label(key: str) -> str:
    return METHODS[key].label if key in METHODS else key


def loss_objective(run: dict) -> str:
    """What a run's loss measures. Every SFT method's is the same next-token cross-entropy; a preference
    or reward method's loss is its own (DPO starts at 0.69 whatever the model), and a loss type other
    than the method's default is its own again."""
    method = METHODS.get(run["method"])
    if method is None:
        return f"{run['method']} loss"
    if method.trl == "sft":
        return "next-token loss"
    name = method.label.split(" (")[0]  # DPO (full weights): the same loss as DPO
    kind = (run.get("params") or {}).get("loss_type")
    default = next((info.default for info in describe(method.params) if info.name == "loss_type"), None)
    return (f"{name} loss" + (f", {kind}" if kind and kind != default else "")
            + (f" + imitation ×{imitation(run):g}" if imitation(run) else ""))


def imitation(run: dict) -> float:
    """The weight of the imitation of the preferred answers a preference run's loss adds (DPO's
    sft_weight, the RPO recipe; 0 for other runs)."""
    method = METHODS.get(run.get("method"))
    info = next((i for i in describe(method.params) if i.name == "sft_weight"), None) if method else None
    return float((run.get("params") or {}).get("sft_weight", info.default)) if info else 0.0


# said under a preference run's held-out loss when its loss adds the imitation of the preferred answers
IMITATION_NOTE = (" Its loss adds the imitation of the preferred answers to the preference: pairs whose preferred "
                  "answer the model already writes add little, so the training and held-out losses can sit far "
                  "apart; the preference accuracy and margin show the preference alone.")


BUILT_IN = "built-in SmolLM2-135M-Instruct"


def model_title(model: str) -> str:
    """A run's base as people know it: the built-in model by its name, not the spec 'default'."""
    return f"the {BUILT_IN}" if model in ("", "default") else f"the base model `{model}`"


def runs_table(studio) -> list[list]:
    rows = []
    datasets = studio.dataset_titles()
    for r in studio.list_runs():
        done = f"{r['step']}/{r['max_steps']}" if r.get("max_steps") else "-"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        rows.append([r["id"], r["status"], method_label(r["method"]), done, datasets.get(r["dataset_id"], "?"),
                     started])
    return rows


def run_choices(rows: list[list]) -> list[tuple[str, str]]:
    """Compare runs' choices: each run as its method, dataset and start time, with the id to find it by."""
    return [(f"{r[2]} on {r[4]}, {r[5]} ({r[0]})", r[0]) for r in rows]


def setting_label(key: str, methods: list[str]) -> str:
    """A setting as the Train form names it ('Epochs'), from the first of these methods that has it."""
    for method in methods:
        if method in METHODS:
            info = next((i for i in describe(METHODS[method].params) if i.name == key), None)
            if info is not None:
                return info.label
    return key


def slowed(status: str, metrics: list[dict]) -> str:
    """Said beside the progress when other programs kept CPU cores busy (logged with each step): a run
    took 2:56 beside its estimate of about a minute, and only a log line that had scrolled away said why.
    Running: over its last few steps; finished: on average over the run."""
    taken = [m["others_cores"] for m in metrics if isinstance(m.get("others_cores"), (int, float))]
    if not taken or status not in ("running", "completed"):
        return ""
    now = statistics.median(taken[-3:]) if status == "running" else statistics.fmean(taken)
    if now <= hardware.SHARED_CORES:
        return ""
    cores = f"{now:.1f} CPU core{'s' if round(now, 1) != 1 else ''}"
    return (f" · slowed: other programs are using {cores}" if status == "running"
            else f" · other programs used {cores} on average meanwhile (it ran slower than it can)")


def progress_html(row: dict, metrics: list[dict]) -> str:
    p = progress(row["step"], row["max_steps"], row.get("started"), metrics, now=row.get("finished"),
                 training_since=row.get("training_since"), first_step=row.get("first_step") or 0)
    if row["status"] != "running" or not p["max_steps"]:
        p["eta_s"] = None
    width = min(100.0, p["percent"])
    if row.get("cancelling") and row["status"] in ("queued", "running"):
        # the Cancel was received: a running run stops at the end of its step, after a checkpoint
        if row["status"] == "queued":
            said = "cancelling… · leaves the queue"
        elif p["max_steps"] and p["step"] + 1 >= p["max_steps"]:
            # a cancel takes effect at the end of a step: after the last one nothing is left to stop
            said = "finishing: the last step is under way, so the run completes and saves its result…"
        else:
            said = f"cancelling: saving a checkpoint at the end of step {p['step'] + 1}, then it stops…"
    elif row["status"] == "queued":
        said = "waiting for its turn (runs, and answers for labeling, take turns)"
    elif row["status"] == "running" and row.get("phase") not in ("training", EVALUATING):
        said = f"{row.get('phase') or 'starting'}… · elapsed {format_duration(p['elapsed_s'])}"
        left = (p["max_steps"] or 0) - (p["step"] or 0)
        if left > 0:
            said += f" · {left} training step{'s' if left != 1 else ''} to go"
        elif p["max_steps"]:  # measuring the model after training, saving
            said += f" · all {p['max_steps']} training steps done"
    elif row["status"] == "completed" and (row.get("summary") or {}).get("stopped_early"):
        width = 100.0  # early stopping ended it: finished, not stuck at a third of the way
        watched = (row.get("summary") or {}).get("watched", "held-out loss")
        said = (f"stopped early at step {p['step']} of {p['max_steps']}: the {watched} had stopped improving · "
                f"elapsed {format_duration(p['elapsed_s'])}")
    else:
        eta = format_duration(p["eta_s"]) if p["eta_s"] is not None else "after the first step"
        said = (f'step {p["step"]} of {p["max_steps"] or "?"} · {p["percent"]:.0f}% · '
                f'elapsed {format_duration(p["elapsed_s"])}' + (f" · ETA {eta}" if row["status"] == "running" else ""))
        if row["status"] == "running" and row.get("phase") == EVALUATING:
            said += f" · {EVALUATING}"
        said += slowed(row["status"], metrics)
    resumed = row.get("resumed_from")
    if resumed is not None and row["status"] != "queued":  # elapsed counts from the resume, said so
        said += (f" · resumed from the checkpoint at step {resumed}" if resumed else
                 " · resumed from the start: no checkpoint had been saved")
    return (f'<div class="run-progress"><div class="bar"><div class="fill" style="width:{width:.1f}%"></div></div>'
            f'<span>{said}</span></div>')


def lineage(studio, row: dict) -> list[str]:
    """Where a run started and what it learned from (and the votes behind that data)."""
    lines = []
    if row.get("parent_id"):
        parent = studio.get_run(row["parent_id"])
        what = f" ({method_label(parent['method'])})" if parent else ""
        lines.append(f"Started from run `{row['parent_id']}`{what}.")
    else:
        lines.append(f"Started from {model_title(row['model'])}.")
    dataset = studio.store.get_dataset(row["dataset_id"], deleted=True) if row.get("dataset_id") else None
    if dataset:
        gone = ", deleted since" if dataset["deleted"] else ""
        text = (f"Learned from **{literal(dataset_title(dataset))}** ({dataset['rows']} rows of {dataset['kind']} "
                f"data{gone})")
        origin = dataset["meta"].get("origin") or {}
        if origin.get("kind") == "chat votes":
            text += (f", made from {origin['votes']} chat votes between "
                     + " and ".join(chat_service.short_label(studio, m) for m in origin["models"]))
        lines.append(text + ".")
    return lines


def preference_summary(summary: dict) -> str | None:
    before, after = summary.get("eval_rewards/accuracies_before"), summary.get("eval_rewards/accuracies_after")
    if before is None or after is None:
        return None
    # a model that starts as its own reference (DPO, IPO) scores every pair exactly level: 0% "higher"
    # there is a tie, not a model preferring the wrong answers
    level = before == 0 and summary.get("eval_rewards/margins_before") == 0
    text = ("Held-out preference accuracy (preferred answer scored higher): "
            + ("no preference before (the model started as its reference: every pair scored level)"
               if level else f"{100 * before:.0f}% before") + f", {100 * after:.0f}% after")
    pairs = summary.get("eval_rows")
    if pairs:
        text += f" on {pairs} held-out pair{'s' if pairs != 1 else ''}"
        if pairs < 10:
            text += f" (few: each pair moves it by {100 / pairs:.0f} points)"
    if "eval_rewards/margins_after" in summary:
        text += f"; reward margin {summary['eval_rewards/margins_after']:.2f} (higher = clearer preference)"
    return text


FEW_HELDOUT = 10  # held-out rows under which the overfitting warning says how little it rests on


def heldout_size(studio, run_id: str) -> int | None:
    """How many rows (pairs) a run measures itself on: those it holds out of its dataset, or its dataset's
    own held-out file. None: not known (yet)."""
    run_dir = studio.run_dir(run_id)
    kept = read_json(run_dir / HELDOUT_ROWS)
    if kept is not None:
        return len(kept.get("heldout") or [])
    path = ((read_json(run_dir / JOB) or {}).get("dataset") or {}).get("heldout_path")
    try:
        return dataset_stats.count_rows(Path(path)) if path else None
    except (OSError, ValueError):  # its dataset deleted meanwhile (the panel asks every 2 s)
        return None


def aligned(method: str | None) -> bool:
    """Preference, good/bad or reward-function training of a model that writes replies (not a reward
    model): what people judge, in the end, is whether they prefer its replies."""
    spec = METHODS.get(method or "")
    return bool(spec) and spec.data_kind != "sft" and not spec.reward_model


def blind_line(studio, row: dict) -> str | None:
    """A finished run against the model it started from in blind votes: the verdict so far, or (after
    preference training, whose held-out numbers a newcomer could not read as better or worse) where
    to get one."""
    try:
        new, previous = chat_service.previous_model(studio, row["id"])
    except chat_service.ChatError:  # not finished, or a reward model
        return None
    votes = [v for v in chat_service.counted_votes(studio)
             if v.get("blind") and {v["model_a"], v["model_b"]} == {new, previous}]
    against = chat_service.short_label(studio, previous)
    if votes:
        (result,) = arena.win_rates(votes)
        result = result if result["first"] == new else arena.flip(result)
        return (f"**Blind votes against {against}:** {result['votes']} so far, it won {result['wins_first']}, lost "
                f"{result['wins_second']}, tied or both bad {result['ties']}: "
                f"{chat_service.win_rate_text(result, judged=True)}.")
    if not aligned(row["method"]):
        return None
    summary = row.get("summary") or {}
    # only the figures the panel shows: reinforcement learning has its mean reward, a run without held-out rows none
    guide = ("The mean reward above is a rough guide; w" if {"reward_first", "reward_last"} <= summary.keys() else
             "The held-out figures above are a rough guide; w"
             if {"eval_loss_before", "eval_loss_after"} <= summary.keys() or preference_summary(summary) else "W")
    return (f"**Did it help?** {guide}hether people prefer its replies is what a blind battle against {against} "
            "tells: press *Compare with the previous model*.")


def heldout_loss_line(summary: dict, metrics: list[dict], kind: str = "sft", imitated: float = 0.0) -> str:
    """Held-out loss before and after, and its lowest check when the run ended well above it (a
    finished run that memorised must not read as a plain success). `kind`: the method's kind of data. An SFT
    loss is the held-out answers' own, mostly their wording; a preference method's is its pairs' loss, named
    so (the sentence about the answers' wording was said of a DPO run's one held-out pair). `imitated`: the weight
    of the imitation of the preferred answers its loss adds (a walkthrough's DPO run read 4.4 falling to 2.3 in
    training beside a flat 0.9 held out, "held-out much better", where the one held-out pair's preferred answer
    was one the model already wrote)."""
    checks = [(m["eval_loss"], m["step"]) for m in metrics if "eval_loss" in m]
    lowest = min(checks) if checks else None
    best = (f"; it was lowest at step {lowest[1]}, {lowest[0]:.3f}"
            if lowest and lowest[0] < summary["eval_loss_after"] * (1 - WORSE_THAN_BEST / 2) else "")
    # a fall to a fraction read as near-perfect answers, beside fluent wrong facts in Chat (a walkthrough's
    # 2.815 to 0.221): the loss is mostly the answers' wording
    fell = kind == "sft" and summary["eval_loss_after"] < summary["eval_loss_before"] / 2
    named = ("loss (preference + imitation of the preferred answers)" if kind == "preference" and imitated else
             "preference loss" if kind == "preference" else "loss")
    return (f"Held-out {named}: {summary['eval_loss_before']:.3f} before, {summary['eval_loss_after']:.3f} after "
            f"(lower is better){best}"
            + (". It averages every token of the held-out answers, mostly their wording: a fact in them can still "
               "come out wrong, which asking it in Chat shows." if fell else "")
            + ("." + IMITATION_NOTE if kind == "preference" and imitated else ""))


CLEAR_BEFORE = 0.9  # held-out pairs a reward model ranked right before training: past this, the lead tells more


def ranked_line(summary: dict) -> str:
    """A reward model's held-out pairs: how many it ranks right, and by how much the preferred reply's score
    leads. "100% before, 100% after" said nothing of what training did (pairs that differ plainly are ranked
    right from the start); the lead it gained is what it learned."""
    before, after = summary.get("eval_accuracy_before"), summary["eval_accuracy_after"]
    said = ("Held-out pairs ranked right (preferred reply scored higher): "
            + (f"{100 * before:.0f}% before, " if before is not None else "")
            + f"{100 * after:.0f}% after, on {summary.get('eval_pairs', '?')} pairs (50% = chance)")
    lead_before, lead_after = summary.get("eval_margin_before"), summary.get("eval_margin_after")
    if lead_after is None:
        return said
    lead = (f"the preferred reply's score leads by {lead_before:.2f} before, {lead_after:.2f} after (on average)"
            if lead_before is not None else f"the preferred reply's score leads by {lead_after:.2f} (on average)")
    if lead_after < 0 or (lead_before is not None and lead_before < 0):  # a lead below 0 is the rejected one's
        lead = ("the preferred reply's score minus the rejected one's: "
                + (f"{lead_before:+.2f} before, " if lead_before is not None else "") + f"{lead_after:+.2f} after "
                "(on average)")
    if before is not None and before >= CLEAR_BEFORE:
        grew = lead_before is not None and lead_after > lead_before
        return (f"{said}: right before training already (the pairs differ in a way it saw at once); {lead}"
                + (", which is what training added: a wider lead tells the replies apart more surely." if grew
                   else "."))
    return f"{said}; {lead}."


def reward_line(summary: dict, functions: list[dict] | None) -> str:
    """Did the reward rise: its mean over the first and the last logged steps, and, for reward functions (each
    scores a reply from 0 to 1, times its weight), the most and least a reply can earn. "1.00" with two
    functions read as full marks, and the chart's last point (one step) differed from it without a word."""
    k = summary.get("reward_steps")
    over = (f"over its first {k} logged step{'s' if k != 1 else ''}", f"over its last {k}") if k else \
        ("in the first steps", "in the last")
    said = (f"Mean reward of the replies it wrote: {summary['reward_first']:.2f} {over[0]}, "
            f"{summary['reward_last']:.2f} {over[1]}")
    weights = [float(f.get("weight", 1.0)) for f in functions or []]
    if not weights:
        return f"{said} (higher is better)"
    best, worst = sum(w for w in weights if w > 0), sum(w for w in weights if w < 0)
    scale = (f"{len(weights)} function{'s' if len(weights) != 1 else ''}, each scoring a reply from 0 to 1"
             + (" times its weight" if any(w != 1 for w in weights) else ""))
    bounds = f"out of {best:.2f}" + (f", down to {worst:.2f}" if worst < 0 else "")
    return f"{said} ({bounds}: {scale}; higher is better)"


def status_markdown(studio, row: dict, metrics: list[dict]) -> str:
    lines = [f"**Run `{row['id']}`: {row['status']}**", *lineage(studio, row)]
    if row["error"]:
        lines.append(f"Error: {literal(row['error'])}")  # as written: log tails hold <module>, __init__, *
    if row.get("stalled_s"):
        lines.append(f"No heartbeat for {row['stalled_s']:.0f} s (busy saving or evaluating?).")
    summary = row.get("summary") or {}
    # early stopping kept its best check: what the warning advises has been done
    warning = None if summary.get("kept_step") else overfitting_warning(metrics)
    held = heldout_size(studio, row["id"]) if warning else None
    if warning and held is not None and held < 2:
        # one row's (or pair's) loss says nothing of memorising: a DPO run the studio had set to 10 epochs was told
        # to train fewer, beside 100% held-out accuracy and a rising margin (a newcomer's walkthrough). Said as a
        # rise after its lowest check: "went up" read as the whole run's, above "1.377 before, 1.148 after"
        lines.append("Held-out loss rose after its lowest check, on a single held-out row: too few to tell memorising from chance.")
    elif warning:
        if held is not None and held < FEW_HELDOUT:  # 2 rows' loss rises and falls by chance
            warning += (f" (Measured on only {held} held-out rows: a rough sign on so few; "
                        "a larger held-out fraction or more data measures it better.)")
        lines.append(f"⚠️ {warning}")
    if summary.get("kept_step"):
        lines.append(f"Early stopping: the result is the weights of step {summary['kept_step']}, where the "
                     f"{summary.get('watched', 'held-out loss')} was {summary.get('best', 'lowest')}; training went on "
                     f"to step {summary.get('steps', '?')} without beating it"
                     + (", then stopped." if summary.get("stopped_early") else ", its last step."))
    if "eval_loss_before" in summary and "eval_loss_after" in summary:
        method = METHODS.get(row.get("method"))
        lines.append(heldout_loss_line(summary, metrics, method.data_kind if method else "sft", imitation(row)))
    if preference_summary(summary):
        lines.append(preference_summary(summary))
    if "eval_accuracy_after" in summary:  # a reward model: how often it ranks the preferred reply higher
        lines.append(ranked_line(summary))
    if "reward_first" in summary and "reward_last" in summary:
        lines.append(reward_line(summary, (read_json(studio.run_dir(row["id"]) / JOB) or {}).get("rewards")))
    blind = blind_line(studio, row) if row["status"] == "completed" else None
    if blind:
        lines.append(blind)
    result = studio.result_dir(row["id"]) if row["status"] == "completed" else None
    if result is not None and result.name == "adapter":
        lines.append(adapter_lines(studio, row, result))
    elif result is not None:
        lines.append(f"Model saved in `{result}` (the Export tab writes it as one folder or one GGUF file to download)")
    return "\n\n".join(lines)


def adapter_lines(studio, row: dict, folder: Path) -> str:
    """Where the adapter is, its download (one .zip: on another machine, the folder's path was no use) and the
    code that loads it outside the studio."""
    name = adapter_download.archive_name(studio, row)
    link = download_link(adapter_download.url(row["id"], name), name, adapter_download.size(folder))
    code = adapter_download.load_code(studio, row, folder, name.removesuffix(".zip"))
    return (f"Adapter saved in `{folder}` · download it: {link}\n\n"
            f"Unzipped, it loads on its base model with PEFT:\n\n```python\n{code}\n```")


SAMPLE_COLUMNS = ["Prompt", "Reply", "Reward", "Each function's part"]
SAMPLE_WIDTHS = ["24%", "40%", "9%", "27%"]  # the reply and the parts readable, the reward never cut off


def reward_parts(studio, run_id: str | None) -> dict[str, tuple[str, float]]:
    """A reinforcement-learning run's reward functions: logged name -> (label, weight)."""
    job = read_json(studio.run_dir(run_id) / JOB) if run_id else None
    return rewards.parts((job or {}).get("rewards"))


def samples_table(studio, run_id: str | None) -> list[list] | None:
    """A reinforcement-learning run's newest replies with their rewards, each function's part of it
    (weight x score: the parts add up to the reward) (None for other runs)."""
    found = read_json(studio.run_dir(run_id) / SAMPLES) if run_id else None
    if not found:
        return None
    named = reward_parts(studio, run_id)

    def part(name, value, why):
        label, weight = named.get(name, (name, 1.0))
        return (f"{label} {weight * value:+.2f}" + (f" ({value:.2f} ×{weight:g})" if weight != 1 else "")
                + (f" — {why.get(name)}" if why.get(name) else ""))  # (the sandbox's reason for failed code)

    return [[s["prompt"], s["reply"], round(s["reward"], 3),
             "; ".join(part(name, value, s.get("why") or {}) for name, value in s["rewards"].items() if value is not None)]
            for s in found["samples"]]


def short_id(run_id: str) -> str:
    """r20261205-141357-98ac as r…98ac: its tail tells it from the others (the full id is in the table)."""
    found = re.fullmatch(r"r\d{8}-\d{6}-(\w+)", run_id)
    return f"r…{found.group(1)}" if found else run_id


def run_titles(studio, run_ids: list[str], most: int = 3) -> dict[str, str]:
    """Compared runs' legend titles: each run by what sets it apart, "r…98ac: batch size 8, epochs 3" (a
    walkthrough matched ids against the settings table to find which line was the batch-8 run)."""
    rows = config_diff(studio, run_ids)
    titles = {}
    for k, run_id in enumerate(run_ids):
        # (not a setting the run has not got: a LoRA run beside a DPO run read "beta (how far to move) -")
        own = [(setting, values[k]) for setting, *values in rows if values[k] != "-"][:most]
        said = [value if setting == "Method" else f"{setting[:1].lower()}{setting[1:]} {value}"
                for setting, whole in own for value in (whole if len(whole) <= 24 else whole[:23] + "…",)]
        titles[run_id] = f"{short_id(run_id)}: {', '.join(said)}" if said else short_id(run_id)
    return titles


def config_diff(studio, run_ids: list[str]) -> list[list]:
    """Settings that differ between the chosen runs: [setting, value per run]."""
    rows = [r for r in (studio.get_run(i) for i in run_ids) if r]
    if len(rows) < 2:
        return []
    datasets = studio.dataset_titles()
    methods = [r["method"] for r in rows]
    settings = {"Start from": [BUILT_IN if r["model"] in ("", "default") else r["model"] for r in rows],
                "Method": [method_label(m) for m in methods],
                "Dataset": [datasets.get(r["dataset_id"], r["dataset_id"]) for r in rows]}
    keys = sorted(set().union(*(r["params"] for r in rows)))
    labels = {key: setting_label(key, methods) for key in keys}
    for key in keys:
        # two settings one label names (GRPO's beta and PPO's kl_coef are both "KL leash"): each its own row,
        # told apart by its name (the second one's values replaced the first's)
        shared = sum(label == labels[key] for label in labels.values()) > 1
        settings[f"{labels[key]} ({key})" if shared else labels[key]] = [r["params"].get(key, "-") for r in rows]
    shown = {key: [f"{v:g}" if isinstance(v, float) else str(v) for v in values]  # 10 epochs, not 10.0
             for key, values in settings.items()}
    return [[key, *values] for key, values in shown.items() if len(set(values)) > 1]


def view(studio, run_id: str | None, drawn: int = -1):
    """(status, progress, figure, log, metrics count) for one run; the figure is None when `drawn` (the
    metrics count last drawn) is still current, as building it is most of a refresh's work."""
    if not run_id:
        return "No run selected yet: start one, or click a row in the table.", "", None, "", 0
    row = studio.get_run(run_id)
    if row is None:
        return f"Run `{run_id}` not found.", "", None, "", 0
    metrics = read_metrics(studio.run_dir(run_id))
    figure = (curves_figure({run_id: metrics}, {run_id: reward_parts(studio, run_id)},
                            {run_id: loss_objective(row)} if imitation(row) else None)
              if len(metrics) != drawn else None)
    return (status_markdown(studio, row, metrics), progress_html(row, metrics), figure,
            log_tail(studio.run_dir(run_id), 15), len(metrics))


def changed(values: dict, sent: dict | None) -> tuple[set, dict]:
    """Which of these values differ from what the page shows (`sent`), and the new `sent`. Every refresh of
    an unchanged table, log or chart still costs the browser a redraw, which competes with training for
    the CPU: only what changed is sent."""
    marks = {name: repr(value) for name, value in values.items()}
    return {name for name, mark in marks.items() if (sent or {}).get(name) != mark}, marks


def button_facts(studio, run_id: str | None, status: str | None) -> tuple:
    """What the buttons under the runs depend on: (status, method, whether its dataset was deleted)."""
    run = studio.store.get_run(run_id) if status else None  # its method (the live state is in the table)
    if run is None:
        return status, None, False
    return status, run["method"], bool(run["dataset_id"]) and not studio.store.get_dataset(run["dataset_id"])


def button_states(status: str | None, method: str | None = None, data_gone: bool = False) -> list:
    """Cancel, Resume, Continue, Compare, Chat: only what the selected run's state allows. A reward
    model scores replies instead of writing them: nothing to compare in a battle (Chat with it sets
    it as the Chat tab's scorer). A run whose dataset was deleted neither resumes nor continues.
    After preference or reward training the loop's next step, the blind battle against the model it
    started from, is the highlighted button (a newcomer took the highlighted Chat for it, and missed it)."""
    done = status == "completed"
    writes = method not in METHODS or not METHODS[method].reward_model
    next_step = aligned(method)
    return [gr.update(interactive=status in ACTIVE_STATUSES),
            gr.update(interactive=status in RESUMABLE_STATUSES and not data_gone),
            gr.update(interactive=done and not data_gone),
            gr.update(interactive=done and writes, variant="primary" if next_step else "secondary"),
            gr.update(interactive=done, variant="secondary" if next_step else "primary")]


RUN_ID = re.compile(r"\br\d{8}-\d{6}-[0-9a-f]{4}\b")  # studio.core._new_id("r")
CANCELLING = "Cancelling `{run_id}`: it saves a checkpoint, then stops."
RESUMING = "Resuming `{run_id}` from its newest checkpoint."


def action_after(studio, run_id: str | None, said: str | None):
    """What a button said about the selected run, once the run has done it: "Cancelling…" stood under
    the buttons long after the run had stopped. (gr.skip() while it still holds.)"""
    named = set(RUN_ID.findall(said or ""))
    if run_id and named and run_id not in named:  # about another run (the one selected before a Start)
        return ""
    refused = re.match(r"\*\*Could not do that:\*\* run (\S+) is (\w+);", said or "")
    if refused and refused.group(1) == run_id:  # "is running; only a cancelled …": true until it is not
        row = studio.get_run(run_id)
        return gr.skip() if row and row["status"] == refused.group(2) else ""
    if not run_id or said not in (CANCELLING.format(run_id=run_id), RESUMING.format(run_id=run_id)):
        return gr.skip()
    row = studio.get_run(run_id)
    status = row and row["status"]
    if said.startswith("Cancelling") and status == "cancelled":
        if newest_checkpoint(studio.run_dir(run_id)) is None:  # cancelled while queued or loading
            return f"Cancelled `{run_id}` before its first checkpoint: *Resume* starts it over."
        return f"Cancelled `{run_id}` at step {row['step']}: *Resume* continues from its newest checkpoint."
    if status == "failed":
        return ""  # the status above says what went wrong
    if said.startswith("Cancelling") and status == "completed":
        return f"`{run_id}` had reached its last step before the cancel, so it completed and saved its result."
    if said.startswith("Resuming") and status in ("running", "completed", "failed", "cancelled"):
        return ""  # the progress line says where it resumed from
    return gr.skip()


def run_action(studio, action_fn, done: str, already: tuple = ()):
    """A button handler: apply action_fn to the selected run, answer in one sentence. A run found in one
    of the `already` states was set going by this button a moment ago (pressed twice): said as done, not
    as the refusal that replaced it ("is running; only a cancelled … can be resumed")."""
    def handler(run_id):
        if not run_id:
            return "Select a run first."
        try:
            action_fn(run_id)
        except RunError as err:
            row = studio.get_run(run_id)
            if row and row["status"] in already:
                return done.format(run_id=run_id)
            return f"**Could not do that:** {quoted(err)}"
        return done.format(run_id=run_id)
    return handler


def build(studio, selected: gr.State):
    table = gr.Dataframe(headers=RUN_COLUMNS, value=runs_table(studio), interactive=False, wrap=True,
                         column_widths=RUN_WIDTHS, elem_id="runs-table")
    status = gr.Markdown(elem_id="run-status")
    bar = gr.HTML(elem_id="run-progress")
    with gr.Row():
        cancel = gr.Button("Cancel", size="sm", elem_id="run-cancel")
        resume = gr.Button("Resume", size="sm", elem_id="run-resume")
        more = gr.Number(value=1, label="More epochs", scale=0, min_width=110, elem_id="run-more-epochs")
        cont = gr.Button("Continue training", size="sm", elem_id="run-continue")
        compare_previous = gr.Button("Compare with the previous model", size="sm", elem_id="run-compare-previous")
        chat_with = gr.Button("Chat with this run", size="sm", variant="primary", elem_id="run-chat")
    action = gr.Markdown(elem_id="run-action")
    plot = gr.Plot(label="Training curves", elem_id="run-curves")
    samples = gr.Dataframe(headers=SAMPLE_COLUMNS, interactive=False, wrap=True, visible=False, max_height=320,
                           column_widths=SAMPLE_WIDTHS,
                           label="Newest replies the model wrote while training, and their rewards",
                           elem_id="run-samples")
    log = gr.Textbox(label="Log (last lines)", lines=8, max_lines=15, interactive=False, elem_id="run-log")
    with gr.Accordion("Compare runs", open=False):
        compare = gr.Dropdown(choices=run_choices(runs_table(studio)), multiselect=True,
                              label="Runs to overlay", elem_id="compare-runs")
        along = gr.Radio([("Training steps", "step"), ("Epochs", "epoch")], value="step", label="Along",
                         elem_id="compare-along",
                         info="Runs with another batch size or dataset take a different number of steps per epoch: "
                              "by epoch they line up (picked for you when they differ).")
        overlay = gr.Plot(label="Overlaid curves", elem_id="compare-curves")
        diff = gr.Dataframe(headers=["Setting", "Values"], interactive=False, label="Settings that differ")
    shown = gr.State(-1)  # metrics count last drawn, so an unchanged plot is not redrawn
    listed = gr.State([])  # run ids the Compare runs list offers, refreshed when runs come or go
    timer = gr.Timer(2.0)  # ticks while the Train tab is shown (app.py)
    buttons = [cancel, resume, cont, compare_previous, chat_with]

    sent = gr.State({})  # what the page shows now, per output, so unchanged ones are not sent again

    def refresh(run_id, drawn, known, shown_now=None):
        text, bar_html, fig, tail, count = view(studio, run_id, drawn)
        figure = fig if fig is not None else (gr.skip() if count == drawn else None)
        rows = runs_table(studio)
        ids = [r[0] for r in rows]
        offered = gr.update(choices=run_choices(rows)) if ids != known else gr.skip()
        status_of = next((r[1] for r in rows if r[0] == run_id), None)
        replies = samples_table(studio, run_id)
        values = {"rows": rows, "text": text, "bar": bar_html, "log": tail, "replies": replies,
                  "status": button_facts(studio, run_id, status_of)}
        fresh, now = changed(values, shown_now)
        rows, text, bar_html, tail = (values[k] if k in fresh else gr.skip() for k in ("rows", "text", "bar", "log"))
        sampled = (gr.skip() if "replies" not in fresh else
                   gr.update(value=replies, visible=True) if replies else gr.update(visible=False))
        buttons_now = button_states(*values["status"]) if "status" in fresh else [gr.skip()] * len(buttons)
        return (rows, text, bar_html, figure, tail, count, offered, ids, sampled, now, *buttons_now)

    outputs = [table, status, bar, plot, log, shown, compare, listed, samples, sent, *buttons]

    # the finished runs' ids: a change is a run finishing, which the Train tab's estimate learns from (as
    # the server started: a page's first refresh is no change, and works out no estimate again)
    finished = gr.State([r["id"] for r in studio.list_runs() if r["status"] == "completed"])

    def tick(run_id, drawn, known, shown_now, said, finished_before):
        out = refresh(run_id, drawn, known, shown_now)
        done = [r["id"] for r in studio.list_runs() if r["status"] == "completed"]
        return (*out, action_after(studio, run_id, said), gr.skip() if done == finished_before else done)

    timer.tick(tick, [selected, shown, listed, sent, action, finished], [*outputs, action, finished],
               show_progress="hidden")

    def on_select(evt: gr.SelectData, rows, known, said):
        run_id = rows.iloc[evt.index[0], 0] if hasattr(rows, "iloc") else rows[evt.index[0]][0]
        # what a button said about another run goes ("Cancelling r1…" under r2 read as r2's)
        return (run_id, *refresh(run_id, -1, known), "" if run_id not in (said or "") else gr.skip())

    table.select(on_select, [table, listed, action], [selected, *outputs, action])

    cancel.click(run_action(studio, studio.cancel, CANCELLING), selected, action)
    # (Resume is offered only for a run that is not queued or running)
    resume.click(run_action(studio, studio.resume, RESUMING, already=tuple(ACTIVE_STATUSES)), selected, action)

    def on_continue(run_id, epochs):
        if not run_id:
            return "Select a run first.", gr.skip()
        try:
            if epochs is None or not 0.1 <= float(epochs) <= 100:
                raise RunError(f"More epochs is {epochs}; it must be from 0.1 to 100")
            new_id = studio.continue_run(run_id, float(epochs))
        except (RunError, ConfigError, DataError, ModelError) as err:  # (its base model gone: a ModelError)
            return f"**Could not do that:** {quoted(err)}", gr.skip()
        return f"Started run `{new_id}`, continuing `{run_id}`.", new_id

    cont.click(on_continue, [selected, more], [action, selected])

    def overlaid(run_ids, axis=None):
        """(figure, the axis drawn along): by `axis`, else by the one that lines the runs up."""
        runs = {i: read_metrics(studio.run_dir(i)) for i in run_ids or []}
        if not runs:
            return None, gr.skip()
        parts = {i: reward_parts(studio, i) for i in runs}
        objectives = {i: loss_objective(row) for i in runs if (row := studio.get_run(i))}
        axis = axis or best_axis(runs)
        return curves_figure(runs, parts, objectives, axis, run_titles(studio, list(runs))), axis

    def records(run_ids) -> list:
        """What the overlay was drawn from: each run's records so far (read incrementally, cached)."""
        return [[i, len(read_metrics(studio.run_dir(i)))] for i in run_ids or []]

    def on_compare(run_ids):
        rows = config_diff(studio, run_ids or [])
        headers = ["Setting", *(run_ids or [])] if rows else ["Setting", "Values"]
        figure, axis = overlaid(run_ids)
        return figure, gr.update(value=rows, headers=headers), axis, records(run_ids)

    overlay_of = gr.State(None)  # records() the overlay was drawn from
    compare.change(on_compare, compare, [overlay, diff, along, overlay_of])
    along.input(lambda run_ids, axis: overlaid(run_ids, axis)[0], [compare, along], overlay)

    def on_compare_tick(run_ids, axis, drawn_from):
        """Runs compared while they train: the overlay follows their curves (drawn once, it stayed frozen)."""
        now = records(run_ids)
        # other runs than it was drawn from: a pick whose own drawing (and axis) is still on its way; drawn here
        # with the axis from before it, it came last and stayed ("step" beside Along: epochs, CI)
        if not run_ids or now == drawn_from or [i for i, _n in drawn_from or []] != list(run_ids):
            return gr.skip(), gr.skip()
        return overlaid(run_ids, axis)[0], now

    timer.tick(on_compare_tick, [compare, along, overlay_of], [overlay, overlay_of], show_progress="hidden")

    def on_load():
        # Reattach: a reopened page shows the newest active run, full curve so far, no click.
        runs = studio.list_runs()
        active = next((r["id"] for r in runs if r["status"] in ("running", "queued")), None)
        run_id = active or (runs[0]["id"] if runs else None)
        return (run_id, *refresh(run_id, -1, None))

    return on_load, [selected, *outputs], {"compare_previous": compare_previous, "chat_with": chat_with,
                                           "action": action, "timer": timer, "finished": finished}
