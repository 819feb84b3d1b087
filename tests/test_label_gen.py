"""The candidate-generation job of a labeling project on the tiny model, through the studio's public
functions: two models (or one sampled twice) answer each prompt in a background job, the answers
are what the chat decoder gives, a cancelled job resumes without answering a prompt twice, models
that cannot load are refused before anything is written, and labels exported as preference data
train a DPO step."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import pytest

from pipelines.data import DataError, load_rows
from pipelines.events import CANCEL, read_metrics, run_state
from pipelines.label_gen import CANDIDATES
from studio import label_service as ls
from studio.label_service import LabelError

PROMPTS = ["How long does the battery last?", "Is it waterproof?", "How do I reset it?"]
TIMEOUT_S = 120


def turns(texts):
    return [[{"role": "user", "content": t}] for t in texts]


def until(studio, ref, statuses=("ready",), timeout=TIMEOUT_S, check=None, poll=0.3):
    """Poll the project (which syncs it with its job) until its status is one of `statuses` or
    `check(project)` holds; fail with the job's log on a final status nobody waited for."""
    deadline = time.time() + timeout
    while True:
        found = ls.project(studio, ref)
        if found["status"] in statuses or (check and check(found)):
            return found
        if found["status"] in ("failed", "cancelled", "interrupted"):
            log = (studio.run_dir(found["job_id"]) / "train.log").read_text()[-3000:]
            pytest.fail(f"generation {found['status']}: {found['error']}\n{log}")
        assert time.time() < deadline, f"still {found['status']} after {timeout} s"
        time.sleep(poll)


def stop_jobs(studio):
    """Ask every generation job still going to stop (a failed test leaves no worker behind)."""
    for found in studio.store.list_label_projects():
        job_dir = studio.run_dir(found["job_id"]) if found["job_id"] else None
        if job_dir and job_dir.exists() and run_state(job_dir)["status"] in ("queued", "running"):
            (job_dir / CANCEL).touch()


@pytest.fixture
def studio(studio):
    yield studio
    stop_jobs(studio)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory, tiny_model_dir):
    """A second tiny model: the first one's folder with its layers' weights nudged. (The tiny model
    itself, tied embeddings and small random layers, greedily repeats the prompt's last token, a
    newline, so its greedy answers are empty; this one answers in words.)"""
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama-other")
    for f in tiny_model_dir.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("proj.weight"):
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    model.save_pretrained(out, safe_serialization=True)
    return out


def greedy_answer(model_dir, prompt: list[dict], max_new_tokens: int, cut: bool = False) -> str | tuple[str, bool]:
    """The most likely answer as transformers' own `generate` gives it, with the job's default
    repetition penalty (1.1): what the chat decoder must match at temperature 0. cut: also whether
    max_new_tokens cut it off (that many tokens, none of them the end of the reply)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new_tokens, repetition_penalty=1.1,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1]:]
    text = tok.decode(new, skip_special_tokens=True).rstrip("\ufffd").strip()
    return (text, len(new) == max_new_tokens and int(new[-1]) != tok.eos_token_id) if cut else text


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_model_dir, other_model_dir):
    """A studio with a project whose answers come from two models, greedily (generated once, shared)."""
    from studio.core import Studio

    studio = Studio(tmp_path_factory.mktemp("two") / "home")
    a, b = f"base:{tiny_model_dir}", f"base:{other_model_dir}"
    made = ls.create_project(studio, name="two", prompts=turns(PROMPTS), models_=[a, b], temperature=0.0,
                             max_new_tokens=8)
    try:
        yield studio, made, until(studio, "two")
    finally:
        stop_jobs(studio)


def label_all(studio, ref, labeler, wanted):
    """Label the items in hand-out order: `wanted` says which answer (a or b) wins each."""
    for want in wanted:
        shown = ls.next_item(studio, ref, labeler)["item"]
        on_left = (want == "a") != shown["flipped"]
        ls.submit(studio, ref, shown["item_id"], labeler, "left" if on_left else "right", seconds=2.0)
    assert ls.next_item(studio, ref, labeler)["item"] is None


def test_two_models_answer_what_greedy_decoding_gives(two_models, tiny_model_dir, other_model_dir):
    studio, made, found = two_models
    a, b = f"base:{tiny_model_dir}", f"base:{other_model_dir}"
    assert made["status"] == "generating" and made["items"] == 0
    assert made["source"]["kind"] == "two models" and made["source"]["models"] == [a, b]
    assert found["status"] == "ready" and found["items"] == 3
    assert (found["progress"]["step"], found["progress"]["max_steps"]) == (3, 3)
    # the time per prompt is counted once the models are loaded (after the first prompt): the table's ETA
    assert found["progress"]["first_step"] == 1 and found["progress"]["training_since"] > made["created"]
    items = studio.store.label_items(found["id"])
    assert [it["prompt"] for it in items] == turns(PROMPTS)
    assert {(it["model_a"], it["model_b"]) for it in items} == {(a, b)}
    assert all(it["answer_b"] for it in items), "the second model should answer in words"
    assert items[1]["answer_b"] == greedy_answer(other_model_dir, items[1]["prompt"], 8)
    assert items[0]["answer_a"] == greedy_answer(tiny_model_dir, items[0]["prompt"], 8)
    assert items[0]["answer_a"] != items[0]["answer_b"]
    # each answer says whether the 8-token limit cut it off, as generate's own stop shows
    for it in items:
        assert it["cut_a"] == greedy_answer(tiny_model_dir, it["prompt"], 8, cut=True)[1]
        assert it["cut_b"] == greedy_answer(other_model_dir, it["prompt"], 8, cut=True)[1]
    assert any(it["cut_a"] or it["cut_b"] for it in items), "8 tokens should cut some answer off"


def test_an_empty_generated_answer_does_not_break_the_export(two_models):
    studio, _made, found = two_models
    assert any(not it["answer_a"] for it in studio.store.label_items(found["id"]))
    label_all(studio, "two", "ann", "bbb")  # the answers in words win over the empty ones
    try:
        ls.export(studio, "two", kind="preference")
    except DataError as err:
        pytest.fail(f"export refused: {err}")
    except LabelError:
        pass  # a one-sentence refusal that speaks of the project is acceptable too


def test_one_model_sampled_twice_then_labels_export_and_train_one_dpo_step(studio, tiny_model_dir):
    spec = f"base:{tiny_model_dir}"
    with pytest.raises(LabelError, match=r"^one model answering twice needs a temperature above 0, or both "
                                         r"answers are the same$"):
        ls.create_project(studio, name="same", prompts=turns(PROMPTS), models_=[spec], temperature=0.0)
    with pytest.raises(LabelError, match=r"^one model answering twice needs a temperature above 0"):
        ls.create_project(studio, name="same", prompts=turns(PROMPTS), models_=[spec, spec], temperature=0.0)
    assert studio.store.list_label_projects() == [] and not any(studio.runs_dir.iterdir())

    made = ls.create_project(studio, name="twice", prompts=turns(PROMPTS), models_=[spec], temperature=1.0,
                             max_new_tokens=4)
    assert made["source"]["kind"] == "sampled twice" and made["source"]["models"] == [spec, spec]
    found = until(studio, "twice")
    items = studio.store.label_items(found["id"])
    assert len(items) == 3 and {(it["model_a"], it["model_b"]) for it in items} == {(spec, spec)}
    assert any(it["answer_a"] != it["answer_b"] for it in items)
    assert all(it["answer_a"] and it["answer_b"] for it in items)

    label_all(studio, "twice", "ann", "aba")
    row = ls.export(studio, "twice", kind="preference")
    assert (row["kind"], row["rows"]) == ("preference", 3)
    assert row["meta"]["origin"]["project"] == "twice" and row["meta"]["origin"]["pairs"] == 3
    pairs = {p["prompt"][-1]["content"]: p for p in load_rows(Path(row["path"]))}
    for item, winner in zip(items, "aba"):  # hand-out order is position order for one labeler
        loser = "b" if winner == "a" else "a"
        pair = pairs[item["prompt"][-1]["content"]]
        assert pair["chosen"] == [{"role": "assistant", "content": item[f"answer_{winner}"]}]
        assert pair["rejected"] == [{"role": "assistant", "content": item[f"answer_{loser}"]}]

    run_id = studio.start_run(model=str(tiny_model_dir), dataset=row["id"], method="dpo",
                              params={"learning_rate": 5e-3, "num_train_epochs": 1,
                                      "per_device_train_batch_size": 4, "max_length": 64, "eval_fraction": 0.0})
    done = studio.wait(run_id, poll_s=0.5)
    assert done["status"] == "completed", done["error"]
    assert done["summary"]["steps"] == 1
    assert (studio.result_dir(run_id) / "adapter_model.safetensors").exists()


def test_answered_prompts_are_labelled_while_the_rest_are_answered_and_after_a_stop(studio, tiny_model_dir,
                                                                                    other_model_dir):
    """A stopped project said its answers were kept, yet showed 0 items and refused labels until every
    prompt was answered (a 120-prompt project: 30-40 minutes of waiting). Now each answered prompt is an
    item at once; a stop keeps them labelable, a resume adds the rest, no prompt is answered twice and the
    labels given meanwhile stay with their items."""
    # one-token greedy answers: a prompt takes a fraction of a second, the job a few seconds
    prompts = turns([f"Question number {n}: what is {n} plus {n}?" for n in range(30)])
    made = ls.create_project(studio, name="long", prompts=prompts, temperature=0.0, max_new_tokens=1,
                             models_=[f"base:{tiny_model_dir}", f"base:{other_model_dir}"])
    job_dir = studio.run_dir(made["job_id"])
    answering = until(studio, "long", check=lambda p: p["items"] >= 1, poll=0.05)
    assert answering["status"] == "generating", "the job ended before a label could be given while it ran"
    first = ls.next_item(studio, "long", "ann")
    assert first["item"]["position"] == 0 and first["progress"]["unanswered"] == 30 - first["progress"]["items"]
    ls.submit(studio, "long", first["item"]["item_id"], "ann", "left")
    ls.cancel_generation(studio, "long")
    stopped = until(studio, "long", statuses=("cancelled",))
    before = (job_dir / CANDIDATES).read_text().splitlines()
    assert 1 <= len(before) < len(prompts), "cancel came too late to test resuming"
    assert stopped["items"] == len(before)  # every answer written before the stop is an item

    while (shown := ls.next_item(studio, "long", "ann"))["item"]:
        ls.submit(studio, "long", shown["item"]["item_id"], "ann", "tie")
    left = len(prompts) - len(before)
    assert shown["done_reason"] == (f"every answered item has its labels; answering was stopped with {left} "
                                    f"prompt{'s' if left != 1 else ''} left: *Resume answering* under *New project* "
                                    "adds them")
    assert shown["progress"]["labels"] == len(before)

    resumed = ls.resume_generation(studio, "long")
    assert resumed["status"] == "generating"
    found = until(studio, "long")
    assert found["items"] == len(prompts)
    lines = (job_dir / CANDIDATES).read_text().splitlines()
    positions = [json.loads(line)["position"] for line in lines]
    assert sorted(positions) == list(range(len(prompts)))  # one line per prompt: none answered twice
    assert lines[:len(before)] == before  # the answers from before the cancel were kept as they were
    items = studio.store.label_items(found["id"])
    assert [it["prompt"] for it in items] == prompts and [it["position"] for it in items] == list(range(30))
    assert items[0]["answer_a"] == json.loads(before[0])["answer_a"]
    assert [it["labels"] for it in items] == [1] * len(before) + [0] * left  # the labels stayed with their items
    labels = studio.store.list_labels(found["id"])
    assert labels[0]["item_id"] == first["item"]["item_id"] == items[0]["id"]
    assert ls.next_item(studio, "long", "ann")["item"]["position"] == len(before)  # the rest come next
    with pytest.raises(LabelError, match=r"^project 'long' is ready; only a stopped generation can go on$"):
        ls.resume_generation(studio, "long")
    # a next project's wait is said at Create, from this one's pace (answer to answer, a stop's pause aside),
    # scaled by the longest answer asked for
    times = {m["step"]: m["time"] for m in read_metrics(job_dir)}
    gaps = sorted(times[n + 1] - times[n] for n in range(1, len(prompts)) if n in times and n + 1 in times)
    pace = ls.answering_pace(studio, max_new_tokens=4)
    assert pace == pytest.approx(4 * statistics.median(gaps))
    from components.label_projects import IN_BACKGROUND
    from pipelines.curves import format_duration
    from studio.app import build_app

    (create,) = [f for f in build_app(studio).fns.values() if f.name == "on_create"]
    said = create.fn("next", 1, "twice", "typed", None, None, "\n".join(f"Q{n}?" for n in range(40)),
                     f"base:{tiny_model_dir}", None, 0.7, 4, None)[0]
    assert f"40 prompts {IN_BACKGROUND}, all of them in about {format_duration(40 * pace)} here (progress" in said


def test_models_that_cannot_load_are_refused_before_anything_is_written(studio, tmp_path, tiny_model_dir):
    missing = tmp_path / "no-such-model"
    with pytest.raises(LabelError, match=rf"^model '{missing}' is neither 'default', an existing local folder, "
                                         r"nor a hub id like org/name$"):
        ls.create_project(studio, name="bad", prompts=turns(PROMPTS),
                          models_=[f"base:{tiny_model_dir}", f"base:{missing}"], temperature=0.0)
    with pytest.raises(LabelError, match=r"^no run with id 'r-nope' \(see 'studio runs'\)$"):
        ls.create_project(studio, name="bad", prompts=turns(PROMPTS), models_=["run:r-nope"], temperature=0.7)
    assert studio.store.list_label_projects() == []
    assert not any(studio.runs_dir.iterdir())


@pytest.mark.parametrize("settings, message", [
    ({"max_new_tokens": 0}, "the longest answer (new tokens) is 0; it must be from 1 to 4096"),
    ({"temperature": float("nan")}, "the temperature is nan; it must be from 0 to 2"),
    ({"temperature": 50.0}, "the temperature is 50.0; it must be from 0 to 2"),
    ({"seed": -3}, "the seed is -3; it must be from 0 to 18446744073709551615"),
    ({"seed": 2**64}, "the seed is 18446744073709551616; it must be from 0 to 18446744073709551615"),
])
def test_answer_settings_out_of_the_chat_tabs_ranges_are_refused(studio, tiny_model_dir, settings, message):
    """`studio label create` took any: 0 new tokens made every answer one token long, cut off; a NaN temperature
    passed the check for two different answers, then both were greedy and the same."""
    with pytest.raises(LabelError) as err:
        ls.create_project(studio, name="p", prompts=turns(PROMPTS), models_=[f"base:{tiny_model_dir}"],
                          **{"temperature": 0.7, **settings})
    assert str(err.value) == message
    assert studio.store.list_label_projects() == [] and not any(studio.runs_dir.iterdir())


def test_a_model_folder_given_relative_to_here_is_kept_as_a_whole_path(studio, tiny_model_dir, monkeypatch):
    """The answering job runs in the project's folder: a folder typed relative to where the command ran was not
    found there (the job failed), or was taken there for a hub id."""
    monkeypatch.chdir(tiny_model_dir.parent)
    made = ls.create_project(studio, name="rel", prompts=turns(PROMPTS), models_=[f"base:{tiny_model_dir.name}"],
                             temperature=0.7, max_new_tokens=4)
    job = json.loads((studio.run_dir(made["job_id"]) / "job.json").read_text())
    assert [side["model"] for side in job["sides"]] == [str(tiny_model_dir.resolve())] * 2
    assert until(studio, "rel")["status"] == "ready"  # the job found it, from its own folder


def test_the_table_says_how_long_the_answers_take_yet():
    """Prompts 2 to 5 took 40 s once the models were loaded (with the first): 10 s each, 15 left of 20,
    about 2:30 to go."""
    from components.label_projects import answering

    job = {"status": "running", "step": 5, "max_steps": 20, "training_since": 1000.0, "first_step": 1}
    assert answering(job, 20, now=1040.0) == "answering: 5 of 20 · about 2:30 left"
    assert answering({**job, "step": 1}, 20, now=1040.0) == "answering: 1 of 20"  # loading counted nothing yet
    assert answering({**job, "training_since": None, "first_step": 0}, 20) == "answering: 5 of 20"
    assert answering({**job, "status": "queued"}, 20) == "answering: queued"
    # with the last answer's time: the time per prompt is the answers' own, and the wait counts down between
    # answers (measured up to now, it rose every second until the next answer came)
    answers = [{"step": 1, "answered": 1, "time": 1000.0}, {"step": 5, "answered": 5, "time": 1030.0}]
    assert answering(job, 20, now=1030.0, answers=answers) == "answering: 5 of 20 · about 1:52 left"
    assert answering(job, 20, now=1034.0, answers=answers) == "answering: 5 of 20 · about 1:48 left"
    assert answering(job, 20, now=1050.0, answers=answers) == "answering: 5 of 20 · about 1:45 left"  # at least
    assert answering({**job, "cancelling": True}, 20) == "stopping after the prompt in hand: 5 of 20 answered"


def test_a_whole_last_line_without_its_newline_is_not_counted_done(tmp_path):
    """A job killed after an answer's closing brace, before its newline: a resume counted that prompt done,
    then cut the line as half-written, and the prompt was never answered (the project 'ready' one short)."""
    from pipelines.label_gen import drop_partial_line, read_candidates

    path = tmp_path / CANDIDATES
    rows = [json.dumps({"position": n, "answer_a": f"a{n}", "answer_b": f"b{n}"}) for n in range(3)]
    path.write_text(f"{rows[0]}\n{rows[1]}\n{rows[2]}")
    assert sorted(read_candidates(tmp_path)) == [0, 1]
    drop_partial_line(path)
    assert sorted(read_candidates(tmp_path)) == [0, 1] and path.read_text() == f"{rows[0]}\n{rows[1]}\n"


def test_an_answering_process_killed_says_to_resume_answering(studio, tiny_model_dir):
    """The answering job was read from its folder alone: a worker killed before it reported left the project
    'generating' for ever, and a failure named 'the training process'. Read as the studio's other jobs now, a
    kill says what to do: resume answering, which keeps the answers already written."""
    made = ls.create_project(studio, name="killed", prompts=turns(PROMPTS), models_=[f"base:{tiny_model_dir}"],
                             temperature=0.7, max_new_tokens=1)
    studio._procs[made["job_id"]].kill()
    studio._procs[made["job_id"]].wait(timeout=60)
    found = until(studio, "killed", statuses=("failed",), timeout=30)
    assert found["error"] == ("the answering process was killed by SIGKILL (the system does this when memory runs out; "
                              "so does kill -9) before starting; resume answering to go on from the prompts already "
                              "answered")
    assert ls.resume_generation(studio, "killed")["status"] == "generating"
    assert until(studio, "killed")["items"] == len(PROMPTS)


def test_a_prompt_longer_than_the_models_read_is_left_out_and_the_rest_answered(studio, short_context_dir):
    """A prompt past the models' window now stops its reply at once: the whole job failed on it, and a resume
    failed on it again, the prompts after it never answered."""
    prompts = turns(["Short question one?", "gear " * 80, "Short question three?"])
    ls.create_project(studio, name="long", prompts=prompts, models_=[f"base:{short_context_dir}"] * 2,
                      temperature=1.0, max_new_tokens=4)
    found = until(studio, "long")
    items = studio.store.label_items(found["id"])
    assert [it["prompt"] for it in items] == [prompts[0], prompts[2]]
    log = (studio.run_dir(found["job_id"]) / "train.log").read_text()
    assert "prompt 2 left out: the prompt is 111 tokens (with the chat template), and this model reads at most 64" \
           in log
    # every prompt too long: the job fails in one sentence (a project "ready" with nothing to label, before)
    ls.create_project(studio, name="all long", prompts=[prompts[1]], models_=[f"base:{short_context_dir}"] * 2,
                      temperature=1.0, max_new_tokens=4)
    failed = until(studio, "all long", statuses=("failed",))
    assert failed["error"] == "every prompt (1) is longer than the models read at once; shorten them"


def test_a_source_larger_than_a_project_is_sampled_at_random_when_asked(studio, tiny_model_dir):
    """A dataset of 5000 prompts was refused ("a project takes at most 2000") with no way to take fewer."""
    spec = f"base:{tiny_model_dir}"
    many = turns([f"Question {n}?" for n in range(ls.MAX_PROMPTS + 1)])
    with pytest.raises(LabelError) as err:
        ls.create_project(studio, name="big", prompts=many, models_=[spec], temperature=1.0)
    assert str(err.value) == (f"{ls.MAX_PROMPTS + 1} prompts; a project takes at most {ls.MAX_PROMPTS}: take a random "
                              f"sample of {ls.MAX_PROMPTS} or fewer (How many prompts; --sample on the command line)")
    with pytest.raises(LabelError, match=r"^the number of prompts to take is 0; take at least 1 \(empty = all\)$"):
        ls.create_project(studio, name="big", prompts=many, models_=[spec], temperature=1.0, sample=0)
    assert studio.store.list_label_projects() == [] and not any(studio.runs_dir.iterdir())
    # a sample: the same prompts for the same seed, in their order, spread over the source (not its first ones)
    picked = ls.sample_prompts(many, 3, seed=0)
    assert picked == ls.sample_prompts(many, 3, seed=0) != ls.sample_prompts(many, 3, seed=1)
    numbers = [int(p[0]["content"].split()[1].rstrip("?")) for p in picked]
    assert numbers == sorted(numbers) and numbers != [0, 1, 2]
    made = ls.create_project(studio, name="big", prompts=many, models_=[spec], temperature=1.0, max_new_tokens=1,
                             sample=3)
    assert made["source"]["prompts"] == 3 and made["source"]["sampled_from"] == ls.MAX_PROMPTS + 1
    found = until(studio, "big")
    assert [it["prompt"] for it in sorted(studio.store.label_items(found["id"]), key=lambda it: it["position"])] == picked
