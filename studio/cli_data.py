"""`studio data import | list | show | delete`: the Data tab, headless."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.formats import KINDS

EXAMPLE_CHARS = 1000  # of the rendered example's context (its end) and learned part (its start)


def summary_line(row: dict) -> str:
    meta = row["meta"]
    parts = [f"{row['rows']} rows", row["kind"], f"from {row['source_name']} ({meta.get('layout_label', '?')})"]
    if meta.get("heldout_rows"):
        parts.append(f"{meta['heldout_rows']} held out")
    if meta.get("duplicates"):
        verb = "dropped" if meta.get("dropped_duplicates") else "kept"
        parts.append(f"{meta['duplicates']} duplicates {verb}")
    if meta.get("skipped_rows"):
        from pipelines.importer import skipped_text

        parts.append(skipped_text(meta))
    if meta.get("untaught_pairs"):
        from pipelines.importer import untaught_text

        parts.append(untaught_text(meta))
    if meta.get("multi_turn_rows"):
        from pipelines.importer import learned_replies_text

        parts.append(f"{meta['multi_turn_rows']} multi-turn conversations ({learned_replies_text(meta)})")
    if meta.get("ended_replies"):
        from pipelines.importer import ended_replies_text

        parts.append(ended_replies_text(meta))
    if meta.get("ignored_columns"):
        from pipelines.importer import ignored_text

        parts.append(ignored_text(meta))
    if meta.get("ignored_feedback"):
        from pipelines.importer import ignored_feedback_text

        mapping = meta.get("feedback_mapping") or {"label": meta["ignored_feedback"]}
        parts.append(ignored_feedback_text(meta)
                     + f" (--kind kto --map {','.join(f'{k}={v}' for k, v in mapping.items())})")
    return ", ".join(parts)


def cmd_import(args) -> int:
    from pipelines.errors import DataError
    from pipelines.formats import parse_mapping
    from pipelines.importer import ImportOptions
    from studio.cli import CliError, _studio

    options = ImportOptions(kind=args.kind, mapping=parse_mapping(args.map), text_unit=args.text_unit,
                            dedupe=args.dedupe, heldout=args.heldout, seed=args.seed, skip_bad=args.skip_bad_rows)
    def rows_read(rows, seconds):  # a big file at a terminal: one line, rewritten about once a second
        print(f"\rimporting {Path(args.file).name}: {rows:,} rows read and checked ({seconds:.0f} s)",
              end="", file=sys.stderr, flush=True)

    tty = sys.stderr.isatty()
    try:
        row = _studio(args).import_dataset(args.file, name=args.name, options=options,
                                           progress=rows_read if tty else None)
    except DataError as err:  # (one row's problem: the option that leaves such rows out)
        if getattr(err, "skippable", False) and not args.skip_bad_rows:
            raise CliError(f"{err} (or --skip-bad-rows to leave such rows out)") from None
        raise
    finally:
        if tty:
            print("\r\033[K", end="", file=sys.stderr, flush=True)  # the progress line goes away
    print(row["id"])
    if row.get("imported_before"):  # (the name given was dropped without a word)
        typed = (args.name or "").strip()
        print(f"this file was imported before with these settings, as {row['name']}"
              + (f" (the name given, {typed}, is not used)" if typed and typed != row["name"] else ""), file=sys.stderr)
    print(f"{row['name']}: {summary_line(row)}", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    from studio.cli import _studio

    rows = _studio(args).list_datasets()
    if not rows:
        print("no datasets yet (studio data import FILE)")
        return 0
    print(f"{'ID':<24} {'KIND':<11} {'ROWS':>7}  NAME")
    for r in rows:
        print(f"{r['id']:<24} {r['kind']:<11} {r['rows']:>7}  {r['name']}")
    return 0


def cmd_delete(args) -> int:
    from studio import dataset_service
    from studio.cli import _studio
    from studio.core import dataset_title

    studio = _studio(args)
    row, found = dataset_service.delete(studio, args.dataset_id)
    print(f"deleted {dataset_title(row)} ({row['id']}, {row['rows']} rows): {dataset_service.effects(found)}")
    return 0


def cmd_show(args) -> int:
    from pipelines import dataset_stats
    from studio.cli import CliError, _studio

    if args.rows < 0:
        raise CliError(f"--rows {args.rows}: give 0 or more rows to show")
    if args.max_length < 1:
        raise CliError(f"--max-length {args.max_length}: give 1 or more tokens")
    if args.example is not None and args.example < 1:
        raise CliError(f"--example {args.example}: give a row number from 1")
    studio = _studio(args)
    row = studio.store.get_dataset(args.dataset_id)
    if row is None:
        from studio.dataset_service import gone

        raise CliError(f"{gone(studio, args.dataset_id)} (see 'studio data list')")
    # the tokenizer first: one that cannot be used is said before the rows (it was a traceback after them)
    tokenizer = studio.tokenizer(args.model)
    dataset_stats.check_template([dataset_stats.first_row(Path(row["path"])) or {}], tokenizer)
    print(f"{row['name']} ({row['id']}): {summary_line(row)}")
    # long values and conversations are cut: a 5 MB answer is not a preview
    for i, item in enumerate(dataset_stats.preview_rows(Path(row["path"]), args.rows, dataset_stats.brief), start=1):
        print(f"--- row {i}")
        for key, value in item.items():
            print(f"{key}: {value}")
    stats = dataset_stats.length_stats(Path(row["path"]), tokenizer, args.max_length)
    sample = f" (measured on {stats['measured']} of {stats['total']} rows)" if stats["estimated"] else ""
    print(f"--- tokens with {args.model}'s tokenizer{sample}: mean {stats['mean']:.0f}, median "
          f"{stats['median']:.0f}, longest {stats['longest']}; {stats['over']} rows over max length "
          f"{args.max_length}")
    parquet = Path(row["path"])
    index = dataset_stats.telling_row(parquet, row["meta"]) if args.example is None else args.example - 1
    shown = dataset_stats.row_at(parquet, index)
    if shown is None:
        from pipelines.importer import HELDOUT

        held_out = " training" if (parquet.parent / HELDOUT).exists() else ""
        raise CliError(f"--example {args.example}: the dataset has {dataset_stats.count_rows(parquet)}{held_out} rows")
    example = dataset_stats.render_example(shown, tokenizer, args.max_length)
    print(f"--- as training sees row {index + 1}:")
    # a conversation of several replies: each stretch, context or learned, in turn, each named
    runs = example.get("runs") or [(example["context"], False), (example["learned"], True)]
    # the system line the chat template writes where the row has none: its own label, not the file's context
    runs = dataset_stats.with_template_system(runs, shown, tokenizer, None)
    print("".join(f"[learned] {dataset_stats.clip(text, EXAMPLE_CHARS)}" if learned
                  else f"[template] {text}" if learned is None
                  else f"[context] {_context_end(text)}" for text, learned in runs if text))
    return 0


def _context_end(context: str) -> str:
    """The end of a context: what leads into the learned part after it."""
    if len(context) <= EXAMPLE_CHARS:
        return context
    return f"({len(context) - EXAMPLE_CHARS:,} characters before) …{context[-EXAMPLE_CHARS:]}"


def add_parsers(sub, common) -> None:
    data = sub.add_parser("data", help="import, list and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)

    p = dsub.add_parser("import", parents=[common], help="convert a file into a catalogue dataset")
    p.add_argument("file", type=Path)
    p.add_argument("--name", help="name shown in the studio (default: the file name)")
    p.add_argument("--kind", default="auto", choices=["auto", *KINDS])
    p.add_argument("--map", help="use your column names: e.g. prompt=question,completion=answer")
    p.add_argument("--text-unit", default="line", choices=["line", "paragraph", "file"],
                   help="plain text: one document per line, per blank-line paragraph, or the whole file")
    p.add_argument("--dedupe", action="store_true", help="drop rows that repeat an earlier row exactly")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="leave out lines or rows that cannot be read, and say how many and the first, instead of "
                        "stopping at the first")
    p.add_argument("--heldout", type=float, default=0.0,
                   help="fraction kept aside to measure held-out loss (every run then uses the same rows)")
    p.add_argument("--seed", type=int, default=42, help="seed of the held-out split")
    p.set_defaults(func=cmd_import)

    p = dsub.add_parser("list", parents=[common], help="list datasets")
    p.set_defaults(func=cmd_list)

    p = dsub.add_parser("delete", parents=[common], help="remove a dataset's files (refused while a run reads it)")
    p.add_argument("dataset_id")
    p.set_defaults(func=cmd_delete)

    p = dsub.add_parser("show", parents=[common], help="summary, first rows, token lengths")
    p.add_argument("dataset_id")
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--model", default="default", help="whose tokenizer counts tokens")
    p.add_argument("--max-length", type=int, default=512, help="the training max length to check against")
    p.add_argument("--example", type=int, metavar="ROW", help="the row shown as training sees it (from 1; default: "
                   "the first, or the first of the first 20 with a reply marked weight 0)")
    p.set_defaults(func=cmd_show)
