"""The `studio` command line: the same code path as the UI, headless."""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from pipelines import models
from pipelines.data import DataError
from pipelines.events import FINAL_STATUSES
from pipelines.methods import ConfigError
from pipelines.methods.params import did_you_mean
from pipelines.models import ModelError
from studio import cli_data, cli_export, cli_judge, cli_label
from studio.core import RunError
from studio.judge_service import JudgeError

CONFIG_KEYS = {"model", "dataset", "method", "params", "rewards", "devices"}
USER_ERRORS = (ConfigError, DataError, ModelError, RunError, JudgeError)


class CliError(Exception):
    """A usage problem reported as one line, exit code 2."""


def _studio(args, standby: bool = False):
    from studio.core import Studio

    # a command that starts one job and exits keeps no process ready for a next one
    return Studio(args.home, standby=standby)


def read_config(path: Path) -> dict:
    import yaml

    name = Path(path).name
    try:
        config = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise CliError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CliError(f"{path}: a folder, not a config file") from None
    except UnicodeDecodeError as err:
        raise CliError(f"{name}: not a text file (byte {err.start + 1} is not UTF-8)") from None
    except OSError as err:
        raise CliError(f"{path}: cannot be read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise CliError(f"{name}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(config, dict):
        raise CliError(f"{name}: expected a mapping with keys model, dataset, method, params")
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise CliError(f"{name}: unknown key '{unknown[0]}'{did_you_mean(unknown[0], CONFIG_KEYS)}; expected "
                       f"{', '.join(sorted(CONFIG_KEYS))}")
    if "dataset" not in config:
        raise CliError(f"{name}: missing key 'dataset' (a file, a sample name or a dataset id)")
    if not isinstance(config.get("params", {}) or {}, dict):
        raise CliError(f"{name}: 'params' must be a mapping of parameter names to values")
    base = Path(path).resolve().parent
    dataset = str(config["dataset"])
    # A relative dataset path is relative to the config file, like any config-file path.
    if (base / dataset).is_file():
        dataset = str(base / dataset)
    model = str(config.get("model", "default"))
    if (base / model).is_dir() and not Path(model).is_absolute():  # and a model folder beside it (it was taken
        model = str(base / model)  # from where the command ran, or for a hub id)
    return {
        "model": model,
        "dataset": dataset,
        "method": str(config.get("method", "lora")),
        "params": config.get("params") or {},
        "rewards": config.get("rewards"),  # reinforcement learning: [{name, weight, settings...}]
        "devices": config.get("devices"),  # several processes: {strategy, num_processes, ...}
    }


def _progress(row: dict) -> str:
    if row["status"] == "running" and row.get("max_steps"):
        pct = 100 * row["step"] / row["max_steps"]
        return f"{row['status']}: step {row['step']}/{row['max_steps']} ({pct:.0f}%)"
    return row["status"]


def cmd_train(args) -> int:
    config = read_config(args.config)
    if args.print_launch:
        print(launch_text(config), end="")
        return 0
    studio = _studio(args)
    run_id = studio.start_run(**config)
    print(run_id, flush=True)
    return wait_for_run(studio, run_id) if args.wait else 0


def launch_text(config: dict) -> str:
    """What the worker will start for this config: the accelerate config and the command (the run's
    folder, RUN_DIR, is made when the run starts; each run keeps both in it). Checked, nothing written."""
    import yaml

    from pipelines import devices as dev
    from pipelines.hardware import use_bf16
    from pipelines.methods import get_method

    from pipelines.methods.params import parse

    from pipelines import readers, rewards

    # what start_run checks before it writes anything (wrong settings were printed a launch for, exit 0)
    method = get_method(config["method"])
    checked = parse(method.params, config.get("params") or {})
    settings = dev.parse_devices(config.get("devices"))
    dev.check(settings, method, dev.gpu_count())
    if method.validate:
        method.validate(checked)
    if method.rewards:
        rewards.parse_list(config.get("rewards"))
    dataset = Path(config["dataset"]).expanduser()
    if dataset.suffix.lower() in readers.FORMATS and not dataset.is_file():  # a file, not an id or sample name
        raise CliError(f"{dataset.name}: file not found")
    if not dev.distributed(settings):
        return ("# one process, no launcher: the worker runs the method itself\n"
                f"{sys.executable} -m pipelines.run RUN_DIR\n")
    accelerate = dev.accelerate_config(settings, use_bf16(), settings.main_process_port or 0)
    return (f"# accelerate config (written to RUN_DIR/{dev.CONFIG_FILE}; port 0 = a free port picked at launch)\n"
            + yaml.safe_dump(accelerate, sort_keys=False)
            + dev.describe_launch(Path("RUN_DIR"), settings).replace(str(Path("RUN_DIR").resolve()), "RUN_DIR"))


def command(studio, words: str) -> str:
    """A command to type next, quoted, with the workspace where it is not the default one."""
    import shlex

    from studio.core import default_home

    home = "" if studio.home == default_home() else f" --home {shlex.quote(str(studio.home))}"
    return f"'studio {words}{home}'"


def went_on(studio, what: str, job_id: str) -> str:
    """Said when Ctrl-C stops a wait: the job is a process of its own, and goes on."""
    return (f"stopped waiting (Ctrl-C); {what} {job_id} goes on in the background: {command(studio, f'cancel {job_id}')} "
            "stops it")


def wait_for_run(studio, run_id: str) -> int:
    """Block with progress on stderr; 0 when the run completes, 1 (with its error) otherwise."""
    shown = [None]

    def show(row):
        line = _progress(row)
        if line != shown[0]:
            print(line, file=sys.stderr, flush=True)
            shown[0] = line

    try:
        row = studio.wait(run_id, on_poll=show)
    except KeyboardInterrupt:  # its worker is a process of its own: it goes on
        print(f"{went_on(studio, 'run', run_id)}, {command(studio, f'logs {run_id} --follow')} follows it",
              file=sys.stderr)
        return 130
    if row["status"] != "completed":  # (a cancelled run has no error to add)
        print(f"run {run_id} {row['status']}" + (f": {row['error']}" if row["error"] else ""), file=sys.stderr)
        return 1
    result = studio.result_dir(run_id)
    print(f"{result.name}: {result}", file=sys.stderr)
    return 0


def cmd_runs(args) -> int:
    studio = _studio(args)
    studio.recover()
    rows = studio.list_runs()
    if not rows:
        print("no runs yet")
        return 0
    print(f"{'ID':<24} {'STATUS':<10} {'METHOD':<8} {'PROGRESS':<10} MODEL")
    for r in rows:
        progress = f"{r['step']}/{r['max_steps']}" if r.get("max_steps") else "-"
        print(f"{r['id']:<24} {r['status']:<10} {r['method']:<8} {progress:<10} {r['model']}")
    return 0


def cmd_generate(args) -> int:
    from pipelines.chat import GenerationSettings, stream
    from studio import chat_service

    studio = _studio(args)
    spec = f"run:{args.run}" if args.run else f"base:{args.model}"
    # the Chat tab's ranges for the sampling, up to 4096 new tokens (a value out of them was ignored, or failed in
    # the model's generate with a traceback)
    for option, value, low, high in (("--temperature", args.temperature, 0.0, 2.0), ("--top-p", args.top_p, 0.05, 1.0),
                                     ("--max-new-tokens", args.max_new_tokens, 1, 4096),
                                     ("--repetition-penalty", args.repetition_penalty, 1.0, 2.0)):
        if not low <= value <= high:
            raise CliError(f"{option} is {value:g}; it must be from {low:g} to {high:g}")
    settings = GenerationSettings(system_prompt=args.system or "", temperature=args.temperature, top_p=args.top_p,
                                  max_new_tokens=args.max_new_tokens,
                                  repetition_penalty=args.repetition_penalty, seed=args.seed)
    try:
        (decoder,) = chat_service.decoders(studio, [spec], [[{"role": "user", "content": args.prompt}]], settings)
    except chat_service.ChatError as err:
        raise CliError(str(err)) from None
    shown = ""
    for (text,) in stream([decoder]):
        if args.stream and text.startswith(shown) and len(text) > len(shown):
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text
    print(text[len(shown):] if args.stream else text)
    if decoder.out_of_room:  # (said apart from the reply: stdout is the reply alone)
        print(f"(the reply filled what the model reads at once: {decoder.context:,} tokens, prompt and reply "
              "together)", file=sys.stderr)
    elif decoder.cut_off:
        print(f"(the reply stopped at --max-new-tokens {args.max_new_tokens} before its end)", file=sys.stderr)
    return 0


def cmd_cancel(args) -> int:
    studio = _studio(args)
    if studio.store.get_export(args.run_id):  # an export or merge: stops, keeping nothing half-made
        from pipelines.export import ExportError
        from studio import export_service

        try:
            export_service.cancel(studio, args.run_id)
        except ExportError as err:
            raise CliError(str(err)) from None
        print(f"cancel requested for {args.run_id}: it stops and removes what it had not finished")
        return 0
    if args.run_id.startswith("j") and (studio.run_dir(args.run_id) / "job.json").exists():  # a judge job
        from studio import judge_service

        try:
            judge_service.cancel(studio, args.run_id)
        except judge_service.JudgeError as err:
            raise CliError(str(err)) from None
        print(f"cancel requested for {args.run_id}: it stops without making a dataset"
              + ("; the pairs it has read are kept for the next job with the same judge"
                 if judge_service.kept_readings(studio, args.run_id) else ""))
        return 0
    if studio.store.get_label_project(args.run_id):  # a labeling project, by id or name: its answers stop
        from studio import label_service

        try:
            label_service.cancel_generation(studio, args.run_id)
        except label_service.LabelError as err:
            raise CliError(str(err)) from None
        print(f"cancel requested for project {args.run_id}: its answers written so far stay to label "
              "('studio label resume' goes on)")
        return 0
    studio.cancel(args.run_id)
    print(f"cancel requested for {args.run_id}: it saves a checkpoint, then stops")
    return 0


def cmd_resume(args) -> int:
    studio = _studio(args)
    studio.resume(args.run_id)
    print(f"{args.run_id} queued to resume from its newest checkpoint", flush=True)
    if args.wait:
        return wait_for_run(studio, args.run_id)
    return 0


def cmd_continue(args) -> int:
    run_id = _studio(args).continue_run(args.run_id, args.epochs)
    print(run_id)
    return 0


def cmd_logs(args) -> int:
    import time

    studio = _studio(args)
    row = studio.get_run(args.run_id)
    if row is None:
        raise CliError(f"no run with id '{args.run_id}' (see 'studio runs')")
    log = studio.run_dir(args.run_id) / "train.log"
    while not log.exists():  # a run a waiting worker took writes its log once its libraries are loaded
        if not args.follow or studio.get_run(args.run_id)["status"] in FINAL_STATUSES:
            print(f"run {args.run_id} has written no log yet" + ("" if args.follow else
                  " (it is starting: --follow waits for it)"), file=sys.stderr)
            return 0
        time.sleep(0.5)
    with open(log, "r", errors="replace") as fh:
        while True:
            chunk = fh.read()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            if not args.follow or studio.get_run(args.run_id)["status"] in FINAL_STATUSES and not chunk:
                return 0
            time.sleep(0.5)


def cmd_prepare(args) -> int:
    studio = _studio(args)
    models.check_available(args.model, studio.model_cache)
    path = studio.resolve_model(args.model)
    if str(path) == str(args.model).strip() and not Path(path).exists():  # a hub id: downloaded on first use
        print(f"model {path} is a hub id: it is downloaded on its first use (nothing is prepared ahead)")
        return 0
    print(f"model ready: {path}")
    return 0


def _port_taken(host: str, port: int) -> str:
    """Why the server could not listen there ("" when it can): said before the app is built (the server's own
    error came after it, as a traceback: "Cannot find empty port ... passing the server_port parameter")."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        return f"the address is not known here: {err.strerror or err}"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (as the server's own: a port just freed works)
        try:
            probe.bind(address)
        except OSError as err:
            return err.strerror or str(err)
    return ""


def cmd_serve(args) -> int:
    from studio.launch import LaunchError, check_exposure, serve

    try:
        check_exposure(args.host, args.auth, args.share, args.auth_file)
    except LaunchError as err:
        raise CliError(str(err)) from None
    if not 0 < args.port < 65536:
        raise CliError(f"--port {args.port} is not a port; pick one from 1 to 65535")
    taken = _port_taken(args.host, args.port)
    if taken:
        raise CliError(f"port {args.port} on {args.host} cannot be used ({taken}); is the studio already running? "
                       "Pick another with --port")
    studio = _studio(args, standby=True)
    for run_id in studio.recover():
        print(f"run {run_id} was interrupted (its process is gone); resume it from the Train tab")
    # this machine's speed, as kept for the estimates, checked again whenever nothing trains and
    # nothing else takes the CPU
    from pipelines import hardware

    threading.Thread(target=hardware.remeasure_when_quiet, args=(studio.busy,), daemon=True,
                     name="remeasure").start()
    serve(studio, host=args.host, port=args.port, auth=args.auth, share=args.share, auth_file=args.auth_file)
    return 0


def cmd_methods(args) -> int:
    from pipelines.estimates import count_params
    from pipelines.methods import METHODS
    from studio import method_service as ms

    studio = _studio(args)
    models.check_available(args.model, studio.model_cache)  # a hub id not here: one sentence, not a traceback
    model_path = str(studio.resolve_model(args.model))
    print(f"methods for {args.model}" + (f" (peak memory and time for dataset {args.dataset})" if args.memory else ""))
    head = f"{'key':<10} {'method':<19} {'family':<16} {'data':<10} {'trainable':>10} {'%':>7}  merge"
    print(head + ("  peak memory  time/epoch" if args.memory else ""))
    for key, method in METHODS.items():
        line = f"{key:<10} {method.label:<19} {method.family:<16} {method.data_kind:<10} "
        try:
            total, trainable = count_params(model_path, key)
        except ConfigError as err:  # a method this model cannot train (ESFT on a dense model)
            print(f"{line}not for this model: {err}", flush=True)
            continue
        line += (f"{ms.fmt_count(trainable):>10} {100 * trainable / total:>6.2f}%  "
                 f"{'yes' if method.mergeable else 'no':<5}")
        if args.memory:
            est = ms.estimate(studio, args.model, key, None, args.dataset)
            line += f"  {ms.fmt_bytes(est.peak_bytes):>11}  {ms.fmt_seconds(est.seconds_per_epoch):>10}"
        print(line, flush=True)
    print("\nnamed in the field, not trainable here:")
    import re

    print(re.sub(r"<small>(.*?)</small>", r"(\1)", ms.elsewhere(studio, args.model)).replace("**", "").replace("*", ""))
    return 0


def cmd_advise(args) -> int:
    from studio import advise

    studio = _studio(args)
    advice = advise.advise(studio, args.goal, args.model, args.dataset)
    if args.save and not advice.method:
        raise CliError(f"no config to save to {args.save}: no training method suits this goal with this data")
    if args.save and args.save.exists():  # (a config the user edited is not overwritten)
        raise CliError(f"{args.save} exists; remove it or choose another file")
    print(advise.as_markdown(advice).replace("**", ""))
    if not advice.method:
        return 0
    config = advise.as_yaml(advice, args.model, advice.dataset or args.dataset)
    if args.save:
        import os

        tmp = args.save.with_name(f".{args.save.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(config)
            try:
                os.link(tmp, args.save)  # whole, and never over a file made meanwhile (a rename would replace it)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links (FAT, some network mounts): made exclusively
                with open(args.save, "x") as fh:
                    fh.write(config)
        except FileExistsError:
            raise CliError(f"{args.save} exists; remove it or choose another file") from None
        except OSError as err:
            raise CliError(f"could not write {args.save}: {err.strerror or err}") from None
        finally:
            tmp.unlink(missing_ok=True)
        print(f"\nsaved the config to {args.save}; start it with: studio train {args.save}")
    else:
        print("\n# a config for `studio train` (save it as a .yaml file, or use --save FILE):")
        print(config, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="workspace folder (default: $STUDIO_HOME or ~/.local/share/tune-studio)")
    parser = argparse.ArgumentParser(prog="studio", description="Tune Studio: fine-tune language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", parents=[common], help="start a training run from a YAML config")
    p.add_argument("config", type=Path)
    p.add_argument("--wait", action="store_true", help="block, show progress, exit non-zero if the run fails")
    p.add_argument("--print-launch", action="store_true",
                   help="print the accelerate launch command and config the run would use (its 'devices'); "
                        "start nothing")
    p.set_defaults(func=cmd_train)

    cli_data.add_parsers(sub, common)
    cli_label.add_parsers(sub, common)
    cli_export.add_parsers(sub, common)
    cli_judge.add_parsers(sub, common)

    p = sub.add_parser("runs", parents=[common], help="list runs and their status")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("generate", parents=[common], help="reply to a prompt with the base or a tuned model")
    p.add_argument("prompt")
    p.add_argument("--run", help="use this run's tuned model")
    p.add_argument("--model", default="default", help="base model (ignored with --run)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--stream", action="store_true", help="print the reply as it is generated")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = most likely tokens (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=-1, help="fixed seed = reproducible sampling")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("methods", parents=[common], help="list the training methods and what they train on a model")
    p.add_argument("--model", default="default", help="count trainable weights on this model")
    p.add_argument("--memory", action="store_true", help="also estimate peak memory and time per epoch (slower)")
    p.add_argument("--dataset", default="quillpad_faq", help="dataset for the time estimate (with --memory)")
    p.set_defaults(func=cmd_methods)

    from pipelines.advisor import GOALS

    p = sub.add_parser("advise", parents=[common], help="which method and settings suit what you want to do",
                       description="Goals: " + "; ".join(f"{k}: {v}" for k, v in GOALS.items()))
    p.add_argument("--goal", required=True, choices=list(GOALS), help="what the tuned model should do better")
    p.add_argument("--dataset", help="the dataset you would train on (its size, kind and lengths shape the advice)")
    p.add_argument("--model", default="default", help="the model to tune (default: the built-in one)")
    p.add_argument("--save", type=Path, metavar="FILE",
                   help="write the advised config to FILE (for `studio train FILE`) instead of printing it")
    p.set_defaults(func=cmd_advise)

    p = sub.add_parser("cancel", parents=[common], help="stop a run (it saves a checkpoint first), an export, a judge "
                                                         "job, or a labeling project's answering (by its name)")
    p.add_argument("run_id")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("resume", parents=[common], help="resume a cancelled, failed or interrupted run")
    p.add_argument("run_id")
    p.add_argument("--wait", action="store_true", help="block, show progress, exit non-zero if the run fails")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("continue", parents=[common], help="train a completed run for more epochs (new run)")
    p.add_argument("run_id")
    p.add_argument("--epochs", type=float, default=1.0)
    p.set_defaults(func=cmd_continue)

    p = sub.add_parser("logs", parents=[common], help="print a run's log")
    p.add_argument("run_id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("prepare", parents=[common], help="convert and cache a model ahead of time")
    p.add_argument("--model", default="default")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("serve", parents=[common], help="open the studio in the browser")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", help="USER:PASSWORD; required to bind beyond this machine or to share")
    p.add_argument("--auth-file", metavar="FILE", help="a file of USER:PASSWORD lines, one per person (readable by "
                   "you only): each signs in under their own name, and no password shows in `ps`")
    p.add_argument("--share", action="store_true", help="public Gradio link (requires --auth or --auth-file)")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pipelines.run import quiet_libraries

    quiet_libraries()  # what a command prints is read by a person: no weight-loading bars, no optional-kernel notes
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CliError, *USER_ERRORS) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: stopped as asked, no traceback (a command waiting on a job says it goes on)
        print("stopped (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    from studio.cli import main as _main  # one copy of this module (and of CliError) under python -m

    sys.exit(_main())
