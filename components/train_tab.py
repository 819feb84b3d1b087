"""Train tab: pick model, data and method, set its parameters, start a run; the runs panel
beside it shows every run live."""

from __future__ import annotations

import gradio as gr

from components import runs_panel
from components.forms import build_form
from pipelines.data import DataError
from pipelines.methods import METHODS, ConfigError
from pipelines.models import ModelError
from studio.core import SAMPLES


def dataset_choices(studio) -> list[tuple[str, str]]:
    samples = [(f"Sample: {label}", key) for key, (_f, kind, label) in SAMPLES.items() if kind == "sft"]
    imported = [(f"{d['name']} ({d['rows']} rows)", d["id"]) for d in studio.store.list_datasets()
                if d["kind"] in ("sft", "text") and d["name"] not in SAMPLES]
    return samples + imported


def _method_help(key: str) -> str:
    spec = METHODS[key]
    merge = "can be merged into the base model" if spec.mergeable else "stays a separate file"
    return f"{spec.summary}\n\n*When to use:* {spec.when_to_use} *(Result {merge}.)*"


def build(studio):
    selected = gr.State(None)  # the run this browser is looking at (an id only)
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("### 1. What to tune")
            model = gr.Textbox(value="default", label="Base model",
                               info="'default' is the built-in SmolLM2-135M-Instruct; or a local "
                                    "Hugging Face folder (safetensors), or a hub id like org/name.",
                               elem_id="train-model")
            dataset = gr.Dropdown(choices=dataset_choices(studio), value="quillpad_faq", label="Dataset",
                                  info="Examples to learn from: a bundled sample or one you imported "
                                       "in the Data tab.",
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
        with gr.Column(scale=3):
            gr.Markdown("### 3. Runs")
            on_load_runs, run_outputs = runs_panel.build(studio, selected)

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
            return f"**Could not start:** {err}", gr.skip()
        return f"Started run `{run_id}`.", run_id

    start.click(on_start, [model, dataset, method, *inputs], [message, selected])

    def on_load():
        return (gr.update(choices=dataset_choices(studio)), *on_load_runs())

    return on_load, [dataset, *run_outputs]
