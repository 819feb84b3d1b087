"""The Train form remembers itself: what was picked and typed survives a page reload (kept in this
browser's localStorage, never on the server), each method keeps its own settings, and settings you
changed that every method shares (epochs, batch size, ...) follow you when you switch methods."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from collections import OrderedDict

import gradio as gr

from pipelines.methods import METHODS, describe
from pipelines.methods.training import Training
from studio.core import SAMPLES, is_sample

# Settings that mean the same for every method and are the ones people change, so an edit carries
# over when the method changes. Not the learning rate: its right value depends on the method (full
# tuning wants ~100x less).
CARRIED = {"num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
           "eval_fraction", "eval_steps", "early_stopping_patience", "seed"}
assert CARRIED <= {f.name for f in dataclasses.fields(Training)}
PREFIX = "tune-studio-train-"


def defaults(key: str) -> dict:
    return {info.name: info.default for info in describe(METHODS[key].params)}


CARRYING = "_carried"  # in the kept settings, beside the methods: the shared settings a switch carried last


def carried_edits(old_key: str | None, old_values: dict | None, new_key: str, carrying: dict | None = None) -> dict:
    """The shared settings changed away from the old method's defaults that the new method also has,
    and those still at the value a switch carried into the old method (`carrying`): 2 epochs typed on
    LoRA went to DPO, whose default is 2, and from there IA3 showed its own 8."""
    if not old_key or old_key not in METHODS or not old_values or old_key == new_key:
        return {}
    before, target = defaults(old_key), defaults(new_key)
    carrying = carrying if isinstance(carrying, dict) else {}
    return {name: value for name, value in old_values.items()
            if name in CARRIED and name in target and name in before and value is not None
            and (value != before[name] or name in carrying and carrying[name] == value)}


def secret(studio) -> str:
    """What this browser's kept values are sealed with: a fixed key per workspace, so a restarted
    studio can still read them."""
    return hashlib.sha256(str(studio.home).encode()).hexdigest()[:32]


class PerPage:
    """A value the server keeps for each page (Gradio's session), the oldest pages forgotten first."""

    KEEP = 512  # pages remembered

    def __init__(self):
        self._by_page: OrderedDict[str, object] = OrderedDict()

    def _put(self, request, value) -> None:
        page = getattr(request, "session_hash", None)
        if page:
            self._by_page[page] = value
            self._by_page.move_to_end(page)
            while len(self._by_page) > self.KEEP:
                self._by_page.popitem(last=False)

    def _get(self, request):
        return self._by_page.get(getattr(request, "session_hash", None) or "")

    def note(self, request, value) -> None:
        self._put(request, value)

    def of(self, request):
        return self._get(request)

    def end(self, request, only=None) -> None:
        """Forget the page's value (`only`: if it is still that one, not one put since)."""
        page = getattr(request, "session_hash", None) or ""
        if only is None or self._by_page.get(page) is only:
            self._by_page.pop(page, None)


class ShownMethods(PerPage):
    """The method each page last switched to, noted by the server as the switch starts. A page's load
    answers with the dataset list of the method the page sent with the load; a method picked while that
    answer was on its way had its list replaced by the old method's (GRPO offered the SFT datasets, CI).
    The answer lists the method noted here instead, read as it is sent. (A gr.State is no help: it is
    read before the handler runs and written after the switch's handler returns.)"""


class SetUps(PerPage):
    """What a Train-on-these button set up on each page, until the page shows it: the method, the dataset
    and the settings its change of method will put in the fields (`values_after`). That change comes a step
    after the button's reply, and an estimate made meanwhile (the model and the dataset change with the reply)
    read the method before's fields: DPO with the SFT run's one epoch, "Only 1 training step", for seconds
    before the 10 epochs set. Such an estimate is made for what was set up instead (`for_estimate`) until both
    an estimate with those settings and the one chained after the change (which reads the fields from before
    it, and can come after the other) have come. Even then, a read of the fields from before the change that
    is answered late (an estimate the page held back behind one measuring the model, CI) is known by its
    settings, those of such a read seen before, and is made for what was set up too. A pick or an edit of the
    person's own ends it at once, other settings estimated once it has shown end it, and so does `LIFETIME`
    (a kept value the page cannot send back as set never shows, and the advice applied since set other
    settings: the estimate stood for the press's)."""

    LIFETIME = 60.0  # seconds: the page catches up in a few, under load in tens
    STALE_KEPT = 4  # the reads from before the change remembered (they are the same fields, read again)

    def note(self, request, method: str, dataset_ref: str, values: dict) -> None:
        self._put(request, {"method": method, "dataset": dataset_ref, "values": dict(values), "shown": False,
                            "settled": False, "stale": [], "at": time.monotonic()})

    def for_estimate(self, request, method: str, dataset_ref, params: dict, settled: bool = False) -> dict:
        """The settings to estimate for: what was set up while the page can still send the fields from before
        it, else the page's own (`params`). `settled`: asked by the step chained after the change of method."""
        setup = self._get(request)
        if setup and time.monotonic() - setup["at"] > self.LIFETIME:
            self.end(request, only=setup)
            return params
        if not setup or setup["method"] != method or setup["dataset"] != dataset_ref:
            return params  # (an estimate asked before the press, answered after it)
        shown = same_values(params, setup["values"])
        set_up = {**params, **setup["values"]}
        if setup["shown"] and setup["settled"]:  # the page shows it: only a late read from before is not its own
            if shown:
                return params
            if any(same_values(params, stale) and same_values(stale, params) for stale in setup["stale"]):
                return set_up
            self.end(request, only=setup)  # other settings: the page's own from now on
            return params
        if not shown and len(setup["stale"]) < self.STALE_KEPT:
            setup["stale"].append(dict(params))
        setup["shown"] |= shown
        setup["settled"] |= settled
        return params if shown else set_up


def same_values(params: dict, values: dict) -> bool:
    """Every one of `values` as `params` holds it (see `same_value`)."""
    return all(same_value(params.get(name), value) for name, value in values.items())


def same_value(a, b) -> bool:
    """A field's value as the page sent it and as a handler set it (10.0 and 10, "8" and 8)."""
    if isinstance(a, bool) or isinstance(b, bool):  # (True == 1.0 in Python)
        return a is b
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def values_after(form, key: str, stored, settings: dict | None) -> dict:
    """The settings a change to method `key` shows when it starts afresh (a Train-on-these button's carry=False
    `chosen`): what `switched` puts in the fields then, whatever the page's fields held."""
    return switched(form, key, None, stored, carry=False, settings=settings)[1][key]


def states(studio) -> tuple:
    """This browser's kept picks and settings (localStorage), and the method shown before the current
    one. Made before the method switch, which reads them."""
    picked = gr.BrowserState({}, storage_key=f"{PREFIX}picks", secret=secret(studio))
    # every method's values in one stored dict: {method: {name: value}}, and CARRYING
    kept = gr.BrowserState({}, storage_key=f"{PREFIX}settings", secret=secret(studio))
    previous = gr.State("lora")
    # the dataset set together with a method (`chosen`), by a reload, the quick run, the advice or a
    # Train-on-these button: the method's change that follows still reads the page's dataset from before
    wanted = gr.State(None)
    return picked, kept, previous, wanted


def chosen(key: str, dataset_ref: str | None, carry: bool = True, settings: dict | None = None) -> dict:
    """What a handler that sets the method and the dataset together puts into `wanted` (dataset None:
    the page's own, else the one its kind comes back to). carry=False: the method starts from its own
    kept settings (else its defaults), without the shared edits made on the method before (a
    Train-on-these button: one epoch set for a quick SFT run made a one-step DPO run). `settings`: values
    the handler sets on top, over what was kept (more epochs for a few votes). Each one has its own id: the
    change of method applies it once (the page can send that change twice; see train_tab.on_method)."""
    return {"method": key, "dataset": dataset_ref, "id": uuid.uuid4().hex[:12],
            **({} if carry else {"carry": False}), **({"settings": settings} if settings else {})}


def started_afresh(stored, key: str, values: dict) -> dict:
    """What is kept once a handler set a method up with its own settings (the quick run, the advice):
    `values` kept for it, and nothing carried on from before (a batch size typed on DPO still followed
    to ORPO after a quick run)."""
    return {**(stored if isinstance(stored, dict) else {}), key: values, CARRYING: {}}


def imported_pick(studio, dataset_id: str | None, by_kind) -> dict | None:
    """What each kind of data comes back to once an import made this dataset (None: it made none): the
    import, by the kind the methods that use it train on (raw text: the SFT methods'). A bundled sample
    imported is offered as the sample, by its name."""
    row = studio.store.get_dataset(dataset_id) if dataset_id else None
    if not row:
        return None
    return with_dataset(by_kind, "sft" if row["kind"] == "text" else row["kind"],
                        row["name"] if is_sample(row) else dataset_id)


def switched(form, new_key: str, old_key: str | None, stored, fields: list | None = None,
             carry: bool = True, settings: dict | None = None) -> tuple[list, dict]:
    """The form for a newly chosen method, and what is kept after the change: the new method shows
    what was kept for it (else its defaults), with the shared settings edited on the method before
    carried over. `fields`: every field's value as the page had it, which still holds the method
    before (read from the page, not from what was kept: a save of its last edit may still be on
    its way)."""
    stored = dict(stored) if isinstance(stored, dict) else {}
    if fields is not None and old_key in METHODS and old_key != new_key:
        stored[old_key] = form.values(old_key, list(fields))
    own = stored.get(new_key) if isinstance(stored.get(new_key), dict) else {}
    # (only the method's fields: one kept by an older version, renamed or removed since, was sent on to the
    # estimate, which refused it: "Estimate unavailable: unknown parameter")
    own = {name: value for name, value in own.items() if name in form.defaults(new_key)}
    carried = carried_edits(old_key, stored.get(old_key), new_key, stored.get(CARRYING)) if carry else {}
    if old_key in METHODS and old_key != new_key:
        stored[CARRYING] = carried  # what follows the person on: none after a method set up to start afresh
    values = {**form.defaults(new_key), **{k: v for k, v in own.items() if v is not None}, **carried}
    # what the handler sets, as its note says ("Set to 5 epochs"); taken as a floor, the 10 epochs an earlier
    # press had set for fewer votes stood, and the run made twice the steps the note named
    values.update({name: value for name, value in (settings or {}).items() if name in values})
    stored[new_key] = values
    return form.updates(new_key, values), stored


def datasets_state(studio):
    """The dataset each kind of data comes back to ({data kind: dataset}, kept by this browser): DPO on
    the Sign-off pairs, then KTO, then DPO again is DPO on the Sign-off pairs (the first sample came
    back, and a walkthrough trained on the wrong set). Set by a dataset picked, one a handler chose
    with its method, and an import (the newest data of its kind is what the person means to train on)."""
    return gr.BrowserState({}, storage_key=f"{PREFIX}datasets", secret=secret(studio))


def with_dataset(by_kind, kind: str, dataset_ref: str | None) -> dict:
    by_kind = dict(by_kind) if isinstance(by_kind, dict) else {}
    return {**by_kind, kind: dataset_ref} if dataset_ref else by_kind


def picked_js(kinds: dict) -> str:
    """The page's own update of `datasets_state` for a dataset picked: (dataset, method, kept) -> kept.
    In the browser, with no trip to the server: a method switched to right after the pick read what
    was kept before the server had stored it."""
    return (f"(dataset, method, kept) => {{ const kind = {json.dumps(kinds)}[method]; "
            "return dataset && kind ? {...(kept || {}), [kind]: dataset} : kept; }")


def wire(studio, picks, form, memory, choices, method_settled, switched_to: ShownMethods,
         set_ups: SetUps | None = None) -> tuple:
    """Save the picks and the shown method's fields as they change. `choices(method_key)` gives the
    current (model choices, dataset choices) as (label, value) lists. `method_settled` is the event
    that follows a change of method once the dataset list is the new method's; `switched_to` has the method
    each page switched to last.
    Returns (restore_fn, inputs, outputs) for the page's load event."""
    model, dataset, method = picks
    picked, kept, previous, wanted = memory

    def save_picks(m, d, k, request: gr.Request):
        # tagged with the page that made them: the load's restore must not bring back, over a pick made
        # since, the picks this same page saved while it was still loading
        return {"model": m, "dataset": d, "method": k, "page": getattr(request, "session_hash", None)}

    # the picks as the page sent them (preprocess=False): a change of the model while a change of method
    # was still on its way sent the old method's dataset, which the server refused with a traceback in its
    # log ("Value: quillpad_faq is not in the list of choices"); what is kept is checked when restored
    gr.on([model.change, dataset.change], save_picks, [model, dataset, method], picked,
          trigger_mode="always_last", show_progress="hidden", queue=False, preprocess=False)
    # after a change of method, only once the dataset list is the new method's: read before, the
    # dataset can be one the new list lacks, and the server refuses it ("... not in the list of choices")
    method_settled.then(save_picks, [model, dataset, method], picked, show_progress="hidden", queue=False,
                        preprocess=False)

    def typed(request: gr.Request):
        set_ups.end(request)  # typed by the person: the estimate is for the page's fields from now on

    if set_ups is not None:
        # at once, outside the queue: the estimate of the edit can come before its save, and a value typed back
        # to the one the page held before a Train-on-these press was taken for a late read of it
        gr.on([w.input for w in form.components], typed, None, None, queue=False, show_progress="hidden")

    def save(request: gr.Request, key, *values):
        if set_ups is not None:
            set_ups.end(request)
        if key not in METHODS:
            return None  # nothing to merge
        return {key: form.values(key, list(values))}

    # what the user types, in the order typed: a change of method, the quick run, the advice and a
    # reload set the fields and keep what they set themselves (saved on every change, the fields a
    # switch was still updating were saved under the new method, and the saves came back in any order).
    # The reply holds only the edited method; the page merges it into what it keeps now (a reply sent
    # whole came back after a change of method and put back what that change had carried over). Every
    # edit is sent as typed ("multiple"): one held back was sent later with the fields and method of then,
    # possibly a change of method half applied.
    edited = gr.JSON(visible=False)
    gr.on([w.input for w in form.components], save, [method, *form.components], edited,
          trigger_mode="multiple", show_progress="hidden", concurrency_limit=1, concurrency_id="train-form-save"
          ).then(None, [edited, kept], kept, js="(edit, kept) => (edit ? {...(kept || {}), ...edit} : kept)",
                 show_progress="hidden", queue=False)

    def restore(picks_saved, stored, sent, request: gr.Request):
        picks_saved = picks_saved if isinstance(picks_saved, dict) else {}
        page = getattr(request, "session_hash", None)

        def listed():
            # the dataset list of the method the page shows now: the load's list, for the method it read,
            # came after a method picked while the page was still loading (DPO showed the SFT datasets);
            # and the method this answer was sent with can be one switched from while it was on its way
            key = switched_to.of(request) or sent
            return gr.update(choices=choices(key)[1]) if key in METHODS else gr.skip()

        # saved by this page, or a method switched to on it: the person has picked already
        if page and picks_saved.get("page") == page or switched_to.of(request):
            return [gr.skip(), listed(), *[gr.skip()] * (len(form.outputs) + 3)]  # model, dataset, the
            # fields, previous, wanted, method
        key = picks_saved.get("method") if picks_saved.get("method") in METHODS else None
        models, datasets = choices(key or "lora")
        model_kept = picks_saved.get("model")
        # a listed model, or one typed in (a folder, a hub id); a run that is gone is not brought back
        typed = isinstance(model_kept, str) and model_kept and not model_kept.startswith("run:")
        ups = [gr.update(value=model_kept) if model_kept in [v for _l, v in models] or typed else gr.skip()]
        if not key:  # no pick kept: the page's form is already the first method's
            # with what was typed into it, or set by the quick run, when nothing was picked from a list
            # (a reload brought back the defaults: the quick run's 3 epochs became 8 and its run took 4:30)
            fields = ([*switched(form, sent, None, stored)[0]] if sent in METHODS and isinstance(stored, dict)
                      and isinstance(stored.get(sent), dict) else [gr.skip()] * len(form.outputs))
            return [*ups, listed(), *fields, gr.skip(), gr.skip(), gr.skip()]
        known = [v for _l, v in datasets]
        dataset_kept = picks_saved.get("dataset")
        if dataset_kept not in known:  # gone (deleted), or not this method's: the newest import, else a sample
            dataset_kept = next((v for v in known if v not in SAMPLES), known[0] if known else None)
        shown, _kept = switched(form, key, None, stored)
        return [*ups, gr.update(choices=datasets, value=dataset_kept), *shown, key, chosen(key, dataset_kept),
                gr.update(value=key)]

    # the method last: its change reads the fields, `previous` and `wanted`, set before it
    return restore, [picked, kept, method], [model, dataset, *form.outputs, previous, wanted, method]
