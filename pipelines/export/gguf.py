"""Write a Hugging Face llama folder as one GGUF file that llama.cpp and Ollama can load.

A small version of what llama.cpp's converter does for llama models, written from reading it:
https://github.com/ggml-org/llama.cpp/blob/master/convert_hf_to_gguf.py -- `ModelBase.prepare_tensors`
(which type each tensor gets), `TextModel.set_gguf_parameters` and `LlamaModel.set_gguf_parameters`
(the metadata), `TextModel.get_vocab_base`, `get_vocab_base_pre` and `_set_vocab_gpt2` (the
tokenizer) and `LlamaModel.permute` (the Q/K row order llama.cpp's RoPE expects). The writing and
quantizing is the `gguf` package's (gguf-py, from the same repository).

Tensors are streamed: a first pass reads only names and shapes from the safetensors headers, so
the GGUF header can be written; a second pass loads, converts and writes one tensor at a time.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, replace
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import gguf
import numpy as np
from safetensors import safe_open

from pipelines.export import ExportError
from pipelines.export.modelfile import adds_bos

if TYPE_CHECKING:
    import torch

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
Q = gguf.GGMLQuantizationType
QUANTS = {  # name -> (file type recorded in the header, type of the 2-D weights)
    "f32": (gguf.LlamaFileType.ALL_F32, Q.F32),
    "f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
    "q4_0": (gguf.LlamaFileType.MOSTLY_Q4_0, Q.Q4_0),
}

# llama.cpp names a BPE pre-tokenizer (how text is split before merging) by hashing the ids a
# tokenizer gives this text; the hashes below are copied from its `get_vocab_base_pre` table.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫\ufe0f (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 "
    "?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? "
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? "
    "We'Ve a'lL"
)
PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 / 2 / 2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",  # GPT-4o
}


@dataclass
class _Tensor:
    name: str  # GGUF name, e.g. blk.0.attn_q.weight
    hf_name: str
    file: Path
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType


def write_gguf(model_dir: Path, out_file: Path, quant: str = "f16",
               on_progress: Callable[[int, int], None] | None = None, name: str | None = None) -> dict:
    """Convert `model_dir` to the single GGUF file `out_file`; nothing is left there on failure.
    name: the model's name in the file (general.name, which llama.cpp and LM Studio show); by default
    the folder's, which for a run's export was the job's scratch folder, 'merged-step'."""
    model_dir, out_file = Path(model_dir), Path(out_file)
    if quant not in QUANTS:
        raise ExportError(f"GGUF quantization '{quant}' is not supported; choose one of {', '.join(QUANTS)}")
    config = _read_config(model_dir)
    plan = _plan_tensors(model_dir, config, quant)
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    _add_hyperparameters(writer, name or model_dir.name, config, QUANTS[quant][0])
    _add_vocab(writer, model_dir, config)
    for t in plan:
        byte_shape = gguf.quant_shape_to_byte_shape(t.shape, t.qtype)
        writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=t.qtype)

    out_file.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out_file.name}.", suffix=".partial", dir=out_file.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        with ExitStack() as stack:
            files = {f: stack.enter_context(safe_open(f, framework="pt")) for f in {t.file for t in plan}}
            for done, t in enumerate(plan, start=1):
                writer.write_tensor_data(_convert(files[t.file].get_tensor(t.hf_name), t, config))
                if on_progress is not None:
                    on_progress(done, len(plan))
        writer.flush()
        os.fsync(writer.fout[0].fileno())  # on disk before the rename makes it visible
        writer.close()
        tmp.chmod(0o644)  # mkstemp makes it private; Ollama may run as another user
        os.replace(tmp, out_file)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return {"file": str(out_file), "quant": quant, "bytes": out_file.stat().st_size, "tensors": len(plan)}


def _read_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ExportError(f"{model_dir} has no config.json; expected a Hugging Face model folder")
    config = json.loads(path.read_text(encoding="utf-8"))
    arch = (config.get("architectures") or ["no architecture"])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ExportError(f"{path} names {arch}, but GGUF export supports only "
                          f"{' and '.join(SUPPORTED_ARCHITECTURES)} models for now")
    if config.get("sliding_window") is not None:
        raise ExportError(f"{path} sets a sliding attention window, which the llama GGUF layout "
                          "cannot express; only models with full attention can be exported")
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", "linear"):
        raise ExportError(f"{path} uses {rope.get('rope_type', rope.get('type'))} RoPE scaling; "
                          "GGUF export supports only plain or linear RoPE for now")
    # a key saved as null (as absent): the head count, as transformers reads it (the permutation crashed on None)
    config["num_key_value_heads"] = config.get("num_key_value_heads") or config["num_attention_heads"]
    return config


def _weight_files(model_dir: Path) -> list[Path]:
    """The weights files, in the order transformers looks for them (what chat and training load): the whole
    model.safetensors, else the shards its index names (a glob took a leftover whole file and the shards beside
    it, and failed on a tensor named twice)."""
    whole = model_dir / "model.safetensors"
    if whole.is_file():
        return [whole]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            parts = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError, TypeError):
            raise ExportError(f"{index} is not a readable shard index (no weight_map)") from None
        missing = [p for p in parts if not (model_dir / p).is_file()]
        if missing:
            raise ExportError(f"{model_dir} lacks {missing[0]}, which its {index.name} lists")
        return [model_dir / p for p in parts]
    return []


def _plan_tensors(model_dir: Path, config: dict, quant: str) -> list[_Tensor]:
    files = _weight_files(model_dir)
    if not files:
        raise ExportError(f"{model_dir} has no model.safetensors (or shard index) to export")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    plan = []
    for file in files:
        with safe_open(file, framework="pt") as weights:
            for hf_name in weights.keys():
                if hf_name.endswith("rotary_emb.inv_freq"):  # recomputed by every loader
                    continue
                if hf_name == "lm_head.weight" and config.get("tie_word_embeddings", False):
                    continue  # tied: llama.cpp reuses token_embd when output.weight is absent
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise ExportError(f"tensor {hf_name} in {file} has no place in the llama GGUF "
                                      "layout, so this is not a plain llama model")
                shape = tuple(weights.get_slice(hf_name).get_shape())
                plan.append(_Tensor(name, hf_name, file, shape, None))
    # the output matrix is output.weight, or token_embd when there is none (llama.cpp reuses it then: a model
    # with no lm_head is tied whatever its config's flag says, as llama-quantize's has_output decides)
    tied = not any(t.name == "output.weight" for t in plan)
    return [replace(t, qtype=_tensor_type(t.name, t.shape, quant, tied)) for t in plan]


def _tensor_type(name: str, shape: tuple[int, ...], quant: str, tied: bool) -> gguf.GGMLQuantizationType:
    # As in llama.cpp: 1-D tensors (norms, biases) stay F32; its kernels expect that.
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return Q.F32
    qtype = QUANTS[quant][1]
    output = name == "output.weight" or (name == "token_embd.weight" and tied)
    if qtype == Q.Q4_0 and output:
        # llama-quantize gives the output matrix more bits (Q6_K) because errors there hit every
        # logit; gguf-py cannot write Q6_K, so it gets Q8_0.
        qtype = Q.Q8_0
    # As in llama.cpp: a row that does not split into whole quantization blocks falls back to F16.
    if shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return Q.F16
    return qtype


def _convert(data: torch.Tensor, t: _Tensor, config: dict) -> np.ndarray:
    data = data.float()  # bf16 has no numpy type; gguf-py quantizes from f32
    n_head = config["num_attention_heads"]
    if t.hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        data = _permute(data, n_head)
    elif t.hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        data = _permute(data, config["num_key_value_heads"])
    return gguf.quants.quantize(data.numpy(), t.qtype)


def _permute(weights: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF stores each head's rotary pairs as two halves; llama.cpp wants them interleaved."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_hyperparameters(w: gguf.GGUFWriter, name: str, config: dict, ftype) -> None:
    n_head = config["num_attention_heads"]
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_rope_freq_base(config.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    if rope.get("rope_type", rope.get("type")) == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim"):
        w.add_key_length(config["head_dim"])
        w.add_value_length(config["head_dim"])
    w.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // n_head)
    w.add_vocab_size(config["vocab_size"])
    w.add_file_type(ftype)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _checked_tokenizer(model_dir: Path):
    """(tokenizer, llama.cpp's pre-tokenizer name), or ExportError for one this exporter cannot describe."""
    spec_path = model_dir / "tokenizer.json"
    spec = json.loads(spec_path.read_text(encoding="utf-8")) if spec_path.is_file() else {}
    kind = spec.get("model", {}).get("type")
    if kind != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        found = f"a {kind or 'non-BPE'} tokenizer.json" if spec else "no tokenizer.json"
        if not spec and (model_dir / "tokenizer.model").is_file():
            found = "only a SentencePiece tokenizer.model"
        raise ExportError(f"{model_dir} has {found}, but GGUF export supports only byte-level BPE "
                          "('gpt2'-type) tokenizers described by a tokenizer.json")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    digest = sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        raise ExportError(f"the tokenizer in {model_dir} splits text in a way this exporter does not "
                          f"know (check hash {digest[:16]}), so llama.cpp would tokenize it wrongly; "
                          f"known: {', '.join(sorted(set(PRE_TOKENIZERS.values())))}")
    return tokenizer, PRE_TOKENIZERS[digest]


def _add_vocab(w: gguf.GGUFWriter, model_dir: Path, config: dict) -> None:
    tokenizer, pre = _checked_tokenizer(model_dir)
    tokens, types = _tokens(tokenizer, config["vocab_size"], model_dir)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    # Merges, bos/eos/pad/unk ids and the chat template, read the way llama.cpp reads them.
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    # Whether to add BOS: what the tokenizer actually does beats guessing from its config (the Modelfile's
    # TEMPLATE leaves BOS out where this says the runner adds it)
    special.add_special_token["bos"] = adds_bos(tokenizer)
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(w, quiet=True)


def _tokens(tokenizer, vocab_size: int, model_dir: Path) -> tuple[list[str], list[int]]:
    """Every id's text and type, as `TextModel.get_vocab_base` decides them."""
    by_id = {i: text for text, i in tokenizer.get_vocab().items()}
    if max(by_id) >= vocab_size:
        raise ExportError(f"the tokenizer in {model_dir} has id {max(by_id)}, beyond the model's "
                          f"vocab_size of {vocab_size} in config.json")
    added, decoder = tokenizer.get_added_vocab(), tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:  # padding rows of the embedding: no token uses them
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        kind = gguf.TokenType.NORMAL
        if text in added:
            # llama.cpp matches added tokens verbatim, so store them the way the tokenizer writes them.
            if not decoder[i].normalized:
                text = tokenizer.decode(tokenizer.encode(text, add_special_tokens=False))
            if decoder[i].special or _looks_special(text):
                kind = gguf.TokenType.CONTROL
            else:
                text = text.replace("\u2581", " ")  # pre-normalized spaces, as llama.cpp does
                kind = gguf.TokenType.USER_DEFINED
        tokens.append(text)
        types.append(kind)
    return tokens, types


def _looks_special(text: str) -> bool:
    # Some models forget to mark control tokens special (llama.cpp's `does_token_look_special`).
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


def check_model(model_dir: Path) -> None:
    """Refuse at once (ExportError, one sentence) a model folder this exporter does not handle: its
    architecture or its tokenizer."""
    _read_config(Path(model_dir))
    _checked_tokenizer(Path(model_dir))
