"""The bad-input fuzz corpus of issue #18: files the importer must refuse in one sentence, and
tricky files it must accept.

No randomness: every file is written from the literals below, so a failure names a file that is
the same on every machine. `write_corpus(folder)` writes them all and returns the cases.

A bad case carries what the one sentence must say: `says` (the exact message, without the CLI's
"error: " prefix) or `has` (distinctive parts of it); either way the message starts with the
file's name. A good case carries the rows it must store (`rows`) and, optionally, a check of the
stored rows (`check`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

MB = 1 << 20


@dataclass
class Case:
    name: str  # the file's name (its extension says the format)
    make: Callable[[], bytes]  # the file's bytes
    says: str | None = None  # bad: the exact sentence
    has: tuple[str, ...] = ()  # bad: parts the sentence contains (the file's name is always checked)
    args: tuple[str, ...] = ()  # extra `studio data import` options
    rows: int | None = None  # good: how many rows are stored
    check: Callable[[list[dict]], None] | None = None  # good: a look at the stored rows
    options: dict = field(default_factory=dict)  # the same options as ImportOptions fields

    @property
    def bad(self) -> bool:
        return self.rows is None


def lines(*records) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def parquet_table(table) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


QA = {"prompt": "How long is the warranty?", "completion": "27 months."}
QA2 = {"prompt": "Does it float?", "completion": "No, keep it dry."}
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))
ZIP = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(200))
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(64)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(100))
GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(120))
SAME_PAIRS = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Hello!"},
              {"prompt": "Bye", "chosen": "See you.", "rejected": "See you."}]
WIDE = 1200  # columns of the "many columns" files
ACCEPTED = ("messages | conversations | prompt+completion+label | prompt+chosen+rejected | chosen+rejected | "
            "instruction+output | prompt+completion | text | prompt")


def _truncated_parquet() -> bytes:
    data = parquet({"prompt": ["How long is the warranty?"] * 200, "completion": ["27 months."] * 200})
    return data[: len(data) // 2]


def _utf16_without_bom() -> bytes:
    return lines(QA, QA2).decode().encode("utf-16-le")


def _wide_csv(extra_known: bool) -> bytes:
    names = (["prompt", "completion"] if extra_known else []) + [f"extra_{i}" for i in range(WIDE)]
    values = (["Hi", "Hello"] if extra_known else []) + ["x"] * WIDE
    return (",".join(names) + "\n" + ",".join(values) + "\n").encode()


def _duplicate_parquet() -> bytes:
    import pyarrow as pa

    return parquet_table(pa.Table.from_arrays([pa.array(["Q"]), pa.array(["A"]), pa.array(["B"])],
                                              names=["prompt", "completion", "completion"]))


def _minified_json() -> bytes:
    """A JSON array written on one line, over the 8 MB line limit of line-based files: JSON is not
    line-based, so the whole file is one value, as a spreadsheet or a script exports it."""
    rows = [{"prompt": f"Question {i}?", "completion": f"Answer {i}. " + "word " * 2000} for i in range(900)]
    return json.dumps(rows).encode()


def bad_cases() -> list[Case]:
    return [
        # --- nothing in it
        Case("empty.jsonl", lambda: b"", says="empty.jsonl: the file is empty (0 bytes)"),
        Case("empty.csv", lambda: b"", says="empty.csv: the file is empty (0 bytes)"),
        Case("empty.parquet", lambda: b"", says="empty.parquet: the file is empty (0 bytes)"),
        Case("blank_lines.jsonl", lambda: b"\n  \n\r\n\n", says="blank_lines.jsonl: no examples found"),
        Case("blank.txt", lambda: b"   \n\n\t\n", says="blank.txt: no examples found"),
        Case("header_only.csv", lambda: b"prompt,completion\n",
             says="header_only.csv: has a header row (prompt, completion) but no data rows"),
        Case("header_only.tsv", lambda: b"prompt\tcompletion\r\n",
             says="header_only.tsv: has a header row (prompt, completion) but no data rows"),
        Case("no_rows.parquet", lambda: parquet({"prompt": [], "completion": []}),
             says="no_rows.parquet: no examples found"),
        Case("empty_array.json", lambda: b"[]", says="empty_array.json: no examples found"),
        # --- wrong encodings
        Case("latin1.jsonl", lambda: lines(QA) + '{"prompt": "café", "completion": "x"}\n'.encode("latin-1"),
             says="latin1.jsonl, line 2: not valid UTF-8 (byte 0xE9 at position 16); save the file as UTF-8"),
        Case("latin1.csv", lambda: "prompt,completion\nHi,Hello\nCafé?,Oui\n".encode("latin-1"),
             says="latin1.csv, line 3: not valid UTF-8 (byte 0xE9 at position 4); save the file as UTF-8"),
        Case("cp1252.tsv", lambda: "prompt\tcompletion\n\u201cHi\u201d\tHello\n".encode("cp1252"),
             says="cp1252.tsv, line 2: not valid UTF-8 (byte 0x93 at position 1); save the file as UTF-8"),
        Case("latin1.md", lambda: "Über alles\n".encode("latin-1"),
             says="latin1.md, line 1: not valid UTF-8 (byte 0xDC at position 1); save the file as UTF-8"),
        Case("latin1.json", lambda: '[{"prompt": "Señor", "completion": "Sí"}]'.encode("latin-1"),
             says="latin1.json, line 1: not valid UTF-8 (byte 0xF1 at position 16); save the file as UTF-8"),
        Case("utf16.jsonl", _utf16_without_bom,
             says="utf16.jsonl: this text is in UTF-16, not UTF-8; save the file as UTF-8"),
        Case("utf16_bom.csv", lambda: "prompt,completion\nHi,Hello\n".encode("utf-16"),
             says="utf16_bom.csv: this text is in UTF-16, not UTF-8; save the file as UTF-8"),
        Case("utf16.txt", lambda: "Hello there\nGeneral\n".encode("utf-16-be"),
             says="utf16.txt: this text is in UTF-16, not UTF-8; save the file as UTF-8"),
        # --- binary content behind a text extension (and text behind .parquet)
        Case("photo.jsonl", lambda: PNG, says="photo.jsonl: this is a binary file, not text (a NUL byte at byte 9); "
                                              "expected JSONL text in UTF-8"),
        Case("archive.csv", lambda: ZIP, says="archive.csv: this is a binary file, not text (a NUL byte at byte 6); "
                                              "expected CSV text in UTF-8"),
        Case("program.tsv", lambda: ELF, says="program.tsv: this is a binary file, not text (a NUL byte at byte 8); "
                                              "expected TSV text in UTF-8"),
        Case("picture.json", lambda: JPEG, says="picture.json: this is a binary file, not text (a NUL byte at byte 5); "
                                                "expected JSON text in UTF-8"),
        Case("compressed.txt", lambda: GZIP, says="compressed.txt: this is a binary file, not text (a NUL byte at "
                                                  "byte 4); expected plain text in UTF-8"),
        Case("table.csv", lambda: parquet({"prompt": ["Q"], "completion": ["A"]}),
             has=("table.csv: this is a binary file, not text",)),
        Case("late_nul.jsonl", lambda: lines(*[QA] * 2000) + b'{"prompt": "Q\x00", "completion": "A"}\n',
             says="late_nul.jsonl, line 2001: this is a binary file, not text (a NUL byte at position 14); "
                  "expected JSONL text in UTF-8"),
        Case("text.parquet", lambda: lines(QA),
             says="text.parquet: not a Parquet file (it does not start with the Parquet marker)"),
        # --- truncated
        Case("truncated.jsonl", lambda: lines(QA, QA2)[:-12],
             has=("truncated.jsonl, line 2: malformed JSON at character 44: a text opened with \" is never closed",)),
        Case("truncated.json", lambda: json.dumps([QA, QA2], indent=1).encode()[:-20],
             has=("truncated.json, line 8: malformed JSON at character ",)),
        Case("truncated.parquet", _truncated_parquet, has=("truncated.parquet: not a readable Parquet file (",)),
        Case("marker_only.parquet", lambda: b"PAR1", has=("marker_only.parquet: not a readable Parquet file (",)),
        Case("truncated.csv", lambda: b'prompt,completion\nHi,Hello\nHow are you?,"Fine, tha',
             says="truncated.csv, row 3: a quoted cell is never closed (the file ends inside quotes); "
                  "close the quote or remove it"),
        # --- wrong nesting
        Case("number.json", lambda: b"42", says="number.json: expected a JSON array of objects, got a number"),
        Case("string.json", lambda: b'"hello"', says="string.json: expected a JSON array of objects, got text"),
        Case("dict_of_dicts.json", lambda: json.dumps({"a": QA, "b": QA2}).encode(),
             says="dict_of_dicts.json: expected a JSON array of objects, got an object of objects (a, b); "
                  "put the objects in a list: [{...}, {...}]"),
        Case("two_lists.json", lambda: json.dumps({"train": [QA], "test": [QA2]}).encode(),
             says="two_lists.json: an object with 2 lists (train, test); expected one JSON array of objects"),
        Case("list_of_lists.json", lambda: json.dumps([["Hi", "Hello"], ["Bye", "See you"]]).encode(),
             says="list_of_lists.json, item 1: expected an object with named fields, got a list"),
        Case("list_of_strings.json", lambda: json.dumps(["Hi", "Bye"]).encode(),
             says="list_of_strings.json, item 1: expected an object with named fields, got text"),
        Case("lists.jsonl", lambda: lines(["Hi", "Hello"]),
             says="lists.jsonl, line 1: expected an object with named fields, got a list"),
        Case("null_line.jsonl", lambda: lines(QA) + b"null\n",
             says="null_line.jsonl, line 2: expected an object with named fields, got null"),
        Case("deep.json", lambda: b"[" * 100_000 + b"]" * 100_000,
             says="deep.json: nested too deeply to read (lists or objects inside each other thousands of levels "
                  "deep); expected a JSON array of objects"),
        Case("messages_string.jsonl", lambda: lines({"messages": "Hi there"}),
             says="messages_string.jsonl, line 1, column 'messages': expected a non-empty list of {role, content} "
                  "messages, got text"),
        Case("messages_pairs.jsonl", lambda: lines({"messages": [["user", "Hi"], ["assistant", "Hello"]]}),
             says="messages_pairs.jsonl, line 1, column 'messages': message 1 must be an object with 'role' and "
                  "'content'"),
        Case("nested_prompt.parquet", lambda: parquet({"prompt": [{"text": "Hi"}], "completion": ["Hello"]}),
             says="nested_prompt.parquet, row 1, column 'prompt': expected text, got an object {\"text\": \"Hi\"}"),
        # --- missing or empty fields
        Case("missing_field.jsonl", lambda: lines(QA, {"prompt": "Only a question"}),
             says="missing_field.jsonl, line 2: missing column 'completion' (found: prompt)"),
        Case("missing_output.json", lambda: json.dumps([{"instruction": "Say hi", "output": "Hi"},
                                                        {"instruction": "Say bye"}]).encode(),
             says="missing_output.json, item 2: missing column 'output' (found: instruction)"),
        Case("empty_cell.csv", lambda: b"prompt,completion\nQ1,A1\nQ2,  \n",
             says="empty_cell.csv, row 3, column 'completion': is empty; expected text"),
        Case("empty_prompt.tsv", lambda: b"prompt\tcompletion\n\tA1\n",
             says="empty_prompt.tsv, row 2, column 'prompt': is empty; expected text"),
        Case("null_field.json", lambda: json.dumps([QA, {"prompt": "Q", "completion": None}]).encode(),
             says="null_field.json, item 2, column 'completion': is empty (null); expected text"),
        Case("null_cell.parquet", lambda: parquet({"prompt": ["Q1", "Q2"], "completion": ["A1", None]}),
             says="null_cell.parquet, row 2, column 'completion': is empty (null); expected text"),
        Case("nan_cell.parquet", lambda: parquet({"text": [1.5, float("nan")]}),
             says="nan_cell.parquet, row 2, column 'text': is empty (NaN); expected text"),
        Case("nan.jsonl", lambda: b'{"prompt": "Q", "completion": NaN}\n',
             says="nan.jsonl, line 1, column 'completion': is empty (NaN); expected text"),
        Case("bytes_cell.parquet", lambda: parquet({"prompt": [b"\x00\x01"], "completion": ["A"]}),
             says="bytes_cell.parquet, row 1, column 'prompt': expected text, got binary data (2 bytes)"),
        Case("empty_text.jsonl", lambda: lines({"text": "Fine."}, {"text": ""}),
             says="empty_text.jsonl, line 2, column 'text': is empty; expected text"),
        Case("empty_reply.jsonl", lambda: lines({"messages": [{"role": "user", "content": "Hi"},
                                                              {"role": "assistant", "content": " "}]}),
             says="empty_reply.jsonl, line 1, column 'messages': message 2 (assistant) is empty; expected text"),
        Case("empty_answer.csv", lambda: b"prompt,chosen,rejected\nHi,Hello!,\n",
             says="empty_answer.csv, row 2, column 'rejected': is empty; expected text"),
        Case("sharegpt_roles.json", lambda: json.dumps([{"conversations": [
            {"from": "human", "value": "Hi"}, {"from": "robot", "value": "Hello"}]}]).encode(),
             has=("sharegpt_roles.json, item 1, column 'conversations': message 2 has role 'robot'; expected one of",)),
        Case("kto_label.csv", lambda: b"prompt,completion,label\nQ,A,yes\nQ,B,maybe\n",
             says="kto_label.csv, row 3, column 'label': expected true or false, got \"maybe\""),
        Case("unknown_columns.parquet", lambda: parquet({"a": ["x"], "b": ["y"]}),
             says=f"unknown_columns.parquet: found columns a, b; expected columns {ACCEPTED}, or map yours "
                  "(e.g. --map prompt=question,completion=answer)"),
        # --- pairs that cannot teach
        Case("same_pairs.jsonl", lambda: lines(*SAME_PAIRS),
             says="same_pairs.jsonl: no pair can teach anything: in all 2 rows 'chosen' and 'rejected' are the same "
                  "answer or one is empty; preference training needs two different answers to each prompt"),
        Case("same_pairs.tsv", lambda: b"prompt\tchosen\trejected\nHi\tHello!\tHello!\nBye\tSee you.\t See you.\n",
             has=("same_pairs.tsv: no pair can teach anything: in all 2 rows",)),
        Case("same_conversations.jsonl", lambda: lines(*[{
            "chosen": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "Same."}],
            "rejected": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "Same."}]}
            for i in range(3)]), has=("same_conversations.jsonl: no pair can teach anything: in all 3 rows",)),
        # --- huge lines, many columns
        Case("huge_line.jsonl", lambda: json.dumps({"prompt": "Q", "completion": "x" * (20 * MB)}).encode() + b"\n",
             says="huge_line.jsonl, line 1: the line is longer than 8.4 MB; expected one example per line"),
        Case("huge_line.txt", lambda: b"word " * (4 * MB),
             says="huge_line.txt, line 1: the line is longer than 8.4 MB; expected one example per line"),
        Case("huge_cell.csv", lambda: b"prompt,completion\nQ," + b"y" * (20 * MB) + b"\n",
             says="huge_cell.csv, line 2: the line is longer than 8.4 MB; expected one example per line"),
        Case("many_columns.csv", lambda: _wide_csv(extra_known=False),
             says=f"many_columns.csv: found columns extra_0, extra_1, extra_2, extra_3, extra_4, extra_5, extra_6, "
                  f"extra_7, extra_8, extra_9 and {WIDE - 10} more; expected columns {ACCEPTED}, or map yours "
                  "(e.g. --map prompt=question,completion=answer)"),
        Case("many_columns.jsonl", lambda: lines(QA, {f"c{i}": "x" for i in range(WIDE)}),
             says=f"many_columns.jsonl, line 2: missing column 'prompt' (found: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 "
                  f"and {WIDE - 10} more)"),
        # --- CSV/TSV structure
        Case("unbalanced_quotes.csv", lambda: b'prompt,completion\nHi,"Hello\nBye,See you\nQ,A\n',
             says="unbalanced_quotes.csv, row 2: a quoted cell is never closed (the file ends inside quotes); "
                  "close the quote or remove it"),
        Case("text_after_quote.csv", lambda: b'prompt,completion\nHi,"Hello" there\n',
             says="text_after_quote.csv, row 2: a quoted cell has more text after its closing quote; put the whole "
                  "cell in quotes and double the quotes inside it (\"\")"),
        Case("duplicate_columns.csv", lambda: b"prompt,completion,prompt\nQ,A,Q2\n",
             says="duplicate_columns.csv, row 1: column 'prompt' appears twice in the header (columns 1 and 3); "
                  "give each column its own name"),
        Case("duplicate_columns.tsv", lambda: b"text\ttext\nA\tB\n",
             says="duplicate_columns.tsv, row 1: column 'text' appears twice in the header (columns 1 and 2); "
                  "give each column its own name"),
        Case("duplicate_columns.parquet", _duplicate_parquet,
             says="duplicate_columns.parquet: column 'completion' appears twice (columns 2 and 3); give each "
                  "column its own name"),
        Case("extra_cells.csv", lambda: b"prompt,completion\nQ,A\nQ,A,B\n",
             says="extra_cells.csv, row 3: has 3 cells but the header has 2 columns (prompt, completion); quote "
                  "cells that contain ','"),
        Case("blank_header.csv", lambda: b"prompt,,completion\nQ,x,A\n",
             says="blank_header.csv, row 1: column 2 has no name in the header"),
        # empty columns after the last named one (a spreadsheet's) are read without them, while they hold nothing
        Case("trailing_blank.csv", lambda: b"prompt,completion,,\nQ,A,,\nQ2,A2,x,\n",
             says="trailing_blank.csv, row 3: column 3 holds 'x' but has no name in the header (row 1); name it, "
                  "or delete the column"),
        Case("commas.tsv", lambda: b"prompt,completion\nHi,Hello\n",
             says="commas.tsv, row 1: the header is one column 'prompt,completion'; this looks like a CSV file "
                  "(separated by ','); save it as .csv"),
        # --- the wrong kind asked for
        Case("not_pairs.jsonl", lambda: lines(QA), args=("--kind", "preference"), options={"kind": "preference"},
             says="not_pairs.jsonl: found columns prompt, completion; expected for preference data columns "
                  "prompt+chosen+rejected | chosen+rejected, or map yours "
                  "(e.g. --map prompt=question,completion=answer)"),
    ]


def _formulas(rows):
    cells = [m["content"] for r in rows for m in r["messages"]]
    assert cells == ["=1+1", '=HYPERLINK("http://x.example","click")', "+44 20 7946 0000", "-2+3",
                     "@SUM(A1:A2)", "=cmd|' /C calc'!A0"], cells


def _quoted(rows):
    assert rows[0]["messages"][1]["content"] == "Red,\nBlue\n\"and\" green", rows[0]


def _crlf(rows):
    assert rows[0]["messages"][0]["content"] == "Hi", rows[0]  # no "\r" left at the end of a cell


def _pairs(rows):
    assert rows[0]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "Hello!"}]


def _wide_ok(rows):
    assert rows == [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]


def good_cases() -> list[Case]:
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! 👋"}]
    return [
        Case("bom.jsonl", lambda: b"\xef\xbb\xbf" + lines(QA, QA2), rows=2),
        Case("bom_crlf.csv", lambda: b"\xef\xbb\xbfprompt,completion\r\nHi,Hello\r\nBye,See you\r\n", rows=2,
             check=_crlf),
        Case("crlf.tsv", lambda: b"prompt\tcompletion\r\nHi\tHello\r\n", rows=1, check=_crlf),
        Case("quoted_newlines.csv", lambda: b'prompt,completion\n"List, two colours","Red,\nBlue\n""and"" green"\n'
                                            b"Q,A\n", rows=2, check=_quoted),
        Case("formulas.csv", lambda: b'prompt,completion\n=1+1,"=HYPERLINK(""http://x.example"",""click"")"\n'
                                     b"+44 20 7946 0000,-2+3\n@SUM(A1:A2),=cmd|' /C calc'!A0\n", rows=3,
             check=_formulas),
        Case("conversational_pairs.jsonl", lambda: lines(*[{
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            "chosen": [{"role": "assistant", "content": "Hello!"}],
            "rejected": [{"role": "assistant", "content": "What do you want?"}]}] * 2), rows=2, check=_pairs),
        Case("implicit_pairs.jsonl", lambda: lines({"chosen": chat, "rejected": [chat[0], {
            "role": "assistant", "content": "Go away."}]}), rows=1),
        Case("sharegpt.json", lambda: json.dumps([{"conversations": [
            {"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"}]}]).encode(), rows=1),
        Case("alpaca.json", lambda: json.dumps({"data": [
            {"instruction": "Say hi", "input": "", "output": "Hi"},
            {"instruction": "Add", "input": "2+2", "output": "4"}]}).encode(), rows=2),
        Case("kto.csv", lambda: b"prompt,completion,label\nQ,Good answer,yes\nQ,Bad answer,no\n", rows=2),
        Case("pairs.tsv", lambda: b"prompt\tchosen\trejected\nHi\tHello!\tGo away.\n", rows=1),
        Case("table.parquet", lambda: parquet({"prompt": ["Q1", "Q2"], "completion": ["A1", "A2"], "score": [1, 2]}),
             rows=2),
        Case("notes.txt", lambda: "First note.\n\nSecond note, ünïcödé.\n".encode(), rows=2),
        Case("chat.jsonl", lambda: lines({"messages": chat}), rows=1),
        Case("wide.csv", lambda: _wide_csv(extra_known=True), rows=1, check=_wide_ok),
        Case("minified.json", _minified_json, rows=900),
        Case("long_cell.csv", lambda: b"text\n" + b"A whole document. " * 60_000 + b"\n", rows=1),
        Case("nan_optional.parquet", lambda: parquet({"instruction": ["Say hi"], "input": [float("nan")],
                                                      "output": ["Hi"]}), rows=1),
    ]


def write_corpus(folder: Path) -> list[Case]:
    """Write every case into `folder` (bad ones under bad/, good ones under good/); return them."""
    cases = bad_cases() + good_cases()
    for case in cases:
        sub = Path(folder) / ("bad" if case.bad else "good")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / case.name).write_bytes(case.make())
    return cases


def path_of(folder: Path, case: Case) -> Path:
    return Path(folder) / ("bad" if case.bad else "good") / case.name


if __name__ == "__main__":  # write the corpus somewhere to look at it: python -m tests.fuzz_corpus DIR
    import sys

    written = write_corpus(Path(sys.argv[1]))
    print(f"{sum(c.bad for c in written)} bad and {sum(not c.bad for c in written)} good files in {sys.argv[1]}")
