"""The loop between tabs: chat votes -> a preference run in the Train tab -> a blind battle of the
new run against the model it started from, back in the Chat tab."""

from __future__ import annotations

import gradio as gr

from components import chat_tab, form_memory, train_tab
from components.dataset_note import cut_chosen_note, made_or_found
from components.text import quoted
from pipelines.data import DataError
from pipelines.methods import METHODS
from studio import chat_service, method_service
from studio.chat_service import ChatError

PREFERENCE_METHOD = "dpo"  # the standard choice; the Train tab explains the others


def more_epochs(why: str) -> str:
    """The epochs a few pairs were given (train_tab.method_on), said after the message."""
    return f" Set to {why}" if why else ""


def epochs_field(train: dict):
    """The Train form's epochs field of the method the buttons set."""
    return train["form"].by_method[PREFERENCE_METHOD]["num_train_epochs"]


def epochs_set(picked, current: str | None, kept) -> tuple:
    """The epochs field set directly when the page is on DPO already: the method does not change, and
    the change that reads `wanted` does not run. (From another method the field, which every method
    shares, is left to that change: set here too, it could be kept as the method before's.) Then
    (field, what the browser keeps): set directly, the epochs are kept as the form's own (a reload
    brought back those kept before, 5 from the round before, over the 4 set and shown)."""
    epochs = (picked[1].get("settings") or {}).get("num_train_epochs")
    if not epochs or current != PREFERENCE_METHOD:
        return gr.skip(), gr.skip()
    kept = dict(kept) if isinstance(kept, dict) else {}
    own = kept.get(PREFERENCE_METHOD) if isinstance(kept.get(PREFERENCE_METHOD), dict) else {}
    return gr.update(value=epochs), {**kept, PREFERENCE_METHOD: {**own, "num_train_epochs": epochs}}


def set_up(train: dict, request, picked, current: str | None, kept) -> None:
    """Noted for the Train tab's estimate: what the press set up, when the method changes to it (its change puts
    the settings in the fields a step later; on DPO already, `epochs_set` sets them with the reply)."""
    if current != PREFERENCE_METHOD:
        wanted = picked[1]
        train["set_ups"].note(request, PREFERENCE_METHOD, wanted["dataset"], form_memory.values_after(
            train["form"], PREFERENCE_METHOD, kept, wanted.get("settings")))


def start_where(model: str) -> str:
    """Where a preference run set up by the loop starts, in words."""
    if model.startswith("run:"):
        return f"run `{model[4:]}`"
    return "the built-in model" if model == "default" else f"the base model `{model}`"


def measured(held: int) -> str:
    """What a preference run from a run's result holds out of votes the runs behind it had trained on in part."""
    if not held:
        return ("No pair is held out to measure the run: it holds out only pairs no run behind it trained on, and "
                "too few are new. Vote on new prompts for a held-out check.")
    return f"The run measures itself on {held} pair{'s' if held != 1 else ''} no run behind it trained on."


NOT_MEASURED = (" No pair is held out to measure the run (too few pairs, or their prompts are ones a run behind it "
                "trained on): it will show its training loss only. Pairs on new prompts give it a held-out check.")


def unmeasured(studio, dataset_id: str, model: str, values: dict | None = None) -> str:
    """Said before Start when the preference run will hold nothing out (a label project's 3 pairs on one prompt)."""
    return "" if method_service.held_out(studio, PREFERENCE_METHOD, dataset_id, model, values) else NOT_MEASURED


def shown_after(train: dict, kept) -> dict:
    """The DPO settings a press will show (this browser's kept ones, else the defaults): what its run holds out
    and how many steps an epoch makes are counted at them."""
    return form_memory.values_after(train["form"], PREFERENCE_METHOD, kept, None)


def compare_told(studio, run_id: str, previous: str, source: str, prompts: list[str], first: str | None) -> str:
    """What *Compare with the previous model* says of the battle it sets up and the prompts it offers (`source`:
    the run's held-out prompts, or the votes' it did not train on), or why it offers none."""
    said = ("Blind battle: the new run against the model it started from, shuffled between the sides and named "
            "after your vote. ")
    if source == "heldout":
        held = "pairs" if METHODS[studio.get_run(run_id)["method"]].data_kind == "preference" else "rows"
        # (Next prompt goes on to theirs: chat_service.prompt_suggestions)
        behind = " and then from those of the runs behind it" if previous.startswith("run:") else ""
        said += f"Prompts it never trained on, from its dataset's held-out {held}{behind}: "
    elif prompts:
        said += "Prompts from the chat votes it did not train on: "
    if first is not None:
        return said + "press *Send*, vote, then *Next prompt*."
    if prompts:
        return said + "each already has a vote between these two models: type your own question."
    if chat_service.prompt_suggestions(studio, "votes"):
        return said + ("No prompt to offer: it trained on every voted prompt, and those would favour it. Type "
                       "questions of your own, then *Send* and vote.")
    every = "" if chat_service.holds_out(studio, run_id) else " (it trained on every prompt it read)"
    return said + (f"No prompt to offer: it has no held-out prompt{every} and there are no votes yet. Type questions "
                   "of your own that are not in its data, then *Send* and vote.")


def wire(studio, tabs, train: dict, chat: dict, runs: dict) -> None:
    """train: model, dataset, method components; chat: the Chat tab's loop handles; runs: the runs
    panel's compare button and action line."""

    def on_train_prefs(request: gr.Request, name, current, kept):
        try:  # named as the Dataset name field says, as the export next to it does
            start = chat_service.preference_start(studio, (name or "").strip() or None, PREFERENCE_METHOD)
        except DataError as err:  # shown where the button is
            return (f"**Nothing to train on:** {quoted(err)}", *(gr.skip(),) * 9)
        row, model = start["dataset"], start["model"]
        where = start_where(model)
        learned, values = start["learned"], shown_after(train, kept)
        again = (f" {learned} of these votes {'was' if learned == 1 else 'were'} already in the dataset behind {where} "
                 f"(votes are kept): {start['votes'] - learned} {'is' if start['votes'] - learned == 1 else 'are'} "
                 f"new. {measured(method_service.held_out(studio, PREFERENCE_METHOD, row['id'], model, values))}"
                 if learned else unmeasured(studio, row["id"], model, values))
        made = (f"{made_or_found(row, name, 'votes')}: {row['rows']} preference pairs from {start['votes']} decisive "
                f"votes.{again}{cut_chosen_note(row)}")
        *picked, why = train_tab.method_on(studio, PREFERENCE_METHOD, row["id"], start=model, values=values)
        message = (f"{made} Set to DPO on it, starting from {where} (DPO's *beta* says how far it may move "
                   f"from there): press *Start training* below.{more_epochs(why)}")
        set_up(train, request, picked, current, kept)
        return (made, message, "", gr.update(choices=train_tab.model_choices(studio), value=model), *picked,
                gr.Tabs(selected="train"), *epochs_set(picked, current, kept))

    chat["train_prefs"].click(on_train_prefs, [chat["export_name"], train["method"], train["kept"]],
                              [chat["message"], train["setup"], train["message"], train["model"], train["dataset"],
                               train["wanted"], train["method"], tabs, epochs_field(train), train["kept"]])

    def on_compare(run_id, request: gr.Request = None):
        try:
            new, previous = chat_service.previous_model(studio, run_id)
        except ChatError as err:  # shown where the button is
            return (f"**Could not compare:** {quoted(err)}", *(gr.skip(),) * 17)
        options = chat_service.choices(studio)
        known = {spec for _label, spec in options}
        extra = [(spec, spec) for spec in (new, previous) if spec not in known]
        prompts = chat_service.prompt_suggestions(studio, "heldout", run_id)
        source = "heldout" if prompts else "votes"
        if not prompts:  # the votes' prompts, less those it (or a run behind it) trained on
            prompts = chat_service.prompt_suggestions(studio, "votes", run_id)
        # the first prompt not voted on between these two yet (Next prompt skips those too)
        voted = chat_service.voted_prompts(studio, new, previous)
        first = next((p for p in prompts if p.strip() not in voted), None)
        told = compare_told(studio, run_id, previous, source, prompts, first)
        chat["end_stream"](request)  # replies still being written would write the old round back
        return ("", gr.update(choices=options + extra, value=new), gr.update(choices=options + extra, value=previous),
                True, source, gr.update(choices=prompts, value=first),
                first or "", run_id, gr.Accordion(open=True),
                gr.update(value=[], label=chat_tab.HIDDEN[0]), gr.update(value=[], label=chat_tab.HIDDEN[1]),
                chat_tab.new_battle(), told, gr.Tabs(selected="chat"), "", "",  # (and the export's news)
                # kept by the browser as the person's own pick: a reload put up the newest run against its
                # base instead, still blind, and the votes went to another pair than the one asked for
                {"a": new, "b": previous}, {"on": True})

    def on_chat(run_id, request: gr.Request = None):
        run = studio.get_run(run_id) if run_id else None
        if run is None or run["status"] != "completed":
            return ("**Chat needs a finished run:** select one in the table.", *(gr.skip(),) * 12)
        if run_id in [r["id"] for r in studio.reward_model_runs()]:  # it scores replies: score the chat's
            told = (f"Run `{run_id}` is a reward model: it scores replies rather than writing them. Both sides' "
                    "replies are now scored with it; ask something.")
            return ("", *(gr.skip(),) * 6, told, gr.Tabs(selected="chat"),
                    gr.update(choices=chat_service.scorer_choices(studio), value=run_id), gr.skip(), gr.skip(),
                    gr.skip())
        try:
            tuned, previous = chat_service.previous_model(studio, run_id)
        except ChatError as err:  # (a finished run whose result folder is gone)
            return (f"**Cannot chat with it:** {quoted(err)}", *(gr.skip(),) * 12)
        chat["end_stream"](request)  # replies still being written would write the old round back
        options = chat_service.choices(studio)
        # a run continued from another is shown beside that run (side A was the first base, and the page said
        # "the model it was trained from"); the base where the run it came from is gone
        parent = previous in {value for _label, value in options}
        base = previous if parent else f"base:{run['model']}"
        told = (f"The run's tuned model (B) next to the run it continued from, `{run['parent_id']}` (A): ask both the "
                "same thing." if parent and previous.startswith("run:") else
                "The run's tuned model (B) next to the model it was trained from (A): ask both the same thing.")
        return ("", gr.update(choices=options, value=base), gr.update(choices=options, value=tuned), False,
                gr.update(value=[], label="Model A"), gr.update(value=[], label="Model B"), chat_tab.new_battle(),
                told, gr.Tabs(selected="chat"), gr.skip(), "",  # the old replies' scores go with them
                {"a": base, "b": tuned}, {"on": False})  # kept as the person's pick, named

    settle = chat["pair_settled"]
    runs["chat_with"].click(on_chat, train["selected"],
                            [runs["action"], chat["model_a"], chat["model_b"], chat["blind"], chat["chat_a"],
                             chat["chat_b"], chat["battle"], chat["vote_message"], tabs, chat["scorer"],
                             chat["scores"], chat["pair_kept"], chat["blind_kept"]]).then(**settle)

    runs["compare_previous"].click(
        on_compare, train["selected"],
        [runs["action"], chat["model_a"], chat["model_b"], chat["blind"], chat["source"], chat["suggested"],
         chat["prompt"], chat["compare_run"], chat["prompts_box"], chat["chat_a"], chat["chat_b"], chat["battle"],
         chat["vote_message"], tabs, chat["scores"], chat["message"], chat["pair_kept"], chat["blind_kept"]]
    ).then(**settle)  # (the changes of both pickers it fired, answered out of order, left "same model" under them)


def wire_labels(studio, tabs, train: dict, overview: dict):
    """'Train on these labels' in the Label tab: its labels as preference data, the Train tab set
    to DPO on them, starting from the newest of the project's runs (else the base model compared)."""
    from studio import label_service
    from studio.label_service import LabelError

    def on_train_labels(request: gr.Request, project_id, _kind, min_agreement, with_votes, name, current, kept):
        try:
            start = label_service.training_start(studio, project_id or "", PREFERENCE_METHOD,
                                                 float(min_agreement), bool(with_votes), (name or "").strip() or None)
        except (LabelError, DataError) as err:  # shown where the button is
            return (f"**Nothing to train on:** {quoted(err)}", *(gr.skip(),) * 9)
        row, model = start["dataset"], start["model"]
        where = start_where(model)
        values = shown_after(train, kept)
        made = (f"{made_or_found(row, name, 'labels')}: {row['rows']} preference pairs from the labels."
                + unmeasured(studio, row["id"], model, values) + cut_chosen_note(row))
        *picked, why = train_tab.method_on(studio, PREFERENCE_METHOD, row["id"], start=model, values=values)
        message = f"{made} Set to DPO on it, starting from {where}: press *Start training* below.{more_epochs(why)}"
        set_up(train, request, picked, current, kept)
        return (made, message, "", gr.update(choices=train_tab.model_choices(studio), value=model), *picked,
                gr.Tabs(selected="train"), *epochs_set(picked, current, kept))

    return overview["train"].click(on_train_labels, [*overview["inputs"], train["method"], train["kept"]],
                                   [overview["message"], train["setup"], train["message"], train["model"],
                                    train["dataset"], train["wanted"], train["method"], tabs, epochs_field(train),
                                    train["kept"]])
