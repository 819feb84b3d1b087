"""RLHF with PPO: config -> rewards -> model -> data -> loop of PPO steps -> save.

TRL 1.x ships no PPOTrainer, so the loop is the studio's own and the math is in pipelines/ppo.py
(the PPO paper and "The N+ implementation details of RLHF with PPO"). The policy is a LoRA adapter;
its reference for the KL leash is the same weights with the adapter switched off (or, when a finished
run's adapter keeps training, a frozen copy of the starting weights). A value head on the policy's
last hidden state learns to predict the score. The reward is the run's reward functions (weighted,
as for GRPO), usually a studio reward model.

Each step: the next `per_device_train_batch_size` prompts (shuffled once per epoch) get one reply
each, which are scored and learned from (`ppo_epochs` passes). Checkpoints (adapter, value head,
optimizer, step) are written every `save_steps` and on cancel; a resumed run continues from the
newest one.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from pipelines import data, events as ev, hardware, models, ppo, rewards
from pipelines.events import ADAPTER, CHECKPOINTS, RunEvents, resume_checkpoint, seal_checkpoint
from pipelines.methods import get_method, parse
from pipelines.train_pref import load_policy
from pipelines.train_rl import SAMPLES_SHOWN, reward_model_scorer

VALUE_HEAD = "value_head.pt"
STATE = "ppo_state.pt"  # optimizer, step and random states: what a resumed run needs besides the weights


def batch_rows(step: int, batch: int, n: int, seed: int) -> list[int]:
    """The rows of PPO step `step`: each epoch a shuffle of its own (seeded by the epoch), read in order, a batch
    that crosses into the next epoch taking its first rows from that epoch's shuffle (it took them from the
    current one again: those rows twice, and the next epoch's first ones never)."""
    out = []
    for i in range(step * batch, (step + 1) * batch):
        epoch, place = divmod(i, n)
        order = list(range(n))
        random.Random(seed + epoch).shuffle(order)
        out.append(order[place])
    return out


def ppo_steps(n: int, batch: int, epochs: float) -> int:
    """Steps that read each of n prompts `epochs` times: a batch runs on into the next epoch's rows (batch_rows), so
    a last part-batch is no step of its own (10 prompts, batches of 4, 2 epochs: 5 steps, not 3 an epoch twice,
    which read 2.4 epochs)."""
    return max(1, math.ceil(round(n * float(epochs) / batch, 9)))  # (10 * 0.3 / 3 is 1.0000000000000002)


def train(job: dict, run_dir: Path, events: RunEvents) -> dict:
    import torch

    events.phase("loading the model and the data")
    # config
    method = get_method(job["method"])
    params = parse(method.params, job["params"])
    settings = ppo.PPOSettings(kl_coef=params.kl_coef, cliprange=params.cliprange, vf_coef=params.vf_coef,
                               ppo_epochs=params.ppo_epochs, temperature=params.temperature,
                               max_new_tokens=params.max_completion_length)
    entries = rewards.parse_list(job.get("rewards"))
    funcs, weights = rewards.trl_functions(entries, scorer=reward_model_scorer(run_dir.parent, job))
    print("rewards: " + "; ".join(rewards.describe_entry(e) for e in entries), flush=True)

    # data
    rows = data.load_rows(Path(job["dataset"]["path"]))
    rewards.check_rows(entries, rows, job["dataset"]["name"])
    batch = params.per_device_train_batch_size
    total = ppo_steps(len(rows), batch, params.num_train_epochs)
    print(f"data: {len(rows)} prompts, {batch} per step, {total} steps", flush=True)

    # model: the policy (LoRA adapter), its reference, and the value head
    torch.manual_seed(params.seed)
    model_path = models.resolve(job["model"], Path(job["model_cache"]))
    tokenizer = models.load_tokenizer(model_path)
    model, peft_config = load_policy(method, params, model_path, job.get("init_adapter"))
    ref_model = None
    if peft_config is not None:
        from peft import get_peft_model

        policy = get_peft_model(model, peft_config)
    else:  # a finished run's adapter keeps training: the reference is a frozen copy of where it starts
        import copy

        policy = model
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    value_head = ppo.ValueHead(policy.config.get_text_config().hidden_size)
    # on the GPU where there is one: the loaders leave the model on the CPU, and the loop works where the
    # policy is (every PPO run went through generation, reference and updates on the CPU beside a GPU)
    device = torch.device("cuda" if hardware.has_cuda() else "cpu")
    policy.to(device)
    value_head.to(device)
    if ref_model is not None:
        ref_model.to(device)
    trainable = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
    # no weight decay, as TRL's PPO trainer had (torch's AdamW decays by 0.01: the adapter and the head shrank)
    optimizer = torch.optim.AdamW(trainable, lr=params.learning_rate, weight_decay=0.0)
    print(f"model {job['model']} loaded from {model_path}; method {method.label} (LoRA adapter, value head; "
          f"bf16 autocast: {hardware.use_bf16()}; on {device.type})", flush=True)

    start = 0
    checkpoint = resume_checkpoint(job, run_dir)  # metrics after it are dropped: those steps are redone
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, policy, value_head, optimizer, device)

    # the loop
    events.progress.update(step=start, max_steps=total, phase="training", training_since=time.time(),
                           first_step=start)
    lr_at = lambda step: params.learning_rate * (1 - step / total)  # noqa: E731  linear decay, as TRL's trainers
    for step in range(start, total):
        chosen = [rows[i] for i in batch_rows(step, batch, len(rows), params.seed)]
        parts: dict[str, list[float]] = {}

        def score(prompts, replies, chosen=chosen):
            completions = [[{"role": "assistant", "content": r}] for r in replies]
            columns = {k: [row.get(k) for row in chosen] for k in ("answer", "tests")}
            total_scores = [0.0] * len(replies)
            for func, weight in zip(funcs, weights):
                values = func(prompts=prompts, completions=completions, **columns)
                parts[func.__name__] = values
                total_scores = [t + weight * v for t, v in zip(total_scores, values)]
            return total_scores

        for group in optimizer.param_groups:  # (and no decay: a checkpoint from before kept AdamW's 0.01)
            group.update(lr=lr_at(step), weight_decay=0.0)
        with hardware.autocast():
            metrics, samples = ppo.ppo_step(policy, value_head, tokenizer, optimizer, [r["prompt"] for r in chosen],
                                            score, settings, ref_model=ref_model)
        record = {"step": step + 1, "epoch": round((step + 1) * batch / len(rows), 8), "time": time.time(),
                  "learning_rate": lr_at(step), **metrics,
                  **{f"rewards/{name}/mean": sum(v) / len(v) for name, v in parts.items()}}
        events.metric(record)
        print("[metrics] " + " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "time"), flush=True)
        for sample, i in zip(samples, range(len(samples))):
            sample["rewards"] = {name: values[i] for name, values in parts.items()}
        ev.write_json(run_dir / ev.SAMPLES, {"step": step + 1, "samples": samples[-SAMPLES_SHOWN:]})
        events.progress.update(step=step + 1)
        if events.cancel_requested() and step + 1 < total:  # one during the last step stops nothing
            save_checkpoint(run_dir, step + 1, policy, value_head, optimizer)
            return {"cancelled": True, "steps": step + 1}
        if (step + 1) % params.save_steps == 0 and step + 1 < total:
            save_checkpoint(run_dir, step + 1, policy, value_head, optimizer)

    scored = [m["reward"] for m in ev.read_metrics(run_dir) if "reward" in m]
    k = max(1, min(5, len(scored) // 4))
    summary = {"train_rows": len(rows), "steps": total, "reward_first": sum(scored[:k]) / k,
               "reward_last": sum(scored[-k:]) / k, "reward_steps": k}
    events.phase("saving the result")
    out = run_dir / ADAPTER
    policy.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    torch.save(value_head.state_dict(), run_dir / VALUE_HEAD)
    return summary


def save_checkpoint(run_dir: Path, step: int, policy, value_head, optimizer) -> None:
    """Adapter, value head, optimizer and step, written under a temporary name and renamed when
    complete (a crash mid-save leaves the previous checkpoint as the newest)."""
    import shutil

    import torch

    folder = run_dir / CHECKPOINTS / f"checkpoint-{step}"
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(str(tmp))
    torch.save(value_head.state_dict(), tmp / VALUE_HEAD)
    torch.save({"optimizer": optimizer.state_dict(), "step": step, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, tmp / STATE)
    (tmp / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    seal_checkpoint(tmp)  # flushed and marked complete before it takes its name
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    for old in sorted((run_dir / CHECKPOINTS).glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))[:-2]:
        shutil.rmtree(old, ignore_errors=True)  # keep the newest two, as the other runners do


def load_checkpoint(folder: Path, policy, value_head, optimizer, device=None) -> int:
    """The step a checkpoint ends at, its weights and optimizer loaded onto `device` (where the run works
    now: a run saved on a GPU machine resumes on one without)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    device = device or torch.device("cpu")
    set_peft_model_state_dict(policy, load_file(str(folder / "adapter_model.safetensors"), device=str(device)))
    value_head.load_state_dict(torch.load(folder / VALUE_HEAD, map_location=device))
    state = torch.load(folder / STATE, weights_only=False, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])  # (its moments follow the parameters' device)
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        except (RuntimeError, IndexError):  # saved with another number of GPUs: the sampling differs, nothing else
            pass
    return int(state["step"])


