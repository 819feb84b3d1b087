"""The Studio object: workspace, catalogue, method catalogue and jobs, passed to whoever needs it.

There are no module-level mutable globals: tests build a Studio on a temporary folder.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from pipelines import data, models
from pipelines.events import ADAPTER, FINAL_STATUSES, JOB, LOG, run_state, write_json
from pipelines.methods import get_method, parse
from studio.store import Store

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT / "assets" / "samples"
# Bundled datasets a user can pick without uploading anything: name -> (file, kind, label)
SAMPLES = {
    "quillpad_faq": ("quillpad_faq.jsonl", "sft", "Quillpad support FAQ (120 Q&A, fictional product)"),
}


def default_home() -> Path:
    if os.environ.get("STUDIO_HOME"):
        return Path(os.environ["STUDIO_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "tune-studio"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _new_id(prefix: str) -> str:
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class Studio:
    def __init__(self, home: Path | str | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.model_cache = self.home / "models"
        self.datasets_dir = self.home / "datasets"
        self.runs_dir = self.home / "runs"
        for d in (self.model_cache, self.datasets_dir, self.runs_dir):
            d.mkdir(exist_ok=True)
        self.store = Store(self.home / "studio.db")
        self._procs: dict[str, subprocess.Popen] = {}  # workers this process started

    # models
    def resolve_model(self, spec: str) -> str:
        """A usable model path (converts the embedded default on first use)."""
        return models.resolve(spec, self.model_cache)

    # datasets
    def import_dataset(self, path: Path | str, name: str | None = None) -> dict:
        """Copy a JSONL file of SFT examples into the workspace; the same file twice is one dataset."""
        path = Path(path)
        sha = _sha256(path) if path.exists() else ""
        existing = self.store.find_dataset_by_hash(sha) if sha else None
        if existing:
            return existing
        rows = data.read_sft_jsonl(path)  # raises DataError before anything is written
        dataset_id = _new_id("d")
        parquet = data.write_dataset(rows, self.datasets_dir / dataset_id)
        self.store.add_dataset(
            id=dataset_id, name=name or path.stem, kind="sft", rows=len(rows),
            source_name=path.name, source_sha256=sha, path=str(parquet),
        )
        return self.store.get_dataset(dataset_id)

    def resolve_dataset(self, ref: str) -> dict:
        """A catalogue id, a bundled sample's name, or a file path -> catalogue row."""
        found = self.store.get_dataset(ref)
        if found:
            return found
        if ref in SAMPLES:
            filename, _kind, _label = SAMPLES[ref]
            return self.import_dataset(SAMPLES_DIR / filename, name=ref)
        if Path(ref).expanduser().is_file():
            return self.import_dataset(Path(ref).expanduser())
        raise data.DataError(
            f"dataset '{ref}' is not a catalogue id, a sample ({', '.join(SAMPLES)}) or an existing file"
        )

    # runs
    def start_run(self, *, model: str, dataset: str, method: str, params: dict | None = None,
                  parent_id: str | None = None) -> str:
        """Validate, write the run directory and catalogue row, and start the worker process."""
        spec = get_method(method)
        checked = parse(spec.params, params)  # ConfigError on a bad value, before anything is written
        if not models.is_default(model):
            models.resolve(model, self.model_cache)  # ModelError for a bad folder
        dataset_row = self.resolve_dataset(dataset)
        run_id = _new_id("r")
        run_dir = self.runs_dir / run_id
        run_dir.mkdir()
        job = {
            "id": run_id,
            "method": method,
            "model": model,
            "model_cache": str(self.model_cache),
            "dataset": {"id": dataset_row["id"], "name": dataset_row["name"], "path": dataset_row["path"]},
            "params": {k: getattr(checked, k) for k in checked.__dataclass_fields__},
            "parent_id": parent_id,
            "created": time.time(),
        }
        write_json(run_dir / JOB, job)
        self.store.add_run(id=run_id, method=method, model=model, dataset_id=dataset_row["id"],
                           status="queued", params=job["params"], parent_id=parent_id)
        self._spawn(run_id, run_dir)
        return run_id

    def _spawn(self, run_id: str, run_dir: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        with open(run_dir / LOG, "ab") as log:
            self._procs[run_id] = subprocess.Popen(
                [sys.executable, "-m", "pipelines.run", str(run_dir)],
                cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,  # its own session: survives the server
            )

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def adapter_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / ADAPTER

    def get_run(self, run_id: str) -> dict | None:
        """Catalogue row with the live state from the run directory (and the catalogue synced)."""
        row = self.store.get_run(run_id)
        if row is None:
            return None
        proc = self._procs.get(run_id)
        if proc is not None and proc.poll() is not None:
            self._procs.pop(run_id)  # reaped; status.json says how it ended
        state = run_state(self.run_dir(run_id))
        if row["status"] not in FINAL_STATUSES and (state["status"], state["error"]) != (row["status"], row["error"]):
            self.store.update_run_status(run_id, state["status"], state["error"])
            row.update(status=state["status"], error=state["error"])
        row.update(step=state["step"], max_steps=state["max_steps"], summary=state["summary"])
        return row

    def list_runs(self) -> list[dict]:
        return [self.get_run(r["id"]) for r in self.store.list_runs()]

    def wait(self, run_id: str, poll_s: float = 1.0, on_poll=None) -> dict:
        """Block until the run reaches a final status; `on_poll(row)` is called each time."""
        while True:
            row = self.get_run(run_id)
            if on_poll:
                on_poll(row)
            if row["status"] in FINAL_STATUSES:
                return row
            time.sleep(poll_s)
