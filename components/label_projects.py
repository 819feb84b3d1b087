"""The Label tab's two other views: a new project (prompts, and where the two answers come from),
and a project's overview (labelers, agreement, position bias, win rates, disagreements) with the
export of its labels as training data."""

from __future__ import annotations

import time

import gradio as gr

from components.dataset_note import cut_chosen_note, made_or_found
from components.text import literal, quoted
from pipelines import labeling
from pipelines.curves import format_duration, progress
from pipelines.data import DataError
from pipelines.events import read_metrics
from studio import chat_service
from studio import label_service as ls
from studio.core import SAMPLES, is_sample
from studio.label_service import LabelError

ANSWERS_FROM = (("Two models answer each prompt", "two"), ("One model answers twice (sampled)", "twice"),
                ("A file with two answers per prompt", "file"))
AGAIN_WITHIN_S = 10  # a project of the name made this recently: Create pressed twice, not a name taken before
PROMPTS_FROM = (("A dataset's prompts", "dataset"), ("A file of prompts", "file"), ("Typed here", "typed"))
EXPORT_KINDS = (("Preference pairs: prompt, chosen, rejected (DPO, ORPO, SimPO, …)", "preference"),
                ("Good and bad answers: prompt, completion, label (KTO)", "kto"))


def prompt_datasets(studio) -> list[tuple[str, str]]:
    samples = [(f"Sample: {label}", key) for key, (_f, _kind, label) in SAMPLES.items()]
    imported = [(f"{d['name']} ({d['kind']}, {d['rows']} rows)", d["id"]) for d in studio.list_datasets()
                if d["kind"] != "text" and not is_sample(d)]
    return samples + imported


def projects_table(studio) -> dict:
    rows = []
    for p in ls.projects(studio):
        status = p["status"]
        job = p.get("progress")
        prompts = p["source"].get("prompts", "?")
        if status == "generating" and job:
            status = answering(job, prompts, answers=read_metrics(studio.run_dir(p["job_id"])))
        elif status in ls.STOPPED:  # ("cancelled" read as the project dropped)
            status = (f"{'stopped' if status == 'cancelled' else status}: {p['items']} of {prompts} answered"
                      + (f" ({p['error']})" if p.get("error") else ""))
        elif p.get("error"):
            status = f"{status}: {p['error']}"
        models = " vs ".join(chat_service.short_label(studio, m) for m in dict.fromkeys(p["source"].get("models", [])))
        models = models or "-"
        rows.append([p["name"], status, p["items"], p["overlap"], p["source"]["kind"], models])
    return {"headers": ["Project", "Status", "Items", "Labelers per item", "Answers", "Models"], "data": rows}


def answering(job: dict, prompts, now: float | None = None, answers: list[dict] = ()) -> str:
    """A project's status while its answers are written: how far, and about how long is left, from the time
    per prompt once the models were loaded (answers: the job's metrics, a timed record per answer; the wait
    counts down between answers where it rose every second until the next one: 16:31, 27:19, 17:43 in 20 s)."""
    if job["status"] != "running":
        return f"answering: {job['status']}"
    if job.get("cancelling"):  # the prompt in hand is finished first
        return f"stopping after the prompt in hand: {job['step']} of {job['max_steps'] or prompts} answered"
    said = f"answering: {job['step']} of {job['max_steps'] or prompts}"
    eta = progress(job["step"], job["max_steps"], None, list(answers), now=now, training_since=job.get("training_since"),
                   first_step=job.get("first_step") or 0, mark="answered")["eta_s"]
    return said + (f" · about {format_duration(eta)} left" if eta and eta >= 1 else "")


def build_new(studio, project, timer: gr.Timer):
    """The New project view (its table refreshed by `timer`, made outside the view: a timer inside a
    view that is not shown does not tick); returns (the create event, after which the tab refreshes its project
    list; a function giving fresh dataset and model lists; the components it updates)."""
    models = chat_service.choices(studio)
    first, second = chat_service.default_pair(studio)
    table = gr.Dataframe(value=projects_table(studio), interactive=False, wrap=True, elem_id="label-projects-table",
                         label="Projects")
    with gr.Row():
        name = gr.Textbox(label="Project name", elem_id="label-new-name", scale=2)
        overlap = gr.Number(value=1, precision=0, label="Labelers per item",
                            elem_id="label-new-overlap", scale=1,
                            info="How many different people label each item. 2 or 3 lets the overview measure "
                                 "how far labelers agree; 1 labels the most items.")
    # with only the built-in model to offer (no run finished yet), two models would be it twice: it answers twice
    alone = first == second
    answers_from = gr.Radio(ANSWERS_FROM, value="twice" if alone else "two", label="Where the two answers come from",
                            elem_id="label-new-answers")
    with gr.Group() as prompts_group:
        prompts_from = gr.Radio(PROMPTS_FROM, value="dataset", label="Prompts", elem_id="label-new-prompts-from")
        dataset = gr.Dropdown(prompt_datasets(studio), label="Dataset", elem_id="label-new-dataset",
                              info="Its prompts (questions), without their answers.")
        prompt_file = gr.File(label="Prompts file: .txt with one per line, or a table with a 'prompt' column",
                              visible=False, elem_id="label-new-prompt-file")
        typed = gr.Textbox(label="Prompts, one per line", lines=5, visible=False, elem_id="label-new-typed")
        how_many = gr.Number(value=None, precision=0, label="How many prompts", elem_id="label-new-how-many",
                             info=f"Empty = all (a project takes up to {ls.MAX_PROMPTS}). Fewer = a random sample, "
                                  "the same one each time: a dataset is often sorted by topic.")
    with gr.Group() as models_group:
        with gr.Row():
            model_a = gr.Dropdown(models, value=first, label="Model" if alone else "Model 1", elem_id="label-new-model-a",
                                  allow_custom_value=True)
            model_b = gr.Dropdown(models, value=second, label="Model 2", elem_id="label-new-model-b",
                                  allow_custom_value=True, visible=not alone)
        with gr.Row():
            temperature = gr.Slider(0, 1.5, value=1.0 if alone else 0.7, step=0.05, label="Temperature",
                                    elem_id="label-new-temperature",
                                    info="Randomness of the answers; one model answering twice needs more than 0.")
            max_new_tokens = gr.Slider(16, 1024, value=256, step=16, label="Longest answer (tokens)",
                                       elem_id="label-new-max-tokens")
    pairs_file = gr.File(label="Pairs file: columns prompt, response_a, response_b (optional model_a, model_b)",
                         visible=False, elem_id="label-new-pairs")
    with gr.Row():
        create = gr.Button("Create project", variant="primary", elem_id="label-create")
        # each pressable only when it would do something to the project picked (`answer_buttons`)
        cancel = gr.Button("Stop answering (selected project)", elem_id="label-cancel-generation", interactive=False)
        resume = gr.Button("Resume answering (selected project)", elem_id="label-resume-generation",
                           interactive=False)
    message = gr.Markdown(elem_id="label-new-message")

    def on_answers(kind, prompts_kind):
        return (gr.update(visible=kind != "file"), gr.update(visible=kind != "file"),
                gr.update(visible=kind == "file"), gr.update(visible=kind == "two"),
                gr.update(value=1.0 if kind == "twice" else 0.7),
                gr.update(label="Model" if kind == "twice" else "Model 1"))  # (alone, "Model 1" asked for a 2nd)

    answers_from.change(on_answers, [answers_from, prompts_from],
                        [prompts_group, models_group, pairs_file, model_b, temperature, model_a])
    prompts_from.change(lambda k: (gr.update(visible=k == "dataset"), gr.update(visible=k == "file"),
                                   gr.update(visible=k == "typed")), prompts_from, [dataset, prompt_file, typed])

    def on_create(title, per_item, kind, prompts_kind, dataset_ref, prompts_path, typed_text, spec_a, spec_b,
                  temp, max_tokens, pairs_path, wanted=None):
        try:
            again = 0
            if kind == "file":
                if not pairs_path:
                    raise LabelError("upload the pairs file first")
                made = ls.import_project(studio, name=title, path=pairs_path, overlap=per_item)
                said = f"Made **{literal(made['name'])}** with {made['items']} items, picked above: press *Start labeling*."
            else:
                if prompts_kind == "dataset":
                    if not dataset_ref:
                        raise LabelError("pick a dataset for the prompts")
                    prompts = ls.prompts_from_dataset(studio, dataset_ref)
                elif prompts_kind == "file":
                    if not prompts_path:
                        raise LabelError("upload the prompts file first")
                    prompts = ls.prompts_from_file(prompts_path, studio.max_upload_bytes)
                else:
                    prompts = ls.prompts_from_text(typed_text)
                    again = sum(1 for line in (typed_text or "").splitlines() if line.strip()) - len(prompts)
                if kind == "two" and spec_a == spec_b:
                    raise LabelError("Model 1 and Model 2 are the same; pick two different models, or choose "
                                     "'One model answers twice'")
                specs = [spec_a, spec_b] if kind == "two" else [spec_a]
                made = ls.create_project(studio, name=title, prompts=prompts, models_=specs,
                                         overlap=per_item, temperature=float(temp),
                                         max_new_tokens=int(max_tokens), sample=int(wanted) if wanted else None)
                taken = made["source"]["prompts"]
                sampled = f" (a random sample of {len(prompts)})" if taken < len(prompts) else ""
                pace = ls.answering_pace(studio, int(max_tokens))
                # all of them may take long (120 prompts: 30-40 min here): said at once, from the last project's pace
                takes = f", all of them in about {format_duration(pace * taken)} here" if pace else ""
                typed_twice = (f" ({again} typed again {'was' if again == 1 else 'were'} left out)"
                               if prompts_kind == "typed" and again else "")
                said = (f"Made **{literal(made['name'])}**, picked above: {taken} prompts{sampled}{typed_twice} "
                        f"{IN_BACKGROUND}{takes} (progress in the table). Each can be labelled as soon as it is answered: press "
                        "*Start labeling*.")
        except (LabelError, DataError) as err:
            twin = studio.store.get_label_project((title or "").strip()) if "already exists" in str(err) else None
            if twin and time.time() - twin["created"] < AGAIN_WITHIN_S:  # Create pressed twice: the first made it
                return (f"Made **{literal(twin['name'])}**, picked above (Create was pressed again: still one project).",
                        projects_table(studio), gr.update(choices=project_choices(studio), value=twin["id"]),
                        twin["id"])
            return f"**Could not create the project:** {quoted(err)}", gr.skip(), gr.skip(), gr.skip()
        # the new project is the one picked: Start labeling works on it without a trip to the list
        return said, projects_table(studio), gr.update(choices=project_choices(studio), value=made["id"]), made["id"]

    made_id = gr.State(None)  # the project the note below is about, whichever is picked meanwhile
    created = create.click(on_create, [name, overlap, answers_from, prompts_from, dataset, prompt_file, typed,
                                       model_a, model_b, temperature, max_new_tokens, pairs_file, how_many],
                           [message, table, project, made_id])
    # a refusal is about what was filled in then: changing it takes the refusal away
    gr.on([name.change, answers_from.input, prompts_from.input, dataset.input, typed.change, model_a.input,
           model_b.input, prompt_file.upload, pairs_file.upload],
          lambda said: "" if (said or "").startswith("**Could not create") else gr.skip(), message, message,
          queue=False, show_progress="hidden")

    def on_cancel(project_id):
        if not project_id:  # (the service's answer, "no labeling project ''", named a command-line tool)
            return "**Nothing to stop:** pick a project above first.", gr.skip(), gr.skip()
        try:
            ls.cancel_generation(studio, project_id or "")
        except LabelError as err:
            return f"**Nothing to stop:** {quoted(err)}", gr.skip(), gr.skip()
        name = ls.project(studio, project_id, with_progress=False)["name"]
        # the note follows the project to its stop (answered_note), as the one made with it does
        return (f"**{literal(name)}** {STOPPING}: the prompts answered so far can be labelled; *Resume answering* goes on "
                "from there.", projects_table(studio), project_id)

    def answer_buttons(project_id):
        """Stop answering and Resume answering as the picked project allows: Stop while its answers are being
        written, Resume once that stopped short (both looked pressable with no project picked)."""
        try:  # (only its status: not every project's progress)
            status = ls.project(studio, project_id, with_progress=False)["status"] if project_id else None
        except LabelError:  # deleted meanwhile
            status = None
        return gr.update(interactive=status == "generating"), gr.update(interactive=status in ls.STOPPED)

    project.change(answer_buttons, project, [cancel, resume], queue=False, show_progress="hidden")
    cancel.click(on_cancel, project, [message, table, made_id]).then(answer_buttons, project, [cancel, resume],
                                                                      queue=False, show_progress="hidden")

    def on_resume(project_id):
        if not project_id:
            return "**Nothing to resume:** pick a project above first.", gr.skip()
        try:
            ls.resume_generation(studio, project_id or "")
        except LabelError as err:
            return f"**Nothing to resume:** {quoted(err)}", gr.skip()
        return "Answering again, from the first prompt without answers.", projects_table(studio)

    resume.click(on_resume, project, [message, table]).then(answer_buttons, project, [cancel, resume], queue=False,
                                                            show_progress="hidden")

    def on_tick(shown, said, made, picked):
        # only a change is sent: every open page ticks, and an unchanged table costs the browser a redraw;
        # the project list says what the table says (a project done generating loses its 'generating'),
        # and so does the note made with it (it said "being answered" after the table said ready), and the
        # Stop and Resume buttons what the picked project allows now
        now = projects_table(studio)
        if now == shown:
            return gr.skip(), shown, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return (now, now, gr.update(choices=project_choices(studio)), answered_note(studio, made, said),
                *answer_buttons(picked))

    shown = gr.State(None)
    timer.tick(on_tick, [shown, message, made_id, project], [table, shown, project, message, cancel, resume],
               show_progress="hidden")

    def fresh(dataset_shown=None, a_shown=None, b_shown=None):
        """Datasets imported and runs finished since the page opened; the dataset and the models shown
        stay picked while they are still offered (one deleted since was kept by the page, and Create was
        refused by Gradio: "Value: d-… is not in the list of choices"; models picked, then a look at
        another tab, came back as the default pair)."""
        options = chat_service.choices(studio)
        default = chat_service.default_pair(studio)
        a = a_shown if chat_service.still_offered(a_shown, options) else default[0]
        b = b_shown if chat_service.still_offered(b_shown, options) else default[1]
        if chat_service.same_model(studio, a, b):
            # one model twice (the page's pair before any run finished) cannot make a two-model project: Model 2
            # becomes a default side that differs; Model 1 stays (alone, it is the model answering twice)
            b = default[1] if not chat_service.same_model(studio, a, default[1]) else default[0]
        datasets = prompt_datasets(studio)
        kept = dataset_shown if dataset_shown in [value for _label, value in datasets] else None
        return (gr.update(choices=datasets, value=kept), gr.update(choices=options, value=a),
                gr.update(choices=options, value=b))

    return created, fresh, [dataset, model_a, model_b]


IN_BACKGROUND = "are being answered in the background"
STOPPING = "stops answering after the prompt in hand"


def answered_note(studio, project_id: str | None, said: str | None):
    """The note made with a project answered in the background, once the answering has ended (ready, or
    stopped); gr.skip() while it goes on, or when the note says something else by now."""
    found = next((p for p in ls.projects(studio) if p["id"] == project_id), None)
    if found is None or not any(mark in (said or "") for mark in (IN_BACKGROUND, STOPPING)) \
            or f"**{literal(found['name'])}**" not in said:
        return gr.skip()
    if found["status"] == "ready":
        return f"**{literal(found['name'])}** is ready: its answers are in; press *Start labeling*."
    if found["status"] in ls.STOPPED:
        how = "stopped answering" + ("" if found["status"] == "cancelled" else f" ({found['status']})")
        return (f"**{literal(found['name'])}** {how} at {found['items']} of {found['source'].get('prompts', '?')} prompts: "
                + ("the answered ones can be labelled" if found["items"] else "nothing to label yet")
                + "; *Resume answering* goes on from the first prompt without answers.")
    return gr.skip()


def project_choices(studio) -> list[tuple[str, str]]:
    out = []
    for p in ls.projects(studio):
        state = {"ready": "", "generating": ", answering", "cancelled": ", stopped"}.get(p["status"], f", {p['status']}")
        # (the labelers each item gets: "1 per item" was terse)
        out.append((f"{p['name']} ({p['items']} item{'s' if p['items'] != 1 else ''}, {p['overlap']} "
                    f"labeler{'s' if p['overlap'] != 1 else ''} each{state})",
                    p["id"]))
    return out


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


LABELER_HEADERS = ["Labeler", "Labels", "Skipped", "Median seconds per item"]
KAPPA_HEADERS = ["Labelers", "Items both labelled", "Same choice", "Cohen's κ"]
WIN_WIDTHS = ["22%", "22%", "8%", "8%", "8%", "12%", "20%"]  # the win rate with its interval is not cut off
WIN_HEADERS = ["Model", "Against", "Labels", "Model better", "Against better", "Ties / both bad",
               "Model's win rate over items (95% interval)"]  # from the tuned (newer) model's side, as the Chat tab's
# (the items by their number in the project, 1 to N: the catalogue's ids read 1, 3, 6, 13, ... 81 for 12 items;
# the choices in words: labelers chose left or right, and never saw "a" or "both_bad")
REVIEW_HEADERS = ["Item", "Prompt", "Choices"]
CHOICE_WORDS = {"a": "A better", "b": "B better", "tie": "tie", "both_bad": "both bad"}
OVERVIEW_HEADERS = (LABELER_HEADERS, KAPPA_HEADERS, WIN_HEADERS, REVIEW_HEADERS)


def summary(studio, project_id: str | None) -> tuple:
    """(summary markdown, labelers, agreement, win rates, disagreements) for the overview."""
    empty = [shown_if_any({"headers": headers, "data": []}) for headers in OVERVIEW_HEADERS]
    if not project_id:
        return "Pick a project above.", *empty
    try:
        o = ls.overview(studio, project_id)
    except LabelError as err:
        return f"**Cannot show:** {quoted(err)}", *empty
    a = o["agreement"]
    alpha = ("not measurable: each item gets one labeler (a project with 2 or more per item measures it)"
             if a["alpha"] is None and o["project"]["overlap"] < 2 else
             "not measurable yet (needs items labelled by two or more people, with some variety)"
             if a["alpha"] is None else f"**{a['alpha']:.2f}**")
    lines = [f"**{literal(o['project']['name'])}**: {o['items']} items, {o['complete']} with all their labels "
             f"({o['project']['overlap']} per item); {o['labels']} labels.",
             f"Agreement over {a['items']} items labelled by several people: Krippendorff's α {alpha} "
             "(1 = always agree, 0 = no better than chance; Krippendorff trusts 0.80 or more, 0.67 to 0.80 for tentative "
             "conclusions only)."
             + (" Below 0 they disagree more often than chance would: the labelers read the task differently, or "
                "chose carelessly. Read the disagreements below, agree on what counts as better, and label again "
                "before training on these labels." if a["alpha"] is not None and a["alpha"] < 0 else "")]
    left = ls.unanswered(o["project"])
    if left:  # the items are the prompts answered so far
        lines[0] += (f" {left} more prompt{'s are' if left != 1 else ' is'} being answered." if o["project"]["status"]
                     not in ls.STOPPED else f" Answering stopped with {left} prompt{'s' if left != 1 else ''} left: "
                     "*Resume answering* under *New project* adds them.")
    if o["project"]["source"].get("kind") == "sampled twice":
        lines.append("Win rates: none, one model wrote both answers (its labels still make preference pairs).")
    pos = o["position"]
    lines.append(pos["warning"] and f"⚠️ {pos['warning']}" or
                 f"Position check: left chosen {_times(pos['left'])}, right {_times(pos['right'])}"
                 + (f" (p = {pos['p']:.2f}: no sign the side sways labelers)." if pos["p"] is not None else
                    # (the counts alone, "left 3 times, right 0", read as a finding: a walkthrough)
                    f" (too few to tell whether the side sways labelers: the check needs "
                    f"{labeling.POSITION_MIN_LABELS} decisive labels)."))
    labelers = {"headers": LABELER_HEADERS,
                "data": [[r["labeler"], r["labels"], r["skips"], "-" if r["median_s"] is None else
                          f"{r['median_s']:.1f}"] for r in o["labelers"]]}
    kappa = {"headers": KAPPA_HEADERS,
             "data": [[" & ".join(p["labelers"]), p["items"], _percent(p["observed"]),
                       "-" if p["kappa"] is None else f"{p['kappa']:.2f}"] for p in a["pairs"]]}
    name = lambda spec: chat_service.label(studio, spec)  # noqa: E731
    # more labels can still come: an item short of its labels, or prompts still to be answered
    more = o["complete"] < o["items"] or bool(left)
    wins = {"headers": WIN_HEADERS,
            "data": [[name(r["first"]), name(r["second"]), r["votes"], r["wins_first"], r["wins_second"], r["ties"],
                      chat_service.win_rate_text(r, judged=True, unit="label", more=more)]
                     for r in map(chat_service.newer_first, o["win_rates"])]}
    review = {"headers": REVIEW_HEADERS,
              "data": [[r["number"], r["prompt"][:160],
                        ", ".join(f"{k}: {CHOICE_WORDS.get(v, v)}" for k, v in r["labelers"].items())]
                       for r in o["disagreements"]]}
    return "\n\n".join(lines), *map(shown_if_any, (labelers, kappa, wins, review))


def shown_if_any(table: dict) -> dict:
    """An overview table, hidden while it has no rows (three empty tables stood under a text that said
    agreement and win rates could not be measured yet)."""
    return gr.update(value=table, visible=bool(table["data"]))


def build_overview(studio, project, timer: gr.Timer | None = None) -> dict:
    """The overview and export view; returns its handles for the Train tab hand-over. `timer`: the tab's, on
    whose ticks the overview follows the picked project's answers coming in (opened while the last prompt was
    answered, it said 11 items and 1 more being answered beside the list's 12, until Refresh)."""
    refresh = gr.Button("Refresh", elem_id="label-overview-refresh", size="sm")
    text = gr.Markdown(elem_id="label-summary")
    # headers from the start: a table without them shows columns named 1, 2, 3 until it is filled
    labelers = gr.Dataframe(headers=LABELER_HEADERS, interactive=False, label="Labelers", elem_id="label-labelers",
                             visible=False)
    kappa = gr.Dataframe(headers=KAPPA_HEADERS, interactive=False, label="Agreement per pair of labelers",
                         elem_id="label-kappa", visible=False)
    wins = gr.Dataframe(headers=WIN_HEADERS, interactive=False, wrap=True, column_widths=WIN_WIDTHS,
                        label="Win rates of the answers' models (hidden while labeling), each from the tuned or newer "
                              "model's side", elem_id="label-winrates", visible=False)
    review = gr.Dataframe(headers=REVIEW_HEADERS, interactive=False, wrap=True,
                          label="Items the labelers disagree on (worth a second look); A and B are the item's first "
                                "and second answer, whichever side each labeler saw them on",
                          elem_id="label-disagreements",
                          visible=False)
    with gr.Group():
        kind = gr.Radio(EXPORT_KINDS, value="preference", label="Export as", elem_id="label-export-kind")
        with gr.Row():
            min_agreement = gr.Slider(0, 1, value=0, step=0.05, label="Keep items whose labelers agree at least",
                                      elem_id="label-min-agreement",
                                      info="Share of an item's labelers who chose its winner. 0 = keep every item "
                                           "with a majority; above 0, items only one person labelled are left out "
                                           "(no agreement to measure). Ties and 'both bad' are always left out.")
            with_votes = gr.Checkbox(label="Add the Chat tab's votes", elem_id="label-with-votes",
                                     info="Decisive side-by-side votes join the export.")
        export_name = gr.Textbox(label="Dataset name (optional)", elem_id="label-export-name")
        with gr.Row():
            export = gr.Button("Export to Data", elem_id="label-export")
            train = gr.Button("Train on these labels", variant="primary", elem_id="label-train")
    message = gr.Markdown(elem_id="label-export-message")
    outputs = [text, labelers, kappa, wins, review]
    followed = gr.State(None)  # the picked project's (id, status, items) as the overview last showed them

    def where(project_id) -> list | None:
        try:  # (synced: the answers written since are its items)
            found = ls.project(studio, project_id, with_progress=False) if project_id else None
        except LabelError:  # deleted meanwhile
            found = None
        return [found["id"], found["status"], found["items"]] if found else None

    def show(project_id):
        return (*summary(studio, project_id), where(project_id))

    def on_tick(project_id, last):
        now = where(project_id)
        if now is None or now == last or last is None or last[0] != now[0]:  # (a pick's own change shows it)
            return (*[gr.skip()] * len(outputs), now)
        return (*summary(studio, project_id), now)

    shown = [*outputs, followed]
    refresh.click(show, project, shown)
    project.change(show, project, shown, show_progress="hidden")  # (the timer renames it)
    if timer is not None:
        timer.tick(on_tick, [project, followed], shown, show_progress="hidden")

    def on_export(project_id, how, agree, votes, title):
        """The message, and the dataset made (or found), which the Data tab then shows."""
        if not project_id:
            return "**Nothing exported:** pick a project above first.", None
        try:
            row = ls.export(studio, project_id, how, float(agree), bool(votes), (title or "").strip() or None)
        except (LabelError, DataError) as err:
            return f"**Nothing exported:** {quoted(err)}", None
        rows = f"{row['rows']} row{'s' if row['rows'] != 1 else ''}"
        alone = (row["meta"].get("origin") or {}).get("alone")
        return (f"{made_or_found(row, title, 'labels', made='Exported')}: {rows} of {row['kind']} data, in the "
                "Data tab."
                + (f" Left out {alone} item{'s' if alone != 1 else ''} only one person labelled: the agreement bar "
                   "needs two labels to measure." if alone else "") + cut_chosen_note(row), row["id"])

    export_made = gr.State(None)
    exported = export.click(on_export, [project, kind, min_agreement, with_votes, export_name], [message, export_made])
    return {"show": show, "outputs": shown, "exported": exported,
            "export_made": export_made, "train": train,
            "inputs": [project, kind, min_agreement, with_votes, export_name], "message": message}
