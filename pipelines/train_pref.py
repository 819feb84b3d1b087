"""Preference tuning: config -> model -> method -> data -> trainer -> train -> save.

DPO and KTO (TRL's `DPOTrainer`, `KTOTrainer`) compare against the starting model; ORPO, SimPO
and CPO (`trl.experimental`) need no reference. Where the run starts:
- from the base: a fresh LoRA adapter, handed to TRL as a `peft_config`; the reference is the same
  weights with the adapter switched off (no second copy of the model);
- from a finished run's adapter: that adapter keeps training, and TRL keeps a frozen copy of it
  (a second small adapter named "ref" on the same base weights) as the reference (`copy_reference`
  fills it for the adapter types TRL's copy misses);
- from a finished full/freeze run: its model folder is the base, as from the base;
- full-weight DPO (`dpo_full`): every weight trains and a frozen copy of the starting model is
  the reference.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from pipelines import data, evals, hardware, models
from pipelines.events import ADAPTER, MODEL, RunEvents, read_metrics, resume_checkpoint
from pipelines.methods import Setup, get_method, parse, split_by_target
from pipelines.methods.trainers import trl_classes
from pipelines.rank import is_main, save_gathered, world_size
from pipelines.train_sft import run_settings

# what the summary reports from the last held-out evaluation, when the method logs it
SUMMARY_EVALS = ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins")


def train(job: dict, run_dir: Path, events: RunEvents) -> dict:
    events.phase("loading the model and the data")
    trainer, tokenizer = build_trainer(job, run_dir, events)

    checkpoint = resume_checkpoint(job, run_dir)
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
        summary.update({f"{k}_before": checks[0][k] for k in SUMMARY_EVALS if k in checks[0]})
    if events.stopped_by_cancel(trainer.state):
        summary["cancelled"] = True
        return summary
    if trainer.eval_dataset is not None:
        from pipelines.callbacks import evaluate_sharing, restore_best

        summary["eval_rows"] = len(trainer.eval_dataset)  # how far its accuracy can be trusted
        checks = [m for m in read_metrics(run_dir) if "eval_loss" in m]
        summary.update(restore_best(trainer, events, get_method(job["method"])))
        kept = summary.get("kept_step")
        if kept is not None:  # early stopping: the result is its best check, measured there
            final = next((m for m in reversed(checks) if m["step"] == kept), None) or evaluate_sharing(trainer)
        else:
            events.phase("measuring the model after training")
            if checks and checks[-1]["step"] == trainer.state.global_step:  # the last step was just checked
                final = checks[-1]
            else:
                final = evaluate_sharing(trainer)
        summary.update({f"{k}_after": final[k] for k in SUMMARY_EVALS if k in final})
    events.phase("saving the result")
    save(trainer, tokenizer, run_dir)
    return summary


def save(trainer, tokenizer, run_dir: Path) -> Path:
    """The adapter (only the trained one, not TRL's frozen 'ref' copy) or the whole model."""
    from peft import PeftModel

    model = trainer.accelerator.unwrap_model(trainer.model)
    out = run_dir / (ADAPTER if isinstance(model, PeftModel) else MODEL)
    options = {"selected_adapters": ["default"]} if isinstance(model, PeftModel) else {}
    if save_gathered(trainer, out, **options) or not is_main():  # several processes: the main one writes
        if is_main():
            tokenizer.save_pretrained(str(out))
        return out
    if isinstance(model, PeftModel):
        model.save_pretrained(str(out), selected_adapters=["default"])
    else:
        out = run_dir / MODEL
        model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


def rows_for(method, rows: list[dict]) -> list[dict]:
    """Stored rows as TRL reads them: an implicit prompt (inside chosen/rejected) left for TRL to
    extract, KTO labels as booleans."""
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if v is not None}
        if method.data_kind == "kto":
            row["label"] = bool(row["label"])
        out.append(row)
    return out


def load_policy(method, params, model_path: str, init_adapter: str | None):
    """(model, peft_config for TRL or None): what trains, ready for the trainer."""
    from peft import PeftModel

    from pipelines.methods.native import register

    register()  # a parent may have trained one of the studio's own adapter types
    model = models.load_model(model_path)
    if method.trainable is not None:  # full weights: a parent's adapter is folded in first
        if init_adapter:
            model = PeftModel.from_pretrained(model, init_adapter).merge_and_unload()
        method.trainable(model, params)
        return model, None
    if init_adapter:  # keep training the parent's adapter; TRL copies it as the frozen reference
        return PeftModel.from_pretrained(model, init_adapter, is_trainable=True), None
    return model, method.peft_config(params, Setup(model_path=model_path))


def watched_metric(method, studio: dict, eval_rows: list[dict], batch: int) -> tuple[str, bool]:
    """The held-out figure early stopping watches (callbacks.best_metric). TRL measures KTO's reward
    margin on a batch holding replies of both marks (`batch`: the held-out batch size): with one mark
    only, or one reply a batch, it is never measured, and the loss is watched instead, as the log says."""
    from pipelines.callbacks import best_metric

    watch = studio.get("early_stopping_on") or "loss"
    marks = {bool(r.get("label")) for r in eval_rows}
    if watch == "margin" and method.data_kind == "kto" and (len(marks) < 2 or batch < 2):
        why = (f"every held-out reply is marked {'good' if True in marks else 'bad'}" if len(marks) < 2
               else "a batch of one reply never holds both marks")
        print(f"early stopping watches the held-out loss, not the reward margin: {why}, and a margin needs "
              "replies of both marks", flush=True)
        watch = "loss"
    return best_metric(watch, method.trl)


def build_trainer(job: dict, run_dir: Path, events: RunEvents):
    from datasets import Dataset
    from transformers import PrinterCallback

    from pipelines.callbacks import CancelCallback, MetricsCallback, SealCheckpoints, ShareTheCpu, early_stopping

    # config
    method = get_method(job["method"])
    params = parse(method.params, job["params"])
    groups = split_by_target(params)
    config_cls, trainer_cls = trl_classes(method.trl)

    # data
    rows = rows_for(method, data.load_rows(Path(job["dataset"]["path"])))
    heldout = job["dataset"].get("heldout_path")
    if heldout:
        train_rows, eval_rows = rows, rows_for(method, data.load_rows(Path(heldout)))
    else:
        train_rows, eval_rows = data.run_split(rows, groups["studio"]["eval_fraction"], params.seed, method.data_kind,
                                               run_dir)
    if method.data_kind == "kto":
        # TRL's KTO reads rows in order and builds its KL batches from neighbours: a file with all
        # thumbs up first would give one-sided batches
        import random

        train_rows = list(train_rows)
        random.Random(params.seed).shuffle(train_rows)
        eval_rows = data.interleave_marks(eval_rows)
    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    print(f"data: {len(train_rows)} training rows, {len(eval_rows)} held out", flush=True)
    steps_per_epoch = math.ceil(len(train_rows) / (params.per_device_train_batch_size
                                                   * params.gradient_accumulation_steps * world_size()))
    total_steps = max(1, math.ceil(steps_per_epoch * params.num_train_epochs))

    # model: what trains, and where the reference comes from
    model_path = models.resolve(job["model"], Path(job["model_cache"]))
    tokenizer = models.load_tokenizer(model_path)
    model, peft_config = load_policy(method, params, model_path, job.get("init_adapter"))
    ref_model = None
    if method.reference and peft_config is None and method.trainable is not None:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)  # full weights: a frozen copy
    start = (f"the adapter of {job['parent_id']} keeps training with its own rank and layers"
             if job.get("init_adapter") else "a new adapter")
    print(f"model {job['model']} loaded from {model_path}; method {method.label} "
          f"({'full weights' if method.trainable else start}; bf16 autocast: {hardware.use_bf16()})", flush=True)

    # trainer
    trainer_args = {**groups["trainer"], **method.fixed}
    if groups["studio"].get("sft_weight"):  # DPO + learning the chosen answers (RPO): TRL's loss list
        trainer_args.update(loss_type=[trainer_args["loss_type"], "sft"],
                            loss_weights=[1.0, groups["studio"]["sft_weight"]])
    trainer_args["eval_steps"] = evals.every(total_steps, params.eval_steps, evals.PER_RUN["preference"])
    if method.trl in ("orpo", "cpo"):  # their pair collator needs the raw columns; TRL turned it off itself,
        trainer_args["remove_unused_columns"] = False  # with a warning in the run's log people read
    patience = groups["studio"]["early_stopping_patience"]
    best = (watched_metric(method, groups["studio"], eval_rows, params.per_device_train_batch_size)
            if patience and eval_rows else ("eval_loss", False))
    config = config_cls(**trainer_args, **run_settings(run_dir, params, eval_ds is not None, patience, best))
    callbacks = [MetricsCallback(events), CancelCallback(events), SealCheckpoints(), ShareTheCpu()]
    if patience and eval_ds is not None:
        callbacks.append(early_stopping(patience))
    kwargs = {"ref_model": ref_model} if method.reference else {}
    trainer = trainer_cls(
        model=model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=peft_config,
        **kwargs,
    )
    trainer.remove_callback(PrinterCallback)
    if method.reference and job.get("init_adapter") and peft_config is None and method.trainable is None:
        copy_reference(trainer.model)
    return trainer, tokenizer


def copy_reference(model) -> int:
    """The parent adapter's weights into TRL's frozen "ref" adapter, for every adapter type (the count
    copied). TRL copies only parameters named `.default.` (LoRA's `lora_A.default.weight`); IA3, LoHa,
    LoKr and VeRA keep theirs in a ParameterDict (`ia3_l.default`), so their reference kept its fresh
    start, which is the base model: DPO then counted the whole SFT change as preference."""
    import re

    params = dict(model.named_parameters())
    copied = 0
    for name, param in params.items():
        ref = params.get(re.sub(r"\.default(?=\.|$)", ".ref", name))
        if ref is not None and ref is not param and ref.shape == param.shape:
            ref.data.copy_(param.data)
            copied += 1
    return copied
