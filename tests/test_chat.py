"""Chat serving on the tiny model: streaming, one base copy for base and tuned sides, seeds,
the model cache's memory limit, votes, win rates and the export as preference data."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from pipelines import arena
from pipelines.chat import Decoder, GenerationSettings, ModelCache, stream
from pipelines.data import DataError, load_rows
from studio import chat_service
from tests.conftest import ROOT

QUESTION = [{"role": "user", "content": "How long is the Quillpad warranty?"}]
GREEDY = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def random_adapter(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter with random (non-zero) weights: it changes what the model says."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    peft.save_pretrained(out)
    return out


def plain_generate(model, tokenizer, messages=QUESTION, n=12) -> str:
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False, repetition_penalty=1.0,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_streaming_grows_token_by_token_and_matches_generate(tiny_model_dir, tmp_path):
    from pipelines.models import load_model, load_tokenizer

    entry, adapter = ModelCache(tmp_path).get(str(tiny_model_dir))
    assert adapter is None
    texts = [t[0] for t in stream([Decoder(entry, None, QUESTION, GREEDY)])]
    assert len(texts) >= 5  # one update per token, not one at the end
    assert all(texts[i + 1].startswith(texts[i].strip()) for i in range(len(texts) - 2))
    model = load_model(str(tiny_model_dir)).eval()
    assert texts[-1] == plain_generate(model, load_tokenizer(str(tiny_model_dir)))


def test_a_reply_uses_the_installed_transformers_cache_argument(tiny_model_dir, tmp_path, caplog):
    """transformers 5.24 renamed `past_key_values` to `cache` and warned at every decoding step of
    the old name (it goes in 5.40): the chat passes the name the model's forward takes."""
    import logging

    from transformers.utils import logging as hf_logging

    entry, _ = ModelCache(tmp_path).get(str(tiny_model_dir))
    hf_logging.warning_once.cache_clear()  # a warning shown earlier in this process would hide a new one
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="transformers"):
            texts = [t[0] for t in stream([Decoder(entry, None, QUESTION, GREEDY)])]
    finally:
        hf_logging.disable_propagation()
        hf_logging.set_verbosity(verbosity)
    assert len(texts) >= 5  # it decoded, one step per token
    assert not [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]


def test_a_reply_stopped_by_the_token_limit_says_so(tiny_model_dir, tmp_path):
    entry, _ = ModelCache(tmp_path).get(str(tiny_model_dir))
    limited = Decoder(entry, None, QUESTION, GREEDY)
    limited.stop_ids = set()  # no end of reply: only the limit stops it
    list(stream([limited]))
    assert len(limited.generated) == GREEDY.max_new_tokens and limited.cut_off
    ended = Decoder(entry, None, QUESTION, GREEDY)
    first = Decoder(entry, None, QUESTION, GREEDY)
    first.step()
    ended.stop_ids = {first.generated[0]}  # the model's first token ends the reply
    list(stream([ended]))
    assert ended.done and ended.generated == [] and not ended.cut_off


def test_a_conversation_longer_than_the_model_reads_leaves_out_its_oldest_exchanges(short_context_dir, tmp_path):
    """Nothing compared the prompt with the model's context: past it a model with rotary positions wrote
    nonsense without a word, one with a table of positions stopped with IndexError."""
    from components.chat_tab import context_note
    from pipelines.chat import TooLong

    entry, _ = ModelCache(tmp_path).get(str(short_context_dir))
    said = [{"role": "user", "content": f"Tell me about the gear number {i} of the machine."} if k == 0 else
            {"role": "assistant", "content": f"Gear {i} turns the shaft and the wheel."} for i in range(3) for k in (0, 1)]
    history = [{"role": "system", "content": "Be brief."}, *said, {"role": "user", "content": "And the last one?"}]
    long = Decoder(entry, None, history, GREEDY)
    assert long.context == 64 and long.dropped % 2 == 0 and long.dropped >= 2
    assert long.prompt_ids.shape[1] + GREEDY.max_new_tokens <= 64
    kept = [history[0], *history[1 + long.dropped:]]  # the system prompt and the newest exchanges, in order
    assert kept[-1]["content"] == "And the last one?" and kept[1]["role"] == "user"
    assert torch.equal(long.prompt_ids, Decoder(entry, None, kept, GREEDY).prompt_ids)
    assert [t[0] for t in stream([long])][-1] == [t[0] for t in stream([Decoder(entry, None, kept, GREEDY)])][-1]
    # one question too long for the model on its own: one sentence, nothing written
    with pytest.raises(TooLong) as err:
        Decoder(entry, None, [{"role": "user", "content": "gear " * 80}], GREEDY)
    assert str(err.value) == ("the prompt is 111 tokens (with the chat template), and this model reads at most 64 at "
                              "once, prompt and reply together; shorten it")
    # a reply that fills the window stops there, cut short, and the page says which limit it met
    roomy = GenerationSettings(temperature=0, repetition_penalty=1.0, max_new_tokens=200)
    full = Decoder(entry, None, QUESTION, roomy)
    full.stop_ids = set()
    list(stream([full]))
    # positions 0 to 63: the last token is written from position 63 and never read back
    assert full.out_of_room and full.cut_off and full.prompt_ids.shape[1] + len(full.generated) == 65
    stopped = "Model A: the reply stopped at *Max new tokens* (12) before its end; raise it under Generation " \
              "settings for longer replies. " if long.cut_off else ""
    assert context_note([long, full]) == stopped + (
        "Model B: the reply filled what the model reads at once (64 tokens): the question takes "
        f"{full.prompt_ids.shape[1]} of them (with the chat template and any system prompt); shorten it for a "
        f"longer reply. Model A did not read the oldest {long.dropped} messages of this "
        "conversation: with them it is longer than the model reads at once (64 tokens, with *Max new tokens* for the "
        "reply).")


def test_a_model_without_a_chat_template_or_a_seed_out_of_range_is_one_sentence(studio, tiny_model_dir, tmp_path):
    """A base model without a chat template stopped `studio generate` with apply_chat_template's traceback, and
    a seed past 64 bits with "Overflow when unpacking long long"."""
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink()
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(chat_service.ChatError) as err:
        chat_service.decoders(studio, [f"base:{plain}"], [QUESTION], GREEDY)
    assert str(err.value) == (f"{plain} has no chat template: it is a base model never taught to chat; pick an "
                              "instruction-tuned (chat) model, or a run tuned from one")
    seeded = GenerationSettings(temperature=1.0, seed=2**64)
    with pytest.raises(chat_service.ChatError) as err:
        chat_service.decoders(studio, [f"base:{tiny_model_dir}"], [QUESTION], seeded)
    assert str(err.value) == (f"Seed {2**64} is out of range: use -1 for new replies each time, or 0 to "
                              "18446744073709551615")
    chat_service.decoders(studio, [f"base:{tiny_model_dir}"], [QUESTION], GenerationSettings(seed=2**64 - 1))
    done = subprocess.run([sys.executable, "-m", "studio.cli", "generate", "--model", str(plain), "Hello?",
                           "--home", str(tmp_path / "home")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (2, f"error: {plain} has no chat template: it is a base model never "
                                                 "taught to chat; pick an instruction-tuned (chat) model, or a run "
                                                 "tuned from one\n")


def test_one_base_copy_serves_both_sides_like_two_separate_loads(studio, tiny_model_dir, random_adapter):
    from peft import PeftModel

    from pipelines.models import load_model, load_tokenizer

    entry_base, none = studio.chat_models.get(str(tiny_model_dir))
    entry_tuned, name = studio.chat_models.get(str(tiny_model_dir), random_adapter)
    assert entry_base is entry_tuned and none is None and name  # one copy of the weights
    assert len(studio.chat_models.loaded()) == 1
    *_, final = stream([Decoder(entry_base, None, QUESTION, GREEDY), Decoder(entry_tuned, name, QUESTION, GREEDY)])

    tokenizer = load_tokenizer(str(tiny_model_dir))
    separate_base = plain_generate(load_model(str(tiny_model_dir)).eval(), tokenizer)
    separate_tuned = plain_generate(
        PeftModel.from_pretrained(load_model(str(tiny_model_dir)), str(random_adapter)).eval(), tokenizer)
    assert final == [separate_base, separate_tuned]
    assert separate_base != separate_tuned  # the adapter really is switched per side


def test_two_adapters_on_one_base_each_answer_as_their_own_model(studio, tiny_model_dir, random_adapter, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    from pipelines.models import load_model, load_tokenizer

    torch.manual_seed(2)
    second = tmp_path / "second-adapter"
    get_peft_model(load_model(str(tiny_model_dir)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False)).save_pretrained(second)
    entry, one = studio.chat_models.get(str(tiny_model_dir), random_adapter)
    _, two = studio.chat_models.get(str(tiny_model_dir), second)
    *_, final = stream([Decoder(entry, one, QUESTION, GREEDY), Decoder(entry, two, QUESTION, GREEDY),
                        Decoder(entry, None, QUESTION, GREEDY)])
    tokenizer = load_tokenizer(str(tiny_model_dir))
    expected = [plain_generate(PeftModel.from_pretrained(load_model(str(tiny_model_dir)), str(a)).eval(), tokenizer)
                for a in (random_adapter, second)] + [plain_generate(load_model(str(tiny_model_dir)).eval(), tokenizer)]
    assert final == expected
    assert len(set(expected)) == 3  # three different models, really


def test_a_fixed_seed_reproduces_sampled_answers(tiny_model_dir, tmp_path):
    entry, _ = ModelCache(tmp_path).get(str(tiny_model_dir))
    sampled = GenerationSettings(temperature=1.0, top_p=0.95, max_new_tokens=12, seed=5)
    first = list(stream([Decoder(entry, None, QUESTION, sampled)]))[-1]
    again = list(stream([Decoder(entry, None, QUESTION, sampled)]))[-1]
    reseeded = GenerationSettings(**{**vars(sampled), "seed": 6})
    other = list(stream([Decoder(entry, None, QUESTION, reseeded)]))[-1]
    assert first == again and first != other


def test_model_cache_evicts_least_recently_used(tiny_model_dir, tmp_path):
    import shutil

    second = tmp_path / "second-tiny"
    shutil.copytree(tiny_model_dir, second)
    cache = ModelCache(tmp_path / "models", limit_bytes=1)  # room for one model only
    cache.get(str(tiny_model_dir))
    cache.get(str(second))
    assert cache.loaded() == [str(second)]
    cache = ModelCache(tmp_path / "models", limit_bytes=10**12)
    cache.get(str(tiny_model_dir))
    cache.get(str(second))
    cache.get(str(tiny_model_dir))  # used again: now the most recent
    assert cache.loaded() == [str(second), str(tiny_model_dir)]


def test_two_models_over_the_budget_are_both_kept_for_the_comparison(studio, tiny_model_dir, tmp_path):
    """Side B's load evicted side A's model while A's decoder used it: every message loaded both again."""
    import shutil

    second = tmp_path / "second-tiny"
    shutil.copytree(tiny_model_dir, second)
    studio.chat_models.limit_bytes = 1  # room for one model only
    specs = [f"base:{tiny_model_dir}", f"base:{second}"]
    first = chat_service.decoders(studio, specs, [QUESTION, QUESTION], GREEDY)
    again = chat_service.decoders(studio, specs, [QUESTION, QUESTION], GREEDY)
    assert [d.entry for d in again] == [d.entry for d in first]  # the same copies: nothing loaded again
    assert studio.chat_models.loaded() == [str(tiny_model_dir), str(second)]
    # another model then: the pair's least recently used goes
    chat_service.decoders(studio, [f"base:{tiny_model_dir}"], [QUESTION], GREEDY)
    assert studio.chat_models.loaded() == [str(tiny_model_dir)]


def test_a_copy_let_go_while_a_reply_still_uses_it_is_taken_back_not_loaded_again(tiny_model_dir, tmp_path):
    """Another page's request trimmed the cache while this page's reply still used a model: the next message
    loaded a second copy beside the one still in memory."""
    import shutil

    second = tmp_path / "second-tiny"
    shutil.copytree(tiny_model_dir, second)
    cache = ModelCache(tmp_path / "models", limit_bytes=1)  # room for one model only
    in_use, _ = cache.get(str(tiny_model_dir))  # (a reply being written holds it)
    cache.get(str(second))  # another page: the first is let go of
    assert cache.loaded() == [str(second)]
    again, _ = cache.get(str(tiny_model_dir))
    assert again is in_use and cache.loaded() == [str(tiny_model_dir)]


def test_a_model_loading_holds_up_no_request_for_another(tiny_model_dir, tmp_path, monkeypatch):
    """The cache loaded a model while holding its lock: every other chat, even on a model in memory, waited
    for the whole load (a hub download: minutes). A second request for the model being loaded waits for
    that one load."""
    import shutil
    import threading

    from pipelines import models

    second = tmp_path / "second-tiny"
    shutil.copytree(tiny_model_dir, second)
    cache = ModelCache(tmp_path / "models")
    in_memory, _ = cache.get(str(tiny_model_dir))
    slow, loads, real = threading.Event(), [], models.load_for_inference

    def held_up(path):  # the second model's load waits until the test lets it go
        loads.append(path)
        if path == str(second):
            assert slow.wait(60)
        return real(path)

    monkeypatch.setattr(models, "load_for_inference", held_up)
    got = {}
    loading = [threading.Thread(target=lambda n=n: got.__setitem__(n, cache.get(str(second))[0])) for n in range(2)]
    for thread in loading:
        thread.start()
    other = threading.Thread(target=lambda: got.__setitem__("other", cache.get(str(tiny_model_dir))[0]))
    other.start()
    other.join(30)
    assert not other.is_alive() and got["other"] is in_memory  # served while the other model still loads
    slow.set()
    for thread in loading:
        thread.join(60)
    assert got[0] is got[1] and loads == [str(second)]  # loaded once, for both requests


def test_a_job_on_a_gpu_lets_go_of_the_models_chat_loaded_there(studio, tiny_model_dir, monkeypatch):
    """Nothing ever gave back the GPU memory of the models Chat loaded: a training run started beside them
    could run out of it. On a CPU they stay (the machine's memory is what the budget already bounds)."""
    from pipelines import hardware

    studio.chat_models.get(str(tiny_model_dir))
    assert studio.free_gpu_memory() is False and studio.chat_models.loaded() == [str(tiny_model_dir)]
    monkeypatch.setattr(hardware, "has_cuda", lambda: True)
    assert studio.free_gpu_memory() is True and studio.chat_models.loaded() == []
    monkeypatch.undo()  # (this machine's CPU again, to load on)
    entry, _ = studio.chat_models.get(str(tiny_model_dir))  # and Chat loads it again when next used
    assert entry.model is not None and studio.chat_models.loaded() == [str(tiny_model_dir)]


def vote(studio, winner, a="base:default", b="run:r1", turns=1, blind=True, unfinished=(), same=False):
    prompt = []
    for i in range(turns - 1):
        prompt += [{"role": "user", "content": f"Earlier {i}"}, {"role": "assistant", "content": f"Reply {i}"}]
    prompt.append({"role": "user", "content": "Question?"})
    return chat_service.record_vote(studio, voter="ana", model_a=a, model_b=b, winner=winner, blind=blind,
                                    prompt_a=prompt, prompt_b=prompt, reply_a="from A",
                                    reply_b="from A" if same else "from B",
                                    settings={"temperature": 0.7, "unfinished": list(unfinished)})


def test_votes_are_stored_and_export_as_trl_preference_data(studio):
    from datasets import Dataset
    from trl.data_utils import is_conversational

    with pytest.raises(DataError, match="no decisive votes yet"):
        chat_service.export_votes(studio)
    vote(studio, "a")
    vote(studio, "b", turns=2)
    vote(studio, "tie")
    vote(studio, "both_bad")
    stored = studio.store.list_votes()
    assert [v["winner"] for v in stored] == ["a", "b", "tie", "both_bad"]
    assert stored[1]["prompt_a"][0] == {"role": "user", "content": "Earlier 0"}
    assert stored[0]["voter"] == "ana" and stored[0]["blind"] is True and stored[0]["created"] > 0

    row = chat_service.export_votes(studio, "my votes")
    assert (row["kind"], row["rows"], row["name"]) == ("preference", 2, "my votes")
    data = Dataset.from_parquet(row["path"])
    assert set(data.column_names) == {"prompt", "chosen", "rejected"}
    assert all(is_conversational(example) for example in data)
    assert data[0]["chosen"] == [{"role": "assistant", "content": "from A"}]
    assert data[1]["chosen"] == [{"role": "assistant", "content": "from B"}]
    assert len(data[1]["prompt"]) == 3  # multi-turn: the earlier turns are kept
    assert load_rows(row["path"])[0]["rejected"][0]["content"] == "from B"
    assert row["exported_before"] is False
    again = chat_service.export_votes(studio, "a new name")  # same votes, same dataset: and it says so
    assert (again["id"], again["name"], again["exported_before"]) == (row["id"], "my votes", True)
    assert len(studio.store.list_datasets()) == 1
    # the name typed for that second export is said to be unused (it was dropped without a word)
    from components.dataset_note import made_or_found

    assert made_or_found(again, "a new name", "votes") == ("These votes were exported before, as **my votes** (the "
                                                           "name typed, *a new name*, is not used: the same votes "
                                                           "make the same dataset)")
    assert made_or_found(again, "", "votes") == "These votes were exported before, as **my votes**"
    assert made_or_found(row, "my votes", "votes") == "Made **my votes**"


def test_a_turn_takes_one_vote_however_many_buttons_are_clicked_at_once(studio):
    """Two vote buttons clicked together both read the page's state before either vote was stored, so
    both were stored: one pair of replies counted twice, for opposite winners. The turn (the pair of
    replies) now takes one vote, in the database."""
    import threading

    prompt = [{"role": "user", "content": "Question?"}]
    said, gate = [], threading.Barrier(4)

    def click(winner):
        gate.wait()
        try:
            said.append(chat_service.record_vote(
                studio, voter="ana", model_a="base:default", model_b="run:r1", winner=winner, blind=True,
                prompt_a=prompt, prompt_b=prompt, reply_a="from A", reply_b="from B", settings={}, turn="t1"))
        except chat_service.ChatError as err:
            said.append(str(err))

    threads = [threading.Thread(target=click, args=(w,)) for w in arena.WINNERS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, said)).count(chat_service.ALREADY_VOTED) == 3
    assert [v["turn"] for v in studio.store.list_votes()] == ["t1"]
    vote(studio, "a")  # votes without a turn (the CLI's, older ones) are not limited
    vote(studio, "a")
    assert len(studio.store.list_votes()) == 3


def test_a_click_that_read_the_turn_unvoted_as_another_stored_it_is_told_it_voted_already(studio, monkeypatch):
    """CI: of four buttons clicked at once, one read the turn as not voted, then found the vote another click had
    stored a moment later among the same two replies, and was told its replies "came back word for word"."""
    prompt = [{"role": "user", "content": "Question?"}]
    ask = dict(voter="ana", model_a="base:default", model_b="run:r1", blind=True, prompt_a=prompt, prompt_b=prompt,
               reply_a="from A", reply_b="from B", settings={}, turn="t1")
    chat_service.record_vote(studio, winner="a", **ask)
    monkeypatch.setattr(studio.store, "turn_voted", lambda turn: False)  # (read before the other click's commit)
    with pytest.raises(chat_service.AlreadyVoted, match=f"^{chat_service.ALREADY_VOTED}$"):
        chat_service.record_vote(studio, winner="b", **ask)
    assert len(studio.store.list_votes()) == 1


def test_votes_from_before_silent_sides_were_refused_do_not_count(tmp_path):
    """A workspace whose votes table predates turns, holding a vote on a side that said "…": the table
    gains its turn column, and the silent vote is left out of the results and of the export."""
    import sqlite3

    from studio.core import Studio

    home = tmp_path / "home"
    home.mkdir()
    db = sqlite3.connect(home / "studio.db")
    db.execute("""CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL,
        voter TEXT NOT NULL, model_a TEXT NOT NULL, model_b TEXT NOT NULL, winner TEXT NOT NULL, blind INTEGER NOT NULL,
        prompt_a TEXT NOT NULL, prompt_b TEXT NOT NULL, reply_a TEXT NOT NULL, reply_b TEXT NOT NULL,
        settings TEXT NOT NULL)""")
    prompt = json.dumps([{"role": "user", "content": "Question?"}])
    for reply_a, reply_b in (("…", "from B"), ("from A", "from B")):
        db.execute("INSERT INTO votes VALUES (NULL, 1, 'ana', 'base:default', 'run:r1', 'b', 1, ?, ?, ?, ?, '{}')",
                   (prompt, prompt, reply_a, reply_b))
    db.commit()
    db.close()
    studio = Studio(home)
    assert [v["turn"] for v in studio.store.list_votes()] == [None, None]
    assert [v["reply_a"] for v in chat_service.counted_votes(studio)] == ["from A"]
    assert [r["votes"] for r in arena.win_rates(chat_service.counted_votes(studio))] == [1]
    assert chat_service.export_votes(studio)["rows"] == 1
    assert chat_service.preference_start(studio)["votes"] == 1


def test_win_rates_count_ties_half_and_give_an_interval():
    votes = [{"model_a": "x", "model_b": "y", "winner": "a"}] * 6 + \
            [{"model_a": "y", "model_b": "x", "winner": "a"}] * 2 + \
            [{"model_a": "x", "model_b": "y", "winner": "tie"}] * 2
    (pair,) = arena.win_rates(votes)
    assert (pair["first"], pair["second"], pair["votes"]) == ("x", "y", 10)
    assert (pair["wins_first"], pair["wins_second"], pair["ties"]) == (6, 2, 2)
    assert pair["win_rate"] == pytest.approx(0.7)
    # the interval's ends are where 7 wins of 10 are 20 times less likely than under an even mixture of all rates:
    # p^7 (1 - p)^3 = B(8, 4) / 20 = (7! 3! / 11!) / 20 = 1 / 26,400
    assert pair["low"] == pytest.approx(0.2667, abs=1e-4) and pair["high"] == pytest.approx(0.9634, abs=1e-4)
    for p in (pair["low"], pair["high"]):
        assert p ** 7 * (1 - p) ** 3 == pytest.approx(1 / 26_400, rel=1e-6)


def test_the_results_take_the_newer_models_side():
    # name order puts the base first and the older run first: the table shows the tuned, newer side
    votes = [{"model_a": "run:r20261202-100000-aaaa", "model_b": "base:m", "winner": "a"}] * 3 + \
            [{"model_a": "base:m", "model_b": "run:r20261202-100000-aaaa", "winner": "tie"}]
    (raw,) = arena.win_rates(votes)
    assert raw["first"] == "base:m" and raw["win_rate"] == pytest.approx(0.125)
    shown = chat_service.newer_first(raw)
    assert (shown["first"], shown["second"], shown["wins_first"], shown["wins_second"]) == (
        "run:r20261202-100000-aaaa", "base:m", 3, 0)
    assert shown["win_rate"] == pytest.approx(0.875)
    assert (shown["low"], shown["high"]) == pytest.approx(arena.anytime(3.5, 4))  # the interval, seen from there
    assert chat_service.win_rate_text(shown) == "88% (22–100%)"  # n = 4: 0.218 to 0.99998
    # and what it says: 15 votes at 87.5% put the low end at 0.508 (14 put it at 0.496)
    assert (arena.anytime(0.875 * 15, 15)[0] > 0.5, arena.anytime(0.875 * 14, 14)[0] < 0.5) == (True, True)
    assert chat_service.win_rate_text(shown, judged=True) == ("88% (22–100%): can't tell yet: about 11 more votes at "
                                                              "this rate would tell")
    assert chat_service.win_rate_text(raw, judged=True, unit="label").endswith("about 11 more labels at this rate would tell")
    older, newer = "run:r20261201-090000-bbbb", "run:r20261202-100000-aaaa"
    (pair,) = arena.win_rates([{"model_a": older, "model_b": newer, "winner": "b"}])
    assert chat_service.newer_first(pair)["first"] == newer and chat_service.newer_first(pair)["win_rate"] == 1.0
    assert chat_service.newer_first(chat_service.newer_first(pair)) == chat_service.newer_first(pair)


def test_one_vote_is_said_as_one(studio):
    """The results said "1 votes so far"."""
    from components.chat_tab import results_table

    vote(studio, "b")
    assert results_table(studio)[1].startswith("1 vote so far.")


def test_blind_votes_and_votes_with_the_names_shown_are_counted_apart(studio):
    """The results pooled both: a voter who knew which side was the tuned model (named mode) could lean
    toward it, and those votes were mixed into the blind battles' win rate. Now each pair has a row per
    kind, blind first, and the note says why."""
    from components.chat_tab import RESULT_HEADERS, results_table

    for winner in ("b", "b", "a", "tie"):
        vote(studio, winner)  # blind: the run won 2, lost 1, tied 1
    for _ in range(3):
        vote(studio, "b", blind=False)  # with the names shown: the run won all 3
    rows = {r["blind"]: r for r in arena.win_rates(studio.store.list_votes(), by_blind=True)}
    assert (rows[True]["votes"], rows[True]["wins_second"], rows[True]["wins_first"], rows[True]["ties"]) == (4, 2, 1, 1)
    assert (rows[False]["votes"], rows[False]["wins_second"]) == (3, 3)
    assert [r["votes"] for r in arena.win_rates(studio.store.list_votes())] == [7]  # pooled unless asked

    table, note = results_table(studio)
    assert table["headers"] == RESULT_HEADERS and RESULT_HEADERS[2] == "Votes were"
    # n = 4, 2.5 wins: 0.085 to 0.985; 3 of 3: (1 / (4 x 20))^(1/3) = 0.232 to 1
    assert [row[2:] for row in table["data"]] == [
        ["blind", 4, 2, 1, 1, "62% (8–98%): can't tell yet: about 167 more votes at this rate would tell"],
        # no verdict where the voter knew which side was the tuned model (4 such votes said "better")
        ["names shown", 3, 3, 0, 0, "100% (23–100%): no verdict, the names were shown"]]
    assert note.startswith("7 votes so far.")
    assert ("*Better* or *worse* (of blind votes) once the 95% interval is clear of 50%; until then a win rate can be "
            "luck.") in note
    assert note.endswith("Votes cast with the names shown are counted apart from blind ones: knowing which side is "
                         "the tuned model can sway a vote, so the blind rows are the fair comparison (tick *Blind "
                         "battle*).")


def test_an_export_says_how_many_winning_replies_were_cut_off(studio):
    """A reply cut off at Max new tokens (or by Stop) won votes and was exported as a chosen answer without a
    word: trained on, it teaches the model to stop mid-sentence. The vote keeps which replies were
    unfinished, and the export and Train on these preferences say how many winners were."""
    from components.dataset_note import cut_chosen_note

    vote(studio, "a", unfinished=["a", "b"])  # the winner cut off
    vote(studio, "b", turns=2, unfinished=["a"])  # only the loser
    vote(studio, "tie", unfinished=["a"])  # not exported
    vote(studio, "a", unfinished=["a", "b"], same=True)  # one reply twice: the import leaves it out, so not counted
    row = chat_service.export_votes(studio)
    assert row["rows"] == 2 and row["meta"]["origin"]["taught"] == 2
    assert row["meta"]["origin"]["cut_chosen"] == 1
    assert cut_chosen_note(row) == (" ⚠️ 1 of the 2 winning replies was cut off (at *Max new tokens*, or by *Stop*): "
                                    "training on an answer that stops mid-sentence teaches the model to stop there "
                                    "too. Raise *Max new tokens* under Generation settings for whole replies.")
    origin = row["meta"]["origin"]
    for cut, total, said in ((1, 1, " ⚠️ The winning reply was cut off"), (3, 3, " ⚠️ All 3 winning replies were"),
                             (2, 5, " ⚠️ 2 of the 5 winning replies were"), (2, 2, " ⚠️ Both winning replies were")):
        assert cut_chosen_note({"meta": {"origin": {**origin, "cut_chosen": cut, "taught": total}}}).startswith(said)
    vote(studio, "b", unfinished=["b"])
    vote(studio, "a")  # whole replies
    row = chat_service.preference_start(studio)["dataset"]
    assert row["meta"]["origin"]["cut_chosen"] == 2 and cut_chosen_note(row).startswith(" ⚠️ 2 of the 4 winning")
    studio.store.set_dataset_origin(row["id"], {**row["meta"]["origin"], "cut_chosen": 0})
    assert cut_chosen_note(studio.store.get_dataset(row["id"])) == ""


def test_the_interval_may_be_read_after_every_vote():
    """Read after every vote, Wilson's one-look interval called two equal models different in 22% of 20-vote runs
    (simulated: fair coin, 4,000 runs). The interval now shown is a confidence sequence: the rates under which
    the votes are at most 20 times less likely than under an even mixture of all rates. By hand, s wins of n
    (no losses): the mixture's likelihood is B(s + 1, 1) = 1 / (n + 1), so the low end is (1 / (20 (n + 1)))^(1/n)."""
    for n in (1, 3, 7, 8, 10):
        low, high = arena.anytime(n, n)
        assert low == pytest.approx((1 / (20 * (n + 1))) ** (1 / n), abs=1e-12) and high == 1.0
        assert arena.anytime(0, n) == pytest.approx((1 - high, 1 - low), abs=1e-12)  # the same, from the loser
    assert arena.anytime(7, 7)[0] < 0.5 < arena.anytime(8, 8)[0]  # 0.484, 0.522: 8 straight wins are the fewest
    assert arena.anytime(0, 0) == (0.0, 1.0)
    # at 50%, clear of it exactly when the votes' mixture likelihood is 20 times what 50% gives them
    for s, n in ((6, 7), (9, 12), (14.5, 20), (30, 48), (31, 48), (7, 7), (8, 8), (16, 20), (16.5, 20), (34.5, 48),
                 (35, 48)):  # (ratios 2.3 1.4 2.0 0.8 1.4, then 16 28 10.3 20.4 18.6 29.8: both sides of 20)
        ratio = math.exp(math.lgamma(s + 1) + math.lgamma(n - s + 1) - math.lgamma(n + 2) + n * math.log(2))
        assert (arena.anytime(s, n)[0] > 0.5) == (ratio > 20), (s, n, ratio)


def test_a_verdict_once_the_interval_is_clear_of_half():
    def row(score, n):
        low, high = arena.anytime(score, n)
        return {"win_rate": score / n, "low": low, "high": high, "votes": n}

    assert arena.verdict(row(10, 10)) == "better"  # low end (1/220)^(1/10) = 0.583
    assert arena.verdict(row(0, 10)) == "worse"
    assert arena.verdict(row(5, 10)) == "can't tell yet: no lean either way"
    assert arena.verdict(row(1, 1)) == "can't tell yet: about 7 more votes at this rate would tell"
    assert arena.votes_to_tell(1.0, 1) == 8
    assert arena.verdict(row(5.5, 10)) == "can't tell yet: about 1258 more votes at this rate would tell"
    # none can come (a finished label project): too few, or at exactly 50% no number of them would tell
    assert arena.verdict(row(5.5, 10), more=False) == "can't tell: too few items"
    assert arena.verdict(row(5, 10), more=False) == "can't tell: no lean either way"

    def tells(rate, n):  # the interval clear of 50%: the mixture likelihood ratio against 50% above 20
        s = rate * n
        return rate != 0.5 and math.lgamma(s + 1) + math.lgamma(n - s + 1) - math.lgamma(n + 2) + n * math.log(2) > \
            math.log(20)

    def first_that_tells(rate, votes, most=10_000):  # the plain scan the halving search replaced
        return next((n for n in range(max(votes, 1), most + 1) if tells(rate, n)), None)

    for rate in (0.0, 0.1, 0.3, 0.45, 0.49, 0.51, 0.55, 0.62, 0.75, 0.9, 1.0):
        for votes in (0, 1, 7, 40, 300):
            assert arena.votes_to_tell(rate, votes) == first_that_tells(rate, votes), (rate, votes)


def test_position_bias_warning():
    lopsided = [{"model_a": "x", "model_b": "y", "winner": "a", "blind": True}] * 6 + \
               [{"model_a": "y", "model_b": "x", "winner": "a", "blind": True}] * 6
    assert arena.position_bias(lopsided) == (
        "Side A (left) won 12 of 12 decisive blind votes (p = 0.000 if position did not matter): either the shuffle "
        "put the model that wins more often on that side more often by chance, or the side itself sways the "
        "choice; more votes will tell.")
    fair = lopsided[:6] + [{"model_a": "y", "model_b": "x", "winner": "b", "blind": True}] * 6
    assert arena.position_bias(fair) is None
    assert arena.position_bias(lopsided[:5]) is None  # too few votes to say
    # with the names shown a side belongs to a model (Chat with this run puts the tuned one on B): a better
    # tuned model winning 9 of 10 says nothing of position, and was warned of as a lean to side B
    named = [{"model_a": "base:default", "model_b": "run:r1", "winner": "b", "blind": False}] * 9 + \
            [{"model_a": "base:default", "model_b": "run:r1", "winner": "a", "blind": False}]
    assert arena.position_bias(named) is None
    assert arena.position_bias(named + lopsided[:9]) is None  # 9 blind votes: too few, the named ones not counted


def test_cli_generate_stream(tmp_path, tiny_model_dir):
    def generate(*extra):
        return subprocess.run([sys.executable, "-m", "studio.cli", "generate", "--model", str(tiny_model_dir),
                               "--temperature", "1", "--seed", "3", "--max-new-tokens", "8", *extra, "Hello?",
                               "--home", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)

    streamed, whole = generate("--stream"), generate()
    assert streamed.returncode == whole.returncode == 0, streamed.stderr[-2000:]
    assert streamed.stdout.strip() and streamed.stdout.strip() == whole.stdout.strip()
    # stdout is the reply alone; a reply cut short says so beside it (8 tokens of a random model: no end)
    assert whole.stderr.strip().endswith("(the reply stopped at --max-new-tokens 8 before its end)")


def test_the_same_model_named_two_ways_gets_no_vote(studio, tiny_model_dir):
    """The built-in model typed as its prepared folder was taken for another model: a vote between a
    model and itself was stored, and the note that a vote needs two models went away."""
    from components.chat_tab import same_pair_note
    from pipelines import models

    built_in = studio.model_cache / models.DEFAULT_MODEL
    built_in.mkdir(parents=True)
    for a, b in (("base:default", f"base:{built_in}"),
                 (f"base:{tiny_model_dir}", f"base:{tiny_model_dir}/../{tiny_model_dir.name}/")):
        with pytest.raises(chat_service.ChatError, match="^both sides are the same model"):
            vote(studio, "a", a=a, b=b)
        assert "a vote needs two different models" in same_pair_note(studio, a, b)
    assert studio.store.list_votes() == []
    assert same_pair_note(studio, "base:default", f"base:{tiny_model_dir}") == ""
    assert same_pair_note(studio, "base:default", "run:r1") == ""  # a run not found: not the same


def finished_on_the_built_in_model(studio, run_id: str) -> None:
    """A completed LoRA run of the built-in model, as the catalogue and its folder show one (training the
    real model is for the slow tests; what is compared here is what the run names)."""
    from pipelines.events import ADAPTER, STATUS, write_json

    studio.store.add_run(id=run_id, method="lora", model="default", dataset_id=None, status="completed", params={})
    (studio.run_dir(run_id) / ADAPTER).mkdir(parents=True)
    write_json(studio.run_dir(run_id) / STATUS, {"status": "completed", "finished": 1.0})


def test_a_run_of_the_built_in_model_is_not_the_built_in_model(studio):
    """Every run tuned from the built-in model was taken for the built-in model itself (its adapter was
    dropped): a vote of the tuned model against its base, the loop's first step, was refused."""
    from components.chat_tab import same_pair_note
    from pipelines import models

    built_in = studio.model_cache / models.DEFAULT_MODEL
    built_in.mkdir(parents=True)
    finished_on_the_built_in_model(studio, "r1")
    finished_on_the_built_in_model(studio, "r2")
    for a, b in (("base:default", "run:r1"), (f"base:{built_in}", "run:r1"), ("run:r1", "run:r2")):
        assert not chat_service.same_model(studio, a, b) and same_pair_note(studio, a, b) == "", (a, b)
        vote(studio, "b", a=a, b=b)
    assert chat_service.same_model(studio, "run:r1", "run:r1")
    assert len(studio.store.list_votes()) == 3


def test_blind_sides_are_random_whatever_seeded_pythons_generator():
    """The blind battle shuffled with Python's shared generator, which any library's set_seed seeds: a
    newcomer's tuned model sat on side A in 9 rounds of 9, the order random.seed(42) gives."""
    import random

    from components.chat_tab import shuffled

    seen = set()
    for _ in range(60):
        random.seed(42)
        seen.add(tuple(shuffled(["base:default", "run:r1"])))
    assert seen == {("base:default", "run:r1"), ("run:r1", "base:default")}


def test_whatever_is_typed_into_a_picker_gets_an_answer_not_an_error(studio):
    """The note is worked out on every change of a picker, where anything may be typed: a home folder
    that does not exist, a name too long for the system, the built-in model by its other name."""
    from components.chat_tab import same_pair_note
    from pipelines import models

    for typed in ("base:~nosuchuser/x", "base:" + "x" * 5000):
        assert same_pair_note(studio, "base:default", typed) == ""
        assert "a vote needs two different models" in same_pair_note(studio, typed, typed)
    # not prepared yet: its two names are still one model
    assert "a vote needs" in same_pair_note(studio, "base:default", f"base:{models.DEFAULT_MODEL}")


def test_a_side_without_a_reply_gets_no_vote_and_pairs_keep_the_system_prompt(studio):
    """A side stopped before its first word showed "…", and that "…" was stored as its reply: a vote
    with one real reply, counted in win rates and exported as a pair. And a pair voted under a system
    prompt ("answer in one sentence") was exported without it, so training learned the terse reply
    for every prompt: the pair's prompt now starts with the system prompt the replies were written under."""
    prompt = [{"role": "user", "content": "Question?"}]
    for a, b, silent in (("…", "from B", "A"), ("from A", " ", "B"), ("…", "…", "A and B")):
        said = (rf"^both sides need a reply before a vote: model {silent} has none \(stopped before its first "
                r"word, or it said nothing\); press Regenerate or send another prompt$")
        with pytest.raises(chat_service.ChatError, match=said):
            chat_service.record_vote(studio, voter="ana", model_a="base:default", model_b="run:r1", winner="a",
                                     blind=True, prompt_a=prompt, prompt_b=prompt, reply_a=a, reply_b=b,
                                     settings={})
    assert studio.store.list_votes() == []

    short = {"system_prompt": "  Answer in one sentence. ", "temperature": 0.7}
    chat_service.record_vote(studio, voter="ana", model_a="base:default", model_b="run:r1", winner="b", blind=True,
                             prompt_a=prompt, prompt_b=prompt, reply_a="A long answer. Then more.",
                             reply_b="One sentence.", settings=short)
    vote(studio, "a")  # no system prompt
    own = [{"role": "system", "content": "Be brief."}, *prompt]  # a conversation with its own: kept as it is
    chat_service.record_vote(studio, voter="ana", model_a="base:default", model_b="run:r1", winner="a", blind=True,
                             prompt_a=own, prompt_b=own, reply_a="Brief.", reply_b="Not brief at all.",
                             settings=short)
    rows = load_rows(chat_service.export_votes(studio)["path"])
    assert [r["prompt"] for r in rows] == [[{"role": "system", "content": "Answer in one sentence."}, *prompt],
                                           prompt, own]
    assert rows[0]["chosen"][0]["content"] == "One sentence."


def test_processes_opening_an_old_workspace_at_once_all_open_it(tmp_path):
    """Each found the votes table without its turn column, each added it, and all but the first failed
    to start ("duplicate column name"); and setting WAL mode at once said "database is locked"."""
    import sqlite3
    import threading

    from studio.store import Store

    errors = []
    for attempt in range(20):
        db_path = tmp_path / f"old{attempt}.db"
        db = sqlite3.connect(db_path)
        db.execute("CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, voter TEXT NOT NULL, "
                   "model_a TEXT NOT NULL, model_b TEXT NOT NULL, winner TEXT NOT NULL, blind INTEGER NOT NULL, "
                   "prompt_a TEXT NOT NULL, prompt_b TEXT NOT NULL, reply_a TEXT NOT NULL, reply_b TEXT NOT NULL, "
                   "settings TEXT NOT NULL)")
        db.commit()
        db.close()
        gate = threading.Barrier(6)

        def open_it():
            gate.wait()
            try:
                Store(db_path)
            except Exception as err:  # noqa: BLE001 (the test's finding)
                errors.append(repr(err))

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_train_on_preferences_again_says_which_votes_the_run_learned_from(studio):
    """A second *Train on these preferences* made its pairs from every vote, those the starting run had
    learned from too, without a word (a newcomer read 5 pairs as 5 new ones). It says how many are new."""
    import gradio as gr

    from pipelines.events import ADAPTER, JOB, STATUS, write_json

    finished_on_the_built_in_model(studio, "r20261205-100000-aaaa")
    write_json(studio.run_dir("r20261205-100000-aaaa") / ADAPTER / "adapter_config.json", {"peft_type": "LORA"})
    for winner in ("b", "b", "a"):
        vote(studio, winner, b="run:r20261205-100000-aaaa")
    first = chat_service.preference_start(studio)
    assert (first["model"], first["votes"], first["learned"]) == ("run:r20261205-100000-aaaa", 3, 0)
    # the DPO run on those votes, from that run; then two blind votes of it against where it started
    child = "r20261205-110000-bbbb"
    studio.store.add_run(id=child, method="dpo", model="default", dataset_id=first["dataset"]["id"],
                         status="completed", params={}, parent_id="r20261205-100000-aaaa")
    (studio.run_dir(child) / ADAPTER).mkdir(parents=True)
    write_json(studio.run_dir(child) / ADAPTER / "adapter_config.json", {"peft_type": "LORA"})
    write_json(studio.run_dir(child) / STATUS, {"status": "completed", "finished": 2.0})
    write_json(studio.run_dir(child) / JOB, {"method": "dpo", "dataset": first["dataset"],
                                            "parent_id": "r20261205-100000-aaaa"})  # it trained on all 3
    for winner, turns in (("a", 2), ("b", 3)):  # two new prompts
        vote(studio, winner, a=f"run:{child}", b="run:r20261205-100000-aaaa", turns=turns)
    again = chat_service.preference_start(studio)
    assert (again["model"], again["votes"], again["learned"]) == (f"run:{child}", 5, 3)
    from studio.app import build_app

    app = build_app(studio)
    (train_prefs,) = [f for f in app.fns.values() if f.name == "on_train_prefs"]
    made = train_prefs.fn(None, "", "lora", {})[0]
    assert f"from 5 decisive votes. 3 of these votes were already in the dataset behind run `{child}` (votes are " \
           "kept): 2 are new. The run measures itself on 1 pair no run behind it trained on." in made
    # on DPO already, the epochs it sets are kept by the browser as the form's (a reload brought back the
    # epochs kept from the round before, over those set and shown); from another method the switch keeps them
    *_, field, kept = train_prefs.fn(None, "", "dpo", {"dpo": {"num_train_epochs": 50, "beta": 0.2}, "lora": {"r": 4}})
    assert field["value"] > 1 and kept == {"dpo": {"num_train_epochs": field["value"], "beta": 0.2}, "lora": {"r": 4}}
    skip = type(gr.skip())
    assert [type(v) for v in train_prefs.fn(None, "", "lora", {"dpo": {"num_train_epochs": 50}})[-2:]] == [skip, skip]
    # a DPO run on all 5, then a vote on a prompt it trained on: too few new pairs to hold one out, and why
    grandchild = "r20261205-120000-cccc"
    studio.store.add_run(id=grandchild, method="dpo", model="default", dataset_id=again["dataset"]["id"],
                         status="completed", params={}, parent_id=child)
    (studio.run_dir(grandchild) / ADAPTER).mkdir(parents=True)
    write_json(studio.run_dir(grandchild) / ADAPTER / "adapter_config.json", {"peft_type": "LORA"})
    write_json(studio.run_dir(grandchild) / STATUS, {"status": "completed", "finished": 3.0})
    write_json(studio.run_dir(grandchild) / JOB, {"method": "dpo", "dataset": again["dataset"], "parent_id": child})
    vote(studio, "a", a=f"run:{grandchild}", b=f"run:{child}")
    made = train_prefs.fn(None, "", "lora", {})[0]
    assert "6 decisive votes. 5 of these votes were already in the dataset behind run" in made
    assert made.endswith("1 is new. No pair is held out to measure the run: it holds out only pairs no run behind "
                         "it trained on, and too few are new. Vote on new prompts for a held-out check.")


def test_the_progress_line_says_tokens_rate_and_the_longest_wait_left(tiny_model_dir, tmp_path):
    """Under Stop, while two replies are written: the tokens so far, their rate since the first token, and at
    most how long the rest takes at that rate (each side's tokens left to Max new tokens); once both end, how
    long they took."""
    from components.chat_tab import writing_note

    entry, _ = ModelCache(tmp_path).get(str(tiny_model_dir))
    sides = [Decoder(entry, None, QUESTION, GREEDY), Decoder(entry, None, QUESTION, GREEDY)]
    for side in sides:
        side.stop_ids = set()  # only the limit ends them
    assert writing_note(sides, 0.5) == "Writing the replies…"  # no token yet
    sides[0].step()
    # the first token waited for the prompt to be read: no rate from it (it made a 44-minute guess)
    assert writing_note(sides, 1.2) == "Writing: 1 token so far…"
    sides[0].step(), sides[1].step(), sides[1].step()
    left = 2 * (GREEDY.max_new_tokens - 2)  # tokens, at 2 a second
    assert writing_note(sides, 2.0, rate=2.0) == (
        f"Writing: 4 tokens so far, 2.0 tokens/s; at most {left / 2:.0f} s more (*Max new tokens* "
        f"{GREEDY.max_new_tokens} per reply), less if the replies end sooner. *Stop* keeps them as they are.")
    list(stream(sides))
    made = 2 * GREEDY.max_new_tokens
    assert writing_note(sides, 100.0, rate=2.0) == f"Written in 2 min: {made} tokens, {made / 100:.1f} tokens/s."


def test_a_voter_gets_one_vote_on_the_same_two_replies_and_a_stand_in_reply_is_no_reply(studio):
    """With a fixed seed (or temperature 0), a prompt asked again brings the same two replies back word for word:
    a new "blind" round on them came after the vote had named their models, and four such votes counted as four
    judgements (a pair shown "better" on one). The page's "…" for a side stopped before its first word went back
    to the model, and into a vote's prompt, as an assistant turn."""
    from components.chat_tab import plain

    prompt = [{"role": "user", "content": "Question?"}]

    def page_vote(turn, voter="ana", a="from A", b="from B", models=("base:default", "run:r1")):
        return chat_service.record_vote(studio, voter=voter, model_a=models[0], model_b=models[1], winner="a",
                                        blind=True, prompt_a=prompt, prompt_b=prompt, reply_a=a, reply_b=b,
                                        settings={}, turn=turn)

    page_vote("t1")
    with pytest.raises(chat_service.AlreadyVoted):  # the same turn: a second button
        page_vote("t1")
    with pytest.raises(chat_service.ChatError, match="^you voted on these two replies already: they came back word "
                                                     "for word"):
        page_vote("t2", a="from B", b="from A", models=("run:r1", "base:default"))  # the sides shuffled
    assert studio.store.turn_voted("t1") and not studio.store.turn_voted("t2")
    page_vote("t3", voter="bo")  # another person's judgement of the same words counts
    page_vote("t4", a="other words")
    page_vote("t5", a="from B", b="from A")  # each model wrote the other's words: another pair of replies
    prompt[:] = [{"role": "user", "content": "Another question?"}]
    page_vote("t6")  # the same short replies to another question
    assert len(studio.store.list_votes()) == 5
    assert plain([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": chat_service.NO_REPLY},
                  {"role": "user", "content": "Again?"}])[1] == {"role": "assistant", "content": ""}


def test_preferences_between_base_models_train_the_model_voted_on(studio, tmp_path):
    """Votes between two base models (or runs DPO cannot start from): Train on these preferences set up DPO on the
    built-in model, trained on another model's replies, and said "starting from the base model"."""
    one, two = tmp_path / "one", tmp_path / "two"
    prompt = [{"role": "user", "content": "Question?"}]
    for i, winner in enumerate(("a", "b")):
        chat_service.record_vote(studio, voter="ana", model_a=f"base:{one}", model_b=f"base:{two}", winner=winner,
                                 blind=True, prompt_a=prompt, prompt_b=prompt, reply_a=f"from one {i}",
                                 reply_b=f"from two {i}", settings={})
    start = chat_service.preference_start(studio)
    assert start["model"] == str(two)  # the newest vote's winner
    assert start["votes"] == 2 and start["dataset"]["rows"] == 2


def test_a_vote_after_a_silent_reply_exports_without_that_exchange(studio):
    """A side stopped before its first word left an empty assistant turn in the next vote's prompt, and the
    export (Train on these preferences) refused every vote for it: 'message 2 (assistant) is empty'."""
    prompt = [{"role": "user", "content": "First?"}, {"role": "assistant", "content": ""},
              {"role": "user", "content": "Second?"}]
    chat_service.record_vote(studio, voter="ana", model_a="base:default", model_b="run:r1", winner="a", blind=True,
                             prompt_a=prompt, prompt_b=prompt, reply_a="from A", reply_b="from B", settings={})
    row = chat_service.export_votes(studio)
    assert load_rows(row["path"])[0]["prompt"] == [{"role": "user", "content": "Second?"}]
