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

import contextlib
import json
import shutil
import time
from pathlib import Path

from pipelines import models
from pipelines.events import MODEL
from pipelines.export import Cancelled, ExportError

GGUF_DIR = "gguf"
AFTER_DISK_FULL = "export again (what was half written is removed)"  # pipelines.run: said when the disk fills


def run(job: dict, run_dir: Path, events) -> dict:
    """Make what the job asks for; intermediate merged copies never outlive the job."""
    run_dir = Path(run_dir)
    try:
        return _make(job, run_dir, events)
    except Cancelled:
        return {"cancelled": True}
    except KeyboardInterrupt:  # a cancel's interrupt (export.run_stoppable) that landed past its catch
        if events.cancel_requested():
            return {"cancelled": True}
        raise
    finally:
        for step in ("merged-step", "inputs"):  # full-size copies, only ever a step
            shutil.rmtree(run_dir / step, ignore_errors=True)


def _make(job: dict, run_dir: Path, events) -> dict:
    kind = job["kind"]
    started = time.time()
    adapters = {_key(s) for s in job.get("models", []) + [job.get("base") or {}] if s.get("adapter")}
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
        # each source once: a run named as the base and among the models is one folder, which the merge knows
        # for the base (merged into two folders, it counted as a tuned model with no change, and took half of
        # the other's change away)
        inputs = run_dir / "inputs"
        made: dict[str, str] = {}
        folders = []
        for src in job["models"] + ([job["base"]] if job.get("base") else []):
            if _key(src) not in made:
                made[_key(src)] = str(_merged_folder(src, inputs / str(len(made)), phase, events)
                                      if src.get("adapter") else _resolved(src))
                if src.get("adapter"):
                    step_done()
            folders.append(made[_key(src)])
        if events.cancel_requested():
            raise Cancelled
        models_in, base = (folders[:-1], folders[-1]) if job.get("base") else (folders, None)
        phase(f"merging {len(models_in)} models ({job['method']})")
        summary.update(merge_models(job["method"], models_in, folder, base=base, weights=job.get("weights"),
                                    t=job.get("t", 0.5), density=job.get("density", 0.5), seed=job.get("seed", 0),
                                    cancelled=events.cancel_requested))
        step_done()
    elif kind == "merged":
        folder = _merged_folder(job["source"], folder, phase, events)
        if events.cancel_requested():  # asked while merging: what was made is removed
            shutil.rmtree(folder, ignore_errors=True)
            raise Cancelled
        summary["folder"] = str(folder)
        step_done()
    elif job["source"].get("adapter"):  # GGUF of a run: merged first, only as a step
        folder = _merged_folder(job["source"], run_dir / "merged-step", phase, events)
        step_done()
    else:  # a model folder as it is (the base, a merged model, a fully tuned run)
        folder = _resolved(job["source"])
    if kind == "gguf":
        if events.cancel_requested():
            raise Cancelled
        summary.update(_gguf(job, folder, run_dir / GGUF_DIR, phase, events))
        step_done()
    summary["seconds"] = round(time.time() - started, 1)
    print(f"done in {summary['seconds']} s", flush=True)
    return summary


def _key(source: dict) -> str:
    return json.dumps(source, sort_keys=True)


def _resolved(source: dict) -> Path:
    return Path(models.resolve(source["model"], Path(source["model_cache"])))


def _merged_folder(source: dict, out: Path, phase, events) -> Path:
    from pipelines.export.merge import copy_model, merge_adapter

    base = str(_resolved(source))
    if source.get("adapter"):
        merge_adapter(base, Path(source["adapter"]), out, on_progress=phase, cancelled=events.cancel_requested)
    else:
        if events.cancel_requested():
            raise Cancelled
        phase("copying the model")
        copy_model(Path(base), out, cancelled=events.cancel_requested)
    return out


def _gguf(job: dict, folder: Path, out_dir: Path, phase, events) -> dict:
    from pipelines.export.modelfile import modelfile

    quant = job.get("quant", "q8_0")
    name = f"{job.get('name') or 'model'}-{quant}.gguf"
    # The Modelfile's text first: a chat template it cannot translate is known before minutes of writing,
    # and said in the note; the GGUF is written all the same (it carries the template for llama.cpp)
    tokenizer = models.load_tokenizer(str(folder))
    text, note = None, None
    if getattr(tokenizer, "chat_template", None):
        try:
            text = modelfile(name, tokenizer, system=job.get("system"))
        except ExportError as err:
            note = (f"no Modelfile: {err}; the GGUF carries the model's own chat template, which llama.cpp "
                    "reads")
    else:
        note = "no Modelfile: the model has no chat template (a base model); llama.cpp can still complete text"
    out_dir.mkdir(exist_ok=True)
    try:
        return _write_gguf(job, folder, out_dir, name, quant, text, note, phase, events)
    except BaseException:  # a GGUF without its Modelfile (the disk filled between them) is no finished export
        for path in out_dir.iterdir():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # (a folder that is a mount point stays, empty)
            out_dir.rmdir()
        raise


def _write_gguf(job: dict, folder: Path, out_dir: Path, name: str, quant: str, text, note, phase, events) -> dict:
    from pipelines.export import gguf
    from pipelines.export.modelfile import write_modelfile

    phase(f"writing {name}")

    def on_tensor(done: int, total: int) -> None:
        events.progress["phase"] = f"writing {name}: tensor {done} of {total}"
        if events.cancel_requested():
            raise Cancelled

    written = gguf.write_gguf(folder, out_dir / name, quant=quant, on_progress=on_tensor,
                              name=job.get("name") or None)
    summary = {"gguf": str(out_dir / name), "gguf_bytes": written["bytes"], "quant": quant}
    if text is not None:
        phase("writing the Ollama Modelfile")
        summary["modelfile"] = str(write_modelfile(out_dir, text))
    if note:
        print(note, flush=True)
        summary["note"] = note
    return summary
