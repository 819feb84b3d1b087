"""*Help me choose* (top of the Method tab): the user says what the tuned model should do better; the
advisor (pipelines/advisor.py) answers with a method, its key settings and why, for the model and
dataset chosen in Train and this machine's memory; one button puts it all into the Train form."""

from __future__ import annotations

import html

import gradio as gr

from components import form_memory, train_tab
from pipelines.advisor import GOALS
from pipelines.data import DataError
from pipelines.methods import ConfigError
from pipelines.models import ModelError
from studio import advise

# the Train form's fields the advice sets (each advisable method's own, where it has them)
# (besides them, any other setting the advice gives: GRPO's Variety while training was shown at 0.7 and left at 1.0)
ADVISED = ("r", "num_train_epochs", "max_length", "per_device_train_batch_size", "gradient_accumulation_steps",
           "learning_rate")


def build(studio, train_model, train_dataset, train_method, tabs, train_tab_id, train_form) -> None:
    form, previous, kept, wanted = train_form["form"], train_form["previous"], train_form["kept"], train_form["wanted"]
    with gr.Accordion("Help me choose", open=False, elem_id="advisor"):
        goal = gr.Radio(choices=[(text, key) for key, text in GOALS.items()], value="facts",
                        label="What should the tuned model do better?", elem_id="advisor-goal",
                        info="The advice reads the model and dataset chosen in the Train tab and this machine's memory.")
        ask = gr.Button("Advise me", elem_id="advisor-ask")
        answer = gr.Markdown(elem_id="advisor-answer")
        apply = gr.Button("Use these settings in Train", variant="primary", visible=False, elem_id="advisor-apply")
    advised = gr.State(None)  # {"method": key, "settings": {...}}: this browser's last advice

    shown_goal = form_memory.PerPage()  # the question each page's radio shows now

    def on_ask(goal_key, model, dataset, request: gr.Request):
        shown_goal.note(request, goal_key)
        try:
            advice = advise.advise(studio, goal_key, model or "default", dataset)
        except (ConfigError, DataError, ModelError, OSError, ValueError) as err:
            said, kept = f"**Could not advise:** {html.escape(str(err))}", None
        else:
            said = advise.as_markdown(advice)
            kept = ({"method": advice.method, "settings": advice.settings, "dataset": advice.dataset}
                    if advice.method else None)
        if shown_goal.of(request) not in (goal_key, None):  # the question changed while this was worked out: the
            return gr.skip(), gr.skip(), gr.skip()  # answer would stand under the new one
        return said, kept, gr.update(visible=kept is not None)

    # the last click is always answered: with the default ("once") a click while the answer before was
    # still being worked out was dropped, and the old advice stood under the new question
    # the Train tab's picks as the page sent them: preprocessed, a dataset the page still showed after a
    # change of the list (another method) was refused with a traceback in the server's log
    ask.click(on_ask, [goal, train_model, train_dataset], [answer, advised, apply], trigger_mode="always_last",
              preprocess=False)

    def on_goal(goal_key, request: gr.Request):
        """Advice answers the question it was asked: another question clears it until Advise is pressed."""
        shown_goal.note(request, goal_key)
        return "", None, gr.update(visible=False)

    goal.input(on_goal, goal, [answer, advised, apply], queue=False, show_progress="hidden")

    def on_apply(advice, stored, request: gr.Request):
        if not advice:
            return (gr.skip(),) * (6 + len(form.outputs))
        train_form["set_ups"].end(request)  # what a Train-on-these press set up is not what the estimate is for now
        key, settings = advice["method"], advice["settings"]
        stored = stored if isinstance(stored, dict) else {}
        own = stored.get(key) if isinstance(stored.get(key), dict) else {}
        # the advised fields: the advice's value, or the default where it leaves one out; the method's
        # other settings stay as they were kept
        values = {**own, **{name: settings.get(name, default) for name, default in form.defaults(key).items()
                            if name in ADVISED or name in settings}}
        # `previous` = the advised method: nothing of the method shown before is carried over it; the
        # kept settings are what a change of method shows, so they hold the advice too
        # the dataset the advice was for (the user's own pairs when the one in Train was examples): set
        # through `wanted`, which the method's change reads
        ref = advice.get("dataset")
        options = train_tab.dataset_choices(studio, key)
        if ref not in [value for _label, value in options]:
            ref = None  # removed since the advice: the Train tab keeps (or picks) its own
        # (the advice's own epochs stand: they already follow the advisor's few-steps rule)
        # (the dataset list set here either way: with `previous` set to the method, its change sets
        # only what follows from the method itself)
        data = (train_tab.method_on(studio, key, ref, more_epochs=False)[:2] if ref
                else (gr.update(choices=options, value=train_tab.first_dataset(options)), gr.skip()))
        return (key, *form.updates(key, values), form_memory.started_afresh(stored, key, values), *data, key,
                gr.Tabs(selected=train_tab_id))

    # the method after what its change reads (`previous`, the fields, what is kept, the dataset wanted)
    apply.click(on_apply, [advised, kept], [previous, *form.outputs, kept, train_dataset, wanted, train_method, tabs])
