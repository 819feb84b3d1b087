"""The candidate-generation job of a labeling project: two answers per prompt, written as they come.

`python -m pipelines.run DIR` calls `run()` for a job whose "runner" is this module. The job names
the prompts (each a conversation ending with the user's turn) and two sides, each a base model with
or without a run's adapter: two models answering, or one model answering twice (sampled). Answers
come from the Chat tab's decoder with the same settings, so what labelers judge is what chat shows.

Each finished prompt is one line of `candidates.jsonl` (both answers, and whether max_new_tokens cut
each one off); a resumed job skips the lines already there.
The studio turns the file into the project's items when the job has completed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipelines.chat import Decoder, GenerationSettings, ModelCache, TooLong

CANDIDATES = "candidates.jsonl"
AFTER_DISK_FULL = "resume answering (the answers so far are kept)"  # pipelines.run: said when the disk fills


def read_candidates(run_dir: Path) -> dict[int, dict]:
    """Finished prompts so far, by position. A last line with no newline yet is left out, even one
    whole: being written, or a killed job's, which drop_partial_line cuts before a resumed job reads
    what it has done (counted done and then cut, its prompt was never answered)."""
    path = Path(run_dir) / CANDIDATES
    found = {}
    if path.exists():
        for line in path.read_text().split("\n")[:-1]:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            found[row["position"]] = row
    return found


def drop_partial_line(path: Path) -> Path:
    """A job killed mid-write leaves half a line: cut it off, or the next answer appended would be
    glued onto it and both lost."""
    if path.exists():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[:data.rfind(b"\n") + 1])
    return path


def answer(cache: ModelCache, side: dict, prompt: list[dict], settings: GenerationSettings) -> tuple[str, bool]:
    """The answer, and whether max_new_tokens cut it off before the model ended it."""
    entry, adapter = cache.get(side["model"], side.get("adapter"))
    decoder = Decoder(entry, adapter, prompt, settings)
    while not decoder.done:
        decoder.step()
    return decoder.text().strip(), decoder.cut_off


def run(job: dict, run_dir: Path, events) -> dict:
    prompts, sides = job["prompts"], job["sides"]
    # both sides' models stay loaded for the whole job: with a budget under the two, each side's load evicted
    # the other's, and every prompt loaded both again
    cache = ModelCache(Path(job["model_cache"]), limit_bytes=2**62)
    done = read_candidates(run_dir)
    events.progress.update(step=len(done), max_steps=len(prompts))
    events.phase("answering the prompts")
    print(f"answering {len(prompts)} prompts ({len(done)} already done)", flush=True)
    path = drop_partial_line(Path(run_dir) / CANDIDATES)
    with open(path, "a") as out:
        for position, prompt in enumerate(prompts):
            if position in done:
                continue
            if events.cancel_requested():
                return {"cancelled": True, "answered": len(done)}
            answers = []
            for n, side in enumerate(sides):
                # a seed per prompt and side: the same job gives the same answers, and one model
                # sampled twice gives two different ones
                settings = GenerationSettings(temperature=job["temperature"], top_p=job.get("top_p", 0.9),
                                              max_new_tokens=job["max_new_tokens"],
                                              repetition_penalty=job.get("repetition_penalty", 1.1),
                                              seed=job.get("seed", 0) + 2 * position + n)
                try:
                    answers.append(answer(cache, side, prompt, settings))
                except TooLong as err:  # one prompt no model here can read: left out, the others answered
                    print(f"prompt {position + 1} left out: {err}", flush=True)
                    break
            # a cut-off answer is marked where labelers read it: its end is missing, not the model's choice
            row = ({"position": position, "answer_a": answers[0][0], "answer_b": answers[1][0],
                    "cut_a": answers[0][1], "cut_b": answers[1][1]} if len(answers) == len(sides) else
                   {"position": position, "too_long": True, "answer_a": "", "answer_b": ""})
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            done[position] = row
            events.progress.update(step=len(done))
            if "training_since" not in events.progress:  # the models are loaded: time per prompt from here
                events.progress.update(training_since=time.time(), first_step=len(done))
            events.metric({"step": len(done), "answered": len(done), "time": time.time()})  # (the table's wait)
    too_long = sum(bool(row.get("too_long")) for row in done.values())
    if done and too_long == len(done):  # (a project "ready" with nothing to label)
        raise TooLong(f"every prompt ({too_long}) is longer than the models read at once; shorten them")
    return {"answered": len(done) - too_long, "too_long": too_long}
