"""Each reward function against hand-worked replies, the way TRL's GRPOTrainer calls them
(conversational completions, the dataset's columns as lists), and the checks on a reward list."""

from __future__ import annotations

import pytest

from pipelines import rewards
from pipelines.methods import ConfigError


def score(name: str, replies: list[str], answers: list[str | None] | None = None, tests=None, **options):
    entries = rewards.parse_list([{"name": name, **options}])
    (func,), (weight,) = rewards.trl_functions(entries)
    n = len(replies)
    columns = {"answer": answers or [None] * n, "tests": tests or [None] * n}
    completions = [[{"role": "assistant", "content": r}] for r in replies]
    return func(prompts=[[{"role": "user", "content": "q"}]] * n, completions=completions, trainer_state=None,
                **columns)


@pytest.mark.parametrize("name,replies,answers,expected", [
    ("contains", ["The warranty is Two Years.", "one year", "two\n years"], ["two years"] * 3, [1.0, 0.0, 1.0]),
    # whole words only: a short answer inside another word or number is not the answer
    ("contains", ["I do not know", "No, it is not.", "14 apples", "4 apples", "4.5 apples", "about 0.4", "(4)"],
     ["no", "no", "4", "4", "4", "4", "4"], [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
    ("exact", ["Paris.", " paris ", "Paris, France"], ["Paris"] * 3, [1.0, 1.0, 0.0]),
    ("number", ["3 + 4 = 7", "It is 7.0", "1,250 in all", "7 or 8", "seven"], ["7", "7", "1250", "7", "7"],
     [1.0, 1.0, 1.0, 0.0, 0.0]),
])
def test_answer_rewards(name, replies, answers, expected):
    assert score(name, replies, answers) == expected


def test_regex_reward_matches_the_whole_stripped_reply():
    replies = ["Let me see. 3 + 4 = 7.\nAnswer: 7", "Answer: 7 I think", "  Answer: 12\n"]
    assert score("regex", replies, pattern=r"(?s).*Answer: \d+") == [1.0, 0.0, 1.0]


def test_json_reward_gives_partial_credit_for_required_keys():
    replies = ['{"name": "Ada", "age": 36}', 'Sure: ```json\n{"name": "Ada"}\n```', "name: Ada", "[1, 2]"]
    assert score("json", replies) == [1.0, 1.0, 0.0, 1.0]
    assert score("json", replies, required_keys="name, age") == [1.0, 0.75, 0.0, 0.5]


def test_json_reward_gives_nothing_for_bare_values_or_empty_objects():
    """A bare 42, true or "hello" is valid JSON: it earned the full reward, and GRPO drifted to the shortest one."""
    replies = ["42", "true", "null", '"hello"', "NaN", "sure {} ok", "[]", '{"a": NaN}', '{"a": 1}']
    assert score("json", replies) == [0.0] * 8 + [1.0]
    assert score("json", replies, required_keys="a") == [0.0] * 8 + [1.0]


def test_a_reward_model_run_id_is_kept_without_its_spaces():
    (entry,) = rewards.parse_list([{"name": "reward_model", "run": "  r20261130-120000-abcd "}])
    assert entry["run"] == "r20261130-120000-abcd"


def test_length_reward_peaks_at_the_target():
    replies = ["one two three four", "one two", "", " ".join(["w"] * 8)]
    assert score("length", replies, target_words=4) == [1.0, 0.5, 0.0, 0.0]


def test_weights_and_repeated_functions_are_named_for_their_curves():
    entries = rewards.parse_list([{"name": "number", "weight": 2}, "regex", {"name": "regex", "pattern": "x"}])
    funcs, weights = rewards.trl_functions(entries)
    assert [f.__name__ for f in funcs] == ["number", "regex", "regex_2"]
    assert weights == [2.0, 1.0, 1.0]
    # what the curves and the replies table call them, and how much each counts
    assert rewards.parts(entries) == {"number": ("The number is right", 2.0),
                                      "regex": ("Matches a format", 1.0), "regex_2": ("Matches a format (2)", 1.0)}
    assert [rewards.describe_entry(e) for e in entries] == [
        "The number is right ×2", "Matches a format ×1 (pattern=(?s).*)", "Matches a format ×1 (pattern=x)"]


@pytest.mark.parametrize("entries,message", [
    ("number", "reinforcement learning needs at least one reward function: list them under 'rewards' "
               "(available: contains, exact, number, regex, json, length, code, reward_model)"),
    ([{"weight": 1}], "reward 1: expected a mapping with a 'name' (one of contains, exact, number, regex, json, "
                      "length, code, reward_model) and optionally a 'weight'"),
    ([{"name": "number", "weight": "heavy"}],
     "reward 'The number is right' (number): weight must be a number, got 'heavy'"),
    ([{"name": "number", "weight": 11}],
     "reward 'The number is right' (number): weight must be a number from -10 to 10, got 11.0"),
    ([{"name": "number", "pattern": "x"}],
     "reward 'The number is right' (number): unknown setting 'pattern'; it has no settings besides 'weight'"),
    ([{"name": "code", "timeout_s": 100}],
     "reward 'Code passes the tests' (code): parameter 'timeout_s': expected a value from 0.1 to 30.0, got 100.0"),
    (["contains"] * 9, "9 reward functions given; at most 8"),
])
def test_bad_reward_lists_are_one_sentence(entries, message):
    with pytest.raises(ConfigError) as err:
        rewards.parse_list(entries)
    assert str(err.value) == message


def test_every_reward_is_explained():
    for reward in rewards.REWARDS.values():
        assert reward.label and len(reward.help) > 60, reward.key
        for info in rewards.describe(reward.options):
            assert info.label and len(info.help) > 30, (reward.key, info.name)


def test_code_reward_runs_replies_in_the_sandbox(tmp_path):
    tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
    outside = tmp_path / "escaped.txt"
    replies = ["```python\ndef add(a, b):\n    return a + b\n```",
               "def add(a, b):\n    return a - b",
               "```python\ndef add(a, b):\n    while True:\n        pass\n```",
               f"```python\nopen({str(outside)!r}, 'w').write('x')\ndef add(a, b):\n    return a + b\n```"]
    assert score("code", replies, tests=[tests] * 4, timeout_s=1.0) == [1.0, 0.0, 0.0, 0.0]
    assert not outside.exists()  # the reply that wrote outside its scratch folder wrote nothing


def test_the_bundled_arithmetic_prompts_fit_their_rewards(studio):
    import json

    from pipelines.data import load_rows
    from studio.core import SAMPLES_DIR

    row = studio.resolve_dataset("arithmetic_prompts")
    assert row["kind"] == "prompts" and row["rows"] == 51
    entries = rewards.parse_list(json.loads((SAMPLES_DIR / "arithmetic_rewards.json").read_text()))
    rows = load_rows(row["path"])
    rewards.check_rows(entries, rows, row["name"])
    # the reply the task asks for earns full reward on both functions; the bare number only one
    first = rows[0]
    a, b = first["prompt"][0]["content"].split("?")[0].removeprefix("What is ").split(" + ")
    assert score("number", [f"{a} + {b} = {first['answer']}"], [first["answer"]]) == [1.0]
    assert score("regex", [f"{a} + {b} = {first['answer']}", first["answer"]], pattern=entries[1]["pattern"]) == [1.0, 0.0]


def test_a_reward_model_run_that_is_gone_is_said_in_one_sentence(tmp_path):
    """The worker read a missing run's job.json as None and failed with "TypeError: 'NoneType' object…"."""
    from pipelines.train_rl import reward_model_scorer

    scorer = reward_model_scorer(tmp_path, {"model_cache": str(tmp_path / "cache")})
    with pytest.raises(ConfigError) as caught:
        scorer("r20261130-120000-abcd")
    assert str(caught.value) == ("the reward model run 'r20261130-120000-abcd' is not in this workspace any more "
                                 "(deleted?); pick another reward model")
    assert caught.value.one_sentence


def test_a_failed_replys_reason_is_shown_beside_its_zero(studio):
    """A code reward's 0 said only that something went wrong: the sandbox's reason (a syntax error, the
    assert that failed, the time limit) was dropped. Now the run's samples table shows it beside the 0."""
    from components.runs_panel import samples_table
    from pipelines import train_rl
    from pipelines.events import JOB, write_json

    entries = rewards.parse_list([{"name": "code", "timeout_s": 1.0}, {"name": "length", "target_words": 5}])
    funcs, weights = rewards.trl_functions(entries)
    tests = "assert add(2, 3) == 5"
    replies = ["def add(a, b):\n    return a + b", "def add(a, b):\n    return a - b", "def add(a, b) return"]
    prompt = [{"role": "user", "content": "Write add(a, b)."}]
    completions = [[{"role": "assistant", "content": r}] for r in replies]
    code_scores = funcs[0]([prompt] * 3, completions, tests=[tests] * 3)
    assert code_scores == [1.0, 0.0, 0.0] and type(code_scores) is list  # (TRL gets a plain list)
    length_scores = funcs[1]([prompt] * 3, completions, tests=[tests] * 3)
    name = funcs[0].__name__
    assert rewards.FAILURES.of(name, replies[0]) == ""
    assert rewards.FAILURES.of(name, replies[1]) == "AssertionError (tests line 1)"
    assert rewards.FAILURES.of(name, replies[2]).startswith("SyntaxError: ")

    run_id = "r-samples"
    run_dir = studio.run_dir(run_id)
    run_dir.mkdir(parents=True)
    write_json(run_dir / JOB, {"rewards": entries})
    logs = {"prompt": ["Write add(a, b)."] * 3, "completion": completions,
            "rewards": {name: code_scores, funcs[1].__name__: length_scores}, "advantages": [0.5, -0.2, -0.3]}
    train_rl.write_samples(run_dir, 4, logs, weights)
    table = samples_table(studio, run_id)
    assert [row[1] for row in table] == replies
    assert "—" not in table[0][3]  # passed: nothing to say
    assert table[1][3].startswith("Code passes the tests +0.00 — AssertionError (tests line 1); ")
    assert "— SyntaxError: " in table[2][3]
    assert "Length" in table[1][3] and table[1][3].count("—") == 1  # a 0 from a function with no reason: no note
