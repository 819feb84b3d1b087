"""A conversation of several replies learns every reply (pipelines/conversation.py): the mask is checked
on hand-written conversations, the Data tab shows what the trainer tokenizes, and a short run on the tiny
model makes the first reply of each conversation, which it used to skip as context, more likely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipelines import conversation, data, dataset_stats, importer
from pipelines.events import RunEvents
from pipelines.train_sft import build_trainer
from tests.test_train_sft import tiny_job

TWO = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
       {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]


@pytest.fixture(scope="module")
def tokenizer(real_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_tokenizer_dir)


def learned_and_context(ids, mask, tokenizer):
    runs = conversation.stretches(ids, mask, tokenizer)
    return [t for t, on in runs if on], [t for t, on in runs if not on]


def test_every_reply_is_learned_and_nothing_else(tokenizer):
    ids, mask = conversation.reply_mask(TWO, tokenizer)
    assert ids == tokenizer.apply_chat_template(TWO, tokenize=True, return_dict=True)["input_ids"]
    learned, context = learned_and_context(ids, mask, tokenizer)
    assert learned == ["A1<|im_end|>\n", "A2<|im_end|>\n"]
    assert context[1] == "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"
    assert context[0].endswith("<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n")
    assert "".join(conversation.stretches(ids, mask, tokenizer)[i][0] for i in range(4)) == tokenizer.decode(ids)


def test_a_single_reply_is_masked_as_trls_prompt_and_completion(tokenizer):
    one = TWO[:2]
    ids, mask = conversation.reply_mask(one, tokenizer)
    prompt = tokenizer.apply_chat_template(one[:1], tokenize=True, return_dict=True,
                                           add_generation_prompt=True)["input_ids"]
    assert ids[:len(prompt)] == prompt and mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))


def test_a_system_turn_and_consecutive_user_turns_stay_context(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "One"},
                {"role": "user", "content": "Two"}, {"role": "assistant", "content": "Done"}]
    ids, mask = conversation.reply_mask(messages, tokenizer)
    learned, context = learned_and_context(ids, mask, tokenizer)
    assert learned == ["Hello<|im_end|>\n", "Done<|im_end|>\n"]
    assert context[0].startswith("<|im_start|>system\nBe brief.")
    assert "One" in context[1] and "Two" in context[1]


def chat_job(tmp_path, tiny_model_dir, params, conversations):
    source = tmp_path / "chats.jsonl"
    source.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    job = tiny_job(tmp_path, tiny_model_dir, params, source=source)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return job, run_dir


CHATS = [[{"role": "user", "content": f"Ticket {i}: what colour is the case?"},
          {"role": "assistant", "content": "The case is teal."},
          {"role": "user", "content": "Thanks."},
          {"role": "assistant", "content": "Glad to help."}] for i in range(12)]


def test_the_data_tab_shows_what_the_trainer_learns_of_a_conversation(tmp_path, tiny_model_dir, tiny_params):
    job, run_dir = chat_job(tmp_path, tiny_model_dir, {**tiny_params, "eval_fraction": 0.0, "max_length": 512},
                            CHATS)
    assert data.multi_reply(job["dataset"])
    trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    row = data.load_rows(job["dataset"]["path"])[0]
    shown = dataset_stats.render_example(row, tokenizer, max_length=512)
    seen = trainer.train_dataset[0]
    learned = [t for t, label in zip(seen["input_ids"], seen["labels"]) if label != -100]
    assert tokenizer.decode(learned) == "The case is teal.<|im_end|>\nGlad to help.<|im_end|>\n" == shown["learned"]
    assert shown["tokens"] == len(seen["input_ids"]) == dataset_stats.token_lengths([row], tokenizer)[0]
    assert [on for _text, on in shown["runs"]] == [False, True, False, True]
    # cut by the max length: the second reply is out, as TRL truncates the pre-tokenized row
    short = dataset_stats.render_example(row, tokenizer, max_length=shown["tokens"] - 8)
    assert short["learned"].startswith("The case is teal.<|im_end|>") and "Glad" not in short["learned"]


def reply_loss(model, tokenizer, messages, upto: int) -> float:
    """Mean loss of the reply at `upto` given the turns before it."""
    prompt = tokenizer.apply_chat_template(messages[:upto], tokenize=True, return_dict=True,
                                           add_generation_prompt=True)["input_ids"]
    full = tokenizer.apply_chat_template(messages[:upto + 1], tokenize=True, return_dict=True)["input_ids"]
    ids = torch.tensor([full])
    labels = ids.clone()
    labels[0, :len(prompt)] = -100
    with torch.no_grad():
        return model(input_ids=ids, labels=labels).loss.item()


def test_a_run_learns_the_first_reply_of_each_conversation(tmp_path, tiny_model_dir, tiny_params):
    """The first reply (teal) grows more likely about as fast as the last one: it is learned, not context."""
    job, run_dir = chat_job(tmp_path, tiny_model_dir, {**tiny_params, "eval_fraction": 0.0, "max_length": 128,
                                                       "num_train_epochs": 4}, CHATS)
    trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    model = trainer.model
    model.eval()
    before = [reply_loss(model, tokenizer, CHATS[0], i) for i in (1, 3)]
    model.train()
    trainer.train()
    model.eval()
    after = [reply_loss(model, tokenizer, CHATS[0], i) for i in (1, 3)]
    first, last = before[0] - after[0], before[1] - after[1]
    # measured: the first reply's loss fell 0.84 and the last's 0.79; learned as context only, the first's fell
    # 0.19 as the last's fell 1.11 (over 10 epochs)
    assert first > 0.5 and first > 0.5 * last, (before, after)


QWEN3 = Path(__import__("trl").__file__).parent / "chat_templates" / "qwen3.jinja"
# Mistral's way: the system text goes into the last user turn only
SYSTEM_IN_LAST_TURN = ("{%- set system = messages[0]['content'] if messages[0]['role'] == 'system' else '' -%}"
                       "{%- for m in messages if m['role'] != 'system' -%}"
                       "{%- if m['role'] == 'user' -%}[INST] {% if loop.last and system %}{{ system }}\n\n{% endif %}"
                       "{{ m['content'] }}[/INST]{%- else -%} {{ m['content'] }}</s>{%- endif -%}{%- endfor -%}")


@pytest.mark.parametrize("template", ["qwen3", "system_in_last_turn"])
def test_a_template_that_writes_a_start_otherwise_learns_the_last_reply_as_trl_does(tokenizer, template):
    """Qwen3 writes an empty think block into the last reply only, Mistral's template the system text into the
    last user turn: a reply's bounds cannot be read from the conversation's start, and were wrong (Qwen3's
    earlier replies learned nothing, Mistral's learned user text). Such a template is said to keep no
    prefixes, and a row learns its last reply, as TRL's prompt/completion does."""
    import copy

    other = copy.deepcopy(tokenizer)
    other.chat_template = QWEN3.read_text() if template == "qwen3" else SYSTEM_IN_LAST_TURN
    messages = [{"role": "system", "content": "Be brief."}, *TWO]
    assert not conversation.keeps_prefixes(other, messages)
    ids, mask = conversation.reply_mask(messages, other)
    assert (ids, mask) == conversation.last_reply_mask(messages, other)
    learned, _context = learned_and_context(ids, mask, other)
    # (Mistral's last user turn differs too, so TRL's prompt/completion learns its end with the reply)
    assert len(learned) == 1 and learned[0].endswith("A2<|im_end|>\n" if template == "qwen3" else "A2</s>")
    assert "A1" not in learned[0]
    assert conversation.keeps_prefixes(tokenizer, messages)  # ChatML (the built-in model's) does


PHI3 = QWEN3.parent / "phi3.jinja"


def test_a_template_that_ends_a_conversation_with_its_end_of_text_learns_every_reply(tokenizer):
    """Phi-3's template writes its end-of-text token after a conversation that ends there, so the start of a
    conversation is the whole's start without it: each reply is still learned (all but the last were not)."""
    import copy

    other = copy.deepcopy(tokenizer)
    other.chat_template = PHI3.read_text()
    assert conversation.keeps_prefixes(other, TWO)
    learned, _context = learned_and_context(*conversation.reply_mask(TWO, other), other)
    assert learned == ["A1<|end|>\n", f"A2<|end|>\n{other.eos_token}"]


@pytest.mark.parametrize("reply", ["\n\nHello", "  two spaces", "Hello"])
def test_a_single_reply_is_learned_from_the_token_trl_starts_it_at(tokenizer, reply):
    """A token that runs across a reply's start (a reply that opens with blank lines or spaces) is learned, as
    TRL starts the reply at the first token where the prompt's tokens and the whole's differ."""
    one = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": reply}]
    assert conversation.reply_mask(one, tokenizer) == conversation.last_reply_mask(one, tokenizer)


def test_a_held_out_conversation_is_measured_on_a_reply_no_training_row_learns(tmp_path, tiny_model_dir, tiny_params):
    """Every reply is learned, so the split joins a conversation to the group whose context one of its earlier
    replies answers (a regenerated reply, a branch of one tree), and a held-out conversation is measured on its
    last reply alone: no held-out reply is one a training row learned in the same context. Conversations that
    merely open alike (a greeting) still split."""
    branch = [*TWO[:2], {"role": "user", "content": "Q3"}, {"role": "assistant", "content": "A3"}]
    rows = [{"messages": TWO}, {"messages": branch}, {"messages": TWO[:2]},
            {"messages": [{"role": "user", "content": "Other"}, {"role": "assistant", "content": "B"}]}]
    assert data.prompt_groups(rows) == [[0, 1, 2], [3]]  # A1 answers Q1 in all three
    greeted = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": f"Question {i}?"},
                             {"role": "assistant", "content": f"Answer {i}."}]} for i in range(10)]
    assert data.prompt_groups(greeted) == [[i] for i in range(10)]
    # the stored dataset's groups are the same
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    importer.import_file(source, tmp_path / "rows")
    assert data.stored_prompt_groups(tmp_path / "rows" / importer.DATA) == [[0, 1, 2], [3]]

    (tmp_path / "run").mkdir()
    job, run_dir = chat_job(tmp_path / "run", tiny_model_dir, {**tiny_params, "eval_fraction": 0.25,
                                                                "max_length": 512}, CHATS)
    trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    measured = trainer.eval_dataset[0]
    assert tokenizer.decode([t for t, label in zip(measured["input_ids"], measured["labels"]) if label != -100]) \
        == "Glad to help.<|im_end|>\n"
    taught = trainer.train_dataset[0]
    assert "The case is teal." in tokenizer.decode([t for t, label in zip(taught["input_ids"], taught["labels"])
                                                     if label != -100])


def test_a_reply_marked_weight_0_is_context_to_the_trainer_and_the_data_tab(tmp_path, tiny_model_dir, tiny_params):
    """OpenAI's `weight: 0`: the reply stays in the conversation as context, is not learned, and joins no group of
    the split (nothing would be measured after being learned)."""
    marked = [[{**m, "weight": 0} if i == 1 else m for i, m in enumerate(chat)] for chat in CHATS]
    job, run_dir = chat_job(tmp_path, tiny_model_dir, {**tiny_params, "eval_fraction": 0.0, "max_length": 512},
                            marked)
    trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    seen = trainer.train_dataset[0]
    assert "The case is teal." in tokenizer.decode(seen["input_ids"])
    learned = tokenizer.decode([t for t, label in zip(seen["input_ids"], seen["labels"]) if label != -100])
    row = data.load_rows(job["dataset"]["path"])[0]
    shown = dataset_stats.render_example(row, tokenizer, max_length=512)
    assert learned == "Glad to help.<|im_end|>\n" == shown["learned"]
    assert [on for _text, on in shown["runs"]] == [False, True]
    assert "untrained" not in trainer.train_dataset.column_names
    # cut before its learned reply (the Data tab's view of a long conversation): nothing shown as learned
    ids, mask = conversation.reply_mask(TWO[:3], tokenizer, untrained=[1])
    assert ids and mask == [0] * len(ids)
    # a conversation that answers Q1 with a reply kept as context is not joined to Q1's group
    rows = [{"messages": TWO, "untrained": [1]}, {"messages": TWO[:2]}]
    assert data.prompt_groups(rows) == [[0], [1]]
    assert data.prompt_groups([{"messages": TWO}, {"messages": TWO[:2]}]) == [[0, 1]]


def test_a_run_continued_on_other_data_holds_out_no_question_its_parent_learned_a_reply_to(tmp_path):
    """The runs behind a run recorded a conversation by the turns before its last reply only: a run continued
    on another file could hold out Q1, whose answer its parent learned as a conversation's first reply, and be
    measured on it. Now every learned reply's context counts as trained; a reply kept as context does not."""
    from pipelines import lineage
    from pipelines.events import HELDOUT_ROWS, JOB, write_json

    def stored(name, rows):
        source = tmp_path / f"{name}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        importer.import_file(source, tmp_path / name, importer.ImportOptions(heldout=0))
        return tmp_path / name / importer.DATA

    runs = tmp_path / "runs"
    for run_id, rows in (("parent", [{"messages": TWO}]),
                         ("marked", [{"messages": [TWO[0], {**TWO[1], "weight": 0}, *TWO[2:]]}])):
        (runs / run_id).mkdir(parents=True)
        write_json(runs / run_id / JOB, {"dataset": {"path": str(stored(run_id, rows))}, "parent_id": None})
        write_json(runs / run_id / HELDOUT_ROWS, {"rows": 1, "heldout": []})
    other = stored("other", [{"messages": TWO[:2]}, {"messages": [{"role": "user", "content": "Other"},
                                                                  {"role": "assistant", "content": "B"}]}])
    assert lineage.untrained_rows(lineage.trained_by(runs, "parent"), lineage.stored_digests(other)) == [1]
    assert lineage.untrained_rows(lineage.trained_by(runs, "marked"), lineage.stored_digests(other)) is None


def test_a_conversation_new_to_a_continued_run_whose_prompt_its_parent_learned_trains(tmp_path):
    """Conversation X learns A1 in Q1's context, so the split joins it to row Y, [Q1 -> A1]. A parent that learned
    Q1's answer makes Y old and X new to a run continued from it: the run's plan of its held-out rows crashed
    (KeyError) on the group half new. The whole group trains, in either order."""
    from pipelines import lineage

    x = {"messages": [*TWO[:2], {"role": "user", "content": "Q3"}, {"role": "assistant", "content": "A3"}]}
    y = {"messages": TWO[:2]}
    others = [{"messages": [{"role": "user", "content": f"Other {i}"}, {"role": "assistant", "content": "B"}]}
              for i in range(6)]
    parent = set(lineage.learned({"messages": TWO}))
    for rows in ([x, y, *others], [y, x, *others]):
        groups = data.prompt_groups(rows)
        fresh = lineage.untrained_rows(parent, [lineage.digest(r) for r in rows])
        assert sorted(fresh) == [rows.index(x), *range(2, 8)]
        train, held = data.plan_among(len(rows), fresh, 0.5, 7, "sft", groups)
        assert held and not {rows.index(x), rows.index(y)} & set(held) and sorted(train + held) == list(range(8))


def test_chat_offers_no_held_out_question_the_compared_run_learned_alone():
    """A run behind's held-out conversation is posed as its last question: a run that learned that question alone
    was offered it as new."""
    from pipelines import lineage
    from studio.chat_service import new_to

    trained = set(lineage.learned({"messages": [{"role": "user", "content": "Q2"},
                                                {"role": "assistant", "content": "B"}]}))
    ends_with_q2 = {"messages": TWO}
    ends_with_q3 = {"messages": [*TWO[:2], {"role": "user", "content": "Q3"}, {"role": "assistant", "content": "C"}]}
    assert new_to([ends_with_q2, ends_with_q3], trained) == [ends_with_q3]
