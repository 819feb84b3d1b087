"""A finished run's adapter downloads as one .zip from its panel (through the server's download route), and the
code the panel shows loads the unzipped folder outside the studio, in a fresh Python process, with the outputs
the studio's own loading gives: a LoRA, one of the studio's own tuners (a bottleneck adapter) and a reward model.
Anything but a finished run's own archive is not served."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile

import pytest
import torch

from components.runs_panel import status_markdown
from studio import adapter_download
from tests.conftest import ROOT
from tests.test_export_jobs import finished_run
from tests.test_export_merge import PROMPT

QUICK = {"learning_rate": 1e-2, "num_train_epochs": 0.25, "per_device_train_batch_size": 8, "max_length": 64,
         "save_steps": 1000}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    """One studio with a finished LoRA run and a bottleneck-adapter run (training is the slow part)."""
    from studio.core import Studio

    studio = Studio(tmp_path_factory.mktemp("home"))
    runs = {"lora": finished_run(studio, tiny_model_dir, "lora", {**QUICK, "r": 8, "lora_alpha": 16}),
            "houlsby": finished_run(studio, tiny_model_dir, "houlsby", QUICK)}
    return studio, runs


def client(studio):
    """The server's download route, as `studio serve` mounts it (anything else answers 418); no lifespan events
    (no `with`): the app behind is no server."""
    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    from studio.launch import Downloads

    return TestClient(Downloads(PlainTextResponse("not a download", status_code=418), studio=studio))


def fetched(studio, run_id, tmp_path):
    """The archive the panel links, downloaded and unzipped: (panel text, archive, its top folder)."""
    panel = status_markdown(studio, studio.get_run(run_id), [])
    href = re.search(r'<a href="([^"]+)" download="([^"]+)">', panel)
    assert href, panel
    answer = client(studio).get("/" + href.group(1))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    name = href.group(2)
    assert answer.headers["content-disposition"] == f'attachment; filename="{name}"'
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    assert archive.testzip() is None
    archive.extractall(tmp_path)
    return panel, archive, tmp_path / name.removesuffix(".zip")


ON_PROMPT = f"model.eval()(input_ids=torch.tensor({PROMPT})).logits[0]"
TEXTS = ["Hi", "A longer reply, so the batch is padded"]
ON_TEXTS = f"model.eval()(**tokenizer({TEXTS}, return_tensors='pt', padding=True)).logits[:, 0]"


def outside(panel: str, cwd, studio_code: bool = False, probe: str = ON_PROMPT) -> torch.Tensor:
    """The panel's loading code run as it is, in a fresh process in the unzipped archive's folder, then `probe`'s
    tensor. Without the studio's code on the path unless the adapter needs it."""
    code = re.search(r"```python\n(.*?)\n```", panel, re.S).group(1)
    probe = f"\nimport json, torch\nwith torch.no_grad():\n    out = {probe}\nprint(json.dumps(out.tolist()))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if studio_code:
        env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code + probe], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.tensor(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_lora_runs_adapter_downloads_as_one_zip_that_loads_outside_with_the_runs_outputs(workspace, tmp_path):
    from tests.test_export_jobs import run_logits

    studio, runs = workspace
    run_id = runs["lora"]
    panel, archive, folder = fetched(studio, run_id, tmp_path)
    adapter = studio.adapter_dir(run_id)
    assert f"Adapter saved in `{adapter}`" in panel
    assert folder.name.startswith("lora-quillpad_faq-") and folder.name.endswith(run_id)
    # every file of the adapter, byte for byte, in one folder; the weights stored, the text compressed
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in adapter.iterdir() if p.is_file())
    assert all((folder / p.name).read_bytes() == p.read_bytes() for p in adapter.iterdir()
               if p.is_file() and p.name != "README.md")
    # ... but PEFT's unfilled model card ("[More Information Needed]", the base named by a path on the server):
    # what the archive is, and the code that loads it
    readme = (folder / "README.md").read_text()
    assert "More Information Needed" not in readme and f"(run {run_id}) on the dataset 'quillpad_faq'" in readme
    assert re.search(r"```python\n(.*?)\n```", panel, re.S).group(1) in readme
    kinds = {i.filename.split("/")[-1]: i.compress_type for i in archive.infolist()}
    assert kinds["adapter_model.safetensors"] == zipfile.ZIP_STORED
    assert kinds["adapter_config.json"] == kinds["tokenizer.json"] == zipfile.ZIP_DEFLATED
    assert "register()" not in panel  # PEFT alone loads a LoRA
    expected, _ = run_logits(studio, run_id)
    assert (outside(panel, tmp_path) - expected).abs().max().item() < 1e-5


def test_the_studios_own_adapter_loads_outside_once_its_tuners_are_registered(workspace, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pipelines.methods.native import register

    studio, runs = workspace
    panel, _, folder = fetched(studio, runs["houlsby"], tmp_path)
    assert "from pipelines.methods.native import register" in panel
    register()
    base, adapter = studio.tuned_model(runs["houlsby"])
    with torch.no_grad():
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
        expected = tuned(input_ids=torch.tensor(PROMPT)).logits[0]
    assert (outside(panel, tmp_path, studio_code=True) - expected).abs().max().item() < 1e-5


def test_a_reward_models_adapter_loads_outside_with_its_scores(studio, tiny_model_dir, tmp_path):
    """On a base whose config names no pad token (Llama 3's, Mistral's): the studio scores with the tokenizer's;
    the code shown sets it too, or a padded batch could not be scored. With the base folder gone later, the panel
    still shows (it read the folder through the studio's model check, which refused it on every refresh)."""
    import shutil

    from pipelines import reward_model

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "pad_token_id"}))
    run_id = studio.start_run(model=str(base), dataset="quillpad_preferences", method="reward_model",
                              params={**QUICK, "per_device_train_batch_size": 4})
    assert studio.wait(run_id, poll_s=0.3)["status"] == "completed"
    unzipped = tmp_path / "unzipped"
    panel, _, folder = fetched(studio, run_id, unzipped)
    assert "AutoModelForSequenceClassification" in panel and "num_labels=1" in panel
    model, tokenizer = reward_model.load(str(base), studio.adapter_dir(run_id))
    with torch.no_grad():
        expected = model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits[:, 0]
    assert (outside(panel, unzipped, probe=ON_TEXTS) - expected).abs().max().item() < 1e-5
    shutil.rmtree(base)
    shown = status_markdown(studio, studio.get_run(run_id), [])
    assert f"# the base: its folder on the server (copy it, or export it from the Export tab)\nbase = " \
           f"AutoModelForSequenceClassification.from_pretrained({str(base)!r}, num_labels=1)" in shown


def test_only_a_finished_runs_own_archive_is_served(workspace, studio, tiny_model_dir, broken_model_dir):
    studio_, runs = workspace
    run = studio_.get_run(runs["lora"])
    name = adapter_download.archive_name(studio_, run)
    http = client(studio_)
    head = http.head(f"/studio-download/{run['id']}?file={name}")
    assert head.status_code == 200 and head.content == b"" and "filename" in head.headers["content-disposition"]
    assert "content-length" not in head.headers  # ("0" said the file was empty)
    for other in (f"?file={name.replace('lora', 'dora')}", "?file=adapter_model.safetensors",
                  "?file=adapter_config.json", f"?file={name}&file={name}", ""):
        assert http.get(f"/studio-download/{run['id']}{other}").status_code == 404, other
    other_run = runs["houlsby"]
    assert http.get(f"/studio-download/{other_run}?file={name}").status_code == 404
    assert http.post(f"/studio-download/{run['id']}?file={name}").status_code == 404
    assert http.get(f"/elsewhere/{run['id']}?file={name}").status_code == 418  # not the route: left to the app
    for odd in (f"..%2F{run['id']}", f"{run['id']}%2F..", f"{run['id']}x", f"{run['id']}/adapter"):
        assert http.get(f"/studio-download/{odd}?file={name}").status_code == 404, odd
    # a run that did not finish has no archive
    failed = studio.start_run(model=str(broken_model_dir), dataset="quillpad_faq", method="lora", params=QUICK)
    assert studio.wait(failed, poll_s=0.3)["status"] == "failed"
    assert client(studio).get(f"/studio-download/{failed}?file="
                              f"{adapter_download.archive_name(studio, studio.get_run(failed))}").status_code == 404
    # a whole model (full tuning) is not an adapter: the panel sends to the Export tab, no archive is served
    full = finished_run(studio, tiny_model_dir, "full", {**QUICK, "learning_rate": 1e-4})
    panel = status_markdown(studio, studio.get_run(full), [])
    assert "Model saved in" in panel and "Export tab" in panel and "<a href" not in panel
    row = studio.get_run(full)
    assert client(studio).get(f"/studio-download/{full}?file={adapter_download.archive_name(studio, row)}").status_code == 404
