"""Train tab: pick model, data and method, set its parameters, start a run, watch it."""

from __future__ import annotations

import time

import gradio as gr

from components.forms import build_form
from pipelines.data import DataError
from pipelines.events import log_tail
from pipelines.methods import METHODS, ConfigError
from pipelines.models import ModelError
from studio.core import SAMPLES

RUN_COLUMNS = ["Run", "Status", "Method", "Progress", "Dataset", "Started"]


def dataset_choices(studio) -> list[tuple[str, str]]:
    samples = [(f"Sample: {label}", key) for key, (_f, kind, label) in SAMPLES.items() if kind == "sft"]
    imported = [(f"{d['name']} ({d['rows']} rows)", d["id"]) for d in studio.store.list_datasets()
                if d["kind"] == "sft" and d["name"] not in SAMPLES]
    return samples + imported


def runs_table(studio) -> list[list]:
    rows = []
    datasets = {d["id"]: d["name"] for d in studio.store.list_datasets()}
    for r in studio.list_runs():
        progress = f"{r['step']}/{r['max_steps']}" if r.get("max_steps") else "-"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        rows.append([r["id"], r["status"], r["method"], progress, datasets.get(r["dataset_id"], "?"), started])
    return rows


def run_summary(studio, run_id: str | None) -> tuple[str, str]:
    """Markdown status of one run and its log tail."""
    if not run_id:
        return "No run selected yet: start one, or click a row in the table.", ""
    row = studio.get_run(run_id)
    if row is None:
        return f"Run `{run_id}` not found.", ""
    lines = [f"**Run `{run_id}`: {row['status']}**"]
    if row.get("max_steps"):
        pct = 100 * row["step"] / row["max_steps"]
        lines.append(f"Step {row['step']} of {row['max_steps']} ({pct:.0f}%)")
    if row["error"]:
        lines.append(f"Error: {row['error']}")
    summary = row.get("summary") or {}
    if "eval_loss_before" in summary and "eval_loss_after" in summary:
        lines.append(f"Held-out loss: {summary['eval_loss_before']:.3f} before, "
                     f"{summary['eval_loss_after']:.3f} after (lower is better)")
    if row["status"] == "completed":
        lines.append(f"Adapter saved in `{studio.adapter_dir(run_id)}`")
    return "\n\n".join(lines), log_tail(studio.run_dir(run_id), 15)


def build(studio) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            gr.Markdown("### 1. What to tune")
            model = gr.Textbox(value="default", label="Base model",
                               info="'default' is the built-in SmolLM2-135M-Instruct; or a local "
                                    "Hugging Face folder (safetensors), or a hub id like org/name.",
                               elem_id="train-model")
            dataset = gr.Dropdown(choices=dataset_choices(studio), value="quillpad_faq", label="Dataset",
                                  info="Examples to learn from: a bundled sample or one you imported.",
                                  elem_id="train-dataset")
            method = gr.Dropdown(choices=[(m.label, k) for k, m in METHODS.items()], value="lora",
                                 label="Method", elem_id="train-method")
            method_help = gr.Markdown(_method_help("lora"))
            gr.Markdown("### 2. Settings")
            forms, groups = {}, {}
            for key, spec in METHODS.items():
                with gr.Group(visible=(key == "lora")) as group:
                    forms[key] = build_form(spec.params)
                groups[key] = group
            start = gr.Button("Start training", variant="primary", elem_id="start-training")
            message = gr.Markdown(elem_id="train-message")
        with gr.Column(scale=1):
            gr.Markdown("### 3. Runs")
            table = gr.Dataframe(headers=RUN_COLUMNS, value=runs_table(studio), interactive=False,
                                 elem_id="runs-table")
            status = gr.Markdown(elem_id="run-status")
            log = gr.Textbox(label="Log (last lines)", lines=10, max_lines=15, interactive=False,
                             elem_id="run-log")
    selected = gr.State(None)  # the run this browser is looking at (an id only)
    timer = gr.Timer(2.0)

    order = [(key, name) for key in METHODS for name in forms[key]]
    inputs = [forms[key][name] for key, name in order]

    def on_method(key):
        return [_method_help(key)] + [gr.update(visible=(k == key)) for k in groups]

    method.change(on_method, method, [method_help, *groups.values()])

    def on_start(model_spec, dataset_ref, method_key, *values):
        params = {name: v for (key, name), v in zip(order, values) if key == method_key}
        try:
            run_id = studio.start_run(model=model_spec, dataset=dataset_ref, method=method_key, params=params)
        except (ConfigError, DataError, ModelError) as err:
            return f"**Could not start:** {err}", gr.skip(), gr.skip(), gr.skip(), gr.skip()
        text, tail = run_summary(studio, run_id)
        return f"Started run `{run_id}`.", run_id, runs_table(studio), text, tail

    start.click(on_start, [model, dataset, method, *inputs], [message, selected, table, status, log])

    def on_select(evt: gr.SelectData, rows):
        run_id = rows.iloc[evt.index[0], 0] if hasattr(rows, "iloc") else rows[evt.index[0]][0]
        return (run_id, *run_summary(studio, run_id))

    table.select(on_select, table, [selected, status, log])

    def on_tick(run_id):
        return (runs_table(studio), *run_summary(studio, run_id))

    timer.tick(on_tick, selected, [table, status, log], show_progress="hidden")

    def on_load():
        # Reattach: a reopened page shows the newest active run without a click.
        runs = studio.list_runs()
        active = next((r["id"] for r in runs if r["status"] in ("running", "queued")), None)
        run_id = active or (runs[0]["id"] if runs else None)
        return (gr.update(choices=dataset_choices(studio)), run_id, runs_table(studio),
                *run_summary(studio, run_id))

    return on_load, [dataset, selected, table, status, log]


def _method_help(key: str) -> str:
    spec = METHODS[key]
    merge = "can be merged into the base model" if spec.mergeable else "stays a separate file"
    return f"{spec.summary}\n\n*When to use:* {spec.when_to_use} *(Result {merge}.)*"
