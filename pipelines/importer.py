"""Importing a file into the workspace: read (streaming) -> detect -> convert -> write Parquet.

Rows are converted and written in batches of BATCH rows, so a 500,000-row JSONL never exists as
Python objects all at once. Everything goes to a temporary folder that is renamed into place at
the end: on any error nothing is left behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import chain
from pathlib import Path

from pipelines.errors import DataError, skippable, where
from pipelines.formats import (LAYOUT_BY_KEY, LEFT_OUT, NAMES_SHOWN, UNTRAINED, apply_mapping, convert, detect,
                               feedback_column, few, implied_mapping, is_label, missing, suggest_mapping,
                               value_name, with_case_mapping)
from pipelines.readers import DEFAULT_MAX_BYTES, check_file, records

BATCH = 2000
# an import is written in a hidden folder beside its destination, renamed when complete
IMPORTING_PREFIX = ".import-"
IMPORTING_LOCK = ".importing"
DATA, HELDOUT, META = "data.parquet", "heldout.parquet", "meta.json"


@dataclass
class ImportOptions:
    kind: str = "auto"  # auto | sft | preference | kto | text
    mapping: dict[str, str] = field(default_factory=dict)  # canonical name -> the file's column
    text_unit: str = "line"  # plain text: one document per line | paragraph | file
    dedupe: bool = False  # drop rows that repeat an earlier row exactly
    heldout: float = 0.0  # fraction kept aside for held-out loss (0 = decide at training time)
    seed: int = 42
    # the file's last rows kept aside as they are, instead of a drawn fraction: a judge's copy of a dataset keeps
    # the split of its source (drawn again, pairs a run trained on were held out to measure a run continued from it)
    heldout_last: int = 0
    # a line or row that cannot be read (not JSON, a cell too many, a conversation out of order) left out and
    # listed, the rest imported: a real chat dump often has a few (LLaMA-Factory skips them); off, the first stops it
    skip_bad: bool = False

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def same_options(stored: dict | None, options: ImportOptions) -> bool:
    """Whether a dataset imported with `stored` (its catalogue row's options) was imported with these. An
    option an older studio did not have was its default then."""
    stored, defaults = stored or {}, asdict(ImportOptions())
    return all(stored.get(key, defaults[key]) == value for key, value in asdict(options).items())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect(path: Path, options: ImportOptions | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
            n: int = 5) -> dict:
    """A quick look before importing: format, columns, first records, and the detected layout
    (or the sentence saying why none fits). Each of the first records is converted as Import will
    convert it, in the file's order, so the first problem named here is the one Import would name
    first (`row_problem`; reading stops there). With `options.skip_bad`, reading goes on past such rows, as
    Import's does: `skipped` says how many it met, the first, and whether no row looked at was read well
    (`none_read`). Raises DataError for a file unusable as a whole, or for a record that cannot be read before
    any converted record fails."""
    options = options or ImportOptions()
    path = Path(path)
    fmt = check_file(path, max_bytes)
    first, places, layout, read_well, left_out, untaught = [], [], None, 0, [], []
    out = {"format": fmt, "layout": None, "problem": None, "row_problem": None}
    skipped = Skipped() if options.skip_bad else None  # (the rows Import will leave out are not looked at either)
    rows = _first_good(records(path, fmt, options.text_unit, skipped), lambda: len(first))
    while True:
        try:
            place, record = next(rows)
        except StopIteration:
            out["read_all"] = True  # every row of the file is among those looked at
            break
        except DataError as err:
            # a row the reader cannot read (a CSV row with a cell too many) after good ones: where Import would
            # stop, said as a converted row's problem is ("Cannot use this file" read as the whole file's)
            if layout is None:  # (columns not recognised yet: the row is named first, as Import names it)
                raise
            # (skippable: with *Skip rows* ticked, the reader leaves out what it can; what it raises even so, it
            # cannot: a NUL byte, an over-long line)
            out.update(row_problem=str(err), read_problem=str(err), first_row_problem=False,
                       row_skippable=skipped is None and getattr(err, "skippable", False) is True)
            break
        if skipped is not None and not first and not isinstance(record, dict):
            skipped.append(f"{where(path, place)}: expected an object with named fields, got {value_name(record)}")
            continue
        first.append(record)
        places.append(place)
        if len(first) == 1:
            if not isinstance(record, dict):  # as Import says it (there were no columns to name: "found none")
                raise DataError(f"{where(path, place)}: expected an object with named fields, got "
                                f"{value_name(record)}")
            out["columns"] = columns = list(record)
            found = implied_mapping(record, with_case_mapping(columns, options.mapping, path, options.kind), options.kind)
            out["case_mapped"] = {k: v for k, v in found.items() if k not in options.mapping}
            options = replace(options, mapping={**options.mapping, **out["case_mapped"]})
            try:
                layout = detect(columns, path, options.kind, options.mapping)
            except DataError as err:
                out["problem"] = str(err)
                out["suggested"] = suggest_mapping(columns) if options.kind in ("auto", "sft") else {}
        if layout is not None:
            try:
                row = convert(apply_mapping(record, options.mapping), layout, path, place)
                read_well += 1
                if layout.kind in ("preference", "sft") and teaches_nothing(row):  # dropped by Import, as it says
                    untaught.append(len(first) - 1)
            except DataError as err:
                if skipped is None:
                    out["row_problem"] = str(in_users_words(err, options.mapping))
                    out["first_row_problem"] = len(first) == 1  # (the file's, likely: no option leaves it out)
                    out["stops_at"] = len(first) - 1
                    break
                skipped.append(str(in_users_words(err, options.mapping)))  # Import leaves it out too, and reads on
                left_out.append(len(first) - 1)
        if len(first) >= n:
            break
    if not first:
        raise DataError(none_read(path, skipped) if skipped else f"{path.name}: no examples found")
    if skipped:  # what *Skip rows that cannot be read* leaves out among the rows looked at
        out["skipped"] = {"count": skipped.count, "first": skipped[0].removeprefix(path.name + ", "),
                          "none_read": layout is not None and read_well == 0}
    # `places`: where each record is in the file ("row 3"); `left_out`: those of them *Skip* leaves out;
    # `untaught`: those that teach nothing (dropped); `stops_at` (set above): the one Import would stop at
    out.update(records=first, places=places, left_out=left_out, untaught=untaught,
               layout=layout.key if layout else None)
    out["feedback"] = feedback = feedback_mapping(out.get("columns") or [], first, options, layout)
    if feedback:  # the first rows as Import reads them with that mapping: the first it would stop at (or,
        marks = detect(out["columns"], path, "auto", feedback["mapping"])  # with Skip, each it leaves out)
        for i, (place, record) in enumerate(zip(places, first)):
            try:
                convert(apply_mapping(record, feedback["mapping"]), marks, path, place)
            except DataError as err:
                feedback.setdefault("row_problem", str(in_users_words(err, feedback["mapping"])))
                if skipped is None:
                    feedback["stops_at"] = i
                    break
                feedback.setdefault("left_out", []).append(i)
    return out


def feedback_mapping(columns: list[str], first: list, options: ImportOptions, layout) -> dict | None:
    """{"column", "mapping"} (and from `inspect`, "row_problem") when the replies carry good/bad marks in a column no layout reads (e.g.
    prompt, completion, rating=up/down): the mapping that imports them as KTO, the marks as `label`.
    None when the user chose a kind other than kto, mapped a label already, or it is not such a file."""
    if options.kind not in ("auto", "kto") or "label" in options.mapping or (layout and layout.kind != "sft"):
        return None
    column = feedback_column([c for c in columns if c not in options.mapping.values()], first)
    if column is None:
        return None
    if layout and layout.key == "alpaca" and any(isinstance(r, dict) and not missing(r.get("input")) for r in first):
        return None  # KTO's prompt has no place for Alpaca's input: the user maps this one by hand
    names = set(columns) - set(options.mapping.values()) | set(options.mapping)
    mapping = dict(options.mapping)
    guessed = suggest_mapping([c for c in columns if c != column and c not in options.mapping.values()])
    for target in ("prompt", "completion"):
        if target not in names and target in guessed:
            mapping[target] = guessed[target]
    mapping["label"] = column
    try:
        found = detect(columns, "", "auto", mapping)
    except DataError:
        return None
    return {"column": column, "mapping": mapping} if found.kind == "kto" else None


def in_users_words(err: DataError, mapping: dict[str, str]) -> DataError:
    """A row's error about a mapped column, naming the column as the file names it."""
    text = str(err)
    for target, source in mapping.items():
        text = text.replace(f"column '{target}'", f"column '{source}'")
    return DataError(text)


def _row_key(row: dict) -> int:
    """A 64-bit fingerprint of a canonical row, for counting exact duplicates in one pass (a few
    bytes per row instead of the row itself)."""
    return hash(tuple((k, tuple((m["role"], m["content"]) if isinstance(m, dict) else m for m in v)
                       if isinstance(v, list) else v) for k, v in row.items()))


def _shape(row: dict) -> tuple:
    """Which columns are conversations and which text (a conversation's replies kept as context only are
    listed in some rows, not others: not a column of the shape)."""
    return tuple((k, isinstance(v, list)) for k, v in row.items() if k != UNTRAINED)


def _settled(kind):
    """A column type read from the first batch, with "null" (no value in any of its rows) made text: an
    answer column empty for the first 2,000 prompts became type null, and the first row with an answer
    could not be written."""
    import pyarrow as pa

    if pa.types.is_null(kind):
        return pa.string()
    if pa.types.is_list(kind):
        return pa.list_(_settled(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_settled(field.type)) for field in kind])
    return kind


class _Writer:
    """Parquet in batches, with the schema fixed by the first batch (a column with no value in it as text),
    or given (a split of a file written before: its own schema)."""

    def __init__(self, path: Path, schema=None):
        self.path, self.writer, self.batch, self.rows, self.schema = path, None, [], 0, schema

    def add(self, row: dict) -> None:
        self.batch.append(row)
        if len(self.batch) >= BATCH:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.batch:
            return
        if self.schema is None:
            first = pa.Table.from_pylist(self.batch).schema
            self.schema = pa.schema([field.with_type(_settled(field.type)) for field in first])
        new = [k for k in dict.fromkeys(k for row in self.batch for k in row) if k not in self.schema.names]
        if new:
            self._widen(new)
        table = pa.Table.from_pylist(self.batch, schema=self.schema)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema)
        self.writer.write_table(table)
        self.rows += len(self.batch)
        self.batch = []

    def _widen(self, names: list[str]) -> None:
        """Columns first seen after the first batch (a conversation's replies kept as context, in row 5,000 only)
        added to the schema, and to the rows written before as empty: from_pylist would drop them silently. The
        rows written so far are written again, a batch at a time, once per new column at most."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        kinds = pa.Table.from_pylist([{k: row.get(k) for k in names} for row in self.batch]).schema
        self.schema = pa.schema([*self.schema, *(f.with_type(_settled(f.type)) for f in kinds)])
        if self.writer is None:
            return
        self.writer.close()
        narrow = self.path.with_name(f"narrow-{self.path.name}")
        os.replace(self.path, narrow)
        self.writer = pq.ParquetWriter(self.path, self.schema)
        for batch in pq.ParquetFile(narrow).iter_batches(batch_size=BATCH):
            before = pa.Table.from_batches([batch])
            for field in self.schema:
                if field.name not in before.column_names:
                    before = before.append_column(field, pa.nulls(before.num_rows, field.type))
            self.writer.write_table(before)
        narrow.unlink()

    def close(self) -> None:
        self.flush()
        if self.writer:
            self.writer.close()


def _split(folder: Path, rows: int, heldout: float, seed: int, kind: str = "sft", last: int = 0) -> int:
    """Move an exact, seeded `heldout` fraction of data.parquet into heldout.parquet (the count
    returned). Rows of one prompt (examples, preference pairs, KTO replies) move together
    (data.whole_prompts), as the split at training does, so their share can be a few rows off.
    `last`: the last rows instead, as they are."""
    import pyarrow.parquet as pq

    from pipelines import data

    if rows < 2 or (heldout <= 0 and last <= 0):
        return 0
    if last > 0:
        held = set(range(max(1, rows - last), rows))
    elif kind == "kto":  # as a run splits it: two rows at least, both marks held out when the data has both
        # (one held-out reply is compared with itself: its loss reads 0.500 whatever the model learned)
        marks = [bool(v) for v in pq.read_table(folder / DATA, columns=["label"]).column("label").to_pylist()]
        held = set(data.plan_split(rows, heldout, seed, kind, data.stored_prompt_groups(folder / DATA), marks)[1])
        if not held:
            return 0
    else:
        k = min(rows - 1, max(1, round(rows * heldout)))
        held = set(random.Random(seed).sample(range(rows), k))
    if kind in data.BY_PROMPT and kind != "kto" and not last:
        groups = data.stored_prompt_groups(folder / DATA)
        if len(groups) < rows:
            held = set(data.whole_prompts(groups, k, 1, seed, data.min_prompts(kind))[1])
            if not held:
                return 0
    stored = pq.ParquetFile(folder / DATA)
    schema = stored.schema_arrow  # both parts as the file: a column empty in one part's first rows stays text
    train, test = _Writer(folder / "train.tmp.parquet", schema), _Writer(folder / HELDOUT, schema)
    index = 0
    for batch in stored.iter_batches(batch_size=BATCH):
        for row in batch.to_pylist():
            (test if index in held else train).add(row)
            index += 1
    train.close()
    test.close()
    (folder / "train.tmp.parquet").replace(folder / DATA)
    return len(held)


PROGRESS_EVERY_S = 1.0


def import_file(path: Path, dest: Path, options: ImportOptions | None = None,
                max_bytes: int = DEFAULT_MAX_BYTES, source_sha256: str | None = None, progress=None) -> dict:
    """Convert `path` into `dest/` (data.parquet [+ heldout.parquet] + meta.json); returns the meta.
    `progress(rows read, seconds)` is called about once a second while a big file streams in."""
    options = options or ImportOptions()
    path, dest = Path(path), Path(dest)
    if not 0 <= options.heldout < 1:
        raise DataError(f"held-out fraction {options.heldout} must be at least 0 and below 1")
    if options.heldout_last < 0:
        raise DataError(f"held-out rows {options.heldout_last} must be at least 0")
    started = time.time()
    fmt = check_file(path, max_bytes)
    skipped = Skipped() if options.skip_bad else None  # what could not be read, in the file's order
    stream = records(path, fmt, options.text_unit, skipped)
    try:
        head = next(stream, None)
    except DataError as err:  # (the first row: the file is likely not what it was taken for, not one bad row)
        err.skippable = False
        raise
    while head is not None and skipped is not None and not isinstance(head[1], dict):
        skipped.append(f"{where(path, head[0])}: expected an object with named fields, got {value_name(head[1])}")
        head = next(stream, None)
    if head is None:
        raise DataError(none_read(path, skipped) if skipped else f"{path.name}: no examples found")
    place, record = head
    if not isinstance(record, dict):
        raise DataError(f"{where(path, place)}: expected an object with named fields, got {value_name(record)}")
    given, options = options, replace(options, mapping=implied_mapping(
        record, with_case_mapping(list(record), options.mapping, path, options.kind), options.kind))
    layout = detect(list(record), path, options.kind, options.mapping)
    used = set(layout.required) | set(layout.optional)
    mapped = apply_mapping(record, options.mapping)
    ignored = [c for c in mapped if c not in used]
    # good/bad marks left out of plain examples, where they could have been KTO's labels: said in the
    # summary (a bad reply is learned as a good one), if every row's value is a mark
    marks = feedback_mapping(list(record), [record], options, layout)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=IMPORTING_PREFIX, dir=dest.parent))
    busy = open(tmp / IMPORTING_LOCK, "w")  # held while this import works: start-up cleaning skips it
    fcntl.flock(busy, fcntl.LOCK_EX)
    try:
        writer = _Writer(tmp / DATA)
        seen, duplicates, multi_turn, empty_optional, shape = set(), 0, 0, 0, None
        context_replies = ended_replies = 0  # replies marked weight 0: kept as context, or ending a conversation
        untaught = []  # where the preference pairs (or conversations, every reply weight 0) are that teach nothing
        read, said, good = 0, time.time(), 0
        for place, record in chain([head], stream):  # (a reader's problem after the head: a row was read well)
            read += 1
            if progress is not None and read % 1000 == 0 and time.time() - said >= PROGRESS_EVERY_S:
                said = time.time()
                progress(read, said - started)
            if marks and isinstance(record, dict) and not missing(record.get(marks["column"])) \
                    and not is_label(record.get(marks["column"])):
                marks = None  # (read before the mapping: the column is the file's, not mapped)
            record = apply_mapping(record, options.mapping)
            try:
                row = convert(record, layout, path, place)
                good += 1
                left_out = row.pop(LEFT_OUT, 0)
                if shape is not None and _shape(row) != shape:
                    col = next(k for (k, is_list), (_k, was) in zip(_shape(row), shape) if is_list != was)
                    now, before = (("a conversation", "text") if isinstance(row[col], list)
                                   else ("text", "conversations"))
                    mixed = DataError(f"{where(path, place, col)}: is {now} but earlier rows have {before}; "
                                      "use one form for the whole file")
                    mixed.skippable = False  # (leaving out every row of the other form is no fix to offer)
                    raise mixed
            except DataError as err:
                if skipped is None:  # (one row's, once a row was read well: *Skip rows* would leave it out)
                    said = in_users_words(err, options.mapping)
                    raise (skippable(said) if good and getattr(err, "skippable", None) is not False else said) from None
                skipped.append(str(in_users_words(err, options.mapping)))
                continue
            shape = shape or _shape(row)
            empty_optional += sum(1 for c in layout.optional if c in record and not str(record[c] or "").strip())
            if layout.kind in ("preference", "sft") and teaches_nothing(row):
                untaught.append(place)
                continue
            digest = _row_key(row)
            if digest in seen:
                duplicates += 1
                if options.dedupe:
                    continue
            seen.add(digest)
            if "messages" in row and sum(m["role"] == "assistant" for m in row["messages"]) > 1:
                multi_turn += 1
            context_replies += len(row.get(UNTRAINED, ()))
            ended_replies += left_out
            writer.add(row)
        writer.close()
        if skipped and not writer.rows:
            raise DataError(none_read(path, skipped))
        if untaught and not writer.rows and layout.kind == "sft":
            raise DataError(f"{path.name}: no conversation can teach anything: {_in_all(untaught)} every "
                            "reply has weight 0 (kept as context, not learned); mark the replies to learn with "
                            "weight 1, or leave the weight out")
        if untaught and not writer.rows:
            raise DataError(f"{path.name}: no pair can teach anything: {_in_all(untaught)} 'chosen' and "
                            "'rejected' are the same answer or one is empty; preference training needs two "
                            "different answers to each prompt")
        heldout_rows = _split(tmp, writer.rows, options.heldout, options.seed, layout.kind, options.heldout_last)
        meta = {
            "kind": layout.kind, "layout": layout.key, "layout_label": LAYOUT_BY_KEY[layout.key].label,
            "format": fmt, "source_name": path.name, "source_sha256": source_sha256 or sha256(path),
            "source_bytes": path.stat().st_size, "rows": writer.rows, "train_rows": writer.rows - heldout_rows,
            "heldout_rows": heldout_rows, "duplicates": duplicates,
            "dropped_duplicates": duplicates if options.dedupe else 0, "multi_turn_rows": multi_turn,
            "context_replies": context_replies,  # replies marked weight 0: context, not learned
            "ended_replies": ended_replies,  # ... and after a conversation's last learned reply: left out
            "empty_optional_fields": empty_optional, "optional_columns": list(layout.optional),
            # the first few names and the count: a file may have 1,000 columns nobody wants listed
            "ignored_columns": ignored[:NAMES_SHOWN], "ignored_count": len(ignored),
            "ignored_feedback": marks["column"] if marks else None,
            "feedback_mapping": marks["mapping"] if marks else None,
            "untaught_pairs": len(untaught), "untaught_rows": untaught[:5],
            "skipped_rows": skipped.count if skipped else 0, "skipped": list(skipped or []),
            "options": asdict(given), "created": time.time(),  # as asked: the same file and options, one dataset
            "case_mapped": {k: v for k, v in options.mapping.items() if k not in given.mapping},
            "import_seconds": round(time.time() - started, 2),
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
        tmp.chmod(0o755)  # mkdtemp makes it private
        (tmp / IMPORTING_LOCK).unlink()
        tmp.rename(dest)
    finally:
        busy.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _first_good(rows, good):
    """`rows`, where a row's problem (`skippable`) met before any row was read well is the file's: *Skip rows that
    cannot be read* would leave every row out (a file in another encoding, of another layout)."""
    try:
        yield from rows
    except DataError as err:
        if not good():
            err.skippable = False
        raise


def _in_all(rows: list) -> str:
    return "in its one row" if len(rows) == 1 else f"in all {len(rows)} rows"


def _answer(value) -> str:
    if isinstance(value, list) and value and isinstance(value[-1], dict) and value[-1].get("role") == "assistant" \
            and not str(value[-1].get("content") or "").strip():
        return ""  # a conversation whose answer is nothing (a transcript's "Assistant:" and no more)
    if isinstance(value, list):  # a conversation: what the assistant says in it
        return "\n".join(str(m.get("content") or "") for m in value if isinstance(m, dict)
                         and m.get("role") == "assistant").strip()
    return str(value or "").strip()


def teaches_nothing(row: dict) -> bool:
    """A preference pair whose answers are the same, or one of them empty: training on it moves
    nothing (or only learns 'say nothing'), so it is dropped on import. So is a conversation whose every
    reply is marked weight 0 (context only)."""
    if "messages" in row:
        return all(m["role"] != "assistant" or i in row.get(UNTRAINED, ()) for i, m in enumerate(row["messages"]))
    chosen, rejected = _answer(row.get("chosen")), _answer(row.get("rejected"))
    return not chosen or not rejected or chosen == rejected


class Skipped(list):
    """The rows left out that could not be read: how many (`count`), and the words of the first `KEEP` (a file of a
    million broken lines kept a million sentences)."""
    KEEP = 3

    def __init__(self):
        super().__init__()
        self.count = 0

    def append(self, said: str) -> None:
        self.count += 1
        if len(self) < self.KEEP:
            super().append(said)


def none_read(path: Path, skipped: Skipped) -> str:
    """Every row skipped: the file is not what it was taken for, said with the first row's problem."""
    return (f"{path.name}: no row could be read ({skipped.count} skipped; the first: "
            f"{skipped[0].removeprefix(path.name + ', ')})")


def skipped_text(meta: dict) -> str:
    """The import's note on rows left out that could not be read, with the first of them."""
    n = meta["skipped_rows"]
    return (f"{n} row{'s' if n != 1 else ''} skipped that could not be read (the first: "
            f"{meta['skipped'][0].removeprefix(meta['source_name'] + ', ')})")


def untaught_text(meta: dict) -> str:
    """The import's note on dropped pairs (or conversations), with the first places they were at."""
    n = meta["untaught_pairs"]
    more = ", ..." if n > len(meta["untaught_rows"]) else ""
    if meta.get("kind") == "sft":
        return (f"{n} conversation{'s' if n != 1 else ''} dropped that could teach nothing (every reply has "
                f"weight 0: {', '.join(meta['untaught_rows'])}{more})")
    return (f"{n} pairs dropped that could teach nothing (chosen = rejected, or an empty "
            f"answer: {', '.join(meta['untaught_rows'])}{more})")


def learned_replies_text(meta: dict) -> str:
    """Which replies of its conversations a dataset teaches: every one, or all but those marked weight 0."""
    n = meta.get("context_replies") or 0
    return (f"every reply is learned but the {n} marked weight 0, kept as context" if n > 1 else
            "every reply is learned but the one marked weight 0, kept as context" if n else "every reply is learned")


def ended_replies_text(meta: dict) -> str:
    """The import's note on replies marked weight 0 that ended a conversation, or '' when there were none."""
    n = meta.get("ended_replies") or 0
    if not n:
        return ""
    return (f"{n} repl{'ies' if n != 1 else 'y'} marked weight 0 at the end of a conversation left out, with the "
            "turns after the last learned reply (context for nothing)")


def ignored_text(meta: dict) -> str:
    """'ignored columns: id, source' — or the first few and how many more."""
    names = list(meta.get("ignored_columns") or [])
    more = meta.get("ignored_count", len(names)) - len(names)
    shown = few(names)  # meta holds at most NAMES_SHOWN of them (older imports: all of them)
    return f"ignored columns: {shown} and {more} more" if more > 0 else f"ignored columns: {shown}"


def ignored_feedback_text(meta: dict) -> str:
    """The warning for marks left out of plain examples, or '' when there were none."""
    column = meta.get("ignored_feedback")
    if not column:
        return ""
    return (f"⚠️ column '{column}' looks like good/bad marks and was not used: every reply, the ones marked "
            f"bad too, was imported as an example to copy; to train on the marks, import it as kto with "
            f"'{column}' as the label")


def remove_stale_imports(datasets_dir: Path, min_age_s: float = 60.0) -> list[str]:
    """Folders of imports that were killed part-way (nothing else removes them). One whose import
    is still running holds its lock and is kept; a lock-less one is removed once it is a minute old
    (older studios made no lock; a new import takes its lock at once)."""
    removed = []
    for folder in Path(datasets_dir).glob(f"{IMPORTING_PREFIX}*"):
        lock = folder / IMPORTING_LOCK
        try:
            if lock.exists():
                with open(lock) as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            elif time.time() - folder.stat().st_mtime < min_age_s:
                continue
        except BlockingIOError:
            continue  # an import in progress
        except FileNotFoundError:
            continue  # it finished (or was removed) meanwhile
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def read_meta(folder: Path) -> dict:
    return json.loads((Path(folder) / META).read_text())
