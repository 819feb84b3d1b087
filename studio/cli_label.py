"""`studio label create | import | status | export`: labeling projects, headless (the labels
themselves are given in the Label tab)."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

FINAL = ("ready", "failed", "cancelled", "interrupted")


def _refusals(command):
    """A labeling or chat refusal is a usage problem: one line on stderr, exit code 2 (answered
    here, not by raising the CLI's CliError: under `python -m studio.cli` that class exists twice,
    as __main__.CliError and studio.cli.CliError, and main() would not recognise this one)."""
    @functools.wraps(command)
    def run(args) -> int:
        from studio.chat_service import ChatError
        from studio.label_service import LabelError

        try:
            return command(args)
        except (LabelError, ChatError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return run


def source_line(source: dict) -> str:
    """Where a project's answers come from, in a few words."""
    models = source.get("models") or []
    if source.get("kind") == "imported":
        return f"imported from {source.get('file', '?')}"
    if source.get("kind") == "sampled twice":
        return f"{models[0]} sampled twice at temperature {source.get('temperature')}"
    if source.get("kind") == "two models" and len(models) == 2:
        return f"{models[0]} vs {models[1]}"
    return source.get("kind", "?")


def status_word(found: dict) -> str:
    progress = found.get("progress") or {}
    if found["status"] == "generating" and progress.get("max_steps"):
        return f"generating {progress['step']}/{progress['max_steps']}"
    return found["status"]


def _answered(found: dict) -> str:
    progress = found.get("progress") or {}
    if progress.get("status") == "queued":
        return "generating: queued"
    if not progress.get("max_steps"):
        return "generating: loading the models"
    return f"generating: answered {progress['step']} of {_count(progress['max_steps'], 'prompt')}"


@_refusals
def cmd_create(args) -> int:
    from studio import label_service as ls
    from studio.cli import _studio

    studio = _studio(args)
    if args.prompts:
        ref = args.prompts
        prompts = (ls.prompts_from_dataset(studio, ref) if studio.store.get_dataset(ref) or not Path(ref).is_file()
                   else ls.prompts_from_file(ref, studio.max_upload_bytes))
    else:
        prompts = ls.prompts_from_text("\n".join(args.prompt))
    found = ls.create_project(studio, name=args.name, prompts=prompts, models_=args.model, overlap=args.overlap,
                              temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed,
                              sample=args.sample)
    print(found["id"], flush=True)
    taken = found["source"]["prompts"]
    print(f"{found['name']}: {_count(taken, 'prompt')}"
          + (f" (a random sample of {len(prompts)})" if taken < len(prompts) else "")
          + f", {source_line(found['source'])}", file=sys.stderr, flush=True)
    return _wait(studio, found, args) if args.wait else 0


def _wait(studio, found: dict, args) -> int:
    """Progress lines until the answers are ready; non-zero when generation stopped."""
    from studio import label_service as ls

    shown = None
    try:
        while found["status"] not in FINAL:
            line = _answered(found)
            if line != shown:
                print(line, file=sys.stderr, flush=True)
                shown = line
            time.sleep(args.poll)
            found = ls.project(studio, found["id"])
    except KeyboardInterrupt:  # its answering process is one of its own: it goes on
        import shlex

        from studio.cli import command

        print(f"stopped waiting (Ctrl-C); project {found['name']}'s answers go on in the background: "
              f"{command(studio, 'cancel ' + shlex.quote(found['name']))} stops them", file=sys.stderr)
        return 130
    if found["status"] != "ready":
        why = f": {found['error']}" if found["error"] else ""
        answered = f"; its {_count(found['items'], 'answered item')} can be labelled" if found["items"] else ""
        print(f"project {found['name']} {found['status']}{why}{answered} ('studio label resume {found['name']}' goes "
              f"on; log: {studio.run_dir(found['job_id']) / 'train.log'})", file=sys.stderr)
        return 1
    print(f"{found['name']}: ready, {_count(found['items'], 'item')} to label", file=sys.stderr)
    return 0


@_refusals
def cmd_resume(args) -> int:
    from studio import label_service as ls
    from studio.cli import _studio

    studio = _studio(args)
    found = ls.resume_generation(studio, args.name)
    print(f"{found['name']}: answering the prompts left", file=sys.stderr, flush=True)
    return _wait(studio, found, args) if args.wait else 0


@_refusals
def cmd_import(args) -> int:
    from studio import label_service as ls
    from studio.cli import _studio

    found = ls.import_project(_studio(args), name=args.name, path=args.file, overlap=args.overlap)
    print(found["id"])
    print(f"{found['name']}: {_count(found['items'], 'item')}, {source_line(found['source'])}, ready to label",
          file=sys.stderr)
    return 0


@_refusals
def cmd_status(args) -> int:
    from studio import label_service as ls
    from studio.cli import _studio

    studio = _studio(args)
    if args.name:
        print_overview(ls.overview(studio, args.name))
        return 0
    rows = ls.projects(studio)
    if not rows:
        print("no labeling projects yet (studio label create or studio label import)")
        return 0
    table = [(p["name"], status_word(p), str(p["items"]), str(studio.store.label_counts(p["id"], "")["labels"]),
              str(p["overlap"]), source_line(p["source"])) for p in rows]
    head = ("NAME", "STATUS", "ITEMS", "LABELS", "OVERLAP", "SOURCE")
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(5)]
    for row in [head, *table]:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}  "
              f"{row[4]:>{widths[4]}}  {row[5]}")
    return 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _num(x, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def print_overview(ov: dict) -> None:
    from pipelines import arena
    from studio.label_service import unanswered

    found = ov["project"]
    # more labels can still come (an item short of its labels, prompts still to be answered), as the Label tab says
    more = ov["complete"] < ov["items"] or bool(unanswered(found))
    print(f"{found['name']} ({found['id']}): {status_word(found)}; {_count(ov['items'], 'item')}, "
          f"{ov['complete']} complete ({_count(found['overlap'], 'label')} each), {_count(ov['labels'], 'label')}; "
          f"{source_line(found['source'])}")
    if found["status"] == "generating":
        print(_answered(found))
    elif found.get("error"):
        print(f"error: {found['error']}")
    print("labelers:" if ov["labelers"] else "labelers: none yet")
    for s in ov["labelers"]:
        print(f"  {s['labeler']}: {_count(s['labels'], 'label')}, {_count(s['skips'], 'skip')}, median "
              f"{_num(s['median_s'], '.1f')} s per item")
    pairs = ov["agreement"]["pairs"]
    print("agreement, Cohen's kappa per pair of labelers (1 = always agree, 0 = chance):" if pairs
          else "agreement: no item labelled by two people yet")
    for p in pairs:
        print(f"  {p['labelers'][0]} / {p['labelers'][1]}: kappa {_num(p['kappa'])}, same choice "
              f"{p['observed']:.0%} of {_count(p['items'], 'shared item')}")
    print(f"Krippendorff's alpha: {_num(ov['agreement']['alpha'])} over {_count(ov['agreement']['items'], 'item')} "
          "labelled by two or more")
    pos = ov["position"]
    if pos["p"] is None:
        print(f"position: left {pos['left']}, right {pos['right']} (too few decisive labels to test)")
    else:
        print(f"position: left {pos['left']}, right {pos['right']} (p = {pos['p']:.3f})"
              + (f"; warning: {pos['warning']}" if pos["warning"] else "; no sign of bias"))
    alone = found["source"].get("kind") == "sampled twice"
    print("win rates over items, each the mean of its labels (95% interval; ties count half):"
          if ov["win_rates"] else
          "win rates: none (one model wrote both answers)" if alone else
          "win rates: none (no labels between two different models yet)")
    for w in ov["win_rates"]:
        print(f"  {w['first']} beats {w['second']}: {w['win_rate']:.0%} ({w['low']:.0%}-{w['high']:.0%}) "
              f"over {_count(w['items'], 'item')}, {_count(w['votes'], 'label')} ({w['wins_first']}-{w['wins_second']}, "
              f"{_count(w['ties'], 'tie')}): "
              f"{arena.verdict(w, 'label', more)}")
    print(f"disagreements: {_count(len(ov['disagreements']), 'item')} (review them in the Label tab)")


@_refusals
def cmd_export(args) -> int:
    from studio import label_service as ls
    from studio.cli import _studio

    row = ls.export(_studio(args), args.name, kind=args.kind, min_agreement=args.min_agreement,
                    with_votes=args.with_votes, name=args.dataset_name)
    origin = row["meta"].get("origin", {})
    votes = f" and {origin['votes']} chat votes" if origin.get("votes") else ""
    print(row["id"])
    if row.get("exported_before"):  # (the name given was dropped without a word)
        typed = (args.dataset_name or "").strip()
        print(f"these labels were exported before, as {row['name']}"
              + (f" (the name given, {typed}, is not used)" if typed and typed != row["name"] else ""), file=sys.stderr)
    print(f"{row['name']}: {_count(row['rows'], 'row')}, {row['kind']}, from {origin.get('pairs', '?')} labelled "
          f"pairs{votes}" + (f"; left out {_count(origin['alone'], 'item')} only one person labelled (agreement "
                             "needs two)" if origin.get("alone") else "")
          + (f"; {origin['cut_chosen']} of the winning answers cut off before their end (trained on, they teach "
             "stopping mid-sentence)" if origin.get("cut_chosen") else ""),
          file=sys.stderr)
    return 0


def add_parsers(sub, common) -> None:
    label = sub.add_parser("label", help="labeling projects: create, resume, import, status, export")
    lsub = label.add_subparsers(dest="label_command", required=True)

    p = lsub.add_parser("create", parents=[common], help="a project whose answers two models (or one, twice) write")
    p.add_argument("name")
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompts", metavar="DATASET_OR_FILE",
                       help="a dataset id or sample name, or a file (.txt: a prompt per line; a table: a "
                            "prompt column)")
    given.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeat for more)")
    p.add_argument("--model", action="append", required=True, metavar="SPEC",
                   help="base:default, base:FOLDER or run:RUN_ID; twice for two models, once to answer twice")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = most likely tokens (two models only)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--overlap", type=int, default=1, help="labelers per item")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", type=int, metavar="N",
                   help="take N of the prompts at random (the same ones for the same --seed); default: all")
    p.add_argument("--wait", action="store_true", help="block, show progress, exit non-zero if generation stops")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_create)

    p = lsub.add_parser("resume", parents=[common], help="answer the prompts a stopped generation did not reach")
    p.add_argument("name")
    p.add_argument("--wait", action="store_true", help="block, show progress, exit non-zero if generation stops")
    p.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_resume)

    p = lsub.add_parser("import", parents=[common], help="a project from a file of pairs (prompt, response_a, "
                                                         "response_b)")
    p.add_argument("name")
    p.add_argument("file", type=Path)
    p.add_argument("--overlap", type=int, default=1, help="labelers per item")
    p.set_defaults(func=cmd_import)

    p = lsub.add_parser("status", parents=[common], help="list projects, or one project's overview")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_status)

    p = lsub.add_parser("export", parents=[common], help="labels as a preference or KTO dataset")
    p.add_argument("name")
    p.add_argument("--kind", default="preference", choices=["preference", "kto"])
    p.add_argument("--min-agreement", type=float, default=0.0,
                   help="leave out items whose labelers agree less than this (0-1); above 0, items "
                        "labelled by one person are left out too")
    p.add_argument("--with-votes", action="store_true", help="add the decisive chat votes")
    p.add_argument("--name", dest="dataset_name", help="the dataset's name (default: labels NAME (KIND))")
    p.set_defaults(func=cmd_export)

