"""`studio judge DATASET --judge MODEL`: RLAIF from the command line. A judge model labels the
dataset's preference pairs (both answer orders, to cancel its position bias); the judged pairs
become a new preference dataset, and how often the judge agreed with the original choices is printed.

    studio judge signoff_preferences --judge default
    studio judge DATASET_ID --judge ~/models/judge --one-order --rationale --limit 100
"""

from __future__ import annotations

import sys

from pipelines.judge import MIN_SURE


def cmd_judge(args) -> int:
    from studio import judge_service
    from studio.cli import CliError, _studio

    studio = _studio(args)
    try:
        job_id = judge_service.start(studio, args.dataset, args.judge, both_orders=not args.one_order,
                                     rationale=args.rationale, limit=args.limit or None,
                                     min_sure=args.min_sure)
    except judge_service.JudgeError as err:
        raise CliError(str(err)) from None
    print(f"judge job {job_id}", file=sys.stderr, flush=True)

    shown = {"step": None}

    def show(found):
        # at a terminal, one line redrawn each second; in a log (CI, a file), a line when a tenth more is done
        # (the redrawn line grew by a copy every second, one line of thousands)
        if found["status"] != "running" or not found.get("max_steps"):
            return
        step, total = found["step"], found["max_steps"]
        if sys.stderr.isatty():
            print(f"\r{step}/{total} pairs judged", end="", file=sys.stderr, flush=True)
        elif step != shown["step"] and (shown["step"] is None or step == total
                                        or step - shown["step"] >= max(1, total // 10)):
            shown["step"] = step
            print(f"{step}/{total} pairs judged", file=sys.stderr, flush=True)

    try:
        found = judge_service.wait(studio, job_id, on_poll=show)
    except KeyboardInterrupt:  # Ctrl-C: the job stops too (it runs in its own session, and went on alone)
        try:
            judge_service.cancel(studio, job_id)
        except judge_service.JudgeError:  # it ended meanwhile: said as it ended
            found = judge_service.state(studio, job_id)
            print(f"\njudge job {job_id} {found['status']} before the interrupt"
                  + ("; opening the Data tab makes its dataset" if found["status"] == "completed" else ""),
                  file=sys.stderr)
            return 130
        print(f"\njudge job {job_id} cancelled: no dataset is made"
              + ("; the pairs it read are kept, and judging them again with the same judge goes on from there"
                 if judge_service.kept_readings(studio, job_id) else ""), file=sys.stderr)
        return 130
    if sys.stderr.isatty():  # (the end of the redrawn line)
        print(file=sys.stderr)
    if found["status"] != "completed":
        left = judge_service.kept_readings(studio, job_id)
        print(f"error: judge job {job_id} {found['status']}" + (f": {found['error']}" if found["error"] else "")
              + (f" ({judge_service.stopped_text(studio, job_id, found['status'])})" if left else ""), file=sys.stderr)
        return 1
    row = judge_service.collect(studio, job_id, args.name)
    print(row["id"], flush=True)
    print(f"{row['name']}: {row['rows']} preference pairs. "
          + judge_service.agreement_text(found["summary"], not args.one_order), file=sys.stderr)
    return 0


def add_parsers(sub, common) -> None:
    p = sub.add_parser("judge", parents=[common],
                       help="RLAIF: a judge model labels a preference dataset's pairs (a new dataset)")
    p.add_argument("dataset", help="a preference dataset: catalogue id, sample name or file")
    p.add_argument("--judge", default="default", help="the judge model: 'default' (built-in) or a model folder")
    p.add_argument("--one-order", action="store_true",
                   help="ask once per pair instead of in both answer orders (faster, more position bias)")
    p.add_argument("--rationale", action="store_true",
                   help="let the judge write a short comparison before choosing (slower)")
    p.add_argument("--limit", type=int, help="judge only the first N pairs (0 or left out: all)")
    p.add_argument("--min-sure", type=float, default=MIN_SURE, metavar="P",
                   help="reverse a pair's original choice only where the judge gives the other answer at least "
                        f"this probability (default {MIN_SURE}; 0.5 = any lean)")
    p.add_argument("--name", help="name of the judged dataset")
    p.set_defaults(func=cmd_judge)
