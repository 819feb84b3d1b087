"""build_app(studio) -> gr.Blocks: the tabs, wired to one Studio object."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from components import data_tab, train_tab

CSS_PATH = Path(__file__).resolve().parent.parent / "assets" / "studio.css"


def build_app(studio) -> gr.Blocks:
    with gr.Blocks(title="Tune Studio") as app:
        gr.Markdown("# Tune Studio\nFine-tune a language model on your own examples, then compare it "
                    "with the base.")
        with gr.Tab("Train"):
            on_load_train, train_outputs = train_tab.build(studio)
        with gr.Tab("Data"):
            on_load_data, data_outputs, imported = data_tab.build(studio)
        # a new dataset is offered for training at once
        train_dataset = train_outputs[0]
        imported.then(lambda: gr.update(choices=train_tab.dataset_choices(studio)), None, train_dataset)

        def on_load():
            return (*on_load_train(), *on_load_data())

        app.load(on_load, None, [*train_outputs, *data_outputs])
    return app
