"""Deleting a dataset from the Data tab: a button under the list, then a question that says what the
deletion touches (the runs that learned from it) before anything is removed."""

from __future__ import annotations

from components.text import literal, quoted

import time

import gradio as gr

from pipelines.data import DataError
from studio import dataset_service
from studio.core import dataset_title

# a second press of "Delete it", sent before the first one's answer hid the button, says nothing new
AGAIN_WITHIN_S = 5.0


def deleted_elsewhere(studio, dataset_id) -> str | None:
    """What the page says of a dataset it still lists that was deleted since (None: it was not)."""
    row = studio.store.get_dataset(dataset_id, deleted=True) if dataset_id else None
    if row and row["deleted"]:
        return f"**{literal(dataset_title(row))}** was deleted (in another window or from the command line)."
    return None


def ask(studio, dataset_id, choices):
    """(question box, question, message, dataset list, dataset asked about) for a press of the Delete button."""
    row = studio.store.get_dataset(dataset_id) if dataset_id else None
    if row is None:
        elsewhere = deleted_elsewhere(studio, dataset_id)
        if elsewhere:
            return gr.update(visible=False), "", elsewhere, gr.update(choices=choices(), value=None), None
        return gr.update(visible=False), "", "Pick a dataset above to delete it.", gr.skip(), None
    found = dataset_service.users(studio, row["id"])
    refused = dataset_service.blocker(studio, row, found)
    if refused:
        return gr.update(visible=False), "", f"**Not deleted:** {refused}.", gr.skip(), None
    question = (f"Delete **{literal(dataset_title(row))}** ({row['rows']} rows of {row['kind']} data)? The studio's "
                "copy of it is deleted (the file it was imported from is not touched) and it leaves every list; "
                f"{dataset_service.effects(found)}. This cannot be undone.")
    return gr.update(visible=True), question, "", gr.skip(), row["id"]


def delete(studio, dataset_id, choices):
    """(question box, message, dataset list, dataset asked about) once "Delete it" is pressed.
    `choices`: the dataset list as it is after a deletion (a function of the studio)."""
    if not dataset_id:
        return gr.update(visible=False), gr.skip(), gr.skip(), None
    try:
        row, found = dataset_service.delete(studio, dataset_id)
    except DataError as err:
        gone = studio.store.get_dataset(dataset_id, deleted=True)
        if not (gone and gone["deleted"]):
            return gr.update(visible=False), f"**Not deleted:** {quoted(err)}.", gr.skip(), None
        listed = gr.update(choices=choices(), value=None)
        if time.time() - gone["deleted"] < AGAIN_WITHIN_S:  # this page's own press, again
            return gr.update(visible=False), gr.skip(), listed, None
        return gr.update(visible=False), deleted_elsewhere(studio, dataset_id), listed, None
    said = f"Deleted **{literal(dataset_title(row))}**: {dataset_service.effects(found)}."
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

    start.click(lambda ref: ask(studio, ref, choices), chosen, [box, question, message, chosen, asked])
    no.click(lambda: (gr.update(visible=False), None), None, [box, asked], queue=False, show_progress="hidden")
    # another dataset shown (picked, imported): the question was about the one before, and so was what was
    # said ("Pick a dataset above…"); a list emptied by the deletion keeps its "Deleted …"
    chosen.change(lambda ref: (gr.update(visible=False), "" if ref else gr.skip(), None), chosen,
                  [box, message, asked], queue=False, show_progress="hidden")
    return yes.click(lambda ref: delete(studio, ref, choices), asked, [box, message, chosen, asked])
