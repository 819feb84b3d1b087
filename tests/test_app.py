"""The app builds on a temporary workspace, with a widget for every declared parameter."""

from __future__ import annotations

import gradio as gr

from pipelines.methods import METHODS, describe
from studio.app import build_app


def test_app_builds_with_generated_form(studio):
    app = build_app(studio)
    assert isinstance(app, gr.Blocks)
    elem_ids = {c.get("props", {}).get("elem_id") for c in app.config["components"]}
    for method in METHODS.values():
        for info in describe(method.params):
            assert f"param-{info.name}" in elem_ids, info.name
    assert {"start-training", "runs-table", "train-dataset"} <= elem_ids


def test_app_holds_no_state_between_workspaces(tmp_path):
    from studio.core import Studio

    a, b = Studio(tmp_path / "a"), Studio(tmp_path / "b")
    a.import_dataset(__import__("tests.conftest", fromlist=["FAQ"]).FAQ, name="mine")
    from components.train_tab import dataset_choices

    assert ("mine (120 rows)", a.store.list_datasets()[0]["id"]) in dataset_choices(a)
    assert all(value != a.store.list_datasets()[0]["id"] for _label, value in dataset_choices(b))
