"""Reinforcement learning: config -> rewards -> model -> data -> trainer -> train -> save.

GRPO (TRL's `GRPOTrainer`): for every prompt the model writes a group of replies, the run's reward
functions (pipelines/rewards.py) score them, and replies that beat their group's average become more
likely. Where the run starts, and what the KL leash compares with, is as for preference tuning
(train_pref.load_policy): a fresh LoRA adapter on the base, whose reference is the same weights with
the adapter switched off; or a finished run's adapter, which keeps training against a frozen copy.

While it trains, the newest scored replies are written to `samples.json` in the run directory, so
the Train tab can show what the model writes and what each function gave it.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipelines import data, events as ev, hardware, models, rewards
from pipelines.events import RunEvents, newest_checkpoint, truncate_metrics
from pipelines.methods import get_method, parse, split_by_target
from pipelines.methods.trainers import trl_classes
from pipelines.train_pref import load_policy, save
from pipelines.train_sft import run_settings

SAMPLES_SHOWN = 8  # the newest scored replies kept for the Train tab


def train(job: dict, run_dir: Path, events: RunEvents) -> dict:
    events.phase("loading the model and the data")
    trainer, tokenizer = build_trainer(job, run_dir, events)

    checkpoint = newest_checkpoint(run_dir) if job.get("resume") else None
    if checkpoint is not None:
        truncate_metrics(run_dir, int(checkpoint.name.rsplit("-", 1)[-1]))
        print(f"resuming from {checkpoint.name}", flush=True)
    elif job.get("resume"):
        truncate_metrics(run_dir, -1)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    rewards_seen = [m["reward"] for m in ev.read_metrics(run_dir) if "reward" in m]
    summary = {"train_rows": len(trainer.train_dataset), "train_loss": result.training_loss,
               "steps": trainer.state.global_step}
    if rewards_seen:  # the first and last few steps' mean reward: did it rise?
        k = max(1, min(5, len(rewards_seen) // 4))
        summary["reward_first"] = sum(rewards_seen[:k]) / k
        summary["reward_last"] = sum(rewards_seen[-k:]) / k
    if events.cancel_requested():
        summary["cancelled"] = True
        return summary
    events.phase("saving the result")
    save(trainer, tokenizer, run_dir)
    return summary


def prompt_text(prompt) -> str:
    """The last user message of a conversational prompt (what the samples table shows)."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    return str(prompt)


def write_samples(run_dir: Path, step: int, logs: dict, weights: list[float]) -> None:
    """The newest replies TRL scored (its completions log: prompt, completion, each function's reward,
    advantage) as a small JSON file, replaced atomically so a reader never sees half of it."""
    prompts, completions = list(logs["prompt"]), list(logs["completion"])
    parts = {name: list(values) for name, values in logs["rewards"].items()}
    advantages = list(logs["advantages"])
    rows = []
    for i in range(max(0, len(prompts) - SAMPLES_SHOWN), len(prompts)):
        scores = {name: values[i] for name, values in parts.items() if i < len(values)}
        total = sum(w * s for w, s in zip(weights, scores.values()) if s is not None and not math.isnan(s))
        rows.append({"prompt": prompt_text(prompts[i]), "reply": rewards.reply_text(completions[i]),
                     "rewards": scores, "reward": total,
                     "advantage": advantages[i] if i < len(advantages) else None})
    ev.write_json(run_dir / ev.SAMPLES, {"step": step, "samples": rows})


def build_trainer(job: dict, run_dir: Path, events: RunEvents):
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback

    from pipelines.callbacks import CancelCallback, MetricsCallback

    # config: the method's settings and the reward functions the run lists
    method = get_method(job["method"])
    params = parse(method.params, job["params"])
    groups = split_by_target(params)
    config_cls, trainer_cls = trl_classes(method.trl)
    entries = rewards.parse_list(job.get("rewards"))
    funcs, weights = rewards.trl_functions(entries)
    print("rewards: " + "; ".join(rewards.describe_entry(e) for e in entries), flush=True)

    # data: prompts (as chat messages) and the columns the rewards compare with
    rows = data.load_rows(Path(job["dataset"]["path"]))
    rewards.check_rows(entries, rows, job["dataset"]["name"])
    train_ds = Dataset.from_list([{k: row.get(k) for k in ("prompt", "answer", "tests")} for row in rows])
    print(f"data: {len(rows)} prompts, {params.num_generations} replies each", flush=True)

    # model: what trains, and where the KL leash's reference comes from
    model_path = models.resolve(job["model"], Path(job["model_cache"]))
    tokenizer = models.load_tokenizer(model_path)
    model, peft_config = load_policy(method, params, model_path, job.get("init_adapter"))
    start = (f"the adapter of {job['parent_id']} keeps training" if job.get("init_adapter") else "a new adapter")
    print(f"model {job['model']} loaded from {model_path}; method {method.label} ({start}; "
          f"bf16 autocast: {hardware.use_bf16()})", flush=True)

    # trainer
    settings = run_settings(run_dir, params, False, 0)
    # TRL keeps its completions log (read for samples.json) whether or not it prints it: it does not
    config = config_cls(**groups["trainer"], **settings, reward_weights=weights, log_completions=False)

    class Samples(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if trainer._logs["prompt"]:
                write_samples(run_dir, state.global_step, trainer._logs, weights)

    trainer = trainer_cls(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=train_ds,
        processing_class=tokenizer,
        callbacks=[MetricsCallback(events), CancelCallback(events), Samples()],
        peft_config=peft_config,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer, tokenizer
