"""Data tab: upload a file (or pick a sample), see what was detected, map columns, import; then
preview, statistics and one example rendered exactly as training will see it."""

from __future__ import annotations

import json
import queue
import re
import threading
from pathlib import Path

import gradio as gr

from components import dataset_delete, dataset_note, form_memory, judge_panel
from components.charts import length_histogram
from components.text import literal, quoted
from pipelines import dataset_stats, importer
from pipelines.data import DataError
from pipelines.formats import KINDS, LAYOUT_BY_KEY, few
from pipelines.importer import HELDOUT, ImportOptions, inspect
from pipelines.models import ModelError
from pipelines.readers import FORMATS, human_size
from studio import judge_service, method_service
from studio.core import SAMPLES, SAMPLES_DIR, dataset_title, is_sample

# how the rendered example marks each part
CONTEXT, LEARNED = "context (not learned)", "learned"
PREFERRED, REJECTED = "preferred reply (made more likely)", "rejected reply (made less likely)"
# the system line the model's chat template writes where a row has none (SmolLM2's): context too, but not the file's
TEMPLATE = "added by the model's chat template (context, not in your file)"
EXAMPLE_COLORS = {CONTEXT: "gray", LEARNED: "green", PREFERRED: "green", REJECTED: "red", TEMPLATE: "blue"}
MAP_TARGETS = ("prompt", "completion", "chosen", "rejected", "label", "text", "messages", "answer", "tests")
NOT_MAPPED = "(not mapped)"
# what each target holds, where its name alone misleads: a newcomer whose 'answer' column was mapped to
# completion read the RL target "answer: (not mapped)" as their answers left out
MAP_LABELS = {"completion": "completion (the reply to learn)", "label": "label (good or bad)",
              "answer": "answer (RL prompts: the reference to check by)", "tests": "tests (RL prompts: code tests)"}


def _cell(value, limit: int = 160) -> str:
    # default=str: a Parquet file's dates and times (the first look failed with a TypeError on them)
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


MIN_COLUMN_PERCENT = 18  # of the table's width: past 5 columns the table scrolls sideways


UNTAUGHT_SFT = "every reply has weight 0, kept as context"  # why a row teaches nothing, as Import says it
UNTAUGHT_PAIR = "'chosen' and 'rejected' are the same answer or one is empty"
PLACE_HEADER = "In the file"  # the raw table's first column: where each record is, as the messages name it
PLACE_PERCENT = 22  # of the table's width ("row 12: Import stops here" on two lines)
MIN_PLACE_PERCENT = 10  # with 5 columns of the file or more


def shown_table(table: dict | None):
    """A table with rows is shown, its columns sharing the width (sized by their text, a pair's prompt took it
    all and pushed chosen and rejected out of sight to the right); an empty one is hidden (Gradio would show
    headers named 1, 2, 3)."""
    if not table or not table["data"]:
        return gr.update(value=None, visible=False)
    headers, place = table["headers"], []
    if headers[0] == PLACE_HEADER:  # where each record is ("row 12: left out"): a column of its own, narrower
        headers = headers[1:]       # as the file's columns need their width (5 of them fit, as before it)
        place = [max(MIN_PLACE_PERCENT, min(PLACE_PERCENT, 100 - MIN_COLUMN_PERCENT * len(headers)))]
    width = 100 - sum(place)
    share = f"{max(width / max(len(headers), 1), MIN_COLUMN_PERCENT):.4g}%"  # (many: scrolled, still legible)
    return gr.update(value=table, visible=True, column_widths=[f"{p}%" for p in place] + [share] * len(headers))


def offered(studio, made: str | None = None) -> dict:
    """The Data tab's dataset list as it is now, with the dataset an export just made (or found) picked."""
    choices = dataset_choices(studio)
    return gr.update(choices=choices, value=made) if made in {v for _l, v in choices} else gr.update(choices=choices)


def dataset_choices(studio, datasets: list[dict] | None = None) -> list[tuple[str, str]]:
    """The datasets of the catalogue (`datasets`, when already read), newest first; a bundled sample (stored
    once a run or a look used it) named as the Train and Label tabs name it."""
    return [(f"{'Sample: ' if is_sample(d) else ''}{dataset_title(d)} — {d['kind']}, {d['rows']} rows",
             d["id"]) for d in (studio.list_datasets() if datasets is None else datasets)]


def listed_again(studio, shown, viewed=None, model="default"):
    """The dataset list when the tab is opened: datasets made since the page was (Train on these
    preferences, another window, the command line), the one shown kept while it is still there.
    With none shown, the newest is put up, the person's own first (a first visit showed an empty tab until
    a dataset was picked),
    unless this browser kept one to show (`viewed`, as on_load reads it: the page's load puts that one
    back) or the tokenizer's `model` is the built-in one not prepared yet (its conversion, up to a minute
    of both cores, would start for a person passing through the tab, and hold up their own pick)."""
    datasets = studio.list_datasets()
    choices = dataset_choices(studio, datasets)
    values = [value for _label, value in choices]
    if shown in values:
        return gr.update(choices=choices)
    if shown:  # deleted since (another window, the command line): the view says so
        return gr.update(choices=choices, value=None)
    kept = viewed.get("dataset") if isinstance(viewed, dict) else None
    if kept in values or not values or not method_service.model_ready(studio, model or "default"):
        return gr.update(choices=choices)
    # the person's own before a bundled sample, which the page stores when the Train tab's estimate or a run
    # first reads it (a walkthrough's first visit after its import showed the FAQ sample, stored on the load)
    own = [d["id"] for d in datasets if not is_sample(d)]
    return gr.update(choices=choices, value=own[0] if own else values[0])


def _options(kind, text_unit, dedupe, heldout, seed, mapping_values, skip_bad=False) -> ImportOptions:
    mapping = {t: col for t, col in zip(MAP_TARGETS, mapping_values) if col and col != NOT_MAPPED}
    return ImportOptions(kind=kind, mapping=mapping, text_unit=text_unit, dedupe=bool(dedupe),
                         heldout=float(heldout or 0), seed=int(seed or 0), skip_bad=bool(skip_bad))


def source_of(upload: str | None, sample: str | None) -> tuple[str, str] | None:
    """(path, name shown to the user) of the file to import: the upload, else the chosen sample."""
    if upload:
        return upload, Path(upload).name  # Gradio keeps the original name on its temporary copy
    if sample in SAMPLES:
        return str(SAMPLES_DIR / SAMPLES[sample][0]), SAMPLES[sample][0]
    return None


def unmapped():
    """A mapping field with no file's columns to choose from. One per field: Gradio takes the value
    out of an update as it applies it, so an update shared by two fields sets only the first."""
    return gr.update(choices=[NOT_MAPPED], value=NOT_MAPPED)


def without_cli_syntax(text: str) -> str:
    """A sentence shared with the CLI, without its `--map` example (the page maps with its own fields)."""
    return re.sub(r",? or map yours \(e\.g\. --map [^)]*\)", "", text)


# after one row's problem, where the option that leaves such rows out is (its section starts closed)
SKIP_HINT = (" (or tick *Skip rows that cannot be read*, under *Name, duplicates, held-out split*, to leave such "
             "rows out)")


def check_source(studio, upload, sample, kind, text_unit, *mapping_values, skip_bad=False):
    """What the file looks like and how it will be read: (message, raw rows, mapping choices, open). With
    `skip_bad` (*Skip rows that cannot be read* ticked), rows Import would leave out are said as left out."""
    source = source_of(upload, sample)
    if not source:
        return "", None, [gr.update()] * len(MAP_TARGETS), gr.update()
    path, _name = source
    options = _options(kind, text_unit, False, 0, 0, mapping_values, skip_bad)
    try:
        info = inspect(Path(path), options, studio.max_upload_bytes)
    except DataError as err:  # nothing to map: the last file's columns go with it (a value that is no
        # longer a choice is refused by the page, and Import would fail on it before reading the file)
        return f"**Cannot use this file:** {quoted(err)}", None, [unmapped() for _ in MAP_TARGETS], gr.update()
    columns = info["columns"]
    feedback = info.get("feedback")
    table = raw_table(info, feedback or info)
    choices = [NOT_MAPPED, *columns]
    updates = [gr.update(choices=choices, value=v if v in choices else NOT_MAPPED) for v in mapping_values]
    if feedback:  # replies with good/bad marks: imported as plain examples, the bad ones would be copied
        updates = [gr.update(choices=choices, value=feedback["mapping"].get(t, NOT_MAPPED)) for t in MAP_TARGETS]
        said = (f"Column **{feedback['column']}** holds good/bad marks on the replies: it is mapped below to "
                f"*label*, so the file is read as **KTO** data (a reply marked bad is made less likely, not "
                f"copied as an example).")
        # the first rows as Import will read them with that mapping (a row the reader could not read after them)
        problem = feedback.get("row_problem") or info.get("read_problem")
        # (ticked: such rows are left out, not stopped at): those the marks' reading leaves out, and those the
        # reader could not read at all (a CSV row with a cell too many), which neither reading sees
        unreadable = (info.get("skipped") or {}).get("count", 0) - len(info.get("left_out") or ())
        n = len(feedback.get("left_out", ())) + unreadable
        if skip_bad and n:
            named = feedback.get("row_problem") or info["skipped"]["first"]
            return (f"{said} Press Import: it leaves out rows that cannot be read, as *Skip rows that cannot be "
                    f"read* asks ({n} row{'s' if n != 1 else ''} among the first rows read; one of them: "
                    f"**{named.removeprefix(Path(path).name + ', ')}**).", table, updates, gr.update(open=True))
        if problem:
            return (f"{said} Import would stop here: **{problem}**", table, updates, gr.update(open=True))
        return (f"{said} Press Import, or choose Kind of data *sft* to import every reply as an example and "
                "ignore the marks.", table, updates, gr.update(open=True))
    if info["problem"]:
        problem = without_cli_syntax(info["problem"])
        suggested = info.get("suggested") or {}
        if suggested and not any(v and v != NOT_MAPPED for v in mapping_values):
            # a question and its answer under other names: mapped for the user, one click (Import) away
            updates = [gr.update(choices=choices, value=suggested.get(t, NOT_MAPPED)) for t in MAP_TARGETS]
            return (f"Columns **{suggested['prompt']}** and **{suggested['completion']}** look like a question and "
                    f"its answer: they are mapped below to *prompt* and *completion*. Press Import, or change "
                    "the mapping.", table, updates, gr.update(open=True))
        return (f"**Cannot tell what these columns are:** {problem}. Say which of your columns is which below.",
                table, updates, gr.update(open=True))
    layout = LAYOUT_BY_KEY[info["layout"]]
    message = f"Detected **{layout.label}** in a {info['format'].upper()} file → stored as **{layout.kind}** data"
    mapped = {v for v in mapping_values if v and v != NOT_MAPPED} | set((info.get("case_mapped") or {}).values())
    unread = [c for c in columns if c not in (*layout.required, *layout.optional) and c not in mapped]
    hint, box = "", gr.update()
    untaught = [info["places"][i] for i in info.get("untaught") or ()]
    if untaught:  # (Import drops them, and says so; it stops when no row of the file teaches anything)
        why = (UNTAUGHT_SFT if layout.kind == "sft" else UNTAUGHT_PAIR)
        one = len(untaught) == 1
        if info.get("read_all") and len(untaught) == len(info["records"]):
            hint += (f" Import would stop: no {'conversation' if layout.kind == 'sft' else 'pair'} of the file can "
                     f"teach anything ({why}).")
        else:
            hint += (f" {named_places(untaught)} {'teaches' if one else 'teach'} nothing ({why}): Import drops "
                     f"{'it' if one else 'them'}.")
    # a column taken for one of ours under another name (pairs' question as their prompt), said
    renamed = [(target, source) for target, source in (info.get("case_mapped") or {}).items()
               if str(source).strip().lower() != target]
    hint += "".join(f" Column **{literal(source)}** is read as the *{target}*." for target, source in renamed)
    if layout.kind == "prompts" and kind == "auto" and unread:
        # prompt + 'answer_text_x': examples whose answer column was not recognised, imported as prompts alone
        hint = (f" Column{'s' if len(unread) > 1 else ''} **{few(unread)}** {'are' if len(unread) > 1 else 'is'} "
                "not read: if one holds the answers, map it to *completion* below to import examples instead.")
        box = gr.update(open=True)
    elif layout.kind == "prompts" and kind == "auto" and len(columns) == 1:
        # questions alone (a walkthrough's file of prompts, imported without a word on what they can train)
        hint = (" Questions alone teach by reinforcement learning (GRPO, with reward functions) or become a labeling "
                "project (Label tab: the model answers, you pick); to teach answers by example, add a column "
                "with them.")
    if info["row_problem"]:  # the first problem Import would meet, among the rows shown (in the first: the file's)
        skip = ("" if info.get("first_row_problem") or not info.get("row_skippable", True) or skip_bad
                else SKIP_HINT)
        return f"{message}, but Import would stop here: **{info['row_problem']}**{skip}{hint}", table, updates, box
    skipped = info.get("skipped")
    if skipped and skipped["none_read"]:  # (Import stops when it reads no row at all)
        return (f"{message}, but no row shown can be read: **{skipped['first']}** (the first). *Skip rows that "
                f"cannot be read* leaves such rows out, and Import stops if none is left.{hint}", table, updates, box)
    if skipped:  # the box is ticked: left out, as Import will, not "would stop here" beside the box's own name
        left = f"{skipped['count']} row{'s' if skipped['count'] != 1 else ''}"
        return (f"{message}. Press Import to check every row: it leaves out rows that cannot be read, as "
                f"*Skip rows that cannot be read* asks ({left} among the first rows read; the first of them: "
                f"**{skipped['first']}**)."
                f"{hint}", table, updates, box)
    return f"{message}. Press Import to check every row.{hint}", table, updates, box


def named_places(places: list[str]) -> str:
    """'Line 2', 'Lines 2 and 5', 'Rows 3, 4 and 7' (`places` as inspect names them: 'line 2', 'row 3')."""
    words = {p.split(" ", 1)[0] for p in places}
    if len(words) != 1 or len(places) == 1:
        said = few(places)
        return said[:1].upper() + said[1:]
    numbers = [p.split(" ", 1)[1] for p in places]
    return f"{places[0].split(' ', 1)[0].capitalize()}s {', '.join(numbers[:-1])} and {numbers[-1]}"


def raw_table(info: dict, read: dict) -> dict:
    """The first records as `inspect` read them, each with where it is in the file ("row 3", as a problem is
    said), the one Import would stop at and those *Skip rows that cannot be read* leaves out marked so (as
    `read` says: `info`, or its good/bad marks' reading)."""
    columns = info["columns"]
    marks = {**dict.fromkeys(read.get("untaught", ()), "teaches nothing, dropped"),
             **dict.fromkeys(read.get("left_out", ()), "left out"), read.get("stops_at"): "Import stops here"}
    marked = [f"{place}: {marks[i]}" if i in marks else place for i, place in enumerate(info["places"])]
    # a record that is no object (a JSON Lines line holding a list: the problem said below) shows whole
    return {"headers": [PLACE_HEADER, *columns],
            "data": [[place, *([_cell(r.get(c)) for c in columns] if isinstance(r, dict) else
                               [_cell(r), *[""] * (len(columns) - 1)])] for place, r in zip(marked, info["records"])]}


def import_source(studio, upload, sample, name, kind, text_unit, dedupe, heldout, seed, *mapping_values,
                  progress=None, skip_bad=False):
    """Import the chosen file: (message, dataset dropdown update). `skip_bad`: leave out what cannot be read."""
    source = source_of(upload, sample)
    if not source:
        return "**Nothing to import:** upload a file or pick a sample first.", gr.update()
    path, shown = source
    try:
        options = _options(kind, text_unit, dedupe, heldout, seed, mapping_values, skip_bad)
        row = studio.import_dataset(Path(path), name=name or None, options=options, source_name=shown,
                                    progress=progress)
    except DataError as err:  # (one row's problem: the option that leaves such rows out, and where it is)
        skip = SKIP_HINT if getattr(err, "skippable", False) and not skip_bad else ""
        return f"**Not imported:** {without_cli_syntax(str(err))}{skip}", gr.update()
    return (f"{dataset_note.imported_or_found(row, name)} (`{row['id']}`): {summary_text(row)}.",
            gr.update(choices=dataset_choices(studio), value=row["id"]))


def summary_text(row: dict) -> str:
    meta = row["meta"]
    parts = [f"{row['rows']} row{'s' if row['rows'] != 1 else ''} of {row['kind']} data from {row['source_name']} ({meta.get('layout_label', '?')})"]
    if meta.get("heldout_rows"):
        parts.append(f"{meta['heldout_rows']} held out for measuring (seed {meta['options']['seed']})")
    dups = meta.get("duplicates", 0)
    parts.append(f"{dups} exact duplicates" + (" dropped" if meta.get("dropped_duplicates") else "") if dups
                 else "no duplicates")
    if meta.get("skipped_rows"):
        parts.append(importer.skipped_text(meta))
    if meta.get("untaught_pairs"):
        parts.append(importer.untaught_text(meta))
    if meta.get("empty_optional_fields"):
        parts.append(f"{meta['empty_optional_fields']} empty optional fields "
                     f"({', '.join(meta.get('optional_columns', []))})")
    if meta.get("ended_replies"):
        parts.append(importer.ended_replies_text(meta))
    if meta.get("multi_turn_rows"):
        parts.append(f"{meta['multi_turn_rows']} multi-turn conversations ({importer.learned_replies_text(meta)})")
    if meta.get("ignored_columns"):
        parts.append(importer.ignored_text(meta))
    if meta.get("ignored_feedback"):
        parts.append(importer.ignored_feedback_text(meta))
    origin = meta.get("origin") or {}
    if origin.get("kind") == "judge":  # RLAIF: which model labeled it, how often it agreed with the originals
        agreed = judge_service.agreement_text(origin, origin["both_orders"])
        parts.append(f"labeled by the judge model {origin['judge']}; {agreed[0].lower()}{agreed[1:]}")
    return "; ".join(parts)


def stored_rows(row: dict) -> tuple[str, dict]:
    """(summary, first rows) of a catalogue row: what the view shows before any token is counted."""
    rows = dataset_stats.preview_rows(Path(row["path"]), 20)
    table = {"headers": list(rows[0]) if rows else [],
             "data": [[_cell(v, 400) for v in r.values()] for r in rows]}
    return f"**{literal(row['name'])}** — {summary_text(row)}.", table


def view_dataset(studio, dataset_id, model, max_length, example_row: int = 0):
    """(summary, first rows, token-length histogram, rendered example of row `example_row`, from 0) for one
    dataset."""
    row = studio.store.get_dataset(dataset_id) if dataset_id else None
    if row is None:
        return (dataset_delete.deleted_elsewhere(studio, dataset_id) or "Pick a dataset to see its rows and "
                "statistics."), None, None, None
    parquet = Path(row["path"])
    summary, table = stored_rows(row)
    max_length = int(max_length or 512)
    try:
        tokenizer = studio.tokenizer(model or "default")
        stats = dataset_stats.length_stats(parquet, tokenizer, max_length)  # (a tokenizer without a chat template)
    except ModelError as err:
        return f"{summary}\n\n**No token statistics:** {quoted(err)}", table, None, None
    sampled = f" (measured on {stats['measured']} of {stats['total']} training rows)" if stats["estimated"] else ""
    summary += (f"\n\nTokens per example with **{model}**'s tokenizer{sampled}: mean {stats['mean']:.0f}, "
                f"median {stats['median']:.0f}, longest {stats['longest']}. **{stats['over']}** rows are over the "
                f"max length of {max_length} and will be cut at the end.")
    if (parquet.parent / HELDOUT).exists():
        summary += f" Held-out rows: {dataset_stats.count_rows(parquet.parent / HELDOUT)}."
    example = rendered(dataset_stats.row_at(parquet, example_row), tokenizer, max_length)
    figure = length_histogram(stats["lengths"], max_length, stats["estimated"])
    return summary, table, figure, example


def rendered(first: dict | None, tokenizer, max_length: int) -> list | None:
    """A stored row as training sees it, as the example's (text, kind) parts; None for no row."""
    if first is None:
        return None
    shown = dataset_stats.render_example(first, tokenizer, max_length)
    example = [(shown["context"], CONTEXT), (shown["learned"], LEARNED)]
    if shown.get("runs"):  # a conversation of several replies: each reply learned, in turn with its context
        example = [(text, LEARNED if learned else CONTEXT) for text, learned in shown["runs"]]
    elif "chosen" in first and "rejected" in first:  # a pair: the reply pushed down is half of what is learned
        swapped = dataset_stats.render_example({**first, "chosen": first["rejected"], "rejected": first["chosen"]},
                                               tokenizer, max_length)
        example[1] = (shown["learned"], PREFERRED)
        example += [("\n\n   ⟷ the other reply of the pair:\n\n", None), (swapped["learned"], REJECTED)]
    elif first.get("label") is False:  # KTO: a reply marked bad is made less likely
        example[1] = (shown["learned"], REJECTED)
    return dataset_stats.with_template_system(example, first, tokenizer, TEMPLATE)


EXAMPLE_LABEL = "One example exactly as training sees it"


def example_label(index: int, rows: int, held_out: bool = False, example=True) -> str:
    """'Row 3 of 29, exactly as training sees it' ('of 29 training rows' beside a held-out file); no example, no
    row named."""
    if not rows or example is None:
        return EXAMPLE_LABEL
    return f"Row {index + 1} of {rows}{' training rows' if held_out else ''}, exactly as training sees it"


def row_index(number, rows: int) -> int:
    """A typed row number (from 1) as a row's index, within the dataset (0 or less: the first; past the end: the
    last)."""
    try:
        number = int(number or 1)
    except (TypeError, ValueError, OverflowError):
        number = 1
    return min(max(number, 1), max(rows, 1)) - 1


def view_example(studio, dataset_id, model, max_length, number):
    """(the example, its label, the row's number) of the row numbered `number` (from 1; past the end: the last)
    of a dataset; the example is None where the dataset or the tokenizer is gone (the view says why)."""
    row = studio.store.get_dataset(dataset_id) if dataset_id else None
    if row is None:
        return None, EXAMPLE_LABEL, 1
    parquet = Path(row["path"])
    rows = dataset_stats.count_rows(parquet)
    index = row_index(number, rows)
    try:
        tokenizer = studio.tokenizer(model or "default")
        example = rendered(dataset_stats.row_at(parquet, index), tokenizer, int(max_length or 512))
    except ModelError:
        example = None
    return example, example_label(index, rows, (parquet.parent / HELDOUT).exists(), example), index + 1


def build(studio, datasets_kept, opened=None, viewed=None):
    """The Data tab. `datasets_kept`: the Train tab's {kind of data: dataset} it comes back to, which an
    import sets for its kind (it was imported to train on). `opened`: the tab itself (its judge panel looks for
    judge jobs when it is opened). `viewed`: the browser's store of what the tab shows."""
    samples = [(label, key) for key, (_f, _kind, label) in SAMPLES.items()]
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("### Add data\nCSV, TSV, JSON, JSONL, Parquet or plain text, up to "
                        f"{human_size(studio.max_upload_bytes)}. Conversations (`messages`), ShareGPT, Alpaca, "
                        "prompt/completion, preference pairs (prompt/chosen/rejected), KTO (with a true/false "
                        "`label`) and raw `text` are recognised by their column names.")
            upload = gr.File(label="Upload a file", file_types=sorted(FORMATS), type="filepath",
                             elem_id="data-upload")
            sample = gr.Dropdown(choices=samples, value=None, label="…or start from a bundled sample",
                                 elem_id="data-sample")
            detected = gr.Markdown(elem_id="data-detected")
            raw = gr.Dataframe(label="First records of the file, as written", interactive=False, visible=False,
                               wrap=True, max_height=260, elem_id="data-raw")
            with gr.Accordion("Column mapping and kind", open=False) as mapping_box:
                kind = gr.Dropdown(choices=["auto", *KINDS], value="auto", label="Kind of data",
                                   info="auto = decide from the column names. sft: examples of good replies; "
                                        "preference: a better and a worse reply; kto: replies marked good or "
                                        "bad; text: raw documents; prompts: questions (with an answer or tests to check "
                                        "replies by) for reinforcement learning.", elem_id="data-kind")
                gr.Markdown("Which of your columns holds each part (leave the rest not mapped):")
                with gr.Row():
                    mapping = [gr.Dropdown(choices=[NOT_MAPPED], value=NOT_MAPPED, label=MAP_LABELS.get(t, t),
                                           min_width=120,
                                           elem_id=f"data-map-{t}") for t in MAP_TARGETS]
                text_unit = gr.Radio(["line", "paragraph", "file"], value="line", label="Plain text: one document per",
                                     info="Only for .txt files.")
            with gr.Accordion("Name, duplicates, held-out split", open=False):
                name = gr.Textbox(label="Name", placeholder="default: the file name", elem_id="data-name")
                dedupe = gr.Checkbox(label="Drop exact duplicate rows", value=False,
                                     info="Repeated examples are learned more strongly than the rest.")
                skip_bad = gr.Checkbox(label="Skip rows that cannot be read", value=False, elem_id="data-skip-bad",
                                       info="A line that is not JSON, a row with a cell too many or an empty "
                                            "required cell, a conversation out of order: left out, and the summary "
                                            "says how many and the first. Off, the first one stops the import.")
                heldout = gr.Slider(0, 0.5, value=0, step=0.05, label="Held-out fraction",
                                    info="Rows kept aside to measure the model on examples it never trained on; "
                                         "every run on this dataset then uses the same ones. 0 = let each run "
                                         "decide (Train tab).", elem_id="data-heldout")
                seed = gr.Number(value=42, precision=0, label="Seed of the split",
                                 info="Same seed, same split.")
            do_import = gr.Button("Import", variant="primary", elem_id="data-import")
            message = gr.Markdown(elem_id="data-message")
        with gr.Column(scale=3):
            gr.Markdown("### Datasets")
            chosen = gr.Dropdown(choices=dataset_choices(studio), value=None, label="Dataset",
                                 elem_id="data-datasets")
            deleted = dataset_delete.build(studio, chosen, lambda: dataset_choices(studio))
            with gr.Row():
                model = gr.Textbox(value="default", label="Count tokens with this model's tokenizer",
                                   info="This tab's own: type the model the Train tab starts from (Enter) to "
                                        "count as its run will.",
                                   elem_id="data-model")
                max_length = gr.Number(value=512, precision=0, label="Max length (tokens)",
                                       info="This tab's own: a run cuts rows at the Train tab's Max length; "
                                            "type that here (Enter) to see which rows it would cut.",
                                       elem_id="data-max-length")
            summary = gr.Markdown(elem_id="data-summary")
            preview = gr.Dataframe(label="First rows, as stored", interactive=False, wrap=True, max_height=320,
                                   visible=False, elem_id="data-preview")
            histogram = gr.Plot(label="Token lengths", elem_id="data-lengths")
            example_row = gr.Number(value=1, precision=0, label="Example row",
                                    info="Which stored row to show as training sees it (first rows: the table "
                                         "above).", elem_id="data-example-row")
            example = gr.HighlightedText(label="One example exactly as training sees it",
                                         color_map=EXAMPLE_COLORS,
                                         show_legend=True, combine_adjacent=False, elem_id="data-example")
            judge_panel.build(studio, chosen, lambda: dataset_choices(studio), opened)

    check_inputs = [upload, sample, kind, text_unit, *mapping, skip_bad]
    check_outputs = [detected, raw, *mapping, mapping_box]

    def check(*args):
        *args, skip = args
        msg, table, updates, box = check_source(studio, *args, skip_bad=skip)
        return msg, shown_table(table), *updates, box

    # another file: the old mapping means nothing to it; an upload replaces the sample and back
    def on_upload(path, kind, text_unit, skip):
        return (*check(path, None, kind, text_unit, *[NOT_MAPPED] * len(MAP_TARGETS), skip), None)

    def on_sample(key, kind, text_unit, skip):
        return (*check(None, key, kind, text_unit, *[NOT_MAPPED] * len(MAP_TARGETS), skip), None)

    upload.upload(on_upload, [upload, kind, text_unit, skip_bad], [*check_outputs, sample])
    sample.input(on_sample, [sample, kind, text_unit, skip_bad], [*check_outputs, upload])
    upload.clear(lambda: ("", shown_table(None), *[unmapped() for _ in MAP_TARGETS]), None,
                 [detected, raw, *mapping])
    # what Import said was about the file before ("Not imported: bad.csv, row 3, ..."): gone with it
    for changed in (upload.upload, upload.clear, sample.input):
        changed(lambda: "", None, message, queue=False, show_progress="hidden")
    for control in (kind, text_unit, *mapping, skip_bad):  # (ticking Skip: what was said to stop Import no longer does)
        control.input(check, check_inputs, check_outputs)

    def shown(example, label):
        # the legend names only the colours this example uses (no "rejected" for plain examples)
        used = {kind for _text, kind in example or [] if kind}
        return gr.update(value=example, label=label, color_map={k: v for k, v in EXAMPLE_COLORS.items() if k in used})

    def on_view(dataset_id, model, max_length, number=None):
        """The dataset's view; its example the row `number` shows (another tokenizer or max length), or for
        another dataset, the one that shows most (`telling_row`)."""
        # said in the summary itself: Gradio shows a progress text only with a fraction done, and a
        # conversion has none (a fraction stuck at 0.0% read as hung)
        row = studio.store.get_dataset(dataset_id) if dataset_id else None
        if row is not None and not method_service.model_ready(studio, model or "default"):
            # the rows and the summary at once, the token counts once the model is ready (a first import
            # showed only this sentence for half a minute)
            summary, table = stored_rows(row)
            yield f"{summary}\n\n{method_service.PREPARING}", shown_table(table), gr.skip(), gr.skip(), gr.skip()
        rows = dataset_stats.count_rows(Path(row["path"])) if row else 0
        index = (0 if row is None else dataset_stats.telling_row(Path(row["path"]), row["meta"]) if number is None
                 else row_index(number, rows))
        summary, table, figure, example = view_dataset(studio, dataset_id, model, max_length, index)
        held_out = row is not None and (Path(row["path"]).parent / HELDOUT).exists()
        yield (summary, shown_table(table), figure, shown(example, example_label(index, rows, held_out, example)),
               index + 1)

    def on_example(dataset_id, model, max_length, number):
        if dataset_id and not method_service.model_ready(studio, model or "default"):
            return gr.skip(), gr.skip()  # (the view says it is being prepared, and draws the example once it is)
        example, label, shown_number = view_example(studio, dataset_id, model, max_length, number)
        # a number past the rows is put right in its box; one being typed (or a cleared box) is left alone
        return shown(example, label), shown_number if number not in (None, "") and number != shown_number \
            else gr.skip()

    # each keystroke is an input: the last one typed is the row shown ("15" is not row 1)
    example_row.input(on_example, [chosen, model, max_length, example_row], [example, example_row],
                      show_progress="hidden", trigger_mode="always_last")
    view = dict(fn=on_view, inputs=[chosen, model, max_length],
                outputs=[summary, preview, histogram, example, example_row])
    def on_import(*values):
        """A big file says how far its import is, about once a second, in the message line (a Gradio
        progress text shows only with a fraction done, which a streamed file does not know). The last
        value is what each kind of data comes back to on the Train tab: the import, once it made a dataset."""
        *values, skip, by_kind = values
        # no dataset made yet: an import that fails before its first message left the previous import's id
        # here, and the Train tab picked that one again over a pick made since
        yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), None
        said, result = queue.SimpleQueue(), {}

        def work():
            try:
                result["out"] = import_source(studio, *values, progress=lambda rows, seconds: said.put(
                    f"Importing: {rows:,} rows read and checked ({seconds:.0f} s)…"), skip_bad=skip)
            except BaseException as err:  # noqa: BLE001  (raised again below, in the page's handler)
                result["error"] = err
            finally:
                said.put(None)

        threading.Thread(target=work, name="import", daemon=True).start()
        while (text := said.get()) is not None:
            yield text, gr.skip(), gr.skip(), gr.skip(), None
        if "error" in result:
            raise result["error"]
        said_text, shown = result["out"]
        made = shown.get("value") if isinstance(shown, dict) else None
        # in the reply that says "Imported": a method picked on the Train tab right after read the kind's
        # pick from before, while a step after this one was still on its way. The name typed was this
        # import's: the next file's import would have made a second dataset of the same name
        yield (said_text, shown, form_memory.imported_pick(studio, made, by_kind) or gr.skip(),
               "" if made else gr.skip(), made)

    made_now = gr.State(None)  # the dataset this import made (None: it made none), for the Train tab's pick
    imported = do_import.click(
        on_import,
        [upload, sample, name, kind, text_unit, dedupe, heldout, seed, *mapping, skip_bad, datasets_kept],
        [message, chosen, datasets_kept, name, made_now],
    )
    if viewed is not None:  # what this tab shows, kept by the browser (`viewed`: on_load puts it back)
        # kept with no trip to the server: a reload soon after an import (CI, on a busy machine) came before
        # the server's answer had stored the dataset, and the tab came back blank. Wired before the view: the
        # page runs a change's handlers one after the other, and behind a view preparing the built-in model
        # (a first import, half a minute) a reload found nothing kept
        gr.on([chosen.change, model.submit, max_length.submit], None, [chosen, model, max_length], viewed,
              js="(dataset, model, max_length) => ({dataset, model, max_length})", queue=False,
              show_progress="hidden")
    chosen.change(**view)
    for control in (model, max_length):  # (the example stays on its row)
        control.submit(**{**view, "inputs": [*view["inputs"], example_row]})

    def on_load(viewed=None):
        """The datasets as they are now, showing again what this browser looked at last (`viewed`, kept
        by the page: {dataset, model, max_length}) while that dataset exists: a reload left the viewer
        blank, and counted tokens with the built-in model again."""
        choices = dataset_choices(studio)
        viewed = viewed if isinstance(viewed, dict) else {}
        if viewed.get("dataset") not in {value for _label, value in choices}:
            return gr.update(choices=choices), gr.skip(), gr.skip()
        return (gr.update(choices=choices, value=viewed["dataset"]), viewed.get("model") or gr.skip(),
                viewed.get("max_length") or gr.skip())

    return on_load, [chosen, model, max_length], (imported, made_now), deleted
