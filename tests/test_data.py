"""Importing: every accepted format and layout lands in TRL's canonical columns; mapping, kinds,
de-duplication, the held-out split and the catalogue behave as the Data tab promises."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import dataset_stats
from pipelines.data import DataError, load_rows, split, to_prompt_completion
from pipelines.importer import HELDOUT, ImportOptions, inspect, read_meta
from tests.conftest import FAQ

QA = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]


def jsonl(path, *rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows_of(studio, path, **options):
    row = studio.import_dataset(path, options=ImportOptions(**options))
    return row, load_rows(row["path"])


def test_sample_faq_imports_as_conversations(studio):
    row, rows = rows_of(studio, FAQ)
    assert (row["rows"], row["kind"], row["meta"]["layout"]) == (120, "sft", "messages")
    assert rows[0]["messages"][-1]["role"] == "assistant"


def test_alpaca_becomes_messages_and_counts_empty_inputs(studio, tmp_path):
    path = jsonl(tmp_path / "alpaca.jsonl",
                 {"instruction": "Translate", "input": "bonjour", "output": "hello"},
                 {"instruction": "Say hi", "input": "", "output": "Hi", "system": "Be brief."})
    row, rows = rows_of(studio, path)
    assert row["meta"]["layout"] == "alpaca" and row["meta"]["empty_optional_fields"] == 1
    assert rows[0]["messages"] == [{"role": "user", "content": "Translate\n\nbonjour"},
                                   {"role": "assistant", "content": "hello"}]
    assert rows[1]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_sharegpt_roles_are_mapped(studio, tmp_path):
    path = tmp_path / "share.json"
    path.write_text(json.dumps([{"conversations": [
        {"from": "system", "value": "S"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"},
        {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]}]))
    row, rows = rows_of(studio, path)
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert row["meta"]["multi_turn_rows"] == 1
    from components.data_tab import summary_text

    assert "1 multi-turn conversations (every reply is learned)" in summary_text(row)


@pytest.mark.parametrize("record", [
    {"prompt": "Q", "chosen": "good", "rejected": "bad"},
    {"prompt": QA[:1], "chosen": [{"role": "assistant", "content": "good"}],
     "rejected": [{"role": "assistant", "content": "bad"}]},
])
def test_preference_standard_and_conversational(studio, tmp_path, record):
    row, rows = rows_of(studio, jsonl(tmp_path / "pref.jsonl", record))
    assert row["kind"] == "preference"
    assert rows[0] == {"prompt": QA[:1], "chosen": [{"role": "assistant", "content": "good"}],
                       "rejected": [{"role": "assistant", "content": "bad"}]}


def test_kto_labels_from_csv_text(studio, tmp_path):
    path = tmp_path / "kto.csv"
    path.write_text("prompt,completion,label\nQ,A,true\nQ,B,False\nQ,C,1\n")
    row, rows = rows_of(studio, path)
    assert row["kind"] == "kto" and [r["label"] for r in rows] == [True, False, True]


@pytest.mark.parametrize("unit, expected", [
    ("line", ["One.", "Two.", "Three."]),
    ("paragraph", ["One.\nTwo.", "Three."]),
    ("file", ["One.\nTwo.\n\nThree.\n"]),
])
def test_plain_text_units(studio, tmp_path, unit, expected):
    path = tmp_path / "notes.txt"
    path.write_text("One.\nTwo.\n\nThree.\n")
    row, rows = rows_of(studio, path, text_unit=unit)
    assert row["kind"] == "text" and [r["text"] for r in rows] == expected


def test_parquet_tsv_and_json_wrappers(studio, tmp_path):
    pq.write_table(pa.Table.from_pylist([{"prompt": "Q", "completion": "A", "id": 1}]), tmp_path / "t.parquet")
    row, rows = rows_of(studio, tmp_path / "t.parquet")
    assert rows == [{"messages": QA}] and row["meta"]["ignored_columns"] == ["id"]
    (tmp_path / "t.tsv").write_text("prompt\tcompletion\nQ\tA\n")
    assert rows_of(studio, tmp_path / "t.tsv")[1] == [{"messages": QA}]
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": [{"prompt": "Q", "completion": "A"}]}))
    assert rows_of(studio, tmp_path / "wrapped.json")[1] == [{"messages": QA}]
    jsonl(tmp_path / "lines.json", {"prompt": "Q", "completion": "A"}, {"prompt": "Q", "completion": "A"})
    assert rows_of(studio, tmp_path / "lines.json")[1] == [{"messages": QA}] * 2


def test_column_mapping_and_forced_kind(studio, tmp_path):
    path = tmp_path / "faq.csv"
    path.write_text("question,answer\nQ,A\n")
    info = inspect(path)
    assert info["layout"] is None and info["problem"].startswith("faq.csv: found columns question, answer;")
    row, rows = rows_of(studio, path, mapping={"prompt": "question", "completion": "answer"})
    assert rows == [{"messages": QA}]
    with pytest.raises(DataError, match=r"^faq.csv: no column 'answr' to map \(columns: question, answer\)$"):
        studio.import_dataset(path, options=ImportOptions(mapping={"completion": "answr"}))
    with pytest.raises(DataError, match=r"expected for preference data columns prompt\+chosen\+rejected \| "
                                        r"chosen\+rejected, or map yours"):
        studio.import_dataset(path, options=ImportOptions(kind="preference", mapping={"prompt": "question"}))


def test_duplicates_counted_or_dropped(studio, tmp_path):
    path = jsonl(tmp_path / "dups.jsonl", *[{"prompt": "Q", "completion": "A"}] * 3, {"prompt": "Q", "completion": "B"})
    kept, _ = rows_of(studio, path)
    dropped, rows = rows_of(studio, path, dedupe=True)
    assert kept["rows"] == 4 and kept["meta"]["duplicates"] == 2
    assert dropped["rows"] == 2 and dropped["meta"]["dropped_duplicates"] == 2 and len(rows) == 2
    assert kept["id"] != dropped["id"]  # same file, other options: another dataset


def test_heldout_split_is_exact_and_seeded(studio, tmp_path):
    path = jsonl(tmp_path / "many.jsonl", *[{"prompt": f"Q{i}", "completion": "A"} for i in range(50)])
    row = studio.import_dataset(path, options=ImportOptions(heldout=0.2, seed=7))
    held = load_rows(row["path"].replace("data.parquet", HELDOUT))
    train = load_rows(row["path"])
    assert (len(train), len(held), row["meta"]["heldout_rows"]) == (40, 10, 10)
    again = studio.import_dataset(path, name="again", options=ImportOptions(heldout=0.2, seed=7, dedupe=True))
    assert load_rows(again["path"].replace("data.parquet", HELDOUT)) == held
    assert not {r["messages"][0]["content"] for r in held} & {r["messages"][0]["content"] for r in train}


def test_an_imported_held_out_file_keeps_a_prompts_rows_together(studio, tmp_path):
    """The held-out file an import writes is what training and Chat read as held out: for KTO rows (a pair
    as two rows of one prompt) it holds whole prompts, as the split at training does."""
    rows = [{"prompt": f"Q{i}", "completion": f"{mark} {i}", "label": mark == "good"}
            for i in range(20) for mark in ("good", "bad")]
    row = studio.import_dataset(jsonl(tmp_path / "kto.jsonl", *rows), options=ImportOptions(heldout=0.25, seed=7))
    held = load_rows(row["path"].replace("data.parquet", HELDOUT))
    train = load_rows(row["path"])
    assert row["kind"] == "kto" and (len(train), len(held), row["meta"]["heldout_rows"]) == (30, 10, 10)
    prompts = {str(r["prompt"]) for r in held}
    assert len(prompts) == 5 and not prompts & {str(r["prompt"]) for r in train}
    assert sorted(r["label"] for r in held) == [False] * 5 + [True] * 5


def test_examples_of_one_question_are_held_out_together_at_import_and_in_the_estimate(studio, tmp_path):
    """Several answers to one question (examples, not pairs): the held-out file an import writes, the split a
    run makes and the rows the estimate counts all keep a question's rows on one side, and the stored
    dataset's prompts are grouped as the rows' are, read a batch at a time."""
    from pipelines import data
    from studio import method_service

    rows = [{"prompt": f"Q{i}", "completion": f"A{i} take {t}"} for i in range(8) for t in range(1 + i % 3)]
    row = studio.import_dataset(jsonl(tmp_path / "takes.jsonl", *rows), options=ImportOptions(heldout=0.25, seed=3))
    held, train = load_rows(row["path"].replace("data.parquet", HELDOUT)), load_rows(row["path"])

    def question(r):
        return r["messages"][0]["content"]

    assert row["kind"] == "sft" and len(held) + len(train) == 15 and row["meta"]["heldout_rows"] == len(held) > 0
    assert not {question(r) for r in held} & {question(r) for r in train}

    plain = studio.import_dataset(jsonl(tmp_path / "plain.jsonl", *rows), name="plain")
    stored = load_rows(plain["path"])
    assert data.stored_prompt_groups(plain["path"], batch_rows=4) == data.prompt_groups(stored)
    assert len(data.prompt_groups(stored)) == 8
    for fraction, seed in ((0.1, 42), (0.3, 42), (0.3, 5)):
        train, held = split(stored, fraction, seed)
        assert not {question(r) for r in held} & {question(r) for r in train}
        assert method_service._split_rows(studio, plain["id"], fraction, "sft", seed) == (len(train), len(held), False)
    notes = tmp_path / "notes.txt"
    notes.write_text("One line.\nAnother line.\nOne line.\n")
    text = studio.import_dataset(notes)
    assert data.stored_prompt_groups(text["path"]) == [[0], [1], [2]]  # raw text has no prompts


def test_same_file_twice_is_one_dataset(studio):
    first = studio.import_dataset(FAQ)
    assert studio.import_dataset(FAQ)["id"] == first["id"]
    assert len(studio.list_datasets()) == 1
    assert (studio.datasets_dir / first["id"] / "meta.json").is_file()


def test_training_refuses_the_wrong_kind(studio):
    with pytest.raises(DataError, match=r"^dataset 'quillpad_preferences' holds preference data; LoRA trains "
                                        r"on sft or text data, so pick a preference method such as DPO or "
                                        r"another dataset$"):
        studio.start_run(model="default", dataset="quillpad_preferences", method="lora")
    # none picked (KTO with no KTO data imported: the page's list is empty): one sentence, not a TypeError
    with pytest.raises(DataError, match=r"^no dataset is picked: KTO trains on replies marked good or bad \(a "
                                        r"true/false `label` column\); import some on the Data tab$"):
        studio.start_run(model="default", dataset=None, method="kto")
    assert studio.list_runs() == [] and not any(studio.runs_dir.iterdir())


def test_messages_become_prompt_completion_for_answer_only_loss():
    assert to_prompt_completion({"messages": QA}) == {"prompt": QA[:1], "completion": QA[1:]}


def test_split_is_deterministic_and_disjoint():
    rows = [{"prompt": str(i), "completion": "x"} for i in range(50)]
    train, held = split(rows, 0.1, seed=1)
    assert len(held) == 5 and len(train) == 45
    assert split(rows, 0.1, seed=1) == (train, held)
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}


def test_preview_shows_conversations_as_text(studio):
    row = studio.import_dataset(FAQ)
    first = dataset_stats.preview_rows(row["path"], 2)[0]
    assert first["messages"].startswith("user: How long does the Quillpad battery last?\nassistant: ")


def test_preference_rows_render_prompt_as_context(real_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    implicit = dataset_stats.render_example({"chosen": "Q: warranty? A: 27 months.", "rejected": "Q: warranty? A: no."},
                                            tokenizer, 512)
    assert (implicit["context"], implicit["learned"]) == ("Q: warranty? A: ", "27 months.<|im_end|>")
    explicit = dataset_stats.render_example({"prompt": QA[:1], "chosen": QA[1:], "rejected": QA[1:]}, tokenizer, 512)
    assert explicit["context"].endswith("<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    assert explicit["learned"] == "A<|im_end|>\n"


def test_thumbs_in_a_rating_column_are_read_as_kto_labels(studio, tmp_path):
    """A file of replies with thumbs up/down beside them (`rating`) was detected as prompt/completion
    and the marks dropped: thumbs-down replies were learned as good examples, and the summary only
    said "ignored columns: rating". The first look now offers the mapping that reads the marks as
    KTO's label; imported without it, the summary warns."""
    path = tmp_path / "thumbs.csv"
    path.write_text("prompt,completion,rating\nReset?,Hold the button 10 s.,up\nWaterproof?,Fully, always.,down\n"
                    "Battery?,19 days.,\U0001F44D\n".replace("Fully, always.", '"Fully, always."'))
    found = inspect(path)
    assert found["layout"] == "prompt_completion"
    assert found["feedback"] == {"column": "rating", "mapping": {"label": "rating"}}
    row, rows = rows_of(studio, path, mapping=found["feedback"]["mapping"])
    assert row["kind"] == "kto" and [r["label"] for r in rows] == [True, False, True]
    assert rows[1]["completion"] == [{"role": "assistant", "content": "Fully, always."}]

    plain, _ = rows_of(studio, path)  # imported as plain examples anyway: said, not silent
    assert plain["kind"] == "sft" and plain["meta"]["ignored_feedback"] == "rating"
    from pipelines.importer import ignored_feedback_text

    assert ignored_feedback_text(plain["meta"]) == (
        "⚠️ column 'rating' looks like good/bad marks and was not used: every reply, the ones marked bad too, "
        "was imported as an example to copy; to train on the marks, import it as kto with 'rating' as the label")


def test_marks_under_other_names_are_mapped_with_the_question_and_answer(tmp_path):
    qa = tmp_path / "qa.jsonl"
    jsonl(qa, {"question": "Q1", "answer": "A1", "thumbs": "thumbs_down"}, {"question": "Q2", "answer": "A2",
                                                                          "thumbs": "thumbs_up"})
    assert inspect(qa)["feedback"] == {"column": "thumbs",
                                       "mapping": {"prompt": "question", "completion": "answer", "label": "thumbs"}}
    # not marks: a 1-5 star rating, a 0/1 column named for something else, a chosen kind of sft
    stars, flags = tmp_path / "stars.csv", tmp_path / "flags.csv"
    stars.write_text("prompt,completion,rating\nQ,A,4\nQ,B,1\n")
    flags.write_text("prompt,completion,is_duplicate\nQ,A,0\nQ,B,1\n")
    assert inspect(stars)["feedback"] is None and inspect(flags)["feedback"] is None
    assert inspect(qa, ImportOptions(kind="sft"))["feedback"] is None
    # Alpaca with an input: KTO's prompt has no place for it, so nothing is mapped for the user
    alpaca = jsonl(tmp_path / "alpaca.jsonl", {"instruction": "I", "input": "extra", "output": "O", "vote": "+1"})
    assert inspect(alpaca)["feedback"] is None


def test_a_plain_import_warns_of_marks_only_when_every_row_has_one(studio, tmp_path):
    """The warning was decided from the first row: a 1-5 star `rating` starting with a 1 was called
    good/bad marks. Every row's value must be a mark; sentiment words under another name are no marks."""
    stars = tmp_path / "stars.csv"
    stars.write_text("prompt,completion,rating\nQ1,A1,1\nQ2,A2,0\nQ3,A3,4\n")
    row, _ = rows_of(studio, stars)
    assert row["kind"] == "sft" and row["meta"]["ignored_feedback"] is None
    review = tmp_path / "review.csv"
    review.write_text("prompt,completion,sentiment\nWrite a happy line,What a day!,positive\n"
                      "Write a sad line,Rain again.,negative\n")
    assert inspect(review)["feedback"] is None
    three_way = tmp_path / "score.csv"
    three_way.write_text("prompt,completion,score\nQ1,A1,1\nQ2,A2,0\nQ3,A3,-1\n")
    assert inspect(three_way)["feedback"] is None
    marks = tmp_path / "marks.csv"
    marks.write_text("question,answer,vote\nQ1,A1,up\nQ2,A2,down\n")
    plain, _ = rows_of(studio, marks, mapping={"prompt": "question", "completion": "answer"})
    assert plain["meta"]["ignored_feedback"] == "vote"
    from studio.cli_data import summary_line

    assert summary_line(plain).endswith(
        "import it as kto with 'vote' as the label (--kind kto --map prompt=question,completion=answer,label=vote)")


def test_kto_holds_out_two_rows_with_both_marks():
    """One held-out KTO row is compared with itself (TRL's KL estimate pairs each reply with another
    row's prompt in its batch), so its loss read 0.500 before and after training: KTO holds out two
    rows at least, both marks when the data has both, and the estimate counts the same rows."""
    from pipelines.data import min_heldout, split_indices

    rows = [{"prompt": f"Q{i}", "completion": "A", "label": i >= 8} for i in range(10)]  # 8 up, 2 down
    for seed in range(20):
        train, held = split(rows, 0.1, seed, "kto")
        assert len(held) == 2 and len(train) == 8
        assert {r["label"] for r in held} == {True, False}, seed
        assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}
        assert len(held) == len(split_indices(10, 0.1, seed, min_heldout("kto"))[1])
        assert split(rows, 0.1, seed, "kto") == (train, held)
    assert len(split(rows, 0.1, 0)[1]) == 1  # other kinds as before
    # a single thumbs-down stays in training: KTO learns from both marks
    one_down = [{**r, "label": i != 0} for i, r in enumerate(rows)]
    for seed in range(20):
        assert any(not r["label"] for r in split(one_down, 0.1, seed, "kto")[0]), seed
    # all one mark: nothing to balance with
    same = [{**r, "label": True} for r in rows]
    assert len(split(same, 0.1, 3, "kto")[1]) == 2
    # too few rows for two held out and two to train on: none held out rather than one that reads 0.500
    assert split(rows[:3], 0.1, 0, "kto") == (rows[:3], [])
    assert [len(part) for part in split(rows[:4], 0.1, 0, "kto")] == [2, 2]


def test_rows_of_one_prompt_stay_on_one_side_of_the_split():
    """A KTO export writes each pair as two rows of one prompt (chosen marked good, rejected bad), and
    votes can give one prompt several pairs. Split by row, the held-out reply's sibling was trained on,
    and Chat's "held-out prompts, never trained on" were mostly training prompts: a prompt's rows now
    stay together, on one side."""
    pairs = [{"prompt": [{"role": "user", "content": f"Q{i}"}], "chosen": [{"role": "assistant", "content": "good"}],
              "rejected": [{"role": "assistant", "content": "bad"}]} for i in range(12)]
    kto = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
           for p in pairs for side in ("chosen", "rejected")]
    repeated = pairs + pairs[:4]  # four prompts voted on twice
    # (KTO: two prompts at least, as TRL's KL estimate pairs a held-out reply with its neighbour's prompt)
    for rows, kind, fraction, size in ((kto, "kto", 0.04, 4), (kto, "kto", 0.25, 6), (repeated, "preference", 0.1, 2),
                                       (repeated, "preference", 0.3, 5)):
        for seed in range(15):
            train, held = split(rows, fraction, seed, kind)
            prompts = [json.dumps(r["prompt"]) for r in held]
            assert not set(prompts) & {json.dumps(r["prompt"]) for r in train}, (kind, fraction, seed)
            assert len(held) == size and len(train) + len(held) == len(rows), (kind, fraction, seed)
            if kind == "kto":  # a held-out prompt brings both of its replies: both marks
                assert {r["label"] for r in held} == {True, False}
                assert len(held) == 2 * len(set(prompts))
            assert split(rows, fraction, seed, kind) == (train, held)
    # a prompt voted on six times among eight pairs is never held out while a smaller one fits: taken as
    # it came up, it held out 6 of the 8 pairs for some seeds
    many = pairs[:1] * 6 + pairs[1:3]
    assert all(len(split(many, 0.1, seed, "preference")[1]) == 1 for seed in range(60))
    # only that prompt and one other: the other is held out, the big one trains
    assert all(split(pairs[:1] * 6 + pairs[1:2], 0.1, seed, "preference")[1] == pairs[1:2] for seed in range(20))
    # by row as before where prompts do not repeat, or for SFT rows (their training splits by row)
    assert split(pairs, 0.25, 3, "preference") == split(pairs, 0.25, 3, "sft")
    assert len(split(repeated, 0.1, 0, "sft")[1]) == 2
    # rows with no prompt (a reply alone) are each their own
    lone = [{"chosen": [{"role": "assistant", "content": f"a{i}"}], "rejected": [{"role": "assistant", "content": "b"}]}
            for i in range(10)]
    assert len(split(lone, 0.2, 0, "preference")[1]) == 2
    # one prompt for every row: nothing can be held out without training on it
    assert split(kto[:2] * 3, 0.5, 0, "kto") == (kto[:2] * 3, [])


def test_a_csv_with_semicolons_between_cells_imports(studio, tmp_path):
    """A spreadsheet set to a language with decimal commas saves CSV with ';' between cells: it was refused
    ('this looks like a file separated by ;'), the separator found and not used. A comma inside a cell stays."""
    path = tmp_path / "faq_de.csv"
    path.write_text('Frage;Antwort\n"Wie lange hält der Akku?";"Etwa 19 Tage, je nach Nutzung."\nQ2;A2\n',
                    encoding="utf-8")
    row = studio.import_dataset(path, options=ImportOptions(mapping={"prompt": "Frage", "completion": "Antwort"}))
    rows = load_rows(row["path"])
    assert row["rows"] == 2 and rows[0]["messages"][1]["content"] == "Etwa 19 Tage, je nach Nutzung."
    plain = tmp_path / "plain.csv"
    plain.write_text("prompt;completion\nHi;Hello\n")
    assert load_rows(studio.import_dataset(plain)["path"])[0]["messages"][0]["content"] == "Hi"
    # a short row names ';' as the separator to quote
    bad = tmp_path / "short.csv"
    bad.write_text("prompt;completion\nHi;Hello;again\n")
    with pytest.raises(DataError, match=r"^short.csv, row 2: has 3 cells but the header has 2 columns "
                                        r"\(prompt, completion\); quote cells that contain ';'$"):
        studio.import_dataset(bad)


def test_a_column_empty_in_the_first_rows_of_a_big_file_still_takes_values_later(studio, tmp_path):
    """The stored file's column types were read from its first 2,000 rows: an RL prompts file with no reference
    answer before row 2,001 made 'answer' a column of nothing, and the first answer failed the import with
    pyarrow's "Invalid null value" (no file, row or column named). A held-out split failed the same way."""
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Say hi", "answer": "hi"}) + "\n"
                    + "".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(4500))
                    + "".join(json.dumps({"prompt": f"Sum {i}?", "answer": str(i)}) + "\n" for i in range(500)))
    row = studio.import_dataset(path, options=ImportOptions(kind="prompts", heldout=0.5))
    rows = load_rows(row["path"]) + load_rows(row["path"].replace("data.parquet", HELDOUT))
    assert len(rows) == 5001 and sum(r["answer"] is not None for r in rows) == 501
    assert {r["answer"] for r in rows if r["prompt"][-1]["content"] == "Sum 7?"} == {"7"}
    late = tmp_path / "late.jsonl"
    late.write_text("".join(json.dumps({"prompt": f"Q{i}?"}) + "\n" for i in range(2000))
                    + json.dumps({"prompt": "Q?", "answer": "42"}) + "\n")
    row = studio.import_dataset(late, options=ImportOptions(kind="prompts"))
    assert [r["answer"] for r in load_rows(row["path"])][-2:] == [None, "42"]


def test_an_answer_that_is_a_json_list_stays_an_answer(studio, tmp_path):
    """Any text starting with '[' that parsed as JSON was read as a conversation: a dataset teaching JSON output
    ("[2, 3, 5, 7]") was refused with "message 1 must be an object with 'role' and 'content'". A conversation
    written as JSON in a CSV cell is still read as one."""
    path = tmp_path / "json_answers.jsonl"
    path.write_text(json.dumps({"prompt": "Primes below 10 as JSON?", "completion": "[2, 3, 5, 7]"}) + "\n"
                    + json.dumps({"prompt": "No items, as JSON?", "completion": "[]"}) + "\n")
    rows = load_rows(studio.import_dataset(path)["path"])
    assert [r["messages"][-1]["content"] for r in rows] == ["[2, 3, 5, 7]", "[]"]
    cells = tmp_path / "cells.csv"
    cells.write_text('prompt,completion\n"[{""role"": ""user"", ""content"": ""Hi""}]",Hello\n')
    rows = load_rows(studio.import_dataset(cells)["path"])
    assert rows[0]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    cells.write_text('prompt,completion\n"[{""rol"": ""user"", ""content"": ""Hi""}]",Hello\n')  # still checked
    with pytest.raises(DataError, match="message 1 must be an object with 'role' and 'content'"):
        studio.import_dataset(cells, name="misspelt")


def test_an_answer_that_is_a_json_list_of_records_stays_an_answer(studio, tmp_path):
    """An extraction dataset's answers ('[{"name": "Alice", "age": 30}]') were read as conversations and refused:
    "message 1 must be an object with 'role' and 'content'"."""
    records = json.dumps([{"name": "Alice", "age": 30}])
    path = tmp_path / "extract.jsonl"
    path.write_text(json.dumps({"prompt": "Extract the people: Alice is 30.", "completion": records}) + "\n")
    assert load_rows(studio.import_dataset(path)["path"])[0]["messages"][-1]["content"] == records
    pairs = tmp_path / "pairs.csv"
    pairs.write_text('prompt,chosen,rejected\nPeople?,"[{""name"": ""Alice""}]",none\n')
    assert load_rows(studio.import_dataset(pairs)["path"])[0]["chosen"] == [{"role": "assistant",
                                                                             "content": '[{"name": "Alice"}]'}]


def test_a_list_of_records_with_a_value_field_stays_an_answer(studio, tmp_path):
    path = tmp_path / "fields.jsonl"
    answer = json.dumps([{"field": "city", "value": "Paris"}])
    path.write_text(json.dumps({"prompt": "Fields?", "completion": answer}) + "\n")
    assert load_rows(studio.import_dataset(path)["path"])[0]["messages"][-1]["content"] == answer


def test_conversations_pandas_wrote_in_python_notation_are_read_as_conversations(studio, tmp_path):
    """pandas' to_csv writes a column of conversations as Python lists ("[{'role': 'assistant', ...}]"): that
    text was stored as the answer, and training would teach the model to write it."""
    pd = pytest.importorskip("pandas")
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"prompt": ["Hi?"], "chosen": [[{"role": "assistant", "content": "Hello! How can I help?"}]],
                  "rejected": [[{"role": "assistant", "content": "What's it to you?"}]]}).to_csv(path, index=False)
    assert "[{'role': 'assistant'" in path.read_text()
    row = load_rows(studio.import_dataset(path)["path"])[0]
    assert row["chosen"] == [{"role": "assistant", "content": "Hello! How can I help?"}]
    assert row["rejected"] == [{"role": "assistant", "content": "What's it to you?"}]
    chats = tmp_path / "chats.csv"
    pd.DataFrame({"messages": [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]]}).to_csv(
        chats, index=False)
    assert load_rows(studio.import_dataset(chats)["path"])[0]["messages"][1] == {"role": "assistant", "content": "Hello"}
    # Python's notation is read as literals, never run
    code = tmp_path / "code.csv"
    code.write_text('prompt,completion\nHi,"[{\'a\': __import__(\'os\').getpid()}]"\n')
    assert load_rows(studio.import_dataset(code)["path"])[0]["messages"][1]["content"].startswith("[{'a': __import__")


def test_whole_numbers_pandas_stored_as_floats_are_written_as_numbers(studio, tmp_path):
    """pandas stores a column of whole numbers with a blank in it as floats: an answer 4 came in as "4.0", which
    the exact and contains rewards never found in a reply of "4"."""
    pytest.importorskip("pandas")
    import pandas as pd

    path = tmp_path / "sums.parquet"
    pd.DataFrame({"prompt": ["2+2?", "3+3?", "Name a colour."], "answer": [4, 6, None]}).to_parquet(path)
    rows = load_rows(studio.import_dataset(path, options=ImportOptions(kind="prompts"))["path"])
    assert [r["answer"] for r in rows] == ["4", "6", None]
    halves = tmp_path / "halves.jsonl"
    halves.write_text(json.dumps({"prompt": "Half of 5?", "completion": 2.5}) + "\n")
    assert load_rows(studio.import_dataset(halves)["path"])[0]["messages"][-1]["content"] == "2.5"


def test_the_first_look_names_a_file_of_lists_and_shows_dates(studio, tmp_path):
    """The Data tab's look before Import: a Parquet file with a date column failed with a TypeError (json.dumps
    of a datetime), a JSON Lines line holding a list with an AttributeError; and a file whose first line is a
    list said "found columns none"."""
    import datetime

    import pandas as pd

    from components.data_tab import NOT_MAPPED, check_source

    dated = tmp_path / "dated.parquet"
    pd.DataFrame({"prompt": ["Q1", "Q2"], "completion": ["A1", "A2"],
                  "created": [datetime.datetime(2024, 1, 1)] * 2}).to_parquet(dated)
    said, table, *_ = check_source(studio, str(dated), None, "auto", "line", *[NOT_MAPPED] * 8)
    assert said.startswith("Detected **prompt/completion** in a PARQUET file")
    assert table["data"][0] == ["row 1", "Q1", "A1", '"2024-01-01 00:00:00"']
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"prompt": "Q", "completion": "A"}) + "\n" + json.dumps(["x", "y"]) + "\n")
    said, table, *_ = check_source(studio, str(mixed), None, "auto", "line", *[NOT_MAPPED] * 8)
    assert ("Import would stop here: **mixed.jsonl, line 2: expected an object with named fields, got a list** (or "
            "tick *Skip rows that cannot be read*, under *Name, duplicates, held-out split*, to leave such rows out)") in said
    assert table["data"] == [["line 1", "Q", "A"], ["line 2: Import stops here", '["x", "y"]', ""]]
    lists = tmp_path / "lists.jsonl"
    lists.write_text(json.dumps(["x", "y"]) + "\n")
    said, table, *_ = check_source(studio, str(lists), None, "auto", "line", *[NOT_MAPPED] * 8)
    assert said == "**Cannot use this file:** lists.jsonl, line 1: expected an object with named fields, got a list"
    assert studio.list_datasets() == []


def test_pairs_with_their_prompt_under_another_name_keep_it(studio, tmp_path):
    """Orca's pairs (system, question, chosen, rejected) were taken for pairs with the prompt inside each answer:
    the question was dropped, and DPO trained on answers to nothing."""
    path = tmp_path / "orca.jsonl"
    path.write_text(json.dumps({"system": "You are terse.", "question": "What is 2+2?", "chosen": "4",
                                "rejected": "5"}) + "\n")
    row = studio.import_dataset(path)
    assert row["kind"] == "preference"
    assert load_rows(row["path"]) == [{"prompt": [{"role": "system", "content": "You are terse."},
                                                  {"role": "user", "content": "What is 2+2?"}],
                                       "chosen": [{"role": "assistant", "content": "4"}],
                                       "rejected": [{"role": "assistant", "content": "5"}]}]
    from components.data_tab import check_source

    said = check_source(studio, str(path), None, "auto", "line")[0]
    assert said.startswith("Detected **preference (prompt, chosen, rejected)**")
    assert "Column **question** is read as the *prompt*." in said
    path = tmp_path / "argilla.csv"
    path.write_text("instruction,chosen,rejected\nName a colour.,Blue.,Seven.\n")
    assert load_rows(studio.import_dataset(path)["path"])[0]["prompt"] == [{"role": "user", "content": "Name a colour."}]
    # an Alpaca-style pair's input (what its instruction is about) is part of its prompt, as in Alpaca's examples:
    # it was left out as an ignored column, and DPO trained on "Translate this." with nothing to translate
    alpaca = tmp_path / "alpaca_pairs.jsonl"
    alpaca.write_text("".join(json.dumps(r) + "\n" for r in (
        {"instruction": "Translate to French.", "input": "Good morning", "chosen": "Bonjour", "rejected": "Hola"},
        {"instruction": "Name a colour.", "input": "", "chosen": "Blue.", "rejected": "Seven."})))
    said = check_source(studio, str(alpaca), None, "auto", "line")[0]
    assert said.startswith("Detected **preference (prompt, chosen, rejected)**") and "ignored" not in said
    imported = studio.import_dataset(alpaca)
    assert read_meta(Path(imported["path"]).parent)["ignored_columns"] == []
    assert [r["prompt"] for r in load_rows(imported["path"])] == [
        [{"role": "user", "content": "Translate to French.\n\nGood morning"}],
        [{"role": "user", "content": "Name a colour."}]]
    # pairs that hold their prompt themselves keep it there; a column beside them is not taken for it
    hh = tmp_path / "hh.jsonl"
    hh.write_text(json.dumps({"question": "hi", "chosen": "Human: hi\n\nAssistant: hello",
                              "rejected": "Human: hi\n\nAssistant: go away", "request": "req-77"}) + "\n")
    assert load_rows(studio.import_dataset(hh)["path"]) == [
        {"chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
         "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]}]
    # a prompt the answers merely repeat ("Yes" in "Yes, it is.") is the prompt (every row's was dropped)
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"question": "Yes", "chosen": "Yes, that is right.", "rejected": "Yes. No."}) + "\n")
    assert load_rows(studio.import_dataset(short)["path"])[0]["prompt"] == [{"role": "user", "content": "Yes"}]
    short.write_text(json.dumps({"question": "Hi", "chosen": "Hi\nthere, friend.", "rejected": "Hi\nGo away."}) + "\n")
    assert load_rows(studio.import_dataset(short, name="hi")["path"])[0]["prompt"] == [{"role": "user", "content": "Hi"}]
    # answers written in a chat template hold their prompt (it was taken twice)
    templated = tmp_path / "templated.jsonl"
    templated.write_text(json.dumps({"question": "What is 2+2?",
                                     **{k: f"<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>"
                                        for k, a in (("chosen", "4"), ("rejected", "5"))}}) + "\n")
    assert "prompt" not in load_rows(studio.import_dataset(templated)["path"])[0]
    # argilla's copy of Orca's pairs has it as `input`
    argilla = tmp_path / "argilla_orca.jsonl"
    argilla.write_text(json.dumps({"system": "", "input": "Name a colour.", "chosen": "Blue.", "rejected": "7"}) + "\n")
    assert load_rows(studio.import_dataset(argilla)["path"])[0]["prompt"] == [
        {"role": "user", "content": "Name a colour."}]
    talk = [{"role": "user", "content": "Say hi."}]
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"query": "u_1029", "chosen": talk + [{"role": "assistant", "content": "Hi!"}],
                                 "rejected": talk + [{"role": "assistant", "content": "No."}]}) + "\n")
    assert load_rows(studio.import_dataset(chats)["path"])[0]["chosen"][0] == talk[0]


def test_pairs_that_repeat_the_prompt_in_each_answer_and_keep_messages_are_pairs(studio, tmp_path):
    """UltraFeedback's binarized pairs (prompt, chosen, rejected as whole conversations, and messages) were
    imported as conversations (the pairs and scores dropped), and as pairs they were refused: "message 1 is
    'user'; expected only assistant messages"."""
    ask = {"role": "user", "content": "Say hi."}
    record = {"prompt": "Say hi.", "chosen": [ask, {"role": "assistant", "content": "Hi!"}],
              "rejected": [ask, {"role": "assistant", "content": "No."}],
              "messages": [ask, {"role": "assistant", "content": "Hi!"}], "score_chosen": 9.0, "score_rejected": 2.0}
    path = tmp_path / "ultrafeedback.jsonl"
    path.write_text(json.dumps(record) + "\n")
    row = studio.import_dataset(path)
    assert row["kind"] == "preference"
    assert load_rows(row["path"]) == [{"prompt": [ask], "chosen": [{"role": "assistant", "content": "Hi!"}],
                                       "rejected": [{"role": "assistant", "content": "No."}]}]
    # an answer that goes on from another conversation is still refused, and named
    other = {**record, "chosen": [{"role": "user", "content": "Something else."}, {"role": "assistant", "content": "Hi"}]}
    path.write_text(json.dumps(other) + "\n")
    with pytest.raises(DataError, match="^ultrafeedback.jsonl, line 1, column 'chosen': its conversation does not "
                       "begin as the prompt does; expected both answers to share the person's turns and differ in "
                       "the reply$"):
        studio.import_dataset(path, name="other")
    assert [d["name"] for d in studio.list_datasets()] == ["ultrafeedback"]  # nothing written


def test_pairs_of_whole_conversations_are_split_where_they_differ(studio, tmp_path):
    """distilabel's Capybara pairs (a prompt column with the first turn, chosen and rejected as whole multi-turn
    conversations) and UltraFeedback's with a system turn first were refused ("message 2 is 'user'; expected only
    assistant messages", counted after the prompt taken off): the prompt is every turn both share up to the
    person's last, as TRL takes it, whatever the prompt column holds (a space more, only the first turn)."""
    def talk(*turns):
        return [{"role": role, "content": said} for role, said in zip(["user", "assistant"] * 3, turns)]

    rows = [{"prompt": "Write a poem", "chosen": talk("Write a poem", "Roses.", "Longer", "Roses are red."),
             "rejected": talk("Write a poem", "Roses.", "Longer", "No.")},
            {"prompt": "Hi ", "chosen": [{"role": "system", "content": "Be kind."}, *talk("Hi", "Hello!")],
             "rejected": [{"role": "system", "content": "Be kind."}, *talk("Hi", "Go away.")]}]
    path = tmp_path / "capybara.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_rows(studio.import_dataset(path)["path"]) == [
        {"prompt": talk("Write a poem", "Roses.", "Longer"), "chosen": [{"role": "assistant", "content": "Roses are red."}],
         "rejected": [{"role": "assistant", "content": "No."}]},
        {"prompt": [{"role": "system", "content": "Be kind."}, *talk("Hi")],
         "chosen": [{"role": "assistant", "content": "Hello!"}], "rejected": [{"role": "assistant", "content": "Go away."}]}]
    # answers that part before the person's last turn compare more than one reply: refused, named
    path.write_text(json.dumps({"prompt": "Hi", "chosen": talk("Hi", "A", "Why?", "B"),
                                "rejected": talk("Hi", "X", "Why?", "B")}) + "\n")
    with pytest.raises(DataError, match="^capybara.jsonl, line 1, column 'chosen': the two conversations differ before "
                       "the person's last turn; expected them to share every turn up to the reply they compare$"):
        studio.import_dataset(path, name="parted")


def test_hh_rlhf_transcripts_are_read_as_turns(studio, tmp_path):
    """Anthropic's HH-RLHF pairs ("\\n\\nHuman: ...\\n\\nAssistant: ...") were kept as plain text: the model trained
    on that format, not its chat template, and TRL cut the prompt at the first character the answers differ in (a
    shared first word went with it). Read as turns, the prompt is the turns both share (TRL's own copy of the set
    is written so)."""
    chosen = "\n\nHuman: Hi\n\nAssistant: I think so.\n\nHuman: Why?\n\nAssistant: It is warm."
    rejected = "\n\nHuman: Hi\n\nAssistant: I think so.\n\nHuman: Why?\n\nAssistant: It is not."
    path = tmp_path / "hh.jsonl"
    path.write_text(json.dumps({"chosen": chosen, "rejected": rejected}) + "\n"
                    + json.dumps({"chosen": "I like it.", "rejected": "I do not."}) + "\n")
    with pytest.raises(DataError, match="^hh.jsonl, line 2, column 'chosen': "):  # (one way for the whole file)
        studio.import_dataset(path)
    path.write_text(json.dumps({"chosen": chosen, "rejected": "I do not."}) + "\n")
    with pytest.raises(DataError, match="^hh.jsonl, line 1, column 'rejected': is not written as turns "):
        studio.import_dataset(path)
    # an answer of nothing ("Assistant:" and no more, as some of HH's are) is a pair that teaches nothing: left out
    # and counted, not the end of the import; two turns of one speaker in a row are one turn
    path.write_text("".join(json.dumps(r) + "\n" for r in (
        {"chosen": chosen, "rejected": rejected},
        {"chosen": "\n\nHuman: Joke?\n\nAssistant: A pun.", "rejected": "\n\nHuman: Joke?\n\nAssistant:"},
        {"chosen": "\n\nHuman: Hi\n\nHuman: anyone?\n\nAssistant: Hello.",
         "rejected": "\n\nHuman: Hi\n\nHuman: anyone?\n\nAssistant: No."})))
    imported = studio.import_dataset(path)
    assert read_meta(Path(imported["path"]).parent)["untaught_rows"] == ["line 2"]
    first, merged = load_rows(imported["path"])
    head = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "I think so."},
            {"role": "user", "content": "Why?"}]
    assert first == {"chosen": [*head, {"role": "assistant", "content": "It is warm."}],
                     "rejected": [*head, {"role": "assistant", "content": "It is not."}]}
    assert merged["chosen"] == [{"role": "user", "content": "Hi\n\nanyone?"}, {"role": "assistant", "content": "Hello."}]
    # a pair that differs in an earlier reply and ends the same is a pair still (kept as it was before)
    path.write_text(json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: Hello.\n\nHuman: bye\n\nAssistant: Bye!",
                                "rejected": "\n\nHuman: hi\n\nAssistant: Go away.\n\nHuman: bye\n\nAssistant: Bye!"})
                    + "\n")
    assert len(load_rows(studio.import_dataset(path, name="earlier")["path"])) == 1


def test_plain_text_is_counted_with_the_tokenizers_own_special_tokens(real_tokenizer_dir):
    """TRL tokenizes plain text with the tokenizer's special tokens (a BOS where it adds one): counted without
    them, every text row was a token short, and a row at the max length was said to fit."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from pipelines import dataset_stats

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    bos = tokenizer.convert_tokens_to_ids("<|im_start|>")
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<|im_start|> $A", pair="<|im_start|> $A $B",
                                                             special_tokens=[("<|im_start|>", bos)])
    row = {"text": "The Quillpad warranty lasts 27 months."}
    as_trl = tokenizer(text=row["text"] + tokenizer.eos_token)["input_ids"]  # trl.data_utils: processing_class(text=)
    assert as_trl[0] == bos
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    templated = tokenizer(tokenizer.apply_chat_template(chat["messages"], tokenize=False), add_special_tokens=False)
    assert dataset_stats.token_lengths([row, chat, row], tokenizer) == [len(as_trl), len(templated["input_ids"]),
                                                                       len(as_trl)]
    assert dataset_stats.render_example(row, tokenizer, 512)["tokens"] == len(as_trl)


def test_prompt_and_response_columns_are_offered_as_a_question_and_its_answer(studio, tmp_path):
    """prompt,response (or prompt,output) said "Cannot tell what these columns are" with nothing to click, while
    question,answer got its mapping offered."""
    from components.data_tab import check_source

    path = tmp_path / "pairs.csv"
    path.write_text("prompt,response\nHow long is the warranty?,27 months.\n")
    said, _table, updates, _box = check_source(studio, str(path), None, "auto", "line")
    assert said.startswith("Columns **prompt** and **response** look like a question and its answer: they are mapped "
                           "below to *prompt* and *completion*.")
    from pipelines.formats import parse_mapping
    from pipelines.importer import ImportOptions

    row = studio.import_dataset(path, options=ImportOptions(mapping=parse_mapping("prompt=prompt,completion=response")))
    assert load_rows(row["path"])[0]["messages"][-1] == {"role": "assistant", "content": "27 months."}


def test_dolly_instructions_keep_the_passage_they_are_about(studio, tmp_path):
    """Dolly's examples (instruction, context, response, category) were mapped as a question and its answer, the
    passage dropped as an unread column: closed questions, summaries and extractions were learned without the text
    they answer from. Read as Alpaca's, the context is the input, after the instruction."""
    from components.data_tab import check_source

    path = tmp_path / "dolly.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (
        {"instruction": "When did it open?", "context": "The shop opened in 2000.", "response": "In 2000.",
         "category": "closed_qa"},
        {"instruction": "Name a fish.", "context": "", "response": "Tope.", "category": "open_qa"})))
    said = check_source(studio, str(path), None, "auto", "line")[0]
    assert said.startswith("Detected **Alpaca (instruction, input, output)**")
    assert "Column **response** is read as the *output*. Column **context** is read as the *input*." in said
    # as a spreadsheet names them; and replies with good/bad marks are offered as KTO's, not examples to copy
    caps = tmp_path / "dolly.csv"
    caps.write_text("Instruction,Context,Response\nWhen did it open?,The shop opened in 2000.,In 2000.\n")
    assert check_source(studio, str(caps), None, "auto", "line")[0].startswith("Detected **Alpaca")
    marked = tmp_path / "marked.jsonl"
    marked.write_text("".join(json.dumps({"instruction": f"Q{i}", "response": f"A{i}", "rating": mark}) + "\n"
                              for i, mark in enumerate(("up", "down"))))
    assert "holds good/bad marks on the replies" in check_source(studio, str(marked), None, "auto", "line")[0]
    assert studio.import_dataset(marked, options=ImportOptions(kind="sft"))["kind"] == "sft"  # asked for examples
    scored = tmp_path / "scored.jsonl"  # a 1-5 score whose first row is 1: no mark
    scored.write_text("".join(json.dumps({"instruction": f"Q{i}", "response": "A", "score": i}) + "\n" for i in (1, 5)))
    assert studio.import_dataset(scored)["kind"] == "sft"
    topics = tmp_path / "topics.jsonl"  # a label that is a topic, not a mark
    topics.write_text(json.dumps({"instruction": "Name a fruit.", "response": "Apple.", "label": "food"}) + "\n")
    assert studio.import_dataset(topics)["kind"] == "sft"
    inputs = tmp_path / "alpaca_caps.csv"  # Alpaca's own input, capitalised
    inputs.write_text("Instruction,Input,Response\nTranslate to French.,Good morning,Bonjour\n")
    assert load_rows(studio.import_dataset(inputs)["path"])[0]["messages"][0]["content"] == \
        "Translate to French.\n\nGood morning"
    assert load_rows(studio.import_dataset(path)["path"]) == [
        {"messages": [{"role": "user", "content": "When did it open?\n\nThe shop opened in 2000."},
                      {"role": "assistant", "content": "In 2000."}]},
        {"messages": [{"role": "user", "content": "Name a fish."}, {"role": "assistant", "content": "Tope."}]}]


def test_the_system_line_a_chat_template_writes_is_found_and_only_where_it_writes_one(real_tokenizer_dir):
    """SmolLM2's template writes its own system line into a conversation without one: the example marks it as
    the template's (it read as a line of the file). A template that writes none, or takes no system turn
    (Gemma's raises), has none to mark."""
    from transformers import AutoTokenizer

    from pipelines.dataset_stats import template_system, with_template_system

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    line = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert template_system(tokenizer) == line
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    runs = with_template_system([(text, "context")], row, tokenizer, "template")
    assert runs == [("<|im_start|>system\n", "context"), (line, "template"), (text.split(line)[1], "context")]
    own = {"messages": [{"role": "system", "content": line}, *row["messages"]]}  # the file's own, word for word
    assert with_template_system([(text, "context")], own, tokenizer, "template") == [(text, "context")]
    assert with_template_system([("plain", "learned")], {"text": "plain"}, tokenizer, "template") == [("plain", "learned")]
    tokenizer.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}</>{% endfor %}"
    assert template_system(tokenizer) is None
    tokenizer.chat_template = ("{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}"
                               "{% endif %}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}")
    assert template_system(tokenizer) is None
