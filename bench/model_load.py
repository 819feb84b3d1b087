"""Loading the embedded default model: cached safetensors against the GGUF it ships as.

Baseline: transformers reading the GGUF directly (dequantizing every time), measured in the
same run. Prints both times and the speed-up of the studio's cached copy.

    python bench/model_load.py [--home DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home")
    args = ap.parse_args()
    cache = Path(args.home or tempfile.mkdtemp(prefix="load-bench-")) / "models"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = models._gguf_path()
    t0 = time.time()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_s = time.time() - t0

    t0 = time.time()
    path = models.prepare_default(cache)
    first_s = time.time() - t0

    t0 = time.time()
    models.load_tokenizer(str(path))
    models.load_model(str(path))
    cached_s = time.time() - t0

    print(f"GGUF load (baseline): {gguf_s:.1f} s")
    print(f"first start, convert to safetensors once: {first_s:.1f} s")
    print(f"cached load: {cached_s:.2f} s")
    print(f"cached vs GGUF (baseline): {gguf_s / cached_s:.0f}x faster")


if __name__ == "__main__":
    main()
