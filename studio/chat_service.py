"""What the Chat tab and `studio generate` ask of the studio: which models can chat, streaming
replies from two of them at once, votes, results and their export as preference data."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from pipelines import arena, chat
from pipelines.data import DataError
from pipelines.importer import ImportOptions


class ChatError(ValueError):
    """A chat request that cannot be served; one sentence."""


def choices(studio) -> list[tuple[str, str]]:
    """(label, spec) for every model one can chat with: the base, then completed runs."""
    out = [("Base model: built-in SmolLM2-135M-Instruct", "base:default")]
    for run in studio.list_runs():
        if run["status"] == "completed" and studio.result_dir(run["id"]) is not None:
            dataset = studio.store.get_dataset(run["dataset_id"]) if run["dataset_id"] else None
            name = dataset["name"] if dataset else "?"
            base = "" if run["model"] == "default" else f" on {run['model']}"
            out.append((f"Tuned: {run['method']} on {name}{base} ({run['id']})", f"run:{run['id']}"))
    return out


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


def label(studio, spec: str) -> str:
    return dict((s, lbl) for lbl, s in choices(studio)).get(spec, spec)


def decoders(studio, specs: list[str], histories: list[list[dict]], settings: chat.GenerationSettings):
    """One Decoder per side; sides on the same base share one copy of its weights."""
    out = []
    for spec, history in zip(specs, histories):
        model, adapter = resolve(studio, spec)
        entry, name = studio.chat_models.get(model, adapter)
        out.append(chat.Decoder(entry, name, history, settings))
    return out


def record_vote(studio, *, voter: str, model_a: str, model_b: str, winner: str, blind: bool,
                prompt_a: list[dict], prompt_b: list[dict], reply_a: str, reply_b: str,
                settings: dict) -> int:
    if winner not in arena.WINNERS:
        raise ChatError(f"vote '{winner}' is not one of {', '.join(arena.WINNERS)}")
    if not reply_a.strip() or not reply_b.strip():
        raise ChatError("both sides need a reply before a vote")
    return studio.store.add_vote(voter=voter.strip() or "anonymous", model_a=model_a, model_b=model_b,
                                 winner=winner, blind=blind, prompt_a=prompt_a, prompt_b=prompt_b,
                                 reply_a=reply_a, reply_b=reply_b, settings=settings)


def export_votes(studio, name: str | None = None) -> dict:
    """Decisive votes -> a conversational preference dataset in the catalogue (same votes, same
    dataset). Raises DataError when there is nothing to export."""
    rows = arena.preference_rows(studio.store.list_votes())
    if not rows:
        raise DataError("no decisive votes yet: ties and 'both bad' are not preference pairs")
    with tempfile.TemporaryDirectory(dir=studio.home) as tmp:
        path = Path(tmp) / "chat-votes.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return studio.import_dataset(path, name=name or f"chat votes {time.strftime('%Y-%m-%d %H:%M')}",
                                     options=ImportOptions(kind="preference"))
