"""Shared fixtures: a Studio on a temporary workspace, and a tiny random-weight llama that
uses the real SmolLM2 tokenizer (read from the embedded GGUF, so no download)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAQ = ROOT / "assets" / "samples" / "quillpad_faq.jsonl"

# Tests must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# `make test` runs the suite in one pytest process per core (pytest-xdist). Each takes its share of the
# cores for its math, and the processes it starts inherit that: left at torch's default (every core),
# two workers that both train wait on each other's threads, and the suite took longer than one worker
# (a two-core EPYC: 326 s against 293 s for test_jobs + test_export_jobs; one thread each: 203 s).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _WORKERS)))


# The studio keeps a process waiting with the training libraries imported for its next job
# (pipelines/standby.py), made ready whenever no job runs. In the suite nearly every one went unused:
# its test ended, or the next test set another environment, so it was killed after its imports (about
# 12 s of a core each). In 19 minutes of a full run on a two-core EPYC 34 were started and 3 used:
# 380 of the 2,320 CPU-seconds spent were imports thrown away. Off here; tests/test_standby.py turns
# it on for itself.
os.environ.setdefault("STUDIO_STANDBY", "0")

_SESSION = []
_PROBES = []


def pytest_sessionfinish(session, exitstatus):
    _SESSION.append(session)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """Leave with the tests' outcome once everything is reported, without the interpreter's teardown.
    PyTorch's profiler (the memory estimate, run in the studio server's threads) leaves a C++ thread
    that can abort that teardown after every test has passed: "terminate called without an active
    exception", exit code 134, in 1 run of 5 of test_browser_loop.py alone."""
    import sys

    if _PROBES:  # this process's probe folder
        import shutil

        shutil.rmtree(_PROBES[0], ignore_errors=True)
    if _SESSION:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(_SESSION[-1].exitstatus))


def pytest_configure(config):
    # probe results of this session only (subprocesses too): a session that finds every probe made by an
    # earlier one shows no measuring, and a test of the Method tab's progress would see none
    import tempfile

    from pipelines import probe_cache

    # each process its own (a worker sharing another's would find probes made by the other's tests), removed
    # when it ends (none was: /tmp gained a folder per process and run)
    _PROBES.append(tempfile.mkdtemp(prefix="probes-"))
    os.environ[probe_cache.ENV] = _PROBES[0]
    # Playwright's 5 s default is tight for a page on two cores that also train: the browser tests
    # wait up to 15 s for what they do not give a time of their own
    from playwright.sync_api import expect

    expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def real_tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    from pipelines.models import _gguf_path

    gguf = _gguf_path()
    out = tmp_path_factory.mktemp("tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


def _tiny(tmp_path_factory, tokenizer_dir, name: str, family: str, **sizes) -> Path:
    """A 2-layer model of this family (a transformers class name prefix) with random weights and the real
    SmolLM2 tokenizer, saved as a local Hugging Face folder."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = getattr(transformers, f"{family}Config")(
        vocab_size=sizes.pop("vocab_size", len(tokenizer)), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **sizes)
    out = tmp_path_factory.mktemp(name)
    getattr(transformers, f"{family}ForCausalLM")(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, real_tokenizer_dir) -> Path:
    """A 2-layer llama with random weights, saved as a local Hugging Face folder."""
    return _tiny(tmp_path_factory, real_tokenizer_dir, "tiny-llama", "Llama")


@pytest.fixture
def broken_model_dir(tiny_model_dir, tmp_path) -> Path:
    """A model folder whose config is fine and whose weights file is not safetensors: its run fails at load."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    return broken


@pytest.fixture(scope="session")
def short_context_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny llama told it reads 64 tokens at once (its weights are the same)."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("short-context")
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    return out


@pytest.fixture(scope="session")
def small_vocab_model_dir(tmp_path_factory, real_tokenizer_dir) -> Path:
    """The tiny llama with a 1,024-word output layer, for tests that only estimate (the Method tab): the
    49k-word layer is most of what a memory probe of the tiny model computes. Not for running on text:
    the tokenizer's ids go past its vocabulary."""
    return _tiny(tmp_path_factory, real_tokenizer_dir, "small-vocab-llama", "Llama", vocab_size=1024)


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory, real_tokenizer_dir) -> Path:
    """A 2-layer mixture-of-experts model (Qwen3-MoE: 8 experts, 2 per token) with random weights."""
    return _tiny(tmp_path_factory, real_tokenizer_dir, "tiny-moe", "Qwen3Moe", moe_intermediate_size=32, head_dim=16,
                 num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1)


@pytest.fixture(scope="session")
def peaky_model_dir(tmp_path_factory, real_tokenizer_dir) -> Path:
    """A tiny llama whose large random weights make its replies favour some tokens (the usual tiny
    model's replies are near-uniform over 49k tokens: no reward on a word could vary). For RL tests."""
    return _tiny(tmp_path_factory, real_tokenizer_dir, "peaky-llama", "Llama", initializer_range=1.0)


@pytest.fixture
def studio(tmp_path):
    from studio.core import Studio

    studio = Studio(tmp_path / "home")
    yield studio
    # a test that failed mid-run leaves its worker training: stop it, or it slows every later test
    for proc in studio._procs.values():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def tiny_params() -> dict:
    """Settings that make the tiny model learn visibly in a few seconds."""
    return {"learning_rate": 1e-2, "num_train_epochs": 2, "per_device_train_batch_size": 8,
            "max_length": 64, "r": 8, "lora_alpha": 16}


def greedy_tokens(model, input_ids, n: int) -> list[int]:
    """The n most likely next tokens, one full forward pass each (no cache): what greedy decoding
    means, as a reference for the chat decoder. (PEFT's prefix-tuning `generate` on transformers 5
    disagrees with its own forward pass, so `generate` cannot be the reference.)"""
    import torch

    seq, out = input_ids, []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[0, -1].argmax())
            out.append(token)
            seq = torch.cat([seq, torch.tensor([[token]])], dim=1)
    return out


def without_chat_template(model_dir: Path, out: Path) -> Path:
    """A copy of a model folder whose tokenizer has no chat template (a base model's)."""
    import json
    import shutil

    shutil.copytree(model_dir, out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out
