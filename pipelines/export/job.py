"""The export job: `python -m pipelines.run DIR` calls `run()` for a job whose runner is this module.

Reads top to bottom like a training run: what to make (job["kind"]) -> the model folder it starts
from (merging an adapter first when the source is one) -> the file(s) -> a summary. Everything is
written under the job's own folder, each piece all or nothing:
- "merged": an adapter merged into its base, or a whole model copied -> DIR/model/
- "merge":  models merged with each other (mergekit)                  -> DIR/model/
- "gguf":   a GGUF file for llama.cpp and an Ollama Modelfile          -> DIR/gguf/
            (a run's adapter is merged into DIR/merged-step/ first, removed once the file is written)
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipelines import models
from pipelines.events import MODEL

GGUF_DIR = "gguf"


def run(job: dict, run_dir: Path, events) -> dict:
    run_dir = Path(run_dir)
    kind = job["kind"]
    started = time.time()
    adapters = [s for s in job.get("models", []) + [job.get("base") or {}] if s.get("adapter")]
    steps = {"merged": 1, "merge": 1 + len(adapters), "gguf": 2 if job["source"].get("adapter") else 1}[kind]
    done = 0

    def phase(text: str) -> None:
        events.phase(text)
        print(text, flush=True)

    def step_done() -> None:
        nonlocal done
        done += 1
        events.progress.update(step=done, max_steps=steps)
        events.beat()

    events.progress.update(step=0, max_steps=steps)
    summary: dict = {"kind": kind}
    folder = run_dir / MODEL
    if kind == "merge":
        from pipelines.export.model_merge import merge_models

        # runs with adapters take part as whole models: each merged into its base first
        inputs = run_dir / "inputs"
        folders = []
        for i, src in enumerate(job["models"] + ([job["base"]] if job.get("base") else [])):
            folders.append(str(_merged_folder(src, inputs / str(i), phase, events) if src.get("adapter")
                               else _resolved(src)))
            if src.get("adapter"):
                step_done()
        if events.cancel_requested():
            return {"cancelled": True}
        models_in, base = (folders[:-1], folders[-1]) if job.get("base") else (folders, None)
        phase(f"merging {len(models_in)} models ({job['method']})")
        if not folder.exists():
            summary.update(merge_models(job["method"], models_in, folder, base=base, weights=job.get("weights"),
                                        t=job.get("t", 0.5), density=job.get("density", 0.5),
                                        seed=job.get("seed", 0)))
        shutil.rmtree(inputs, ignore_errors=True)  # the merged inputs were only a step
        step_done()
    elif kind == "merged":
        folder = _merged_folder(job["source"], folder, phase, events)
        summary["folder"] = str(folder)
        step_done()
    elif job["source"].get("adapter"):  # GGUF of a run: merged first, only as a step
        folder = _merged_folder(job["source"], run_dir / "merged-step", phase, events)
        step_done()
    else:  # a model folder as it is (the base, a merged model, a fully tuned run)
        folder = _resolved(job["source"])
    if kind == "gguf":
        if events.cancel_requested():
            return {"cancelled": True}
        summary.update(_gguf(job, folder, run_dir / GGUF_DIR, phase, events))
        shutil.rmtree(run_dir / "merged-step", ignore_errors=True)
        step_done()
    summary["seconds"] = round(time.time() - started, 1)
    print(f"done in {summary['seconds']} s", flush=True)
    return summary


def _resolved(source: dict) -> Path:
    return Path(models.resolve(source["model"], Path(source["model_cache"])))


def _merged_folder(source: dict, out: Path, phase, events) -> Path:
    from pipelines.export.merge import copy_model, merge_adapter

    if out.exists():  # a resumed job: this part was finished before
        return out
    base = str(_resolved(source))
    if source.get("adapter"):
        merge_adapter(base, Path(source["adapter"]), out, on_progress=phase)
    else:
        phase("copying the model")
        copy_model(Path(base), out)
    return out


def _gguf(job: dict, folder: Path, out_dir: Path, phase, events) -> dict:
    from pipelines.export import gguf
    from pipelines.export.modelfile import write_modelfile

    quant = job.get("quant", "q8_0")
    name = f"{job.get('name') or 'model'}-{quant}.gguf"
    out_dir.mkdir(exist_ok=True)
    phase(f"writing {name}")

    def on_tensor(done: int, total: int) -> None:
        events.progress["phase"] = f"writing {name}: tensor {done} of {total}"

    written = gguf.write_gguf(folder, out_dir / name, quant=quant, on_progress=on_tensor)
    phase("writing the Ollama Modelfile")
    modelfile = write_modelfile(out_dir, name, models.load_tokenizer(str(folder)), system=job.get("system"))
    return {"gguf": str(out_dir / name), "gguf_bytes": written["bytes"], "quant": quant,
            "modelfile": str(modelfile)}
