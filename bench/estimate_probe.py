"""How well the memory probe's two-size extrapolation predicts a whole model's training pass.

The Method tab's estimate (pipelines/estimates.py) measures one and two blocks of the model at two
token counts and extrapolates to every block and the longest batch. This bench builds the whole
default model (all 30 blocks), measures one training pass of a batch of --tokens tokens the same
way (tensor bytes at the allocator), and prints it beside the extrapolation from probes at the
baseline token counts (32, 64: the studio's first choice) and at the current PROBE_TOKENS.

    python bench/estimate_probe.py [--tokens 500] [--only lora,badam,full]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines import estimates, hardware, models  # noqa: E402
from pipelines.methods import get_method, parse  # noqa: E402

GB = 1024**3
BASELINE = (32, 64)
METHODS = "lora,shira,badam,full,mam,unipelt"


def extrapolated(model_path: str, key: str, probe: tuple, layers: int, tokens: int, bf16: bool) -> float:
    estimates.PROBE_TOKENS = probe
    estimates.training_model.cache_clear()
    a, b, c, d = estimates.training_model(model_path, key, (), bf16)
    return a + b * layers + c * tokens + d * layers * tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=500, help="one batch's tokens (the sample FAQ's longest: 500)")
    ap.add_argument("--only", default=METHODS)
    args = ap.parse_args()
    model_path = str(models.resolve("default", Path(tempfile.gettempdir()) / "studio-bench-models"))
    layers = estimates._config(model_path).get_text_config().num_hidden_layers
    current, bf16 = estimates.PROBE_TOKENS, hardware.use_bf16()
    print(f"default model, all {layers} blocks, one training pass of {args.tokens} tokens: measured vs "
          f"extrapolated from probes at {BASELINE} (baseline) and {current} tokens")
    print(f"{'method':<10}{'measured GB':>12}{'baseline':>10}{'ratio':>7}{'current':>9}{'ratio':>7}")
    for key in args.only.split(","):
        method = get_method(key)
        model = estimates._probe_model(model_path, layers, method, parse(method.params, {}))
        measured = estimates._training_peak(model, args.tokens, bf16, method.padding_free, method.zeroth_order)
        del model
        old = extrapolated(model_path, key, BASELINE, layers, args.tokens, bf16)
        new = extrapolated(model_path, key, current, layers, args.tokens, bf16)
        print(f"{key:<10}{measured / GB:>12.3f}{old / GB:>10.3f}{old / measured:>7.2f}{new / GB:>9.3f}"
              f"{new / measured:>7.2f}", flush=True)
    estimates.PROBE_TOKENS = current


if __name__ == "__main__":
    main()
