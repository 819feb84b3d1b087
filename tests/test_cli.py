"""The headless path: `studio train --wait`, `studio runs`, `studio generate`, bad configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import FAQ, ROOT


def studio_cmd(home, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "studio.cli", *args, "--home", str(home)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def write_config(path, **config):
    path.write_text(yaml.safe_dump(config))
    return path


def test_data_import_then_train_by_id_wait_runs_and_generate(tmp_path, tiny_model_dir, tiny_params):
    home = tmp_path / "home"
    imported = studio_cmd(home, "data", "import", str(FAQ), "--name", "faq", "--heldout", "0.1", "--seed", "3")
    assert imported.returncode == 0, imported.stderr
    dataset_id = imported.stdout.strip()
    assert imported.stderr.strip() == ("faq: 120 rows, sft, from quillpad_faq.jsonl (conversations (messages)), "
                                       "12 held out")
    listed = studio_cmd(home, "data", "list").stdout.splitlines()
    assert listed[1].split() == [dataset_id, "sft", "120", "faq"]
    shown = studio_cmd(home, "data", "show", dataset_id, "--model", str(tiny_model_dir), "--rows", "1")
    assert shown.returncode == 0, shown.stderr
    assert "messages: user: How long does the Quillpad battery last?" in shown.stdout
    assert "0 rows over max length 512" in shown.stdout
    assert "--- as training sees row 1:\n[context] " in shown.stdout
    assert "<|im_start|>assistant\n[learned] The Quillpad battery lasts about 19 days" in shown.stdout

    config = write_config(tmp_path / "run.yaml", model=str(tiny_model_dir), dataset=dataset_id,
                          method="lora", params={**tiny_params, "num_train_epochs": 1})  # 14 steps: seen by a 1 s poll
    done = studio_cmd(home, "train", str(config), "--wait")
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.strip().splitlines()[0]
    assert run_id.startswith("r")
    assert "completed" in done.stderr and "step" in done.stderr  # progress was shown
    log = (home / "runs" / run_id / "train.log").read_text()
    assert "data: 108 training rows, 12 held out" in log  # the dataset's own split was used

    listed = studio_cmd(home, "runs")
    line = next(li for li in listed.stdout.splitlines() if li.startswith(run_id))
    assert "completed" in line and "lora" in line

    tuned = studio_cmd(home, "generate", "--run", run_id, "--max-new-tokens", "4", "Hello?")
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    # the reply alone: no weight-loading bars, no libraries' notices (a walkthrough read "Failed to load CPU
    # gemm_4bit_forward ..." before its answer)
    # (and a reply cut short says so, beside it)
    assert tuned.stderr in ("", "(the reply stopped at --max-new-tokens 4 before its end)\n"), tuned.stderr[-2000:]
    base = studio_cmd(home, "generate", "--model", str(tiny_model_dir), "--max-new-tokens", "4", "Hello?")
    assert base.returncode == 0, base.stderr[-2000:]


def test_a_workspace_named_relative_to_the_current_folder_trains(tmp_path, tiny_model_dir, tiny_params):
    """`--home ws` and `model: models/tiny` from the folder a person works in: the job's worker runs in the
    project's folder, where both are other places (it found no job.json and the run failed before starting)."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(tiny_model_dir, work / "models" / "tiny")  # a model folder named from there too
    write_config(work / "run.yaml", model="models/tiny", dataset=str(FAQ),
                          params={**tiny_params, "num_train_epochs": 0.1})
    done = subprocess.run([sys.executable, "-m", "studio.cli", "train", "run.yaml", "--wait", "--home", "ws"],
                          cwd=work, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = done.stdout.strip().splitlines()[0]
    assert (work / "ws" / "runs" / run_id / "adapter").is_dir()
    assert not (ROOT / "ws").exists()
    from studio.core import Studio

    studio = Studio(work / "ws")  # the catalogue's dataset path does not depend on the folder it was made from
    (dataset,) = studio.store.list_datasets()
    assert Path(dataset["path"]).is_absolute() and Path(dataset["path"]).exists()


def test_bad_parameter_exits_2_and_writes_nothing(tmp_path, tiny_model_dir):
    home = tmp_path / "home"
    config = write_config(tmp_path / "run.yaml", model=str(tiny_model_dir), dataset=str(FAQ),
                          params={"r": "eight"})
    done = studio_cmd(home, "train", str(config))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: parameter 'r': expected a whole number, got 'eight'"
    assert list((home / "runs").iterdir()) == []


def test_bad_config_file_exits_2(tmp_path):
    home = tmp_path / "home"
    config = tmp_path / "run.yaml"
    config.write_text("dataset: x\nepochs: 3\n")
    done = studio_cmd(home, "train", str(config))
    assert (done.returncode, done.stderr.strip()) == (
        2, "error: run.yaml: unknown key 'epochs'; expected dataset, devices, method, model, params, rewards")


def test_generate_with_unknown_run_exits_2(tmp_path):
    done = studio_cmd(tmp_path / "home", "generate", "--run", "r-nope", "hi")
    assert (done.returncode, done.stderr.strip()) == (2, "error: no run with id 'r-nope' (see 'studio runs')")


def test_failed_run_makes_wait_exit_nonzero(tmp_path, tiny_model_dir, tiny_params):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"garbage")
    config = write_config(tmp_path / "run.yaml", model=str(broken), dataset=str(FAQ), params=tiny_params)
    done = studio_cmd(tmp_path / "home", "train", str(config), "--wait")
    assert done.returncode == 1
    assert " failed: " in done.stderr.strip().splitlines()[-1]


def test_cancel_resume_logs_follow_and_continue(tmp_path, tiny_model_dir, tiny_params):
    import time

    from studio.core import Studio

    home = tmp_path / "home"
    config = write_config(tmp_path / "run.yaml", model=str(tiny_model_dir), dataset=str(FAQ),
                          params={**tiny_params, "num_train_epochs": 1, "save_steps": 3})  # 14 steps
    run_id = studio_cmd(home, "train", str(config)).stdout.strip()
    studio = Studio(home)
    deadline = time.time() + 120
    while studio.get_run(run_id)["step"] < 4 and time.time() < deadline:
        time.sleep(0.2)

    cancelled = studio_cmd(home, "cancel", run_id)
    assert cancelled.returncode == 0
    assert cancelled.stdout.strip() == f"cancel requested for {run_id}: it saves a checkpoint, then stops"
    assert studio.wait(run_id, poll_s=0.3)["status"] == "cancelled"

    assert studio_cmd(home, "resume", run_id).returncode == 0
    followed = studio_cmd(home, "logs", run_id, "--follow")
    assert followed.returncode == 0
    assert "resuming from checkpoint-" in followed.stdout and "run completed" in followed.stdout
    assert studio.get_run(run_id)["status"] == "completed"

    again = studio_cmd(home, "resume", run_id)
    assert (again.returncode, again.stderr.strip()) == (
        2, f"error: run {run_id} is completed; only a cancelled, failed or interrupted run can be resumed")

    child = studio_cmd(home, "continue", run_id, "--epochs", "0.25").stdout.strip()
    assert studio.wait(child, poll_s=0.5)["parent_id"] == run_id


def test_methods_lists_every_method_with_its_trainable_count(tmp_path, tiny_model_dir):
    from pipelines.estimates import count_params
    from pipelines.methods import METHODS

    out = studio_cmd(tmp_path / "home", "methods", "--model", str(tiny_model_dir), timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].split()[:6] == ["key", "method", "family", "data", "trainable", "%"]
    rows = {line.split()[0]: line for line in lines[2:lines.index("")]}
    assert list(rows) == list(METHODS)
    assert "named in the field, not trainable here:" in out.stdout  # then why, for this model
    assert f"'{tiny_model_dir}' is a dense model" in out.stdout
    for key, line in rows.items():
        assert f"{METHODS[key].family} " in line and f" {METHODS[key].data_kind} " in line
        if key == "esft":  # a dense model has no experts to train
            assert line.endswith("not for this model: ESFT trains the experts of a mixture-of-experts model, and "
                                 "llama has none: use Freeze tuning or LoRA for a dense model")
            continue
        total, trainable = count_params(str(tiny_model_dir), key)
        assert f"{100 * trainable / total:.2f}%" in line
    assert " yes " in rows["lora"] and " no " in rows["prefix"]


def test_every_command_the_readme_shows_is_one_the_cli_takes():
    """The README showed `studio judge DATASET --judge default --wait`, which failed with "unrecognized arguments:
    --wait" (judge always waits). Each command it shows parses ("[...]" parts given, "a|b" as its first choice)."""
    import re
    import shlex

    from studio.cli import build_parser

    parser, shown = build_parser(), []
    for line in (ROOT / "README.md").read_text().splitlines():
        line = line.strip()
        if line.startswith(".venv/bin/studio "):
            command = re.sub(r"\[([^\]]*)\]", r"\1", line.split("#")[0].strip()[len(".venv/bin/studio "):])
            shown.append(shlex.split(re.sub(r"(\S+)\|\S+", r"\1", command)))
    assert len(shown) > 10
    for args in shown:
        try:
            parser.parse_args(args)
        except SystemExit:
            raise AssertionError(f"the README's `studio {' '.join(args)}` is refused by the CLI") from None


def test_config_that_is_a_folder_or_not_text_and_generate_options_out_of_range_exit_2(tmp_path):
    """Tracebacks before: IsADirectoryError, UnicodeDecodeError; a top-p below 0 failed in the model's generate,
    one above 1 was ignored."""
    done = studio_cmd(tmp_path / "home", "train", str(tmp_path))
    assert (done.returncode, done.stderr.strip()) == (2, f"error: {tmp_path}: a folder, not a config file")
    (tmp_path / "run.yaml").write_bytes(b"model: default\ndataset: caf\xe9\n")
    done = studio_cmd(tmp_path / "home", "train", str(tmp_path / "run.yaml"))
    assert (done.returncode, done.stderr.strip()) == (2, "error: run.yaml: not a text file (byte 28 is not UTF-8)")
    for option, value, said in (("--top-p", "-0.5", "--top-p is -0.5; it must be from 0.05 to 1"),
                                ("--temperature", "-1", "--temperature is -1; it must be from 0 to 2"),
                                ("--max-new-tokens", "0", "--max-new-tokens is 0; it must be from 1 to 4096")):
        done = studio_cmd(tmp_path / "home", "generate", option, value, "hi")
        assert (done.returncode, done.stderr.strip()) == (2, f"error: {said}")


def test_waiting_on_a_run_ctrl_c_and_a_cancel_from_elsewhere(tmp_path, tiny_model_dir, tiny_params):
    """Ctrl-C on `train --wait` printed a traceback and left the run training without a word; a run cancelled
    from elsewhere ended the wait with "cancelled: None"."""
    import signal

    from studio.core import Studio

    home = tmp_path / "home"
    config = write_config(tmp_path / "run.yaml", model=str(tiny_model_dir), dataset=str(FAQ),
                          params={**tiny_params, "num_train_epochs": 30})
    studio = Studio(home)
    for how in ("ctrl-c", "cancel"):
        waiting = subprocess.Popen([sys.executable, "-m", "studio.cli", "train", str(config), "--wait", "--home",
                                    str(home)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        run_id = waiting.stdout.readline().strip()
        waiting.stderr.readline()  # its first progress line: it waits
        if how == "ctrl-c":
            waiting.send_signal(signal.SIGINT)
        else:
            studio.cancel(run_id)
        _out, err = waiting.communicate(timeout=300)
        last = err.strip().splitlines()[-1]
        if how == "ctrl-c":
            assert (waiting.returncode, last) == (
                130, f"stopped waiting (Ctrl-C); run {run_id} goes on in the background: 'studio cancel {run_id} "
                     f"--home {home}' stops it, 'studio logs {run_id} --follow --home {home}' follows it")
            assert "Traceback" not in err and studio.get_run(run_id)["status"] in ("queued", "running")
            studio.cancel(run_id)
            assert studio.wait(run_id, poll_s=0.3)["status"] == "cancelled"
        else:
            assert (waiting.returncode, last) == (1, f"run {run_id} cancelled")


def test_serve_on_a_port_in_use_or_no_port_and_logs_before_any_exit_in_one_line(tmp_path):
    """A second `studio serve` on the same port built the whole app, then failed with the server's traceback
    ("Cannot find empty port"); --port 70000 with an OverflowError. `studio logs` of a run whose worker had not
    written its log yet failed with FileNotFoundError."""
    import socket

    home = tmp_path / "home"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = studio_cmd(home, "serve", "--port", str(port), timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: port {port} on 127.0.0.1 cannot be used (Address already in use); is the "
                                   "studio already running? Pick another with --port")
    done = studio_cmd(home, "serve", "--port", "70000", timeout=120)
    assert (done.returncode, done.stderr.strip()) == (2, "error: --port 70000 is not a port; pick one from 1 to 65535")

    from studio.core import Studio

    studio = Studio(home)
    studio.store.add_run(id="r20261206-100000-aaaa", method="lora", model="default", dataset_id=None,
                         status="queued", params={})
    studio.run_dir("r20261206-100000-aaaa").mkdir(parents=True)
    done = studio_cmd(home, "logs", "r20261206-100000-aaaa")
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.strip() == ("run r20261206-100000-aaaa has written no log yet (it is starting: --follow waits "
                                   "for it)")


def test_a_hub_model_that_is_not_here_is_said_in_one_line_by_methods_and_prepare(tmp_path, monkeypatch, capsys):
    """`methods --model ORG/NAME` was a 30-line traceback with downloads off; `prepare` said "model ready" for a
    hub id it had neither downloaded nor checked."""
    from studio.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    home = ["--home", str(tmp_path / "home")]
    said = ("error: model 'someorg/somemodel' is not downloaded on this machine and downloads are off (HF_HUB_OFFLINE); "
            "use 'default' (the built-in model) or a local model folder\n")
    for command in (["methods", "--model", "someorg/somemodel"], ["prepare", "--model", "someorg/somemodel"]):
        assert main([*command, *home]) == 2
        out = capsys.readouterr()
        assert (out.out, out.err) == ("", said)
