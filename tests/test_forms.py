"""The Train form is one set of fields shared by every method: each method sees exactly its own
parameters, in its own order, labelled as it declares them, and reads back only its own values."""

from __future__ import annotations

import gradio as gr
import pytest

from components.form_memory import carried_edits, started_afresh, switched
from components.forms import MethodForm, field_order, preprocessed, slot_of
from pipelines.methods import METHODS, describe


def declared(key):
    infos = describe(METHODS[key].params)
    return [i for i in infos if not i.advanced] + [i for i in infos if i.advanced]


def test_every_method_keeps_its_own_order_and_shares_fields_by_name():
    order = field_order(METHODS)
    assert len(order) == len(set(order)) == len({slot_of(i) for k in METHODS for i in declared(k)})
    for key in METHODS:
        places = [order.index(slot_of(i)) for i in declared(key)]
        assert places == sorted(places), key
    # far fewer fields than one copy per method (the page that had one took ~8 s to open on two cores)
    assert len(order) * 5 < sum(len(declared(k)) for k in METHODS)


def test_what_early_stopping_watches_comes_right_after_its_patience():
    """Declared in a mix-in, the choice came three fields after the patience it goes with (dataclasses put
    a mix-in's fields where the mix-in comes); `after` moves it."""
    watching = [key for key in METHODS if "early_stopping_on" in {i.name for i in describe(METHODS[key].params)}]
    assert {"dpo", "kto", "orpo", "simpo"} <= set(watching)
    for key in watching:
        names = [i.name for i in describe(METHODS[key].params)]
        assert names[names.index("early_stopping_patience") + 1] == "early_stopping_on", key


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
    # GRPO's loss type is advanced and DPO's is not, KTO's has other choices: a field each (one dropdown
    # whose choices changed with the method let the page send KTO's choice against GRPO's list)
    loss_types = {form.by_method[k]["loss_type"]._id for k in ("dpo", "kto", "grpo")}
    assert len(loss_types) == 3 and form.by_method["kto"]["loss_type"] is form.by_method["kto_full"]["loss_type"]

    values = [f"v{n}" for n in range(len(form.components))]
    got = form.values("lora", values)
    assert list(got) == [i.name for i in describe(METHODS["lora"].params)]
    assert got["r"] == values[form.components.index(form.by_method["lora"]["r"])]


def test_a_shared_edit_keeps_following_through_a_method_whose_default_it_equals(form):
    """2 epochs typed on LoRA went to DPO (its default is 2) and from there IA3 showed its own 8: the run
    was 4x as long as asked. Also 3 epochs through Full fine-tuning (default 3)."""
    def epochs_of(ups, key):
        return ups[form.components.index(form.by_method[key]["num_train_epochs"])]["value"]

    def fields_of(key, values):
        fields = [None] * len(form.components)
        for name, widget in form.by_method[key].items():
            fields[form.components.index(widget)] = values.get(name, default(key, name))
        return fields

    for typed, through in ((2, "dpo"), (3, "full")):
        assert default(through, "num_train_epochs") == typed != default("ia3", "num_train_epochs")
        ups, kept = switched(form, through, "lora", {}, fields_of("lora", {"num_train_epochs": typed}))
        assert epochs_of(ups, through) == typed
        ups, kept = switched(form, "ia3", through, kept, fields_of(through, {"num_train_epochs": typed}))
        assert epochs_of(ups, "ia3") == typed, through
    # a method's own default is not carried on as if typed: DPO's 2 does not follow to LoRA
    ups, kept = switched(form, "lora", "dpo", {}, fields_of("dpo", {}))
    assert epochs_of(ups, "lora") == default("lora", "num_train_epochs")
    # a method set up afresh (the quick run, the advice) carries nothing on: 2 epochs typed on LoRA went
    # to DPO, then ORPO was advised with its own settings, and IA3 after it showed 2
    _ups, kept = switched(form, "dpo", "lora", {}, fields_of("lora", {"num_train_epochs": 2}))
    advised = {**form.defaults("orpo"), "num_train_epochs": 2}
    kept = started_afresh(kept, "orpo", advised)
    ups, _kept = switched(form, "ia3", "orpo", kept, fields_of("orpo", advised))
    assert epochs_of(ups, "ia3") == default("ia3", "num_train_epochs")


def test_a_change_of_method_shows_what_it_kept_and_carries_shared_edits(form):
    lr = form.components.index(form.by_method["dora"]["learning_rate"])
    epochs = form.components.index(form.by_method["dora"]["num_train_epochs"])
    stored = {"lora": {"learning_rate": 0.005, "num_train_epochs": 2.0}, "dora": {"learning_rate": 0.0007}}
    ups, kept = switched(form, "dora", "lora", stored)
    # DoRA's own learning rate; LoRA's edited epochs (a shared setting) come along, and are kept for DoRA
    assert ups[lr]["value"] == 0.0007 and ups[epochs]["value"] == 2.0
    assert kept["dora"]["num_train_epochs"] == 2.0 and kept["lora"] == stored["lora"]
    assert carried_edits("lora", stored["lora"], "dora") == {"num_train_epochs": 2.0}
    # early stopping set on DPO went back to 0 on KTO; how often held-out rows are checked goes along too
    assert carried_edits("dpo", {"early_stopping_patience": 2, "eval_steps": 3, "beta": 0.5}, "kto") == {
        "early_stopping_patience": 2, "eval_steps": 3}
    # back to LoRA: its own learning rate again; nothing kept: the defaults
    assert switched(form, "lora", "dora", stored)[0][lr]["value"] == 0.005
    assert switched(form, "dora", None, {})[0][lr]["value"] == default("dora", "learning_rate")

    # the fields as the page had them are the method before's newest values (its last save may not
    # have come back yet): LoRA's epochs typed as 7 come along, and LoRA's values are kept
    fields = [None] * len(form.components)
    for name, widget in form.by_method["lora"].items():
        fields[form.components.index(widget)] = {"num_train_epochs": 7.0}.get(name, default("lora", name))
    ups, kept = switched(form, "dora", "lora", stored, fields)
    assert ups[epochs]["value"] == 7.0 and kept["lora"]["num_train_epochs"] == 7.0


def default(key, name):
    return next(i.default for i in describe(METHODS[key].params) if i.name == name)


def test_values_the_page_sent_are_read_as_gradio_reads_them(form):
    # a change of method reads the fields unprocessed (its dataset may be one the new list lacks),
    # then reads them as every other event would: a whole-number field gives an int
    r = form.components.index(form.by_method["lora"]["r"])
    loss = form.components.index(form.by_method["dpo"]["loss_type"])
    raw = [None] * len(form.components)
    raw[r], raw[loss] = 8.0, "not-a-choice"
    got = preprocessed(form.components, raw)
    assert got[r] == 8 and isinstance(got[r], int)
    assert got[loss] == "not-a-choice"  # refused by the field: passed on as sent, never an error
    assert len(got) == len(raw)


def test_an_import_is_what_its_kind_comes_back_to_as_the_train_tab_offers_it(studio, tmp_path):
    """A bundled sample imported on the Data tab is offered as the sample (its catalogue row is not
    listed): kept by its id, the pick before it was lost. Raw text goes with the SFT methods."""
    from components.form_memory import imported_pick
    from components.train_tab import dataset_choices
    from studio.core import SAMPLES_DIR

    kept = {"preference": "quillpad_preferences"}
    sample = studio.import_dataset(SAMPLES_DIR / "signoff_preferences.jsonl", name="signoff_preferences")
    assert imported_pick(studio, sample["id"], kept) == {"preference": "signoff_preferences"}
    assert "signoff_preferences" in [value for _label, value in dataset_choices(studio, "dpo")]
    notes = tmp_path / "notes.txt"
    notes.write_text("Quillpad keeps notes.\n\nIt syncs them.\n")
    text = studio.import_dataset(notes, name="notes")
    assert text["kind"] == "text"
    assert imported_pick(studio, text["id"], kept) == {**kept, "sft": text["id"]}
    assert imported_pick(studio, None, kept) is None  # the import made nothing


def test_an_estimate_made_before_the_page_shows_a_set_up_is_for_the_set_up(form):
    """A Train-on-these press notes what its change of method will show (DPO from its own kept settings, at
    least the epochs a few votes need, nothing carried from the SFT method before); an estimate whose fields
    still hold the method before is made for that, until the page sends those settings or the person picks."""
    from types import SimpleNamespace

    from components.form_memory import SetUps, same_value, values_after

    kept = {"dpo": {"beta": 0.3, "num_train_epochs": 2}, "lora": {"num_train_epochs": 1}}
    after = values_after(form, "dpo", kept, {"num_train_epochs": 10})
    assert after["beta"] == 0.3 and after["num_train_epochs"] == 10  # its own, the epochs raised to 10
    assert {k: v for k, v in after.items() if k not in ("beta", "num_train_epochs")} == \
        {k: v for k, v in form.defaults("dpo").items() if k not in ("beta", "num_train_epochs")}
    # what the press sets, as its note says, also over more epochs kept (a press before set 10 for fewer votes)
    assert values_after(form, "dpo", {"dpo": {"num_train_epochs": 12}}, {"num_train_epochs": 5})["num_train_epochs"] == 5

    page, other = SimpleNamespace(session_hash="p1"), SimpleNamespace(session_hash="p2")
    set_ups = SetUps()
    set_ups.note(page, "dpo", "votes-1", after)
    stale = {**form.defaults("dpo"), "num_train_epochs": 1.0}  # the SFT run's one epoch, still in the field
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale) == after
    assert set_ups.for_estimate(other, "dpo", "votes-1", stale) == stale  # another page's own
    assert set_ups.for_estimate(page, "lora", "votes-1", stale) == stale  # asked before the press
    assert set_ups.for_estimate(page, "dpo", "quillpad", stale) == stale
    shown = {**after, "num_train_epochs": 10.0}  # as the page sends it
    assert set_ups.for_estimate(page, "dpo", "votes-1", shown) == shown
    # the step chained after the change of method reads the fields from before it, also after the above
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale, settled=True) == after
    # both came; a read from before the change answered late (held back behind an estimate measuring the
    # model, CI showed "× 1" after "× 10") is known by its settings, those of a read before
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale) == after
    assert set_ups.for_estimate(page, "dpo", "votes-1", shown) == shown
    three = {**shown, "num_train_epochs": 3.0}  # other settings (an edit answered before its save): its own
    assert set_ups.for_estimate(page, "dpo", "votes-1", three) == three
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale) == stale  # and the set-up is over
    set_ups.note(page, "dpo", "votes-1", after)  # the other order: that step first, then the fields shown
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale, settled=True) == after
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale) == after
    assert set_ups.for_estimate(page, "dpo", "votes-1", shown) == shown
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale) == after
    set_ups.end(page)  # the person's own 1 epoch typed: its save ends it
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale) == stale
    set_ups.note(page, "dpo", "votes-1", after)
    set_ups.end(page)  # a pick or an edit of the person's own
    assert set_ups.for_estimate(page, "dpo", "votes-1", stale) == stale
    assert same_value(10, 10.0) and same_value("8", 8) and not same_value(True, 1.0) and not same_value("a", "b")


def test_a_set_up_the_page_never_shows_ends_on_its_own(form, monkeypatch):
    """A set-up whose settings the page cannot send back as set (a kept value written by an older version)
    never ended, and overrode every estimate of the page, the advice applied since included: it ends after
    `SetUps.LIFETIME`. An end asked for an older set-up leaves one noted since."""
    from types import SimpleNamespace

    from components import form_memory
    from components.form_memory import SetUps

    clock = [100.0]
    monkeypatch.setattr(form_memory.time, "monotonic", lambda: clock[0])
    page = SimpleNamespace(session_hash="p1")
    after = {**form.defaults("dpo"), "num_train_epochs": 10}
    own = {**form.defaults("dpo"), "num_train_epochs": 4}  # the advice's, applied since
    set_ups = SetUps()
    set_ups.note(page, "dpo", "votes-1", after)
    assert set_ups.for_estimate(page, "dpo", "votes-1", own) == after
    clock[0] += SetUps.LIFETIME + 1
    assert set_ups.for_estimate(page, "dpo", "votes-1", own) == own
    set_ups.note(page, "dpo", "votes-1", after)
    older = set_ups.of(page)
    set_ups.note(page, "dpo", "votes-2", after)  # another press
    set_ups.end(page, only=older)
    assert set_ups.for_estimate(page, "dpo", "votes-2", own) == after


def test_a_kept_setting_the_method_no_longer_has_is_not_shown(form):
    """Settings kept in the browser by an older version, renamed or removed since, stay out of what a change of
    method shows and keeps (they reached the estimate, which refused them)."""
    from components.form_memory import switched, values_after

    kept = {"dpo": {"beta": 0.3, "an_old_setting": 7}}
    assert "an_old_setting" not in values_after(form, "dpo", kept, None)
    _updates, stored = switched(form, "dpo", "lora", kept)
    assert stored["dpo"]["beta"] == 0.3 and "an_old_setting" not in stored["dpo"]
