"""Reading a user's file as a stream of records, whatever its format, with one-sentence errors.

`records(path, fmt)` yields `(where, record)` pairs one at a time — "line 3" for JSON Lines and
text, "row 3" for CSV/TSV (the header is row 1, as a spreadsheet shows it) and Parquet, "item 3"
for a JSON array — so a 500,000-row file is never held in memory. Everything that can be said
about a file before its rows are read (missing, empty, too large, binary, unknown type) is said
by `check_file`.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import re
from pathlib import Path

from pipelines.errors import DataError, skippable, where
from pipelines.formats import KNOWN_COLUMNS, few, value_name
from pipelines.json_errors import DECODER, Repeated, json_problem, key_twice, repeated_key

FORMATS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".txt": "text", ".text": "text", ".md": "text",
}
DEFAULT_MAX_BYTES = 10**9  # 1 GB upload limit (STUDIO_MAX_UPLOAD_MB changes it)
MAX_LINE_BYTES = 8 << 20  # one example longer than 8 MB is a mistake, not an example
TEXT_UNITS = ("line", "paragraph", "file")
SNIFF_BYTES = 64 << 10


def human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def check_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Say what is wrong with the file as a whole, or return its format."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path.name}: a folder, not a file; give one of the files in it")
    if not path.is_file():
        raise DataError(f"{path.name}: file not found")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        kinds = ", ".join(sorted(FORMATS))
        raise DataError(f"{path.name}: unsupported file type '{path.suffix or '(none)'}'; expected one of {kinds}")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path.name}: the file is empty (0 bytes)")
    if size > max_bytes:
        raise DataError(f"{path.name}: the file is {human_size(size)}, over the {human_size(max_bytes)} limit "
                        "(STUDIO_MAX_UPLOAD_MB sets it)")
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    if fmt == "parquet":
        if not head.startswith(b"PAR1"):
            raise DataError(f"{path.name}: not a Parquet file (it does not start with the Parquet marker)")
    elif _utf16(head):
        raise DataError(f"{path.name}: this text is in UTF-16, not UTF-8; save the file as UTF-8")
    elif b"\x00" in head:
        at = head.index(b"\x00") + 1
        raise DataError(f"{path.name}: this is a binary file, not text (a NUL byte at byte {at}); "
                        f"expected {_kind(fmt)} text in UTF-8")
    return fmt


def _kind(fmt: str) -> str:
    return "plain" if fmt == "text" else fmt.upper()


def _utf16(head: bytes) -> bool:
    """Text saved as UTF-16 ("Unicode text" in some spreadsheets): a UTF-16 byte-order mark, or a
    NUL byte at every other place (ASCII letters in UTF-16), which binary files do not have."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    sample = head[:4096]
    even, odd = sample[0::2], sample[1::2]
    if len(sample) < 4:
        return False
    return (odd.count(0) >= len(odd) * 0.3 and even.count(0) == 0) or \
        (even.count(0) >= len(even) * 0.3 and odd.count(0) == 0)


def _lines(path: Path, fmt: str, skipped: list | None = None):
    """(line number, text) for each physical line: UTF-8 checked, BOM dropped, length bounded, and
    no NUL byte (the file's start was checked for them; a binary part may come later). `skipped`: a
    list to put a line that is not UTF-8 in and go on (one record per line: JSON Lines)."""
    with open(path, "rb") as fh:
        number = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"{where(path, f'line {number}')}: the line is longer than "
                                f"{human_size(MAX_LINE_BYTES)}; expected one example per line")
            if b"\x00" in raw:
                raise _nul_error(path, f"line {number}", raw.index(b"\x00") + 1, fmt)
            if number == 1 and raw.startswith(codecs.BOM_UTF8):  # (dropped here: a bad byte's place was
                raw = raw[len(codecs.BOM_UTF8):]                   # counted past it, and named the wrong byte)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problem = (f"{where(path, f'line {number}')}: not valid UTF-8 (byte 0x{raw[err.start]:02X} "
                           f"at position {err.start + 1}); save the file as UTF-8")
                if skipped is None:
                    raise DataError(problem) from None
                skipped.append(problem)  # (a chat dump with one line in another encoding: that line left out)
                continue
            yield number, text


def _nul_error(path: Path, place: str, position: int, fmt: str) -> DataError:
    return DataError(f"{where(path, place)}: this is a binary file, not text (a NUL byte at position {position}); "
                     f"expected {_kind(fmt)} text in UTF-8")


TOO_LONG_NUMBER = ("has a number of more than 4,300 digits, more than can be read; put it in quotes to keep it "
                   "as text")
TOO_DEEP = "nested too deeply to read (lists or objects inside each other thousands of levels deep)"


def _json_error(path: Path, place: str, err: json.JSONDecodeError, unit: str) -> DataError:
    return DataError(f"{where(path, place)}: {json_problem(err, unit)}")


def _no_repeats(path: Path, place: str | None, value) -> None:
    key = repeated_key(value)
    if key is not None:
        raise DataError(f"{where(path, place)}: {key_twice(key)}")


def _jsonl(path: Path, fmt: str = "jsonl", skipped: list | None = None):
    """`skipped`: a list to put a line's problem in and go on (the import's *skip rows that cannot be read*)."""
    for number, text in _lines(path, fmt, skipped):
        if not text.strip():
            continue
        try:
            value = _jsonl_value(path, number, text)
        except DataError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
            continue
        yield f"line {number}", value


def _jsonl_value(path: Path, number: int, text: str):
    """One line's JSON value, or a DataError naming the line."""
    try:  # without its line break: a line cut short was blamed on "character 1" of the break after it
        value = DECODER.decode(text.rstrip("\r\n"))
    except RecursionError:
        raise DataError(f"{where(path, f'line {number}')}: {TOO_DEEP}; expected one JSON object per line") from None
    except json.JSONDecodeError as err:
        if number == 1 and text.lstrip().startswith("["):
            raise DataError(f"{where(path, 'line 1')}: a JSON array, not one object per line; "
                            "save it as .json or write one object per line") from None
        if number == 1 and text.lstrip().startswith("{") and not err.doc[err.pos:].strip():
            # an object that goes on past its line: one JSON value written over several lines
            raise DataError(f"{_json_error(path, 'line 1', err, 'line')}; if the file is one object written "
                            "over several lines, write one object per line or save it as .json") from None
        raise _json_error(path, f"line {number}", err, "line") from None
    except ValueError:
        raise DataError(f"{where(path, f'line {number}')}: {TOO_LONG_NUMBER}") from None
    _no_repeats(path, f"line {number}", value)
    return value


def _json_text(path: Path) -> str:
    """The whole file as text. JSON is not line-based (an exported array is often one long line),
    so the line limit does not apply; the upload size limit does. UTF-8 and NUL bytes are checked
    with the line and position named, as for line-based files."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):  # (a bad byte's place is counted in the file as an editor shows it)
        data = data[len(codecs.BOM_UTF8):]
    nul = data.find(b"\x00")
    try:
        text = data.decode("utf-8")
        bad = -1
    except UnicodeDecodeError as err:
        text, bad = "", err.start
    if nul < 0 and bad < 0:
        return text
    at = min(x for x in (nul, bad) if x >= 0)
    line = data.count(b"\n", 0, at) + 1
    position = at - (data.rfind(b"\n", 0, at) + 1) + 1
    if at == nul:
        raise _nul_error(path, f"line {line}", position, "json")
    raise DataError(f"{where(path, f'line {line}')}: not valid UTF-8 (byte 0x{data[at]:02X} at position "
                    f"{position}); save the file as UTF-8")


def _records_of(path: Path, value: dict) -> list:
    """The records of a top-level JSON object: itself when it is one record ({"messages": [...]}),
    the list inside a wrapper ({"data": [...]}), or a sentence saying why it is neither."""
    if KNOWN_COLUMNS & set(value):
        return [value]
    lists = [k for k, v in value.items() if isinstance(v, list)]
    if len(lists) == 1:  # {"data": [...]} or {"train": [...]}
        return value[lists[0]]
    if len(lists) > 1:
        raise DataError(f"{path.name}: an object with {len(lists)} lists ({few(lists)}); expected one JSON array "
                        "of objects")
    if value and all(isinstance(v, dict) for v in value.values()):
        raise DataError(f"{path.name}: expected a JSON array of objects, got an object of objects ({few(value)}); "
                        "put the objects in a list: [{...}, {...}]")
    return [value]


WHITESPACE = re.compile(r"[ \t\n\r]*")
TRAILING_COMMA = re.compile(r",[ \t\n\r]*\]$")


def _json_items(path: Path, text: str):
    """A top-level JSON array's items one at a time, parsed as they are reached: the Data tab's preview of the
    first rows parsed every item of the file on each change of an option (a 1 GB array: all of it into Python
    objects, about ten times the file in memory, for 20 rows). Returns None once the array is read; anything else
    (a wrapper object, JSON Lines saved as .json, a syntax error) ends it with the number of items yielded, for
    the whole-file reading to say what it is."""
    number = 0
    at = WHITESPACE.match(text).end()
    # (a file cut short, or with a comma before its closing ], is said before its first rows: the preview and the
    # import refuse it at once, not once a whole download is converted)
    tail = text[-65536:].rstrip()
    if not text.startswith("[", at) or not tail.endswith("]") or TRAILING_COMMA.search(tail):
        return number
    at = WHITESPACE.match(text, at + 1).end()
    while not text.startswith("]", at):
        try:
            item, at = DECODER.raw_decode(text, at)
        except (json.JSONDecodeError, RecursionError, ValueError):
            return number
        number += 1
        _no_repeats(path, f"item {number}", item)
        yield f"item {number}", item
        at = WHITESPACE.match(text, at).end()
        if text.startswith(",", at):
            at = WHITESPACE.match(text, at + 1).end()
            if text.startswith("]", at):  # a trailing comma: not JSON (said as the whole-file reading says it)
                return number
        elif not text.startswith("]", at):
            return number
    return None if WHITESPACE.match(text, at + 1).end() == len(text) else number


def _json(path: Path):
    text = _json_text(path)
    read = yield from _json_items(path, text)
    if read is None:  # an array, read item by item
        return
    # (read: the items yielded before what the whole-file reading below names; never twice)
    try:
        value = DECODER.decode(text)
    except RecursionError:
        raise DataError(f"{path.name}: {TOO_DEEP}; expected a JSON array of objects") from None
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            yield from _jsonl(path, "json")  # JSON Lines saved as .json: common, and unambiguous
            return
        raise _json_error(path, f"line {err.lineno}", err, "file") from None
    except ValueError:
        raise DataError(f"{path.name}: {TOO_LONG_NUMBER}") from None
    if isinstance(value, Repeated):  # {"data": [...], "data": [...]}: the first list would be lost
        _no_repeats(path, None, value)
    if isinstance(value, dict):
        value = _records_of(path, value)
    if not isinstance(value, list):
        raise DataError(f"{path.name}: expected a JSON array of objects, got {value_name(value)}")
    for i, item in enumerate(value, start=1):
        if i > read:
            _no_repeats(path, f"item {i}", item)
            yield f"item {i}", item


CSV_PROBLEMS = {  # the csv module's words -> what to do about it
    "unexpected end of data": "a quoted cell is never closed (the file ends inside quotes); close the quote or "
                              "remove it",
    "new-line character seen in unquoted field": "a line break that is a lone CR (the old Mac format) outside "
                                                 "quotes; save the file with ordinary line breaks (LF or CRLF)",
    "expected after": "a quoted cell has more text after its closing quote; put the whole cell in quotes and double "
                      'the quotes inside it ("")',
}
SEPARATORS = {",": "a CSV file (separated by ','); save it as .csv", "\t": "a TSV file (separated by tabs); save it "
              "as .tsv", ";": "a file separated by ';'; save it with ',' between cells as .csv"}


def _csv_problem(err: Exception) -> str:
    text = str(err)
    return next((says for key, says in CSV_PROBLEMS.items() if key in text), f"malformed CSV ({text})")


def _check_header(path: Path, header: list[str], delimiter: str) -> None:
    blank = [i + 1 for i, h in enumerate(header) if not h]
    if blank:
        raise DataError(f"{where(path, 'row 1')}: column {blank[0]} has no name in the header")
    first = {}
    for i, name in enumerate(header, start=1):
        if name in first:
            raise DataError(f"{where(path, 'row 1')}: column '{name}' appears twice in the header (columns "
                            f"{first[name]} and {i}); give each column its own name")
        first[name] = i
    if len(header) == 1 and header[0] not in KNOWN_COLUMNS:
        for sep, looks in SEPARATORS.items():
            if sep != delimiter and len([p for p in header[0].split(sep) if p.strip()]) > 1:
                raise DataError(f"{where(path, 'row 1')}: the header is one column '{header[0][:80]}'; "
                                f"this looks like {looks}")


def _semicolons(path: Path) -> bool:
    """Whether a .csv file's header is cells between ';' (how spreadsheets set to a language that writes
    decimal commas save CSV), read as one cell between ','."""
    first = next((text for _n, text in _lines(path, "csv")), "")
    try:
        header = next(csv.reader([first]), [])
    except csv.Error:
        return False
    return (len(header) == 1 and header[0].strip() not in KNOWN_COLUMNS
            and len([p for p in header[0].split(";") if p.strip()]) > 1)


def _csv(path: Path, delimiter: str, skipped: list | None = None):
    fmt = "csv" if delimiter == "," else "tsv"
    if delimiter == "," and _semicolons(path):
        delimiter = ";"
    # a long cell (a whole document) is fine up to the line limit; the csv module stops at 128 KB
    csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
    reader = csv.reader((text for _n, text in _lines(path, fmt)), delimiter=delimiter, strict=True)
    # rows numbered as a spreadsheet shows them: the header is row 1 and a blank row has its number (a
    # bad row after two blank lines was named two rows early); a cell over several lines is one row
    seen_rows = record = 0
    try:
        header = next(reader, None)
        record = 1
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{path.name}: no header row; expected column names on the first line")
        header = [h.strip() for h in header]
        # empty columns after the last named one, as a spreadsheet saves a sheet with cells used once to the right
        # ("Prompt,Completion,,"): read without them while they hold nothing (pandas and `datasets` read such files)
        unnamed = len(header) - len(list(itertools.dropwhile(lambda h: not h, reversed(header))))
        named, header = header, header[:len(header) - unnamed]
        _check_header(path, header if header else named, delimiter)
        for row in reader:
            record += 1
            if not any(cell.strip() for cell in row):
                continue
            seen_rows += 1
            place = f"row {record}"
            if unnamed and len(header) < len(row) <= len(named):
                held = next(((i, c) for i, c in enumerate(row[len(header):], len(header) + 1) if c.strip()), None)
                if held:
                    raise DataError(f"{where(path, place)}: column {held[0]} holds {held[1].strip()[:40]!r} but has no "
                                    "name in the header (row 1); name it, or delete the column")
                row = row[:len(header)]
            if len(row) != len(header):
                # too few: a cell left out (give each column one); too many: a delimiter inside a cell
                fix = ("give the row a cell for each column" if len(row) < len(header)
                       else f"quote cells that contain '{delimiter}'")
                problem = DataError(f"{where(path, place)}: has {len(row)} cell{'s' if len(row) != 1 else ''} but "
                                    f"the header has {len(header)} column{'s' if len(header) != 1 else ''} "
                                    f"({few(header)}); {fix}")
                if skipped is None:
                    raise skippable(problem)
                skipped.append(str(problem))
                continue
            # cells stay text: "=SUM(A1)" is a string here, nothing is ever evaluated
            yield place, dict(zip(header, row))
    except csv.Error as err:
        raise DataError(f"{where(path, f'row {record + 1}')}: {_csv_problem(err)}") from None
    if seen_rows == 0:
        raise DataError(f"{path.name}: has a header row ({few(header)}) but no data rows")


def _parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:  # rows as dicts would keep only the last of them, silently
            where_ = [i + 1 for i, n in enumerate(names) if n == twice]
            raise DataError(f"{path.name}: column '{twice}' appears twice (columns {where_[0]} and {where_[1]}); "
                            "give each column its own name")
        batches = parquet.iter_batches(batch_size=2048)
        number = 0
        for batch in batches:
            for row in _pylist(path, batch, number):
                number += 1
                yield f"row {number}", row
    except (OSError, pa.ArrowException) as err:  # a corrupt or truncated file (ArrowInvalid, ArrowIOError)
        raise DataError(f"{path.name}: not a readable Parquet file ({str(err).splitlines()[0]})") from None


def _pylist(path: Path, batch, before: int) -> list[dict]:
    """A batch's rows as Python values, or a DataError at the first cell that has none: text that is not
    UTF-8, a date past year 9999 (in a column the import may not even use, it stopped with a traceback)."""
    try:
        return batch.to_pylist()
    except (ValueError, OverflowError):
        pass
    for name in batch.schema.names:
        for i, cell in enumerate(batch.column(name)):
            try:
                cell.as_py()
            except UnicodeDecodeError:
                problem = "is not valid UTF-8 text; save the column as UTF-8"
            except (ValueError, OverflowError) as err:
                problem = (f"cannot be read as a Python value ({err}); "
                           + ("a date or time must lie in the years 1 to 9999" if isinstance(err, OverflowError)
                              or "year" in str(err) else "convert the column to text"))
            else:
                continue
            raise DataError(f"{where(path, f'row {before + i + 1}', name)}: {problem}")
    return batch.to_pylist()  # (not reached: some cell failed above)


def _text(path: Path, unit: str):
    if unit not in TEXT_UNITS:
        raise DataError(f"{path.name}: text unit '{unit}' is not one of {', '.join(TEXT_UNITS)}")
    if unit == "file":
        yield "line 1", {"text": "".join(t for _n, t in _lines(path, "text"))}
        return
    start, block = None, []
    for number, text in _lines(path, "text"):
        line = text.rstrip("\r\n")
        if unit == "line":
            if line.strip():
                yield f"line {number}", {"text": line}
            continue
        if line.strip():
            start = start or number
            block.append(line)
        elif block:
            yield f"line {start}", {"text": "\n".join(block)}
            start, block = None, []
    if block:
        yield f"line {start}", {"text": "\n".join(block)}


def records(path: Path, fmt: str, text_unit: str = "line", skipped: list | None = None):
    """Yield (where, record) for each record of the file, streaming. `skipped`: a list to put the problem of a
    line or row that cannot be read in, and go on (a JSON Lines line that is not JSON, a CSV row with more or fewer
    cells than the header, a JSON Lines line not in UTF-8); the file's own problems (a CSV or JSON file not in
    UTF-8, a JSON file that is not JSON) still stop it."""
    path = Path(path)
    if fmt == "jsonl":
        try:
            yield from _jsonl(path, skipped=skipped)
        except DataError as err:  # (a line's problem: *skip rows that cannot be read* leaves such a line out)
            raise skippable(err) from None
    elif fmt == "json":
        yield from _json(path)
    elif fmt in ("csv", "tsv"):
        yield from _csv(path, "," if fmt == "csv" else "\t", skipped)
    elif fmt == "parquet":
        yield from _parquet(path)
    elif fmt == "text":
        yield from _text(path, text_unit)
    else:
        raise DataError(f"{path.name}: unknown format '{fmt}'")
