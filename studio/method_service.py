"""What the Method tab and `studio methods` ask: the catalogue for a model, with trainable
weights and the memory and time a run would take on this machine."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from pipelines import advisor, data, dataset_stats, estimates, hardware, importer, models
from pipelines.data import DataError
from pipelines.methods import METHODS, ConfigError, describe, parse

GB = 1024**3
# fewer optimizer steps than this in a whole run: said next to the estimate (a DPO run on 4 chat votes
# took 1 step, and its rewards stayed at 0)
FEW_STEPS = advisor.ENOUGH_STEPS  # the advice gives a small set enough epochs to pass it


def _training_lengths(studio, model_path: str, dataset_ref: str | None, eval_fraction: float,
                      kind: str = "sft", seed: int = 42, start: str | None = None) -> list[int] | None:
    """Tokens per training example (the longer sequence of a pair; sampled on big datasets, repeated
    to the full count)."""
    each = _training_sequences(studio, model_path, dataset_ref, eval_fraction, kind, seed, start)
    return [max(seqs, default=0) for seqs in each] if each else None


def _training_sequences(studio, model_path: str, dataset_ref: str | None, eval_fraction: float,
                        kind: str = "sft", seed: int = 42, start: str | None = None) -> list[tuple[int, ...]] | None:
    """Tokens of each sequence of each training example (a pair's two), as `_training_lengths`."""
    if not dataset_ref:
        return None
    row = studio.resolve_dataset(dataset_ref)
    parquet = Path(row["path"])
    key = (model_path, str(parquet))
    if key not in studio.length_cache:
        rows = dataset_stats.sample_rows(parquet)
        studio.length_cache[key] = dataset_stats.sequence_lengths(rows, studio.tokenizer(model_path))
    sample = studio.length_cache[key]
    if not sample:
        return None
    n_train = _split_rows(studio, dataset_ref, eval_fraction, kind, seed, start)[0]
    return [sample[i % len(sample)] for i in range(n_train)]


def _split_rows(studio, dataset_ref: str, eval_fraction: float, kind: str = "sft",
                seed: int = 42, start: str | None = None) -> tuple[int, int, bool]:
    """(training rows, held-out rows, whether those are the dataset's own held-out file) of a run on
    this dataset (of this data kind) from `start` (a model, or "run:ID"): its own held-out file, else
    the run's own split (data.plan_split: at least data.min_heldout rows held out, so 4 rows at 0.1
    train on 3; a prompt's rows on one side, its prompts read once per dataset and setting), as
    data._run_heldout makes it: from a run on the same file, that run's split; from another run, only
    rows whose prompts no run behind it trained on are held out."""
    parquet = Path(studio.resolve_dataset(dataset_ref)["path"])
    total = dataset_stats.count_rows(parquet)
    heldout = parquet.with_name(importer.HELDOUT)
    if heldout.exists():
        return total, dataset_stats.count_rows(heldout), True
    parent = start[4:] if start and start.startswith("run:") and studio.get_run(start[4:]) else None
    key = ("split", str(parquet), eval_fraction, seed, kind, parent)
    if key not in studio.length_cache:
        studio.length_cache[key] = tuple(map(len, _plan(studio, parquet, total, eval_fraction, kind, seed, parent)))
    train_rows, held_rows = studio.length_cache[key]
    return train_rows, held_rows, False


def _plan(studio, parquet: Path, total: int, eval_fraction: float, kind: str, seed: int,
          parent: str | None) -> tuple[list[int], list[int]]:
    from pipelines import lineage
    from pipelines.events import JOB, read_json

    fresh = None
    if parent is not None:
        if ((read_json(studio.run_dir(parent) / JOB) or {}).get("dataset") or {}).get("path") == str(parquet):
            held = data._kept(studio.run_dir(parent), total)  # (a parent from before splits were kept: by row)
            if held is None:
                return data.split_indices(total, eval_fraction, seed, data.min_heldout(kind))
            out = set(held)
            return [i for i in range(total) if i not in out], held
    if parent is not None and eval_fraction > 0:  # (nothing held out at 0: no need to read what trained)
        key = ("untrained", str(parquet), parent)  # (whatever the share, seed and kind)
        if key not in studio.length_cache:
            seen = lineage.trained_by(studio.run_dir(parent).parent, parent)
            studio.length_cache[key] = lineage.untrained_rows(seen, lineage.stored_digests(parquet)) if seen else None
        fresh = studio.length_cache[key]
    if kind not in data.BY_PROMPT:
        if fresh is not None:
            return data.plan_among(total, fresh, eval_fraction, seed, kind)
        return data.split_indices(total, eval_fraction, seed, data.min_heldout(kind))
    if kind == "kto":  # its split also balances thumbs up and down
        rows = data.split_columns(parquet)
        if fresh is not None:
            return data.plan_among(total, fresh, eval_fraction, seed, kind, data.prompt_groups(rows),
                                   [bool(r.get("label")) for r in rows])
        return data.split_plan(rows, eval_fraction, seed, kind)
    # the prompts read once per dataset (a second on 100k rows), kept only where some repeat
    grouped = ("prompt groups", str(parquet))
    if grouped not in studio.length_cache:
        groups = data.stored_prompt_groups(parquet)
        studio.length_cache[grouped] = groups if len(groups) < total else None
    if fresh is not None:
        return data.plan_among(total, fresh, eval_fraction, seed, kind, studio.length_cache[grouped])
    return data.plan_split(total, eval_fraction, seed, kind, studio.length_cache[grouped])


def _heldout_rows(studio, dataset_ref: str, eval_fraction: float, kind: str = "sft", seed: int = 42,
                  start: str | None = None) -> int:
    """How many rows a run on this dataset measures itself on (`_split_rows`)."""
    return _split_rows(studio, dataset_ref, eval_fraction, kind, seed, start)[1]


def kept_params(method: str, values: dict | None):
    """The method's settings as a press will show them (`values`: the browser's kept ones, which the change
    of method puts in the fields); its defaults where those do not parse."""
    own = {name: value for name, value in (values or {}).items()
           if name in {info.name for info in describe(METHODS[method].params)} and value is not None}
    try:
        return parse(METHODS[method].params, own)
    except ConfigError:
        return parse(METHODS[method].params, None)


def held_out(studio, method: str, dataset_ref: str, start: str | None = None, values: dict | None = None) -> int:
    """How many rows of this dataset a run of the method holds out, from `start`, at `values` (its defaults
    where left out)."""
    params = kept_params(method, values)
    rows, held, own = _split_rows(studio, dataset_ref, getattr(params, "eval_fraction", 0.0),
                                  METHODS[method].data_kind, getattr(params, "seed", 42), start)
    return 0 if own else held


def enough_epochs(studio, method: str, dataset_ref: str, start: str | None = None,
                  values: dict | None = None) -> tuple[dict, str]:
    """For a Train-on-these button's dataset of votes or labels: the epochs the run gets (settings), and why.
    A few pairs, which the method's default epochs would train for a few steps (5 pairs: 2), get the epochs the
    advisor would raise them to; others the method's default, where the kept settings (`values`: what the change
    of method shows) hold other epochs: an earlier press's 10 for 3 votes stood for 40 votes, without a word.
    ({}, "") when the epochs shown are right. The steps per epoch count the kept batch size and held-out share."""
    params, default = kept_params(method, values), parse(METHODS[method].params, None).num_train_epochs
    rows, held, own = _split_rows(studio, dataset_ref, params.eval_fraction, METHODS[method].data_kind, params.seed,
                                  start)
    held = 0 if own else held  # (a held-out file is not taken from these rows)
    per_epoch = math.ceil(rows / (params.per_device_train_batch_size * params.gradient_accumulation_steps))
    more = advisor.enough_epochs(per_epoch, default) if rows else None
    unit = "pair" if METHODS[method].data_kind == "preference" else "row"
    trained = f"{rows} {unit}{'s train' if rows != 1 else ' trains'}" + (f" ({held} held out to measure the run)" if held else "")
    steps = f"{per_epoch} training step{'s' if per_epoch != 1 else ''} per epoch"
    if not more:
        if params.num_train_epochs == default:
            return {}, ""
        return ({"num_train_epochs": default},
                f"{default:g} epochs, {METHODS[method].label}'s default ({trained}, {steps}), not the "
                f"{params.num_train_epochs:g} kept from before." + few_pairs(rows, unit))
    return ({"num_train_epochs": more},
            f"{more} epochs: {trained}, {steps}, and a run needs about {advisor.ENOUGH_STEPS} steps to move the "
            "model." + few_pairs(rows, unit))


FEW_PAIRS = 10  # below this a preference run learns its pairs' replies more than a preference


def few_pairs(rows: int, unit: str) -> str:
    """What so few pairs teach (a walkthrough's 2 pairs, 10 steps: the winning replies came back word for
    word, a wrong fact included), and what teaches a preference (bench/few_votes_quality.py: 5 votes that
    agree on a sign-off put it on 6 of 10 replies to new questions)."""
    if unit != "pair" or rows >= FEW_PAIRS:
        return ""
    return (f" With {rows} pair{'s' if rows != 1 else ''} the run learns the preferred replies nearly word for word, "
            "a wrong fact in them too; pairs that agree on one thing (tone, length, a closing line) carry over to "
            f"new questions, and {FEW_PAIRS} or more give a preference the held-out check can measure.")


def base_of(studio, model: str) -> str:
    """The base model a run would load: a 'run:ID' start point trains on its run's base (an
    adapter's weights are a rounding error next to the model's)."""
    if model.startswith("run:") and studio.get_run(model.removeprefix("run:")) is not None:
        return studio.tuned_model(model.removeprefix("run:"))[0]
    return model


# said while a first use converts the built-in model (the Data tab's first look, a first chat)
PREPARING = ("Preparing the built-in model for its first use: it is converted once to the format training "
             "reads (under a minute)…")


def model_ready(studio, model: str) -> bool:
    """False while the built-in model has not been converted yet (a first start, ~25 s)."""
    model = base_of(studio, model)
    return not models.is_default(model) or (studio.model_cache / models.DEFAULT_MODEL / "model.safetensors").exists()


def estimate(studio, model: str, method: str, params: dict | None = None, dataset: str | None = None,
             rewards: list[dict] | None = None):
    """The estimate for one run as the Train tab would start it (an RL run with the reward functions
    chosen: a reward model among them is loaded beside it and reads every reply)."""
    base = base_of(studio, model)
    models.check_available(base, studio.model_cache)  # a hub id with no network: said at once, not after retries
    model_path = str(studio.resolve_model(base))
    checked = parse(METHODS[method].params, params)
    fraction = getattr(checked, "eval_fraction", 0.0)
    # the run's own split (train_pref), as a run from `model` makes it
    split = (METHODS[method].data_kind, getattr(checked, "seed", 42), model)
    each = _training_sequences(studio, model_path, dataset, fraction, *split)
    lengths = [max(seqs, default=0) for seqs in each] if each else None
    return estimates.estimate(model_path, method, params, lengths=lengths, sequence_lengths=each,
                              eval_rows=_heldout_rows(studio, dataset, fraction, *split) if lengths else 0,
                              scorers=_scorers(studio, rewards) if METHODS[method].rewards else ())


def _scorers(studio, rewards: list[dict] | None) -> tuple[str, ...]:
    """The base model of each reward model run among the reward functions (one not found is the
    start's to refuse, not the estimate's)."""
    out = []
    for entry in rewards or []:
        run = studio.get_run(str(entry.get("run") or "")) if entry.get("name") == "reward_model" else None
        if run is not None and run["method"] == "reward_model":
            out.append(str(studio.resolve_model(run["model"])))
    return tuple(out)


def fmt_bytes(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / 2**20:.0f} MB"


def fmt_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}" if n < 10 * size else f"{n / size:.0f}{unit}"
    return str(n)


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 90:
        return f"{s:.0f} s"
    if s < 600:  # minutes and seconds: the parts of a total still add up to it
        minutes, seconds = divmod(round(s), 60)
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


OVERHEAD_RUNS = 5  # the newest finished runs whose times the estimate reads


@dataclass(frozen=True)
class PastRuns:
    """What the newest finished runs of a method on a model took here (medians), for the estimate:
    the matmul-based figure is only as good as a constant's fit to this CPU, a finished run is not."""
    overhead_s: float | None = None  # outside training steps: the process, libraries, model and data
    # loaded at the start; measuring after training and saving at the end
    tokens_per_s: float | None = None  # training speed, as the curves show it (same method only)


def past_runs(studio, model: str, method: str) -> PastRuns:
    """The newest completed runs of this method (for the start and end, else of any method) on this
    model's base: their median overhead and training speed. Empty before any such run finished."""
    import statistics

    base = base_of(studio, model)
    overhead: dict[bool, list[float]] = {True: [], False: []}
    speed: list[float] = []
    for row in studio.store.list_runs():  # newest first
        same = row["method"] == method
        if row["status"] != "completed" or row["model"] != base or len(overhead[same]) >= OVERHEAD_RUNS:
            continue
        took = _run_times(str(studio.run_dir(row["id"])))
        if took is None:
            continue
        overhead[same].append(took[0])
        if same and took[1]:  # tokens/s counts real tokens (calibrated: against the estimate's count of them)
            speed.append(took[1])
        if len(overhead[True]) >= OVERHEAD_RUNS:
            break
    runs = overhead[True] or overhead[False]
    return PastRuns(statistics.median(runs) if runs else None, statistics.median(speed) if speed else None)


@lru_cache(maxsize=256)  # a completed run's files never change
def _run_times(folder: str) -> tuple[float, float | None] | None:
    """(seconds outside its training steps, median training tokens/s while other processes left the
    CPU to it) of a completed run, from its files; None for a resumed run (two attempts), one missing
    them (older studios), or one that shared the CPU with other processes for most of its steps (its
    start and end were as slow: a DPO run beside one spinning process took 286-292 s, alone 17 s)."""
    import statistics

    from pipelines.events import HEARTBEAT, JOB, STATUS, read_json, read_metrics

    folder = Path(folder)
    job, beat, status = (read_json(folder / name) or {} for name in (JOB, HEARTBEAT, STATUS))
    metrics = read_metrics(folder)
    steps = [m["time"] for m in metrics if "loss" in m and "time" in m]
    # from when it got its turn (`started`): a wait behind other runs is theirs, not its start
    started, since, finished = status.get("started"), beat.get("training_since"), status.get("finished")
    if job.get("resume") or status.get("resumed_from") is not None or not (started and since and finished and steps):
        return None
    # the first: warm-up; then the stretches other processes left the CPU to it (beside a test suite a
    # DPO run trained at 17 tokens/s against 58 alone, and the next run's estimate read 1.5x long)
    timed = [m for m in metrics if m.get("tokens_per_s")][1:]
    rates = [m["tokens_per_s"] for m in timed if m.get("others_cores", 0.0) <= hardware.SHARED_CORES]
    if len(rates) < len(timed) / 2:
        return None
    # the end from the last record, a held-out check after the last step included: the estimate
    # counts those checks itself
    last = max(m["time"] for m in metrics if "time" in m)
    return since - started + finished - last, statistics.median(rates) if rates else None


def calibrated(est, past: PastRuns):
    """The estimate's times at the training speed runs of this method reached here (the matmul-based
    figure was 1.5x too slow on a 2-core AVX-512 AMD: bench/run_time_estimate.py)."""
    if not (past.tokens_per_s and est.seconds_per_epoch and est.real_tokens_per_epoch):
        return est  # (RL: its replies' length, so its real tokens, are not known before it runs; ORPO,
        # CPO, SimPO: their trainer counts no tokens, so no speed was recorded)
    # real tokens on both sides: a run that pads its batches computes on more than it counts (compared
    # on padded tokens, preference runs were left out, and a DPO estimate read 1.37x short from Start
    # on an AMX CPU after any number of DPO runs here: bench/run_time_estimate.py)
    factor = (est.real_tokens_per_epoch / est.seconds_per_epoch) / past.tokens_per_s
    factor = min(3.0, max(1 / 3, factor))  # another batch size or length: a nudge, never a new figure
    return replace(est, seconds_per_epoch=est.seconds_per_epoch * factor, eval_seconds=est.eval_seconds * factor)


def summary_line(est, epochs: float | None = None, overhead: float | None = None) -> str:
    """One line for the Train tab, under the Start button's settings (with the whole run's time
    when the number of epochs is known, and from Start to the saved result when runs here have shown
    how long starting and saving take: `overhead`)."""
    time = f"; about {fmt_seconds(est.seconds_per_epoch)} per epoch" if est.seconds_per_epoch else ""
    if est.seconds_per_epoch and epochs:
        checks = f", plus {fmt_seconds(est.eval_seconds)} measuring the held-out rows" if est.eval_seconds >= 1 else ""
        training = est.seconds_per_epoch * float(epochs) + est.eval_seconds
        time = (f"; training takes about **{fmt_seconds(training)} in all** "
                f"({fmt_seconds(est.seconds_per_epoch)} per epoch × {float(epochs):g}{checks})")
        if overhead is not None and overhead >= 1:
            time += (f", about **{fmt_seconds(training + overhead)} from Start to the saved result** (starting, "
                     f"loading the model and saving took {fmt_seconds(overhead)} in the last runs here)")
        else:
            time += ", plus loading the model at the start and saving at the end"
    # no dataset picked: the worst case, every row as long as the max length lets it be (KTO read 10.5 GB
    # there against DPO's 4.0 GB on a dataset, with nothing said of why)
    worst = ("a 512-token prompt and full-length replies each" if METHODS[est.method].rewards else
             "every row counted at the max length")
    memory = (f"Expected peak memory {fmt_bytes(est.peak_bytes)}" if est.rows else
              f"Expected peak memory at most {fmt_bytes(est.peak_bytes)} (no dataset picked: {worst}; a dataset "
              "gives its own figure and the time)")
    line = (f"{memory} — {est.verdict()}{time}. "
            f"Trains {fmt_count(est.trainable_params)} weights ({est.trainable_percent:.2f}% of the model).")
    steps = math.ceil(round(est.steps_per_epoch * float(epochs), 9)) if est.steps_per_epoch and epochs else None
    if steps is not None and steps < FEW_STEPS:
        line += (f"\n\n⚠️ **Only {steps} training step{'s' if steps != 1 else ''}** ({est.rows} training "
                 f"{'prompts' if METHODS[est.method].rewards else 'rows'}, {est.steps_per_epoch:g} "
                 f"step{'s' if est.steps_per_epoch != 1 else ''} per epoch): too few for the model to change "
                 "much. Add epochs or examples, or lower the batch size.")
    return line


def elsewhere(studio, model: str) -> str:
    """The cards of methods named in the field that cannot train here, said for this model."""
    from transformers import AutoConfig

    from pipelines.methods import elsewhere as cards

    label = "the built-in SmolLM2-135M-Instruct" if model in ("", "default") else f"'{model}'"
    try:
        if not model_ready(studio, model or "default"):
            raise OSError("not prepared")
        config = AutoConfig.from_pretrained(str(studio.resolve_model(base_of(studio, model or "default"))))
        n = cards.experts(config)
    except (OSError, ValueError):  # a model not prepared yet: said as a dense one would be, but unnamed
        label, n = "the chosen model (not prepared yet)", 0
    return cards.as_markdown(label, n)


def devices_line(est, devices: dict | None) -> str:
    """With several processes: what each device holds and whether it fits ('' for one device)."""
    from pipelines.devices import fit_text, parse_devices

    return fit_text(est, parse_devices(devices)) if devices else ""


def breakdown(est) -> str:
    return (f"weights {fmt_bytes(est.weights_bytes)} + training (activations, gradients, optimizer) "
            f"{fmt_bytes(est.training_bytes)} + runtime {fmt_bytes(est.runtime_bytes)}")


TABLE_HEADERS = ["Method", "Family", "Data", "Trainable", "Trainable %", "Peak memory", "Time / epoch",
                 "Relative speed", "Mergeable"]


def measured(studio, model: str, method: str) -> bool:
    """Whether the Method table's row for this method is at hand, or would first measure it."""
    try:
        return estimates.measured(str(studio.resolve_model(base_of(studio, model))), method)
    except (ConfigError, OSError, ValueError):  # what the estimate itself will say, at once
        return True


def fitting_kinds(method_key: str) -> tuple[str, ...]:
    """The dataset kinds a method trains on (an SFT method also on raw text)."""
    kind = METHODS[method_key].data_kind
    return ("sft", "text") if kind == "sft" else (kind,)


FITS = " ✓ your data"  # the Method table's Data cell of a method that trains on the dataset chosen


def dataset_kind(studio, dataset: str | None) -> str | None:
    if not dataset:
        return None
    try:
        return studio.resolve_dataset(dataset)["kind"]
    except (DataError, OSError):
        return None


def catalogue_order(studio, dataset: str | None = None) -> list[str]:
    """The table's rows: the methods that train on the chosen dataset's kind first (measured first,
    they no longer came after a minute and a half of methods it cannot use), then the rest, each
    group in the catalogue's order."""
    kind = dataset_kind(studio, dataset)
    fitting = [key for key in METHODS if kind and kind in fitting_kinds(key)]
    return fitting + [key for key in METHODS if key not in fitting]


def catalogue(studio, model: str = "default", dataset: str | None = None):
    """The comparison table, one row per method at its default settings (`catalogue_order`), yielded
    as it grows (the first look at a model probes each method for a few seconds; later looks, after a
    restart too, are instant: pipelines/probe_cache.py). With a dataset chosen, the methods that train
    on its kind say so in their Data cell (a KTO dataset: only KTO's rows)."""
    rows, times = [], {}
    kind = dataset_kind(studio, dataset)
    for key in catalogue_order(studio, dataset):
        method = METHODS[key]
        try:
            est = estimate(studio, model, key, None, dataset)
            times[key] = est.seconds_per_epoch
            cells = [fmt_count(est.trainable_params), f"{est.trainable_percent:.2f}%", fmt_bytes(est.peak_bytes),
                     fmt_seconds(est.seconds_per_epoch)]
        except ConfigError:  # a method this model cannot train (ESFT on a dense model): its card says why
            times[key] = None
            cells = ["not for this model", "-", "-", "-"]
        except Exception as err:  # noqa: BLE001 - one method's probe failing (a layout it does not know) stopped
            times[key] = None     # the whole table after its first row
            cells = [f"could not estimate ({type(err).__name__})", "-", "-", "-"]
        fits = FITS if kind and kind in fitting_kinds(key) else ""
        rows.append([method.label, method.family, method.data_kind.upper() + fits, *cells, "-",
                     "yes" if method.mergeable else "no"])
        # speed against LoRA's time per epoch at the same batch size and data
        base = times.get("lora")
        for row, t in zip(rows, times.values()):
            row[7] = f"{base / t:.2f}x" if base and t else "-"
        yield [list(r) for r in rows]
