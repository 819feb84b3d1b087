"""Chat speed on the default model: first-token latency and generation throughput of the
studio's streaming decoder, against plain `model.generate` on the same loaded model.

Baselines, measured in the same run: `model.generate` (greedy, same prompt, same number of new
tokens) for throughput, and `model.generate` with a `TextIteratorStreamer` for the first token.
The target for the first token is 0.5 s. Prints the times and the ratios.

    python bench/chat_speed.py [--home DIR] [--tokens 128] [--repeats 3] [--model FOLDER]

On a GPU machine (no model hub there) pass a random-weight model folder of the shape to measure
(bench/gpu_models.py makes one); the studio chats there in bf16 on the GPU.
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


def ours(entry, tokens: int, adapter: str | None = None) -> tuple[float, float, int]:
    settings = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=tokens)
    start = time.perf_counter()
    decoder = Decoder(entry, adapter, PROMPT, settings)
    first = None
    for texts in stream([decoder]):
        if first is None and texts[0]:
            first = time.perf_counter() - start
    return first, time.perf_counter() - start, len(decoder.generated)


def plain(entry, tokens: int, min_tokens: int, model=None) -> tuple[float, float, int]:
    from transformers import TextIteratorStreamer

    tok, model = entry.tokenizer, model or entry.model
    start = time.perf_counter()
    inputs = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
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
    ap.add_argument("--model", default="default", help="'default' (built-in) or a local model folder")
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="chat-bench-"))
    cache = ModelCache(home / "models")
    entry, _ = cache.get(args.model)
    base_model = entry.model  # before any adapter is loaded onto it
    print(f"device: {base_model.device} ({base_model.dtype}); on a GPU machine the studio chats on the GPU")

    def compare(title, run_ours, run_plain):
        run_ours(8)  # warm-up: first forward passes allocate and pick kernels
        run_plain(8, 8)
        o, p = [], []
        for _ in range(args.repeats):
            o.append(run_ours(args.tokens))
            p.append(run_plain(args.tokens, o[-1][2]))  # the same number of new tokens
        first_o = statistics.median(x[0] for x in o)
        first_p = statistics.median(x[0] for x in p)
        tps_o = statistics.median(x[2] / x[1] for x in o)
        tps_p = statistics.median(x[2] / x[1] for x in p)
        print(f"{title}:")
        print(f"  first token: studio {first_o:.3f} s, model.generate+streamer {first_p:.3f} s "
              f"(target {FIRST_TOKEN_TARGET_S} s: {first_o / FIRST_TOKEN_TARGET_S:.2f} of the budget)")
        print(f"  throughput over {o[0][2]} new tokens: studio {tps_o:.1f} tokens/s, model.generate "
              f"{tps_p:.1f} tokens/s -> ratio {tps_o / tps_p:.2f}")

    compare("base model alone", lambda n: ours(entry, n), lambda n, m: plain(entry, n, m, base_model))

    # a LoRA adapter on the same copy (random weights: speed does not depend on them)
    from peft import LoraConfig, get_peft_model

    adapter_dir = home / "bench-adapter"
    # random but small (alpha 1): the reply stays long like the base's, so both decode 128 tokens
    import torch

    torch.manual_seed(0)
    get_peft_model(fresh_base(cache, args.model), LoraConfig(r=16, lora_alpha=1, target_modules="all-linear",
                                                 init_lora_weights=False)).save_pretrained(adapter_dir)
    plain_base = fresh_base(cache, args.model)
    entry, name = cache.get(args.model, adapter_dir)
    compare("tuned side (LoRA r16 all-linear on the shared copy) vs generate on the same PeftModel",
            lambda n: ours(entry, n, name), lambda n, m: plain(entry, n, m))
    compare("base side of the shared copy (adapter switched off each step) vs generate on the plain base",
            lambda n: ours(entry, n, None), lambda n, m: plain(entry, n, m, plain_base))

    # both sides at once, as the Chat tab runs them: when does each side show its first token?
    settings = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=args.tokens)
    firsts, totals = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        pair = [Decoder(entry, None, PROMPT, settings), Decoder(entry, name, PROMPT, settings)]
        first = [None, None]
        for texts in stream(pair):
            for i, text in enumerate(texts):
                if first[i] is None and text:
                    first[i] = time.perf_counter() - start
        firsts.append(max(first))
        totals.append(sum(len(d.generated) for d in pair) / (time.perf_counter() - start))
    print(f"both sides streaming together (base + tuned on one copy): both show a token after "
          f"{statistics.median(firsts):.3f} s ({statistics.median(firsts) / FIRST_TOKEN_TARGET_S:.2f} of the "
          f"budget); {statistics.median(totals):.1f} tokens/s over both sides")


def fresh_base(cache: ModelCache, spec: str):
    """Another copy of the base, untouched by adapters (PEFT injects its layers in place)."""
    from pipelines import models

    return models.load_for_inference(models.resolve(spec, cache.cache_dir))


if __name__ == "__main__":
    main()
