"""PPO against a reward model (RLHF), written here because TRL 1.x no longer ships a PPOTrainer.

One call of `ppo_step` is one PPO iteration: sample replies to a batch of prompts, score them, turn the
scores into per-token rewards, estimate advantages, and take a few clipped gradient steps. The runner
(pipelines/train_rl.py) owns the loop, the logging and the checkpoints; this module owns the math.

References, cited where each idea is used:
- [PPO]  Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347.
- [GAE]  Schulman et al. 2015, "High-Dimensional Continuous Control Using GAE", arXiv:1506.02438.
- [IGPT] Ouyang et al. 2022, "Training language models to follow instructions" (InstructGPT):
         the reward is the reward model's score minus a per-token KL penalty to the reference model.
- [N+]   Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO: A Case Study on TL;DR
         Summarization", arXiv:2403.17031; and the ICLR 2022 blog post "The 37 Implementation
         Details of Proximal Policy Optimization" (Huang et al.).

The policy is a peft.PeftModel with a LoRA adapter: switching the adapter off gives the reference
model for free (no second copy of the weights). A finished run's adapter that keeps training needs a
frozen copy instead, which the caller passes as `ref_model`. The value head shares the policy's
backbone, like TRL's former AutoModelForCausalLMWithValueHead.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipelines.generation import stop_ids


@dataclass
class PPOSettings:
    kl_coef: float = 0.05          # per-token KL penalty coefficient (beta) [IGPT]
    cliprange: float = 0.2         # policy ratio clip [PPO eq. 7]
    cliprange_value: float = 0.2   # value clip [N+]
    vf_coef: float = 0.1           # value loss weight
    gamma: float = 1.0             # no discount: the score arrives once, at the end [N+]
    lam: float = 0.95              # GAE lambda [N+]
    ppo_epochs: int = 2            # passes over each batch of rollouts
    mini_batches: int = 1
    temperature: float = 1.0
    max_new_tokens: int = 48
    missing_eos_penalty: float | None = None   # score given to replies cut at the limit (None = keep the RM score)
    whiten_rewards: bool = False


class ValueHead(torch.nn.Module):
    """One number per position, read from the policy's last hidden state (in transformers 5 that is
    the final-norm output, the features the LM head reads). Zero-initialised so the first value
    estimates are 0 and do not inject noise into the first advantages. The caller puts it on the
    policy's device and gives its parameters to the optimizer."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # float32 throughout, also under a caller's bf16 autocast (which would run the linear in bf16, about 3
        # significant digits): values feed GAE's sums and the squared value loss
        with torch.autocast(hidden.device.type, enabled=False):
            return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1).float()


@dataclass
class Rollout:
    input_ids: torch.Tensor       # [B, P+T] left-padded prompt, then the reply
    attention_mask: torch.Tensor  # [B, P+T] 0 on left padding and after each reply's EOS
    prompt_len: int               # P: where the replies start
    mask: torch.Tensor            # [B, T] 1 on reply tokens, up to and including the first EOS
    logprobs: torch.Tensor        # [B, T] policy at sampling time
    ref_logprobs: torch.Tensor    # [B, T] reference model
    values: torch.Tensor          # [B, T] value of the state before each reply token
    replies: list[str]
    ended: list[bool]             # the reply wrote EOS (False: cut at max_new_tokens)


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off everywhere (LoRA's too): with it on, the logprobs of the update pass differ from
    the rollout's even before any step, so the PPO ratio is not 1 where it should be [N+]."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


# --- the math ---------------------------------------------------------------------------------------

def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    # where, not x * mask: a nan or inf outside the mask must not leak in
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    return x.sum() / mask.sum() if dim is None else x.sum(dim) / mask.sum(dim)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Mean 0 (unless shift_mean=False) and unit variance over the masked entries; 0 elsewhere.
    Variance with Bessel's correction, as TRL and the N+ reference code do."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask) * (n / (n - 1).clamp(min=1))
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, torch.zeros_like(out))


def kl_shaped_rewards(scores, logprobs, ref_logprobs, mask, kl_coef):
    """Per-token rewards [IGPT eq. 2, N+ detail 'reward = score at the last token']: every reply token
    pays -kl_coef * (logp - ref_logp), and the last reply token also gets the reward model's score.
    Returns (rewards, kl), both [B, T] and 0 outside the mask."""
    kl = torch.where(mask.bool(), logprobs - ref_logprobs, torch.zeros_like(logprobs))
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards, kl


def gae(rewards, values, mask, gamma, lam):
    """Generalized advantage estimation [GAE eq. 16], right to left:
    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1}.
    The mask must cover a prefix of each row (a reply, then padding): outside it rewards and values
    count as 0, so the last reply token is terminal (V after it = 0). Returns = A + V, the value
    targets. Both outputs are [B, T] and 0 outside the mask."""
    rewards = rewards * mask
    values = values * mask
    T = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(new_logprobs, old_logprobs, advantages, mask, cliprange):
    """PPO's clipped surrogate [PPO eq. 7], as a loss: the pessimistic max of -A*ratio and
    -A*clip(ratio). Returns (loss, clipfrac, approx_kl); approx_kl = 0.5 * E[(log ratio)^2] as in TRL."""
    log_ratio = new_logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio.detach() ** 2, mask)
    return loss, clipfrac.detach(), approx_kl


def value_loss(new_values, old_values, returns, mask, cliprange_value):
    """Clipped value loss [N+, '37 details' #9]: the new value may move at most cliprange_value from
    the rollout's, and the larger of the two squared errors counts. Returns (loss, clipfrac)."""
    clipped_values = old_values + torch.clamp(new_values - old_values, -cliprange_value, cliprange_value)
    unclipped = (new_values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


# --- the model ----------------------------------------------------------------------------------

def forward(model, value_head, input_ids, attention_mask, prompt_len: int, temperature: float):
    """(logprobs, values, entropy) of the reply tokens, each [B, T]. Logits are divided by the sampling
    temperature so the logprobs are those of the distribution the replies were drawn from [N+].
    Position ids are counted from each row's first real token: with left padding the default
    positions would be shifted by the padding. values is None without a value head."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    reply_len = input_ids.shape[1] - prompt_len
    # logits only where they are read (the vocabulary projection dominates the cost of a small model)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                output_hidden_states=value_head is not None, logits_to_keep=reply_len + 1)
    # the logit at position i predicts token i+1: replies start at prompt_len
    logits = out.logits[:, -reply_len - 1:-1].float() / temperature
    all_logprobs = F.log_softmax(logits, dim=-1)
    logprobs = all_logprobs.gather(-1, input_ids[:, prompt_len:].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():  # logged only: with gradients on, a [B, T, vocabulary] product was kept for backward
        entropy = -(all_logprobs.exp() * all_logprobs).sum(-1)
    values = value_head(out.hidden_states[-1][:, prompt_len - 1:-1]) if value_head is not None else None
    return logprobs, values, entropy


def reply_mask(reply_ids: torch.Tensor, stop: list[int]):
    """(mask [B, T], ended [B]): a reply is its tokens up to and including the first stop id (EOS, or a chat
    model's end of turn; what generate writes after it is padding); a reply cut at the length limit is all of
    its tokens."""
    is_eos = torch.isin(reply_ids, torch.tensor(stop, device=reply_ids.device))
    ended = is_eos.any(1)
    cut = torch.full_like(ended, reply_ids.shape[1] - 1, dtype=torch.long)
    last = torch.where(ended, is_eos.int().argmax(1), cut)
    cols = torch.arange(reply_ids.shape[1], device=reply_ids.device)
    return (cols[None, :] <= last[:, None]).long(), ended


def rollout(policy, value_head, tokenizer, prompts: list[list[dict]], settings: PPOSettings,
            ref_model=None) -> Rollout:
    """Sample one reply per prompt (chat messages) and measure it under the policy, the value head and
    the reference (the policy with its adapter off, or `ref_model` when given)."""
    texts = tokenizer.apply_chat_template(prompts, tokenize=False, add_generation_prompt=True)
    # left padding: every reply then starts at the same column, so one slice finds all of them
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    device = next(policy.parameters()).device
    prompt_ids, prompt_mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    prompt_len = prompt_ids.shape[1]
    stop = stop_ids(policy, tokenizer)  # the tokenizer's EOS alone let a chat model write past its end of turn
    with torch.no_grad():
        # top_k=0, top_p=1.0: sample from the whole distribution, the one the logprobs describe [N+]
        # and nothing else of the model's generation_config (a repetition penalty, min_p, ...) reshapes it: the
        # replies would come from another distribution than the one scored, as TRL's GRPO also makes sure
        out = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                              temperature=settings.temperature, top_k=0, top_p=1.0, repetition_penalty=1.0,
                              min_p=None, typical_p=1.0, no_repeat_ngram_size=0, epsilon_cutoff=0.0,
                              eta_cutoff=0.0, min_length=0, min_new_tokens=None, suppress_tokens=None,
                              begin_suppress_tokens=None, bad_words_ids=None, sequence_bias=None,
                              forced_bos_token_id=None, forced_eos_token_id=None, encoder_repetition_penalty=1.0,
                              exponential_decay_length_penalty=None, guidance_scale=None, top_h=None,
                              watermarking_config=None,
                              max_new_tokens=settings.max_new_tokens, eos_token_id=stop,
                              pad_token_id=tokenizer.pad_token_id)
        reply = out[:, prompt_len:]
        mask, ended = reply_mask(reply, stop)
        reply = torch.where(mask.bool(), reply, torch.full_like(reply, tokenizer.pad_token_id))
        input_ids = torch.cat([prompt_ids, reply], 1)
        attention_mask = torch.cat([prompt_mask, mask], 1)

        logprobs, values, _ = forward(policy, value_head, input_ids, attention_mask, prompt_len,
                                      settings.temperature)
        ref = ref_model if ref_model is not None else policy
        with (policy.disable_adapter() if ref_model is None else nullcontext()):
            ref_logprobs, _, _ = forward(ref, None, input_ids, attention_mask, prompt_len, settings.temperature)

    spoken = mask.bool() & ~torch.isin(reply, torch.tensor(stop, device=reply.device))
    replies = tokenizer.batch_decode(torch.where(spoken, reply, tokenizer.pad_token_id),
                                     skip_special_tokens=True)
    mask = mask.float()
    return Rollout(input_ids, attention_mask, prompt_len, mask, logprobs * mask, ref_logprobs * mask,
                   values * mask, replies, ended.tolist())


def _last_user_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def ppo_step(policy, value_head, tokenizer, optimizer, prompts: list[list[dict]], score_fn,
             settings: PPOSettings, ref_model=None) -> tuple[dict, list[dict]]:
    """One PPO iteration on a batch of prompts. score_fn(prompts, replies) -> list[float].
    The optimizer holds the adapter's and the value head's parameters. Returns (metrics, samples)."""
    disable_dropout(policy)
    policy.eval()  # generation, the reference pass and the updates; dropout is off anyway
    value_head.eval()
    ro = rollout(policy, value_head, tokenizer, prompts, settings, ref_model)
    device, mask = ro.mask.device, ro.mask

    scores = torch.tensor(score_fn(prompts, ro.replies), dtype=torch.float32, device=device)
    if settings.missing_eos_penalty is not None:
        # the EOS trick [N+ detail 'EOS trick']: a reply cut at the limit gets a fixed low score,
        # whatever the reward model thought of it, so the policy learns to finish its replies
        ended = torch.tensor(ro.ended, device=device)
        scores = torch.where(ended, scores, torch.full_like(scores, settings.missing_eos_penalty))

    rewards, kl = kl_shaped_rewards(scores, ro.logprobs, ro.ref_logprobs, mask, settings.kl_coef)
    if settings.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, ro.values, mask, settings.gamma, settings.lam)
    advantages = masked_whiten(advantages, mask)  # advantage normalisation ['37 details' #7]

    params = [p for group in optimizer.param_groups for p in group["params"]]
    # the updates in eval mode too (gradients flow all the same): train mode also turns on randomness that is no
    # Dropout module (attention dropout passed to SDPA, a mixture of experts' router jitter), and the first
    # pass's ratio was then no longer 1 [N+ 'disable dropout']
    batch = ro.input_ids.shape[0]
    size = max(1, batch // max(1, settings.mini_batches))
    logs = {k: [] for k in ("loss", "policy_loss", "value_loss", "clipfrac", "value_clipfrac",
                            "approx_kl", "entropy")}
    for _ in range(settings.ppo_epochs):
        order = torch.randperm(batch, device=device)
        for start in range(0, batch, size):
            idx = order[start:start + size]
            m = mask[idx]
            new_logprobs, new_values, entropy = forward(policy, value_head, ro.input_ids[idx],
                                                        ro.attention_mask[idx], ro.prompt_len,
                                                        settings.temperature)
            pg, clipfrac, approx_kl = policy_loss(new_logprobs, ro.logprobs[idx], advantages[idx], m,
                                                  settings.cliprange)
            vf, vf_clipfrac = value_loss(new_values, ro.values[idx], returns[idx], m, settings.cliprange_value)
            loss = pg + settings.vf_coef * vf
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # global gradient clipping ['37 details' #11]
            optimizer.step()
            # under a caller's torch.autocast, the low-precision copies of the weights are cached until
            # the outermost autocast block exits: without this, every later forward in this step would
            # still see the weights from before the update (the ratio would stay 1, clipping never act)
            torch.clear_autocast_cache()
            for key, value in (("loss", loss), ("policy_loss", pg), ("value_loss", vf), ("clipfrac", clipfrac),
                               ("value_clipfrac", vf_clipfrac), ("approx_kl", approx_kl),
                               ("entropy", masked_mean(entropy.detach(), m))):
                logs[key].append(float(value.detach()))
    optimizer.zero_grad()

    kl_sum = kl.sum(1)  # per reply: sum over its tokens of logp - ref_logp
    # "kl" per reply token, as GRPO and RLOO log it (the chart draws them on one axis); the per-reply sum apart
    metrics = {"reward": float(scores.mean()), "kl": float(kl.sum() / mask.sum().clamp(min=1)),
               "kl_per_reply": float(kl_sum.mean()),
               "non_score_reward": float((-settings.kl_coef * kl_sum).mean()),
               **{k: sum(v) / len(v) for k, v in logs.items() if v},
               "completions/mean_length": float(mask.sum(1).mean()),
               "completions/clipped_ratio": 1.0 - sum(ro.ended) / len(ro.ended)}
    samples = [{"prompt": _last_user_text(p), "reply": r, "reward": float(s)}
               for p, r, s in zip(prompts, ro.replies, scores.tolist())]
    return metrics, samples
