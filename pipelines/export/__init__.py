"""Turning runs into models people can take anywhere: an adapter merged into its base
(`merge.py`), models merged with each other (`model_merge.py`, through mergekit), a GGUF file for
llama.cpp (`gguf.py`) and an Ollama Modelfile beside it (`modelfile.py`). `job.py` runs them as
background jobs like training runs."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pipelines.events import fsync_tree


class ExportError(ValueError):
    """An export that cannot be made; the message is one sentence."""

    one_sentence = True  # a failed job shows the message alone, without the class name


@contextmanager
def atomic_folder(target: Path):
    """Yield a temporary folder beside `target`; when the block succeeds it becomes `target` in one
    rename (after its files reach the disk), otherwise it is removed: a crash or an error never
    leaves a half-written model where a finished one is expected."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
