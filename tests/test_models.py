"""Model catalogue: local folders checked (safetensors only), hub ids passed on, bad names refused."""

from __future__ import annotations

import json

import pytest

from pipelines.models import ModelError, resolve


def test_local_folder_with_safetensors_is_accepted(tiny_model_dir, tmp_path):
    assert resolve(str(tiny_model_dir), tmp_path) == str(tiny_model_dir.resolve())


def test_pickle_only_folder_is_refused(tmp_path):
    folder = tmp_path / "old-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ModelError) as err:
        resolve(str(folder), tmp_path)
    assert str(err.value) == (
        f"model folder {folder} has only pickle weights (pytorch_model.bin); Tune Studio loads "
        "safetensors only, because pickle files can run code when loaded - convert it to "
        "safetensors first"
    )


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="has no config.json; expected a Hugging Face model folder"):
        resolve(str(tmp_path), tmp_path)


def test_hub_id_is_passed_to_transformers(tmp_path):
    assert resolve("HuggingFaceTB/SmolLM2-360M-Instruct", tmp_path) == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_nonsense_is_refused(tmp_path):
    with pytest.raises(ModelError, match="^model 'no such model' is neither 'default'"):
        resolve("no such model", tmp_path)
