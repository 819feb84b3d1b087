"""What the Export tab and `studio export` / `studio merge` ask of the studio: which models can be
exported or merged, starting those jobs (after every check that can be made at once), their state,
and the models they made, which the Train and Chat tabs offer like any other model.

A source is named the way the rest of the studio names models: 'default' (the built-in model),
'run:ID' (a completed run's result), 'export:ID' (a model an earlier export made) or a local folder.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time
import unicodedata
from pathlib import Path

from pipelines import models
from pipelines.events import CANCEL, FINAL_STATUSES, HEARTBEAT, HEARTBEAT_STALE_S, JOB, MODEL, read_json, write_json
from pipelines.export import ExportError
from pipelines.export.merge import why_unmergeable
from pipelines.export.model_merge import MERGE_METHODS
from pipelines.methods import METHODS

QUANTS = {
    "f16": "F16: full quality, 2 bytes per weight (the reference the others are compared with)",
    "q8_0": "Q8_0: 8-bit, about half the size of F16 with answers almost always the same",
    "q4_0": "Q4_0: 4-bit, about a quarter of F16; smallest and fastest, answers drift more",
    "f32": "F32: the weights exactly as trained, 4 bytes per weight (twice F16; for checking)",
}
FORMATS = ("merged", "gguf")


def safe_name(text: str) -> str:
    """A name usable as a file name and an Ollama model name (accented letters without their accents: 'évil'
    became 'vil'; no run of dots or dashes: '..' stood in one)."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return re.sub(r"[-.]{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", plain)).strip("-.").lower()[:60] or "model"


def _named(studio, name: str, typed: bool, shown_source: dict) -> str:
    """The export's name, one no other export has: Ollama keeps one model per name, and two exports of one name
    told people the same `ollama create` for both, the second replacing the first. A name made for the export
    gets -2, -3, ...; one typed is refused where another model's export has it (the same export again keeps it)."""
    taken = {row["name"]: row for row in list_exports(studio) if row["status"] not in ("failed", "cancelled")}
    if name not in taken:
        return name
    if typed:
        if taken[name]["source"] == shown_source:
            return name
        # (only GGUFs have Ollama models; a merged folder's name is how the model lists name it)
        both_gguf = shown_source.get("format") == "gguf" and taken[name]["source"].get("format") == "gguf"
        replaced = ": its Ollama model would be replaced" if both_gguf else ""
        raise ExportError(f"an export named '{name}' exists already ({taken[name]['id']}), of another model or in "
                          f"another format{replaced}; type another name")
    return next(f"{name[:56]}-{n}" for n in range(2, 10_000) if f"{name[:56]}-{n}" not in taken)


def source(studio, ref: str) -> tuple[dict, str]:
    """(job source {model, adapter, model_cache}, a readable name) for what the user named; refuses in
    one sentence what cannot be exported."""
    ref = str(ref).strip()
    cache = str(studio.model_cache)
    if ref.startswith("run:") or (ref.startswith("r") and studio.store.get_run(ref)):
        run_id = ref.removeprefix("run:")
        run = studio.get_run(run_id)
        if run is None:
            raise ExportError(f"no run with id '{run_id}' (see 'studio runs')")
        if run["status"] != "completed":
            raise ExportError(f"run {run_id} is {run['status']}; only a completed run's result can be exported")
        if studio.result_dir(run_id) is None:  # (removed by hand: "is completed; only a completed run's" said)
            raise ExportError(f"run {run_id} completed, but its result is no longer in {studio.run_dir(run_id)}; "
                              "train it again to export it")
        model, adapter = studio.tuned_model(run_id)
        method = METHODS.get(run["method"])
        why = why_unmergeable(adapter) if adapter is not None else None
        if why:  # said for the run's own method (a bottleneck run was told of virtual tokens)
            label = method.label if method else run["method"]
            raise ExportError(f"run {run_id} learned a {label} adapter, which cannot be merged into a model file: "
                              f"{why} (train a LoRA-family method to export)")
        dataset = studio.store.get_dataset(run["dataset_id"], deleted=True) if run["dataset_id"] else None
        name = f"{run['method']}-{dataset['name'] if dataset else 'run'}"
        model = model if models.is_default(model) else local_folder(studio, model)
        return {"model": model, "adapter": str(adapter) if adapter else None, "model_cache": cache}, name
    if ref.startswith("export:") or (ref.startswith("x") and studio.store.get_export(ref)):
        folder = model_folder(studio, ref.removeprefix("export:"))
        return {"model": str(folder), "adapter": None, "model_cache": cache}, studio.store.get_export(
            ref.removeprefix("export:"))["name"]
    resolved = ref if models.is_default(ref) else local_folder(studio, ref)
    # a hub id's downloaded copy is in a folder named by its commit: the model is named by its id's last part
    name = (models.DEFAULT_MODEL if models.is_default(ref) else
            Path(resolved).name if Path(ref).expanduser().is_dir() else ref.rstrip("/").split("/")[-1])
    return {"model": resolved, "adapter": None, "model_cache": cache}, name


def local_folder(studio, spec: str) -> str:
    """The folder a model is in on this machine: a checked local folder, or a hub id's downloaded
    copy. Export reads files, so a model that is only on the hub is refused."""
    try:
        resolved = models.resolve(spec, studio.model_cache)
    except models.ModelError as err:
        raise ExportError(str(err)) from None
    if Path(resolved).is_dir():
        return resolved
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(spec, local_files_only=True)
    except Exception:
        raise ExportError(f"model '{spec}' is not downloaded on this machine; export and merging read a "
                          "model's files, so use a local model folder, 'default', a run or an earlier export") from None


def model_folder(studio, export_id: str) -> Path:
    found = get_export(studio, export_id)
    if found is None:
        raise ExportError(f"no export with id '{export_id}' (see 'studio exports')")
    if found["kind"] == "gguf" or found["status"] != "completed":
        what = "a GGUF file" if found["kind"] == "gguf" else f"{found['status']}"
        raise ExportError(f"export {export_id} is {what}; only a completed merged model can be used here")
    return studio.run_dir(export_id) / MODEL


def _start(studio, kind: str, name: str, job: dict, shown_source: dict) -> str:
    from studio.core import _new_id  # as label_service does: core is the id's one maker

    for _ in range(5):  # an id taken the same second is drawn again (never another export's folder removed)
        export_id = _new_id("x")
        job_dir = studio.run_dir(export_id)
        try:
            job_dir.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as err:
            raise ExportError(f"the export's folder could not be made ({err.strerror or err}); nothing was "
                              "queued, try again once the machine has room") from None
    else:
        raise ExportError("no free id for the export after 5 tries; try again")
    now = time.time()
    try:
        write_json(job_dir / JOB, {"id": export_id, "runner": "pipelines.export.job", "kind": kind, "name": name,
                                   "created": now, "queued_at": now, "max_concurrent": studio.max_concurrent,
                                   **job})
        studio.store.add_export(id=export_id, name=name, kind=kind, source=shown_source)
        studio.spawn(export_id, job_dir)
    except BaseException as err:
        studio.store.delete_export(export_id)  # no catalogue row without its job
        shutil.rmtree(job_dir, ignore_errors=True)
        if isinstance(err, OSError):  # no memory to fork its process, no disk for its folder (a traceback before)
            raise ExportError(f"the export process could not be started ({err.strerror or err}); nothing was "
                              "queued, try again once the machine has room") from None
        raise
    return export_id


def start_export(studio, ref: str, fmt: str = "merged", quant: str = "q8_0", name: str | None = None,
                 system: str | None = None) -> str:
    """A job that writes `ref` as a merged model folder or a GGUF file (+ Modelfile)."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose {' or '.join(FORMATS)}")
    if fmt == "gguf" and quant not in QUANTS:
        raise ExportError(f"unknown GGUF type '{quant}'; choose one of {', '.join(QUANTS)}")
    src, default_name = source(studio, ref)
    if fmt == "gguf":
        _check_gguf(studio, src, system)
    job = {"source": src, "quant": quant, "system": system or None}
    shown = {"ref": ref, "format": fmt, **({"quant": quant} if fmt == "gguf" else {})}
    return _start(studio, fmt, _named(studio, safe_name(name or default_name), bool(name), shown), job, shown)


def _check_gguf(studio, src: dict, system: str | None) -> None:
    """Refuse now, not in a job minutes later, a model the GGUF writer does not handle (architecture,
    tokenizer) or a system prompt a Modelfile cannot hold."""
    from pipelines.export import gguf
    from pipelines.export.modelfile import check_system

    check_system(system)
    if models.is_default(src["model"]):
        return  # the built-in model is a llama with a known tokenizer
    gguf.check_model(Path(src["model"]))


def start_merge(studio, method: str, refs: list[str], base: str | None = None, weights: list[float] | None = None,
                t: float = 0.5, density: float = 0.5, name: str | None = None, seed: int = 0) -> str:
    """A job that merges models (mergekit); runs with adapters are merged into their base first."""
    from pipelines.export.model_merge import check, check_same_shape

    check(method, refs, base, weights, t, density)
    sources = [source(studio, ref)[0] for ref in refs]
    base_source = source(studio, base)[0] if base else None
    # shapes are read from each model's own config; an adapter's is its base's
    folders = [_config_folder(studio, s) for s in sources]
    base_folder = _config_folder(studio, base_source) if base_source else None
    check_same_shape([*folders, *([base_folder] if base_folder else [])])
    job = {"method": method, "models": sources, "base": base_source, "weights": weights, "t": t,
           "density": density, "seed": seed, "source": {}}
    shown = {"method": method, "models": refs, "base": base, "weights": weights, "t": t, "density": density}
    return _start(studio, "merge", _named(studio, safe_name(name or f"{method}-merge"), bool(name), shown), job, shown)


def _config_folder(studio, src: dict) -> str:
    if models.is_default(src["model"]):
        try:
            return studio.resolve_model(src["model"])
        except models.ModelError as err:
            raise ExportError(str(err)) from None
    return src["model"]


STEPS = ("merged-step", "inputs")  # full-size copies an export makes only as a step (pipelines/export/job.py)


def sweep(studio) -> list[str]:
    """What exports killed part-way (out of memory, kill -9: their own clean-up never ran) left: the copies made
    as a step, temporary folders and half-written files, and, of one that failed or was cancelled, whatever
    it finished, which would pass for a result. Exports still at work are left alone. Returns the paths removed."""
    removed = []
    for row in studio.store.list_exports():
        job_dir = studio.run_dir(row["id"])
        if not job_dir.is_dir():
            continue
        status = studio.job_state(row["id"], worker="export process")["status"]
        beat = read_json(job_dir / HEARTBEAT) or {}
        if status not in FINAL_STATUSES or time.time() - beat.get("time", 0) < HEARTBEAT_STALE_S:
            continue  # (a worker that beat lately is at work, whatever its process looks like from here)
        # the copies made as steps, and the temporary folders and files (".merged-step-…", ".model-…", ".x.partial")
        left = [job_dir / step for step in STEPS] + list(job_dir.glob(".*")) + list((job_dir / "gguf").glob(".*"))
        if status != "completed":
            left += [job_dir / "gguf", job_dir / MODEL]
        for path in left:
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
                else:
                    continue
            except OSError:  # left as it is: a start of the studio must not fail over it
                continue
            removed.append(str(path))
    return removed


def get_export(studio, export_id: str) -> dict | None:
    row = studio.store.get_export(export_id)
    if row is None:
        return None
    state = studio.job_state(export_id, worker="export process")
    if (state["status"], state["error"]) != (row["status"], row["error"]):
        studio.store.update_export_status(export_id, state["status"], state["error"])
    row.update({k: state[k] for k in ("status", "error", "step", "max_steps", "phase", "summary", "finished")})
    return row


def list_exports(studio) -> list[dict]:
    return [get_export(studio, row["id"]) for row in studio.store.list_exports()]


def cancel(studio, export_id: str) -> None:
    found = get_export(studio, export_id)
    if found is None:
        raise ExportError(f"no export with id '{export_id}' (see 'studio exports')")
    if found["status"] in FINAL_STATUSES:
        raise ExportError(f"export {export_id} is {found['status']}; only a queued or running export can be cancelled")
    (studio.run_dir(export_id) / CANCEL).touch()


def wait(studio, export_id: str, poll_s: float = 1.0, on_poll=None) -> dict:
    while True:
        found = get_export(studio, export_id)
        if on_poll:
            on_poll(found)
        if found["status"] in FINAL_STATUSES:
            return found
        time.sleep(poll_s)


DOWNLOAD_ROUTE = "/studio-download"  # where the server hands out a completed export's files (launch.Downloads)


def download_path(studio, export_id: str, name: str) -> Path | None:
    """The file `name` of a completed export, to hand out; None for anything else (another path, a
    running export, an unknown id)."""
    if not re.fullmatch(r"x[\w-]+", export_id or "") or "/" in name:
        return None
    found = get_export(studio, export_id)
    if found is None or found["status"] != "completed":
        return None
    return next((p for p in files(studio, export_id) if p.name == name), None)


def download_url(export_id: str, path: Path) -> str:
    """The link to one of an export's files, relative to the page (it works behind a path prefix too)."""
    from urllib.parse import quote

    return f"{DOWNLOAD_ROUTE.lstrip('/')}/{export_id}?file={quote(path.name)}"


def files(studio, export_id: str) -> list[Path]:
    """What a completed export made, for download: the GGUF and Modelfile, or the model folder's files."""
    job_dir = studio.run_dir(export_id)
    return [p for sub in ("gguf", MODEL) if (job_dir / sub).is_dir() for p in sorted((job_dir / sub).iterdir())
            if p.is_file()]


def ollama_command(studio, export_id: str) -> str | None:
    row = studio.store.get_export(export_id)
    folder = studio.run_dir(export_id) / "gguf"
    if row is None or not (folder / "Modelfile").exists():
        return None
    return f"cd {shlex.quote(str(folder))} && ollama create {row['name']} -f Modelfile && ollama run {row['name']}"


def model_choices(studio) -> list[tuple[str, str]]:
    """(label, model folder) for every completed export that made a model: usable as a base to train
    and as a side to chat with."""
    out = []
    for row in list_exports(studio):
        if row["kind"] != "gguf" and row["status"] == "completed" and (studio.run_dir(row["id"]) / MODEL).is_dir():
            # a merged export of the built-in model, a fully tuned run or an export merges nothing: it is a copy
            merged = (read_json(studio.run_dir(row["id"]) / JOB) or {}).get("source", {}).get("adapter")
            what = (("merged with its base" if merged else "a copy") if row["kind"] == "merged"
                    else f"{row['source'].get('method')} merge")
            out.append((f"Exported model: {row['name']} ({what}, {row['id']})", str(studio.run_dir(row["id"]) / MODEL)))
    return out


def sources(studio) -> list[tuple[str, str]]:
    """(label, ref) for everything that can be exported or merged: the built-in model, completed runs
    whose result holds weights (prompt-learning, bottleneck and ReFT adapters do not), and models made by earlier exports."""
    out = [("Built-in SmolLM2-135M-Instruct", "default")]
    datasets = studio.dataset_titles()
    for run in studio.model_runs():
        method = METHODS.get(run["method"])
        if method and method.beside_base:
            continue
        label = method.label if method else run["method"]
        out.append((f"Run {run['id']}: {label} on {datasets.get(run['dataset_id'], '?')}", f"run:{run['id']}"))
    for label, folder in model_choices(studio):
        out.append((label, f"export:{Path(folder).parent.name}"))
    return out
