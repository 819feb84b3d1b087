"""Issue #18's fuzz corpus through the real CLI: every bad file exits 2 with one line naming the file
(and its line/row and column), storing nothing; every tricky good file is accepted and listed.

Each case is its own `studio data import` process (start-up is about a second, so the whole corpus
stays under two minutes): the exit code and stderr are what a user or a script sees.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.data import load_rows
from tests.conftest import ROOT
from tests.fuzz_corpus import bad_cases, good_cases, path_of, write_corpus

BAD, GOOD = bad_cases(), good_cases()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder)
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, corpus):
    """One workspace for the bad files, already holding a dataset (so "unchanged" means something);
    every case compares the workspace before and after its own import."""
    from studio.core import Studio

    home = tmp_path_factory.mktemp("home")
    Studio(home).import_dataset(path_of(corpus, GOOD[0]), name="already-here")
    return home


def import_cli(home, path, *args):
    env = {**os.environ, "STUDIO_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "studio.cli", "data", "import", str(path), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def state(home):
    """Everything an import could leave behind: the catalogue's rows and every entry (hidden
    `.import-*` folders included) of the datasets folder. Read without starting a Studio, whose
    start-up would clean away the very leftovers looked for."""
    from studio.store import Store

    rows = [(d["id"], d["rows"]) for d in Store(home / "studio.db").list_datasets()]
    return rows, sorted(os.listdir(home / "datasets"))


def test_the_corpus_is_big_enough():
    formats = {c.name.rsplit(".", 1)[1] for c in BAD}
    assert len(BAD) >= 40 and len(GOOD) >= 10
    assert {"csv", "tsv", "json", "jsonl", "parquet", "txt"} <= formats
    assert len({c.name for c in BAD + GOOD}) == len(BAD) + len(GOOD)


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_a_bad_file_exits_2_with_one_sentence_and_stores_nothing(case, corpus, workspace):
    before = state(workspace)
    done = import_cli(workspace, path_of(corpus, case), *case.args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr[-2000:]  # one sentence, never a traceback
    # (one row's problem after good rows ends naming the option that leaves such rows out)
    message = lines[0].removeprefix("error: ").removesuffix(" (or --skip-bad-rows to leave such rows out)")
    assert message.startswith(case.name), message  # the file is named first
    if case.says:
        assert message == case.says
    for part in case.has:
        assert part in message
    assert len(message) < 600, message  # 1,000 columns do not make a 10 KB sentence
    assert state(workspace) == before


@pytest.mark.parametrize("case", GOOD, ids=[c.name for c in GOOD])
def test_a_tricky_good_file_is_accepted(case, corpus, tmp_path):
    home = tmp_path / "home"
    done = import_cli(home, path_of(corpus, case), *case.args)
    assert done.returncode == 0, done.stderr[-2000:]
    dataset_id = done.stdout.strip()
    assert state(home) == ([(dataset_id, case.rows)], [dataset_id])  # listed; nothing else left in datasets/
    rows = load_rows(home / "datasets" / dataset_id / "data.parquet")
    assert len(rows) == case.rows
    if case.check:
        case.check(rows)


# --- what is printed about a dataset stays short, however long its values or many its columns


def test_ignored_columns_are_named_up_to_ten_then_counted(corpus, studio):
    from studio.cli_data import summary_line

    wide = next(c for c in GOOD if c.name == "wide.csv")
    row = studio.import_dataset(path_of(corpus, wide))
    extra = ", ".join(f"extra_{i}" for i in range(10))
    assert summary_line(row) == (f"1 rows, sft, from wide.csv (prompt/completion), ignored columns: {extra} "
                                 "and 1190 more")
    assert row["meta"]["ignored_count"] == 1200 and len(row["meta"]["ignored_columns"]) == 10


def test_data_show_cuts_a_5_mb_value_and_a_long_conversation(tmp_path, tiny_model_dir):
    import json
    import time

    from studio.core import Studio

    huge = "lorem ipsum " * 440_000  # 5.3 MB
    talk = [{"role": r, "content": f"turn {i}"} for i in range(10) for r in ("user", "assistant")]
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Summarise this."},
                                             {"role": "assistant", "content": huge}]}) + "\n"
                    + json.dumps({"messages": talk}) + "\n")
    home = tmp_path / "home"
    dataset_id = Studio(home).import_dataset(path)["id"]
    started = time.time()
    shown = subprocess.run([sys.executable, "-m", "studio.cli", "data", "show", dataset_id, "--rows", "2",
                            "--model", str(tiny_model_dir), "--home", str(home)], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    seconds = time.time() - started
    assert shown.returncode == 0, shown.stderr[-2000:]
    out = shown.stdout.splitlines()
    assert out[1:4] == ["--- row 1", "messages: user: Summarise this.",
                        f"assistant: {huge[:200]}… ({len(huge) - 200:,} more characters)"]
    assert out[4:11] == ["--- row 2", "messages: user: turn 0", "assistant: turn 0", "user: turn 1",
                         "assistant: turn 1", "user: turn 2", "assistant: turn 2"]
    assert out[11] == "… and 14 more messages"
    assert "1 rows over max length 512" in shown.stdout
    assert len(shown.stdout) < 5000, len(shown.stdout)  # was the whole 5 MB
    assert seconds < 60  # was 30 s on its own; what is left is mostly importing transformers


def test_token_counts_of_a_5_mb_value_take_a_moment(real_tokenizer_dir):
    """Counting a 5 MB value's tokens took ~25 s and over 1 GB: it is counted on its first
    characters, which are already far over any max length."""
    import time

    from transformers import AutoTokenizer

    from pipelines import dataset_stats

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    row = {"messages": [{"role": "user", "content": "Summarise this."},
                        {"role": "assistant", "content": "lorem ipsum " * 440_000}]}
    started = time.time()
    lengths = dataset_stats.token_lengths([row], tokenizer, dataset_stats.measured_chars(512))
    example = dataset_stats.render_example(row, tokenizer, 512)
    assert time.time() - started < 10
    assert lengths[0] > 512 and example["truncated"] and example["context_tokens"] + example["learned_tokens"] == 512
