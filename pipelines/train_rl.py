"""Reinforcement learning: config -> rewards -> model -> data -> trainer -> train -> save.

Reward model (TRL's `RewardTrainer`): a sequence-classification copy of the model (a new score head
on its last token) with a LoRA adapter learns to score the preferred reply of each pair above the
rejected one (Bradley-Terry loss, as in InstructGPT); its held-out accuracy is measured before and
after. pipelines/reward_model.py loads the result to score replies.

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
from pipelines.errors import DataError
from pipelines.events import RunEvents, resume_checkpoint
from pipelines.methods import ConfigError, get_method, parse, split_by_target
from pipelines.methods.trainers import trl_classes
from pipelines.rank import world_size
from pipelines.train_pref import copy_reference, load_policy, save
from pipelines.train_sft import run_settings

SAMPLES_SHOWN = 8  # the newest scored replies kept for the Train tab


def train(job: dict, run_dir: Path, events: RunEvents) -> dict:
    if get_method(job["method"]).reward_model:
        return train_reward_model(job, run_dir, events)
    events.phase("loading the model and the data")
    trainer, tokenizer = build_trainer(job, run_dir, events)

    checkpoint = resume_checkpoint(job, run_dir)
    if checkpoint is not None:
        in_phase(trainer, checkpoint)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    from pipelines.callbacks import run_loss

    rewards_seen = [m["reward"] for m in ev.read_metrics(run_dir) if "reward" in m]
    summary = {"train_rows": len(trainer.train_dataset), "train_loss": run_loss(trainer, result),
               "steps": trainer.state.global_step}
    if rewards_seen:  # the first and last few steps' mean reward: did it rise?
        k = max(1, min(5, len(rewards_seen) // 4))
        summary["reward_first"] = sum(rewards_seen[:k]) / k
        summary["reward_last"] = sum(rewards_seen[-k:]) / k
        summary["reward_steps"] = k
    if events.stopped_by_cancel(trainer.state):
        summary["cancelled"] = True
        return summary
    events.phase("saving the result")
    save(trainer, tokenizer, run_dir)
    return summary


def in_phase(trainer, checkpoint: Path) -> None:
    """A resumed GRPO or RLOO run goes on in step with its batches of replies. TRL counts the batches it
    has trained on (`_step`) to know when to write the next batch of replies (every `steps_per_generation`
    x `num_iterations` of them), and starts that count at 0 on resume too: from a checkpoint taken between
    two passes over one batch (Save every 3 steps, 2 passes), the resumed run wrote replies one step out of
    phase with the prompts it was given, learning one batch three times and the last once. Counted from the
    checkpoint's steps, the resumed run writes replies again for the batch it was in (the replies it
    wrote before are not kept in a checkpoint), then at the steps the uninterrupted run wrote at.
    The count is the batches the trainer skips on resume (global_step x gradient accumulation): so while
    each batch of replies spans the accumulation's batches (TRL's default steps_per_generation, which the
    studio does not change) and the trainer skips what was trained (ignore_data_skip off)."""
    state = ev.read_json(checkpoint / "trainer_state.json") or {}
    args = trainer.args
    if (hasattr(trainer, "_step") and state.get("global_step") and not args.ignore_data_skip
            and args.steps_per_generation == args.gradient_accumulation_steps):
        trainer._step = int(state["global_step"]) * args.gradient_accumulation_steps


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
        reply = rewards.reply_text(completions[i])
        # why a function gave this reply 0, where it says (the sandbox's reason for code that failed)
        why = {name: rewards.FAILURES.of(name, reply) for name, value in scores.items() if value == 0}
        rows.append({"prompt": prompt_text(prompts[i]), "reply": reply, "rewards": scores, "reward": total,
                     "advantage": advantages[i] if i < len(advantages) else None,
                     "why": {name: reason for name, reason in why.items() if reason}})
    ev.write_json(run_dir / ev.SAMPLES, {"step": step, "samples": rows})


def reward_model_scorer(runs_dir: Path, job: dict):
    """scorer(run_id) -> (model, tokenizer): a finished reward-model run of this workspace, loaded once."""
    loaded = {}

    def scorer(run_id: str):
        if run_id not in loaded:
            from pipelines import reward_model

            parent = ev.read_json(runs_dir / run_id / ev.JOB)
            if parent is None or not (runs_dir / run_id / ev.ADAPTER).exists():
                raise ConfigError(f"the reward model run '{run_id}' is not in this workspace any more (deleted?); "
                                  "pick another reward model")
            base = models.resolve(parent["model"], Path(job["model_cache"]))
            loaded[run_id] = reward_model.load(base, runs_dir / run_id / ev.ADAPTER)
            print(f"reward model {run_id} loaded", flush=True)
        return loaded[run_id]

    return scorer


def build_trainer(job: dict, run_dir: Path, events: RunEvents):
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback

    from pipelines.callbacks import CancelCallback, MetricsCallback, SealCheckpoints, ShareTheCpu

    # config: the method's settings and the reward functions the run lists
    method = get_method(job["method"])
    params = parse(method.params, job["params"])
    groups = split_by_target(params)
    config_cls, trainer_cls = trl_classes(method.trl)
    entries = rewards.parse_list(job.get("rewards"))
    funcs, weights = rewards.trl_functions(entries, scorer=reward_model_scorer(run_dir.parent, job))
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
        callbacks=[MetricsCallback(events), CancelCallback(events), SealCheckpoints(), Samples(), ShareTheCpu()],
        peft_config=peft_config,
    )
    trainer.remove_callback(PrinterCallback)
    if job.get("init_adapter") and "ref" in getattr(trainer.model, "peft_config", {}):
        # TRL copied an IA3, LoHa, LoKr or VeRA parent into its "ref" adapter as their fresh start (the base
        # model): the KL leash pulled the run back from the parent's tuning (as DPO's did: train_pref)
        from pipelines.train_pref import copy_reference

        copy_reference(trainer.model)
    return trainer, tokenizer


def train_reward_model(job: dict, run_dir: Path, events: RunEvents) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, PrinterCallback

    from pipelines import reward_model
    from pipelines.callbacks import (CancelCallback, MetricsCallback, SealCheckpoints, ShareTheCpu, best_metric,
                                     early_stopping, evaluate_sharing, restore_best)

    events.phase("loading the model and the data")
    # config
    method = get_method(job["method"])
    params = parse(method.params, job["params"])
    groups = split_by_target(params)
    config_cls, trainer_cls = trl_classes(method.trl)

    # data: preference pairs; a held-out share measures how often the preferred reply scores higher
    rows = [{k: v for k, v in r.items() if v is not None} for r in data.load_rows(Path(job["dataset"]["path"]))]
    heldout = job["dataset"].get("heldout_path")
    if heldout:
        train_rows = rows
        eval_rows = [{k: v for k, v in r.items() if v is not None} for r in data.load_rows(Path(heldout))]
    else:
        train_rows, eval_rows = data.run_split(rows, groups["studio"]["eval_fraction"], params.seed, method.data_kind,
                                               run_dir)
    print(f"data: {len(train_rows)} training pairs, {len(eval_rows)} held out", flush=True)

    # model: a one-number score head on the base (or on a finished full/freeze run's model)
    model_path = models.resolve(job["model"], Path(job["model_cache"]))
    tokenizer = models.load_tokenizer(model_path)
    with reward_model.new_score_head():  # the head this run trains: its load report would alarm
        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype="float32",
                                                                   use_safetensors=True, trust_remote_code=False)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
    peft_config = method.peft_config(params)
    if job.get("init_adapter"):  # continuing a reward model: its adapter and score head keep training
        from peft import PeftModel

        model, peft_config = PeftModel.from_pretrained(model, job["init_adapter"], is_trainable=True), None
    head = f"the score head of {job['parent_id']}" if job.get("init_adapter") else "a new score head"
    print(f"model {job['model']} loaded from {model_path} with {head}; method {method.label} "
          f"(bf16 autocast: {hardware.use_bf16()})", flush=True)

    # trainer
    total_steps = max(1, math.ceil(len(train_rows) / (params.per_device_train_batch_size * world_size()
                                                      * params.gradient_accumulation_steps) * params.num_train_epochs))
    trainer_args = dict(groups["trainer"])
    trainer_args["eval_steps"] = params.eval_steps or math.ceil(total_steps / 6)
    patience = groups["studio"]["early_stopping_patience"]
    settings = run_settings(run_dir, params, bool(eval_rows), patience,
                            best_metric(groups["studio"]["early_stopping_on"], method.trl))
    config = config_cls(**trainer_args, **settings)
    callbacks = [MetricsCallback(events), CancelCallback(events), SealCheckpoints(), ShareTheCpu()]
    if patience and eval_rows:
        callbacks.append(early_stopping(patience))
    trainer = trainer_cls(model=model, args=config, train_dataset=Dataset.from_list(train_rows),
                          eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
                          processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    # TRL left out every pair with an answer over max_length: counted as what trains and measures, and said
    kept_train, kept_eval = len(trainer.train_dataset), len(trainer.eval_dataset) if eval_rows else 0
    dropped = len(train_rows) - kept_train + len(eval_rows) - kept_eval
    if dropped:
        print(f"{dropped} of {len(train_rows) + len(eval_rows)} pairs have a prompt and reply longer than Max length "
              f"({params.max_length} tokens) and are left out: a reward model reads each reply whole", flush=True)
    for kept, rows, which in ((kept_train, train_rows, "training"), (kept_eval, eval_rows, "held-out")):
        if rows and not kept:
            raise DataError(f"every {which} pair has a prompt and reply longer than Max length ({params.max_length} "
                            "tokens), and a reward model reads each reply whole; raise Max length")

    # train, measuring held-out accuracy before and after
    checkpoint = resume_checkpoint(job, run_dir)
    before = None
    if eval_rows and checkpoint is None:
        events.phase("measuring the model before training")
        before = evaluate_sharing(trainer, training_follows=True)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    from pipelines.callbacks import run_loss

    summary = {"train_rows": kept_train, "train_loss": run_loss(trainer, result), "steps": trainer.state.global_step,
               **({"long_pairs_left_out": dropped} if dropped else {})}
    if before and "eval_accuracy" in before:
        summary["eval_accuracy_before"] = before["eval_accuracy"]
        if "eval_margin" in before:
            summary["eval_margin_before"] = before["eval_margin"]
    if events.stopped_by_cancel(trainer.state):
        summary["cancelled"] = True
        return summary
    if eval_rows:
        summary.update(restore_best(trainer, events, get_method(job["method"])))  # early stopping: its best check
        events.phase("measuring the model after training")
        after = evaluate_sharing(trainer)
        summary.update(eval_accuracy_after=after["eval_accuracy"], eval_margin_after=after["eval_margin"],
                       eval_pairs=kept_eval)
    events.phase("saving the result")
    save(trainer, tokenizer, run_dir)
    return summary
