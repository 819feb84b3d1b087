"""The Data tab's RLAIF panel: a judge model labels the chosen preference dataset's pairs in a
background job; when it finishes the judged pairs are a new dataset, with how often the judge agreed
with the original choices. UI only: studio/judge_service.py does the work."""

from __future__ import annotations

from components.text import literal, quoted

import gradio as gr

from pipelines.data import DataError
from pipelines.events import ACTIVE_STATUSES
from pipelines.judge import MIN_SURE
from pipelines.models import ModelError
from studio import judge_service


def made_text(row: dict, summary: dict, both_orders: bool) -> str:
    return (f"Made **{literal(row['name'])}** (`{row['id']}`): {row['rows']} preference pairs in the judge's order. "
            + judge_service.agreement_text(summary, both_orders) + ".")


def build(studio, chosen: gr.Dropdown, refresh_choices, opened=None) -> None:
    """`chosen`: the Data tab's dataset picker; refresh_choices() -> its new choices. `opened`: the Data tab
    (its select shows a judge job still at work, and makes the datasets of those that finished unwatched)."""
    job = gr.State(None)  # the judge job this page follows (an id only)
    with gr.Accordion("Label these pairs with a judge model (RLAIF)", open=False):
        gr.Markdown("A model reads each pair and says which answer is better (the probability it gives to "
                    "'1' vs '2'), as in the RLAIF paper. The judged pairs become a new preference dataset for "
                    "DPO or a reward model; how often the judge agreed with the pairs' original choices is shown.")
        with gr.Row():
            judge = gr.Textbox(value="default", label="Judge model", elem_id="judge-model",
                               info="'default' = the built-in model, or a local model folder.")
            limit = gr.Number(value=None, precision=0, label="Only the first N pairs", elem_id="judge-limit",
                              info="Empty or 0 = all.")
        with gr.Row():
            both = gr.Checkbox(value=True, label="Ask in both orders", elem_id="judge-both",
                               info="Judges favour the answer shown first (or second); asking both ways and "
                                    "averaging cancels that. Twice the time.")
            rationale = gr.Checkbox(value=False, label="Let it compare first", elem_id="judge-rationale",
                                    info="The judge writes a short comparison before choosing (slower).")
            min_sure = gr.Slider(50, 95, value=round(MIN_SURE * 100), step=1, label="Sure enough to reverse (%)",
                                 elem_id="judge-min-sure",
                                 info="A pair's original choice is reversed only where the judge gives the other "
                                      "answer at least this much; where it is less sure, the pair stays as it was.")
        fits = gr.Markdown(elem_id="judge-fits")
        with gr.Row():
            # one job at a time from a page: a second press started a second job, and the first one's pairs
            # never became a dataset (the page followed only the newest)
            start = gr.Button("Judge the pairs", elem_id="judge-start")
            cancel = gr.Button("Cancel", elem_id="judge-cancel", variant="stop", visible=False)
        status = gr.Markdown(elem_id="judge-status")
    timer = gr.Timer(1.0, active=False)
    following = [status, job, timer, start, cancel]

    def follow(job_id: str, text: str) -> tuple:
        return text, job_id, gr.Timer(active=True), gr.update(interactive=False), gr.update(visible=True)

    def idle(text) -> tuple:
        return text, None, gr.Timer(active=False), gr.update(interactive=True), gr.update(visible=False)

    def progress(job_id: str, found: dict) -> str:
        done = f"{found['step']}/{found['max_steps']} pairs judged" if found.get("max_steps") else found["status"]
        return f"Judge job `{job_id}`: {'cancelling' if found.get('cancelling') else done}…"

    def on_start(dataset_id, judge_spec, n, both_orders, written, sure):
        if not dataset_id:
            return idle("Pick a preference dataset above first.")
        try:
            job_id = judge_service.start(studio, dataset_id, judge_spec, both_orders=both_orders,
                                         rationale=written, limit=int(n) if n else None,
                                         min_sure=MIN_SURE if sure is None else sure / 100)
        except (judge_service.JudgeError, DataError, ModelError) as err:
            return idle(f"**Could not start:** {quoted(err)}")
        except OSError as err:  # its worker could not be started (no memory to fork, no disk for its folder)
            return idle(f"**Could not start:** the judge process could not be started ({quoted(err)}); "
                        "nothing was queued, press again once the machine has room")
        return follow(job_id, f"Judge job `{job_id}` queued…")

    started = start.click(on_start, [chosen, judge, limit, both, rationale, min_sure], following)

    def on_chosen(dataset_id, job_id):
        """Whether the dataset picked above holds pairs a judge can compare, said before a press (an sft
        dataset offered the button, which refused only once pressed)."""
        row = studio.store.get_dataset(dataset_id) if dataset_id else None
        if row is None or row["kind"] == "preference":
            return "", gr.update(interactive=job_id is None)  # (a job followed keeps the button off)
        return (f"*{literal(row['name'])}* holds {row['kind']} data: a judge compares the two answers of "
                "preference pairs (prompt, chosen, rejected); pick such a dataset above.", gr.update(interactive=False))

    chosen.change(on_chosen, [chosen, job], [fits, start], show_progress="hidden")

    def on_cancel(job_id):
        if not job_id:
            return gr.skip()
        try:
            judge_service.cancel(studio, job_id)
        except judge_service.JudgeError as err:
            return quoted(err)
        return f"Judge job `{job_id}`: cancelling…"

    cancel.click(on_cancel, job, status)

    def on_tick(job_id):
        if not job_id:
            return *idle(gr.skip()), gr.skip()
        try:
            found = judge_service.state(studio, job_id)
            if found["status"] in ACTIVE_STATUSES:
                return progress(job_id, found), *(gr.skip(),) * 5
            if found["status"] == "cancelled":
                return *idle(f"Judge job `{job_id}` cancelled: "
                             f"{judge_service.stopped_text(studio, job_id, 'cancelled')}."), gr.skip()
            if found["status"] != "completed":
                left = judge_service.stopped_text(studio, job_id, found["status"]) if judge_service.kept_readings(
                    studio, job_id) else ""
                return *idle(f"**Judge job `{job_id}` {found['status']}:** {quoted(found['error'] or '')}"
                             + (f" ({left})" if left else "")), gr.skip()
            row = judge_service.collect(studio, job_id)
        except (judge_service.JudgeError, DataError, OSError) as err:
            # said once: a handler that raised left the timer on, the same error every second
            return *idle(f"**Judge job `{job_id}`:** {quoted(err)}"), gr.skip()
        text = made_text(row, found["summary"], judge_service.both_orders(studio, job_id))
        return *idle(text), gr.update(choices=refresh_choices(), value=row["id"])

    ticked = timer.tick(on_tick, job, [*following, chosen], show_progress="hidden")
    # a job that ends (cancelled, failed, refused) turns the button on again only for a dataset of pairs
    for ended in (started, ticked):
        ended.then(on_chosen, [chosen, job], [fits, start], show_progress="hidden")

    def on_open(job_id):
        """The jobs that finished with no page following them become datasets (said here), and a job still at
        work (started before a reload, or from another page) is followed."""
        made = judge_service.collect_finished(studio)
        said = " ".join(f"Judge job `{done}` finished: " + made_text(row, read_summary(done),
                                                                    judge_service.both_orders(studio, done))
                        for done, row in made)
        # offered, not picked: a reload puts back the dataset this browser last viewed, and whichever came
        # last won (CI); the sentence names the new one
        picked = gr.update(choices=refresh_choices()) if made else gr.skip()
        if job_id:
            return said or gr.skip(), *(gr.skip(),) * 4, picked
        at_work = judge_service.active(studio)
        if at_work:
            found = judge_service.state(studio, at_work)
            return *follow(at_work, " ".join(x for x in (said, progress(at_work, found)) if x)), picked
        return said or gr.skip(), *(gr.skip(),) * 4, picked

    def read_summary(job_id: str) -> dict:
        return judge_service.state(studio, job_id)["summary"]

    if opened is not None:
        opened.select(on_open, job, [*following, chosen], show_progress="hidden")
