"""The Train form is one set of fields shared by every method: each method sees exactly its own
parameters, in its own order, labelled as it declares them, and reads back only its own values."""

from __future__ import annotations

import gradio as gr
import pytest

from components.form_memory import carried_edits, switched
from components.forms import MethodForm, field_order
from pipelines.methods import METHODS, describe


def declared(key):
    infos = describe(METHODS[key].params)
    return [i for i in infos if not i.advanced] + [i for i in infos if i.advanced]


def test_every_method_keeps_its_own_order_and_shares_fields_by_name():
    order = field_order(METHODS)
    assert len(order) == len(set(order)) == len({(i.name, i.advanced) for k in METHODS for i in declared(k)})
    for key in METHODS:
        places = [order.index((i.name, i.advanced)) for i in declared(key)]
        assert places == sorted(places), key
    # far fewer fields than one copy per method (the page that had one took ~8 s to open on two cores)
    assert len(order) * 5 < sum(len(declared(k)) for k in METHODS)


@pytest.fixture(scope="module")
def form():
    with gr.Blocks():
        yield MethodForm(METHODS)


def test_a_method_sees_its_fields_labelled_its_way_and_reads_back_only_them(form):
    # 'beta' is DPO's "how far to move" and ORPO's "preference weight": one field, two labels
    for key in ("dpo", "orpo", "lora"):
        ups = form.updates(key, {})
        mine = {id(w): info for info in describe(METHODS[key].params) for w in [form.by_method[key][info.name]]}
        for widget, up in zip(form.components, ups):
            assert up["visible"] is (id(widget) in mine)
            if id(widget) in mine:
                info = mine[id(widget)]
                assert (up["label"], up["info"]) == (info.label, info.help)
                assert up["value"] == (str(info.default) if isinstance(widget, gr.Textbox) else info.default)
        assert ups[-1]["visible"] is any(i.advanced for i in describe(METHODS[key].params))  # the Advanced section
    assert form.by_method["dpo"]["beta"] is form.by_method["orpo"]["beta"]
    # GRPO's loss type is advanced and DPO's is not: two fields, each where its method puts it
    assert form.by_method["dpo"]["loss_type"] is not form.by_method["grpo"]["loss_type"]
    grpo_loss = form.updates("grpo", {})[form.components.index(form.by_method["grpo"]["loss_type"])]
    assert [value for _label, value in grpo_loss["choices"]] == next(
        i.choices for i in describe(METHODS["grpo"].params) if i.name == "loss_type")

    values = [f"v{n}" for n in range(len(form.components))]
    got = form.values("lora", values)
    assert list(got) == [i.name for i in describe(METHODS["lora"].params)]
    assert got["r"] == values[form.components.index(form.by_method["lora"]["r"])]


def test_a_change_of_method_shows_what_it_kept_and_carries_shared_edits(form):
    lr = form.components.index(form.by_method["dora"]["learning_rate"])
    epochs = form.components.index(form.by_method["dora"]["num_train_epochs"])
    stored = {"lora": {"learning_rate": 0.005, "num_train_epochs": 2.0}, "dora": {"learning_rate": 0.0007}}
    ups = switched(form, "dora", "lora", stored)
    # DoRA's own learning rate; LoRA's edited epochs (a shared setting) come along
    assert ups[lr]["value"] == 0.0007 and ups[epochs]["value"] == 2.0
    assert carried_edits("lora", stored["lora"], "dora") == {"num_train_epochs": 2.0}
    # back to LoRA: its own learning rate again; nothing kept: the defaults
    assert switched(form, "lora", "dora", stored)[lr]["value"] == 0.005
    assert switched(form, "dora", None, {})[lr]["value"] == describe_default("dora", "learning_rate")


def describe_default(key, name):
    return next(i.default for i in describe(METHODS[key].params) if i.name == name)
