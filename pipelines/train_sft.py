"""Supervised fine-tuning: config -> model -> data -> trainer -> train -> save."""

from __future__ import annotations

import math
from pathlib import Path

from pipelines import data, hardware, models
from pipelines.events import ADAPTER, CHECKPOINTS, RunEvents, newest_checkpoint, read_metrics, truncate_metrics
from pipelines.methods import get_method, parse, split_by_target

EVALS_PER_RUN = 10  # when eval_steps is 0 ("automatic")


def train(job: dict, run_dir: Path, events: RunEvents) -> dict:
    trainer, tokenizer = build_trainer(job, run_dir, events)

    # resume: continue from the newest complete checkpoint; the curve continues from its step
    checkpoint = newest_checkpoint(run_dir) if job.get("resume") else None
    if checkpoint is not None:
        step = int(checkpoint.name.rsplit("-", 1)[-1])
        truncate_metrics(run_dir, step)
        print(f"resuming from {checkpoint.name}", flush=True)
    else:
        if job.get("resume"):
            truncate_metrics(run_dir, -1)  # no checkpoint was saved yet: start over cleanly
        if trainer.eval_dataset is not None:
            # held-out loss before the first step: the baseline the curve is read against
            trainer.evaluate()

    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    summary = {"train_rows": len(trainer.train_dataset), "train_loss": result.training_loss,
               "steps": trainer.state.global_step}
    evals = [m["eval_loss"] for m in read_metrics(run_dir) if "eval_loss" in m]
    if evals:
        summary["eval_loss_before"] = evals[0]
    if events.cancel_requested():
        summary["cancelled"] = True  # the cancel callback saved a checkpoint to resume from
        return summary
    if trainer.eval_dataset is not None:
        summary["eval_loss_after"] = trainer.evaluate()["eval_loss"]

    # save: a PEFT adapter folder that PeftModel.from_pretrained loads outside the studio
    save(trainer, tokenizer, run_dir / ADAPTER)
    return summary


def save(trainer, tokenizer, out: Path) -> None:
    trainer.model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def build_trainer(job: dict, run_dir: Path, events: RunEvents):
    """Everything up to the first training step: (trainer, tokenizer)."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from pipelines.callbacks import CancelCallback, MetricsCallback

    # config
    method = get_method(job["method"])
    params = parse(method.params, job["params"])
    groups = split_by_target(params)
    bf16 = hardware.use_bf16()

    # model (a continued run starts from its parent's adapter, still trainable)
    model_path = models.resolve(job["model"], Path(job["model_cache"]))
    tokenizer = models.load_tokenizer(model_path)
    model = models.load_model(model_path)
    peft_config = method.peft_config(params) if method.peft_config else None
    if job.get("init_adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, job["init_adapter"], is_trainable=True)
        peft_config = None
    print(f"model {job['model']} loaded from {model_path} (bf16 autocast: {bf16})", flush=True)

    # data: `messages` rows become prompt/completion so TRL can learn the replies only
    rows = [data.to_prompt_completion(r) for r in data.load_rows(Path(job["dataset"]["path"]))]
    heldout = job["dataset"].get("heldout_path")
    if heldout:  # the dataset brings its own held-out rows: every run is measured on the same ones
        train_rows, eval_rows = rows, [data.to_prompt_completion(r) for r in data.load_rows(Path(heldout))]
    else:
        train_rows, eval_rows = data.split(rows, groups["studio"]["eval_fraction"], params.seed)
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    print(f"data: {len(train_rows)} training rows, {len(eval_rows)} held out", flush=True)

    # trainer
    steps_per_epoch = math.ceil(
        len(train_rows) / (params.per_device_train_batch_size * params.gradient_accumulation_steps)
    )
    total_steps = max(1, math.ceil(steps_per_epoch * params.num_train_epochs))
    trainer_args = dict(groups["trainer"])
    trainer_args["eval_steps"] = params.eval_steps or max(1, total_steps // EVALS_PER_RUN)
    patience = groups["studio"]["early_stopping_patience"]
    config = SFTConfig(
        output_dir=str(run_dir / CHECKPOINTS),
        **trainer_args,
        bf16=bf16,
        use_cpu=not hardware.has_cuda(),
        logging_steps=1,
        logging_first_step=True,
        include_num_input_tokens_seen="all",
        eval_strategy="steps" if eval_ds is not None else "no",
        per_device_eval_batch_size=params.per_device_train_batch_size,
        save_strategy="steps",
        save_total_limit=2,
        metric_for_best_model="eval_loss" if patience and eval_ds is not None else None,
        greater_is_better=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    callbacks = [MetricsCallback(events), CancelCallback(events)]
    if patience and eval_ds is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    # MetricsCallback already writes one compact line per log to train.log.
    trainer.remove_callback(PrinterCallback)
    return trainer, tokenizer
