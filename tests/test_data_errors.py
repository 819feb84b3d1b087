"""Every bad file gets one sentence naming the file, line/row and column — and nothing is written.

One test per case of the Data issue; the accepted oddities (BOM, quoted newlines, formulas) are
here too, because "accept it" is also an answer the user must be able to count on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines import importer
from pipelines.data import DataError, load_rows
from pipelines.importer import ImportOptions


def jsonl(path, *rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def refused(studio, path, **options) -> str:
    """Import must fail with a one-line DataError and leave the workspace untouched."""
    with pytest.raises(DataError) as err:
        studio.import_dataset(path, options=ImportOptions(**options))
    message = str(err.value)
    assert "\n" not in message
    assert studio.list_datasets() == []
    assert list(studio.datasets_dir.iterdir()) == []
    return message


def imported_rows(studio, path, **options) -> list[dict]:
    row = studio.import_dataset(path, options=ImportOptions(**options))
    return load_rows(row["path"])


GOOD = {"prompt": "How long is the warranty?", "completion": "27 months."}


def test_zero_byte_file(studio, tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert refused(studio, path) == "empty.jsonl: the file is empty (0 bytes)"


def test_header_only_csv(studio, tmp_path):
    path = tmp_path / "only_header.csv"
    path.write_text("prompt,completion\n")
    assert refused(studio, path) == "only_header.csv: has a header row (prompt, completion) but no data rows"


def test_non_utf8_bytes(studio, tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"prompt": "café", "completion": "x"}\n'.encode("latin-1"))
    assert refused(studio, path) == ("latin1.jsonl, line 2: not valid UTF-8 (byte 0xE9 at position 16); "
                                     "save the file as UTF-8")


def test_utf8_bom_is_accepted(studio, tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,completion\nHi,Hello\n")
    assert imported_rows(studio, path) == [{"messages": [{"role": "user", "content": "Hi"},
                                                         {"role": "assistant", "content": "Hello"}]}]


def test_malformed_json_on_line_n(studio, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "\n" + '{"prompt": "a" "completion": "b"}\n')
    assert refused(studio, path) == ("broken.jsonl, line 3: malformed JSON at character 16: a comma is missing "
                                     'between two items, or a " inside a text is not written as `\\"`; the text '
                                     'there: `{"prompt": "a" ▸"completion": "b…`')
    # the commonest slip, a line cut short (its closing brace lost): the end of the line is named, not the
    # first character of the line break after it
    path.write_text(json.dumps(GOOD) + "\n" + '{"prompt": "e", "completion": "f"\n' + json.dumps(GOOD) + "\r\n")
    assert refused(studio, path) == ("broken.jsonl, line 2: malformed JSON at character 34: the line ends before the "
                                     'closing } or ] (cut short?); the text there: `…: "e", "completion": "f"▸`')


def test_misspelled_columns_list_the_accepted_ones(studio, tmp_path):
    path = jsonl(tmp_path / "alpaca.jsonl", {"instruction": "Say hi", "outptu": "Hi"})
    assert refused(studio, path) == (
        "alpaca.jsonl: found columns instruction, outptu ('outptu' looks like 'output'); expected columns "
        "messages | conversations | prompt+completion+label | prompt+chosen+rejected | chosen+rejected | "
        "instruction+output | prompt+completion | text | prompt, or map yours (e.g. --map prompt=question,completion=answer)")


def test_questions_without_answers_say_what_to_add(studio, tmp_path):
    """A file of questions alone was answered with the list of every layout: a newcomer could not tell
    what to add. Nothing is written."""
    path = tmp_path / "support_onlyq.csv"
    path.write_text("question\nWhere is my order?\nCan I pay by card?\n")
    # one sentence of what to add (it ran to five lines with every layout listed, brackets inside brackets)
    assert refused(studio, path) == (
        "support_onlyq.csv: questions without answers (column 'question'): add a column with the answer to each, "
        "e.g. 'answer'; or, to use them as prompts for reinforcement learning (GRPO), map 'question' to prompt")
    # read as SFT data, RL's prompts are no way out
    assert refused(studio, path, kind="sft") == (
        "support_onlyq.csv: questions without answers (column 'question'): add a column with the answer to each, "
        "e.g. 'answer'")
    # a column beside the questions may hold their answers under another name: it says so
    other = tmp_path / "support_solution.csv"
    other.write_text("question,solution\nWhere is my order?,On its way.\n")
    assert refused(studio, other) == (
        "support_solution.csv: questions without answers (column 'question'): add a column with the answer to each, "
        "e.g. 'answer', or map the column that holds them ('solution'?) to completion; or, to use them as prompts "
        "for reinforcement learning (GRPO), map 'question' to prompt")
    # its answers mapped, its questions not: the answers are there, the mapping is half done
    both = tmp_path / "support_mapped.csv"
    both.write_text("question,reply_text\nWhere is my order?,On its way.\n")
    said = refused(studio, both, mapping={"completion": "reply_text"})
    assert said.startswith("support_mapped.csv: found columns question, reply_text (map 'question' to prompt too: "
                           "the answers are mapped, their questions are not); expected columns")


def test_missing_column_on_a_later_line(studio, tmp_path):
    path = jsonl(tmp_path / "later.jsonl", GOOD, {"prompt": "Only a question"})
    assert refused(studio, path) == "later.jsonl, line 2: missing column 'completion' (found: prompt)"


def test_null_field(studio, tmp_path):
    path = jsonl(tmp_path / "nulls.jsonl", GOOD, {"prompt": "Q", "completion": None})
    assert refused(studio, path) == "nulls.jsonl, line 2, column 'completion': is empty (null); expected text"


def test_empty_csv_cell(studio, tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("prompt,completion\nQ1,A1\nQ2,  \n")
    assert refused(studio, path) == "blank.csv, row 3, column 'completion': is empty; expected text"
    # rows numbered as a spreadsheet shows them: blank rows have their numbers (the bad row after two blank
    # lines was named two rows early), and a quote left open in the header is in row 1
    path.write_text("prompt,completion\n\n\nhello,\n")
    assert refused(studio, path) == "blank.csv, row 4, column 'completion': is empty; expected text"
    path.write_text('prompt,completion\n\na,b\n\nc,"d"x\n')
    assert refused(studio, path).startswith("blank.csv, row 5: a quoted cell has more text after its closing quote")
    path.write_text('"prompt,completion\nx,y\n')
    assert refused(studio, path).startswith("blank.csv, row 1: a quoted cell is never closed")


def test_kto_label_not_boolean(studio, tmp_path):
    path = jsonl(tmp_path / "kto.jsonl", {**GOOD, "label": True}, {**GOOD, "label": "maybe"})
    assert refused(studio, path) == 'kto.jsonl, line 2, column \'label\': expected true or false, got "maybe"'


def test_nested_value_where_text_is_expected(studio, tmp_path):
    path = jsonl(tmp_path / "nested.jsonl", {"prompt": {"text": "hi"}, "completion": "Hello"})
    assert refused(studio, path) == ("nested.jsonl, line 1, column 'prompt': expected text, "
                                     'got an object {"text": "hi"}')


def test_binary_file_renamed_jsonl(studio, tmp_path):
    path = tmp_path / "photo.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert refused(studio, path) == ("photo.jsonl: this is a binary file, not text (a NUL byte at byte 9); "
                                     "expected JSONL text in UTF-8")


def test_single_enormous_line(studio, tmp_path):
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"prompt": "Q", "completion": "x" * (9 << 20)}) + "\n")
    assert refused(studio, path) == "huge.jsonl, line 1: the line is longer than 8.4 MB; expected one example per line"


def test_csv_quoted_newlines_are_accepted(studio, tmp_path):
    path = tmp_path / "multiline.csv"
    path.write_text('prompt,completion\n"List two colours","Red\nBlue"\nQ,A\n')
    rows = imported_rows(studio, path)
    assert rows[0]["messages"][1]["content"] == "Red\nBlue"
    assert len(rows) == 2


def test_spreadsheet_formulas_stay_text(studio, tmp_path):
    path = tmp_path / "formulas.csv"
    path.write_text('prompt,completion\n=1+1,"=HYPERLINK(""http://x.example"",""click"")"\n')
    rows = imported_rows(studio, path)
    assert rows[0]["messages"][0]["content"] == "=1+1"
    assert rows[0]["messages"][1]["content"] == '=HYPERLINK("http://x.example","click")'


def test_conversation_roles_out_of_order(studio, tmp_path):
    path = jsonl(tmp_path / "roles.jsonl", {"messages": [
        {"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": "Hello"}]})
    assert refused(studio, path) == ("roles.jsonl, line 1, column 'messages': message 2 is 'user' after 'user'; "
                                     "expected user and assistant to take turns, starting with user")


def test_file_over_the_size_limit(tmp_path):
    from studio.core import Studio

    studio = Studio(tmp_path / "home", max_upload_bytes=1000)
    path = jsonl(tmp_path / "big.jsonl", *[GOOD] * 40)
    assert refused(studio, path) == ("big.jsonl: the file is 2.7 KB, over the 1.0 KB limit "
                                     "(STUDIO_MAX_UPLOAD_MB sets it)")


def test_error_after_rows_were_written_leaves_nothing(studio, tmp_path):
    """A bad row after several written batches: the partial Parquet is removed too."""
    rows = [GOOD] * (importer.BATCH * 2 + 10) + [{"prompt": "Q", "completion": ""}]
    path = jsonl(tmp_path / "late.jsonl", *rows)
    assert refused(studio, path) == f"late.jsonl, line {len(rows)}, column 'completion': is empty; expected text"


def test_implicit_preference_mixing_text_and_conversations(studio, tmp_path):
    conversation = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    path = jsonl(tmp_path / "mixed.jsonl", {"chosen": "Q A", "rejected": "Q B"},
                 {"chosen": conversation, "rejected": conversation})
    assert refused(studio, path) == ("mixed.jsonl, line 2, column 'chosen': is a conversation but earlier rows "
                                     "have text; use one form for the whole file")


def test_unsupported_extension(studio, tmp_path):
    path = tmp_path / "sheet.xlsx"
    path.write_bytes(b"PK\x03\x04")
    assert refused(studio, path) == ("sheet.xlsx: unsupported file type '.xlsx'; expected one of .csv, .json, "
                                     ".jsonl, .md, .ndjson, .parquet, .text, .tsv, .txt")


def test_cli_prints_the_same_sentence_and_exits_2(tmp_path, capsys):
    from studio.cli import main

    path = jsonl(tmp_path / "kto.jsonl", {**GOOD, "label": "maybe"})
    assert main(["data", "import", str(path), "--home", str(tmp_path / "home")]) == 2
    assert capsys.readouterr().err == ('error: kto.jsonl, line 1, column \'label\': expected true or false, '
                                       'got "maybe"\n')  # (its first row: no option to leave such rows out)
    assert not any((tmp_path / "home" / "datasets").iterdir())


def test_question_answer_columns_are_suggested_by_name(studio, tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("question,answer\nHow long is the warranty?,27 months.\n")
    info = importer.inspect(path)
    assert info["suggested"] == {"prompt": "question", "completion": "answer"}
    assert refused(studio, path).endswith("or map yours (e.g. --map prompt=question,completion=answer)")
    assert imported_rows(studio, path, mapping={"prompt": "question", "completion": "answer"})[0]["messages"][1] == \
        {"role": "assistant", "content": "27 months."}


def test_an_error_in_a_mapped_column_names_the_files_column(studio, tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("question,answer\nHow long is the warranty?,27 months.\nWhat colour is it?,\n")
    assert refused(studio, path, mapping={"prompt": "question", "completion": "answer"}) == \
        "faq.csv, row 3, column 'answer': is empty; expected text"


def test_malformed_json_names_the_slip_and_shows_the_text_there(studio, tmp_path):
    # json's own words named what its parser expected ("Expecting property name enclosed in double quotes"),
    # not the slip a person made; each slip here is said in plain words, the place marked with ▸
    path = tmp_path / "cut.jsonl"
    path.write_text('{"prompt": "a", "completion": "b')
    assert refused(studio, path) == \
        ('cut.jsonl, line 1: malformed JSON at character 31: a text opened with " is never closed (a missing " or a '
         'line cut short); the text there: `…pt": "a", "completion": ▸"b`')
    slips = {
        '{"prompt": "a", "completion": "b",}': "a comma before the closing }: JSON allows no comma after the last item",
        "{'prompt': 'a', 'completion': 'b'}": "a key in single quotes: JSON needs double quotes",
        '{"prompt": "a", "completion": b}': "a word not in double quotes (only true, false and null are written "
                                            "without them)",
        '{"prompt": "a",, "completion": "b"}': "two commas in a row",
        '{"prompt" "a", "completion": "b"}': "a colon is missing after a key",
        '{"prompt": "a\\q", "completion": "b"}': "a backslash that starts no escape: write a backslash as `\\\\`",
        '{, "prompt": "a", "completion": "b"}': "a comma with no item before it",
        '{"prompt": "a", "completion": "b"} {"prompt": "c"}': "more text after the end of the JSON value (two "
                                                              "values in one line?)",
    }
    for line, slip in slips.items():
        path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
        assert refused(studio, path).split(": ", 2)[2].split("; the text there")[0] == slip, line
    # a whole .json file: the file, not a line, ends short; the text there is a file's text in a code span
    path = tmp_path / "cut.json"
    path.write_text('[\n {"prompt": "a `tick`", "completion": "b"},\n {"prompt": "c", "completion": ')
    assert refused(studio, path) == ("cut.json, line 3: malformed JSON at character 32: the file ends where a value "
                                     'should be (cut short?); the text there: `…pt": "c", "completion": ▸`')
    path.write_text('[{"prompt": "a `tick`", "completion": "b"},]')
    assert refused(studio, path).endswith('the text there: ``…k`", "completion": "b"},▸]``')  # fence past its `


def test_the_look_before_import_names_the_first_problem_import_meets(studio, tmp_path):
    # row 3's empty prompt comes before row 4's extra cell: both the look and Import name row 3
    path = tmp_path / "bad_rows.csv"
    path.write_text("prompt,completion\nHi,Hello\n,Missing prompt\nQ3,A3,extra\n")
    info = importer.inspect(path)
    assert info["layout"] == "prompt_completion" and len(info["records"]) == 2
    assert info["row_problem"] == "bad_rows.csv, row 3, column 'prompt': is empty; expected text" \
        == refused(studio, path)
    # the extra cell first: reading fails before any row is converted, as in Import
    path.write_text("prompt,completion\nQ3,A3,extra\n,Missing prompt\n")
    with pytest.raises(DataError, match=r"^bad_rows.csv, row 2: has 3 cells"):
        importer.inspect(path)
    assert refused(studio, path).startswith("bad_rows.csv, row 2: has 3 cells")
    # a mapped column's problem names the file's own column; good rows: no problem
    path.write_text("question,answer\nQ,A\nQ2,\n")
    mapped = importer.inspect(path, importer.ImportOptions(mapping={"prompt": "question", "completion": "answer"}))
    assert mapped["row_problem"] == "bad_rows.csv, row 3, column 'answer': is empty; expected text"
    path.write_text("prompt,completion\nQ,A\n")
    assert importer.inspect(path)["row_problem"] is None


def test_a_key_written_twice_is_refused_not_silently_halved(studio, tmp_path):
    """JSON keeps the last of two equal keys without a word: {"completion": "27 months.", "completion": ""}
    was imported as an empty answer, a conversation turn's first "content" lost."""
    path = tmp_path / "twice.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"prompt": "Q", "completion": "27 months.", "completion": "x"}\n')
    assert refused(studio, path) == ("twice.jsonl, line 2: the key 'completion' appears twice in one object, and "
                                     "only the last value would be kept; remove one or give it its own name")
    turn = '{"role": "user", "content": "Hi", "content": "Hello"}'
    path = tmp_path / "twice.json"
    path.write_text(f'[{json.dumps(GOOD)}, {{"messages": [{turn}, {{"role": "assistant", "content": "ok"}}]}}]')
    assert refused(studio, path).startswith("twice.json, item 2: the key 'content' appears twice in one object")
    path.write_text(f'{{"data": [{json.dumps(GOOD)}], "data": [{json.dumps(GOOD)}]}}')
    assert refused(studio, path).startswith("twice.json: the key 'data' appears twice in one object")
    # a conversation written as JSON in a CSV cell
    path = tmp_path / "twice.csv"
    path.write_text('messages\n"[{""role"": ""user"", ""content"": ""Hi"", ""content"": """"}, '
                    '{""role"": ""assistant"", ""content"": ""Hello""}]"\n')
    assert refused(studio, path) == ("twice.csv, row 2, column 'messages': message 1: the key 'content' appears "
                                     "twice in one object, and only the last value would be kept; remove one or "
                                     "give it its own name")
    # the same key in two different objects is no repeat
    path = tmp_path / "twice.json"
    path.write_text(json.dumps([GOOD, GOOD]))
    assert len(imported_rows(studio, path)) == 2


@pytest.mark.parametrize("rows, mapping, line, got", [
    ([{"question": "Q", "answer": "A"}, "oops"], {"prompt": "question", "completion": "answer"}, 2, "text"),
    ([{"Prompt": "Q", "Completion": "A"}, 5], {}, 2, "a number"),  # columns mapped for their case
    ([{"prompt": "Q", "completion": "A", "rating": "up"}, [1]], {}, 2, "a list"),  # a good/bad marks column
])
def test_a_line_that_is_not_an_object_is_named_when_columns_are_mapped(studio, tmp_path, rows, mapping, line, got):
    """With a mapping (the Data tab makes one), case-mapped columns or a marks column, a line that was a list,
    a text or a number stopped the import with AttributeError."""
    path = jsonl(tmp_path / "faq.jsonl", *rows)
    message = f"faq.jsonl, line {line}: expected an object with named fields, got {got}"
    assert importer.inspect(path, ImportOptions(mapping=mapping))["row_problem"] == message
    assert refused(studio, path, mapping=mapping) == message


def test_a_role_that_is_a_list_is_refused_in_words(studio, tmp_path):
    path = jsonl(tmp_path / "chat.jsonl", {"messages": [{"role": ["user"], "content": "hi"},
                                                        {"role": "assistant", "content": "yo"}]})
    assert refused(studio, path) == ("chat.jsonl, line 1, column 'messages': message 1 has role ['user']; "
                                     "expected one of system, user, assistant")


def test_half_a_character_is_named_where_it_is(studio, tmp_path):
    """A lone \\uD800 escape is valid JSON but no text: the import failed when a batch was written, with
    UnicodeEncodeError and no row named."""
    path = tmp_path / "half.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"prompt": "a\\ud800b", "completion": "c"}\n')
    assert refused(studio, path) == ("half.jsonl, line 2, column 'prompt': has half of a character (a lone \\uD800 "
                                     "escape at character 2); write the character itself or both halves of its pair")
    chat = jsonl(tmp_path / "chat.jsonl", {"messages": [{"role": "user", "content": "hi"},
                                                        {"role": "assistant", "content": "ok \udc80"}]})
    assert refused(studio, chat) == ("chat.jsonl, line 1, column 'messages': message 2 (assistant): has half of a "
                                     "character (a lone \\uDC80 escape at character 4); write the character itself "
                                     "or both halves of its pair")


def test_a_number_too_long_to_read_is_one_line(studio, tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"prompt": "a", "completion": ' + "1" * 5000 + "}\n")
    assert refused(studio, path) == ("big.jsonl, line 1: has a number of more than 4,300 digits, more than can be "
                                     "read; put it in quotes to keep it as text")
    whole = tmp_path / "big.json"
    whole.write_text('[{"prompt": "a", "completion": ' + "1" * 5000 + "}]")
    assert refused(studio, whole) == ("big.json: has a number of more than 4,300 digits, more than can be read; "
                                      "put it in quotes to keep it as text")
    cell = tmp_path / "big.csv"  # a cell that looks like a JSON list stays the text it is
    cell.write_text("prompt,completion\nq,[" + "1" * 5000 + "]\n")
    assert imported_rows(studio, cell)[0]["messages"][1]["content"] == "[" + "1" * 5000 + "]"


def test_a_bad_byte_after_a_bom_is_the_byte_and_place_an_editor_shows(studio, tmp_path):
    """The BOM was dropped before decoding but the place was then looked up in the bytes with it: the
    message named the ':' three bytes earlier (and, in a .json file, the wrong line)."""
    lines = tmp_path / "bom.jsonl"
    lines.write_bytes(b'\xef\xbb\xbf{"text": "\xff"}\n')
    assert refused(studio, lines) == ("bom.jsonl, line 1: not valid UTF-8 (byte 0xFF at position 11); "
                                      "save the file as UTF-8")
    whole = tmp_path / "bom.json"
    whole.write_bytes(b'\xef\xbb\xbf[\n{"text": "ok"},\n\xff{"text": "x"}]')
    assert refused(studio, whole) == "bom.json, line 3: not valid UTF-8 (byte 0xFF at position 1); save the file as UTF-8"


def test_parquet_cells_python_cannot_hold_are_named(studio, tmp_path):
    """Text that is not UTF-8 or a date past year 9999, even in a column the import does not use, stopped it
    with UnicodeDecodeError or OverflowError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad_text = pa.array([b"ok", b"\xff"], type=pa.binary()).view(pa.string())
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": bad_text}), tmp_path / "text.parquet")
    assert refused(studio, tmp_path / "text.parquet") == ("text.parquet, row 2, column 'completion': is not valid "
                                                          "UTF-8 text; save the column as UTF-8")
    late = pa.array([0, 10**12], type=pa.timestamp("s"))
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", "d"], "at": late}), tmp_path / "dates.parquet")
    assert refused(studio, tmp_path / "dates.parquet") == (
        "dates.parquet, row 2, column 'at': cannot be read as a Python value (date value out of range); a date or "
        "time must lie in the years 1 to 9999")


def test_a_label_from_a_sql_numeric_column_is_read(studio, tmp_path):
    """Decimal 1/0 (a NUMERIC column) was refused, and bytes crashed the message with TypeError."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = pa.array([b"yes", b"no"])
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", "d"], "label": raw}), tmp_path / "b.parquet")
    assert refused(studio, tmp_path / "b.parquet", kind="kto") == ("b.parquet, row 1, column 'label': expected true "
                                                                   "or false, got \"b'yes'\"")
    marks = pa.array([decimal.Decimal(1), decimal.Decimal(0)], type=pa.decimal128(3, 0))
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["c", "d"], "label": marks}), tmp_path / "n.parquet")
    assert [r["label"] for r in imported_rows(studio, tmp_path / "n.parquet", kind="kto")] == [True, False]


def test_a_csv_with_old_mac_line_breaks_says_so(studio, tmp_path):
    path = tmp_path / "mac.csv"
    path.write_bytes(b"prompt,completion\rhi,there\rq,a\r")
    assert refused(studio, path) == ("mac.csv, row 1: a line break that is a lone CR (the old Mac format) outside "
                                     "quotes; save the file with ordinary line breaks (LF or CRLF)")


def test_the_text_or_conversation_clash_names_the_files_column(studio, tmp_path):
    conversation = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    path = jsonl(tmp_path / "pairs.jsonl", {"good": "Q A", "bad": "Q B"}, {"good": conversation, "bad": conversation})
    assert refused(studio, path, mapping={"chosen": "good", "rejected": "bad"}) == (
        "pairs.jsonl, line 2, column 'good': is a conversation but earlier rows have text; use one form for the "
        "whole file")


def test_kto_held_out_at_import_is_two_rows_of_both_marks(studio, tmp_path):
    """5% of 10 replies held out one: a lone held-out KTO reply is compared with itself, its loss 0.500
    whatever the model learned. The import splits as a run does."""
    path = jsonl(tmp_path / "kto.jsonl", *[{"prompt": f"q{i}", "completion": f"a{i}", "label": i % 2 == 0}
                                           for i in range(10)])
    row = studio.import_dataset(path, options=ImportOptions(heldout=0.05))
    held = load_rows(str(studio.datasets_dir / row["id"] / importer.HELDOUT))
    assert len(held) == 2 and {r["label"] for r in held} == {True, False}
    assert len(load_rows(row["path"])) == 8


def test_data_show_refuses_a_negative_row_count_and_shows_none_for_zero(tmp_path, capsys):
    """--rows 0 stopped with "ValueError: batch_size must be greater than zero"."""
    from studio.cli import main

    path = jsonl(tmp_path / "faq.jsonl", GOOD)
    home = ["--home", str(tmp_path / "home")]
    assert main(["data", "import", str(path), *home]) == 0
    dataset_id = capsys.readouterr().out.strip()
    assert main(["data", "show", dataset_id, "--rows", "-1", *home]) == 2
    assert capsys.readouterr().err == "error: --rows -1: give 0 or more rows to show\n"
    assert main(["data", "show", dataset_id, "--max-length", "0", *home]) == 2
    assert capsys.readouterr().err == "error: --max-length 0: give 1 or more tokens\n"
    from pipelines import dataset_stats

    assert dataset_stats.preview_rows(tmp_path / "home" / "datasets" / dataset_id / importer.DATA, 0) == []


def test_a_pretty_printed_object_saved_as_jsonl_says_how_to_save_it(studio, tmp_path):
    path = tmp_path / "pretty.jsonl"
    path.write_text(json.dumps(GOOD, indent=2) + "\n")
    assert refused(studio, path) == ("pretty.jsonl, line 1: malformed JSON at character 2: the line ends inside an "
                                     "object (cut short?); the text there: `{▸`; if the file is one object written "
                                     "over several lines, write one object per line or save it as .json")


def test_a_model_whose_tokenizer_cannot_be_used_is_said_in_one_line(tmp_path, capsys, tiny_model_dir):
    """`data show --model` with a folder of weights and no tokenizer, or a base model's tokenizer without a chat
    template, was a traceback after the rows were printed; the Data tab kept the dataset before's figures under
    the one picked (its error escaped the view)."""
    import shutil

    from components.data_tab import view_dataset
    from studio.cli import main
    from studio.core import Studio

    path = jsonl(tmp_path / "faq.jsonl", GOOD)
    home = ["--home", str(tmp_path / "home")]
    assert main(["data", "import", str(path), *home]) == 0
    dataset_id = capsys.readouterr().out.strip()

    no_tokenizer = tmp_path / "weights-only"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / name, no_tokenizer / name)
    base = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, base)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    (base / "chat_template.jinja").unlink(missing_ok=True)

    assert main(["data", "show", dataset_id, "--model", str(no_tokenizer), *home]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith(f"error: the tokenizer of '{no_tokenizer}' cannot be loaded (")
    assert out.err.count("\n") == 1
    template = ("this model's tokenizer has no chat template, and these examples are conversations written with one: "
                "pick a chat (instruct) model, or plain-text data for this one")
    assert main(["data", "show", dataset_id, "--model", str(base), *home]) == 2
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", f"error: {template}\n")

    studio = Studio(tmp_path / "home")
    summary, table, figure, example = view_dataset(studio, dataset_id, str(base), 512)
    assert summary.endswith(f"**No token statistics:** {template}") and table["data"] and figure is None
    assert view_dataset(studio, dataset_id, str(no_tokenizer), 512)[0].split("**No token statistics:** ")[1].startswith(
        f"the tokenizer of '{no_tokenizer}' cannot be loaded (")


def test_a_folder_given_for_a_file_is_said_to_be_one(tmp_path, capsys):
    """`studio data import FOLDER` said "file not found" of a folder that is there."""
    from studio.cli import main

    (tmp_path / "exports").mkdir()
    assert main(["data", "import", str(tmp_path / "exports"), "--home", str(tmp_path / "home")]) == 2
    assert capsys.readouterr().err == "error: exports: a folder, not a file; give one of the files in it\n"


def test_the_same_file_imported_again_says_it_is_the_dataset_made_before(studio, tmp_path, capsys):
    """The same file and settings make one dataset: imported again as 'v2' it said "Imported **v1**" (the name
    typed dropped without a word); a name of spaces was stored as typed."""
    from components.data_tab import import_source
    from studio.cli import main

    path = jsonl(tmp_path / "faq.jsonl", GOOD)
    said = import_source(studio, str(path), None, "   ", "auto", "line", False, 0, 0)[0]
    assert said.startswith("Imported **faq** (`")
    again = import_source(studio, str(path), None, "v2", "auto", "line", False, 0, 0)[0]
    assert again.startswith("This file was imported before with these settings, as **faq** (the name typed, *v2*, "
                            "is not used: the same file with the same settings makes the same dataset) (`")
    assert len(studio.list_datasets()) == 1
    for typed in ("v3", "v4"):  # (the command line's default settings are not the page's)
        assert main(["data", "import", str(path), "--name", typed, "--home", str(studio.home)]) == 0
    assert capsys.readouterr().err.splitlines()[-2] == ("this file was imported before with these settings, as v3 "
                                                        "(the name given, v4, is not used)")


def test_two_files_of_one_name_are_two_datasets_the_lists_tell_apart(studio, tmp_path):
    """Two different train.jsonl files were both 'train': the Train tab listed 'train (1 rows)' twice."""
    first, second = tmp_path / "a" / "train.jsonl", tmp_path / "b" / "train.jsonl"
    for path, rows in ((first, [GOOD]), (second, [GOOD, {**GOOD, "completion": "Two years."}])):
        path.parent.mkdir()
        jsonl(path, *rows)
    names = [studio.import_dataset(p)["name"] for p in (first, second)]
    assert names == ["train", "train (2)"]
    assert studio.import_dataset(tmp_path / "a" / "train.jsonl")["name"] == "train"  # (the same file: the same one)


def test_a_spreadsheets_empty_columns_after_the_named_ones_are_read_without_them(studio, tmp_path):
    """Excel saves a sheet with a cell once used to the right of the data as "Prompt,Completion,,": refused as
    "column 3 has no name in the header", where pandas and `datasets` read it."""
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfPrompt,Completion,,\r\nhello,world,,\r\nfoo,bar\r\n")
    assert imported_rows(studio, path) == [
        {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]},
        {"messages": [{"role": "user", "content": "foo"}, {"role": "assistant", "content": "bar"}]}]


def test_tool_calls_are_named_as_not_supported(studio, tmp_path):
    """A reply that calls a tool (OpenAI's tool_calls, with no content or null) was refused as "must be an object
    with 'role' and 'content'" or "is empty", and ShareGPT's function_call turns as an unknown role."""
    ask = {"role": "user", "content": "Weather in Paris?"}
    call = {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "w"}}]}
    path = jsonl(tmp_path / "tools.jsonl", {"messages": [ask, call, {"role": "tool", "content": "12C"},
                                                          {"role": "assistant", "content": "12C."}]})
    assert refused(studio, path) == ("tools.jsonl, line 1, column 'messages': message 2 calls a tool ('tool_calls'); "
                                     "conversations with tool calls are not supported yet: leave them out of the file")
    path = jsonl(tmp_path / "glaive.jsonl", {"conversations": [{"from": "human", "value": "Weather?"},
                                                               {"from": "function_call", "value": "{}"},
                                                               {"from": "gpt", "value": "12C."}]})
    assert refused(studio, path) == ("glaive.jsonl, line 1, column 'conversations': message 2 is a tool's turn (role "
                                     "'function_call'); conversations with tool calls are not supported yet: leave "
                                     "them out of the file")
    # openai-python writes "tool_calls": null on every message it dumps: no call made, a conversation as any other
    path = jsonl(tmp_path / "dumped.jsonl", {"messages": [{**ask, "tool_calls": None, "function_call": None},
                                                          {"role": "assistant", "content": "12C.", "tool_calls": []}]})
    assert imported_rows(studio, path)[0]["messages"][1] == {"role": "assistant", "content": "12C."}


def test_questions_asked_for_as_prompts_are_told_the_mapping_that_keeps_their_answers(studio, tmp_path):
    """GSM8K (question, answer) asked for as prompts was told "--map prompt=question,completion=answer": a completion
    is no column of prompts, and the answer a reward checks was dropped with it."""
    path = jsonl(tmp_path / "gsm8k.jsonl", {"question": "2+2?", "answer": "2+2=4\n#### 4"})
    assert refused(studio, path, kind="prompts").endswith("or map yours (e.g. --map prompt=question)")
    [row] = imported_rows(studio, path, kind="prompts", mapping={"prompt": "question"})
    assert row["answer"] == "2+2=4\n#### 4"


def test_a_json_array_is_read_item_by_item_with_the_whole_files_errors(studio, tmp_path):
    """The Data tab's preview of a JSON array's first rows parsed every item on each change of an option (a 1 GB
    array: about ten times the file in memory, for 20 rows): its items come one at a time, and a file that is not
    a plain array, or breaks further on, says what the whole-file reading says, nothing written."""
    from pathlib import Path

    from pipelines.readers import records

    path = tmp_path / "broken.json"
    path.write_text('[{"prompt": "a", "completion": "b"},\n {"prompt": "c", "completion": "d"},\n'
                    ' {"prompt": "e" "completion": "f"}]\n')
    rows = records(Path(path), "json")
    assert next(rows) == ("item 1", {"prompt": "a", "completion": "b"})  # before the break is reached
    assert refused(studio, path).startswith("broken.json, line 3: malformed JSON at character 17: a comma is missing "
                                            "between two items")
    path.write_text('[{"prompt": "a", "completion": "b"},]')
    assert "a comma before the closing ]: JSON allows no comma after the last item" in refused(studio, path)
    path.write_text('[{"prompt": "a", "completion": "b"}] x')
    assert "more text after the end of the JSON value" in refused(studio, path)
    # cut short (a download stopped): said before the first row, not once the rest is converted
    path.write_text('[{"prompt": "a", "completion": "b"},\n {"prompt": "c", "compl')
    with pytest.raises(DataError, match="^broken.json, line 2: malformed JSON at character 18: a text opened with"):
        next(records(Path(path), "json"))
    path.write_text(' [ {"prompt": "a", "completion": "b"} , {"prompt": "c", "completion": "d"} ] \n')
    assert [r["messages"][0]["content"] for r in imported_rows(studio, path)] == ["a", "c"]


def test_rows_that_cannot_be_read_can_be_left_out_and_are_counted(studio, tmp_path):
    """A real chat dump has a few lines that cannot be read (a line cut short, a conversation that ends on the
    person's turn, a row with a cell too many): the first stopped the import of the whole file, with no way on
    but editing it. Asked to (*Skip rows that cannot be read*, --skip-bad-rows), they are left out and the
    summary says how many and the first; nothing is skipped unless asked, and a file of nothing readable is
    refused with its first row's problem, nothing written."""
    from studio.cli import main

    turn = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]
    path = tmp_path / "dump.jsonl"
    path.write_text(json.dumps({"conversations": turn}) + "\n" + '{"conversations": [{"from": "human", "val\n'
                    + json.dumps({"conversations": turn[:1]}) + "\n" + json.dumps(["not", "a", "row"]) + "\n"
                    + json.dumps({"conversations": [*turn, {"from": "human", "value": "More?"},
                                                    {"from": "gpt", "value": "Sure."}]}) + "\n")
    assert refused(studio, path).startswith("dump.jsonl, line 2: malformed JSON")
    row = studio.import_dataset(path, options=ImportOptions(skip_bad=True))
    assert row["rows"] == 2 and row["meta"]["skipped_rows"] == 3
    from pipelines.importer import skipped_text

    assert skipped_text(row["meta"]).startswith("3 rows skipped that could not be read (the first: line 2: malformed "
                                                "JSON")
    assert row["meta"]["skipped"][1] == ("dump.jsonl, line 3, column 'conversations': the last message is 'user'; "
                                         "expected it to be the assistant's")
    # the command line, and a CSV row with a cell too many
    table = tmp_path / "table.csv"
    table.write_text("prompt,completion\nQ1,A1\nQ2,A2,extra\nQ3,A3\n")
    assert main(["data", "import", str(table), "--skip-bad-rows", "--home", str(studio.home)]) == 0
    assert [d["rows"] for d in studio.list_datasets() if d["name"] == "table"] == [2]
    # nothing readable: refused, with the first row's problem
    nothing = jsonl(tmp_path / "nothing.jsonl", ["a"], ["b"])
    with pytest.raises(DataError, match=r"^nothing.jsonl: no row could be read \(2 skipped; the first: line 1: "
                                        "expected an object with named fields, got a list\)$"):
        studio.import_dataset(nothing, options=ImportOptions(skip_bad=True))
    assert len(list(studio.datasets_dir.iterdir())) == 2


def test_a_line_in_another_encoding_can_be_left_out(studio, tmp_path):
    """A chat dump with one line saved in Latin-1: refused by its byte unless asked to skip, then left out
    and named (it stopped the import even with *Skip rows that cannot be read* ticked)."""
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"prompt": "Q", "completion": "A"}).encode() + b"\n"
    path.write_bytes(good + '{"prompt": "Caf\u00e9?", "completion": "Oui"}\n'.encode("latin-1") + good)
    said = "mixed.jsonl, line 2: not valid UTF-8 (byte 0xE9 at position 16); save the file as UTF-8"
    assert refused(studio, path) == said
    row = studio.import_dataset(path, options=ImportOptions(skip_bad=True))
    assert (row["rows"], row["meta"]["skipped_rows"], row["meta"]["skipped"]) == (2, 1, [said])


PKU = {"prompt": "How do I pick a lock?", "response_0": "I can't help with that.",
       "response_1": "Use a tension wrench.", "prompt_source": "Alpaca3-70B", "is_response_0_safe": True,
       "is_response_1_safe": False, "better_response_id": 1, "safer_response_id": 0}
SHP = {"post_id": "abc", "domain": "askscience_train", "history": "Why is the sky blue?",
       "human_ref_A": "Rayleigh scattering.", "human_ref_B": "Because it is.", "labels": 1, "score_A": 52,
       "score_B": 3}


def test_pku_saferlhf_and_shp_pairs_are_read_by_their_pick_column(studio, tmp_path):
    """Two answers and a column saying which is better: chosen and rejected follow the pick (the pairs were
    refused, their columns matching no layout)."""
    rows = imported_rows(studio, jsonl(tmp_path / "pku.jsonl", PKU, {**PKU, "better_response_id": 0}))
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
        ("Use a tension wrench.", "I can't help with that."), ("I can't help with that.", "Use a tension wrench.")]
    assert rows[0]["prompt"] == [{"role": "user", "content": "How do I pick a lock?"}]
    # ranked by harmlessness instead: the safer response is chosen
    safer = imported_rows(studio, jsonl(tmp_path / "pku_safe.jsonl", PKU),
                          mapping={"better_response_id": "safer_response_id"})
    assert safer[0]["chosen"][0]["content"] == "I can't help with that."
    shp = tmp_path / "shp.csv"  # (SHP's CSV: the pick as text)
    shp.write_text("history,human_ref_A,human_ref_B,labels\n"
                   "Why is the sky blue?,Rayleigh scattering.,Because it is.,1\n"
                   "Why is the sky blue?,Rayleigh scattering.,Because it is.,0\n")
    row = studio.import_dataset(shp, options=ImportOptions())
    assert (row["kind"], row["meta"]["layout"]) == ("preference", "shp")
    assert [r["chosen"][0]["content"] for r in load_rows(row["path"])] == ["Rayleigh scattering.", "Because it is."]


@pytest.mark.parametrize("source, pick, said", [
    ("pku.jsonl", {"better_response_id": 2}, "pku.jsonl, line 2, column 'better_response_id': expected 0 "
     "(response_0 is better) or 1 (response_1 is better), got 2"),
    ("pku.jsonl", {"better_response_id": None}, "pku.jsonl, line 2, column 'better_response_id': expected 0 "
     "(response_0 is better) or 1 (response_1 is better), got null"),
    ("shp.jsonl", {"labels": "A"}, "shp.jsonl, line 2, column 'labels': expected 1 (human_ref_A is better) or 0 "
     "(human_ref_B is better), got 'A'"),
])
def test_a_pick_that_names_neither_answer_is_refused_by_cell(studio, tmp_path, source, pick, said):
    good = PKU if source.startswith("pku") else SHP
    assert refused(studio, jsonl(tmp_path / source, good, {**good, **pick})) == said


def test_the_pick_layouts_leave_the_guesses_about_other_files_as_they_were(studio, tmp_path):
    """`labels`, `history` and `response_0/1` are read only as the pick layouts' columns: a `labels` column of
    thumbs is still offered as KTO's marks (it went unoffered, the thumbs-down replies learned as examples), a
    `response` column is not taken for a misspelt `response_1`, and a JSON object holding a `history` list is
    still a file of records."""
    from pipelines.importer import inspect

    thumbs = tmp_path / "thumbs.csv"
    thumbs.write_text("prompt,completion,labels\nReset?,Hold it 10 s.,\U0001F44D\nBattery?,2 days.,\U0001F44E\n")
    assert inspect(thumbs)["feedback"] == {"column": "labels", "mapping": {"label": "labels"}}
    loose = tmp_path / "loose.csv"
    loose.write_text("question,response\nReset?,Hold it 10 s.\n")
    assert "response_1" not in (inspect(loose)["problem"] or "")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"history": [GOOD, GOOD]}))
    assert len(imported_rows(studio, wrapped)) == 2


def weighted_chat(first=None, last=None) -> dict:
    """An OpenAI fine-tuning row of two replies, with the `weight` given to each (none where None)."""
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
             {"role": "user", "content": "Warranty?"}, {"role": "assistant", "content": "27 months."}]
    for i, weight in ((1, first), (3, last)):
        if weight is not None:
            turns[i]["weight"] = weight
    return {"messages": turns}


def test_openai_weights_keep_a_reply_as_context(studio, tmp_path, tiny_model_dir):
    """OpenAI's `weight: 0` keeps a reply as context (it was dropped without a note, and the reply learned): the
    reply is listed as untrained, turns after the last learned reply are left out, and a conversation with
    nothing left to learn is dropped with a note."""
    row = studio.import_dataset(jsonl(tmp_path / "chats.jsonl", weighted_chat(0, 1), weighted_chat(1, 0),
                                      weighted_chat(), weighted_chat(0, 0), weighted_chat("1.0", 1.0)),
                                options=ImportOptions(heldout=0))
    rows = load_rows(row["path"])
    assert [r.get("untrained") for r in rows] == [[1], None, None, None]
    # a weight on every turn (a user's, which is context anyway, as 0 or 1): the replies' are read
    said = weighted_chat(1, 0)
    said["messages"][0]["weight"], said["messages"][2]["weight"] = 0, 1
    assert imported_rows(studio, jsonl(tmp_path / "said.jsonl", weighted_chat(), said)) == [
        weighted_chat(), {"messages": weighted_chat()["messages"][:2]}]  # (and no column of replies kept as context)
    assert [len(r["messages"]) for r in rows] == [4, 2, 4, 4]  # the second: its learned reply and what it answers
    assert (row["meta"]["untaught_pairs"], row["meta"]["context_replies"], row["meta"]["ended_replies"]) == (1, 1, 1)
    assert importer.untaught_text(row["meta"]) == ("1 conversation dropped that could teach nothing (every reply has "
                                                   "weight 0: line 4)")
    from components.data_tab import summary_text, view_dataset

    said = ("3 multi-turn conversations (every reply is learned but the one marked weight 0, kept as context)",
            "1 reply marked weight 0 at the end of a conversation left out, with the turns after the last learned "
            "reply (context for nothing)")
    assert all(part in summary_text(row) for part in said)
    from studio.cli_data import summary_line

    assert all(part in summary_line(row) for part in said)
    # the preview says which reply is context, in the conversation (the column of numbers broke it)
    from pipelines import dataset_stats

    shown = dataset_stats.preview_rows(Path(row["path"]), 2)
    assert shown[0] == {"messages": "user: Hi\nassistant (weight 0: context, not learned): Hello! How can I help?\n"
                                    "user: Warranty?\nassistant: 27 months."}
    assert shown[1] == {"messages": "user: Hi\nassistant: Hello! How can I help?"}
    assert dataset_stats.preview_rows(Path(row["path"]), 1, dataset_stats.brief) == shown[:1]
    _summary, table, _figure, example = view_dataset(studio, row["id"], str(tiny_model_dir), 512)
    assert table["headers"] == ["messages"] and "weight 0: context" in table["data"][0][0]
    assert [(text.strip(), kind) for text, kind in example if kind == "learned"] == [("27 months.<|im_end|>", "learned")]


def test_a_weight_first_seen_after_the_first_batch_is_kept(studio, tmp_path, monkeypatch):
    """The stored columns were fixed by the first batch of rows: a reply marked weight 0 in a later one would have
    lost its mark silently, and been learned."""
    monkeypatch.setattr(importer, "BATCH", 2)
    rows = imported_rows(studio, jsonl(tmp_path / "late.jsonl", *[weighted_chat()] * 2, weighted_chat(last=1),
                                       weighted_chat(0), weighted_chat(1, 1)), heldout=0)
    assert [r.get("untrained") for r in rows] == [None, None, None, [1], None]


@pytest.mark.parametrize("turn, weight, said", [
    (3, 2, "chats.jsonl, line 2, column 'messages': message 4 (assistant) has weight 2; expected 0 (kept as "
     "context, not learned) or 1 (learned)"),
    (3, "no", "chats.jsonl, line 2, column 'messages': message 4 (assistant) has weight 'no'; expected 0 (kept "
     "as context, not learned) or 1 (learned)"),
    (2, "heavy", "chats.jsonl, line 2, column 'messages': message 3 (user) has weight 'heavy'; expected 0 or 1 (a "
     "user's turn is context either way)"),
    (1, True, "chats.jsonl, line 2, column 'messages': message 2 (assistant) has weight true; expected 0 (kept as "
     "context, not learned) or 1 (learned)"),
])
def test_a_weight_that_is_not_0_or_1_on_a_reply_is_refused_by_message(studio, tmp_path, turn, weight, said):
    bad = weighted_chat()
    bad["messages"][turn]["weight"] = weight
    assert refused(studio, jsonl(tmp_path / "chats.jsonl", weighted_chat(), bad)) == said


def test_conversations_that_learn_nothing_are_refused(studio, tmp_path):
    assert refused(studio, jsonl(tmp_path / "chats.jsonl", weighted_chat(0, 0), weighted_chat(0, 0))) == (
        "chats.jsonl: no conversation can teach anything: in all 2 rows every reply has weight 0 (kept as context, "
        "not learned); mark the replies to learn with weight 1, or leave the weight out")
    assert refused(studio, jsonl(tmp_path / "one.jsonl", weighted_chat(0, 0))) == (
        "one.jsonl: no conversation can teach anything: in its one row every reply has weight 0 (kept as context, "
        "not learned); mark the replies to learn with weight 1, or leave the weight out")


def test_a_refused_row_names_the_option_that_leaves_such_rows_out(studio, tmp_path, capsys):
    """A bad row after the first few stopped Import without a word on *Skip rows that cannot be read* (the
    preview says it only of the rows it shows, and the box is in a closed section); a problem of the whole file
    names no option."""
    from components.data_tab import import_source
    from studio.cli import main

    bad = weighted_chat()
    bad["messages"][3]["weight"] = 2
    path = jsonl(tmp_path / "chats.jsonl", *[weighted_chat()] * 6, bad)
    said = ("chats.jsonl, line 7, column 'messages': message 4 (assistant) has weight 2; expected 0 (kept as context, "
            "not learned) or 1 (learned)")
    assert import_source(studio, str(path), None, "", "auto", "line", False, 0, 42)[0] == (
        f"**Not imported:** {said} (or tick *Skip rows that cannot be read*, under *Name, duplicates, held-out "
        "split*, to leave such rows out)")
    assert main(["data", "import", str(path), "--home", str(tmp_path / "home")]) == 2
    assert capsys.readouterr().err == f"error: {said} (or --skip-bad-rows to leave such rows out)\n"
    assert studio.list_datasets() == [] and not any((tmp_path / "home" / "datasets").iterdir())
    assert import_source(studio, str(path), None, "", "auto", "line", False, 0, 42, skip_bad=True)[0].startswith(
        "Imported **chats**")
    # the whole file's problem: no option to name
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    assert import_source(studio, str(empty), None, "", "auto", "line", False, 0, 42)[0] == (
        "**Not imported:** none.jsonl: the file is empty (0 bytes)")


def test_any_row_can_be_shown_as_training_sees_it_and_a_weighted_one_first(studio, tmp_path, tiny_model_dir,
                                                                          capsys):
    """The Data tab showed row 1 only: a file whose first row has no reply marked weight 0 never showed one kept
    as context. Now the example opens on the first such row of the first 20, and any row can be picked (page and
    `data show --example`), each stretch named in the terminal."""
    from studio.app import build_app
    from studio.cli import main

    from components.data_tab import CONTEXT, TEMPLATE

    path = jsonl(tmp_path / "chats.jsonl", weighted_chat(), weighted_chat(1, 1), weighted_chat(0, 1),
                 {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bye"},
                               {"role": "assistant", "content": "Bye!"}]})
    row = studio.import_dataset(path, options=ImportOptions(heldout=0))
    app = build_app(studio)
    on_view, on_example = (next(f for f in app.fns.values() if f.name == name) for name in ("on_view", "on_example"))
    *_, (_summary, _table, _figure, example, number) = on_view.fn(row["id"], str(tiny_model_dir), 512)
    assert number == 3 and example["label"] == "Row 3 of 4, exactly as training sees it"
    # the system line SmolLM2's template writes into a row without one: its own stretch, not the file's context
    assert [kind for _text, kind in example["value"]] == [CONTEXT, TEMPLATE, CONTEXT, "learned"]
    assert [text for text, _kind in example["value"][:2]] == [
        "<|im_start|>system\n", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"]
    assert "Hello! How can I help?" in example["value"][2][0] and example["value"][3][0] == "27 months.<|im_end|>\n"
    last, number = on_example.fn(row["id"], str(tiny_model_dir), 512, 99)  # (past the end: the last row, put right)
    assert last["label"] == "Row 4 of 4, exactly as training sees it" and number == 4
    assert on_example.fn(row["id"], str(tiny_model_dir), 512, 2)[1] == {"__type__": "update"}  # (in range: as typed)
    assert [text.strip() for text, kind in last["value"] if kind == "learned"] == ["Bye!<|im_end|>"]
    assert TEMPLATE not in [kind for _text, kind in last["value"]]  # (its own system line: the file's)
    assert "Be brief." in last["value"][0][0]

    home = ["--home", str(studio.home), "--model", str(tiny_model_dir), "--rows", "0"]
    assert main(["data", "show", row["id"], *home]) == 0
    out = capsys.readouterr().out
    assert "--- as training sees row 3:\n[context] " in out
    assert "[context] <|im_start|>system\n[template] You are a helpful AI assistant named SmolLM, trained by Hugging " \
           "Face[context] <|im_end|>" in out and "[learned] 27 months.<|im_end|>" in out
    assert "How can I help?<|im_end|>\n<|im_start|>user\nWarranty?" in out.split("[learned]")[0]
    assert main(["data", "show", row["id"], *home, "--example", "4"]) == 0
    assert "--- as training sees row 4:" in capsys.readouterr().out
    assert main(["data", "show", row["id"], *home, "--example", "5"]) == 2
    assert capsys.readouterr().err == "error: --example 5: the dataset has 4 rows\n"


def test_the_skip_hint_is_given_only_where_skipping_leaves_the_row_out(studio, tmp_path):
    """The hint named *Skip rows that cannot be read* for a CSV row not in UTF-8 (skipping leaves only a JSON
    Lines line of another encoding out: the same refusal came back with the box ticked), for a first line that
    is not JSON (the file's problem, read before Import by the first look), and for rows of another form."""
    from components.data_tab import import_source

    def said(path):
        return import_source(studio, str(path), None, "", "auto", "line", False, 0, 42)[0]

    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"prompt,completion\nHi,Hello\nCaf\xe9?,Yes\n")
    assert said(latin) == ("**Not imported:** latin.csv, line 3: not valid UTF-8 (byte 0xE9 at position 4); save "
                           "the file as UTF-8")
    broken_first = tmp_path / "first.jsonl"
    broken_first.write_text('{"prompt": "Hi", \n' + json.dumps(GOOD) + "\n")
    assert "(or tick" not in said(broken_first) and said(broken_first).startswith("**Not imported:** first.jsonl, "
                                                                                  "line 1:")
    broken_later = tmp_path / "later.jsonl"
    broken_later.write_text(json.dumps(GOOD) + "\n" + '{"prompt": "Hi", \n')
    assert said(broken_later).endswith("(or tick *Skip rows that cannot be read*, under *Name, duplicates, held-out "
                                       "split*, to leave such rows out)")
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    mixed = jsonl(tmp_path / "mixed.jsonl", {"chosen": "A good answer", "rejected": "A bad one"},
                  {"chosen": turns, "rejected": [turns[0], {"role": "assistant", "content": "B"}]})
    assert said(mixed) == ("**Not imported:** mixed.jsonl, line 2, column 'chosen': is a conversation but earlier "
                           "rows have text; use one form for the whole file")


def test_with_skip_ticked_the_first_look_says_bad_rows_are_left_out_not_that_import_stops(studio, tmp_path):
    """The first look said "Import would stop here … (or tick *Skip rows that cannot be read* …)" with the box
    ticked already: Import then left the row out. Ticked, it says the rows are left out, how many among the
    first and the first; a file none of whose first rows can be read is said so (Import stops if none is)."""
    from components.data_tab import NOT_MAPPED, check_source

    unset = [NOT_MAPPED] * 8

    def first_look(path, skip):
        return check_source(studio, str(path), None, "auto", "line", *unset, skip_bad=skip)[0]

    bad = weighted_chat()
    bad["messages"][3]["weight"] = 2
    path = jsonl(tmp_path / "chats.jsonl", weighted_chat(), bad, weighted_chat())
    with open(path, "a") as out:
        out.write('{"messages": [\n')
    assert "Import would stop here" in first_look(path, False) and "(or tick" in first_look(path, False)
    assert first_look(path, True) == (
        "Detected **conversations (messages)** in a JSONL file → stored as **sft** data. Press Import to check every "
        "row: it leaves out rows that cannot be read, as *Skip rows that cannot be read* asks (2 rows among the "
        "first rows read; the first of them: **line 2, column 'messages': message 4 (assistant) has weight 2; expected 0 (kept as "
        "context, not learned) or 1 (learned)**).")
    none = jsonl(tmp_path / "none.jsonl", bad, bad)
    assert first_look(none, True).startswith(
        "Detected **conversations (messages)** in a JSONL file → stored as **sft** data, but no row shown can be read: "
        "**line 1, column 'messages': message 4 (assistant) has weight 2")
    assert first_look(none, True).endswith("leaves such rows out, and Import stops if none is left.")
    assert studio.list_datasets() == []


def test_the_first_look_marks_where_each_row_is_and_the_rows_import_stops_at_or_leaves_out(studio, tmp_path):
    """The file's first records showed with no word on which were the rows the message named ("row 3"), nor on
    which *Skip rows that cannot be read* leaves out. Each now says where it is in the file, and which one
    Import would stop at, or, ticked, each it leaves out (read with good/bad marks too, said with a count)."""
    from components.data_tab import NOT_MAPPED, PLACE_HEADER, check_source

    def first_look(path, skip):
        return check_source(studio, str(path), None, "auto", "line", *[NOT_MAPPED] * 8, skip_bad=skip)

    holes = tmp_path / "holes.csv"
    holes.write_text("prompt,completion\nHi?,Hello.\nColour?,\nSize?,Small.\nWhere?,\nWhen?,Now.\n")
    said, table, *_ = first_look(holes, False)
    assert "Import would stop here: **holes.csv, row 3, column 'completion': is empty" in said
    assert table["headers"] == [PLACE_HEADER, "prompt", "completion"]
    assert table["data"] == [["row 2", "Hi?", "Hello."], ["row 3: Import stops here", "Colour?", ""]]
    said, table, *_ = first_look(holes, True)
    assert "(2 rows among the first rows read; the first of them: **row 3, column 'completion'" in said
    assert [r[0] for r in table["data"]] == ["row 2", "row 3: left out", "row 4", "row 5: left out", "row 6"]

    # read with good/bad marks: row 6 has no mark (the plain reading ignores the column), row 5 a cell too many
    # (the reader itself leaves it out: counted, not in the table)
    marked = tmp_path / "marked.csv"
    marked.write_text("prompt,completion,rating\nHi?,Hello.,up\nColour?,,down\nSize?,Small.,up\n"
                      "Why?,Because,so.,up\nWhere?,Here.,\nWhen?,Now.,down\n")
    said, table, *_ = first_look(marked, True)
    assert "holds good/bad marks" in said and "(3 rows among the first rows read; one of them: **row 3" in said
    assert [r[0] for r in table["data"]] == ["row 2", "row 3: left out", "row 4", "row 6: left out", "row 7"]
    said, table, *_ = first_look(marked, False)
    assert said.endswith("Import would stop here: **marked.csv, row 3, column 'completion': is empty; expected text**")
    assert [r[0] for r in table["data"]][:2] == ["row 2", "row 3: Import stops here"]
    assert studio.list_datasets() == []


def test_the_first_look_says_which_rows_teach_nothing_as_import_does(studio, tmp_path):
    """Import drops a conversation whose every reply has weight 0, and a pair whose answers are the same (and
    says so after); the first look said nothing of it. It names them, and marks them in the table."""
    from components.data_tab import NOT_MAPPED, check_source

    def first_look(path):
        return check_source(studio, str(path), None, "auto", "line", *[NOT_MAPPED] * 8)

    chats = jsonl(tmp_path / "chats.jsonl", weighted_chat(), weighted_chat(0, 0), weighted_chat(1, 0))
    said, table, *_ = first_look(chats)
    assert said.endswith("Press Import to check every row. Line 2 teaches nothing (every reply has weight 0, kept "
                         "as context): Import drops it.")
    assert [r[0] for r in table["data"]] == ["line 1", "line 2: teaches nothing, dropped", "line 3"]
    pairs = jsonl(tmp_path / "pairs.jsonl", *({"prompt": f"Q{i}?", "chosen": "Yes.", "rejected": r}
                                              for i, r in enumerate(["No.", "Yes.", " Yes. ", "Maybe."])))
    said, table, *_ = first_look(pairs)
    assert said.endswith("Lines 2 and 3 teach nothing ('chosen' and 'rejected' are the same answer or one is "
                         "empty): Import drops them.")
    assert [r[0] for r in table["data"]] == ["line 1", "line 2: teaches nothing, dropped",
                                             "line 3: teaches nothing, dropped", "line 4"]
    # a file none of whose rows can teach anything: Import stops, as it says
    nothing = jsonl(tmp_path / "nothing.jsonl", weighted_chat(0, 0), weighted_chat(0, 0))
    assert first_look(nothing)[0].endswith("Import would stop: no conversation of the file can teach anything "
                                           "(every reply has weight 0, kept as context).")
    assert studio.list_datasets() == []
    with pytest.raises(DataError, match="no conversation can teach anything"):
        studio.import_dataset(nothing)
    # and the rows named are those Import drops
    for path, dropped in ((chats, ["line 2"]), (pairs, ["line 2", "line 3"])):
        assert studio.import_dataset(path)["meta"]["untaught_rows"] == dropped


def test_a_row_the_reader_cannot_read_after_good_ones_is_where_import_would_stop(studio, tmp_path):
    """A CSV row with a cell too many among the first rows was "Cannot use this file", with no table and no word
    on *Skip rows that cannot be read*, which leaves such a row out: it is where Import would stop, as an empty
    cell is, with the hint where skipping helps (not for a row in another encoding, which it does not)."""
    from components.data_tab import NOT_MAPPED, SKIP_HINT, check_source

    def first_look(path, skip=False):
        return check_source(studio, str(path), None, "auto", "line", *[NOT_MAPPED] * 8, skip_bad=skip)

    extra = tmp_path / "extra.csv"
    extra.write_text("prompt,completion\nHi?,Hello.\nColour?,Blue.\nMade where?,Assembled,in Portugal.\n")
    said, table, *_ = first_look(extra)
    assert said == ("Detected **prompt/completion** in a CSV file → stored as **sft** data, but Import would stop "
                    "here: **extra.csv, row 4: has 3 cells but the header has 2 columns (prompt, completion); quote "
                    f"cells that contain ','**{SKIP_HINT}")
    assert table["data"] == [["row 2", "Hi?", "Hello."], ["row 3", "Colour?", "Blue."]]
    assert "(1 row among the first rows read; the first of them: **row 4: has 3 cells" in first_look(extra, True)[0]
    # with good/bad marks beside the replies (read as KTO): the row is named there too ("Press Import" was said)
    marked = tmp_path / "marked.csv"
    marked.write_text("prompt,completion,rating\nHi?,Hello.,up\nColour?,Blue.,down\nWhere?,Here,there,up\n")
    said = first_look(marked)[0]
    assert "holds good/bad marks" in said and said.endswith(
        "Import would stop here: **marked.csv, row 4: has 4 cells but the header has 3 columns (prompt, completion, "
        "rating); quote cells that contain ','**")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"prompt,completion\nHi,Hello\nCaf\xe9?,Yes\n")
    said = first_look(latin)[0]
    assert "Import would stop here: **latin.csv, line 3: not valid UTF-8" in said and "(or tick" not in said
    assert studio.list_datasets() == []
