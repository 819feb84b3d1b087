"""Supervised fine-tuning: config -> model -> data -> trainer -> train -> save."""

from __future__ import annotations

import math
from pathlib import Path

from pipelines import data, hardware, models
from pipelines.events import ADAPTER, RunEvents
from pipelines.methods import get_method, parse, split_by_target


def train(job: dict, run_dir: Path, events: RunEvents) -> dict:
    trainer, tokenizer = build_trainer(job, run_dir, events)

    # train (held-out loss before the first step is the baseline the curve is read against)
    summary = {"train_rows": len(trainer.train_dataset)}
    if trainer.eval_dataset is not None:
        summary["eval_loss_before"] = trainer.evaluate()["eval_loss"]
    result = trainer.train()
    summary["train_loss"] = result.training_loss
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
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from pipelines.callbacks import MetricsCallback

    # config
    method = get_method(job["method"])
    params = parse(method.params, job["params"])
    groups = split_by_target(params)
    bf16 = hardware.use_bf16()

    # model
    model_path = models.resolve(job["model"], Path(job["model_cache"]))
    tokenizer = models.load_tokenizer(model_path)
    model = models.load_model(model_path)
    print(f"model {job['model']} loaded from {model_path} (bf16 autocast: {bf16})", flush=True)

    # data: `messages` rows become prompt/completion so TRL can learn the replies only
    rows = [data.to_prompt_completion(r) for r in data.load_rows(Path(job["dataset"]["path"]))]
    train_rows, eval_rows = data.split(rows, groups["studio"]["eval_fraction"], params.seed)
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    print(f"data: {len(train_rows)} training rows, {len(eval_rows)} held out", flush=True)

    # trainer
    steps_per_epoch = math.ceil(
        len(train_rows) / (params.per_device_train_batch_size * params.gradient_accumulation_steps)
    )
    total_steps = max(1, math.ceil(steps_per_epoch * params.num_train_epochs))
    config = SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        **groups["trainer"],
        bf16=bf16,
        use_cpu=not hardware.has_cuda(),
        logging_steps=1,
        logging_first_step=True,
        include_num_input_tokens_seen="all",
        eval_strategy="steps" if eval_ds is not None else "no",
        eval_steps=max(1, total_steps // 5),
        per_device_eval_batch_size=params.per_device_train_batch_size,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=method.peft_config(params) if method.peft_config else None,
        callbacks=[MetricsCallback(events)],
    )
    # MetricsCallback already writes one compact line per log to train.log.
    trainer.remove_callback(PrinterCallback)

    return trainer, tokenizer
