"""A chat answering while a run trains on the same CPU (the loop: vote in the Chat tab while a DPO run
trains): the chat's reply speed and the run's training time, with the chat writing its replies on the
cores the run leaves (pipelines/chat.stream, hardware.ThreadShare) against the baseline of the chat
keeping all its threads, measured in the same run. Both alone first, for scale.

The run is a DPO run on the bundled preference pairs (its own process, as the studio starts it; it
gives cores back to the chat either way: callbacks.ShareTheCpu). The chat is the studio's streaming
decoder on the built-in model, in this process, answering one prompt after another for as long as
the run trains.

    python bench/chat_beside_run.py [--tokens 64] [--epochs 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines import hardware  # noqa: E402
from pipelines.chat import Decoder, GenerationSettings, stream  # noqa: E402
from pipelines.events import HEARTBEAT, read_json, read_metrics  # noqa: E402
from studio.core import Studio  # noqa: E402

PROMPTS = ["Write a short story about a lighthouse keeper and a storm.",
           "Explain how a bicycle's gears work, step by step.",
           "What should I pack for a three-day hike in the mountains?"]


def chat_once(entry, tokens: int, n: int) -> float:
    """Tokens per second of one reply (at most `tokens` new tokens)."""
    settings = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=tokens)
    decoder = Decoder(entry, None, [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}], settings)
    start = time.perf_counter()
    for _texts in stream([decoder]):
        pass
    return len(decoder.generated) / (time.perf_counter() - start)


def training_seconds(studio, run_id: str) -> float:
    folder = studio.run_dir(run_id)
    return max(m["time"] for m in read_metrics(folder) if "time" in m) - read_json(folder / HEARTBEAT)["training_since"]


def run(studio, epochs: float, entry=None, tokens: int = 64) -> tuple[float, float, list[float]]:
    """(whole run s, its training s, the chat's tokens/s per reply while it ran)."""
    rates: list[float] = []
    done = threading.Event()

    def chatting():
        n = 0
        while not done.is_set():
            rates.append(chat_once(entry, tokens, n))
            n += 1

    chatter = threading.Thread(target=chatting) if entry is not None else None
    start = time.time()
    run_id = studio.start_run(model="default", dataset="quillpad_preferences", method="dpo",
                              params={"num_train_epochs": epochs})
    if chatter:
        chatter.start()
    row = studio.wait(run_id, poll_s=0.2)
    done.set()
    if chatter:
        chatter.join()
    assert row["status"] == "completed", row["error"]
    return row["finished"] - start, training_seconds(studio, run_id), rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    studio = Studio(Path(tempfile.mkdtemp(prefix="chat-beside-")))
    studio.resolve_model("default")
    entry, _ = studio.chat_models.get("default")
    chat_once(entry, 8, 0)  # warm-up
    alone = [chat_once(entry, args.tokens, n) for n in range(3)]
    print(f"device cpu, {hardware.usable_cores()} cores; DPO on the preference sample, {args.epochs:g} epoch; "
          f"chat replies of up to {args.tokens} tokens")
    whole, trained, _ = run(studio, args.epochs)
    print(f"{'':32} {'run s':>7} {'training s':>10} {'chat tok/s':>10}")
    print(f"{'chat alone':32} {'-':>7} {'-':>10} {statistics.median(alone):10.1f}")
    print(f"{'run alone':32} {whole:7.1f} {trained:10.1f} {'-':>10}")

    watch = hardware.ThreadShare.watch
    hardware.ThreadShare.watch = lambda self, look_s=0.0: False  # the baseline: the chat keeps its threads
    try:
        kept = run(studio, args.epochs, entry, args.tokens)
    finally:
        hardware.ThreadShare.watch = watch
    shared = run(studio, args.epochs, entry, args.tokens)
    for title, (w, t, rates) in (("both, chat keeps its threads", kept), ("both, chat shares (studio)", shared)):
        print(f"{title:32} {w:7.1f} {t:10.1f} {statistics.median(rates):10.1f}")
    print(f"chat shares / keeps its threads: chat {statistics.median(shared[2]) / statistics.median(kept[2]):.2f}x "
          f"tokens/s, run {kept[0] / shared[0]:.2f}x faster from Start to its result")


if __name__ == "__main__":
    main()
