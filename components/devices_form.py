"""The Devices section of the Train tab: how many processes a run uses and how they split the work
(pipelines/devices.py declares every field and explains each strategy)."""

from __future__ import annotations

import gradio as gr

from components.forms import widget
from pipelines.devices import Devices, gpu_count, machine_text, strategy_choices
from pipelines.methods import describe


def build() -> dict[str, gr.components.Component]:
    """The devices fields, folded away (most runs use one device); name -> component."""
    gpus = gpu_count()
    widgets = {}
    with gr.Accordion("Devices: several GPUs or machines", open=False, elem_id="train-devices"):
        gr.Markdown(machine_text(gpus), elem_id="devices-machine")
        for info in describe(Devices):
            if info.name == "strategy":
                widgets[info.name] = gr.Dropdown(choices=strategy_choices(gpus), value=info.default,
                                                 label=info.label, info=info.help, elem_id="devices-strategy")
            else:
                widgets[info.name] = widget(info, prefix="devices-")
    return widgets
