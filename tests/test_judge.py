"""AI feedback (RLAIF) on the tiny model: the judge's number is the normalised probability of "1"
over "2" at its next token, asking both orders cancels position bias, agreement with humans comes
with Wilson intervals, judged pairs keep the stored shape in the judge's order, and the job writes
judged.jsonl (or nothing when cancelled)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pipelines import importer, judge, models
from pipelines.data import load_rows
from pipelines.events import RunEvents

PROMPT = [{"role": "user", "content": "How long is the Quillpad warranty?"}]
GOOD = "Every Quillpad comes with a 27 months warranty from the date of purchase."
BAD = "I am not sure, maybe a year or so."


@pytest.fixture(scope="module")
def judge_model(tiny_model_dir):
    return models.load_model(str(tiny_model_dir)).eval(), models.load_tokenizer(str(tiny_model_dir))


# --- pure parts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("a_first, b_first, expected", [
    (0.8, 0.3, 0.75),   # both orders favour a: (0.8 + 0.7) / 2
    (0.9, 0.9, 0.5),    # always "1" with the same confidence: pure position bias, cancelled
    (0.6, 0.6, 0.5),
    (1.0, 0.0, 1.0),
    (0.2, 0.9, 0.15),
])
def test_combine_averages_the_two_orders(a_first, b_first, expected):
    assert judge.combine(a_first, b_first) == pytest.approx(expected)


def test_judge_messages_hold_the_instruction_conversation_and_both_answers():
    plain = judge.judge_messages(PROMPT, GOOD, BAD)
    assert [m["role"] for m in plain] == ["user"]
    text = plain[0]["content"]
    assert text.startswith(judge.JUDGE_INSTRUCTION) and text.endswith(judge.QUESTION)
    assert text.index(PROMPT[0]["content"]) < text.index(GOOD) < text.index(BAD)
    assert judge.JUDGE_INSTRUCTION.endswith("1 or 2, to say which answer is better.")
    reasoned = judge.judge_messages(PROMPT, GOOD, BAD, rationale="Answer 1 is specific.")
    assert [m["role"] for m in reasoned] == ["user", "assistant", "user"]
    assert reasoned[0] == judge.rationale_messages(PROMPT, GOOD, BAD)[0]
    assert reasoned[1]["content"] == "Answer 1 is specific." and reasoned[2]["content"] == judge.QUESTION


def test_agreement_counts_and_wilson_intervals():
    judged = [
        {"p_a": 0.7, "p_a_first": 0.9, "p_b_first": 0.5},   # both agree; one order: 1 and 0.5 (undecided) -> 0.75
        {"p_a": 0.6, "p_a_first": 0.8, "p_b_first": 0.6},   # both agree; one order: 1 and 0 -> 0.5
        {"p_a": 0.2, "p_a_first": 0.3, "p_b_first": 0.9},   # both and each order disagree -> 0
        {"p_a": 0.3, "p_a_first": 0.3, "p_b_first": None},  # asked once, says b as the human -> 1
    ]
    found = judge.agreement(judged, ["a", "a", "a", "b"])
    assert found["n"] == 4
    assert found["both_orders"] == pytest.approx(0.75)
    assert found["one_order"] == pytest.approx((0.75 + 0.5 + 0 + 1) / 4)
    # 3 of 4: the textbook 95% Wilson interval [0.301, 0.954]; 2.25 of 4: [0.253, 0.929]
    assert found["interval_both_orders"] == pytest.approx([0.3006, 0.9544], abs=1e-4)
    z = 1.959964
    p, n = 2.25 / 4, 4
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert found["interval_one_order"] == pytest.approx([(centre - half) / (1 + z * z / n),
                                                         (centre + half) / (1 + z * z / n)])


def test_agreement_of_a_judge_that_always_says_1_is_chance_not_perfect():
    # stored pairs show the human's pick first: p_a_first alone would score this judge 100%
    judged = [{"p_a": judge.combine(0.9, 0.9), "p_a_first": 0.9, "p_b_first": 0.9}] * 5
    found = judge.agreement(judged, ["a"] * 5)
    assert found["both_orders"] == 0.5 and found["one_order"] == 0.5
    assert judge.first_shown_rate(judged) == 1.0


def test_a_reading_of_exactly_one_half_counts_half_towards_picking_the_first_shown():
    # a bf16 judge reads exactly 0.5 often: it picked neither answer, not the second one
    assert judge.first_shown_rate([{"p_a": 0.5, "p_a_first": 0.5, "p_b_first": 0.5}]) == 0.5
    assert judge.first_shown_rate([{"p_a": 0.5, "p_a_first": 0.5, "p_b_first": 0.9}]) == 0.75


def test_agreement_refuses_mismatched_or_unknown_choices():
    with pytest.raises(ValueError, match="2 judged pairs but 1 human"):
        judge.agreement([{"p_a": 0.6, "p_a_first": 0.6, "p_b_first": None}] * 2, ["a"])
    with pytest.raises(ValueError, match="'tie' is not"):
        judge.agreement([{"p_a": 0.6, "p_a_first": 0.6, "p_b_first": None}], ["tie"])
    assert judge.agreement([], [])["both_orders"] is None


# --- the tiny model as judge --------------------------------------------------------------------

def test_choice_tokens_are_two_single_tokens_right_after_the_generation_prompt(judge_model):
    _, tokenizer = judge_model
    ones, twos = judge.choice_token_ids(tokenizer)
    assert ones and twos and not set(ones) & set(twos)
    assert {tokenizer.decode([i]).strip() for i in ones} == {"1"} and {tokenizer.decode([i]).strip() for i in twos} == {"2"}
    context = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert tokenizer(context + "1", add_special_tokens=False).input_ids[-1] in ones


def test_a_judge_without_a_chat_template_is_refused_in_one_sentence(tiny_model_dir):
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template") as caught:
        judge.choice_token_ids(tokenizer)
    assert "\n" not in str(caught.value)


def _by_hand(model, tokenizer, messages) -> float:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    one, two = tokenizer.convert_tokens_to_ids(["1", "2"])
    return math.exp(logits[one]) / (math.exp(logits[one]) + math.exp(logits[two]))


def test_first_is_better_is_the_normalised_probability_of_1(judge_model):
    model, tokenizer = judge_model
    p = judge.first_is_better(model, tokenizer, PROMPT, GOOD, BAD)
    assert 0 < p < 1
    assert p == pytest.approx(_by_hand(model, tokenizer, judge.judge_messages(PROMPT, GOOD, BAD)), abs=1e-5)


def test_a_thinking_template_is_asked_not_to_think(judge_model, tiny_model_dir):
    # Qwen3-style: thinking on unless enable_thinking=False, so the next token would be <think>, not 1 or 2
    model, _ = judge_model
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    tokenizer.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                               "{% if add_generation_prompt %}<|im_start|>assistant\n"
                               "{% if enable_thinking is not defined or enable_thinking %}<think>\n{% endif %}{% endif %}")
    messages = judge.judge_messages(PROMPT, GOOD, BAD)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert not text.endswith("<think>\n")
    ids = torch.tensor([tokenizer(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    (one,), (two,) = judge.choice_token_ids(tokenizer)
    assert judge.first_is_better(model, tokenizer, PROMPT, GOOD, BAD) == pytest.approx(
        float(logits[[one, two]].softmax(-1)[0]), abs=1e-5)


def test_a_bf16_judge_reads_its_two_choices_in_float32(tiny_model_dir):
    # bf16 logits come in steps of 1/8 near 10-20: readings of 0.5, 0.73, 0.75 only, unlike the same judge's in fp32
    model = models.load_model(str(tiny_model_dir)).to(torch.bfloat16).eval()
    tokenizer = models.load_tokenizer(str(tiny_model_dir))
    with torch.no_grad():  # scale the output layer up: logits of a real judge's size, where bf16 rounds coarsely
        model.lm_head.weight.mul_(400.0)
    messages = judge.judge_messages(PROMPT, GOOD, BAD)
    ids = torch.tensor([tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
                                  add_special_tokens=False).input_ids])
    (one,), (two,) = judge.choice_token_ids(tokenizer)
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state[0, -1].float()
        exact = hidden @ model.lm_head.weight[[one, two]].float().T
        rounded = model(input_ids=ids).logits[0, -1, [one, two]].float()
    assert rounded.abs().max() > 4 and not torch.equal(rounded, exact)
    p = judge.first_is_better(model, tokenizer, PROMPT, GOOD, BAD)
    assert p == pytest.approx(float(exact.softmax(-1)[0]), abs=1e-6)

    # a model that changes its logits after the output layer (a soft cap): its own logits are read
    def capped(module, args, out):
        out.logits = 2.0 * torch.tanh(out.logits / 2.0)
        return out

    hook = model.register_forward_hook(capped)
    try:
        p = judge.first_is_better(model, tokenizer, PROMPT, GOOD, BAD)
    finally:
        hook.remove()
    assert p == pytest.approx(float((2.0 * torch.tanh(rounded / 2.0)).softmax(-1)[0]), abs=1e-6)


def test_with_a_rationale_the_judge_reads_its_own_greedy_comparison(judge_model):
    from pipelines.generation import reply

    model, tokenizer = judge_model
    p = judge.first_is_better(model, tokenizer, PROMPT, GOOD, BAD, rationale=True, max_rationale_tokens=6)
    # (a random model may write only special tokens: an empty comparison is still a turn of its own)
    written = reply(model, tokenizer, judge.rationale_messages(PROMPT, GOOD, BAD), max_new_tokens=6)
    messages = judge.judge_messages(PROMPT, GOOD, BAD, rationale=written)
    assert p == pytest.approx(_by_hand(model, tokenizer, messages), abs=1e-5)
    assert p != pytest.approx(judge.first_is_better(model, tokenizer, PROMPT, GOOD, BAD), abs=1e-6)


def test_judge_pair_combines_both_orders_and_asks_once_when_told(judge_model):
    model, tokenizer = judge_model
    both = judge.judge_pair(model, tokenizer, PROMPT, GOOD, BAD)
    assert both["p_a_first"] == pytest.approx(judge.first_is_better(model, tokenizer, PROMPT, GOOD, BAD))
    assert both["p_b_first"] == pytest.approx(judge.first_is_better(model, tokenizer, PROMPT, BAD, GOOD))
    assert both["p_a"] == pytest.approx(judge.combine(both["p_a_first"], both["p_b_first"]))
    # swapping the answers mirrors the verdict exactly: no order is favoured
    swapped = judge.judge_pair(model, tokenizer, PROMPT, BAD, GOOD)
    assert swapped["p_a"] == pytest.approx(1 - both["p_a"])
    once = judge.judge_pair(model, tokenizer, PROMPT, GOOD, BAD, both_orders=False)
    assert once == {"p_a": pytest.approx(both["p_a_first"]), "p_a_first": pytest.approx(both["p_a_first"]),
                    "p_b_first": None}


def _stored(chosen: str, rejected: str) -> dict:
    return {"prompt": PROMPT, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def test_label_rows_puts_the_judges_pick_in_chosen_and_keeps_the_stored_shape(judge_model):
    model, tokenizer = judge_model
    # the same pair twice, the second with chosen and rejected swapped: whatever the random judge
    # prefers, exactly one of the two rows must be swapped back
    rows = [_stored(GOOD, BAD), _stored(BAD, GOOD), {"prompt": "Is it waterproof?", "chosen": "No.", "rejected": "Yes."}]
    seen = []
    out = judge.label_rows(model, tokenizer, rows, on_progress=lambda done, total: seen.append((done, total)),
                           min_sure=0.5)
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert [r["human_agrees"] for r in out[:2]] in ([True, False], [False, True])
    assert out[0]["chosen"] == out[1]["chosen"] and out[0]["rejected"] == out[1]["rejected"]
    for row, judged in zip(rows, out):
        assert judged["prompt"] == row["prompt"]
        assert {judged["chosen"] if isinstance(judged["chosen"], str) else judged["chosen"][0]["content"],
                judged["rejected"] if isinstance(judged["rejected"], str) else judged["rejected"][0]["content"]} == \
            {row["chosen"] if isinstance(row["chosen"], str) else row["chosen"][0]["content"],
             row["rejected"] if isinstance(row["rejected"], str) else row["rejected"][0]["content"]}
        assert 0.5 <= judged["judge_p"] < 1
        p_a = judged["judge"]["p_a"]
        assert judged["human_agrees"] == (p_a >= 0.5) and judged["judge_sure"] == (p_a != 0.5)
        assert judged["judge_p"] == pytest.approx(p_a if judged["human_agrees"] else 1 - p_a)
    assert isinstance(out[2]["chosen"], str)  # plain-string answers stay strings


def test_a_judge_unsure_of_either_answer_keeps_the_original_choice(judge_model):
    model, tokenizer = judge_model
    rows = [_stored(GOOD, BAD), _stored(BAD, GOOD)]
    p_a = judge.label_rows(model, tokenizer, rows[:1], min_sure=0.5)[0]["judge"]["p_a"]
    lean = max(p_a, 1 - p_a)  # the random judge leans a little one way: one of the two rows is reversed at 0.5
    assert 0.5 < lean < 0.99
    unsure = judge.label_rows(model, tokenizer, rows, min_sure=(lean + 1) / 2)
    assert [r["human_agrees"] for r in unsure] == [True, True] and [r["judge_sure"] for r in unsure] == [False, False]
    assert [r["chosen"] for r in unsure] == [row["chosen"] for row in rows]
    assert unsure[0]["judge_p"] == pytest.approx(p_a)
    sure = judge.label_rows(model, tokenizer, rows, min_sure=lean - 1e-6 if lean - 1e-6 >= 0.5 else 0.5)
    assert sorted(r["human_agrees"] for r in sure) == [False, True] and all(r["judge_sure"] for r in sure)


@pytest.mark.parametrize("value, message", [
    (0.4, "is 0.4; give a share from 0.5 (any lean) to below 1"),
    (1.0, "is 1; give a share from 0.5 (any lean) to below 1"),
    ("x", "is 'x'; give a share such as 0.55"),
])
def test_how_sure_the_judge_must_be_is_checked(value, message):
    with pytest.raises(ValueError) as caught:
        judge.check_min_sure(value)
    assert str(caught.value) == f"how sure the judge must be to reverse a choice {message}"


def test_label_rows_in_one_order_alternates_which_answer_is_shown_first(judge_model):
    model, tokenizer = judge_model
    out = judge.label_rows(model, tokenizer, [_stored(GOOD, BAD)] * 2, both_orders=False)
    assert out[0]["judge"]["p_b_first"] is None and out[1]["judge"]["p_a_first"] is None
    assert out[1]["judge"]["p_a"] == pytest.approx(1 - out[1]["judge"]["p_b_first"])


def test_label_rows_stops_when_asked(judge_model):
    model, tokenizer = judge_model
    asked = []
    out = judge.label_rows(model, tokenizer, [_stored(GOOD, BAD)] * 3, both_orders=False,
                           should_stop=lambda: asked.append(1) or len(asked) > 1)
    assert len(out) == 1


# --- the job --------------------------------------------------------------------------------------

@pytest.fixture
def pairs(tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "How long is the Quillpad warranty?", "chosen": GOOD, "rejected": BAD},
        {"prompt": "How do I reset my Quillpad?", "chosen": "Hold power and page-down for 12 seconds.",
         "rejected": "Throw it against the wall."},
        {"prompt": "What is the support email?", "chosen": "help@brightfern.example", "rejected": "There is none."},
    ]))
    importer.import_file(source, tmp_path / "dataset")
    return tmp_path / "dataset" / importer.DATA


def _job(pairs, tiny_model_dir, **extra) -> dict:
    return {"runner": "pipelines.judge", "dataset": {"path": str(pairs)}, "judge_model": str(tiny_model_dir),
            "both_orders": True, "rationale": False, "limit": None, **extra}


def test_the_job_writes_judged_pairs_and_an_agreement_summary(pairs, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    events = RunEvents(run_dir)
    summary = judge.run(_job(pairs, tiny_model_dir), run_dir, events)
    judged = [json.loads(line) for line in (run_dir / judge.JUDGED).read_text().splitlines()]
    assert len(judged) == 3 and summary["pairs"] == 3 and summary["judged_file"] == judge.JUDGED
    assert events.progress["step"] == events.progress["max_steps"] == 3
    assert summary["agreement_both_orders"] == pytest.approx(sum(r["judge"]["p_a"] > 0.5 for r in judged) / 3)
    assert summary["min_sure"] == judge.MIN_SURE
    assert summary["reversed"] == sum(not r["human_agrees"] for r in judged)
    assert summary["unsure_kept"] == sum(max(r["judge"]["p_a"], 1 - r["judge"]["p_a"]) < judge.MIN_SURE for r in judged)
    for key in ("interval_both_orders", "interval_one_order"):
        low, high = summary[key]
        assert 0 <= low <= high <= 1
    assert 0 <= summary["agreement_one_order"] <= 1 and 0 <= summary["picks_first_shown"] <= 1
    assert not list(run_dir.glob(".*.tmp"))
    # the judged pairs are a preference dataset again
    meta = importer.import_file(run_dir / judge.JUDGED, tmp_path / "again")
    assert meta["kind"] == "preference" and meta["rows"] == 3
    assert [r["chosen"] for r in load_rows(tmp_path / "again" / importer.DATA)] == [r["chosen"] for r in judged]


def test_the_job_honours_its_limit(pairs, tiny_model_dir, tmp_path):
    summary = judge.run(_job(pairs, tiny_model_dir, limit=1, both_orders=False), tmp_path, RunEvents(tmp_path))
    assert summary["pairs"] == 1
    assert len((tmp_path / judge.JUDGED).read_text().splitlines()) == 1


def test_a_cancelled_job_returns_early_and_keeps_nothing(pairs, tiny_model_dir, tmp_path):
    class CancelAfterOne(RunEvents):
        asked = 0

        def cancel_requested(self):
            self.asked += 1
            return self.asked > 1

    summary = judge.run(_job(pairs, tiny_model_dir), tmp_path, CancelAfterOne(tmp_path))
    assert summary == {"cancelled": True, "judged": 1}
    assert not (tmp_path / judge.JUDGED).exists() and not list(tmp_path.glob(".*.tmp"))


def test_a_dataset_without_pairs_is_refused_in_one_sentence(tiny_model_dir, tmp_path):
    source = tmp_path / "sft.jsonl"
    source.write_text(json.dumps({"prompt": "Hi", "completion": "Hello"}) + "\n")
    importer.import_file(source, tmp_path / "sft")
    with pytest.raises(ValueError, match=r"data.parquet, row 1: expected a preference pair"):
        judge.run(_job(tmp_path / "sft" / importer.DATA, tiny_model_dir), tmp_path, RunEvents(tmp_path))


def test_a_pair_longer_than_the_judge_reads_is_kept_unjudged(tiny_model_dir, tmp_path):
    """A pair past the judge's window read nonsense positions, or stopped the whole job with an IndexError after
    every pair before it was judged; now it is kept as it was, and a job of such pairs only says so."""
    import shutil

    short = tmp_path / "judge-400"
    shutil.copytree(tiny_model_dir, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 400}))
    long_answer = " ".join(["The warranty terms are explained at great length in the booklet."] * 40)
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "How long is the Quillpad warranty?", "chosen": GOOD, "rejected": BAD},
        {"prompt": "How long is the warranty?", "chosen": long_answer, "rejected": BAD},
        {"prompt": "What is the support email?", "chosen": "help@brightfern.example", "rejected": "There is none."},
    ]))
    importer.import_file(source, tmp_path / "dataset")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = judge.run(_job(tmp_path / "dataset" / importer.DATA, short, min_sure=0.5), run_dir, RunEvents(run_dir))
    judged = [json.loads(line) for line in (run_dir / judge.JUDGED).read_text().splitlines()]
    assert len(judged) == 3 and summary["pairs"] == 2 and summary["too_long_kept"] == 1
    assert judged[1]["judge"] is None and judged[1]["chosen"][0]["content"] == long_answer  # as it was
    assert all(r["judge"] is not None for r in (judged[0], judged[2]))
    assert "too_long" not in judged[1]

    alone = tmp_path / "alone.jsonl"
    alone.write_text(json.dumps({"prompt": "How long?", "chosen": long_answer, "rejected": BAD}) + "\n")
    importer.import_file(alone, tmp_path / "alone")
    with pytest.raises(judge.TooLongForJudge) as err:
        judge.run(_job(tmp_path / "alone" / importer.DATA, short), tmp_path, RunEvents(tmp_path))
    assert str(err.value).startswith("every pair (1) is longer than the judge reads at once (the first: ")
    assert str(err.value).endswith("tokens with the instruction, and the judge reads 400 at once); pick a judge with "
                                   "a longer context, or shorten the answers")


# --- readings kept for the next job ---------------------------------------------------------------

def test_a_job_goes_on_from_the_readings_of_one_that_stopped(pairs, tiny_model_dir, tmp_path, monkeypatch):
    """A judge job that failed or was cancelled kept none of its readings: the next one asked every pair again
    (hours for a large set with written comparisons). Now each reading is logged as it is made, and a job with
    the same judge takes them up; the pairs it then makes are those a job that never stopped makes."""
    class CancelAfterOne(RunEvents):
        asked = 0

        def cancel_requested(self):
            self.asked += 1
            return self.asked > 1

    stopped, resumed, fresh = (tmp_path / name for name in ("stopped", "resumed", "fresh"))
    for folder in (stopped, resumed, fresh):
        folder.mkdir()
    assert judge.run(_job(pairs, tiny_model_dir), stopped, CancelAfterOne(stopped)) == {"cancelled": True, "judged": 1}
    assert len((stopped / judge.READINGS).read_text().splitlines()) == 1

    asked, real = [], judge._judge_row  # the answers the judge is asked about (the real judge reads them)
    monkeypatch.setattr(judge, "_judge_row", lambda *a, **k: asked.append(a[3]) or real(*a, **k))
    summary = judge.run(_job(pairs, tiny_model_dir, earlier_readings=[str(stopped / judge.READINGS)]), resumed,
                        RunEvents(resumed))
    assert summary["pairs"] == 3 and summary["reused"] == 1
    assert asked == ["Hold power and page-down for 12 seconds.", "help@brightfern.example"]  # the first was read
    assert len((resumed / judge.READINGS).read_text().splitlines()) == 2  # its own readings only
    assert judge.run(_job(pairs, tiny_model_dir), fresh, RunEvents(fresh))["reused"] == 0
    rows = [[json.loads(line) for line in (folder / judge.JUDGED).read_text().splitlines()] for folder in (resumed, fresh)]
    assert rows[0] == rows[1]


def test_readings_are_reused_only_for_the_same_judge_pair_and_questions(tmp_path):
    log = tmp_path / judge.READINGS
    readings = judge.Readings(log, salt="judge-a|torch.float32")
    key = readings.key(PROMPT, GOOD, BAD, both_orders=True, rationale=False, chosen_first=True)
    reading = {"p_a": 0.7, "p_a_first": 0.8, "p_b_first": 0.4}
    readings.add(key, reading)
    # a job stopped while writing its next line: that half line is passed over, and the next reading starts a line
    with open(log, "a") as out:
        out.write('{"key": "abc", "salt": "judge-a|torch.float32", "judge": {"p_a"')
    again = judge.Readings(log, salt="judge-a|torch.float32")
    assert again.get(key) == reading and again.reused == 1
    other = again.key(PROMPT, GOOD, BAD, both_orders=True, rationale=False, chosen_first=False)
    assert other == key  # asked in both orders, which is shown first makes no difference
    again.add(again.key(PROMPT, BAD, GOOD, True, False, True), {"p_a": 0.2, "p_a_first": 0.1, "p_b_first": 0.7})
    lines = log.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["judge"]["p_a"] == 0.2
    assert len(judge.Readings(None, [log], salt="judge-a|torch.float32").known) == 2
    # another judge, or the same in another number format; another order asked, a written comparison, another pair
    assert judge.Readings(None, [log], salt="judge-a|torch.bfloat16").get(key) is None
    assert again.get(again.key(PROMPT, GOOD, BAD, both_orders=False, rationale=False, chosen_first=True)) is None
    assert again.get(again.key(PROMPT, GOOD, BAD, both_orders=True, rationale=True, chosen_first=True)) is None
    assert again.get(again.key(PROMPT, GOOD, "Something else.", True, False, True)) is None
    # a pair twice in one job is asked once, and not counted as read before
    fresh = judge.Readings(None, salt="judge-a|torch.float32")
    model_key = fresh.key(PROMPT, GOOD, "x", True, False, True)
    fresh.add(model_key, reading)
    assert fresh.get(model_key) == reading and fresh.reused == 0
    # not a reading: passed over
    log.write_text(json.dumps({"key": key, "salt": "judge-a|torch.float32", "judge": {"p_a": float("nan")}}) + "\n")
    assert judge.Readings(None, [log], salt="judge-a|torch.float32").get(key) is None


def test_a_judge_whose_weights_were_replaced_is_another_judge(tiny_model_dir, tmp_path, monkeypatch):
    import os
    import shutil

    folder = tmp_path / "judge"
    shutil.copytree(tiny_model_dir, folder)
    model = models.load_model(str(folder))
    before = judge.judge_salt(str(folder), model)
    assert judge.judge_salt(str(folder), model) == before
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert judge.judge_salt(str(folder), model) != before
    assert judge.judge_salt(str(folder), model.to(torch.bfloat16)) != judge.judge_salt(str(folder), model.float())
    # its chat template rewritten, or another question asked: another judge
    template = judge.judge_salt(str(folder), model)
    config = folder / "tokenizer_config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    assert judge.judge_salt(str(folder), model) != template
    asked = judge.judge_salt(str(folder), model)
    monkeypatch.setattr(judge, "JUDGE_INSTRUCTION", judge.JUDGE_INSTRUCTION + " Be brief.")
    assert judge.judge_salt(str(folder), model) != asked
