"""The memory probes' results kept on disk (pipelines/estimates.py measures them): a restarted
studio shows the Method table at once instead of measuring some 46 methods again.

A result holds for one model architecture, method and probe settings, on one machine and with the
code and libraries that measured it: the key holds all of them, so a new version of PyTorch or of
this studio's methods measures again instead of reading a figure it no longer makes."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import lru_cache
from pathlib import Path

from pipelines import hardware

# Tests point this at a folder of their own: a session that finds every probe done shows no progress.
ENV = "STUDIO_PROBE_CACHE"


def cache_file() -> Path:
    folder = os.environ.get(ENV)
    return Path(folder) / "probes.json" if folder else hardware.measurements_file().with_name("probes.json")


@lru_cache(maxsize=1)
def _code() -> str:
    """What measures: this package's estimate, batching and method sources, and the libraries' versions."""
    import peft
    import torch
    import transformers
    import trl

    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted([here / "estimates.py", here / "packing.py", *(here / "methods").rglob("*.py")]):
        digest.update(path.relative_to(here).as_posix().encode() + b"\0" + path.read_bytes())
    versions = f"torch {torch.__version__} transformers {transformers.__version__} peft {peft.__version__} trl {trl.__version__}"
    return f"{versions} {digest.hexdigest()[:16]}"


def key(config, method_key: str, values: tuple, bf16: bool, sizes: tuple) -> str:
    """One probe's identity: the architecture (the config without its path and version stamps), the
    method and the settings it depends on, the processor and dtype, the probe lengths, the code."""
    arch = {k: v for k, v in config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    text = json.dumps([arch, method_key, [list(v) for v in values], bf16, list(sizes),
                       hardware._machine("cpu", bf16), _code()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _load() -> dict:
    try:
        kept = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def read(probe: str) -> tuple | None:
    found = _load().get(probe)
    if isinstance(found, list) and len(found) == 4 and all(isinstance(x, (int, float)) for x in found):
        return tuple(found)
    return None


def write(probe: str, fitted: tuple) -> None:
    """Add one result; written whole to a scratch file and renamed, so a reader never sees half of it
    (two studios writing at once may lose one result, measured again later; nothing else). One write at a
    time in a studio: two threads keeping other probes at once shared one scratch file, and each wrote the
    file as it read it plus its own result, so the last rename lost the other's."""
    path = cache_file()
    try:
        with _WRITING:
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(f".{path.name}.{os.getpid()}")
            scratch.write_text(json.dumps({**_load(), probe: list(fitted)}))
            os.replace(scratch, path)
    except OSError:
        pass  # a read-only home: measured again by the next studio, nothing else lost


_WRITING = threading.Lock()
