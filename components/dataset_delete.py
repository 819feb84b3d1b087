"""Deleting a dataset from the Data tab: a button under the list, then a question that says what the
deletion touches (the runs that learned from it) before anything is removed."""

from __future__ import annotations

import time

import gradio as gr

from pipelines.data import DataError
from studio.core import dataset_title, deletion_effects

# a second press of "Delete it", sent before the first one's answer hid the button, says nothing new
AGAIN_WITHIN_S = 5.0


def ask(studio, dataset_id):
    """(question box, question, message, dataset asked about) for a press of the Delete button."""
    row = studio.store.get_dataset(dataset_id) if dataset_id else None
    if row is None:
        return gr.update(visible=False), "", "Pick a dataset above to delete it.", None
    users = studio.dataset_users(row["id"])
    refused = studio.deletion_blocker(row, users)
    if refused:
        return gr.update(visible=False), "", f"**Cannot delete it now:** {refused}.", None
    question = (f"Delete **{dataset_title(row['name'])}** ({row['rows']} rows of {row['kind']} data)? Its files "
                f"leave this machine and it leaves every list; {deletion_effects(users)}. This cannot be undone.")
    return gr.update(visible=True), question, "", row["id"]


def delete(studio, dataset_id, choices):
    """(question box, message, dataset list, dataset asked about) once "Delete it" is pressed.
    `choices`: the dataset list as it is after a deletion (a function of the studio)."""
    if not dataset_id:
        return gr.update(visible=False), gr.skip(), gr.skip(), None
    users = studio.dataset_users(dataset_id)
    try:
        row = studio.delete_dataset(dataset_id)
    except DataError as err:
        gone = studio.store.get_dataset(dataset_id, deleted=True)
        if gone and gone["deleted"] and time.time() - gone["deleted"] < AGAIN_WITHIN_S:
            return gr.update(visible=False), gr.skip(), gr.skip(), None
        return gr.update(visible=False), f"**Not deleted:** {err}.", gr.skip(), None
    said = f"Deleted **{dataset_title(row['name'])}**: {deletion_effects(users)}."
    return gr.update(visible=False), said, gr.update(choices=choices(), value=None), None


def build(studio, chosen, choices):
    """The button and its question, under the Data tab's dataset list `chosen`. Returns the event of a
    deletion (what shows datasets elsewhere follows it)."""
    asked = gr.State(None)  # the dataset the question is about (the list may change meanwhile)
    start = gr.Button("Delete this dataset…", size="sm", variant="secondary", elem_id="data-delete")
    with gr.Group(visible=False) as box:
        question = gr.Markdown(elem_id="data-delete-question")
        with gr.Row():
            yes = gr.Button("Delete it", variant="stop", size="sm", elem_id="data-delete-yes")
            no = gr.Button("Keep it", size="sm", elem_id="data-delete-no")
    message = gr.Markdown(elem_id="data-delete-message")

    start.click(lambda ref: ask(studio, ref), chosen, [box, question, message, asked])
    no.click(lambda: (gr.update(visible=False), None), None, [box, asked], queue=False, show_progress="hidden")
    # another dataset picked: the question was about the one before, and so was what was said
    chosen.input(lambda: (gr.update(visible=False), "", None), None, [box, message, asked], queue=False,
                 show_progress="hidden")
    return yes.click(lambda ref: delete(studio, ref, choices), asked, [box, message, chosen, asked])
