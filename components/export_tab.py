"""Export tab: a tuned model out of the studio (a merged model folder, or a GGUF file with an Ollama
Modelfile), models merged with each other, and the list of exports with their progress, files to
download and the command that runs the result in Ollama. Made models join the Train and Chat tabs'
model lists."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import gradio as gr

from pipelines.export import ExportError
from pipelines.export.model_merge import MERGE_METHODS
from studio import export_service as xs

FORMATS = [("GGUF file for llama.cpp and Ollama (one file + a Modelfile)", "gguf"),
           ("Merged model folder (Hugging Face safetensors: transformers, vLLM, further training)", "merged")]
KINDS = {"merged": "merged model", "merge": "model merge", "gguf": "GGUF"}


def shown_size(n: float) -> str:
    """A file's size in units of 1024, as the browser's downloads list and file managers show it (a
    '144.8 MB' here and a '138.1 MB' there, for the same file, read as two files)."""
    unit = 0
    while n > 1024 and unit < 4:
        n, unit = n / 1024, unit + 1
    return f"{n:.1f} {('B', 'KB', 'MB', 'GB', 'TB')[unit]}"


def download_link(url: str, name: str, size: int) -> str:
    """A file to download, named and sized, for a Markdown panel (served by launch.Downloads)."""
    return f'<a href="{url}" download="{html.escape(name)}">{html.escape(name)}</a> · {shown_size(size)}'


def table(studio) -> list[list]:
    rows = []
    for row in xs.list_exports(studio):
        what = KINDS[row["kind"]] + (f" {row['source'].get('quant', '').upper()}" if row["kind"] == "gguf" else "")
        progress = f"{row['step']}/{row['max_steps']}" if row.get("max_steps") else "-"
        rows.append([row["id"], row["name"], what, row["status"], progress])
    return rows


def pick_choices(rows: list[list]) -> list[tuple[str, str]]:
    """The export picker's options, from the table's rows (read once per refresh)."""
    return [(f"{name} · {what} · {status} ({export_id})", export_id) for export_id, name, what, status, _ in rows]


def stored_dtype(folder: Path) -> str | None:
    """The precision a model folder's weights are saved in (a merged model of the built-in one is float32, twice
    the size of bf16: the page did not say)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("dtype") or config.get("torch_dtype")


NAME_HINTS = {"gguf": "e.g. quillpad-support (also the Ollama model name)",
              "merged": "e.g. quillpad-support (how the Train and Chat lists name it)"}


def details(studio, export_id: str | None) -> str:
    if not export_id:
        return "Pick an export to see its files."
    row = xs.get_export(studio, export_id)
    if row is None:
        return f"No export '{html.escape(export_id)}'."
    lines = [f"**{html.escape(row['name'])}** ({KINDS[row['kind']]}) · **{row['status']}**"]
    if row["status"] in ("queued", "running"):
        lines.append(f"{row.get('phase') or 'waiting for its turn'} · step {row['step']} of {row['max_steps'] or '?'}")
    if row["error"]:
        lines.append(f"**Failed:** {html.escape(row['error'])}")
    if row["status"] == "completed":
        summary = row["summary"]
        lines.append("\nDownload:")
        for path in xs.files(studio, export_id):  # served from the workspace as they are (launch.Downloads)
            lines.append(f"- {download_link(xs.download_url(export_id, path), path.name, path.stat().st_size)}")
        folder = Path(summary["gguf"]).parent if summary.get("gguf") else summary.get("folder")
        dtype = stored_dtype(Path(folder)) if row["kind"] != "gguf" else None
        stored = f" · weights in {dtype}, as its base model stores them" if dtype else ""
        lines.append(f"\nFolder: `{folder}` · took {summary.get('seconds', '?')} s{stored}")
        command = xs.ollama_command(studio, export_id)
        if command:
            lines.append(f"\nRun it with [Ollama](https://ollama.com) (or load the .gguf in llama.cpp):\n\n```\n{command}\n```")
        if summary.get("note"):  # why there is no Modelfile (it was kept in the summary, and shown nowhere)
            lines.append(f"\n**Note:** {html.escape(summary['note'], quote=False)}")
        if row["kind"] != "gguf":
            lines.append("\nThis model is now in the Train tab's *Start from* list and in the Chat tab's model lists. "
                         "Elsewhere, Hugging Face transformers loads the folder as it is:\n\n```python\n"
                         "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                         f"model = AutoModelForCausalLM.from_pretrained({str(folder)!r})\n"
                         f"tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})\n```")
    return "\n".join(lines)


def parse_weights(text: str, count: int) -> list[float] | None:
    if not (text or "").strip():
        return None
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ExportError(f"weights '{text}' must be numbers separated by commas, one per model") from None
    if not all(math.isfinite(v) for v in values):
        raise ExportError("every weight must be a finite number")
    if len(values) != count:
        raise ExportError(f"{len(values)} weights for {count} models; give one weight per model")
    return values


def newest_run(choices: list[tuple[str, str]]) -> str:
    """The newest finished run when there is one (runs follow the built-in model in the list, newest
    first), else the built-in model."""
    return next((value for _label, value in choices if value.startswith("run:")), "default")


def build(studio):
    """Returns (refresh(): choice updates for page load and tab opening, its outputs)."""
    gr.Markdown("Take a tuned model out of the studio: as **one GGUF file** for llama.cpp and Ollama, as a "
                "**merged model folder** that transformers loads anywhere, or **merge models** with each other. "
                "Each runs in the background like training; results appear in the list below.")
    choices = xs.sources(studio)
    newest = newest_run(choices)
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### Export a model")
            source = gr.Dropdown(choices=choices, value=newest, label="Model", elem_id="export-source",
                                 info="A finished run (its adapter is merged into its base first), a model an "
                                      "earlier export made, or the built-in model. Prompt-learning, bottleneck-adapter "
                                      "and ReFT runs are not listed: what they learned sits beside the model's "
                                      "weights (virtual tokens, added layers), which a model file cannot carry.")
            fmt = gr.Radio(FORMATS, value="gguf", label="Format", elem_id="export-format")
            quant = gr.Radio([(text, key) for key, text in xs.QUANTS.items()], value="q8_0", label="GGUF weight type",
                             elem_id="export-quant")
            name = gr.Textbox(label="Name", placeholder=NAME_HINTS["gguf"], elem_id="export-name")
            system = gr.Textbox(label="System prompt for Ollama (optional)", lines=2, elem_id="export-system",
                                info="Written into the Modelfile; empty = the model's own default.")
            export = gr.Button("Export", variant="primary", elem_id="export-start")
        with gr.Column():
            gr.Markdown("### Merge models")
            method = gr.Dropdown([(m.label, m.key) for m in MERGE_METHODS.values()], value="slerp",
                                 label="Merge method", elem_id="merge-method")
            method_help = gr.Markdown(MERGE_METHODS["slerp"].summary, elem_id="merge-help")
            models = gr.Dropdown(choices=choices, value=[], multiselect=True, label="Models to merge",
                                 elem_id="merge-models",
                                 info="Of the same architecture and size: usually one base model tuned in "
                                      "different ways, or a tuned model and its base.")
            base = gr.Dropdown(choices=choices, value="default", label="Base model", visible=False,
                               elem_id="merge-base", info="The model the others were tuned from.")
            t = gr.Slider(0, 1, value=0.5, step=0.05, label="Interpolation factor t", elem_id="merge-t",
                          info="0 = the first model, 1 = the second, 0.5 = halfway.")
            weights = gr.Textbox(label="Weights (optional)", placeholder="one per model, e.g. 1, 0.5", visible=False,
                                 elem_id="merge-weights",
                                 info="How much each model counts; empty = equal shares.")
            density = gr.Slider(0.05, 1, value=0.5, step=0.05, label="Density", visible=False, elem_id="merge-density",
                                info="Share of each model's changes kept: 1 keeps all, 0.2 only the largest fifth "
                                     "(TIES) or a random fifth, scaled up (DARE).")
            merge_name = gr.Textbox(label="Name", placeholder="e.g. support-slerp", elem_id="merge-name")
            merge = gr.Button("Merge", variant="primary", elem_id="merge-start")
    message = gr.Markdown(elem_id="export-message")
    gr.Markdown("### Exports")
    rows = table(studio)
    listing = gr.Dataframe(value=rows, headers=["ID", "Name", "What", "Status", "Progress"],
                           interactive=False, elem_id="export-table", wrap=True)
    picked = gr.Dropdown(choices=pick_choices(rows), value=None, label="Export", elem_id="export-pick",
                         info="Pick one to see its files, download them and how to run it.")
    info = gr.Markdown(details(studio, None), elem_id="export-details")
    cancel = gr.Button("Cancel this export", elem_id="export-cancel", size="sm", interactive=False)
    timer = gr.Timer(2.0, active=False)  # ticks while the Export tab is shown (app.py)
    suggested = gr.State(newest)  # the Model the studio put up; a person's own pick is never moved

    # (a merged folder's name is no Ollama model's: the placeholder said so whatever the format)
    fmt.change(lambda f: (gr.update(visible=f == "gguf"), gr.update(visible=f == "gguf"),
                          gr.update(placeholder=NAME_HINTS[f])), fmt, [quant, system, name])

    def on_method(key):
        spec = MERGE_METHODS[key]
        return (spec.summary, gr.update(visible=spec.needs_base), gr.update(visible=spec.uses_t),
                gr.update(visible=spec.uses_weights, info=spec.weights_help),
                gr.update(visible=spec.uses_density))

    method.change(on_method, method, [method_help, base, t, weights, density])

    def started(export_id: str, what: str, typed: str | None = None):
        rows = table(studio)
        named = xs.safe_name(typed) if typed else None
        # ("Quillpad" became "quillpad" for its capital alone, and was told of the letters a name may hold)
        why = ("names are written in lowercase" if named and named == typed.strip().lower()
               else "a name for files and for Ollama takes letters, digits, '.', '_' and '-' only")
        renamed = f" It is named `{named}`: {why}." if named and named != typed.strip() else ""
        return (f"Started {what} **{export_id}**: it runs in the background; its progress is below.{renamed}",
                rows, gr.update(choices=pick_choices(rows), value=export_id), details(studio, export_id))

    outputs = [message, listing, picked, info]

    def on_export(ref, fmt_key, quant_key, export_name, system_prompt):
        try:
            export_id = xs.start_export(studio, ref, fmt=fmt_key, quant=quant_key, name=export_name or None,
                                        system=system_prompt or None)
        except ExportError as err:
            return (f"**Cannot export:** {html.escape(str(err))}", *[gr.update()] * 3)
        return started(export_id, "the export", export_name)

    export.click(on_export, [source, fmt, quant, name, system], outputs)

    def on_merge(key, refs, base_ref, factor, weight_text, dens, merge_label):
        try:
            spec = MERGE_METHODS[key]
            chosen = weights_for(spec, refs, weight_text)
            export_id = xs.start_merge(studio, key, list(refs or []), base=base_ref if spec.needs_base else None,
                                       weights=chosen, t=factor, density=dens, name=merge_label or None)
        except ExportError as err:
            return (f"**Cannot merge:** {html.escape(str(err))}", *[gr.update()] * 3)
        return started(export_id, "the merge", merge_label)

    def weights_for(spec, refs, text):
        return parse_weights(text, len(refs or [])) if spec.uses_weights else None

    merge.click(on_merge, [method, models, base, t, weights, density, merge_name], outputs)

    def cancellable(export_id, rows):
        """Cancel is offered only while the picked export is queued or running."""
        return gr.update(interactive=status_of(rows, export_id) in ("queued", "running"))

    def on_pick(export_id):
        return details(studio, export_id), cancellable(export_id, table(studio))

    picked.change(on_pick, picked, [info, cancel])

    def on_cancel(export_id):
        if not export_id:
            return "Pick an export in the list first.", gr.update()
        try:
            xs.cancel(studio, export_id)
        except ExportError as err:
            return f"**Cannot cancel:** {html.escape(str(err))}", gr.update()
        return f"Cancelling **{export_id}**: it stops and removes what it had not finished.", details(studio, export_id)

    cancel.click(on_cancel, picked, [message, info])

    def status_of(rows, export_id):
        return next((row[3] for row in rows if row[0] == export_id), None)

    def on_tick(export_id, shown_rows):
        shown = shown_rows.values.tolist() if hasattr(shown_rows, "values") else shown_rows
        rows = table(studio)
        if rows == shown:
            # the table holds no phase: a merge or a GGUF is one step, and its details ("writing …: tensor 3 of
            # 272") stood still for the whole export, as if it hung
            busy = status_of(rows, export_id) in ("queued", "running")
            return gr.skip(), gr.skip(), details(studio, export_id) if busy else gr.skip(), gr.skip()
        return rows, gr.update(choices=pick_choices(rows)), details(studio, export_id), cancellable(export_id, rows)

    timer.tick(on_tick, [picked, listing], [listing, picked, info, cancel], show_progress="hidden")

    def refresh(current=None, put_up=None):
        """New runs and models become choosable. While the Model is still the one the studio put up
        (or has gone), it moves to the newest run: the one a person who just trained wants out.
        The list itself is left to the timer's first tick: it sees what changed while the tab was
        hidden (an export that completed) and links its files."""
        fresh = xs.sources(studio)
        newest_now = newest_run(fresh)
        refs = {value for _label, value in fresh}
        if current in refs and current != put_up or current == newest_now:
            return gr.update(choices=fresh), gr.update(choices=fresh), gr.update(choices=fresh), gr.skip()
        return gr.update(choices=fresh, value=newest_now), gr.update(choices=fresh), gr.update(choices=fresh), newest_now

    return refresh, [source, models, base, suggested], timer
