"""Label tab: one item at a time, a prompt and two answers shown as left and right (shuffled per item
and labeler, model names hidden), a choice per click or key, undo, and a progress line. The
project picker sits above three views: Label, Overview and export, New project."""

from __future__ import annotations

import html
import re
import time

import gradio as gr

from components import label_projects
from components.label_projects import project_choices
from components.text import quoted
from pipelines.data import DataError
from studio import label_service as ls
from studio.label_service import LabelError

CHOICES = (("left", "◀ Left is better", "1"), ("right", "Right is better ▶", "2"), ("tie", "Tie", "3"),
           ("both_bad", "Both are bad", "4"), ("skip", "Skip", "S"))
SAID = {"left": "left is better", "right": "right is better", "tie": "a tie", "both_bad": "both are bad",
        "skip": "skipped"}
KEYS_HELP = "Keys: **1** left · **2** right · **3** tie · **4** both bad · **S** skip · **U** undo"
# A choice this soon after its item appeared was not made on it: a second click or key press meant for
# the item before (a double click 0.2 s apart, a held key repeating) labelled the next one unread.
MIN_LOOK_S = 0.8


def verbatim(text: str) -> str:
    """Model output exactly as it is (escaped, line breaks kept): what the labeler judges is what
    is exported and trained on; no markup of the answer's own is rendered or fetched."""
    return f'<div class="label-text">{html.escape(text)}</div>'


def conversation(prompt: list[dict]) -> str:
    """The prompt as the labeler reads it: earlier turns first, the question last."""
    who = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "".join(f"<p><b>{who.get(m['role'], html.escape(m['role']))}:</b></p>{verbatim(m['content'])}"
                   for m in prompt)


def _labeler(name: str, request: gr.Request | None) -> str:
    """Who labels: the signed-in (--auth) user where there is one, else the name typed."""
    return getattr(request, "username", None) or (name or "").strip()


def cut_mark(limit: int | None) -> str:
    """Under an answer the length limit cut off: its end is missing, which is not the model's choice."""
    reached = f" ({limit} tokens)" if limit else ""
    return (f'<p class="label-cut"><i>✂ Cut off: the answer reached this project\'s longest answer{reached} '
            "before the model ended it.</i></p>")


def progress_line(labeler: str, p: dict) -> str:
    """The labeler's and the project's counts (label_service.next_item's "progress"), and the keys."""
    skipped = f", {p['skipped']} skipped" if p["skipped"] else ""
    rest = ""
    if p["unanswered"]:
        rest = (f" · {p['unanswered']} more prompt{'s' if p['unanswered'] != 1 else ''} "
                + ("not answered (answering stopped)" if p["stopped"] else "being answered"))
    return (f"**{html.escape(labeler)}**: {p['mine']} labelled{skipped} · project: {p['labels']} of "
            f"{p['items'] * p['overlap']} labels ({p['items']} item{'s' if p['items'] != 1 else ''} × {p['overlap']})"
            f"{rest} · {KEYS_HELP}")


RECHECK_S = 15  # a labeler waiting on items others hold looks again this often (a hold lapses after 10 minutes)


def answers_now(p: dict, holding: bool = False, now: float | None = None) -> list | None:
    """What the tab's timer watches for a change: where a project's answering stands (items answered,
    status), and, for a labeler with nothing in hand while items that could be theirs are on others'
    screens, the labels given and a clock that moves every RECHECK_S (a hold that lapses changes no
    count: the labeler said "Done" was never shown it). None: nothing more can come."""
    if p["status"] != "ready":
        return [p["items"], p["status"]]
    if p.get("open") and not holding:
        return [p["items"], p["status"], p["labels"], int((time.time() if now is None else now) // RECHECK_S)]
    return None


EMPTY_VIEW = ("<p>Pick a project above (or make one under <em>New project</em>), type your name and press "
              "<strong>Start labeling</strong>. Each item is a prompt with two answers: pick the better one with its "
              "button or key, and it becomes a preference pair to train on.</p>")


def view(studio, project_id: str | None, labeler: str, message: str = "") -> tuple:
    """Everything the labeling view shows for this labeler now: (state, progress, prompt, left,
    right, message, *choice buttons, undo, bring back skips)."""
    buttons_off = [gr.update(interactive=False)] * (len(CHOICES) + 1) + [gr.update(visible=False)]
    if not project_id:
        return (None, "", "", "", "", message or "Pick a project above (or make one under *New project*).",
                *buttons_off)
    try:
        shown = ls.next_item(studio, project_id, labeler)
    except (LabelError, DataError) as err:
        return (None, "", "", "", "", f"**Cannot label:** {quoted(err)}", *buttons_off)
    p = shown["progress"]
    progress = progress_line(labeler, p)
    item = shown["item"]
    can_undo = gr.update(interactive=p["mine"] + p["skipped"] > 0)
    bring_back = gr.update(visible=p["returnable"] > 0, value=f"Bring back my skips ({p['returnable']})")
    # a project whose answers are not all in: the tab's timer follows them (answers_now)
    answers = answers_now(p)
    if item is None:
        reason = re.sub(r"\*([^*]+)\*", r"<i>\1</i>", html.escape(shown["done_reason"]))
        # (items others hold may still come: a lapsed hold, or someone leaving)
        head = ("Waiting for the first answer" if not p["items"]
                else "Nothing left for now" if p["unanswered"] or p.get("open") else "✅ Done")
        done = (f"<h3>{head}</h3><p>Nothing left for you in <b>{html.escape(shown['project']['name'])}</b>: "
                f"{reason}. See <i>Overview and export</i> for agreement and to turn the labels "
                "into training data.</p>")
        return ({"project": project_id, "item": None, "labeler": labeler, "answers": answers}, progress, done, "",
                "", message, *buttons_off[:-2], can_undo, bring_back)
    state = {"project": project_id, "item": item["item_id"], "shown": time.time(), "labeler": labeler,
             "answers": answers_now(p, holding=True)}
    empty = "<i>(empty answer: the model said nothing)</i>"
    limit = shown["project"]["source"].get("max_new_tokens")
    left = (verbatim(item["left"]) if item["left"] else empty) + (cut_mark(limit) if item["left_cut"] else "")
    right = (verbatim(item["right"]) if item["right"] else empty) + (cut_mark(limit) if item["right_cut"] else "")
    return (state, progress, conversation(item["prompt"]), left, right, message,
            *[gr.update(interactive=True)] * len(CHOICES), can_undo, bring_back)


def build(studio, kept: gr.BrowserState):
    """Returns (on_open(): the project lists when the tab is opened, its inputs and outputs, the
    overview's handles, the projects table's timer, then (fn, inputs, outputs) to run after on_open:
    the labeling view of a project it picked again). `kept`: this browser's last picked project
    ({"id": ...}), picked again when the tab opens with none picked (after a reload)."""
    state = gr.State(None)  # {"project", "item", "shown"}: ids and a time only
    with gr.Row():
        project = gr.Dropdown(choices=project_choices(studio), value=None, label="Project", scale=3,
                              elem_id="label-project",
                              info="A set of prompts with two answers each. Make one under *New project*.")
        labeler = gr.Textbox(label="Your name", placeholder="your name (the Chat tab's too); signed in, your user name",
                             elem_id="label-labeler", scale=2,
                             info="Labels are kept per person: each person sees an item once.")
        start = gr.Button("Start labeling", variant="primary", elem_id="label-start", scale=1)
    timer = gr.Timer(2.0, active=False)  # ticks while the Label tab is shown (app.py), whichever view
    with gr.Tabs() as views:
        with gr.Tab("Label", id="label-work"):
            progress = gr.Markdown(elem_id="label-progress")
            # what the view is for, until a project's first item takes its place (it opened on an empty grey bar
            # and empty answer boxes; the hint came only with a press of Start labeling)
            prompt = gr.HTML(EMPTY_VIEW, elem_id="label-prompt", elem_classes=["label-prompt"])
            with gr.Row(equal_height=True):
                with gr.Column():
                    gr.Markdown("#### Left answer", elem_classes=["label-answer-head"])
                    left = gr.HTML(elem_id="label-left-text", elem_classes=["label-answer"])
                with gr.Column():
                    gr.Markdown("#### Right answer", elem_classes=["label-answer-head"])
                    right = gr.HTML(elem_id="label-right-text", elem_classes=["label-answer"])
            with gr.Row():
                buttons = [gr.Button(f"{text} [{key}]", elem_id=f"label-{choice.replace('_', '-')}",
                                     interactive=False, variant="primary" if choice in ("left", "right") else
                                     "secondary") for choice, text, key in CHOICES]
                undo = gr.Button("Undo [U]", elem_id="label-undo", interactive=False)
                bring_back = gr.Button("Bring back my skips", elem_id="label-unskip", visible=False)
            reason = gr.Textbox(label="Reason (optional)", lines=1, elem_id="label-reason",
                                placeholder="Why? e.g. 'left invents a price'. Kept with the label.")
            message = gr.Markdown(elem_id="label-message")
        with gr.Tab("Overview and export", id="label-overview") as overview_tab:
            overview = label_projects.build_overview(studio, project, timer)
        # labels given since it was last shown are counted when it is shown again
        overview_tab.select(overview["show"], project, overview["outputs"], show_progress="hidden")
        with gr.Tab("New project", id="label-new"):
            created, fresh_lists, list_outputs = label_projects.build_new(studio, project, timer)

    outputs = [state, progress, prompt, left, right, message, *buttons, undo, bring_back]

    def on_start(project_id, name, request: gr.Request):
        who = _labeler(name, request)
        if not project_id:  # what is missing first: with no project yet, a name was asked for in vain
            return view(studio, None, who or "")
        if not who:
            # (the view keeps saying what to do: its instructions went blank under the refusal)
            return (None, "", EMPTY_VIEW, "", "", "**Enter your name first:** labels are kept per person.",
                    *[gr.update(interactive=False)] * (len(CHOICES) + 1), gr.update(visible=False))
        return view(studio, project_id, who)

    def on_start_button(project_id, name, request: gr.Request):
        """Start shows the Label view, where its answer is (pressed under New project, right after making a
        project, the answer went to the hidden view and nothing seemed to happen)."""
        return (*on_start(project_id, name, request), gr.Tabs(selected="label-work"))

    start.click(on_start_button, [project, labeler], [*outputs, views])
    project.input(on_start, [project, labeler], outputs)
    # kept in the browser itself at each change, as the tab is (a labeler's reload made them pick it again)
    project.change(None, project, kept, js="(id) => ({id: id || null})", queue=False, show_progress="hidden")

    undone_at: dict[tuple, float] = {}  # (project, labeler): when their last Undo took a label back

    def renamed(current, name, request) -> str | None:
        """Why a press is refused when the name box no longer holds the name the item was shown to (a label
        would be saved, or an Undo would take one back, as the person who typed before)."""
        typed, shown_to = _labeler(name, request), (current or {}).get("labeler")
        if not typed or not shown_to or typed == shown_to:
            return None
        return (f"**Not saved:** this item was shown to **{html.escape(shown_to)}**, and the name is now "
                f"**{html.escape(typed)}**. Press *Start labeling* to label as {html.escape(typed)}.")

    def chooser(choice):
        def on_choose(current, name, why, request: gr.Request):
            if not current or not current.get("item"):
                return (*view(studio, None, _labeler(name, request), "Press *Start labeling* first."), gr.skip())
            other = renamed(current, name, request)
            if other:
                return (*[gr.skip()] * 5, other, *[gr.skip()] * (len(outputs) - 6), gr.skip())
            looked = time.time() - current["shown"]
            if looked < MIN_LOOK_S and not current.get("read"):  # nothing else changes: the item stays
                said = (f"**Not saved:** that came {looked:.1f} s after this item appeared, too soon to have read "
                        "it (a second click, or a held key?). Read it, then choose.")
                return (*[gr.skip()] * 5, said, *[gr.skip()] * (len(outputs) - 6), gr.skip())
            # the name the item was shown to: its sides were shuffled for that person
            who = current["labeler"]
            try:
                kept = ls.choose(studio, current["project"], current["item"], who, choice, why,
                                 seconds=round(time.time() - current["shown"], 2))
            except (LabelError, DataError) as err:
                return (*view(studio, current["project"], who, f"**Not saved:** {quoted(err)}"), gr.skip())
            if kept:  # a correction sent before the answer to the first click: the first one stands
                said = (f"**Not changed:** you had already saved this item as *{SAID[kept]}*. Press *Undo* to "
                        "label it again.")
                return (*view(studio, current["project"], who, said), gr.skip())
            undone_at.pop((current["project"], who), None)  # an Undo right after this one takes this one back
            said = f"Saved: {SAID[choice]}" + (" (with your reason)." if (why or "").strip() else ".")
            return (*view(studio, current["project"], who, said), "")
        return on_choose

    # one at a time, in the order pressed: an Undo pressed straight after a choice ran beside it, reached the
    # database first, and took back the label before the one meant
    serial = {"concurrency_id": "label-actions", "concurrency_limit": 1}
    for (choice, _text, _key), button in zip(CHOICES, buttons):
        button.click(chooser(choice), [state, labeler, reason], [*outputs, reason], **serial)

    def labeler_action(act, failed: str, said):
        """A button acting on this labeler's own labels: act(project, labeler) -> result, said(result)."""
        def handler(current, project_id, name, request: gr.Request):
            other = renamed(current, name, request)
            if other:
                return (*[gr.skip()] * 5, other.replace("Not saved", f"{failed}", 1),
                        *[gr.skip()] * (len(outputs) - 6))
            who = (current or {}).get("labeler") or _labeler(name, request)
            target = (current or {}).get("project") or project_id
            try:
                result = act(studio, target, who)
            except (LabelError, DataError) as err:
                return view(studio, target, who, f"**{failed}:** {quoted(err)}")
            return view(studio, target, who, said(result))
        return handler

    def on_undo_read(current, project_id, name, request: gr.Request):
        """Undo brings back an item the labeler has read: choosing again at once is no double press. The
        reason typed with the label comes back with it (it was lost, to be typed again). A second press
        straight after (a double click, or U pressed twice) takes nothing more back: it took the label
        before too, and its reason over the first one's."""
        key = ((current or {}).get("project") or project_id,
               (current or {}).get("labeler") or _labeler(name, request))
        since = time.time() - undone_at.get(key, 0.0)
        if since < MIN_LOOK_S:  # (a third press as quick is refused too; one a moment later acts)
            said = (f"**Not undone again:** that came {since:.1f} s after your last *Undo* (a second click?). "
                    "Press *Undo* again to take back the label before it too.")
            return (*[gr.skip()] * 5, said, *[gr.skip()] * (len(outputs) - 6), gr.skip())
        taken = []

        def undo_noted(*args):
            taken.append(ls.undo(*args))
            return taken[-1]

        on_undo = labeler_action(undo_noted, "Could not undo", lambda label: "Took back your last label: choose "
                                 "again." if label else "Nothing to undo.")
        shown, *rest = on_undo(current, project_id, name, request)
        if taken and taken[0]:
            undone_at[key] = time.time()
        reason_back = (taken[0].get("reason") or "") if taken and taken[0] else gr.skip()
        return ({**shown, "read": True} if isinstance(shown, dict) and shown.get("item") else shown, *rest,
                reason_back)

    undo.click(on_undo_read, [state, project, labeler], [*outputs, reason], **serial)
    on_bring_back = labeler_action(ls.bring_back_skips, "Could not bring them back", lambda count: (
        f"Brought back {count} skipped item{'s' if count != 1 else ''}: "
        + ("they come again, least labelled first." if count != 1 else "it comes again.")))
    bring_back.click(on_bring_back, [state, project, labeler], outputs, **serial)

    def on_more(current, seen):
        """The project's answers coming in (the tab's timer ticks while the Label tab is shown): a labeler
        with nothing left gets the next answered prompt without a press, and the progress line follows
        (it said "113 more prompts being answered" after a stop, and "not answered" after a resume). With
        an item in hand only the line moves: a state sent now could land over a choice's. Nothing is sent
        until something changed."""
        skip = (gr.skip(),) * (len(outputs) + 1)
        if not current or not current.get("answers"):
            return skip
        try:
            p = ls.progress(studio, current["project"], current["labeler"])
        except LabelError:  # (the project's refusal shows at the next press)
            return skip
        now = answers_now(p, holding=current.get("item") is not None) or [p["items"], p["status"]]
        if now in (current["answers"], seen):
            return skip
        if current.get("item") is None:
            return (*view(studio, current["project"], current["labeler"]), now)
        return (gr.skip(), progress_line(current["labeler"], p), *[gr.skip()] * (len(outputs) - 2), now)

    answers_seen = gr.State(None)  # what on_more last showed of the answering, so it is shown once
    timer.tick(on_more, [state, answers_seen], [*outputs, answers_seen], show_progress="hidden")

    def refresh(current=None):
        choices = project_choices(studio)
        ids = [c[1] for c in choices]
        return gr.update(choices=choices, value=current if current in ids else None)

    def on_open(current, dataset, spec_a, spec_b, last, request: gr.Request):
        """The tab opened: projects, datasets and runs made since the page opened are offered (a dataset
        picked for the prompts and deleted since is picked no more), with this browser's last project
        picked where none is; a signed-in (--auth) user labels under their own name."""
        user = getattr(request, "username", None)
        name = gr.update(value=user, interactive=False) if user else gr.skip()
        return (refresh(current or (last or {}).get("id")), name, *fresh_lists(dataset, spec_a, spec_b))

    def on_reopened(current, project_id, name, request: gr.Request):
        """After on_open: a project picked again, with nothing shown for it yet, shows where this labeler
        is in it (with no name yet, Start asks for one)."""
        if current is not None or not project_id or not _labeler(name, request):
            return (gr.skip(),) * len(outputs)
        return view(studio, project_id, _labeler(name, request))

    return (on_open, [project, *list_outputs, kept], [project, labeler, *list_outputs], overview, timer,
            (on_reopened, [state, project, labeler], outputs))
