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


def test_pickle_weights_beside_a_stray_safetensors_file_are_refused(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    (folder / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"has only pickle weights \(pytorch_model.bin\)"):
        resolve(str(folder), tmp_path)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError) as err:
        resolve(str(folder), tmp_path)
    assert str(err.value) == (f"model folder {folder} has no model.safetensors (nor model.safetensors.index.json); "
                              "adapter_model.safetensors is not a model's weights file")


def test_a_folder_that_needs_its_own_code_is_refused_in_one_sentence(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "custom"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my_custom_lm", auto_map={"AutoModelForCausalLM": "modeling_custom.CustomLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_custom.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(ModelError) as err:
        resolve(str(folder), tmp_path)
    assert str(err.value) == (
        f"model folder {folder} needs its own Python code (architecture 'my_custom_lm' is not built into "
        "transformers, config.json's auto_map names code in the folder); Tune Studio never runs code "
        "from a model folder")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="config.json is not valid JSON"):
        resolve(str(folder), tmp_path)
