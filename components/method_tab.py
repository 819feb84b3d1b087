"""Method tab: every method side by side for the chosen model and dataset (trainable share,
expected peak memory, time per epoch), one method's card in plain words, and a button that
takes it to the Train tab."""

from __future__ import annotations

import time

import gradio as gr

from components import advisor_panel
from pipelines.data import DataError
from pipelines.methods import METHODS, ConfigError
from pipelines.models import ModelError
from studio import method_service as ms

ERRORS = (ConfigError, DataError, ModelError, OSError, ValueError)
PAUSE_S = 3.0  # how often a paused measurement looks whether the run has ended


def card(studio, model: str, dataset: str | None, key: str) -> str:
    method = METHODS[key]
    merge = ("Its result can be merged into the base model (one ordinary model file, no speed cost)."
             if method.mergeable else
             "Its result stays a separate file applied at run time." if method.artifact == "adapter" else
             "Its result is a whole new copy of the model.")
    family = "" if method.family == method.label else f" <small>({method.family} family)</small>"
    lines = [f"### {method.label}{family}", method.summary, f"**When to use:** {method.when_to_use}",
             merge]
    try:
        est = ms.estimate(studio, model or "default", key, None, dataset)
    except ERRORS as err:
        lines.append(f"**Could not estimate:** {err}")
    else:
        lines.append(f"At its default settings on this model: {ms.summary_line(est)}")
        lines.append(f"<small>Peak memory = {ms.breakdown(est)}. Measured on a one- and two-block copy of "
                     "the model, then scaled to its depth and your longest batch.</small>")
    return "\n\n".join(lines)


def build(studio, train_model, train_dataset, train_method, tabs, train_tab_id, train_form):
    gr.Markdown("Pick how the model learns. Most methods learn from examples (SFT); they differ in how much "
                "of the model changes, how much memory that takes and how the result is saved. Not sure? **LoRA** "
                "is the default for good reason; **QLoRA** when memory is short. The *Preference* family learns "
                "from pairs of answers where one is preferred (chat votes, labels): **DPO** first.")
    advisor_panel.build(studio, train_model, train_dataset, train_method, tabs, train_tab_id, train_form)
    progress = gr.Markdown(elem_id="method-progress")
    table = gr.Dataframe(headers=ms.TABLE_HEADERS, interactive=False, wrap=True, elem_id="method-table", max_height=2000,
                         label="All methods at their default settings (for the model and dataset chosen in Train); "
                               "click a row to read about it")
    with gr.Row():
        choice = gr.Dropdown(choices=[(m.label, k) for k, m in METHODS.items()], value="lora",
                             label="Method", elem_id="method-choice")
        use = gr.Button("Train with this method", variant="primary", elem_id="method-use")
    details = gr.Markdown(elem_id="method-card")
    with gr.Accordion("Named in the field, not trainable here (HyperTuning, Quiet-STaR; ESFT for a dense model)", open=False):
        elsewhere = gr.Markdown(elem_id="method-elsewhere")

    def on_open(model, dataset, key):
        """`key`: the Train tab's method, which the tab's own picker and card start on (it showed
        LoRA while Train was on KTO)."""
        total, keys = len(METHODS), ms.catalogue_order(studio, dataset)  # the table's rows, in its order
        key = key if key in METHODS else "lora"
        try:
            yield gr.skip(), card(studio, model, dataset, key), ms.elsewhere(studio, model), (
                f"Measuring each method on this machine (a few seconds each the first time): 0 of {total}…"), key
            table_rows = ms.catalogue(studio, model or "default", dataset)
            kind = ms.dataset_kind(studio, dataset)
            count = sum(kind in ms.fitting_kinds(k) for k in keys) if kind else 0
            fitting = (f" {count} of them train on {kind} data like the dataset chosen in Train (✓ in *Data*); "
                       "the others need data of another kind." if kind else "")
            for done in range(total):
                # measuring takes both cores for seconds: it waits while a run trains (the tab stops it
                # when another tab is opened); a method measured before shows at once
                waiting = False
                while not ms.measured(studio, model or "default", keys[done]) and studio.busy():
                    # said once; then nothing new to show (a step between yields is where leaving the tab stops it)
                    yield gr.skip(), gr.skip(), gr.skip(), gr.skip() if waiting else (
                        f"{done} of {total} methods measured. Measuring the rest waits while a run trains "
                        "(it would slow the run down); it goes on by itself when the run ends."), gr.skip()
                    waiting = True
                    time.sleep(PAUSE_S)
                rows = next(table_rows)
                said = (f"Measuring each method on this machine: {done + 1} of {total} done, next "
                        f"{METHODS[keys[done + 1]].label}…" if done + 1 < total else
                        f"All {total} methods measured for this model and dataset.{fitting}")
                yield rows, gr.skip(), gr.skip(), said, gr.skip()
        except ERRORS as err:
            yield gr.skip(), f"**Could not estimate:** {err}", gr.skip(), "", gr.skip()

    labels = {m.label: k for k, m in METHODS.items()}

    def on_row(evt: gr.SelectData):
        """A click on a row picks that method, by its name (the rows' order follows the data chosen);
        the card follows through the dropdown's change."""
        name = evt.row_value[0] if evt.row_value else None
        return labels.get(name, gr.skip())

    table.select(on_row, None, choice)

    def on_choice(model, dataset, key):
        return card(studio, model, dataset, key)

    choice.change(on_choice, [train_model, train_dataset, choice], details, preprocess=False)  # (see app.py)
    use.click(lambda key: (key, gr.Tabs(selected=train_tab_id)), choice, [train_method, tabs])
    return on_open, [train_model, train_dataset, train_method], [table, details, elsewhere, progress, choice]
