"""Chat speed on the default model: first-token latency and generation throughput of the
studio's streaming decoder, against plain `model.generate` on the same loaded model.

Baselines, measured in the same run: `model.generate` (greedy, same prompt, same number of new
tokens) for throughput, and `model.generate` with a `TextIteratorStreamer` for the first token.
The target for the first token is 0.5 s. Prints the times and the ratios.

    python bench/chat_speed.py [--home DIR] [--tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.chat import Decoder, GenerationSettings, ModelCache, stream  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse keeper and a storm."}]
FIRST_TOKEN_TARGET_S = 0.5


def ours(entry, tokens: int) -> tuple[float, float, int]:
    settings = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=tokens)
    start = time.perf_counter()
    decoder = Decoder(entry, None, PROMPT, settings)
    first = None
    for texts in stream([decoder]):
        if first is None and texts[0]:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start, len(decoder.generated)


def plain(entry, tokens: int, min_tokens: int) -> tuple[float, float, int]:
    from transformers import TextIteratorStreamer

    tok, model = entry.tokenizer, entry.model
    start = time.perf_counter()
    inputs = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    out = {}

    def run():
        out["ids"] = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=min_tokens, do_sample=False,
                                    repetition_penalty=1.0, streamer=streamer)

    thread = threading.Thread(target=run)
    thread.start()
    first = None
    for piece in streamer:
        if first is None and piece:
            first = time.perf_counter() - start
    thread.join()
    return first, time.perf_counter() - start, out["ids"].shape[1] - inputs["input_ids"].shape[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cache = ModelCache(Path(args.home or tempfile.mkdtemp(prefix="chat-bench-")) / "models")
    entry, _ = cache.get("default")
    ours(entry, 8)  # warm-up: first forward passes allocate and pick kernels
    plain(entry, 8, 8)
    o, p = [], []
    for _ in range(args.repeats):
        o.append(ours(entry, args.tokens))
        p.append(plain(entry, args.tokens, o[-1][2]))  # the same number of new tokens
    first_o = statistics.median(x[0] for x in o)
    first_p = statistics.median(x[0] for x in p)
    tps_o = statistics.median(x[2] / x[1] for x in o)
    tps_p = statistics.median(x[2] / x[1] for x in p)
    print(f"first token: studio {first_o:.3f} s, model.generate+streamer {first_p:.3f} s "
          f"(target {FIRST_TOKEN_TARGET_S} s: {first_o / FIRST_TOKEN_TARGET_S:.2f} of the budget)")
    print(f"throughput over {o[0][2]} new tokens: studio {tps_o:.1f} tokens/s, model.generate {tps_p:.1f} tokens/s "
          f"-> ratio {tps_o / tps_p:.2f}")


if __name__ == "__main__":
    main()
