"""Reading a user's file as a stream of records, whatever its format, with one-sentence errors.

`records(path, fmt)` yields `(where, record)` pairs one at a time — "line 3" for JSON Lines and
text, "row 3" for CSV/TSV (the header is row 1, as a spreadsheet shows it) and Parquet, "item 3"
for a JSON array — so a 500,000-row file is never held in memory. Everything that can be said
about a file before its rows are read (missing, empty, too large, binary, unknown type) is said
by `check_file`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from pipelines.errors import DataError, where

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
    elif b"\x00" in head:
        at = head.index(b"\x00") + 1
        raise DataError(f"{path.name}: this is a binary file, not text (a NUL byte at byte {at}); "
                        f"expected {'plain' if fmt == 'text' else fmt.upper()} text in UTF-8")
    return fmt


def _lines(path: Path):
    """(line number, text) for each physical line: UTF-8 checked, BOM dropped, length bounded."""
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
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{where(path, f'line {number}')}: not valid UTF-8 (byte 0x{raw[err.start]:02X} "
                                f"at position {err.start + 1}); save the file as UTF-8") from None
            yield number, text


def _json_problem(err: json.JSONDecodeError) -> str:
    # some of json's messages end in "at" ("Unterminated string starting at"): no "at at"
    joint = " " if err.msg.endswith(" at") else " at "
    return f"malformed JSON ({err.msg}{joint}character {err.colno})"


def _json_error(path: Path, place: str, err: json.JSONDecodeError) -> DataError:
    return DataError(f"{where(path, place)}: {_json_problem(err)}")


def _jsonl(path: Path):
    for number, text in _lines(path):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            if number == 1 and text.lstrip().startswith("["):
                raise DataError(f"{where(path, 'line 1')}: a JSON array, not one object per line; "
                                "save it as .json or write one object per line") from None
            raise _json_error(path, f"line {number}", err) from None
        yield f"line {number}", value


def _json(path: Path):
    text = "".join(t for _n, t in _lines(path))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            yield from _jsonl(path)  # JSON Lines saved as .json: common, and unambiguous
            return
        raise _json_error(path, f"line {err.lineno}", err) from None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:  # {"data": [...]} or {"train": [...]}
            value = lists[0]
        else:
            value = [value]
    if not isinstance(value, list):
        raise DataError(f"{path.name}: expected a JSON array of objects, got {type(value).__name__}")
    for i, item in enumerate(value, start=1):
        yield f"item {i}", item


def _csv(path: Path, delimiter: str):
    reader = csv.reader((text for _n, text in _lines(path)), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{path.name}: no header row; expected column names on the first line")
        header = [h.strip() for h in header]
        blank = [i + 1 for i, h in enumerate(header) if not h]
        if blank:
            raise DataError(f"{where(path, 'row 1')}: column {blank[0]} has no name in the header")
        seen_rows = 0
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            seen_rows += 1
            place = f"row {seen_rows + 1}"
            if len(row) != len(header):
                raise DataError(f"{where(path, place)}: has {len(row)} cells but the header has "
                                f"{len(header)} columns; quote cells that contain '{delimiter}'")
            # cells stay text: "=SUM(A1)" is a string here, nothing is ever evaluated
            yield place, dict(zip(header, row))
    except csv.Error as err:
        raise DataError(f"{where(path, f'row {seen_rows + 2}')}: malformed {'CSV' if delimiter == ',' else 'TSV'} "
                        f"({err})") from None
    if seen_rows == 0:
        raise DataError(f"{path.name}: has a header row ({', '.join(header)}) but no data rows")


def _parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=2048)
        number = 0
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield f"row {number}", row
    except (OSError, pa.ArrowException) as err:  # a corrupt or truncated file (ArrowInvalid, ArrowIOError)
        raise DataError(f"{path.name}: not a readable Parquet file ({str(err).splitlines()[0]})") from None


def _text(path: Path, unit: str):
    if unit not in TEXT_UNITS:
        raise DataError(f"{path.name}: text unit '{unit}' is not one of {', '.join(TEXT_UNITS)}")
    if unit == "file":
        yield "line 1", {"text": "".join(t for _n, t in _lines(path))}
        return
    start, block = None, []
    for number, text in _lines(path):
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


def records(path: Path, fmt: str, text_unit: str = "line"):
    """Yield (where, record) for each record of the file, streaming."""
    path = Path(path)
    if fmt == "jsonl":
        yield from _jsonl(path)
    elif fmt == "json":
        yield from _json(path)
    elif fmt in ("csv", "tsv"):
        yield from _csv(path, "," if fmt == "csv" else "\t")
    elif fmt == "parquet":
        yield from _parquet(path)
    elif fmt == "text":
        yield from _text(path, text_unit)
    else:
        raise DataError(f"{path.name}: unknown format '{fmt}'")
