"""`studio export | merge | exports`: tuned models out of the studio, headless.

    studio export run:ID --format merged            # adapter merged into its base: a model folder
    studio export run:ID --format gguf --quant q8_0 # GGUF for llama.cpp + an Ollama Modelfile
    studio merge --method slerp run:A default --t 0.3
    studio merge --method ties run:A run:B --base default --density 0.5   # the TIES paper's merge
"""

from __future__ import annotations

import functools
import sys


def _refusals(command):
    """An export refusal is a usage problem: one line on stderr, exit code 2."""
    @functools.wraps(command)
    def run(args) -> int:
        from pipelines.export import ExportError

        try:
            return command(args)
        except ExportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    return run


def _studio(args):
    from studio.cli import _studio as studio_for  # the one place the CLI opens a workspace

    return studio_for(args)


def _finish(studio, export_id: str, wait: bool) -> int:
    from studio import export_service

    print(export_id, flush=True)
    if not wait:
        return 0
    shown = [None]

    def show(row):
        line = row["status"] + (f": {row['phase']}" if row.get("phase") and row["status"] == "running" else "")
        if line != shown[0]:
            print(line, file=sys.stderr, flush=True)
            shown[0] = line

    try:
        row = export_service.wait(studio, export_id, poll_s=0.5, on_poll=show)
    except KeyboardInterrupt:  # its worker is a process of its own: it goes on
        from studio.cli import went_on

        print(went_on(studio, "export", export_id), file=sys.stderr)
        return 130
    if row["status"] != "completed":
        print(f"export {export_id} {row['status']}" + (f": {row['error']}" if row["error"] else ""), file=sys.stderr)
        return 1
    summary = row["summary"]
    for key in ("folder", "gguf", "modelfile"):
        if summary.get(key):
            print(f"{key}: {summary[key]}", file=sys.stderr)
    command = export_service.ollama_command(studio, export_id)
    if command:
        print(f"to run it with Ollama: {command}", file=sys.stderr)
    if summary.get("note"):
        print(f"note: {summary['note']}", file=sys.stderr)
    return 0


def _unused(what: str, given: list[tuple[str, object, bool]]) -> None:
    """Refuse options typed for what does not read them ((flag, value or None, read) each): `--weights` with
    SLERP, `--quant` with a merged folder, were ignored without a word and the result was not what was asked."""
    from pipelines.export import ExportError

    unread = [flag for flag, value, read in given if value is not None and not read]
    if unread:
        raise ExportError(f"{what} does not use {' or '.join(unread)}; leave {'it' if len(unread) == 1 else 'them'} "
                          "out (see --help for what it takes)")


@_refusals
def cmd_export(args) -> int:
    from studio import export_service

    gguf = args.format == "gguf"
    _unused(f"--format {args.format}", [("--quant", args.quant, gguf), ("--system", args.system, gguf)])
    studio = _studio(args)
    export_id = export_service.start_export(studio, args.source, fmt=args.format, quant=args.quant or "q8_0",
                                            name=args.name, system=args.system)
    return _finish(studio, export_id, args.wait)


MERGE_DEFAULTS = {"t": 0.5, "density": 0.5, "seed": 0}  # (None in the parser: an option typed is told from one not)


@_refusals
def cmd_merge(args) -> int:
    from pipelines.export.model_merge import MERGE_METHODS
    from studio import export_service

    spec = MERGE_METHODS[args.method]
    _unused(spec.label, [("--base", args.base, spec.needs_base), ("--weights", args.weights, spec.uses_weights),
                         ("--t", args.t, spec.uses_t), ("--density", args.density, spec.uses_density),
                         ("--seed", args.seed, spec.key == "dare_ties")])  # (DARE's drops are the random part)
    set_ = {key: MERGE_DEFAULTS[key] if getattr(args, key) is None else getattr(args, key) for key in MERGE_DEFAULTS}
    studio = _studio(args)
    export_id = export_service.start_merge(studio, args.method, args.models, base=args.base, weights=args.weights,
                                           name=args.name, **set_)
    return _finish(studio, export_id, args.wait)


def cmd_exports(args) -> int:
    from studio import export_service

    rows = export_service.list_exports(_studio(args))
    if not rows:
        print("no exports yet")
        return 0
    print(f"{'ID':<24} {'STATUS':<10} {'KIND':<7} NAME")
    for r in rows:
        print(f"{r['id']:<24} {r['status']:<10} {r['kind']:<7} {r['name']}")
    return 0


def add_parsers(sub, common) -> None:
    from pipelines.export.model_merge import MERGE_METHODS
    from studio.export_service import FORMATS, QUANTS

    p = sub.add_parser("export", parents=[common], help="write a run or model as a merged model folder or GGUF")
    p.add_argument("source", help="run:ID, export:ID, 'default' or a model folder")
    p.add_argument("--format", choices=FORMATS, default="merged",
                   help="merged: a Hugging Face model folder; gguf: one file for llama.cpp/Ollama + a Modelfile")
    p.add_argument("--quant", choices=list(QUANTS), help="GGUF weight type (with --format gguf; default q8_0)")
    p.add_argument("--name", help="name of the export (file names, the Ollama model name)")
    p.add_argument("--system", help="system prompt written into the Ollama Modelfile (with --format gguf)")
    p.add_argument("--wait", action="store_true", help="block, show progress, exit non-zero if it fails")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("merge", parents=[common], help="merge two or more models of the same architecture")
    p.add_argument("models", nargs="+", help="run:ID, export:ID, 'default' or model folders")
    p.add_argument("--method", choices=list(MERGE_METHODS), default="slerp")
    p.add_argument("--base", help="the model the others were tuned from (task_arithmetic, ties, dare_ties)")
    p.add_argument("--weights", type=float, nargs="+",
                   help="one per model (linear: shares; task_arithmetic, ties, dare_ties: each model's change scaled "
                        "and added; ties without weights averages the changes where the models agree)")
    p.add_argument("--t", type=float, help="SLERP: 0 = the first model, 1 = the second (default 0.5)")
    p.add_argument("--density", type=float, help="TIES/DARE: share of each model's changes kept (default 0.5)")
    p.add_argument("--seed", type=int, help="DARE's random drops (default 0)")
    p.add_argument("--name", help="name of the merged model")
    p.add_argument("--wait", action="store_true", help="block, show progress, exit non-zero if it fails")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("exports", parents=[common], help="list exports and merges")
    p.set_defaults(func=cmd_exports)
