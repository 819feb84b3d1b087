"""The GGUF exporter: files that transformers' own GGUF loader reads back into the same model and
tokenizer, quantized files that stay close, clear refusals, and nothing half-written left behind.

transformers parses a GGUF's 49k-token vocabulary in Python (~4 s per parse, twice per model load),
so each file is loaded once and shared through module-scoped fixtures."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from pipelines.export.gguf import ExportError, write_gguf

PROMPT = [{"role": "user", "content": "What is 2+2? Answer in one word."}]
SAMPLES = [
    "<|im_start|>user\nHello, wörld! 12345 日本語<|im_end|>\n",
    "  two  spaces\tand a tab\n\nnaïve café 3.14159 🦙",
    "<|endoftext|>def f(x):\n    return x ** 2  # ∑",
]


@pytest.fixture(scope="module")
def original(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    return {"tokenizer": tokenizer, "model": model, "ids": ids, "logits": logits,
            "greedy": _greedy(model, ids)}


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """The tiny model in each format: {quant: result dict}."""
    out = tmp_path_factory.mktemp("gguf")
    return {quant: write_gguf(tiny_model_dir, out / f"tiny-{quant}.gguf", quant) for quant in ("f16", "q8_0", "q4_0")}


@pytest.fixture(scope="module")
def f16_model(exported):
    from transformers import AutoModelForCausalLM

    path = Path(exported["f16"]["file"])
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


def _greedy(model, ids) -> list[int]:
    out = model.generate(ids, attention_mask=ids.new_ones(ids.shape), max_new_tokens=12, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits


def _relative_error(logits, reference) -> float:
    return float((logits - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt())


def _assert_one_sentence(message: str) -> None:
    assert "\n" not in message and ". " not in message.rstrip("."), message


def test_f16_round_trip_gives_the_same_model(original, exported, f16_model):
    diff = float((_logits(f16_model, original["ids"]) - original["logits"]).abs().max())
    # f16 keeps ~3 significant digits; the tiny model's logits are ~1, so ~1e-3 is the expected size.
    assert diff < 5e-3, f"max |logit diff| f16 vs original = {diff:.2e}"
    assert _greedy(f16_model, original["ids"]) == original["greedy"]
    assert exported["f16"]["tensors"] == 2 * 9 + 2  # 9 per layer, embedding, final norm; no output (tied)


def test_f16_round_trip_gives_the_same_tokenizer(original, exported):
    from transformers import AutoTokenizer

    path = Path(exported["f16"]["file"])
    loaded = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    reference = original["tokenizer"]
    for text in SAMPLES:
        assert loaded(text)["input_ids"] == reference(text)["input_ids"], text
    assert loaded.chat_template == reference.chat_template
    assert (loaded.bos_token_id, loaded.eos_token_id) == (reference.bos_token_id, reference.eos_token_id)


def test_q8_0_loads_and_stays_close(original, exported, f16_model):
    from transformers import AutoModelForCausalLM

    path = Path(exported["q8_0"]["file"])
    # The config is the f16 file's (the metadata differs only in file_type); this skips one more
    # slow parse of the vocabulary. transformers refuses its own GgufConfig back, so drop it.
    config = copy.deepcopy(f16_model.config)
    del config.quantization_config
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, config=config).eval()
    error = _relative_error(_logits(model, original["ids"]), original["logits"])
    # Measured ~0.9% relative RMS logit error. Q8_0 keeps 8 bits per weight (each off by at most
    # 0.4% of its block's largest entry, ~0.5% RMS per tensor), and two layers add a little.
    assert error < 0.03, f"q8_0: relative RMS logit error {error:.4f}"
    assert exported["q4_0"]["bytes"] < exported["q8_0"]["bytes"] < exported["f16"]["bytes"]


def test_q4_0_metadata_and_weights_are_what_llama_cpp_reads(original, exported):
    """Read back with gguf-py's reader. (transformers loads q4_0 files too; that costs two more
    slow vocabulary parses, so the weights are checked here by dequantizing them.)"""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(exported["q4_0"]["file"])

    def field(key):
        return reader.fields[key].contents()

    assert field("general.architecture") == "llama"
    assert field("general.file_type") == gguf.LlamaFileType.MOSTLY_Q4_0
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "smollm"
    assert field("tokenizer.chat_template") == original["tokenizer"].chat_template
    assert field("tokenizer.ggml.add_bos_token") is False  # SmolLM2 adds no BOS
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (1, 2)
    assert field("llama.attention.head_count_kv") == 2
    token_types = field("tokenizer.ggml.token_type")
    assert token_types[1] == gguf.TokenType.CONTROL and token_types[100] == gguf.TokenType.NORMAL

    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied embeddings: llama.cpp reuses token_embd
    Q = gguf.GGMLQuantizationType
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32
    assert tensors["blk.0.attn_q.weight"].tensor_type == Q.Q4_0
    assert tensors["token_embd.weight"].tensor_type == Q.Q8_0  # it is also the output matrix

    up = tensors["blk.0.ffn_up.weight"]
    weights = gguf.quants.dequantize(up.data, up.tensor_type).reshape(128, 64)
    reference = original["model"].model.layers[0].mlp.up_proj.weight.detach().numpy()
    error = float(np.sqrt(((weights - reference) ** 2).mean() / (reference ** 2).mean()))
    # 4 bits per weight: ~16 levels per block of 32, so ~8-10% RMS error is what Q4_0 gives.
    assert error < 0.15, f"q4_0 ffn_up relative RMS error {error:.4f}"


def _copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_unsupported_architecture_is_refused_and_leaves_nothing(tiny_model_dir, tmp_path):
    model = _copy(tiny_model_dir, tmp_path)
    config = json.loads((model / "config.json").read_text())
    config.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ExportError, match="GPT2LMHeadModel.*LlamaForCausalLM") as caught:
        write_gguf(model, out / "model.gguf")
    _assert_one_sentence(str(caught.value))
    assert list(out.iterdir()) == []


def test_sentencepiece_only_tokenizer_is_refused(tiny_model_dir, tmp_path):
    model = _copy(tiny_model_dir, tmp_path)
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.model").write_bytes(b"\x00")
    with pytest.raises(ExportError, match="SentencePiece") as caught:
        write_gguf(model, tmp_path / "model.gguf")
    _assert_one_sentence(str(caught.value))


def test_unknown_pre_tokenizer_and_quant_are_refused(tiny_model_dir, tmp_path, monkeypatch):
    with pytest.raises(ExportError, match="q3_k"):
        write_gguf(tiny_model_dir, tmp_path / "model.gguf", "q3_k")
    monkeypatch.setattr("pipelines.export.gguf.PRE_TOKENIZERS", {})
    with pytest.raises(ExportError, match="splits text") as caught:
        write_gguf(tiny_model_dir, tmp_path / "model.gguf")
    _assert_one_sentence(str(caught.value))
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(tiny_model_dir, tmp_path):
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if done == 3:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        write_gguf(tiny_model_dir, tmp_path / "model.gguf", "q8_0", on_progress=progress)
    assert calls == [(1, 20), (2, 20), (3, 20)]
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_a_sharded_folder_exports_the_shards_its_index_names(tiny_model_dir, tmp_path):
    """A review's edge cases: the weights were found by a glob, so shards beside a leftover whole file failed on
    a tensor named twice (now: the whole file when there is one, as transformers loads it, else the shards); a model with no output matrix but no tie flag got a 4-bit token_embd, which llama.cpp
    also reads as the output matrix (llama-quantize gives it more bits); a key saved as null crashed with a
    bare error."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file, save_file

    model = _copy(tiny_model_dir, tmp_path)
    weights = load_file(str(model / "model.safetensors"))
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[:len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, part in shards.items():
        save_file({k: weights[k] for k in part}, str(model / file), metadata={"format": "pt"})
    (model / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: file for file, part in shards.items() for k in part}}))
    (model / "model.safetensors").unlink()
    config = json.loads((model / "config.json").read_text())
    config.update(tie_word_embeddings=False, num_key_value_heads=None)
    (model / "config.json").write_text(json.dumps(config))

    result = write_gguf(model, tmp_path / "m.gguf", "q4_0")
    reader = gguf.GGUFReader(result["file"])
    assert reader.fields["llama.attention.head_count_kv"].contents() == 4  # null: as many as the heads
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors and result["tensors"] == len(weights)
    embed = tensors["token_embd.weight"]
    assert embed.tensor_type == gguf.GGMLQuantizationType.Q8_0  # it is the output matrix too
    read = gguf.quants.dequantize(embed.data, embed.tensor_type).reshape(weights["model.embed_tokens.weight"].shape)
    reference = weights["model.embed_tokens.weight"].numpy()
    assert np.abs(read - reference).max() < 0.01 * np.abs(reference).max()  # the shards' weights

    # a whole file beside them is what transformers loads (chat, training): the export is that model too
    save_file({k: v * 0 for k, v in weights.items()}, str(model / "model.safetensors"), metadata={"format": "pt"})
    reader = gguf.GGUFReader(write_gguf(model, tmp_path / "whole.gguf", "q4_0")["file"])
    assert not any(t.data.any() for t in reader.tensors if t.name == "token_embd.weight")
    (model / "model.safetensors").unlink()

    (model / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ExportError) as caught:
        write_gguf(model, tmp_path / "again.gguf")
    assert str(caught.value) == (f"{model} lacks model-00002-of-00002.safetensors, which its "
                                 "model.safetensors.index.json lists")
    assert not (tmp_path / "again.gguf").exists()
