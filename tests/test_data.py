"""Reading SFT JSONL: canonical rows, and one clear sentence for bad input, nothing written."""

from __future__ import annotations

import json

import pytest

from pipelines.data import DataError, read_sft_jsonl, split, to_prompt_completion
from tests.conftest import FAQ


def write_lines(path, *lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sample_faq_reads_as_conversations():
    rows = read_sft_jsonl(FAQ)
    assert len(rows) == 120
    assert rows[0]["messages"][-1]["role"] == "assistant"


def test_prompt_completion_and_bom_are_accepted(tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompt": "Hi", "completion": "Hello"}).encode() + b"\n")
    assert read_sft_jsonl(path) == [{"prompt": "Hi", "completion": "Hello"}]


def test_messages_become_prompt_completion_for_answer_only_loss():
    row = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    assert to_prompt_completion(row) == {
        "prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]
    }


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a", "completion": "b"}', '{"prompt": "a", "completion": "b"'],
     "bad.jsonl, line 2: malformed JSON (Expecting ',' delimiter at character 34)"),
    (['{"question": "a", "answer": "b"}'],
     "bad.jsonl, line 1: found columns answer, question; expected 'messages' or 'prompt' and 'completion'"),
    (['{"prompt": "a", "completion": ""}'],
     "bad.jsonl, line 1, column 'completion': expected non-empty text"),
    (['{"messages": [{"role": "user", "content": "a"}]}'],
     "bad.jsonl, line 1, column 'messages': the last message must be the assistant's reply"),
    (['{"messages": [{"role": "robot", "content": "a"}]}'],
     "bad.jsonl, line 1, column 'messages': message 1 has role 'robot'; expected one of system, user, assistant"),
    ([""], "bad.jsonl: no examples found; expected one JSON object per line"),
])
def test_bad_lines_get_one_sentence(tmp_path, lines, message):
    path = write_lines(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(DataError) as err:
        read_sft_jsonl(path)
    assert str(err.value) == message


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n')
    with pytest.raises(DataError, match=r"^latin.jsonl, line 2: not valid UTF-8 text; save the file as UTF-8$"):
        read_sft_jsonl(path)


def test_bad_file_leaves_workspace_untouched(studio, tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", '{"prompt": "a", "completion": "b"}', "not json")
    with pytest.raises(DataError):
        studio.import_dataset(path)
    assert studio.store.list_datasets() == []
    assert list(studio.datasets_dir.iterdir()) == []


def test_import_copies_into_workspace_once(studio):
    first = studio.import_dataset(FAQ)
    assert first["rows"] == 120 and first["kind"] == "sft"
    assert studio.import_dataset(FAQ)["id"] == first["id"]
    assert len(studio.store.list_datasets()) == 1


def test_split_is_deterministic_and_disjoint():
    rows = [{"prompt": str(i), "completion": "x"} for i in range(50)]
    train, held = split(rows, 0.1, seed=1)
    assert len(held) == 5 and len(train) == 45
    assert split(rows, 0.1, seed=1) == (train, held)
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in train}
