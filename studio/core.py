"""The Studio object: workspace, catalogue, method catalogue and jobs, passed to whoever needs it.

There are no module-level mutable globals: tests build a Studio on a temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path

from pipelines import chat, data, importer, models, readers
from pipelines import rewards as reward_fns
from pipelines.events import (
    ACTIVE_STATUSES,
    ADAPTER,
    MODEL,
    CANCEL,
    FINAL_STATUSES,
    JOB,
    LOG,
    RESUMABLE_STATUSES,
    STATUS,
    WORKER,
    current_status,
    log_tail,
    newest_checkpoint,
    pid_alive,
    process_started,
    read_json,
    run_state,
    worker_gone,
    write_json,
)
from pipelines.devices import check as check_devices
from pipelines.devices import gpu_count, parse_devices
from pipelines.methods import METHODS, ConfigError, get_method, parse
from pipelines.methods import rl as rl_checks
from pipelines.standby import Standby
from studio.store import DatasetGone, Store

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT / "assets" / "samples"
# Bundled datasets a user can pick without uploading anything: name -> (file, kind, label)
SAMPLES = {
    "quillpad_faq": ("quillpad_faq.jsonl", "sft", "Quillpad support FAQ (120 Q&A, fictional product)"),
    "quillpad_preferences": ("quillpad_preferences.jsonl", "preference",
                             "Quillpad answer preferences (12 chosen/rejected pairs)"),
    "signoff_preferences": ("signoff_preferences.jsonl", "preference",
                            # the answers are the built-in model's own, wrong facts and all (assets/make_signoff.py):
                            # a newcomer read "Il Coriobella, Italy." as the answer the set prefers
                            "Sign-off preferences (40 pairs: the built-in model's own answers, preferred with a "
                            "sign-off line)"),
    "arithmetic_prompts": ("arithmetic_prompts.jsonl", "prompts",
                           "Arithmetic prompts for GRPO (51 sums, answer as one equation)"),
    # the questions of the sign-off pairs, for PPO or GRPO scored by a reward model trained on those pairs (the
    # RLHF route had no prompts on the page but the sums, whose checks need no reward model)
    "signoff_prompts": ("signoff_prompts.jsonl", "prompts",
                        "Sign-off prompts for RLHF (40 questions: score the replies with a reward model trained on "
                        "the sign-off pairs)"),
}


@lru_cache(maxsize=None)  # the bundled files ship with the studio; every dataset list and title asks
def _sample_sha256(name: str) -> str | None:
    path = SAMPLES_DIR / SAMPLES[name][0]
    return importer.sha256(path) if path.is_file() else None


def is_sample(row: dict) -> bool:
    """The row a bundled sample's name gives (Studio.resolve_dataset): its file, imported as it is. The
    same file imported with a held-out split, or a file of the user's under a sample's name, is theirs."""
    if row.get("name") not in SAMPLES:
        return False
    sha = _sample_sha256(row["name"])
    return (importer.same_options((row.get("meta") or {}).get("options"), importer.ImportOptions())
            and sha is not None and row.get("source_sha256") == sha)


def dataset_title(row: dict) -> str:
    """How pages name a dataset: a bundled sample by its title ('Quillpad support FAQ', as the Train
    tab offers it; its name 'quillpad_faq' is what a command line or config file gives), an imported
    one (a user's file under a sample's name too) by its name."""
    return SAMPLES[row["name"]][2].split(" (")[0] if is_sample(row) else row["name"]


class RunError(ValueError):
    """A run action that does not fit the run's state; the message is one sentence."""


class AlreadyStarted(RunError):
    """The same run asked for again moments after it started (a second click of Start): `run_id` is it."""

    def __init__(self, run_id: str):
        super().__init__(f"run {run_id} with these exact settings started moments ago")
        self.run_id = run_id


def default_home() -> Path:
    if os.environ.get("STUDIO_HOME"):
        return Path(os.path.abspath(Path(os.environ["STUDIO_HOME"]).expanduser()))
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(os.path.abspath(Path(base) / "tune-studio"))


def _scores(run: dict) -> bool:
    """A reward-model run: its result scores replies instead of writing them."""
    return run["method"] in METHODS and METHODS[run["method"]].reward_model


# what each kind of dataset holds, in a sentence's words
KIND_WORDS = {"sft": "examples of good replies", "preference": "preference pairs (a better and a worse reply)",
              "kto": "replies marked good or bad (a true/false `label` column)",
              "prompts": "prompts (questions to answer, with what checks the replies)"}


def _new_id(prefix: str) -> str:
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


# the next job's process, waiting with the training libraries imported (pipelines/standby.py);
# one per server process, whichever workspace (Studio) starts the job
STANDBY = Standby([sys.executable, "-m", "pipelines.standby"], PROJECT_ROOT)


def worker_env() -> dict:
    """The environment a job's process runs with."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    # pytest names the test running in its own process: a new value every test, nothing to a job
    # (it would keep the waiting process from being used by the next test's first run)
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


NEVER_STARTED_S = 300  # a queued job whose worker wrote nothing in this long never started (its worker reports in seconds)

# what to do once a job's worker was killed, by the job's kind (a run and a project's answers go on from what they kept)
AFTER_KILL = {"training process": "resume it to continue from its newest checkpoint",
              "answering process": "resume answering to go on from the prompts already answered"}


def after_kill(worker: str, job_dir: Path) -> str:
    """What to do once a job's worker was killed: a run that saved no checkpoint yet starts over (it was told
    it would continue from one, and its curves were cleared at step 0)."""
    if worker == "training process" and newest_checkpoint(job_dir) is None:
        return "resume it to start again from step 0 (it had saved no checkpoint yet)"
    return AFTER_KILL.get(worker, "start it again")


class Studio:
    def __init__(self, home: Path | str | None = None, max_concurrent: int | None = None,
                 max_upload_bytes: int | None = None, standby: bool | None = None):
        # absolute: a job's worker runs in the project's folder, and the catalogue keeps dataset paths
        # (absolute, its links kept: a page's kept settings are sealed with this path, runs are found under it)
        self.home = Path(os.path.abspath(Path(home).expanduser())) if home else default_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.model_cache = self.home / "models"
        self.datasets_dir = self.home / "datasets"
        self.runs_dir = self.home / "runs"
        for d in (self.model_cache, self.datasets_dir, self.runs_dir):
            d.mkdir(exist_ok=True)
        self.store = Store(self.home / "studio.db")
        importer.remove_stale_imports(self.datasets_dir)  # imports killed part-way leave folders behind
        from studio import dataset_service

        dataset_service.sweep(self)  # and so do deletions
        # How many runs train at once; the rest wait in the queue (STUDIO_MAX_RUNS, default 1).
        self.max_concurrent = max_concurrent or int(os.environ.get("STUDIO_MAX_RUNS", "1"))
        # Uploads larger than this are refused before they are read (STUDIO_MAX_UPLOAD_MB, default 1 GB).
        mb = os.environ.get("STUDIO_MAX_UPLOAD_MB")
        self.max_upload_bytes = max_upload_bytes or (int(float(mb) * 1e6) if mb else readers.DEFAULT_MAX_BYTES)
        self._procs: dict[str, subprocess.Popen] = {}
        self._reaping = threading.Lock()
        # one start (a twin check and the new run's row), resume or dataset deletion at a time
        self.starting = threading.Lock()
        # Keep a process ready for the next job (a server, the tests); a one-off command does not.
        # STUDIO_STANDBY=0: never (it holds the libraries in memory, ~0.5 GB, while it waits).
        self.standby = standby is not False and os.environ.get("STUDIO_STANDBY", "1") != "0"
        # a dataset named by a file on this machine is imported (the command line's `--dataset my.csv`); the
        # server turns it off: a page's request naming a path imported any file the server could read into
        # the catalogue, where every browser sees its rows
        self.file_paths = True
        self._tokenizers: dict[str, object] = {}
        self.length_cache: dict[tuple, object] = {}  # (model, dataset file) -> tokens of each row's sequences; splits, prompt groups
        # Models loaded for chat; least recently used leave first (STUDIO_CHAT_CACHE_MB, default 8 GB).
        cache_mb = os.environ.get("STUDIO_CHAT_CACHE_MB")
        self.reward_scorers: dict = {}  # the reward model the Chat tab scores replies with: {run id: (model, tok)}
        self.chat_models = chat.ModelCache(self.model_cache, int(float(cache_mb) * 1e6) if cache_mb
                                           else chat.DEFAULT_CACHE_BYTES)  # workers this process started
        from studio import export_service

        export_service.sweep(self)  # exports killed part-way leave full-size copies behind

    # models
    def resolve_model(self, spec: str) -> str:
        """A usable model path (converts the embedded default on first use)."""
        return models.resolve(spec, self.model_cache)

    def tokenizer(self, spec: str):
        """The model's tokenizer, kept for the next question (the Data tab asks often)."""
        key = str(self.resolve_model(spec))
        if key not in self._tokenizers:
            models.check_available(spec, self.model_cache)  # a hub id with no network: at once, not after retries
            try:
                self._tokenizers[key] = models.load_tokenizer(key)
            except (OSError, ValueError) as err:  # a folder with weights and no tokenizer files: one sentence
                if isinstance(err, models.ModelError):
                    raise
                first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
                raise models.ModelError(f"the tokenizer of '{spec}' cannot be loaded ({first[:200]})") from None
        return self._tokenizers[key]

    # datasets
    def import_dataset(self, path: Path | str, name: str | None = None,
                       options: importer.ImportOptions | None = None, source_name: str | None = None,
                       progress=None, made_here: bool = False) -> dict:
        """Convert a file into the workspace and the catalogue; the same file with the same options
        twice is one dataset. Raises DataError (one sentence) with nothing written. `made_here`: a file
        the studio wrote itself (judged pairs, a label or vote export), held to no upload limit (many
        long answers, or a dataset near the limit with the judge's numbers added, were refused)."""
        path = Path(path)
        options = options or importer.ImportOptions()
        shown = source_name or path.name  # an upload's temp file still answers to the user's name
        max_bytes = max(self.max_upload_bytes, path.stat().st_size) if made_here else self.max_upload_bytes
        readers.check_file(path, max_bytes)  # size limit before anything is read
        sha = importer.sha256(path)
        name = (name or "").strip() or None  # (a name of spaces was kept as it was typed)
        for existing in self.store.find_datasets_by_hash(sha):
            if importer.same_options(existing["meta"].get("options"), options):
                return {**existing, "imported_before": True}  # (said: "Imported v1" of a file typed as v2)
        dataset_id = _new_id("d")
        dest = self.datasets_dir / dataset_id
        try:
            # a file whose first rows cannot be read is refused with the sentence its first look gave
            # (the import checks the columns first, and blamed them instead of the broken row)
            importer.inspect(path, options, max_bytes)
            meta = importer.import_file(path, dest, options, max_bytes, source_sha256=sha, progress=progress)
        except data.DataError as err:  # (named as the user knows the file; still one row's, where it was)
            said = data.DataError(str(err).replace(path.name, shown, 1))
            said.skippable = getattr(err, "skippable", False)
            raise said from None
        meta["source_name"] = shown
        meta["skipped"] = [said.replace(path.name, shown, 1) for said in meta.get("skipped", [])]
        if made_here:  # the studio's own bookkeeping (a judge's numbers per pair, kept in its job's file) is not
            # a column of the user's that the import dropped: "ignored columns: judge_p, human_agrees, …" was said
            meta.update(ignored_columns=[], ignored_count=0)
        try:
            self.store.add_dataset(
                id=dataset_id, name=self._free_name(name or Path(shown).stem), kind=meta["kind"], rows=meta["rows"],
                source_name=shown, source_sha256=sha, path=str(dest / importer.DATA), meta=meta,
            )
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)  # never a folder without its catalogue row
            raise
        return self.store.get_dataset(dataset_id)

    def _free_name(self, name: str) -> str:
        """`name`, or 'name (2)', 'name (3)', ... where a dataset has it: two files both called train.jsonl were
        two datasets named 'train' that the lists could not tell apart. A sample's name stays (a bundled sample
        is known by it: is_sample)."""
        if name in SAMPLES:
            return name
        taken = {d["name"] for d in self.store.list_datasets()}
        free, n = name, 2
        while free in taken:
            free, n = f"{name} ({n})", n + 1
        return free

    def resolve_dataset(self, ref: str) -> dict:
        """A catalogue id, a bundled sample's name, or a file path -> catalogue row."""
        found = self.store.get_dataset(ref)
        if found:
            return found
        if ref in SAMPLES:
            filename, _kind, _label = SAMPLES[ref]
            return self.import_dataset(SAMPLES_DIR / filename, name=ref)
        if self.file_paths and Path(ref).expanduser().is_file():
            return self.import_dataset(Path(ref).expanduser())
        from pipelines.methods.params import did_you_mean

        gone = self.store.get_dataset(ref, deleted=True)
        if gone:  # a run's dataset (Continue training, a saved config) deleted since
            raise data.DataError(f"dataset '{dataset_title(gone)}' ({ref}) was deleted; import it again "
                                 "or pick another dataset")
        known = [*SAMPLES, *(row["id"] for row in self.store.list_datasets())]
        raise data.DataError(
            f"dataset '{ref}' is not a catalogue id, a sample ({', '.join(SAMPLES)})"
            + (" or an existing file" if self.file_paths else " (import a file on the Data tab)")
            + did_you_mean(ref, known)
        )

    def list_datasets(self) -> list[dict]:
        return self.store.list_datasets()

    def dataset_titles(self) -> dict[str, str]:
        """Dataset id -> how pages name it (dataset_title); a deleted one too, said so (its runs name it)."""
        return {d["id"]: dataset_title(d) + (" (dataset deleted)" if d["deleted"] else "")
                for d in self.store.list_datasets(deleted=True)}

    # runs
    def start_run(self, *, model: str, dataset: str, method: str, params: dict | None = None,
                  parent_id: str | None = None, init_adapter: str | None = None,
                  rewards: list | None = None, devices: dict | None = None, twin_within_s: float = 0) -> str:
        """Validate, write the run directory and catalogue row, and start the worker process.
        `rewards`: the reward functions of a reinforcement-learning method (pipelines/rewards.py);
        `devices`: how many processes and how they split the work (pipelines/devices.py);
        `twin_within_s`: AlreadyStarted when a run of the same settings started that recently and has not
        ended (the page's Start clicked twice 0.2 s apart started two identical runs)."""
        spec = get_method(method)
        checked = parse(spec.params, params)  # ConfigError on a bad value, before anything is written
        if not dataset:  # a method whose kind of data was never imported: the page's list is empty
            raise data.DataError(f"no dataset is picked: {spec.label} trains on {KIND_WORDS[spec.data_kind]}; "
                                 "import some on the Data tab")
        launch = parse_devices(devices)
        check_devices(launch, spec, gpu_count())
        if spec.validate:
            spec.validate(checked)
        if spec.rewards:
            reward_list = reward_fns.parse_list(rewards)
            for entry in reward_list:  # a reward model scoring the replies must be a finished one
                if entry["name"] == "reward_model":
                    self.reward_model(entry["run"].strip())
        elif rewards:
            raise ConfigError(f"{spec.label} learns from examples, not from reward functions; 'rewards' is only "
                              "for reinforcement learning (GRPO)")
        if hasattr(checked, "optim"):  # an optimizer this machine cannot run is refused now, not mid-run
            from pipelines.hardware import has_cuda
            from pipelines.methods.qlora import resolve_optim

            resolve_optim(checked.optim, has_cuda())
        start = model
        if model.startswith("run:"):  # a finished run's result is the starting point
            model, init_adapter, parent_id = self.start_point(model.removeprefix("run:"), spec)
        models.check_available(model, self.model_cache)  # ModelError now, not a failed run a minute later
        if not models.is_default(model) and Path(model).expanduser().is_dir():
            # a folder named from where the command was typed: the worker runs in the project's folder
            model = os.path.abspath(Path(model).expanduser())
        if spec.check_model:  # a model the method cannot train (ESFT: one without experts)
            self._check_model(spec, model)
        dataset_row = self.resolve_dataset(dataset)
        accepted = ("sft", "text") if spec.data_kind == "sft" else (spec.data_kind,)
        if dataset_row["kind"] not in accepted:
            hint = {"sft": "an example (SFT) method such as LoRA", "text": "an example (SFT) method such as LoRA",
                    "preference": "a preference method such as DPO", "kto": "KTO",
                    "prompts": "a reinforcement-learning method (GRPO)"}[dataset_row["kind"]]
            raise data.DataError(f"dataset '{dataset_row['name']}' holds {dataset_row['kind']} data; "
                                 f"{spec.label} trains on {' or '.join(accepted)} data, so pick {hint} "
                                 "or another dataset")
        if spec.rewards:  # every row has what the rewards compare with; prompt + reply fit the model
            rl_checks.check(spec, checked, reward_list, dataset_row, self.resolve_model(model))
        heldout = Path(dataset_row["path"]).with_name(importer.HELDOUT)
        with self.starting:
            return self._start(spec, checked, start, model, dataset_row, heldout, launch, parent_id, init_adapter,
                               reward_list if spec.rewards else None, twin_within_s)

    def _start(self, spec, checked, start, model, dataset_row, heldout, launch, parent_id, init_adapter,
               reward_list, twin_within_s) -> str:
        method = spec.key
        params = {k: getattr(checked, k) for k in checked.__dataclass_fields__}
        row_params = {**params, **({"rewards": [reward_fns.describe_entry(e) for e in reward_list]}
                                   if spec.rewards else {})}  # the runs table compares rewards too
        if twin_within_s:
            key = self._twin_key(method, model, dataset_row["id"], parent_id, row_params, launch, init_adapter)
            recent = time.time() - twin_within_s
            twin = next((r for r in self._unended_twins(key) if r["created"] >= recent), None)
            if twin:
                raise AlreadyStarted(twin["id"])
        run_id = _new_id("r")
        run_dir = self.runs_dir / run_id
        run_dir.mkdir()
        now = time.time()
        job = {
            "id": run_id,
            "method": method,
            "model": model,
            "model_cache": str(self.model_cache),
            "dataset": {"id": dataset_row["id"], "name": dataset_row["name"], "path": dataset_row["path"],
                        "heldout_path": str(heldout) if heldout.exists() else None},
            "params": params,
            **({"rewards": reward_list} if spec.rewards else {}),
            "devices": asdict(launch),
            "parent_id": parent_id,
            "init_adapter": init_adapter,
            "start": start,  # what the user picked: a model, or run:ID
            "max_concurrent": self.max_concurrent,
            "created": now,
            "queued_at": now,
        }
        write_json(run_dir / JOB, job)
        try:
            self.store.add_run(id=run_id, method=method, model=model, dataset_id=dataset_row["id"],
                               status="queued", parent_id=parent_id, params=row_params)
        except DatasetGone:  # deleted (here, or by another process) while this start was checking it
            shutil.rmtree(run_dir, ignore_errors=True)
            raise data.DataError(f"dataset '{dataset_title(dataset_row)}' was deleted; import it again "
                                 "or pick another dataset") from None
        try:
            self.spawn(run_id, run_dir)
        except OSError as err:  # no memory to fork, no process slots: it stayed "queued" for good, its dataset
            self.store.delete_run(run_id)  # held, Cancel and Resume refused
            shutil.rmtree(run_dir, ignore_errors=True)
            raise RunError(f"the training process could not be started ({err.strerror or err}); nothing was "
                           "queued, start it again once the machine has room") from None
        return run_id

    @staticmethod
    def _twin_key(method, model, dataset_id, parent_id, row_params, launch, init_adapter) -> tuple:
        """What makes two runs the same run: settings, devices and starting point (as stored: JSON)."""
        plain = json.loads(json.dumps({"params": row_params, "devices": asdict(launch),
                                       "init_adapter": init_adapter}))
        return method, model, dataset_id, parent_id, plain["params"], plain["devices"], plain["init_adapter"]

    def _unended_twins(self, key: tuple) -> list[dict]:
        """The catalogue's runs with these settings (_twin_key) that wait or train, not being cancelled, newest
        first, each as get_run gives it (its status read now)."""
        found = []
        for r in self.store.list_runs():
            if (r["method"], r["model"], r["dataset_id"], r["parent_id"], r["params"]) != key[:5]:
                continue
            job = read_json(self.run_dir(r["id"]) / JOB) or {}
            if (job.get("devices"), job.get("init_adapter")) == key[5:]:
                now = self.get_run(r["id"])
                if now and now["status"] in ("queued", "running") and not now.get("cancelling"):  # (its Cancel
                    # pressed, it is on its way out: Start again is the run that takes its place)
                    found.append(now)
        return found

    def same_settings_running(self, run_id: str) -> list[dict]:
        """Other runs with run_id's very settings that still wait or train (get_run's rows): a Start pressed
        again after the de-dup window (start_run's twin_within_s) queued a second identical run without a word."""
        row, job = self._require_run(run_id), read_json(self.run_dir(run_id) / JOB) or {}
        key = (row["method"], row["model"], row["dataset_id"], row["parent_id"], row["params"],
               job.get("devices"), job.get("init_adapter"))
        return [r for r in self._unended_twins(key) if r["id"] != run_id]

    def _check_model(self, spec, model: str) -> None:
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.resolve_model(model))
        except (OSError, ValueError) as err:
            raise models.ModelError(f"could not read the configuration of model '{model}': {err}") from None
        spec.check_model(config)

    def start_point(self, parent_id: str, spec) -> tuple[str, str | None, str]:
        """(base model, adapter to keep training or None, parent id) for a run started from a
        finished run. A whole model (full/freeze) becomes the base; an adapter keeps training."""
        parent = self._require_run(parent_id)
        if parent["status"] != "completed" or self.result_dir(parent_id) is None:
            raise RunError(f"run {parent_id} is {parent['status']}; only a completed run's result can be a "
                           "starting point")
        model, adapter = self.tuned_model(parent_id)
        if adapter is None:
            return model, None, parent_id
        if spec.reward_model:  # its score head goes on a whole model: a chat adapter has no place under it
            raise RunError(f"run {parent_id} learned a {get_method(parent['method']).label} adapter, and a reward "
                           "model puts its score head on whole weights; start it from the base model or a Full or "
                           "Freeze run, or export this run merged (Export tab) and start from that folder")
        if chat.is_prompt_learning(adapter):
            raise RunError(f"run {parent_id} learned a {get_method(parent['method']).label} adapter (virtual "
                           f"tokens), which {spec.label} cannot keep training; start from the base model or "
                           "from a run with a LoRA-family adapter")
        parent_method = METHODS.get(parent["method"])
        if spec.trainable is not None and parent_method is not None and not parent_method.mergeable:
            raise RunError(f"run {parent_id} learned a {parent_method.label} adapter, which cannot be folded into "
                           f"the weights that {spec.label} trains; start from the base model, or use the LoRA "
                           "version of the method, which keeps training the adapter")
        if spec.reference and parent["method"] == "adalora":
            raise RunError(f"run {parent_id} learned an AdaLoRA adapter, whose rank budget allows no frozen "
                           f"copy beside it for {spec.label} to compare against; start from the base model, or "
                           "use ORPO, SimPO or CPO, which need no reference")
        if spec.data_kind == "sft" and parent["method"] != spec.key:
            raise RunError(f"run {parent_id} learned a {get_method(parent['method']).label} adapter; "
                           f"{spec.label} cannot continue it (use the same method, or a preference method)")
        return model, str(adapter), parent_id

    def spawn(self, run_id: str, run_dir: Path) -> None:
        """Start the worker process for a job directory (a run, or another long task such as
        generating answers to label); it waits its turn in the one queue. The waiting process that
        has the libraries imported takes it when there is one; the next one is made ready once no
        job is queued or running."""
        env = worker_env()
        self.free_gpu_memory()
        # a job that has to wait its turn gets a fresh process, which holds little while it waits (the
        # waiting one holds the libraries, ~0.5 GB, and would hold them for as long)
        others = sum(r["status"] in ACTIVE_STATUSES and r["id"] != run_id for r in self.store.list_runs())
        proc = STANDBY.take(run_dir, env) if others < self.max_concurrent else None
        if proc is None:
            with open(run_dir / LOG, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pipelines.run", str(run_dir)],
                    cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, start_new_session=True,  # its own session: survives the server
                )
        self._procs[run_id] = proc
        # for a later look from another process (`studio runs` after `studio train` has exited): a worker that
        # ends before it reports is known at once, not only after NEVER_STARTED_S
        with contextlib.suppress(OSError):  # (a hint only: the worker is started, whatever becomes of it)
            write_json(run_dir / WORKER, {"pid": proc.pid, "started": process_started(proc.pid),
                                          "queued_at": (read_json(run_dir / JOB) or {}).get("queued_at")})
        if self.standby:
            STANDBY.prepare_when_idle(self.busy, env)

    def free_gpu_memory(self) -> bool:
        """On a GPU, the models Chat loaded there are let go before a job starts: nothing else ever gave
        their memory back, and a training run beside them could run out of it. Chat loads them again
        when it is next used (seconds). True when there was a GPU to free."""
        from pipelines import hardware

        if not hardware.has_cuda():
            return False
        if self.chat_models.release():
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_initialized():  # (what PyTorch's allocator kept goes back to the GPU for the job)
                torch.cuda.empty_cache()
        return True

    def prepare_worker(self) -> None:
        """Have a process ready for the first job (a server does this when it starts), or for the
        next one once the jobs already queued or running are done."""
        if self.standby:
            STANDBY.prepare_when_idle(self.busy, worker_env())

    def busy(self) -> bool:
        """A job is queued or running: one this process started, or a run another one did (a
        command-line run, or a run of the server before a restart)."""
        if any(proc.poll() is None for proc in list(self._procs.values())):
            return True
        return any((self.get_run(row["id"]) or {}).get("status") in ACTIVE_STATUSES
                   for row in self.store.list_runs() if row["status"] in ACTIVE_STATUSES)

    def cancel(self, run_id: str) -> None:
        """Ask a queued or running run to stop; a running one saves a checkpoint first."""
        row = self._require_run(run_id)
        if row["status"] not in ACTIVE_STATUSES:
            raise RunError(f"run {run_id} is {row['status']}; only a queued or running run can be cancelled")
        (self.run_dir(run_id) / CANCEL).touch()

    def resume(self, run_id: str) -> None:
        """Start a cancelled, failed or interrupted run again from its newest checkpoint."""
        run_dir = self.run_dir(run_id)
        # its dataset is not deleted, nor the run resumed by another page, between this look and the queue
        with self.starting:
            row = self._require_run(run_id)
            if row["status"] not in RESUMABLE_STATUSES:
                raise RunError(f"run {run_id} is {row['status']}; only a cancelled, failed or interrupted run "
                               "can be resumed")
            job = read_json(run_dir / JOB)
            gone = self._deleted_dataset(job)
            if gone:
                raise RunError(f"run {run_id} trained on dataset '{gone}', which was deleted: it cannot be resumed "
                               "(start a new run on another dataset)")
            (run_dir / CANCEL).unlink(missing_ok=True)
            before = dict(job)
            job.update(resume=True, queued_at=time.time(), max_concurrent=self.max_concurrent)
            write_json(run_dir / JOB, job)
            self.store.update_run_status(run_id, "queued", None)
        try:
            self.spawn(run_id, run_dir)
        except OSError as err:  # as it was: stopped, and resumable once the machine has room
            write_json(run_dir / JOB, before)
            self.store.update_run_status(run_id, row["status"], row["error"])
            raise RunError(f"the training process could not be started ({err.strerror or err}); run {run_id} "
                           "is still " + row["status"] + ", resume it once the machine has room") from None

    def _deleted_dataset(self, job: dict) -> str | None:
        """The title of the dataset a run's job learns from, when that was deleted since."""
        taught = job.get("dataset") or {}
        if taught.get("id") and not self.store.get_dataset(taught["id"]):
            gone = self.store.get_dataset(taught["id"], deleted=True)  # (the job's copy has no import options)
            return dataset_title(gone) if gone else taught.get("name", taught["id"])
        return None

    def continue_run(self, run_id: str, epochs: float) -> str:
        """A new run that trains a completed run's adapter for more epochs; it records its parent."""
        row = self._require_run(run_id)
        if row["status"] != "completed":
            raise RunError(f"run {run_id} is {row['status']}; only a completed run can be continued")
        job = read_json(self.run_dir(run_id) / JOB)
        gone = self._deleted_dataset(job)
        if gone:  # (the page has no other dataset to offer it: a new run from its result does)
            raise RunError(f"run {run_id} learned from dataset '{gone}', which was deleted: it cannot be continued; to "
                           "train it further, start a run from its result on another dataset (Train tab)")
        if _scores(row):  # a reward model's adapter and score head keep training on the same base
            model, adapter = row["model"], self.result_dir(run_id)
        else:
            model, adapter = self.tuned_model(run_id)  # a whole model (full/freeze) continues as the base
        params = {**job["params"], "num_train_epochs": epochs}
        if "epsilon" in params and "num_iterations" not in params:  # a GRPO or RLOO run stored before its passes
            params.pop("epsilon")  # were offered: its clip never acted, and set alone it is refused
        return self.start_run(model=model, dataset=job["dataset"]["id"], method=job["method"],
                              params=params, parent_id=run_id,
                              init_adapter=str(adapter) if adapter else None, rewards=job.get("rewards"),
                              devices=job.get("devices"))

    def recover(self) -> list[str]:
        """On start: runs whose worker is gone (machine restart, killed server session) become
        'interrupted', ready to resume. Returns their ids."""
        marked = []
        for row in self.store.list_runs():
            if row["status"] not in ACTIVE_STATUSES:
                continue
            run_dir = self.run_dir(row["id"])
            status = current_status(run_dir)  # (not the status of a resumed run's attempt before)
            queued_at = (read_json(run_dir / JOB) or {}).get("queued_at")
            if (status is None and queued_at and (time.time() - queued_at > NEVER_STARTED_S or worker_gone(run_dir))
                    and current_status(run_dir) is None):  # (a second look: it may have reported, then ended)
                # its worker ended before it wrote anything, or wrote nothing in all that time (the command that
                # started it, which alone had its exit code, is gone)
                write_json(run_dir / STATUS, {"status": "interrupted", "time": time.time(), "started": None,
                                              "error": "its process ended before it reported anything (killed "
                                                       "while starting, or the machine restarted); resume it"})
                self.store.update_run_status(row["id"], "interrupted", None)
                marked.append(row["id"])
                continue
            if status and status["status"] in ACTIVE_STATUSES and not pid_alive(status.get("pid"), run_dir):
                write_json(run_dir / STATUS, {**status, "status": "interrupted", "time": time.time(),
                                              "error": "its process had ended without finishing (killed - by the "
                                                       "system when memory runs out, or kill -9 - or the machine "
                                                       f"restarted); {after_kill('training process', run_dir)}"})
                self.store.update_run_status(row["id"], "interrupted", None)
                marked.append(row["id"])
        return marked

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def adapter_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / ADAPTER

    def result_dir(self, run_id: str) -> Path | None:
        """What a completed run left: its adapter folder, or (full/freeze tuning) its model folder."""
        for name in (ADAPTER, MODEL):
            if (self.run_dir(run_id) / name).exists():
                return self.run_dir(run_id) / name
        return None

    def model_runs(self) -> list[dict]:
        """Completed runs whose result is a model that writes replies (to chat with, start from or
        export), newest first; reward models score replies instead (see reward_model_runs)."""
        return [r for r in self.list_runs() if r["status"] == "completed" and self.result_dir(r["id"]) is not None
                and not _scores(r)]

    def reward_model_runs(self) -> list[dict]:
        """Completed reward-model runs, newest first: they score replies (Chat tab, GRPO's reward)."""
        return [r for r in self.list_runs() if r["status"] == "completed" and self.result_dir(r["id"]) is not None
                and _scores(r)]

    def reward_model(self, run_id: str) -> tuple[str, Path]:
        """(base model path, adapter folder) of a completed reward-model run, or a RunError saying why not."""
        row = self._require_run(run_id)
        if not _scores(row):
            raise RunError(f"run {run_id} is a {get_method(row['method']).label} run, not a reward model; train "
                           "one with the 'Reward model' method on preference pairs")
        if row["status"] != "completed" or self.result_dir(run_id) is None:
            raise RunError(f"reward model {run_id} is {row['status']}; only a completed one can score replies")
        return self.resolve_model(row["model"]), self.result_dir(run_id)

    def tuned_model(self, run_id: str) -> tuple[str, Path | None]:
        """(model to load, adapter to put on it or None) for a completed run's result."""
        row = self._require_run(run_id)
        if _scores(row):
            raise RunError(f"run {run_id} is a reward model: it scores replies rather than writing them (use it "
                           "under 'Score replies with' in the Chat tab, or as a GRPO reward)")
        result = self.result_dir(run_id)
        if result is not None and result.name == MODEL:
            return str(result), None
        return row["model"], result

    def _require_run(self, run_id: str) -> dict:
        row = self.get_run(run_id)
        if row is None:
            raise RunError(f"no run with id '{run_id}' (see 'studio runs')")
        return row

    def get_run(self, run_id: str) -> dict | None:
        """Catalogue row with the live state from the run directory (and the catalogue synced)."""
        row = self.store.get_run(run_id)
        if row is None:
            return None
        state = self.job_state(run_id)
        if (state["status"], state["error"]) != (row["status"], row["error"]):
            self.store.update_run_status(run_id, state["status"], state["error"])
        row.update({key: state[key] for key in ("status", "error", "step", "max_steps", "summary",
                                                "started", "finished", "stalled_s", "phase", "training_since",
                                                "first_step", "cancelling", "resumed_from")})
        return row

    def job_state(self, job_id: str, worker: str = "training process") -> dict:
        """The live state of a job directory (a run, an export, ...), including a worker this process
        started that exited before it could report anything."""
        with self._reaping:  # one reader at a time learns the exit code and writes it down
            return self._job_state(job_id, worker)

    def _job_state(self, job_id: str, worker: str) -> dict:
        job_dir = self.run_dir(job_id)
        state = run_state(job_dir)
        if state["error"] and worker != "training process":  # run_state cannot tell a judge or export's worker
            state["error"] = state["error"].replace("the training process", f"the {worker}", 1)
        proc = self._procs.get(job_id)
        exit_code = proc.poll() if proc is not None else None
        if exit_code is None and proc is not None and state["status"] == "failed":
            # found dead while still exiting (its /proc entry empties before it can be reaped)
            try:
                exit_code = proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        if exit_code is not None:
            # reaped: no zombie left to look alive; what it told is written down below, for the
            # readers after this one (a page's tick, the waiting process's watch thread)
            self._procs.pop(job_id, None)
        status = current_status(job_dir)  # (a resumed run's earlier status is not its worker's)
        if exit_code is not None and (status is None or (exit_code < 0 and status["status"] in ACTIVE_STATUSES)):
            if exit_code < 0:  # killed by a signal (we started it, so we know which): say so, once and for good
                name = signal.Signals(-exit_code).name if -exit_code in signal.valid_signals() else f"signal {-exit_code}"
                why = "the system does this when memory runs out; so does kill -9" if name == "SIGKILL" else "from outside"
                then = after_kill(worker, job_dir)
                error = f"the {worker} was killed by {name} ({why}){' before starting' if status is None else ''}; {then}"
            else:
                error = f"the {worker} exited with code {exit_code} before starting: {log_tail(job_dir, 1)}"
            # written down: once reaped, no later look can learn the exit code again
            write_json(job_dir / STATUS, {**(status or {"started": None}), "status": "failed", "error": error,
                                          "time": time.time(), "finished": time.time()})
            state.update(status="failed", error=error, finished=time.time())
        return state

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
