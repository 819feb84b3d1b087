"""build_app(studio) -> gr.Blocks: the tabs, wired to one Studio object."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from components import train_tab

CSS_PATH = Path(__file__).resolve().parent.parent / "assets" / "studio.css"


def build_app(studio) -> gr.Blocks:
    with gr.Blocks(title="Tune Studio") as app:
        gr.Markdown("# Tune Studio\nFine-tune a language model on your own examples, then compare it "
                    "with the base.")
        with gr.Tab("Train"):
            on_load, outputs = train_tab.build(studio)
        app.load(on_load, None, outputs)
    return app
