"""The Data tab's RLAIF panel: a judge model labels the chosen preference dataset's pairs in a
background job; when it finishes the judged pairs are a new dataset, with how often the judge agreed
with the original choices. UI only: studio/judge_service.py does the work."""

from __future__ import annotations

from components.text import literal, quoted

import gradio as gr

from pipelines.data import DataError
from pipelines.models import ModelError
from studio import judge_service


def build(studio, chosen: gr.Dropdown, refresh_choices) -> None:
    """`chosen`: the Data tab's dataset picker; refresh_choices() -> its new choices."""
    job = gr.State(None)  # the judge job this browser started (an id only)
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
        start = gr.Button("Judge the pairs", elem_id="judge-start")
        status = gr.Markdown(elem_id="judge-status")
    timer = gr.Timer(1.0, active=False)

    def on_start(dataset_id, judge_spec, n, both_orders, written):
        if not dataset_id:
            return "Pick a preference dataset above first.", None, gr.Timer(active=False)
        try:
            job_id = judge_service.start(studio, dataset_id, (judge_spec or "default").strip(), both_orders=both_orders,
                                         rationale=written, limit=int(n) if n else None)
        except (judge_service.JudgeError, DataError, ModelError) as err:
            return f"**Could not start:** {quoted(err)}", None, gr.Timer(active=False)
        return f"Judge job `{job_id}` queued…", job_id, gr.Timer(active=True)

    start.click(on_start, [chosen, judge, limit, both, rationale], [status, job, timer])

    def on_tick(job_id, both_orders):
        if not job_id:
            return gr.skip(), gr.Timer(active=False), gr.skip()
        found = judge_service.state(studio, job_id)
        if found["status"] in ("queued", "running"):
            done = f"{found['step']}/{found['max_steps']} pairs judged" if found.get("max_steps") else found["status"]
            return f"Judge job `{job_id}`: {done}…", gr.skip(), gr.skip()
        if found["status"] != "completed":
            return (f"**Judge job `{job_id}` {found['status']}:** {found['error'] or ''}", gr.Timer(active=False),
                    gr.skip())
        row = judge_service.collect(studio, job_id)
        text = (f"Made **{literal(row['name'])}** (`{row['id']}`): {row['rows']} preference pairs in the judge's order. "
                + judge_service.agreement_text(found["summary"], both_orders) + ".")
        return text, gr.Timer(active=False), gr.update(choices=refresh_choices(), value=row["id"])

    timer.tick(on_tick, [job, both], [status, timer, chosen], show_progress="hidden")
