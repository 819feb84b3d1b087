"""Bad YAML configs (issue #18): each exits 2 with one sentence — naming the closest known name for
a typo — and queues nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.test_cli import ROOT

SAMPLES = ("a sample (quillpad_faq, quillpad_preferences, signoff_preferences, arithmetic_prompts, "
           "signoff_prompts)")

CASES = [
    ("syntax", "dataset: quillpad_faq\nparams: {r: 8\n",
     "syntax.yaml, line 3: not valid YAML (expected ',' or '}', but got '<stream end>')"),
    ("a_list", "- dataset: quillpad_faq\n", "a_list.yaml: expected a mapping with keys model, dataset, method, params"),
    ("empty", "", "empty.yaml: expected a mapping with keys model, dataset, method, params"),
    ("key_typo", "datset: quillpad_faq\n",
     "key_typo.yaml: unknown key 'datset' (did you mean 'dataset'?); expected dataset, devices, method, model, params, rewards"),
    ("no_dataset", "method: lora\n", "no_dataset.yaml: missing key 'dataset' (a file, a sample name or a dataset id)"),
    ("param_typo", "dataset: quillpad_faq\nparams:\n  lerning_rate: 0.001\n",
     "unknown parameter 'lerning_rate' (did you mean 'learning_rate'?); this method accepts: learning_rate,"),
    ("method_typo", "dataset: quillpad_faq\nmethod: lroa\n",
     "unknown method 'lroa' (did you mean 'lora'?); available methods: full, freeze, lora,"),
    ("a_list_value", "dataset: quillpad_faq\nparams:\n  num_train_epochs: [1, 2]\n",
     "parameter 'num_train_epochs': expected a number, got [1, 2]"),
    ("a_bool_value", "dataset: quillpad_faq\nparams:\n  per_device_train_batch_size: true\n",
     "parameter 'per_device_train_batch_size': expected a whole number, got True"),
    ("empty_value", "dataset: quillpad_faq\nparams:\n  learning_rate:\n",
     "parameter 'learning_rate': is empty; give a number (the default is 0.001)"),
    ("too_high", "dataset: quillpad_faq\nparams:\n  learning_rate: 5\n",
     "parameter 'learning_rate': expected a value from 1e-07 to 1.0, got 5.0"),
    ("too_low", "dataset: quillpad_faq\nparams:\n  r: 0\n", "parameter 'r': expected a value from 1 to 512, got 0"),
    ("two_wrong", "dataset: quillpad_faq\nparams:\n  learning_rate: 5\n  r: 0\n",  # both named at once
     "parameter 'learning_rate': expected a value from 1e-07 to 1.0, got 5.0; parameter 'r': expected a value from "
     "1 to 512, got 0"),
    ("params_not_a_mapping", "dataset: quillpad_faq\nparams: 3\n",
     "params_not_a_mapping.yaml: 'params' must be a mapping of parameter names to values"),
    ("dataset_typo", "dataset: quillpad_fq\n",
     f"dataset 'quillpad_fq' is not a catalogue id, {SAMPLES} or an existing file (did you mean 'quillpad_faq'?)"),
    ("missing_file", "dataset: {tmp}/nothing.jsonl\n",
     f"dataset '{{tmp}}/nothing.jsonl' is not a catalogue id, {SAMPLES} or an existing file"),
    ("hub_model_offline", "dataset: quillpad_faq\nmodel: someorg/somemodel\n",
     "model 'someorg/somemodel' is not downloaded on this machine and downloads are off (HF_HUB_OFFLINE); "
     "use 'default' (the built-in model) or a local model folder"),
    ("not_a_model_folder", "dataset: quillpad_faq\nmodel: {tmp}\n",
     "model folder {tmp} has no config.json; expected a Hugging Face model folder"),
]


@pytest.mark.parametrize("name, text, says", CASES, ids=[c[0] for c in CASES])
def test_a_bad_config_exits_2_with_one_sentence_and_queues_nothing(tmp_path, name, text, says):
    config = tmp_path / f"{name}.yaml"
    config.write_text(text.replace("{tmp}", str(tmp_path)))
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, "-m", "studio.cli", "train", str(config), "--home", str(home)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + says.replace("{tmp}", str(tmp_path))), lines
    assert not list((home / "runs").glob("r*")) if (home / "runs").exists() else True


def test_the_estimate_and_the_token_count_refuse_a_model_that_cannot_be_had_at_once(studio):
    """The Train tab's estimate waited 48 s on the hub's retries, then showed the library's text; the Data
    tab's token count with that model did the same. Both now say the model's one sentence at once."""
    import time

    from components.train_tab import estimate_text
    from pipelines.models import ModelError

    says = ("model 'someorg/somemodel' is not downloaded on this machine and downloads are off (HF_HUB_OFFLINE); "
            "use 'default' (the built-in model) or a local model folder")
    started = time.monotonic()
    assert estimate_text(studio, "someorg/somemodel", "quillpad_faq", "lora", {}) == f"Estimate unavailable: {says}"
    with pytest.raises(ModelError) as raised:
        studio.tokenizer("someorg/somemodel")
    assert str(raised.value) == says
    assert time.monotonic() - started < 10
