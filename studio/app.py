"""build_app(studio) -> gr.Blocks: the tabs, wired to one Studio object."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from components import chat_tab, data_tab, export_tab, form_memory, label_tab, loop, method_tab, train_tab

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CSS_PATH = ASSETS / "studio.css"


def head() -> str:
    """Page-wide scripts: the Label tab's keyboard shortcuts; the run log following its end; a file
    dropped anywhere on the Data tab uploaded."""
    return "".join(f"<script>{(ASSETS / name).read_text()}</script>"
                   for name in ("shortcuts.js", "follow_log.js", "drop_to_upload.js"))


def _kept_name(kept) -> str | None:
    """The name votes and labels go under, as this browser kept it ("" when cleared; None: none kept).
    A plain string is how it was kept before."""
    if isinstance(kept, dict) and isinstance(kept.get("name"), str):
        return kept["name"]
    return kept if isinstance(kept, str) and kept else None


def blind_on(kept) -> bool:
    """Whether this browser kept the Chat's blind battle on ({"on": ...}; a plain true is how it was kept before)."""
    return bool(kept.get("on")) if isinstance(kept, dict) else kept is True


def train_handles(picks, runs) -> dict:
    """The Train tab's components the other tabs hand over to (model, dataset, method, message)."""
    return dict(zip(("model", "dataset", "method"), picks), selected=runs["selected"], message=runs["train_message"],
                setup=runs["train_setup"], wanted=runs["wanted"], form=runs["form"], kept=runs["kept"],
                set_ups=runs["set_ups"])


# The top-level tab shown now, read from the page when the tabs change (by a click or by a handler that
# switches tabs); the nested tabs' buttons come after the top-level ones in the page.
SHOWN_TAB_JS = """() => {
  const button = document.querySelector('#studio-tabs [role=tab][aria-selected=true]');
  return button ? button.dataset.tabId : '';
}"""


# A tab kept from before a reload, opened by a click on its button (not Train: it is open already), unless
# the person has opened another tab meanwhile (a click on Chat just after a reload was undone by this one)
REOPEN_TAB_JS = """(kept) => {
  const shown = document.querySelector('#studio-tabs [role=tab][aria-selected=true]');
  if (shown && shown.dataset.tabId !== 'train') return;
  const button = kept && kept !== 'train' && document.querySelector(`#studio-tabs [role=tab][data-tab-id="${kept}"]`);
  if (button && button.getAttribute('aria-selected') !== 'true') button.click();
}"""


# A tab a handler switched to opens at its top: "Train on these preferences", low on the Chat tab, left the
# Train tab scrolled past the model, dataset and method it had just set (a click on a tab, made with the
# tab bar in view, scrolls nothing)
TAB_TOP_JS = """() => {
  const bar = document.querySelector('#studio-tabs');
  if (bar && bar.getBoundingClientRect().top < 0) bar.scrollIntoView();
}"""


def tick_only_where_shown(tabs: gr.Tabs, timers: dict[str, gr.Timer]) -> None:
    """Each tab's refresh timer runs only while that tab is shown. Every tick costs the page's frontend
    a walk over its ~1000 components: three 2-s timers on all the time kept Chromium busy on more than
    a core (bench/page_cost.py), which a training run on a 2-core machine lost."""
    shown = gr.Textbox(visible=False)
    tabs.change(lambda tab: [gr.Timer(active=tab == key) for key in timers], shown, list(timers.values()),
                js=SHOWN_TAB_JS, show_progress="hidden")


def kept_values(kept, count: int) -> list:
    """Fields' values this browser kept ({"values": [...]}; the chat's generation settings as a list, as kept
    before): the chat's generation settings, the Train form's reward functions. Skips when none (or another
    number of them) are kept."""
    values = kept.get("values") if isinstance(kept, dict) else kept
    return list(values) if isinstance(values, list) and len(values) == count else [gr.skip()] * count


def build_app(studio) -> gr.Blocks:
    with gr.Blocks(title="Tune Studio") as app:
        gr.Markdown("# Tune Studio\nFine-tune a language model on your own examples, then compare it "
                    "with the base.")
        # the project the Label tab last had in this browser, picked again when it opens after a reload
        project_kept = gr.BrowserState({}, storage_key="tune-studio-label-project", secret=form_memory.secret(studio))
        # what the Data tab showed (the dataset, the tokenizer's model, the max length), shown again after a reload
        data_viewed = gr.BrowserState({}, storage_key="tune-studio-data-viewed", secret=form_memory.secret(studio))
        with gr.Tabs(elem_id="studio-tabs") as tabs:
            with gr.Tab("Train", id="train") as train:
                on_load_train, train_outputs, picks, refresh_estimate, runs, restore_form = train_tab.build(studio)
            with gr.Tab("Method", id="method") as method:
                open_method, method_inputs, method_outputs = method_tab.build(studio, *picks, tabs, "train", runs)
            with gr.Tab("Data", id="data") as data:
                on_load_data, data_outputs, (imported, made_now), deleted = data_tab.build(studio, runs["datasets_kept"], data,
                                                                                       data_viewed)
            with gr.Tab("Chat", id="chat") as chat:
                refresh_chat, chat_outputs, (exported, export_made), chat_loop = chat_tab.build(studio)
            with gr.Tab("Label", id="label") as label:
                open_label, label_project, label_outputs, label_overview, label_timer, label_reopened = \
                    label_tab.build(studio, project_kept)
            with gr.Tab("Export", id="export") as export:
                refresh_export, export_outputs, export_timer = export_tab.build(studio)
        # new datasets are offered at once: imports to Train, exported votes to Data
        train_dataset, data_dataset = train_outputs[0], data_outputs[0]
        imported.success(lambda key, made: train_tab.after_import(studio, key, made), [picks[2], made_now],
                         train_dataset, queue=False, show_progress="hidden")
        deleted.then(lambda key, shown: train_tab.after_deletion(studio, key, shown), [picks[2], train_dataset],
                     train_dataset, queue=False, show_progress="hidden")
        labels_to_train = loop.wire_labels(studio, tabs, train_handles(picks, runs), label_overview)
        # an export is shown there too ("in the Data tab", and the tab showed nothing picked)
        for event, made in ((exported, export_made), (label_overview["exported"], label_overview["export_made"])):
            event.then(lambda made: data_tab.offered(studio, made), made, data_dataset)
        labels_to_train.then(lambda: gr.update(choices=data_tab.dataset_choices(studio)), None, data_dataset)
        # the two models Chat compares, as the person last picked them (a reload put up the default pair
        # again: a comparison of two runs had to be picked anew), or as *Compare with the previous model* or
        # *Chat with this run* put them up; a pair the page put up itself is not kept, so a reload still shows
        # the newest run when nothing was picked. In the browser, no server trip. Opening the tab puts it up
        # too: after a reload, the tab's reopening read the pickers before the load had filled them, and put
        # the default pair over the kept one.
        pair_kept = gr.BrowserState({}, storage_key="tune-studio-chat-pair", secret=form_memory.secret(studio))
        # blind battles stay blind after a reload, as the person switched them or a comparison set them
        # ({"on": ...}: the page keeps no false value, and a battle switched off came back on after a reload)
        blind_kept = gr.BrowserState({}, storage_key="tune-studio-chat-blind", secret=form_memory.secret(studio))
        # votes -> preference run -> blind battle of the new run against where it started
        loop.wire(studio, tabs, train_handles(picks, runs), {**chat_loop, "pair_kept": pair_kept,
                                                             "blind_kept": blind_kept}, runs)
        # projects made elsewhere (CLI, another browser) and finished answers show when the tab opens
        # (as the page has them: a dataset picked for the prompts and deleted since was refused by Gradio)
        label.select(open_label, label_project, label_outputs, preprocess=False).then(*label_reopened,
                                                                                      show_progress="hidden")
        # runs finished since the page opened become choosable when the Chat tab is opened
        chat.select(refresh_chat, [*chat_outputs[:2], pair_kept], chat_outputs)
        # the comparison is measured for the model and dataset chosen in Train, when looked at
        # the Train tab's picks as the page sent them: preprocessed, a dataset the page still showed after
        # the list changed (another method) was refused ("Value: quillpad_faq is not in the list of choices")
        opened = method.select(open_method, method_inputs, method_outputs, preprocess=False)
        # measuring every method takes both cores for minutes on a first look: it stops when the
        # person goes to another tab (what was measured is kept; coming back goes on from there)
        for other in (train, data, chat, label, export):
            other.select(None, None, None, cancels=[opened], queue=False)
        # runs finished and models merged since the page opened can be exported when the tab is opened,
        # and the newest run is put up unless the person picked a model themselves
        export.select(refresh_export, [export_outputs[0], export_outputs[3]], export_outputs)
        # the built-in model prepared since the page said its estimate waits for it (the Data tab's first
        # look, a chat): the estimate comes when Train is opened, not only at the next change of a setting
        on_estimate, estimate_inputs, estimate = refresh_estimate

        def estimate_once_prepared(request: gr.Request, shown, *values):
            return on_estimate(request, *values) if shown == train_tab.NOT_PREPARED else gr.skip()

        train.select(estimate_once_prepared, [estimate, *estimate_inputs], estimate, **train_tab.ESTIMATE_QUEUE)
        tick_only_where_shown(tabs, {"train": runs["timer"], "label": label_timer, "export": export_timer})
        tabs.change(None, js=TAB_TOP_JS, queue=False, show_progress="hidden")
        # the tab shown, opened again after a reload (a labeler's reload took them to Train). In the browser:
        # kept at each change, and opened with a click, so the tab's own opening handlers run as for a person
        # (once the page's kept values are back: see the load below)
        tab_kept = gr.BrowserState("", storage_key="tune-studio-tab", secret=form_memory.secret(studio))
        tabs.change(None, None, tab_kept, js=SHOWN_TAB_JS, queue=False, show_progress="hidden")

        viewer = data_outputs[:3]
        # datasets made since the page opened (the loop's exports, another window) are listed when Data is
        # opened, and the newest is shown on a first visit
        data.select(lambda shown, viewed, model: data_tab.listed_again(studio, shown, viewed, model),
                    [data_dataset, data_viewed, viewer[1]], data_dataset, preprocess=False, queue=False,
                    show_progress="hidden")

        gr.on([chat_outputs[0].input, chat_outputs[1].input], None, chat_outputs[:2], pair_kept,
              js="(a, b) => ({a, b})", queue=False, show_progress="hidden")

        def on_load(key, spec_a, spec_b, viewed, pair):
            # the chat's pickers as the page shows them: unless runs finished since the page was made,
            # or the browser kept another pair, no value is sent, so a model picked while the page was
            # still loading stays picked
            return (*on_load_train(key), *on_load_data(viewed), *refresh_chat(spec_a, spec_b, pair))

        # the name votes and labels are stored under, kept by this browser like the Train form (held outside
        # the tabs: a tab's contents are drawn, and its kept values read, only once it is shown); typed in
        # the Chat or the Label tab, it is the other's too
        # ({"name": ...}: the page keeps no empty value, and a name cleared to vote anonymously came back)
        voter_kept = gr.BrowserState({}, storage_key="tune-studio-chat-voter", secret=form_memory.secret(studio))
        labeler = label_outputs[1]
        # kept in the browser itself, with no trip to the server: a tab switched to right after typing read
        # the kept name before the server's answer had stored it, and kept the old one
        for field in (chat_loop["voter"], labeler):
            field.change(None, field, voter_kept, js="(name) => ({name: (name || '').trim()})", queue=False,
                         show_progress="hidden")
        def restore_voter(kept, request: gr.Request):
            if getattr(request, "username", None):  # signed in: votes and labels go under the user name
                return gr.skip(), gr.skip()
            return (_kept_name(kept) if _kept_name(kept) is not None else gr.skip(),) * 2

        app.load(restore_voter, voter_kept, [chat_loop["voter"], labeler], queue=False, show_progress="hidden")

        chat_loop["blind"].input(None, chat_loop["blind"], blind_kept, js="(on) => ({on: !!on})", queue=False,
                                 show_progress="hidden")
        app.load(lambda kept: (True, *(gr.update(label=label) for label in chat_tab.HIDDEN)) if blind_on(kept)
                 else (gr.skip(),) * 3,
                 blind_kept, [chat_loop["blind"], chat_loop["chat_a"], chat_loop["chat_b"]], queue=False,
                 show_progress="hidden")

        # the generation settings too (a reload put Max new tokens back to 256: minute-long replies again)
        generation = chat_loop["generation"]
        generation_kept = gr.BrowserState(None, storage_key="tune-studio-chat-generation",
                                          secret=form_memory.secret(studio))
        # kept at each change (which carries the new value): a number typed into a slider's box and left with
        # Tab on a busy machine sent its input event with the slider's value before it, and when that came
        # last, 256 came back after a reload (CI). Kept in the browser, in the order the changes came: kept by
        # the server, the answers to two changes could come back the other way round
        gr.on([w.change for w in generation], None, generation, generation_kept,
              js="(...values) => ({values})", queue=False, show_progress="hidden")  # (an array: one value per output)
        app.load(lambda kept: kept_values(kept, len(generation)), generation_kept, generation, queue=False,
                 show_progress="hidden")
        # and the Train form's reward functions (ticked, weights, options) as this browser last had them
        app.load(lambda kept: kept_values(kept, len(runs["kept_rewards"])), runs["rewards_kept"],
                 runs["kept_rewards"], queue=False, show_progress="hidden")

        def kept_name(kept, shown, request: gr.Request):
            if getattr(request, "username", None):  # signed in: labels and votes go under the user name
                return gr.skip()
            name = _kept_name(kept)
            return name if name is not None and name != (shown or "") else gr.skip()

        for tab, field in ((chat, chat_loop["voter"]), (label, labeler)):
            tab.select(kept_name, [voter_kept, field], field, queue=False, show_progress="hidden")
        # then the Train form this browser last had; the estimate follows (its first probe of a model
        # takes a few seconds)
        restored = (app.load(on_load, [picks[2], *chat_outputs[:2], data_viewed, pair_kept],
                             [*train_outputs, *data_outputs, *chat_outputs])
                    .then(*restore_form, show_progress="hidden", queue=False))
        restored.then(*refresh_estimate, **train_tab.ESTIMATE_QUEUE)
        # and the tab kept is opened once the form is back: opened at once, the Method tab measured every
        # method for the page's first dataset (the FAQ sample, 10x the time of the person's 12 rows) before
        # the Train picks it compares for had come back
        restored.then(None, tab_kept, None, js=REOPEN_TAB_JS, queue=False, show_progress="hidden")
    # The page is the interface; its events are not a documented API. Gradio describes every public
    # event's inputs when it serves the page: the generated forms' events take every method's
    # fields (hundreds each), which made loading the page take seconds.
    for fn in app.fns.values():
        if fn.api_visibility == "public":
            fn.api_visibility = "undocumented"
    return app
