"""Trainer callback that turns the trainer's logs into metrics.jsonl rows and progress."""

from __future__ import annotations

import os
import time

from transformers import TrainerCallback

from pathlib import Path

from pipelines import hardware
from pipelines.events import EVALUATING, RunEvents, seal_checkpoint
from pipelines.rank import any_process, barrier, world_size

# what reaches metrics.jsonl: the training curves, and for preference methods how well the model
# tells the preferred answer from the other (TRL's names; each also as eval_<name> on held-out pairs)
LOGGED = ("loss", "learning_rate", "grad_norm", "mean_token_accuracy", "rewards/margins",
          "rewards/accuracies", "rewards/chosen", "rewards/rejected", "kl", "nll_loss", "log_odds_ratio",
          # reinforcement learning: the weighted reward, its spread, the reply length; a reward model's
          # held-out accuracy
          "reward", "reward_std", "completions/mean_length", "frac_reward_zero_std", "accuracy", "margin",
          # AdaLoRA's orthogonality regulariser, trained on beside the loss (sft_trainer.regularised)
          "orthogonality")
KEYS = (*LOGGED, *(f"eval_{k}" for k in LOGGED))


def logged(key: str) -> bool:
    """Kept in metrics.jsonl: the names above, and GRPO's mean of each reward function."""
    name = key.removeprefix("eval_")
    return key in KEYS or (name.startswith("rewards/") and name.endswith("/mean"))


class MetricsCallback(TrainerCallback):
    def __init__(self, events: RunEvents):
        self.events = events
        self._last = None  # (time, tokens seen) at the previous training log
        self._cpu, self._cpu_since = None, 0.0  # the machine's CPU time (hardware.cpu_sample), and when

    def on_train_begin(self, args, state, control, **kwargs):
        self.events.progress.update(step=state.global_step, max_steps=state.max_steps, phase="training",
                                    training_since=time.time(), first_step=state.global_step)
        self._last = (time.time(), state.num_input_tokens_seen)
        self._cpu, self._cpu_since = hardware.cpu_sample(), time.time()

    def on_step_end(self, args, state, control, **kwargs):
        self.events.progress.update(step=state.global_step, max_steps=state.max_steps)

    def on_prediction_step(self, args, state, control, **kwargs):
        if state.global_step > 0 and self.events.progress.get("phase") == "training":
            self.events.phase(EVALUATING)  # a pause in the steps, said so

    def on_evaluate(self, args, state, control, **kwargs):
        if state.global_step > 0:
            self.events.phase("training")
        # Evaluation time is not training time: restart the tokens/s window after it.
        self._last = (time.time(), self._last[1] if self._last else state.num_input_tokens_seen)
        self._cpu, self._cpu_since = hardware.cpu_sample(), time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        now = time.time()
        # (to 8 places: at 4, early steps of a 30,000-step epoch read 20-33% off, and Compare lined runs up wrong)
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 8), "time": now}
        if "loss" in logs:
            # SFT counts input tokens; the preference trainers log their own running count instead
            tokens = state.num_input_tokens_seen or int(logs.get("num_tokens", 0))
            t0, tok0 = self._last or (now, tokens)
            # a step on a batch counted already (GRPO's later passes over one batch of replies) read 0 tokens/s:
            # its time goes into the next batch's figure instead
            reused = bool(tokens) and tokens == tok0 and state.global_step > 1
            if tokens and not reused:  # ORPO and CPO count none: no curve rather than a flat zero
                record["tokens_per_s"] = round((tokens - tok0) / max(now - t0, 1e-9), 1)
            # how many cores other processes kept busy meanwhile, over half a second at least (a few clock
            # ticks read as noise): a speed measured beside them does not set the estimate of the next
            # runs (studio/method_service.past_runs). Not for a GPU run, nor one of several processes
            # (its siblings are the run).
            if getattr(args.device, "type", "cpu") == "cpu" and world_size() == 1 and now - self._cpu_since >= 0.5:
                cpu = hardware.cpu_sample()
                others = hardware.others_cores(self._cpu, cpu)
                if others is not None:
                    record["others_cores"] = round(others, 2)
                self._cpu, self._cpu_since = cpu, now
            if not reused:
                self._last = (now, tokens)
        for key, value in logs.items():
            if logged(key) and isinstance(value, (int, float)):
                record[key] = float(value)
        if len(record) > 3:
            self.events.metric(record)
            shown = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k not in ("time",))
            print(f"[metrics] {shown}", flush=True)


class ShareTheCpu(TrainerCallback):
    """Trains on the cores other processes leave (a chat answering, a test suite): torch's threads wait
    for each other by spinning, and one on a core another process holds keeps the rest spinning: a DPO
    run beside one spinning process took 286 s, alone 17 s. While a one-process run trains on the CPU:
    at the start (a quarter second's look), then after steps and held-out batches once a second has
    passed, as many threads as the cores others left free once they took more than
    `hardware.SHARED_CORES` (at least one); all again once they stop, and at the end of training.
    The held-out checks before and after training share too (`evaluate_sharing`): beside one spinning
    process, DPO's check before its first step took 28 s against 2 s alone."""

    LOOK_S = 0.25
    WINDOW_S = 1.0  # the least time one look covers: a step's few clock ticks read as noise

    def __init__(self, cores: int | None = None):
        self.cores = cores or hardware.usable_cores()
        self.full = self.threads = None  # (read as training begins)
        self._cpu = self._since = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin(args)

    def begin(self, args) -> None:
        """Watch the CPU from now on (once: a check before training goes on into the training)."""
        import torch

        device = getattr(getattr(args, "device", None), "type", "cpu")
        if self.full is not None or world_size() > 1 or device != "cpu":  # (sibling processes: this run)
            return
        self._cpu, self._since = hardware.cpu_sample(), time.time()
        if self._cpu is None:  # (no /proc to read)
            return
        self.full = self.threads = torch.get_num_threads()
        time.sleep(self.LOOK_S)
        self._adapt(look=True)

    def on_step_end(self, args, state, control, **kwargs):
        self._adapt()

    def on_prediction_step(self, args, state, control, **kwargs):
        self._adapt()

    def on_train_end(self, args, state, control, **kwargs):
        self.end()

    def end(self) -> None:
        import torch

        if self.full is not None and self.threads != self.full:
            torch.set_num_threads(self.full)
        self.full = self.threads = None

    def _adapt(self, look: bool = False) -> None:
        import torch

        if self.full is None or (not look and time.time() - self._since < self.WINDOW_S):
            return
        cpu = hardware.cpu_sample()
        taken = hardware.others_cores(self._cpu, cpu)
        self._cpu, self._since = cpu, time.time()
        if taken is None:
            return
        # the cores others took, once they took more than the studio's own page and server do
        threads = max(1, min(self.full, self.cores - round(taken))) if taken > hardware.SHARED_CORES else self.full
        if threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
            print(f"CPU threads: {threads} of {self.full} (other processes took {taken:.1f} cores)", flush=True)


class CancelCallback(TrainerCallback):
    """Turns a cancel request into: save a checkpoint at the end of this step, then stop. A request
    that arrives during the last step is too late to stop anything: the run finishes and saves its
    result (a "cancelled" run at step N of N would be a finished run without its result)."""

    def __init__(self, events: RunEvents):
        self.events = events

    def on_step_end(self, args, state, control, **kwargs):
        # several processes (pipelines/rank.py) stop together: each may see the request at another step
        if any_process(self.events.cancel_requested()) and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True


class SealCheckpoints(TrainerCallback):
    """After the trainer writes a checkpoint: flush it to the disk and seal it (resume only trusts
    sealed checkpoints, so a save cut short by a kill or a full disk is never resumed from)."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        barrier()  # every process has written its shards before the checkpoint counts as complete
        if state.is_world_process_zero and folder.is_dir():
            seal_checkpoint(folder)


# The metric each choice of `early_stopping_on` reads from a held-out check, per trainer: TRL's reward
# model trainer names its figures its own way.
_WATCHED = {"accuracy": "eval_rewards/accuracies", "margin": "eval_rewards/margins"}
_REWARD_MODEL = {"accuracy": "eval_accuracy", "margin": "eval_margin"}
# how a log line and the runs panel name each metric, and which end of it is best
WATCHED_NAMES = {"eval_loss": "held-out loss", "eval_rewards/accuracies": "share of held-out pairs ranked right",
                 "eval_accuracy": "share of held-out pairs ranked right",
                 "eval_rewards/margins": "held-out reward margin", "eval_margin": "held-out reward margin"}


def best_metric(watch: str | None, trainer_name: str) -> tuple[str, bool]:
    """(metric, higher is better) for a run's `early_stopping_on` ("loss" when the method has none)."""
    if not watch or watch == "loss":
        return "eval_loss", False
    return (_REWARD_MODEL if trainer_name == "reward" else _WATCHED)[watch], True


def watched(metric: str, greater: bool) -> dict:
    """What a summary says about the metric early stopping watched: {"watched": name, "best": lowest|highest}."""
    return {"watched": WATCHED_NAMES.get(metric, metric), "best": "highest" if greater else "lowest"}


def early_stopping(patience: int):
    """Early stopping that ends with the best check's weights: it stops after `patience` checks
    without a better held-out figure (the trainer's EarlyStoppingCallback, on the trainer's
    `metric_for_best_model`: see train_sft.run_settings and best_metric) and has a checkpoint written
    at every check that beats the ones before it, so the result can be that check's weights, not those
    of the `patience` checks after it. The trainer tracks the best step and its checkpoint rotation
    keeps that checkpoint; `restore_best` loads it at the end (the trainer's own
    load_best_model_at_end, which would also demand a checkpoint at every check)."""
    from transformers import EarlyStoppingCallback

    class KeepBest(EarlyStoppingCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            # (not its warning that the best weights are not loaded at the end: restore_best does.) A resumed run
            # goes on counting the checks without improvement where its checkpoint left off: restarted from 0,
            # each resume granted `patience` more checks. (The trainer's own restore of callback states would
            # also restore the saved TrainerControl, whose stop flag a cancel had set.)
            saved = (state.stateful_callbacks or {}).get(type(self).__name__) if state.global_step else None
            if isinstance(saved, dict):
                self.early_stopping_patience_counter = int(
                    saved.get("attributes", {}).get("early_stopping_patience_counter", 0))

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            value = (metrics or {}).get(args.metric_for_best_model)
            # the trainer records this check as the best after this call: state.best_metric is the one before
            if state.global_step > 0 and value is not None and (
                    state.best_metric is None
                    or (value > state.best_metric if args.greater_is_better else value < state.best_metric)):
                control.should_save = True
            super().on_evaluate(args, state, control, metrics=metrics, **kwargs)

    return KeepBest(early_stopping_patience=patience)


def keeps_last(trainer, method) -> str:
    """Why this run ends with its last weights even though a check was better: the method's own
    reason (`Method.keeps_last`), or this run's (a prefix made by a network; weights sharded over
    processes); "" when the best check's weights can be loaded back."""
    if method.keeps_last:
        return method.keeps_last
    configs = getattr(trainer.model, "peft_config", None)
    if isinstance(configs, dict) and any(getattr(c, "prefix_projection", False) for c in configs.values()):
        return ("with its network on, a checkpoint holds the prefix the network made, not the network, which "
                "loading it back would run a second time")
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        return "its weights are sharded over the processes, and loading a check back would need them all"
    return ""


def restore_best(trainer, events: RunEvents, method) -> dict:
    """After a run with early stopping, for its summary: `stopped_early` when a check ended it before its
    last step, and `kept_step` when the weights of an earlier, better check are now back in the model
    (the result is then that check's; `watched` and `best` say by what: "held-out loss", "lowest"),
    else nothing; a method that cannot load a check back keeps its last weights and says why in the log."""
    state, args = trainer.state, trainer.args
    said = watched(args.metric_for_best_model or "eval_loss", args.greater_is_better)
    stopped = bool(state.max_steps and state.global_step < state.max_steps)
    out = {"stopped_early": True, "watched": said["watched"]} if stopped else {}
    best = state.best_model_checkpoint
    if not best or not Path(best).is_dir() or state.best_global_step in (None, 0, state.global_step):
        return out
    why = keeps_last(trainer, method)
    if why:
        print(f"early stopping: the result is the weights of the last step, {state.global_step}, not those of "
              f"step {state.best_global_step} with the {said['best']} {said['watched']}: for {method.label}, {why}",
              flush=True)
        return out
    events.phase("loading the weights of the best check")
    trainer._load_best_model()  # the trainer's own load_best_model_at_end step (adapter or whole model)
    print(f"early stopping: the result is the weights of step {state.best_global_step}, its {said['best']} "
          f"{said['watched']} {state.best_metric:.4f} (training went on to step {state.global_step})", flush=True)
    return {**out, "kept_step": state.best_global_step, **said}


def run_loss(trainer, result) -> float:
    """The training loss averaged over every step of the run, for its summary. The trainer's own figure
    covers the steps of this call only: a resumed run's summary gave the resumed part's mean, and 0.0 when
    it was resumed from its last step's checkpoint (no step left to train). The steps before the resume
    are read from the checkpoint's log history, which has a `loss` line per logged stretch of steps."""
    start = getattr(trainer, "_initial_global_step", 0) or 0
    done = trainer.state.global_step - start
    total = covered = last = 0
    for entry in trainer.state.log_history:  # (a loss line covers the steps since the one before it)
        if "loss" in entry and last < entry.get("step", 0) <= start:
            total += entry["loss"] * (entry["step"] - last)
            covered, last = covered + entry["step"] - last, entry["step"]
    if not covered:
        return result.training_loss
    return (total + result.training_loss * done) / (covered + done)


BEFORE = "measuring the model before training"


def evaluate_sharing(trainer, training_follows: bool = False) -> dict:
    """trainer.evaluate() on the cores other processes leave (ShareTheCpu, when the trainer has it). A check
    before training keeps the threads it set for the training that follows; one after gives them back."""
    share = next((c for c in trainer.callback_handler.callbacks if isinstance(c, ShareTheCpu)), None)
    if share is not None:
        share.begin(trainer.args)
    try:
        return trainer.evaluate()
    finally:
        if share is not None and not training_follows:
            share.end()


def measure_before(trainer, events: RunEvents) -> None:
    """The held-out baseline before the first step. FSDP2 and DeepSpeed wrap the model together with its
    optimizer, which happens when training starts: there it is measured at that moment instead."""
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        trainer.add_callback(_EvaluateFirst(trainer, events))
        return
    events.phase(BEFORE)
    evaluate_sharing(trainer, training_follows=True)


class _EvaluateFirst(TrainerCallback):
    def __init__(self, trainer, events: RunEvents):
        self.trainer, self.events = trainer, events

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.events.phase(BEFORE)
            self.trainer.evaluate()
            self.events.phase("training")
