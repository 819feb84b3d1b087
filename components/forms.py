"""A method's parameter declaration turned into Gradio widgets (help right beside each field)."""

from __future__ import annotations

import gradio as gr

from pipelines.methods import describe


def widget(info, prefix: str = "param-"):
    label = info.label
    if info.choices is not None:
        explained = info.choice_help or {}
        choices = [(f"{c} — {explained[c]}" if c in explained else str(c), c) for c in info.choices]
        return gr.Dropdown(choices=choices, value=info.default, label=label, info=info.help,
                           elem_id=f"{prefix}{info.name}")
    if info.type is bool:
        return gr.Checkbox(value=info.default, label=label, info=info.help, elem_id=f"{prefix}{info.name}")
    if info.type in (int, float):
        # no minimum/maximum here: Gradio's own refusal ("Value 0 is less than minimum value 0.1")
        # does not say which field; the declaration's check does, when Start is pressed
        return gr.Number(
            value=info.default, label=label, info=info.help,
            step=info.step or (1 if info.type is int else None), precision=0 if info.type is int else None,
            elem_id=f"{prefix}{info.name}",
        )
    return gr.Textbox(value=str(info.default), label=label, info=info.help, elem_id=f"{prefix}{info.name}")


def build_form(params_cls) -> dict[str, gr.components.Component]:
    """Widgets for every declared parameter, advanced ones folded away; name -> component."""
    infos = describe(params_cls)
    widgets = {}
    for info in (i for i in infos if not i.advanced):
        widgets[info.name] = widget(info)
    with gr.Accordion("Advanced settings", open=False):
        for info in (i for i in infos if i.advanced):
            widgets[info.name] = widget(info)
    return widgets
