"""*Help me choose* (top of the Method tab): the user says what the tuned model should do better; the
advisor (pipelines/advisor.py) answers with a method, its key settings and why, for the model and
dataset chosen in Train and this machine's memory; one button puts it all into the Train form."""

from __future__ import annotations

import html

import gradio as gr

from pipelines.advisor import GOALS, candidates
from pipelines.data import DataError
from pipelines.methods import METHODS, ConfigError, describe
from pipelines.models import ModelError
from studio import advise

# the Train form's fields the advice sets (each advisable method's own, where it has them)
ADVISED = ("r", "num_train_epochs", "max_length", "per_device_train_batch_size", "gradient_accumulation_steps",
           "learning_rate")
ADVISABLE = list(dict.fromkeys(k for goal in GOALS for k in candidates(goal)))


def build(studio, train_model, train_dataset, train_method, tabs, train_tab_id, train_form) -> None:
    forms, previous = train_form["forms"], train_form["previous"]
    fields = [(key, name) for key in ADVISABLE for name in ADVISED if name in forms[key]]
    with gr.Accordion("Help me choose", open=False, elem_id="advisor"):
        goal = gr.Radio(choices=[(text, key) for key, text in GOALS.items()], value="facts",
                        label="What should the tuned model do better?", elem_id="advisor-goal",
                        info="The advice reads the model and dataset chosen in the Train tab and this machine's memory.")
        ask = gr.Button("Advise me", elem_id="advisor-ask")
        answer = gr.Markdown(elem_id="advisor-answer")
        apply = gr.Button("Use these settings in Train", variant="primary", visible=False, elem_id="advisor-apply")
    advised = gr.State(None)  # {"method": key, "settings": {...}}: this browser's last advice

    def on_ask(goal_key, model, dataset):
        try:
            advice = advise.advise(studio, goal_key, model or "default", dataset)
        except (ConfigError, DataError, ModelError, OSError, ValueError) as err:
            return f"**Could not advise:** {html.escape(str(err))}", None, gr.update(visible=False)
        kept = {"method": advice.method, "settings": advice.settings} if advice.method else None
        return advise.as_markdown(advice), kept, gr.update(visible=kept is not None)

    ask.click(on_ask, [goal, train_model, train_dataset], [answer, advised, apply])

    def on_apply(kept):
        if not kept:
            return (gr.skip(),) * (3 + len(fields))
        key, settings = kept["method"], kept["settings"]
        defaults = {info.name: info.default for info in describe(METHODS[key].params)}
        ups = []
        for k, name in fields:
            if k != key:
                ups.append(gr.skip())
                continue
            value = settings.get(name, defaults[name])  # what the advice leaves out stays at its default
            ups.append(gr.update(value=str(value) if isinstance(forms[k][name], gr.Textbox) else value))
        # `previous` = the advised method: nothing of the method shown before is carried over it
        return (key, key, *ups, gr.Tabs(selected=train_tab_id))

    apply.click(on_apply, advised, [train_method, previous, *[forms[k][n] for k, n in fields], tabs])
