"""Supervised fine-tuning: config -> model -> method -> data -> trainer -> train -> save."""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipelines import conversation, data, evals, hardware, models
from pipelines.events import (
    ADAPTER,
    CHECKPOINTS,
    INITIAL_ADAPTER,
    MODEL,
    RunEvents,
    read_metrics,
    resume_checkpoint,
)
from pipelines.methods import Setup, adapted, get_method, parse, split_by_target
from pipelines.rank import is_main, save_gathered, world_size



def train(job: dict, run_dir: Path, events: RunEvents) -> dict:
    events.phase("loading the model and the data")
    trainer, tokenizer = build_trainer(job, run_dir, events)

    # resume: continue from the newest complete checkpoint; the curve continues from its step
    checkpoint = resume_checkpoint(job, run_dir)  # None: a new run, or no checkpoint yet (start over)
    if checkpoint is None:
        if trainer.eval_dataset is not None:
            # held-out loss (preference accuracy) before the first step: the baseline the curve is read against
            from pipelines.callbacks import measure_before

            measure_before(trainer, events)

    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    from pipelines.callbacks import run_loss

    summary = {"train_rows": len(trainer.train_dataset), "train_loss": run_loss(trainer, result),
               "steps": trainer.state.global_step}
    checks = [m for m in read_metrics(run_dir) if "eval_loss" in m]
    if checks:
        summary["eval_loss_before"] = checks[0]["eval_loss"]
    if events.stopped_by_cancel(trainer.state):
        summary["cancelled"] = True  # the cancel callback saved a checkpoint to resume from
        return summary
    from pipelines.callbacks import evaluate_sharing, restore_best

    summary.update(restore_best(trainer, events, get_method(job["method"])))
    if "kept_step" in summary:  # early stopping: the result is its best check, measured there
        summary["eval_loss_after"] = trainer.state.best_metric
    elif trainer.eval_dataset is not None:
        events.phase("measuring the model after training")
        if checks and checks[-1]["step"] == trainer.state.global_step:  # the last step was just checked
            summary["eval_loss_after"] = checks[-1]["eval_loss"]
        else:
            summary["eval_loss_after"] = evaluate_sharing(trainer)["eval_loss"]

    events.phase("saving the result")
    save(trainer, tokenizer, run_dir, job["method"])
    return summary


def save(trainer, tokenizer, run_dir: Path, method_key: str) -> Path:
    """The run's result: a PEFT adapter folder that `PeftModel.from_pretrained` loads on the
    untouched base outside the studio, or (full/freeze tuning) a whole model folder."""
    method = get_method(method_key)
    out = run_dir / (ADAPTER if method.artifact == "adapter" else MODEL)
    initial = run_dir / INITIAL_ADAPTER
    if save_gathered(trainer, out) or not is_main():  # several processes: the main one writes
        if is_main():
            tokenizer.save_pretrained(str(out))
        return out
    if method.save_result:  # DyLoRA's cut to the rank to save, Delta-LoRA's whole model
        method.save_result(trainer.model, out, trainer.studio_params)
    elif method.converts_base and initial.exists():
        # PiSSA/OLoRA changed the base weights at the start; PEFT rewrites the adapter as a
        # (double-rank) change of the original weights, so it loads on the plain base.
        trainer.model.save_pretrained(str(out), path_initial_model_for_weight_conversion=str(initial))
    else:
        trainer.model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def load_base(method, params, model_path: str):
    """The base model as the method needs it: 4-bit for QLoRA, full precision otherwise."""
    # QLoRA quantizes the loaded weights, PiSSA and OLoRA put new base weights in their place.
    # Memory-mapped, the file's pages they read stayed resident beside what replaced them: peaks 0.4
    # (PiSSA) and 0.5 GB (QLoRA) above LoRA's on the default model. Read into memory instead, each
    # replaced weight is freed (bench/methods.py).
    if not method.quantized:
        return models.load_model(model_path, **({"disable_mmap": True} if method.converts_base else {}))
    import torch
    from peft import prepare_model_for_kbit_training

    from pipelines.methods.qlora import quantization_config

    compute = torch.bfloat16 if hardware.use_bf16() else torch.float32
    model = models.load_model(model_path, dtype=compute, quantization_config=quantization_config(params, compute),
                              disable_mmap=True)
    # k-bit preparation: norms and the head in fp32 for stable training, input gradients on
    # so gradient checkpointing can work through the frozen 4-bit layers.
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=params.gradient_checkpointing)


def apply_method(model, method, params, setup: Setup, run_dir: Path, init_adapter: str | None):
    """Wrap or unfreeze the model the way the method trains it."""
    from peft import PeftModel
    from transformers import set_seed

    if init_adapter:  # a continued run starts from its parent's adapter, still trainable
        from pipelines.methods.native import register

        register()
        return PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    if method.peft_config is None:
        method.trainable(model, params)
        return model
    set_seed(params.seed)  # same adapter start (and same PiSSA sketch) on resume
    config = method.peft_config(params, setup)
    model = adapted(model, config)
    if method.initialize:
        method.initialize(model, params, setup)
    if method.converts_base:
        # keep the step-0 adapter (marked as a plain LoRA start) to convert the result later
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(str(run_dir / INITIAL_ADAPTER))
        model.peft_config["default"].init_lora_weights = config.init_lora_weights
    return model


def continue_warmup() -> float:
    """The share of a run's steps its learning rate climbs over when the run keeps training a trained model
    (Continue training, or a run started from a run's result): a fresh Adam's first step moves every weight
    by about the full learning rate whatever its gradient, which knocked a trained adapter off what it had
    learned (bench/continue_quality.py). STUDIO_CONTINUE_WARMUP=0 turns it off."""
    return float(os.environ.get("STUDIO_CONTINUE_WARMUP", "0.1"))


def run_settings(run_dir: Path, params, evaluates: bool, patience: int,
                 best: tuple[str, bool] = ("eval_loss", False), continues: bool = False) -> dict:
    """Trainer settings every studio run shares, whatever its TRL trainer: checkpoints in the run
    directory, a log line per step for the live curves, held-out checks, this machine's device.
    `best`: the held-out figure early stopping watches, and whether higher is better (callbacks.best_metric);
    `continues`: the run keeps training a trained model (`continue_warmup`)."""
    return dict(
        warmup_steps=continue_warmup() if continues else 0,
        output_dir=str(run_dir / CHECKPOINTS),
        bf16=hardware.use_bf16(),
        use_cpu=not hardware.has_cuda(),
        logging_steps=1,
        logging_first_step=True,
        eval_strategy="steps" if evaluates else "no",
        per_device_eval_batch_size=params.per_device_train_batch_size,
        save_strategy="steps",
        save_total_limit=2,
        metric_for_best_model=best[0] if patience and evaluates else None,
        greater_is_better=best[1],
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def build_trainer(job: dict, run_dir: Path, events: RunEvents):
    """Everything up to the first training step: (trainer, tokenizer)."""
    from transformers import PrinterCallback
    from trl import SFTConfig

    from pipelines import packing
    from pipelines.callbacks import CancelCallback, MetricsCallback, SealCheckpoints, ShareTheCpu, early_stopping
    from pipelines.methods.qlora import resolve_optim
    from pipelines.sft_trainer import StudioSFTTrainer

    # config
    method = get_method(job["method"])
    params = parse(method.params, job["params"])
    groups = split_by_target(params)
    bf16 = hardware.use_bf16()

    # data: `messages` rows become prompt/completion so TRL can learn the replies only, or, where a
    # conversation has several replies, tokens with every reply marked to learn (pipelines/conversation.py);
    # read as Arrow datasets (memory-mapped), never one Python list; a dataset's own held-out rows measure
    # every run
    model_path = models.resolve(job["model"], Path(job["model_cache"]))
    tokenizer = models.load_tokenizer(model_path)
    sample = data.multi_reply(job["dataset"])
    every_reply = sample is not None and conversation.keeps_prefixes(tokenizer, sample)
    if sample is not None and not every_reply:
        print("data: conversations of several replies: only the last reply of each is learned, as this model's "
              "chat template writes a reply otherwise when more turns follow (Qwen3's think block, Mistral's "
              "system text), or its tokenizer places no token in the text", flush=True)
    convert = conversation.tokenized(tokenizer) if every_reply else data.to_prompt_completion
    train_ds, eval_ds = data.training_datasets(job["dataset"], groups["studio"]["eval_fraction"], params.seed,
                                               convert=convert, run_dir=run_dir)
    if every_reply:
        train_ds = conversation.learned(train_ds)
        eval_ds = None if eval_ds is None else conversation.held_out(eval_ds)
        print("data: conversations of several replies: every reply is learned, the turns before each its context; "
              "a held-out conversation is measured on its last reply", flush=True)
    print(f"data: {len(train_ds)} training rows, {len(eval_ds) if eval_ds else 0} held out", flush=True)
    steps_per_epoch = math.ceil(  # several processes each take a batch per step
        len(train_ds) / (params.per_device_train_batch_size * params.gradient_accumulation_steps * world_size())
    )
    total_steps = max(1, math.ceil(steps_per_epoch * params.num_train_epochs))

    # model, then the method's adapter or choice of trainable weights
    model = load_base(method, params, model_path)
    model = apply_method(model, method, params, Setup(model_path=model_path, total_steps=total_steps),
                         run_dir, job.get("init_adapter"))
    print(f"model {job['model']} loaded from {model_path} (bf16 autocast: {bf16}); method {method.label}",
          flush=True)
    optimizer = method.optimizer(model, params) if method.optimizer else None
    # padding-free batches wherever the method allows (pipelines/packing.py)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    packed = method.padding_free and packing.model_supports(base.config)
    if packed:  # (where a model cannot switch: padded batches)
        packed = packing.switch(base)

    # trainer
    trainer_args = {**groups["trainer"], **method.fixed}
    if groups["optim_args"]:  # a low-rank optimizer's settings (GaLore, APOLLO)
        from pipelines.methods.lowrank_optim import optim_args

        trainer_args["optim_args"] = optim_args(groups["optim_args"])
    trainer_args["eval_steps"] = evals.every(total_steps, params.eval_steps, evals.PER_RUN["sft"])
    if "optim" in trainer_args:
        trainer_args["optim"] = resolve_optim(trainer_args["optim"], hardware.has_cuda())
    patience = groups["studio"]["early_stopping_patience"]
    continues = bool(job.get("parent_id"))  # a run's result keeps training (its adapter, or its whole model)
    if continues and continue_warmup():
        print(f"learning rate: climbs over the first {continue_warmup():.0%} of steps, as this run keeps training "
              f"{job['parent_id']}'s result", flush=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer_cls = method.sft_trainer() if method.sft_trainer else StudioSFTTrainer

    def make(evaluated):
        config = SFTConfig(**trainer_args, **run_settings(run_dir, params, evaluated is not None, patience,
                                                          continues=continues),
                           # tokens/s counts real tokens: a padding-free batch has none other
                           include_num_input_tokens_seen="all" if packed else "non_padding")
        callbacks = [MetricsCallback(events), CancelCallback(events), ShareTheCpu()]
        if method.callbacks:  # before the seal: what a method adds to a checkpoint is in it when it is sealed
            callbacks += method.callbacks(model, params)
        callbacks.append(SealCheckpoints())
        if patience and evaluated is not None:
            callbacks.append(early_stopping(patience))
        return trainer_cls(packed=packed, data_collator=packing.collator(pad_id) if packed else None, model=model,
                           args=config, train_dataset=train_ds, eval_dataset=evaluated, processing_class=tokenizer,
                           callbacks=callbacks, optimizers=(optimizer, None))

    trainer = make(eval_ds)
    # TRL leaves out a row with no answer token within the max length (a prompt as long as it): said, and a
    # held-out set left empty means no checks (its figure missing failed the run after its last step, and
    # every resume again)
    kept, kept_eval = len(trainer.train_dataset), len(trainer.eval_dataset) if eval_ds is not None else 0
    dropped, dropped_eval = len(train_ds) - kept, (len(eval_ds) - kept_eval) if eval_ds is not None else 0
    if dropped or dropped_eval:
        print(f"data: {dropped} training and {dropped_eval} held-out rows left out, no answer token of theirs "
              f"within the max length of {params.max_length} tokens; {kept} training rows, {kept_eval} held out",
              flush=True)
    if not kept:
        from pipelines.errors import DataError

        raise DataError(f"every training row was left out: none has an answer token within the max length of "
                        f"{params.max_length} tokens (the prompts fill it); raise the max length")
    if eval_ds is not None and not kept_eval:
        print("data: no held-out row is left, so the run trains without held-out checks", flush=True)
        trainer = make(None)
    trainer.studio_params = params  # what a method's own save needs (DyLoRA's rank to save)
    if method.zeroth_order:
        trainer.zo_eps = groups["studio"]["zo_eps"]
    # MetricsCallback already writes one compact line per log to train.log.
    trainer.remove_callback(PrinterCallback)
    return trainer, tokenizer
