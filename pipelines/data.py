"""Stored datasets as training reads them: rows, the answer-only form, the held-out split.

Reading and converting users' files lives in readers.py / formats.py / importer.py.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.conversation import UNTRAINED
from pipelines.errors import DataError  # noqa: F401  (the error type callers catch)

def load_rows(parquet: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(parquet).to_pylist()


def to_prompt_completion(row: dict) -> dict:
    """A `messages` row as conversational prompt/completion (TRL then learns its reply; a dataset with
    conversations of several replies is tokenized by pipelines/conversation.py instead)."""
    if "messages" not in row:
        return row
    return {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}


def multi_reply(dataset: dict) -> list[dict] | None:
    """A stored dataset's (or its own held-out file's) first conversation of several replies, or None: where
    there is one, its rows are tokenized with every reply learned (pipelines/conversation.py), the held-out
    rows alike."""
    import pyarrow.parquet as pq

    from pipelines.conversation import replies
    from pipelines.importer import read_meta

    try:  # the import counted them: a dataset with none is not read row by row at each run's start
        if read_meta(Path(dataset["path"]).parent).get("multi_turn_rows") == 0:
            return None
    except (OSError, ValueError, KeyError, TypeError):  # (no count kept: a dataset made otherwise)
        pass
    for key in ("path", "heldout_path"):
        if not dataset.get(key):
            continue
        stored = pq.ParquetFile(dataset[key])
        if "messages" not in stored.schema_arrow.names:
            return None
        for batch in stored.iter_batches(columns=["messages"], batch_size=4096):
            found = next((m for m in batch.column(0).to_pylist() if replies(m) > 1), None)
            if found is not None:
                return found
    return None


# Kinds whose rows can share prompts: a KTO export writes each pair as two rows of one prompt (the
# chosen reply marked good, the rejected one bad), chat votes or labels can hold several pairs of one
# prompt, and examples can give one question several answers. Their held-out split keeps every row of a
# prompt on one side, so a held-out prompt is one the run never trained on.
BY_PROMPT = {"sft", "preference", "kto"}


def split(rows: list[dict], eval_fraction: float, seed: int, kind: str = "sft") -> tuple[list[dict], list[dict]]:
    """Deterministic held-out split (`split_plan`'s), as rows."""
    train, held = split_plan(rows, eval_fraction, seed, kind)
    return [rows[i] for i in train], [rows[i] for i in held]


def run_split(rows: list[dict], eval_fraction: float, seed: int, kind: str,
              run_dir: Path) -> tuple[list[dict], list[dict]]:
    """The split a run trains and is measured on, kept in its folder: a resumed run, and Chat's
    held-out prompts for it (`kept_heldout`), read the very rows it started with."""
    from pipelines import lineage

    def plan(by_prompt: bool, among: list[int] | None = None) -> tuple[list[int], list[int]]:
        among = list(range(len(rows))) if among is None else among
        train, held = split_plan([rows[i] for i in among], eval_fraction, seed, kind, by_prompt=by_prompt)
        return [among[i] for i in train], [among[i] for i in held]

    held = set(_run_heldout(run_dir, len(rows), plan, lambda: [lineage.digest(r) for r in rows]))
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


def _run_heldout(run_dir: Path, n: int, plan, digests) -> list[int]:
    """The held-out row numbers a run keeps for its n-row dataset: as it kept them, else `plan(by_prompt,
    among)`'s held-out rows, kept. A run started before splits were kept (split by row) resumes on its own
    split. A run that starts from another's result holds out only rows whose prompt no run behind it
    trained on (`lineage`: `digests()` gives each row's prompt digest), planned among those rows."""
    from pipelines import lineage
    from pipelines.events import CHECKPOINTS, HELDOUT_ROWS, write_json

    held = _kept(run_dir, n)
    if held is None:
        started = any((Path(run_dir) / CHECKPOINTS).glob("checkpoint-*"))
        parent = _parent_on_the_same_data(Path(run_dir))
        seen = set() if started or parent is not None else lineage.trained_prompts(run_dir)
        fresh = lineage.untrained_rows(seen, digests()) if seen else None
        if parent is not None and not started:
            # a run that keeps training its parent on the same data is measured on what the parent never
            # trained on: the parent's kept split, or, kept before splits were, its row split
            held = _kept(parent, n)
            held = plan(False)[1] if held is None else held
        elif fresh is not None:
            held = plan(True, fresh)[1]
        else:
            held = plan(not started)[1]
        write_json(Path(run_dir) / HELDOUT_ROWS, {"rows": n, "heldout": held})
    return held


def _parent_on_the_same_data(run_dir: Path) -> Path | None:
    """The folder of the run this one continues (Continue training, a run's result as the start), where
    that run trained on the same dataset file."""
    from pipelines.events import JOB, read_json

    job = read_json(run_dir / JOB) or {}
    if not job.get("parent_id"):
        return None
    parent = run_dir.parent / job["parent_id"]
    before = read_json(parent / JOB) or {}
    same = (before.get("dataset") or {}).get("path") == (job.get("dataset") or {}).get("path")
    return parent if same and job["dataset"].get("path") else None


def kept_heldout(run_dir: Path, rows: list[dict], eval_fraction: float, seed: int, kind: str) -> list[dict]:
    """A run's held-out rows: as it kept them, or, for a run from before splits were kept, its row split."""
    held = _kept(run_dir, len(rows))
    if held is None:
        held = split_plan(rows, eval_fraction, seed, kind, by_prompt=False)[1]
    return [rows[i] for i in held]


def _kept(run_dir: Path, n: int) -> list[int] | None:
    """The held-out row numbers a run kept for its n-row dataset, or None."""
    from pipelines.events import HELDOUT_ROWS, read_json

    kept = read_json(Path(run_dir) / HELDOUT_ROWS)
    return sorted(kept["heldout"]) if kept is not None and kept.get("rows") == n else None


def split_plan(rows: list[dict], eval_fraction: float, seed: int, kind: str = "sft",
               by_prompt: bool = True) -> tuple[list[int], list[int]]:
    """(training, held-out) row numbers of these rows (`plan_split`); `by_prompt` False splits by row,
    as runs did before they kept whole prompts together."""
    groups = prompt_groups(rows) if kind in BY_PROMPT and by_prompt else None
    marks = [bool(r.get("label")) for r in rows] if kind == "kto" else None
    return plan_split(len(rows), eval_fraction, seed, kind, groups, marks)


def plan_split(n: int, eval_fraction: float, seed: int, kind: str, groups: list[list[int]] | None = None,
               marks: list[bool] | None = None) -> tuple[list[int], list[int]]:
    """(training, held-out) row numbers of n rows; at least one training row. Rows of one prompt
    (`groups`, from `prompt_groups`) stay together (`whole_prompts`): a held-out prompt is one the run
    never trained on, which the held-out metrics and Chat's re-comparison on held-out prompts rely on.
    KTO's held-out rows (`marks`: thumbs up or down) are at least two and hold both marks when the data
    has both (`balance_marks`)."""
    train, held = split_indices(n, eval_fraction, seed, min_heldout(kind))
    movable = None
    if groups is not None and held and len(groups) < n:
        train, held = whole_prompts(groups, len(held), min_heldout(kind), seed, min_prompts(kind))
        movable = {g[0] for g in groups if len(g) == 1}
    if marks is not None:
        train, held = balance_marks(marks, train, held, seed, movable)
    return train, held


def plan_among(n: int, among: list[int], eval_fraction: float, seed: int, kind: str,
               groups: list[list[int]] | None = None, marks: list[bool] | None = None) -> tuple[list[int], list[int]]:
    """(training, held-out) row numbers of n rows, the held-out ones `plan_split`'s of the rows `among`
    (in order); the rest train. `groups`, `marks`: all n's. A group only partly among them trains whole: a
    conversation joined to another's prompt because it learns a reply there (`_joined`) can be new to a run
    while that prompt is not, and holding it out would measure it on what the run behind trained on."""
    if groups is not None:
        inside = set(among)
        whole = {r for g in groups if all(r in inside for r in g) for r in g}
        among = [r for r in among if r in whole]
    at = {row: i for i, row in enumerate(among)}
    groups = [[at[r] for r in g] for g in groups if g[0] in at] if groups is not None else None
    marks = [marks[r] for r in among] if marks is not None else None
    held = [among[i] for i in plan_split(len(among), eval_fraction, seed, kind, groups, marks)[1]]
    out = set(held)
    return [i for i in range(n) if i not in out], held


def split_columns(parquet: Path) -> list[dict]:
    """A stored dataset's rows with only what `split_plan` reads (prompt, chosen, label): cheap on a
    big set."""
    import pyarrow.parquet as pq

    columns = [c for c in ("prompt", "chosen", "label") if c in pq.read_schema(parquet).names]
    return pq.read_table(parquet, columns=columns).to_pylist()


def row_prompt(row: dict):
    """A row's prompt: its prompt column, or the turns before a conversation's last reply; None where
    it has neither (raw text)."""
    prompt = row.get("prompt")
    if prompt is None:
        for column in ("messages", "chosen"):
            if isinstance(row.get(column), list):
                return row[column][:-1]
    return prompt


def prompt_key(row: dict, index: int) -> str:
    """What makes two rows the same prompt: the prompt (or the turns before a conversation's last
    reply); a row with no prompt is its own."""
    prompt = row_prompt(row)
    if not prompt:
        return f"#{index}"
    return _keyed(prompt)


def _keyed(prompt) -> str:
    import json

    return json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)


def earlier_turns(row: dict) -> list[list[dict]]:
    """The contexts of a conversation's learned replies before its last (every reply is learned,
    pipelines/conversation.py, but those marked weight 0): the turns before each."""
    from pipelines.conversation import ASSISTANT, is_multi_reply

    if not is_multi_reply(row):
        return []
    turns, untrained = row["messages"], row.get(UNTRAINED) or ()  # (a reply kept as context is not learned)
    return [turns[:i] for i, m in enumerate(turns[:-1])
            if m.get("role") == ASSISTANT and i > 0 and i not in untrained]


def earlier_contexts(row: dict) -> list[str]:
    """The `prompt_key`s of a conversation's learned replies before its last (`earlier_turns`)."""
    return [_keyed(turns) for turns in earlier_turns(row)]


def _joined(keys: list, earlier: list[list]) -> list[list[int]]:
    """Row numbers grouped by key, in order of first appearance; a conversation also joins the group whose key
    is the context of one of its earlier replies. A held-out row is measured on its last reply given the turns
    before it (its key), so a conversation that learns a reply in that context must be on its side: the
    reply would be measured after being learned (a regenerated reply, a branch of one tree). Conversations
    that merely open alike (a shared greeting) are not joined: none is measured on the greeting."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    parent = {key: key for key in groups}

    def root(key):
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for i, contexts in enumerate(earlier):
        for context in contexts:
            if context in parent:
                a, b = root(keys[i]), root(context)
                if a != b:
                    parent[b] = a
    if all(parent[key] == key for key in parent):  # (nothing joined: the groups as they are)
        return list(groups.values())
    merged: dict = {}
    for key, rows in groups.items():
        merged.setdefault(root(key), []).extend(rows)
    return [sorted(rows) for rows in merged.values()]


def prompt_groups(rows: list[dict]) -> list[list[int]]:
    """Row numbers grouped by prompt, in order of first appearance (`_joined`: with the conversations that
    learn a reply in a group's context)."""
    return _joined([prompt_key(row, i) for i, row in enumerate(rows)], [earlier_contexts(row) for row in rows])


PROMPT_COLUMNS = ("prompt", "messages", "chosen", UNTRAINED)  # what `prompt_key` and `earlier_contexts` read


def stored_prompt_groups(parquet: Path, batch_rows: int = 2048) -> list[list[int]]:
    """`prompt_groups` of a stored dataset, read a batch at a time and only the columns a prompt comes
    from, each prompt kept as a 16-byte digest: a 100k-row set never becomes one list of rows."""
    import hashlib

    import pyarrow.parquet as pq

    table = pq.ParquetFile(parquet)
    columns = [c for c in PROMPT_COLUMNS if c in table.schema_arrow.names]
    if not columns:  # raw text: every row is its own
        return [[i] for i in range(table.metadata.num_rows)]
    def digest(text: str) -> bytes:
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    keys: list[bytes] = []
    earlier: list[list[bytes]] = []
    for batch in table.iter_batches(batch_size=batch_rows, columns=columns):
        for row in batch.to_pylist():
            keys.append(digest(prompt_key(row, len(keys))))
            earlier.append([digest(context) for context in earlier_contexts(row)])
    return _joined(keys, earlier)


def whole_prompts(groups: list[list[int]], count: int, min_held: int, seed: int,
                  min_prompts: int = 1) -> tuple[list[int], list[int]]:
    """Whole prompts held out, in a seeded order: each that fits within `count` rows and leaves
    `min_held` to train on. Then, while fewer than `min_held` rows or `min_prompts` prompts are held
    out, the smallest prompt left that still leaves `min_held` to train on: a prompt with many rows is
    never taken while smaller ones fit (first come, 6 pairs of one prompt among 8 held out 6). None
    held out when that cannot be done."""
    import random

    n = sum(len(g) for g in groups)
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    taken, size = [], 0
    for g in order:
        if size + len(groups[g]) <= count and n - size - len(groups[g]) >= min_held:
            taken.append(g)
            size += len(groups[g])
    rest = sorted((g for g in order if g not in taken), key=lambda g: len(groups[g]))  # ties: the seeded order
    while size < min_held or len(taken) < min_prompts:
        fits = next((g for g in rest if n - size - len(groups[g]) >= min_held), None)
        if fits is None:
            return list(range(n)), []
        rest.remove(fits)
        taken.append(fits)
        size += len(groups[fits])
    held = {i for g in taken for i in groups[g]}
    return [i for i in range(n) if i not in held], sorted(held)


def min_heldout(kind: str) -> int:
    """The fewest held-out rows that measure anything. KTO compares each reply's reward with a
    reply to another prompt from the same batch (TRL's KL estimate: completions rotated by one
    within the batch), so a single held-out row is compared with itself: its loss reads exactly
    0.500 whatever the model learned. Two rows at least, and as many training rows."""
    return 2 if kind == "kto" else 1


def min_prompts(kind: str) -> int:
    """The fewest prompts a split by prompt holds out: KTO's KL estimate pairs each held-out reply
    with its neighbour's prompt, which for one prompt's two replies is its own."""
    return 2 if kind == "kto" else 1


def split_indices(n: int, eval_fraction: float, seed: int, min_held: int = 1) -> tuple[list[int], list[int]]:
    """`split`'s choice as row numbers (training rows in order, held-out rows sorted): at least
    `min_held` rows held out and as many left to train on, else none held out."""
    import random

    count = min(n - min_held, max(min_held, round(n * eval_fraction)))
    if eval_fraction <= 0 or count < min_held:
        return list(range(n)), []
    order = list(range(n))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [i for i in range(n) if i not in held], sorted(held)


def balance_marks(marks: list[bool], train: list[int], held: list[int], seed: int,
                  movable: set[int] | None = None) -> tuple[list[int], list[int]]:
    """KTO's split by marks (thumbs up or down). Training first: a mark that only held-out rows have
    (the one thumbs-down of ten) goes back to training, swapped with a row of the other mark. Then the
    held-out rows: one mark only (all thumbs up, say) while training can spare two of the other, one
    held-out row swaps with a seeded pick of them, so the held-out loss reads both kinds of reply.
    The counts stay as they were (the estimate counts rows, not marks). Only `movable` rows swap (all
    when None): a row that shares its prompt with others stays on its prompt's side."""
    import random

    rng = random.Random(seed)
    train, held = list(train), list(held)

    def may(rows: list[int]) -> list[int]:
        return rows if movable is None else [i for i in rows if i in movable]

    def swap(give: int, take: int) -> None:  # a held-out row to training, a training row to held-out
        train.remove(take), held.remove(give)
        train.append(give), held.append(take)

    for mark in (True, False):
        stranded = may([i for i in held if marks[i] == mark])
        others = may([i for i in train if marks[i] != mark])
        if stranded and others and not any(marks[i] == mark for i in train):
            swap(stranded[0], rng.choice(others))
    if len(held) >= 2 and len({marks[i] for i in held}) == 1:
        gives = may(sorted(held))
        others = may([i for i in train if marks[i] != marks[held[0]]])
        if gives and len(others) >= 2:
            swap(gives[-1], rng.choice(others))
    return sorted(train), sorted(held)


def interleave_marks(rows: list[dict]) -> list[dict]:
    """KTO's held-out rows, a reply marked good then one marked bad while both last: TRL measures KTO's
    reward margin on each batch that holds both marks, and held-out rows in file order (all thumbs up
    first) could leave no such batch."""
    good = [r for r in rows if r.get("label")]
    bad = [r for r in rows if not r.get("label")]
    return [r for i in range(max(len(good), len(bad))) for r in (*good[i:i + 1], *bad[i:i + 1])]


def training_datasets(dataset: dict, eval_fraction: float, seed: int, convert=None, run_dir: Path | None = None):
    """(training, held-out or None) as Arrow datasets read from the stored Parquet files, memory-mapped
    from a cache beside them: a 100k-row dataset never becomes one Python list. `convert` (a row ->
    row function, e.g. to_prompt_completion) runs as a datasets map, its result cached on disk too.
    The split is `split`'s, row for row (rows of one prompt on one side), kept in `run_dir` as
    `run_split` keeps it: a resumed run and Chat's held-out prompts read the rows it started with."""
    from datasets import Dataset

    cache = Path(dataset["path"]).parent / ".arrow-cache"

    def read(path):
        ds = Dataset.from_parquet(str(path), cache_dir=str(cache))
        if convert is not None and "messages" in ds.column_names:  # (with the replies kept as context, if listed)
            ds = ds.map(convert, remove_columns=[c for c in ("messages", UNTRAINED) if c in ds.column_names],
                        desc=None)
        return ds

    rows = read(dataset["path"])
    if dataset.get("heldout_path"):  # the dataset brings its own held-out rows
        return rows, read(dataset["heldout_path"])
    def plan(by_prompt: bool, among: list[int] | None = None) -> tuple[list[int], list[int]]:
        groups = stored_prompt_groups(Path(dataset["path"])) if by_prompt else None
        if among is None:
            return plan_split(len(rows), eval_fraction, seed, "sft", groups)
        return plan_among(len(rows), among, eval_fraction, seed, "sft", groups)

    if run_dir is None:
        held = plan(True)[1]
    else:
        from pipelines import lineage

        held = _run_heldout(run_dir, len(rows), plan, lambda: lineage.stored_digests(Path(dataset["path"])))
    if not held:
        return rows, None
    chosen = set(held)
    return rows.select([i for i in range(len(rows)) if i not in chosen]), rows.select(held)
