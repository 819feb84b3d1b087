"""Random-weight models of real shapes, for speed checks where no model hub is reachable (a lent GPU).

Throughput does not depend on the weights' values, only on the shape. Each folder gets the built-in
model's tokenizer and a config of the named shape:

    m135   the built-in SmolLM2-135M-Instruct's own config (30 layers, hidden 576)
    m1p7   SmolLM2-1.7B's shape (24 layers, hidden 2048, 32 heads, MLP 8192)
    tiny   2 layers, hidden 64 (only to check a script on a machine without a GPU)

    python bench/gpu_models.py SOURCE OUT [m135 m1p7 ...]

SOURCE is a folder with the built-in model's config.json and tokenizer files (no weights needed):
`bash bench/gpu_checks.sh pack` puts one in .whl/smollm2/.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

SHAPES = {
    "m135": {},
    "m1p7": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
             "num_attention_heads": 32, "num_key_value_heads": 32},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2},
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


def build(source: Path, out: Path, shape: str) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    for key, value in SHAPES[shape].items():
        setattr(config, key, value)
    if SHAPES[shape]:
        config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # a 1.7B init: seconds on a GPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    target = out / shape
    model.save_pretrained(target, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)
    params = sum(p.numel() for p in model.parameters())
    print(f"{shape}: {params / 1e6:.0f}M parameters -> {target}", flush=True)
    return target


def main() -> None:
    source, out, *shapes = sys.argv[1:]
    for shape in shapes or ["m135", "m1p7"]:
        build(Path(source), Path(out), shape)


if __name__ == "__main__":
    main()
