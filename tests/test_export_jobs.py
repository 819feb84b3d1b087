"""Exports as jobs, end to end on the tiny model: a finished LoRA run merged (a folder that loads
outside the studio with the run's outputs) and written as GGUF + Modelfile (transformers' GGUF
loader reads it, same greedy tokens); the made models join the Train and Chat lists; `studio export`
and `studio merge` from the CLI; refusals exit 2 with one sentence and leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from studio import chat_service, export_service
from tests.conftest import ROOT
from tests.test_checkpoints import can_mount_a_small_disk, spawn_in_a_namespace
from tests.test_export_merge import PROMPT


def studio_cmd(home, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "studio.cli", *args, "--home", str(home)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def finished_run(studio, tiny_model_dir, method: str, params: dict) -> str:
    run_id = studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method=method, params=params)
    row = studio.wait(run_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    return run_id


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    """One studio with one finished LoRA run (shared: training is the slow part)."""
    from studio.core import Studio

    studio = Studio(tmp_path_factory.mktemp("home"))
    run_id = finished_run(studio, tiny_model_dir, "lora", {
        "learning_rate": 1e-2, "num_train_epochs": 0.25, "per_device_train_batch_size": 8, "max_length": 64,
        "r": 8, "lora_alpha": 16})
    return studio, run_id


def run_logits(studio, run_id):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, adapter = studio.tuned_model(run_id)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), str(adapter)).eval()
    with torch.no_grad():
        return tuned(input_ids=torch.tensor(PROMPT)).logits[0], tuned


def greedy(model, n=10):
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor(PROMPT), attention_mask=torch.ones(1, len(PROMPT[0]), dtype=torch.long),
                             max_new_tokens=n, do_sample=False)
    return out[0, len(PROMPT[0]):].tolist()


def test_merged_export_loads_outside_the_studio_with_the_runs_outputs(workspace, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    studio, run_id = workspace
    export_id = export_service.start_export(studio, f"run:{run_id}", fmt="merged", name="Quillpad Support!")
    row = export_service.wait(studio, export_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    assert row["name"] == "quillpad-support"
    folder = studio.run_dir(export_id) / "model"
    expected, _ = run_logits(studio, run_id)
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()  # plain transformers, no PEFT
    with torch.no_grad():
        diff = (merged(input_ids=torch.tensor(PROMPT)).logits[0] - expected).abs().max().item()
    assert diff < 1e-4
    # the weights can be read by whoever can read the folder's other files (an Ollama or vLLM server run by
    # another account): safetensors had written them owner-only, the run's adapter as the merged model
    def mode(path):
        return oct(path.stat().st_mode & 0o777)

    adapter = studio.adapter_dir(run_id)
    assert mode(adapter / "adapter_model.safetensors") == mode(adapter / "adapter_config.json") == "0o644"
    assert mode(folder / "model.safetensors") == mode(folder / "config.json") == "0o644"
    # the made model is offered wherever a model is picked
    from components.train_tab import model_choices

    assert str(folder) in [value for _label, value in model_choices(studio)]
    assert f"base:{folder}" in [value for _label, value in chat_service.choices(studio)]
    assert f"export:{export_id}" in [value for _label, value in export_service.sources(studio)]
    assert export_service.files(studio, export_id)


def test_a_run_named_as_the_base_and_among_the_models_is_merged_once(workspace, tiny_model_dir):
    """Task arithmetic with a run as the base and among the models: its adapter was merged into two folders,
    one of them counted as a tuned model with no change, and the other model kept half of its change (the
    merge is the base folder here: the run plus the whole change back to it)."""
    from safetensors.torch import load_file

    studio, run_id = workspace
    export_id = export_service.start_merge(studio, "task_arithmetic", [f"run:{run_id}", str(tiny_model_dir)],
                                           base=f"run:{run_id}")
    row = export_service.wait(studio, export_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    assert row["max_steps"] == 2  # the run's adapter merged once, then the merge
    merged = load_file(studio.run_dir(export_id) / "model" / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    assert max((merged[k].float() - base[k].float()).abs().max().item() for k in base) < 1e-4


def test_gguf_export_of_a_run_reads_back_with_the_same_greedy_tokens(workspace):
    from transformers import AutoModelForCausalLM

    studio, run_id = workspace
    export_id = export_service.start_export(studio, f"run:{run_id}", fmt="gguf", quant="f16", name="faq")
    row = export_service.wait(studio, export_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    gguf_file = studio.run_dir(export_id) / "gguf" / "faq-f16.gguf"
    assert gguf_file.exists() and row["summary"]["gguf_bytes"] == gguf_file.stat().st_size
    modelfile = (gguf_file.parent / "Modelfile").read_text()
    assert "FROM ./faq-f16.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "ollama create faq -f Modelfile" in export_service.ollama_command(studio, export_id)
    import gguf  # the name llama.cpp and LM Studio show: the export's (it was the scratch folder's, merged-step)

    assert gguf.GGUFReader(gguf_file).fields["general.name"].contents() == "faq"
    _, tuned = run_logits(studio, run_id)
    from_gguf = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name).eval()
    assert greedy(from_gguf) == greedy(tuned)


def test_cli_export_and_merge_wait_and_print_where_the_result_is(workspace, tiny_model_dir):
    studio, run_id = workspace
    done = studio_cmd(studio.home, "export", f"run:{run_id}", "--format", "gguf", "--quant", "q8_0", "--wait")
    assert done.returncode == 0, done.stderr
    assert "gguf: " in done.stderr and "to run it with Ollama: " in done.stderr
    # SLERP of the base folder and the run (its adapter merged into the base first)
    done = studio_cmd(studio.home, "merge", str(tiny_model_dir), f"run:{run_id}", "--method", "slerp", "--t", "0.5",
                      "--name", "half", "--wait")
    assert done.returncode == 0, done.stderr
    export_id = done.stdout.strip().splitlines()[-1]
    row = export_service.get_export(studio, export_id)
    assert row["status"] == "completed" and row["kind"] == "merge"
    assert not (studio.run_dir(export_id) / "inputs").exists()  # the merged input was only a step
    listing = studio_cmd(studio.home, "exports")
    assert export_id in listing.stdout and "half" in listing.stdout


def test_refusals_exit_2_with_one_sentence_and_write_nothing(workspace, tmp_path):
    import json
    import shutil

    studio, run_id = workspace
    before = (sorted(p.name for p in studio.runs_dir.iterdir()), len(studio.store.list_exports()))
    other = tmp_path / "gpt"
    shutil.copytree(studio.run_dir(run_id) / "adapter", other)  # any folder with a config that is not llama
    (other / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    (other / "model.safetensors").write_bytes(b"")
    pickled = tmp_path / "pickled"  # pickle weights beside a stray .safetensors file
    shutil.copytree(studio.run_dir(run_id) / "adapter", pickled)
    (pickled / "config.json").write_text((studio.run_dir(run_id) / "adapter" / "adapter_config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"")
    cases = [
        (("export", "run:r-nope"), "error: no run with id 'r-nope' (see 'studio runs')"),
        (("export", "default", "--format", "gguf", "--quant", "q3"), None),  # argparse: exit 2 too
        (("export", str(other), "--format", "gguf"), "GPT2LMHeadModel, but GGUF export supports only"),
        (("merge", f"run:{run_id}", "--method", "ties"), "error: TIES adds each model's changes to a base model"),
        (("merge", f"run:{run_id}", f"run:{run_id}", "--method", "linear"), "is named twice"),
        (("export", f"run:{run_id}", "--format", "gguf", "--system", 'Say "hi"'), "ends with a double quote"),
        (("merge", f"run:{run_id}", str(pickled), "--method", "linear"), "has only pickle weights (pytorch_model.bin)"),
        # options the method or format does not read: refused, not ignored (the result was not what was asked)
        (("merge", f"run:{run_id}", "default", "--weights", "1", "2"),
         "error: SLERP (two models) does not use --weights; leave it out (see --help for what it takes)"),
        (("merge", f"run:{run_id}", "default", "--method", "ties", "--base", "default", "--t", "0.3", "--seed", "1"),
         "error: TIES does not use --t or --seed; leave them out"),
        (("export", f"run:{run_id}", "--quant", "q4_0"), "error: --format merged does not use --quant; leave it out"),
    ]
    for args, says in cases:
        done = studio_cmd(studio.home, *args)
        assert done.returncode == 2, (args, done.stderr)
        if says:
            assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert (sorted(p.name for p in studio.runs_dir.iterdir()), len(studio.store.list_exports())) == before


@pytest.mark.parametrize("method, why", [
    ("prompt", "it learned virtual tokens put in front of every input, not a change of the model's weights"),
    # a bottleneck run was told about virtual tokens too: each kind now gets its own reason
    ("houlsby", "it adds small networks with a non-linearity between the model's layers, which no weight of the "
                "model can hold")])
def test_a_run_whose_adapter_no_weight_can_hold_is_refused_with_its_own_reason(studio, tiny_model_dir, method, why):
    from pipelines.methods import METHODS

    run_id = finished_run(studio, tiny_model_dir, method, {
        "learning_rate": 1e-2, "num_train_epochs": 0.1, "per_device_train_batch_size": 8, "max_length": 64})
    before = sorted(p.name for p in studio.runs_dir.iterdir())
    done = studio_cmd(studio.home, "export", f"run:{run_id}", "--format", "gguf")
    assert done.returncode == 2
    assert done.stderr == (f"error: run {run_id} learned a {METHODS[method].label} adapter, which cannot be merged "
                           f"into a model file: {why} (train a LoRA-family method to export)\n")
    assert studio.store.list_exports() == [] and sorted(p.name for p in studio.runs_dir.iterdir()) == before
    assert f"run:{run_id}" not in [v for _l, v in export_service.sources(studio)]


def test_a_model_without_a_chat_template_gets_its_gguf_and_no_modelfile(studio, tiny_model_dir, tmp_path):
    from tests.conftest import without_chat_template

    plain = without_chat_template(tiny_model_dir, tmp_path / "plain")
    export_id = export_service.start_export(studio, str(plain), fmt="gguf", quant="f16")
    row = export_service.wait(studio, export_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    assert [p.name for p in export_service.files(studio, export_id)] == ["plain-f16.gguf"]
    assert row["summary"]["note"].startswith("no Modelfile: the model has no chat template")
    assert export_service.ollama_command(studio, export_id) is None


def test_a_chat_template_ollama_cannot_take_still_gets_its_gguf(studio, tiny_model_dir, tmp_path):
    """A template the Modelfile cannot translate (Llama 2's system text inside the first [INST]) failed
    the whole export, after minutes of merging, with a message to write a TEMPLATE for a Modelfile that
    was never written: the GGUF is written (it carries the template, which llama.cpp reads) and the note
    says why there is no Modelfile."""
    import json
    import shutil

    from transformers import AutoTokenizer

    llama2 = ("{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}"
              "{% set messages = messages[1:] %}{% else %}{% set sys = '' %}{% endif %}{% for m in messages %}"
              "{% if m['role'] == 'user' %}{% if loop.first and sys %}"
              "{{ '<s>[INST] <<SYS>>\n' + sys + '\n<</SYS>>\n\n' + m['content'] + ' [/INST]' }}"
              "{% else %}{{ '<s>[INST] ' + m['content'] + ' [/INST]' }}{% endif %}"
              "{% else %}{{ ' ' + m['content'] + ' </s>' }}{% endif %}{% endfor %}")
    folder = tmp_path / "llama2chat"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": llama2}))
    assert AutoTokenizer.from_pretrained(folder).chat_template == llama2
    export_id = export_service.start_export(studio, str(folder), fmt="gguf", quant="f16")
    row = export_service.wait(studio, export_id, poll_s=0.3)
    assert row["status"] == "completed", row["error"]
    assert [p.name for p in export_service.files(studio, export_id)] == ["llama2chat-f16.gguf"]
    assert row["summary"]["note"] == (
        "no Modelfile: the chat template puts the system message inside the first user message, so it cannot be "
        "translated for Ollama; write the Modelfile's TEMPLATE by hand; the GGUF carries the model's own chat "
        "template, which llama.cpp reads")
    assert export_service.ollama_command(studio, export_id) is None
    # and the user is told: the note was kept in the summary and shown nowhere
    from components.export_tab import details

    assert f"**Note:** {row['summary']['note']}" in details(studio, export_id)


def test_an_export_job_can_be_cancelled(workspace):
    studio, run_id = workspace
    export_id = export_service.start_export(studio, f"run:{run_id}", fmt="gguf", quant="q4_0")
    done = studio_cmd(studio.home, "cancel", export_id)
    assert done.returncode == 0, done.stderr
    row = export_service.wait(studio, export_id, poll_s=0.2)
    assert row["status"] == "cancelled"
    assert not (studio.run_dir(export_id) / "gguf").exists() and not (studio.run_dir(export_id) / "merged-step").exists()
    again = studio_cmd(studio.home, "cancel", export_id)
    assert again.returncode == 2 and f"export {export_id} is cancelled" in again.stderr


# The export's GGUF folder is a RAM disk far smaller than the file (its own mount namespace: no root)
SMALL_GGUF_DISK = """
set -e
mount -t tmpfs -o size=64k tmpfs "$1/gguf"
"$2" -m pipelines.run "$1" || true
ls -A "$1/gguf" > "$1/left-on-disk.txt"
"""


@pytest.mark.skipif(not can_mount_a_small_disk(), reason="needs unshare -rm to mount a small tmpfs")
def test_a_full_disk_during_an_export_says_to_export_again_and_leaves_no_half_file(studio, tiny_model_dir,
                                                                                   monkeypatch):
    """The disk filling during an export said "free some space, then resume the run": an export has no
    resume, and no button or command for one."""
    wrappers = spawn_in_a_namespace(studio, monkeypatch, SMALL_GGUF_DISK, ("gguf",))
    export_id = export_service.start_export(studio, str(tiny_model_dir), fmt="gguf", quant="f16")
    row = export_service.wait(studio, export_id, poll_s=0.3)
    wrappers[0].wait(timeout=30)
    assert row["status"] == "failed"
    assert row["error"] == (f"the disk is full (no space left on the device holding {studio.runs_dir}); free some "
                            "space, then export again (what was half written is removed)")
    assert (studio.run_dir(export_id) / "left-on-disk.txt").read_text() == ""


def test_a_files_size_reads_in_units_of_1024_as_downloads_lists_show_it():
    from components.export_tab import shown_size

    # Gradio's File box: units of 1024, one decimal (a 144.8 MB GGUF by powers of ten is 138.1 MB there)
    assert [shown_size(n) for n in (500, 2048, 144_800_000, 3 * 1024**3)] == \
        ["500.0 B", "2.0 KB", "138.1 MB", "3.0 GB"]


def test_each_export_has_a_name_of_its_own(tmp_path, tiny_model_dir):
    """Two exports named alike (a run as GGUF Q8_0, another as Q4_0 under the same typed name) listed two rows of
    one name with one `ollama create` command, the second replacing the first. A made name gets -2; a typed one
    another model's export has is refused, writing nothing; the same export again keeps its name. A name's
    accented letters lose only their accents ('évil' became 'vil'), and a run of dots goes."""
    from pipelines.export import ExportError
    from studio.core import Studio

    studio = Studio(tmp_path / "home")
    model = str(tiny_model_dir)
    assert export_service.safe_name("Tone model ü/../évil <b>x</b>") == "tone-model-u-evil-b-x-b"
    first = export_service.start_export(studio, model, "gguf", "q8_0", name="Tone model ü/../évil")
    assert studio.store.get_export(first)["name"] == "tone-model-u-evil"
    with pytest.raises(ExportError, match="an export named 'tone-model-u-evil' exists already .*: its Ollama model "
                                          "would be replaced; type another name"):
        export_service.start_export(studio, model, "gguf", "q4_0", name="tone-model-u-evil")
    assert len(studio.store.list_exports()) == 1
    made = [export_service.start_export(studio, model, "merged") for _ in range(2)]
    names = [studio.store.get_export(i)["name"] for i in made]
    assert names[1] == f"{names[0]}-2", names
    for export_id in (first, *made):
        assert export_service.wait(studio, export_id, poll_s=0.3)["status"] == "completed"
    again = export_service.start_export(studio, model, "gguf", "q8_0", name="tone-model-u-evil")  # the same again
    assert studio.store.get_export(again)["name"] == "tone-model-u-evil"
    assert export_service.wait(studio, again, poll_s=0.3)["status"] == "completed"
    # a merged folder has no Ollama model to replace (the refusal said it had), and one made from a model folder
    # merges nothing: the model lists call it a copy, not "merged with its base"
    with pytest.raises(ExportError) as err:
        export_service.start_export(studio, model, "merged", name="tone-model-u-evil")
    assert str(err.value) == (f"an export named 'tone-model-u-evil' exists already ({first}), of another model or in "
                              "another format; type another name")
    assert f"Exported model: {names[0]} (a copy, {made[0]})" in [label for label, _f in
                                                                export_service.model_choices(studio)]


def test_a_gguf_whose_modelfile_failed_is_removed_and_a_killed_exports_leftovers_go(studio, tiny_model_dir,
                                                                                    monkeypatch):
    """The GGUF was in place before its Modelfile: a disk that filled between the two failed the export and kept
    the whole file ("what was half written is removed"). An export killed part-way (kill -9, out of memory) left
    its step copies and a finished-looking file that nothing removed."""
    import errno

    from pipelines.events import RunEvents, STATUS, write_json
    from pipelines.export import job as export_job
    from pipelines.export import modelfile

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(modelfile, "write_modelfile", full_disk)
    run_dir = studio.runs_dir / "x-in-process"
    run_dir.mkdir()
    job = {"kind": "gguf", "quant": "q8_0", "name": "tone",
           "source": {"model": str(tiny_model_dir), "model_cache": str(studio.model_cache)}}
    with pytest.raises(OSError):
        export_job.run(job, run_dir, RunEvents(run_dir))
    assert not (run_dir / export_job.GGUF_DIR).exists()

    # an export whose worker was killed while it wrote: its status says running, its process is gone
    export_id = export_service.start_export(studio, str(tiny_model_dir), fmt="gguf")
    assert export_service.wait(studio, export_id, poll_s=0.3)["status"] == "completed"
    job_dir = studio.run_dir(export_id)
    status = json.loads((job_dir / STATUS).read_text())
    write_json(job_dir / STATUS, {**status, "status": "running", "pid": 2**22 + 1})
    (job_dir / "merged-step").mkdir()
    (job_dir / ".merged-step-x1y2").mkdir()  # the adapter's merge, killed while it wrote
    (job_dir / "gguf" / ".tone.gguf.1.partial").write_bytes(b"GGUF")
    from studio.core import Studio

    write_json(job_dir / "heartbeat.json", {"time": time.time()})  # beating: at work, whatever its pid says here
    Studio(studio.home)
    assert (job_dir / "merged-step").exists() and (job_dir / "gguf").exists()
    write_json(job_dir / "heartbeat.json", {"time": time.time() - 60})  # its last beat a minute ago
    Studio(studio.home)  # the next start of the studio (a server, a command) sweeps
    assert export_service.get_export(studio, export_id)["status"] == "failed"
    assert sorted(p.name for p in job_dir.iterdir() if p.is_dir()) == []


def test_an_export_whose_process_cannot_start_is_one_sentence_and_leaves_nothing(studio, tiny_model_dir,
                                                                                  monkeypatch):
    """Fork failing for lack of memory stopped the Export tab with Gradio's bare error and the command line
    with a traceback."""
    def no_memory(*_args, **_kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(studio, "spawn", no_memory)
    with pytest.raises(export_service.ExportError) as err:
        export_service.start_export(studio, str(tiny_model_dir), fmt="merged")
    assert str(err.value) == ("the export process could not be started (Cannot allocate memory); nothing was "
                              "queued, try again once the machine has room")
    assert studio.store.list_exports() == [] and list(studio.runs_dir.iterdir()) == []


def test_a_downloaded_hub_model_is_named_by_its_id_not_its_snapshot(studio, tiny_model_dir, tmp_path, monkeypatch):
    """A hub id's copy sits in a folder named by its commit: the GGUF file, its name inside and the Ollama
    model were named 0123…4567."""
    import shutil

    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    job, name = export_service.source(studio, "acme/tiny-chat")
    assert name == "tiny-chat" and job["model"] == str(repo / "snapshots" / commit)
    assert export_service.source(studio, str(tiny_model_dir))[1] == tiny_model_dir.name  # a folder: its name


def test_an_output_folder_that_is_there_is_refused_before_the_work(tmp_path):
    from pipelines.export import ExportError, atomic_folder

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError) as err:
        with atomic_folder(tmp_path / "out"):
            raise AssertionError("the work must not start")
    assert str(err.value) == f"{tmp_path / 'out'} exists and is not empty; choose another folder or remove it"
    assert (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_export_id_drawn_twice_never_touches_the_other_export(studio, tiny_model_dir, monkeypatch):
    """An id taken the same second made the folder's mkdir fail inside the clean-up's reach: the other
    export's row and folder were removed."""
    from studio import core

    taken = studio.run_dir("x-taken")
    taken.mkdir(parents=True)
    (taken / "job.json").write_text("{}")
    ids = iter(["x-taken", "x-fresh"])
    monkeypatch.setattr(core, "_new_id", lambda prefix: next(ids))
    export_id = export_service.start_export(studio, str(tiny_model_dir), fmt="merged")
    assert export_id == "x-fresh" and (taken / "job.json").read_text() == "{}"
    export_service.wait(studio, export_id, poll_s=0.3)
