"""What the Chat tab and `studio generate` ask of the studio: which models can chat, streaming
replies from two of them at once, votes, results and their export as preference data."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

from pipelines import arena, chat, models
from pipelines.data import DataError
from pipelines.importer import ImportOptions
from pipelines.methods import METHODS
from studio import export_service


class ChatError(ValueError):
    """A chat request that cannot be served; one sentence."""


def choices(studio) -> list[tuple[str, str]]:
    """(label, spec) for every model one can chat with: the base, the other bases runs trained on,
    then completed runs, newest first."""
    out = [("Base model: built-in SmolLM2-135M-Instruct", "base:default")]
    finished = studio.model_runs()
    for base in dict.fromkeys(r["model"] for r in finished if r["model"] != "default"
                              and not Path(r["model"]).is_relative_to(studio.runs_dir)):
        out.append((f"Base model: {base}", f"base:{base}"))
    titles = studio.dataset_titles()
    for run in finished:
        name = titles.get(run["dataset_id"], "?")
        base = "" if run["model"] == "default" else f" on {run['model']}"
        method = METHODS[run["method"]].label if run["method"] in METHODS else run["method"]
        out.append((f"Tuned: {method} on {name}{base} ({run['id']})", f"run:{run['id']}"))
    # merged models and merges made in the Export tab
    return out + [(label, f"base:{folder}") for label, folder in export_service.model_choices(studio)]


def resolve(studio, spec: str) -> tuple[str, Path | None]:
    """'base:MODEL' | 'run:ID' | a model folder -> (base model spec, adapter folder or None)."""
    kind, _, value = spec.partition(":")
    if kind == "run":
        run = studio.get_run(value)
        if run is None:
            raise ChatError(f"no run with id '{value}' (see 'studio runs')")
        if run["status"] != "completed" or studio.result_dir(value) is None:
            raise ChatError(f"run {value} is {run['status']}; only a completed run has a tuned model to chat with")
        return studio.tuned_model(value)
    if kind == "base" and value:
        return value, None
    return spec, None


def _identity(studio, spec: str) -> tuple[str, str | None]:
    """What a model spec loads, as folders: the built-in model typed as its prepared folder is the
    built-in model (a vote between the two was taken as one between two models). A spec that cannot be
    read this way (a run that has no chat model, a path the system refuses) is itself."""
    try:
        model, adapter = resolve(studio, spec)
        adapter = str(Path(adapter).resolve()) if adapter else None  # a run's own: never dropped (every run
        # of the built-in model was the built-in model, and a vote of a tuned model against its base refused)
        built_in = studio.model_cache / models.DEFAULT_MODEL
        path = Path(model).expanduser()
        if models.is_default(model) or built_in.exists() and path.exists() and path.resolve() == built_in.resolve():
            return "built-in", adapter
        return (str(path.resolve()) if path.exists() else model), adapter
    except Exception:  # noqa: BLE001  (asked on every change of a picker, where anything may be typed)
        return spec, None


def same_model(studio, spec_a: str | None, spec_b: str | None) -> bool:
    if not spec_a or not spec_b:
        return False
    return spec_a == spec_b or _identity(studio, spec_a) == _identity(studio, spec_b)


def still_offered(spec, options: list[tuple[str, str]]) -> bool:
    """Whether a model a page showed can still be picked: a listed model or run, or a model typed in
    (a folder that still exists, a hub id); not a run that is gone or an export deleted since."""
    if not isinstance(spec, str):
        return False
    if spec in {listed for _label, listed in options}:
        return True
    value = spec.removeprefix("base:").strip()
    if not value or spec.startswith("run:"):
        return False
    return Path(value).expanduser().is_dir() or not value.startswith(("/", "~", "."))  # else a hub id


def default_pair(studio) -> tuple[str, str]:
    """What Chat compares when nobody picked yet: the newest finished run (B) against the base model
    it was trained on (A); the built-in model on both sides before any run has finished."""
    for run in studio.model_runs():
        return f"base:{run['model']}", f"run:{run['id']}"
    return "base:default", "base:default"


def label(studio, spec: str) -> str:
    return dict((s, lbl) for lbl, s in choices(studio)).get(spec, spec)


def short_label(studio, spec: str) -> str:
    """A model in a table cell or a sentence: 'the built-in model', 'LoRA run r2026...', a model's
    folder or hub id (the specs 'base:default', 'run:ID' are the page's and the store's)."""
    kind, _, value = spec.partition(":")
    if kind == "run":
        run = studio.store.get_run(value)
        method = run and (METHODS[run["method"]].label if run["method"] in METHODS else run["method"])
        return f"{method} run {value}" if method else f"run {value}"
    if kind == "base":
        return "the built-in model" if value == "default" else value
    return spec


SEED_MAX = 2**64 - 1  # torch's generator takes 64 bits


def decoders(studio, specs: list[str], histories: list[list[dict]], settings: chat.GenerationSettings):
    """One Decoder per side; sides on the same base share one copy of its weights."""
    if not -1 <= settings.seed <= SEED_MAX:  # (torch's generator stopped with "Overflow when unpacking long long")
        raise ChatError(f"Seed {settings.seed} is out of range: use -1 for new replies each time, or 0 to {SEED_MAX}")
    out = []
    try:
        for spec, history in zip(specs, histories):
            out.append(_decoder(studio, spec, history, settings))
    finally:  # the models over the cache's budget go once every side has its own (not one side's for the other)
        studio.chat_models.trim([d.entry for d in out])
    return out


def _decoder(studio, spec: str, history: list[dict], settings: chat.GenerationSettings) -> chat.Decoder:
    model, adapter = resolve(studio, spec)
    # a hub id that is not downloaded, with no network: said in one sentence at once (the download's
    # retries took 90 s, then failed with the library's text)
    models.check_available(model, studio.model_cache)
    entry, name = studio.chat_models.get(model, adapter, trim=False)
    if not getattr(entry.tokenizer, "chat_template", None):  # (apply_chat_template's traceback before)
        raise ChatError(f"{short_label(studio, spec)} has no chat template: it is a base model never taught to "
                        "chat; pick an instruction-tuned (chat) model, or a run tuned from one")
    try:
        return chat.Decoder(entry, name, history, settings)
    except chat.TooLong as err:
        raise ChatError(f"{short_label(studio, spec)}: {err}") from None


NO_REPLY = arena.NO_REPLY
ALREADY_VOTED = "You already voted on this reply; send another prompt."


class AlreadyVoted(ChatError):
    """The turn has its vote: another vote button's click was stored first."""


def counted_votes(studio) -> list[dict]:
    """The stored votes that count (arena.counted), oldest first."""
    return arena.counted(studio.store.list_votes())


def record_vote(studio, *, voter: str, model_a: str, model_b: str, winner: str, blind: bool,
                prompt_a: list[dict], prompt_b: list[dict], reply_a: str, reply_b: str,
                settings: dict, turn: str | None = None) -> int:
    """turn: the id of the pair of replies voted on (the Chat tab's), which takes one vote only; a voter's page
    vote on two replies they voted on before (the same words again) is refused."""
    if winner not in arena.WINNERS:
        raise ChatError(f"vote '{winner}' is not one of {', '.join(arena.WINNERS)}")
    if same_model(studio, model_a, model_b):
        raise ChatError(f"both sides are the same model ({label(studio, model_a)}), so a vote says nothing "
                        "about which is better; pick two different models")
    silent = [side for side, reply in (("A", reply_a), ("B", reply_b)) if arena.silent(reply)]
    if silent:  # the page shows NO_REPLY for a side stopped before its first word, or one that said nothing
        raise ChatError(f"both sides need a reply before a vote: model {' and '.join(silent)} has none (stopped "
                        "before its first word, or it said nothing); press Regenerate or send another prompt")
    voter = voter.strip() or "anonymous"
    if turn is not None and studio.store.turn_voted(turn):  # a second click on the same replies
        raise AlreadyVoted(ALREADY_VOTED)
    asked, pair = prompt_a[-1:], {(model_a, reply_a), (model_b, reply_b)}  # the question, each model's words
    same = [v for v in studio.store.list_votes() if v["voter"] == voter and v["prompt_a"][-1:] == asked
            and {(v["model_a"], v["reply_a"]), (v["model_b"], v["reply_b"])} == pair] if turn is not None else []
    if any(v.get("turn") == turn for v in same):  # this turn's own vote, stored by a click a moment before this one
        raise AlreadyVoted(ALREADY_VOTED)
    if same:
        # the same two replies again (a fixed seed, greedy decoding): counted twice, one judgement looked like two
        # (four such votes made a pair "better"), and a blind one came after the names were shown
        raise ChatError("you voted on these two replies already: they came back word for word (a fixed Seed, or "
                        "Temperature 0, writes the same reply each time); set Seed to -1 for new replies, or send "
                        "another prompt")
    vote_id = studio.store.add_vote(voter=voter, model_a=model_a, model_b=model_b,
                                    winner=winner, blind=blind, prompt_a=prompt_a, prompt_b=prompt_b,
                                    reply_a=reply_a, reply_b=reply_b, settings=settings, turn=turn)
    if vote_id is None:
        raise AlreadyVoted(ALREADY_VOTED)
    return vote_id


def export_votes(studio, name: str | None = None) -> dict:
    """Decisive votes -> a conversational preference dataset in the catalogue (same votes, same
    dataset: then "exported_before" is true and the name is the first export's). Raises DataError
    when there is nothing to export."""
    votes = counted_votes(studio)
    rows = arena.preference_rows(votes)
    if not rows:
        raise DataError("no decisive votes yet: ties and 'both bad' are not preference pairs")
    from pipelines.importer import teaches_nothing

    if all(teaches_nothing(r) for r in rows):
        raise DataError(f"no vote can teach anything yet: in all {len(rows)} decisive votes both replies were "
                        "the same text; vote where the two models answer differently")
    known = {d["id"] for d in studio.store.list_datasets()}
    with tempfile.TemporaryDirectory(dir=studio.home) as tmp:
        path = Path(tmp) / "chat-votes.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        row = studio.import_dataset(path, name=name or f"chat votes {time.strftime('%Y-%m-%d %H:%M')}",
                                    options=ImportOptions(kind="preference"),
                                    made_here=True)
    decisive = [v for v in votes if v["winner"] in ("a", "b")]  # one row each, in order
    models = sorted({spec for v in decisive for spec in (v["model_a"], v["model_b"])})
    # winning replies without their end (cut at Max new tokens, or stopped): they teach stopping mid-sentence;
    # counted among the pairs the dataset holds (the import leaves out a pair of one reply twice)
    taught = [v for v, r in zip(decisive, rows) if not teaches_nothing(r)]
    studio.store.set_dataset_origin(row["id"], {"kind": "chat votes", "votes": len(decisive),
                                                "vote_ids": [v["id"] for v in decisive], "models": models,
                                                "taught": len(taught), "cut_chosen": arena.unfinished_winners(taught)})
    # the same votes exported again are the dataset made then, under the name given then
    return {**studio.store.get_dataset(row["id"]), "exported_before": row["id"] in known}


def voted_runs(studio, votes: list[dict]) -> list[str]:
    """Tuned runs in decisive votes, the newest vote first (the newer run first within a vote):
    after a blind rematch of a child against its parent, the child is where the next round starts."""
    out: list[str] = []
    for v in sorted(votes, key=lambda v: v["id"], reverse=True):
        if v["winner"] not in ("a", "b"):
            continue
        runs = [s[4:] for s in (v["model_a"], v["model_b"]) if s.startswith("run:")]
        rows = [r for r in (studio.get_run(i) for i in runs) if r]
        for row in sorted(rows, key=lambda r: r["created"], reverse=True):
            if row["id"] not in out:
                out.append(row["id"])
    return out


def preference_start(studio, name: str | None = None, method: str = "dpo") -> dict:
    """'Train on these preferences': the decisive votes as a dataset, and where the run starts (the
    newest voted run that the method can start from, else the base).
    Returns {"dataset": row, "model": "run:ID", a base model (its folder, or "default"), "votes": count}."""
    from pipelines.methods import get_method
    from studio.core import RunError

    votes = counted_votes(studio)
    row = export_votes(studio, name)
    start = None
    runs = voted_runs(studio, votes)
    for run_id in runs:
        try:
            studio.start_point(run_id, get_method(method))
        except RunError:
            continue
        start = f"run:{run_id}"
        break
    if start is None:
        # no voted run it can start from: the model those were tuned from, else the base model voted on (newest
        # vote first, its winner's side first), not the built-in one (it trained SmolLM2 on another model's replies)
        bases = [studio.get_run(run_id)["model"] for run_id in runs]
        for v in sorted((v for v in votes if v["winner"] in ("a", "b")), key=lambda v: v["id"], reverse=True):
            sides = (v["model_a"], v["model_b"]) if v["winner"] == "a" else (v["model_b"], v["model_a"])
            bases += [spec[5:] for spec in sides if spec.startswith("base:")]
        start = bases[0] if bases else "default"
    return {"dataset": row, "model": start, "votes": sum(v["winner"] in ("a", "b") for v in votes),
            "learned": learned_before(studio, start, row)}


def learned_before(studio, start: str, row: dict) -> int:
    """How many of the votes behind a dataset were in the dataset of the starting run, or of a run it started
    from (the votes are kept, so a second *Train on these preferences* trains on the first one's again; some of
    them the earlier run may have held out to measure itself)."""
    ids = set((row["meta"].get("origin") or {}).get("vote_ids") or [])
    seen: set[int] = set()
    run = studio.store.get_run(start[4:]) if start.startswith("run:") else None
    while run is not None and ids:
        dataset = studio.store.get_dataset(run["dataset_id"], deleted=True) if run.get("dataset_id") else None
        seen |= ids & set(((dataset or {}).get("meta", {}).get("origin") or {}).get("vote_ids") or [])
        run = studio.store.get_run(run["parent_id"]) if run.get("parent_id") else None
    return len(seen)


def holds_out(studio, run_id: str) -> bool:
    """Whether the run's method keeps a share of its data out of training (GRPO, RLOO and PPO do not)."""
    from pipelines.events import JOB, read_json

    method = METHODS.get((read_json(studio.run_dir(run_id) / JOB) or {}).get("method"))
    return method is None or "eval_fraction" in {f.name for f in dataclasses.fields(method.params)}


def heldout_rows(studio, run_id: str) -> list[dict]:
    """The rows a run held out of its dataset (its dataset's own held-out file, or its kept split)."""
    from pipelines import data as data_rows
    from pipelines.events import JOB, read_json

    job = read_json(studio.run_dir(run_id) / JOB) or {}
    dataset = job.get("dataset") or {}
    if dataset.get("heldout_path") and Path(dataset["heldout_path"]).exists():
        return data_rows.load_rows(Path(dataset["heldout_path"]))
    if not holds_out(studio, run_id):
        return []  # a method that holds nothing out (GRPO, RLOO, PPO): it trained on every prompt it read
    method = METHODS.get(job.get("method"))
    if dataset.get("path") and Path(dataset["path"]).exists():
        params = job.get("params", {})  # the run's own split: KTO's and preference pairs' differ
        return data_rows.kept_heldout(studio.run_dir(run_id), data_rows.load_rows(Path(dataset["path"])),
                                      params.get("eval_fraction", 0.1), params.get("seed", 42),
                                      method.data_kind if method else "sft")
    return []


def row_prompt_text(row: dict) -> str | None:
    """The question a row asks: its prompt's last user message (an implicit prompt: the turns before the answer)."""
    prompt = row.get("prompt") or (row.get("messages") or [])[:-1]
    if not prompt and isinstance(row.get("chosen"), list):  # implicit prompt: the turns before the answer
        prompt = row["chosen"][:-1]
    return last_user_message(prompt) if isinstance(prompt, (str, list)) else None


def last_user_message(prompt) -> str | None:
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt or [] if m.get("role") == "user"]
    return users[-1] if users else None


def prompt_suggestions(studio, source: str, run_id: str | None = None, limit: int = 200) -> list[str]:
    """Prompts to put to two models: the chat votes' prompts, or the held-out prompts of the
    dataset a run learned from (its held-out split: never trained on), then those of the runs behind
    it (where it started from, and so on) that no run of that chain trained on: after a DPO run on a
    few votes, its one held-out pair was all a blind re-comparison was offered."""
    from pipelines import lineage
    from pipelines.events import JOB, read_json

    found: list[str] = []
    if source == "votes":
        votes = counted_votes(studio)
        if run_id:  # the votes it trained on would favour it: a blind verdict on them read "better" for that
            trained = trained_prompts(studio, run_id)
            votes = [v for v in votes if not voted_digests(v) & trained]
        found = [last_user_message(v["prompt_a"]) for v in votes]
    elif source == "heldout" and run_id:
        key = ("held-out prompts", run_id)  # a completed run's are read once (each Next prompt asks)
        found = studio.length_cache.get(key) or []
        if key not in studio.length_cache:
            trained = None  # read only when there is a run behind it
            chain = run_id
            for _ in range(lineage.MAX_ANCESTORS):
                if not chain or len(found) >= limit:
                    break
                rows = heldout_rows(studio, chain)
                if chain != run_id:
                    trained = lineage.trained_by(studio.runs_dir, run_id) if trained is None else trained
                    rows = new_to(rows, trained)
                found += [prompt for prompt in map(row_prompt_text, rows) if prompt]
                chain = (read_json(studio.run_dir(chain) / JOB) or {}).get("parent_id")
            if (studio.store.get_run(run_id) or {}).get("status") == "completed":  # (its split is final)
                studio.length_cache[key] = found
    unique = list(dict.fromkeys(p.strip() for p in found if p and p.strip()))
    return unique[:limit]


def new_to(rows: list[dict], trained: set[bytes]) -> list[dict]:
    """The held-out rows of a run behind that the run compared trained on neither as they are nor as they are
    posed (their last question alone, `row_prompt_text`): it learned "Q2" alone, a conversation that ends with
    it is no new question to it."""
    from pipelines import lineage

    return [row for row in rows if lineage.digest(row) not in trained
            and lineage.digest({"prompt": row_prompt_text(row) or ""}) not in trained]


def trained_prompts(studio, run_id: str) -> set[bytes]:
    """The digests of the prompts a run and the runs behind it trained on (lineage.trained_by), read once
    for a completed run."""
    from pipelines import lineage

    key = ("trained prompts", run_id)
    if key in studio.length_cache:
        return studio.length_cache[key]
    trained = lineage.trained_by(studio.runs_dir, run_id)
    if (studio.store.get_run(run_id) or {}).get("status") == "completed":
        studio.length_cache[key] = trained
    return trained


def voted_digests(vote: dict) -> set[bytes]:
    """A vote's prompt as a run trained on it: the row *Train on these preferences* made of it (the
    conversation, after its system prompt), and the question alone (as a dataset's row asks it)."""
    from pipelines import lineage

    rows = [*arena.preference_rows([{**vote, "winner": side} for side in ("a", "b")]),
            {"prompt": last_user_message(vote["prompt_a"])}]
    return {d for d in map(lineage.digest, rows) if d is not None}


def newer_first(row: dict) -> dict:
    """A pair's result (arena.win_rates) from its tuned model's side, the newer run's when both are
    runs (a run's id starts with its start time): the win rate shown is the new model's."""
    first, second = row["first"], row["second"]
    later = second.startswith("run:") and (not first.startswith("run:") or second > first)
    return arena.flip(row) if later else row


def win_rate_text(row: dict, judged: bool = False, unit: str = "vote", more: bool = True) -> str:
    """'88% (22–100%)': the first model's win rate and its 95% interval (arena.anytime); judged: and what that says
    ('88% (22–100%): can't tell yet: about 11 more votes at this rate would tell'; more=False: none can come)."""
    said = f"{100 * row['win_rate']:.0f}% ({100 * row['low']:.0f}–{100 * row['high']:.0f}%)"
    return f"{said}: {arena.verdict(row, unit, more)}" if judged else said


def voted_prompts(studio, spec_a: str, spec_b: str) -> set[str]:
    """The prompts already voted on between these two models, on either side."""
    pair = {spec_a, spec_b}
    found = (last_user_message(v["prompt_a"]) for v in counted_votes(studio) if {v["model_a"], v["model_b"]} == pair)
    return {p.strip() for p in found if p}


def previous_model(studio, run_id: str) -> tuple[str, str]:
    """(the run's tuned model, the model it started from) as chat specs, for a blind re-comparison."""
    run = studio.get_run(run_id) if run_id else None
    if run is None:
        raise ChatError("select a run first")
    if run["status"] != "completed" or studio.result_dir(run_id) is None:
        raise ChatError(f"run {run_id} is {run['status']}; only a completed run can be compared")
    if run_id in {r["id"] for r in studio.reward_model_runs()}:
        raise ChatError(f"run {run_id} is a reward model: it scores replies rather than writing them, so it has "
                        "no replies to compare; pick it under *Score replies with* in the Chat tab")
    previous = f"run:{run['parent_id']}" if run.get("parent_id") else f"base:{run['model']}"
    return f"run:{run_id}", previous


def scorer_choices(studio) -> list[tuple[str, str]]:
    """The Chat tab's 'Score replies with': off, or a finished reward model (newest first)."""
    datasets = studio.dataset_titles()
    return [("Off", "")] + [(f"Reward model {r['id']} (trained on {datasets.get(r['dataset_id'], '?')})", r["id"])
                            for r in studio.reward_model_runs()]


def score_replies(studio, run_id: str, conversations: list[list[dict]]) -> list[float]:
    """A reward model's score of each conversation (ending with the reply to score); the model stays
    loaded for the next replies (one at a time: the newest one asked for)."""
    from pipelines import reward_model
    from studio.core import RunError

    try:
        base, adapter = studio.reward_model(run_id)
    except RunError as err:
        raise ChatError(str(err)) from None
    scorer = studio.reward_scorers.get(run_id)
    if scorer is None:
        scorer = reward_model.load(base, adapter)
        # a new dict, not the old one emptied and filled: another page scoring with another reward model at
        # the same moment read its entry between the two, and stopped with KeyError
        studio.reward_scorers = {run_id: scorer}
    model, tokenizer = scorer
    return reward_model.score(model, tokenizer, conversations)
