"""PPO (pipelines/ppo.py): the math on hand-computed numbers, then a few real PPO iterations on a tiny
model that must raise a toy reward while the reference stays the base model."""

from __future__ import annotations

import math
from collections import Counter

import torch

from pipelines import ppo


def close(actual, expected, tol=1e-6):
    assert torch.allclose(torch.as_tensor(actual, dtype=torch.float32),
                          torch.as_tensor(expected, dtype=torch.float32), atol=tol), (actual, expected)


# --- the math, by hand -------------------------------------------------------------------------

def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3)
    # gamma 1, lam 0.95; the value after the last token is 0
    # delta2 = 1 + 0   - 0.7 = 0.3    A2 = 0.3
    # delta1 = 0 + 0.7 - 0.6 = 0.1    A1 = 0.1 + 0.95 * 0.3   = 0.385
    # delta0 = 0 + 0.6 - 0.5 = 0.1    A0 = 0.1 + 0.95 * 0.385 = 0.46575
    # returns = A + V = [0.96575, 0.985, 1.0]
    advantages, returns = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    close(advantages, [[0.46575, 0.385, 0.3]])
    close(returns, [[0.96575, 0.985, 1.0]])


def test_gae_ignores_the_padding_after_a_reply():
    # the reply is two tokens (the second is EOS); the third column is padding holding junk
    rewards = torch.tensor([[0.0, 1.0, 5.0]])
    values = torch.tensor([[0.5, 0.6, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # the last reply token is terminal: delta1 = 1 + 0 - 0.6 = 0.4       A1 = 0.4
    #                                   delta0 = 0 + 0.6 - 0.5 = 0.1     A0 = 0.1 + 0.95 * 0.4 = 0.48
    advantages, returns = ppo.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    close(advantages, [[0.48, 0.4, 0.0]])
    close(returns, [[0.98, 1.0, 0.0]])


def test_kl_shaped_rewards_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = ppo.kl_shaped_rewards(scores, logprobs, ref, mask, kl_coef=0.1)
    # row 0: kl = logp - ref = [0.5, 0, -1]; rewards = -0.1 * kl, + the score 2 on the last token
    #        = [-0.05, 0, 0.1 + 2]
    # row 1: kl = [1, 0, (padding) 0]; the last reply token is column 1: rewards = [-0.1, 0 - 1, 0]
    close(kl, [[0.5, 0.0, -1.0], [1.0, 0.0, 0.0]])
    close(rewards, [[-0.05, 0.0, 2.1], [-0.1, -1.0, 0.0]])


def test_policy_loss_by_hand():
    ratios = torch.tensor([[1.1, 1.5, 0.5, 1.5, 0.5, 7.0]])
    advantages = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])  # the last column is padding
    old = torch.zeros(1, 6)
    new = ratios.log()
    # cliprange 0.2: per token max(-A * r, -A * clip(r, 0.8, 1.2))
    # r 1.1, A +1: max(-1.1, -1.1) = -1.1  inside the range
    # r 1.5, A +1: max(-1.5, -1.2) = -1.2  clipped (no more credit for pushing further)
    # r 0.5, A -1: max( 0.5,  0.8) =  0.8  clipped
    # r 1.5, A -1: max( 1.5,  1.2) =  1.5  not clipped: the pessimistic side keeps the full penalty
    # r 0.5, A +1: max(-0.5, -0.8) = -0.5  not clipped, likewise
    # loss = (-1.1 - 1.2 + 0.8 + 1.5 - 0.5) / 5 = -0.1; clipfrac = 2 / 5
    loss, clipfrac, approx_kl = ppo.policy_loss(new, old, advantages, mask, cliprange=0.2)
    close(loss, -0.1)
    close(clipfrac, 0.4)
    expected_kl = 0.5 * sum(math.log(r) ** 2 for r in (1.1, 1.5, 0.5, 1.5, 0.5)) / 5
    close(approx_kl, expected_kl)


def test_value_loss_by_hand():
    old = torch.zeros(1, 4)
    new = torch.tensor([[0.5, 0.1, -0.5, 3.0]])
    returns = torch.tensor([[1.0, -1.0, 1.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    # cliprange_value 0.2: the clipped value is old + clip(new - old, -0.2, 0.2)
    # new  0.5, return  1: clipped 0.2;  (0.5-1)^2 = 0.25, (0.2-1)^2 = 0.64     -> 0.64 clipped
    # new  0.1, return -1: clipped 0.1;  (1.1)^2 = 1.21 both                     -> 1.21
    # new -0.5, return  1: clipped -0.2; (1.5)^2 = 2.25, (1.2)^2 = 1.44          -> 2.25
    # loss = 0.5 * (0.64 + 1.21 + 2.25) / 3 = 0.683333; clipfrac = 1 / 3
    loss, clipfrac = ppo.value_loss(new, old, returns, mask, cliprange_value=0.2)
    close(loss, 0.5 * 4.1 / 3)
    close(clipfrac, 1 / 3)


def test_masked_whiten_gives_mean_zero_unit_variance_on_the_mask():
    torch.manual_seed(0)
    x = torch.randn(4, 6) * 3 + 5
    mask = torch.ones(4, 6)
    mask[0, 4:] = 0
    mask[2, 1:] = 0
    x[mask == 0] = 1e6  # padding junk must not count
    out = ppo.masked_whiten(x, mask)
    kept = out[mask.bool()]
    close(kept.mean(), 0.0, 1e-5)
    close(kept.var(), 1.0, 1e-4)  # torch's var is Bessel-corrected, like masked_whiten's
    assert (out[mask == 0] == 0).all()
    unshifted = ppo.masked_whiten(x, mask, shift_mean=False)[mask.bool()]
    close(unshifted.mean(), x[mask.bool()].mean(), 1e-4)


def test_reply_mask_stops_after_the_first_eos():
    stop = [2, 7]  # the tokenizer's EOS and a chat model's end of turn (its generation_config's)
    replies = torch.tensor([[5, 6, 2, 2, 2],    # EOS at 2, then padding
                            [2, 2, 2, 2, 2],    # an empty reply is just its EOS
                            [5, 6, 7, 2, 2],    # the end of turn ends it too
                            [5, 6, 8, 8, 9]])   # cut at the length limit: every token counts
    mask, ended = ppo.reply_mask(replies, stop)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert ended.tolist() == [True, True, True, False]


def test_the_value_head_stays_float32_under_a_callers_bf16_autocast():
    """Under the runner's bf16 autocast the head's linear ran in bf16 (about 3 significant digits) though its
    comment promised float32 values for GAE's sums and the value loss."""
    torch.manual_seed(0)
    head = ppo.ValueHead(16)
    torch.nn.init.normal_(head.linear.weight)
    hidden = (torch.randn(2, 3, 16) * 10).to(torch.bfloat16)  # the policy's hidden state, in bf16 there
    exact = head(hidden.float())  # float32 arithmetic on the same numbers
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = head(hidden)
        plain = head.linear(hidden).squeeze(-1)  # the head's linear left to autocast, as it ran before
    assert under.dtype == torch.float32
    close(under, exact, 0)
    assert plain.dtype == torch.bfloat16 and not torch.allclose(plain.float(), exact, atol=1e-2)  # far off


# --- a few real iterations ----------------------------------------------------------------------

PROMPTS = [[{"role": "user", "content": f"Question {i}?"}] for i in range(8)]


def lora_policy(model_dir):
    """(policy, value head, tokenizer): a fresh LoRA adapter on the tiny model, as the runner builds it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                            LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    return policy, ppo.ValueHead(policy.config.hidden_size), AutoTokenizer.from_pretrained(model_dir)


def test_updates_inside_a_callers_autocast_reach_the_next_pass(peaky_model_dir):
    # the runner wraps ppo_step in bf16 autocast; autocast caches its bf16 copies of the weights until
    # the block ends, so without clearing that cache the second pass would see the old weights (ratio 1)
    policy, value_head, tokenizer = lora_policy(peaky_model_dir)
    params = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    settings = ppo.PPOSettings(max_new_tokens=4, ppo_epochs=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        metrics, _ = ppo.ppo_step(policy, value_head, tokenizer, optimizer, PROMPTS[:4],
                                  lambda prompts, replies: [float(len(r)) for r in replies], settings)
    assert metrics["approx_kl"] > 0 and math.isfinite(metrics["loss"])


def test_ppo_raises_a_toy_reward_and_the_reference_stays_the_base(peaky_model_dir):
    from transformers import AutoModelForCausalLM

    policy, value_head, tokenizer = lora_policy(peaky_model_dir)
    settings = ppo.PPOSettings(max_new_tokens=8, ppo_epochs=2)
    ppo.disable_dropout(policy)

    def sample(seed=1):  # fresh replies, 4 per prompt, the same draws before and after
        torch.manual_seed(seed)
        return ppo.rollout(policy, value_head, tokenizer, PROMPTS * 4, settings)

    start = sample()
    # LoRA's B starts at zero, so switching the adapter off changes nothing yet
    assert torch.equal(start.logprobs, start.ref_logprobs)
    assert start.mask.shape == (32, 8) and start.values.abs().sum() == 0  # the zero-initialised head
    # the toy reward: "the reply contains this word", for the word the base model writes most often
    replies_ids = [row[m.bool()].tolist() for row, m in zip(start.input_ids[:, start.prompt_len:], start.mask)]
    token, _ = Counter(t for r in replies_ids for t in set(r)).most_common(1)[0]
    word = tokenizer.decode([token]).strip()

    def score_fn(prompts, replies):
        assert len(prompts) == len(replies)
        return [float(word in r) for r in replies]

    # (measured on the replies the word was picked from: if anything, that flatters "before")
    before = sum(score_fn(start.replies, start.replies)) / 32
    assert 0.1 < before < 0.7, before

    # a step that cannot move the weights: the update pass sees exactly the rollout's logprobs (no
    # dropout, same positions), so the ratio is 1; nothing is clipped; and the KL is 0
    params = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
    frozen = torch.optim.SGD(params, lr=0.0)
    penalised = ppo.PPOSettings(max_new_tokens=8, ppo_epochs=1, missing_eos_penalty=-1.0)
    metrics, samples = ppo.ppo_step(policy, value_head, tokenizer, frozen, PROMPTS, score_fn, penalised)
    assert metrics["approx_kl"] < 1e-10 and metrics["clipfrac"] == 0 and metrics["kl"] == 0
    # replies cut at 8 tokens without EOS get the penalty score, whatever the word
    assert metrics["completions/clipped_ratio"] == 1.0 and metrics["reward"] == -1.0
    assert [s["prompt"] for s in samples] == [f"Question {i}?" for i in range(8)]
    assert all(s["reward"] == -1.0 and isinstance(s["reply"], str) for s in samples)

    optimizer = torch.optim.AdamW(params, lr=1e-2)
    history = []
    for _ in range(6):
        metrics, _samples = ppo.ppo_step(policy, value_head, tokenizer, optimizer, PROMPTS, score_fn, settings)
        history.append(metrics)
    assert set(history[0]) >= {"reward", "kl", "non_score_reward", "loss", "policy_loss", "value_loss", "clipfrac",
                               "value_clipfrac", "approx_kl", "entropy", "completions/mean_length"}
    assert all(math.isfinite(v) for m in history for v in m.values())
    assert history[-1]["kl"] > 0  # the policy has moved away from the reference...
    close(history[-1]["non_score_reward"], -settings.kl_coef * history[-1]["kl_per_reply"], 1e-5)  # ...and pays
    # "kl" per reply token (as GRPO and RLOO log it, on the same chart): the per-reply sum over the mean length
    close(history[-1]["kl"], history[-1]["kl_per_reply"] / history[-1]["completions/mean_length"], 1e-4)

    end = sample()
    after = sum(score_fn(end.replies, end.replies)) / 32
    assert after >= before + 0.3, (before, after)
    # the reference is still the untouched base model, token for token
    base = AutoModelForCausalLM.from_pretrained(peaky_model_dir)
    with torch.no_grad():
        base_logprobs, _, _ = ppo.forward(base, None, end.input_ids, end.attention_mask, end.prompt_len, 1.0)
    close(end.ref_logprobs, base_logprobs * end.mask, 1e-5)
    assert not torch.allclose(end.logprobs, end.ref_logprobs)
    print(f"PPO toy reward for {word!r}: before {before:.3f} after {after:.3f}; "
          f"kl per step {[round(m['kl'], 3) for m in history]}; reward per step {[m['reward'] for m in history]}")


def test_logprobs_values_and_stops_against_an_independent_reading(peaky_model_dir):
    """The reply logprobs checked only against ppo.forward itself: here each token's is read from the model
    with the prompt alone (no left padding, default positions) and temperature 0.7, prompts of different
    lengths so the batch is left-padded. A chat model whose turns end with a token other than the tokenizer's
    EOS (its generation_config's) stops there: the replies ran past the end of the turn."""
    import torch.nn.functional as F

    policy, value_head, tokenizer = lora_policy(peaky_model_dir)
    torch.nn.init.normal_(value_head.linear.weight, std=0.1)
    prompts = [[{"role": "user", "content": "Hi"}],
               [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and a cat, please."}]]
    settings = ppo.PPOSettings(max_new_tokens=12, temperature=0.7)
    torch.manual_seed(3)
    plain = ppo.rollout(policy, value_head, tokenizer, prompts * 4, settings)
    assert (plain.attention_mask[:, 0] == 0).any()  # left padding in the batch
    # the token written most often becomes an end of turn: with it, every reply that wrote it ends at it
    written = Counter(t for row, m in zip(plain.input_ids[:, plain.prompt_len:], plain.mask)
                      for t in row[m.bool()].tolist())
    turn_end = next(t for t, _ in written.most_common() if t != tokenizer.eos_token_id)
    policy.generation_config.eos_token_id = [tokenizer.eos_token_id, turn_end]
    torch.manual_seed(3)
    ro = ppo.rollout(policy, value_head, tokenizer, prompts * 4, settings)
    assert any(ro.ended)
    for row, m, ended, reply in zip(ro.input_ids[:, ro.prompt_len:], ro.mask, ro.ended, ro.replies):
        kept = row[m.bool()].tolist()
        assert turn_end not in kept[:-1] and (kept[-1] in (turn_end, tokenizer.eos_token_id)) == ended
    with torch.no_grad():
        for i in range(len(ro.replies)):
            real = ro.attention_mask[i].bool()
            ids = ro.input_ids[i][real][None]  # this row alone: no padding, positions from 0
            start = int(real[:ro.prompt_len].sum())
            out = policy(input_ids=ids, output_hidden_states=True)
            expect = F.log_softmax(out.logits[0, start - 1:-1].float() / 0.7, -1).gather(
                -1, ids[0, start:, None]).squeeze(-1)
            n = int(ro.mask[i].sum())
            close(ro.logprobs[i, :n], expect, 1e-4)
            close(ro.values[i, :n], value_head(out.hidden_states[-1][0, start - 1:-1]), 1e-4)
    # the entropy is logged, not learned from: no [B, T, vocabulary] graph kept for it
    _, _, entropy = ppo.forward(policy, value_head, ro.input_ids, ro.attention_mask, ro.prompt_len, 0.7)
    assert not entropy.requires_grad


def test_ppo_steps_read_each_prompt_the_epochs_asked_for(tiny_model_dir):
    """10 prompts in batches of 4 for 2 epochs took 6 steps (3 an epoch, twice) while a batch runs on into the
    next epoch's rows: 24 prompts read, 2.4 epochs. The estimate (the step warning, the advisor) counts as the
    run does."""
    from pipelines import estimates
    from pipelines.train_ppo import batch_rows, ppo_steps

    assert ppo_steps(10, 4, 2) == 5 and ppo_steps(8, 8, 6) == 6 and ppo_steps(4, 8, 1) == 1
    assert ppo_steps(10, 4, 0.5) == 2 and ppo_steps(10, 3, 0.3) == 1  # (not 2 for a rounding error)
    read = Counter(i for step in range(ppo_steps(10, 4, 2)) for i in batch_rows(step, 4, 10, seed=3))
    assert set(read.values()) == {2} and len(read) == 10
    planned = estimates.estimate(str(tiny_model_dir), "ppo", {"per_device_train_batch_size": 4, "num_train_epochs": 2},
                                 lengths=[10] * 10)
    assert planned.steps_per_epoch == 2.5 and math.ceil(planned.steps_per_epoch * 2) == ppo_steps(10, 4, 2)


def test_the_updates_see_the_rollouts_probabilities_with_attention_dropout_in_the_config(peaky_model_dir):
    """The updates ran in train mode: a model whose config sets attention dropout (passed to its attention only
    while training, no Dropout module to switch off) drew other probabilities there, so the first ratio was
    not 1 and clipping acted on noise."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(peaky_model_dir, attention_dropout=0.5)
    policy = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    value_head, tokenizer = ppo.ValueHead(policy.config.hidden_size), AutoTokenizer.from_pretrained(peaky_model_dir)
    params = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
    metrics, _ = ppo.ppo_step(policy, value_head, tokenizer, torch.optim.SGD(params, lr=0.0), PROMPTS[:4],
                              lambda prompts, replies: [1.0] * len(replies), ppo.PPOSettings(max_new_tokens=6))
    assert metrics["approx_kl"] < 1e-10 and metrics["clipfrac"] == 0


def test_ppo_batches_take_each_row_once_an_epoch_across_the_epochs_boundary():
    """10 prompts in batches of 4: the third batch took rows 9 and 10 of the first epoch's shuffle, then its rows
    1 and 2 again (not the second epoch's): those twice, the second epoch's first two never."""
    from pipelines.train_ppo import batch_rows

    drawn = [batch_rows(step, 4, 10, seed=3) for step in range(5)]  # 20 rows: two epochs
    flat = [i for rows in drawn for i in rows]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # each epoch its own shuffle
    assert drawn[2] == [flat[8], flat[9], flat[10], flat[11]]
