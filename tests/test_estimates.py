"""Estimates before launch: trainable counts equal what training really unfreezes, the
allocation tracker counts what it should, and the memory model extrapolates to real sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipelines import estimates, evals
from pipelines.methods import METHODS, Setup, lowrank_optim, parse
from pipelines.train_sft import apply_method, load_base

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("key", list(METHODS))
def test_trainable_count_matches_the_real_model(key, tiny_model_dir, tiny_moe_dir, tmp_path):
    if key == "esft":  # trains a mixture-of-experts model's experts only
        tiny_model_dir = tiny_moe_dir
    method = METHODS[key]
    params = parse(method.params, {})
    model = apply_method(load_base(method, params, str(tiny_model_dir)), method, params,
                         Setup(model_path=str(tiny_model_dir), total_steps=10), tmp_path, None)
    if method.optimizer is not None:
        method.optimizer(model, params)  # LoRA-FA freezes A in its optimizer
    real = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad or "lora_E" in n)
    total, counted = estimates.count_params(str(tiny_model_dir), key)
    assert counted == real
    assert total == sum(p.numel() for p in load_base(METHODS["full"], params, str(tiny_model_dir)).parameters())


def test_peak_allocated_counts_what_is_alive_at_once():
    existing = torch.zeros(1000)

    def work():
        a = torch.ones(1024)  # 4 KiB
        b = torch.ones(2048)  # 8 KiB, alive together with a: peak 12 KiB
        del a, b
        torch.ones(512)  # 2 KiB after both are freed: not a new peak
        existing.add_(1)  # in place on a tensor from before: nothing allocated

    assert estimates.peak_allocated(work) == 12 * 1024


@pytest.mark.parametrize("key", ["lora", "adalora"])  # a padding-free and a padded path
def test_memory_model_extrapolates_to_a_longer_batch(tiny_model_dir, key):
    """Fitted on 1-2 blocks at 32-64 tokens, read at the tiny model's depth and 2 x 96 tokens,
    it matches a direct measurement of the whole model at that size."""
    a, b, c, d = estimates.training_model(str(tiny_model_dir), key, (), False)
    layers, tokens = 2, 192
    predicted = a + b * layers + c * tokens + d * layers * tokens
    method = METHODS[key]
    params = parse(method.params, {})
    model = estimates._probe_model(str(tiny_model_dir), layers, method, params)
    measured = estimates._training_peak(model, tokens, False, method.padding_free)
    assert predicted == pytest.approx(measured, rel=0.1)


def test_estimate_says_whether_it_fits(tiny_model_dir):
    est = estimates.estimate(str(tiny_model_dir), "lora", {"per_device_train_batch_size": 4, "max_length": 64},
                             lengths=[40] * 30 + [80] * 10)
    assert est.trainable_params > 0 and est.peak_bytes > est.weights_bytes > 0
    assert est.tokens_per_epoch == 30 * 40 + 10 * 64  # padding-free: real tokens, cut at max_length
    assert est.seconds_per_epoch > 0
    assert est.verdict().startswith("fits in your ")
    small = estimates.Estimate(**{**est.__dict__, "available_bytes": est.peak_bytes // 2})
    assert small.verdict().startswith(f"needs about {est.peak_bytes / 2**30:.1f} GB, more than your ")


def test_padded_tokens_pads_each_batch_to_its_longest():
    # 4 + a last batch of 2: the collator pads its rows to the longest, it adds no rows (one held-out
    # DPO row was counted as 4, and its checks estimated at 4x what they took)
    assert estimates.padded_tokens([30] * 6, batch=4, max_length=100) == 6 * 30
    assert estimates.batch_tokens([40], batch=4, max_length=100, padding_free=False) == (40, 40)
    assert estimates.padded_tokens([500, 500], batch=2, max_length=64) == 128  # cut at max_length
    assert estimates.padded_tokens([10, 90], batch=2, max_length=100) == 180  # the short one padded to 90


def test_padding_free_batches_hold_only_their_rows_tokens():
    # (tokens per epoch, tokens in the largest batch)
    assert estimates.batch_tokens([10, 90], batch=2, max_length=100, padding_free=True) == (100, 100)
    assert estimates.batch_tokens([10, 90], batch=2, max_length=100, padding_free=False) == (180, 180)
    assert estimates.batch_tokens([500, 20, 30], batch=3, max_length=64, padding_free=True) == (114, 114)


def test_preference_estimates_count_both_answers_and_the_reference(tiny_model_dir):
    path, same, lengths = str(tiny_model_dir), {"per_device_train_batch_size": 4, "max_length": 64}, [40] * 8
    lora, dpo = (estimates.estimate(path, key, same, lengths=lengths) for key in ("lora", "dpo"))
    full, dpo_full = (estimates.estimate(path, key, same, lengths=lengths) for key in ("full", "dpo_full"))
    assert dpo.tokens_per_epoch == 2 * lora.tokens_per_epoch  # chosen and rejected of every pair
    assert dpo.weights_bytes == lora.weights_bytes  # with LoRA the reference is the adapter switched off
    assert dpo_full.weights_bytes == 2 * full.weights_bytes  # full weights: a frozen copy to compare with
    assert dpo.training_bytes > lora.training_bytes
    # twice the tokens, each with one more (reference) forward pass
    assert dpo.seconds_per_epoch > 2 * lora.seconds_per_epoch


def test_esft_estimates_a_mixture_of_experts_whose_first_block_is_dense(tmp_path):
    """The probe's one and two blocks are expert blocks even where the model's first is dense
    (Qwen-MoE's mlp_only_layers, DeepSeek's first_k_dense_replace): ESFT had nothing to train there."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                            num_experts=8, num_experts_per_tok=2, mlp_only_layers=[0])
    Qwen3MoeForCausalLM(config).save_pretrained(tmp_path)
    est = estimates.estimate(str(tmp_path), "esft", {})
    # two expert blocks of 8 experts, each 3 x 64 x 32 weights (gate, up, down)
    assert est.trainable_params == 2 * 8 * 3 * 64 * 32
    assert est.peak_bytes > est.weights_bytes


def test_a_probe_depends_on_the_adapter_not_on_the_trainers_settings():
    identity = estimates.probe_identity
    assert identity("lora", None) == identity("lora", {"r": 16})  # the default spelled out or not
    # the learning rate, epochs, batch size and max length change nothing a probe measures
    assert identity("lora", {"learning_rate": 1e-3, "num_train_epochs": 7, "per_device_train_batch_size": 2,
                             "max_length": 96}) == identity("lora", None)
    assert identity("lora", {"r": 8}) != identity("lora", None)  # a smaller adapter
    assert identity("lora", {"gradient_checkpointing": True}) != identity("lora", None)  # recomputed activations


def test_probes_are_kept_on_disk_for_the_next_studio(tiny_model_dir, tmp_path, monkeypatch):
    from pipelines import probe_cache

    monkeypatch.setenv(probe_cache.ENV, str(tmp_path))
    estimates.training_model.cache_clear()
    first = estimates.estimate(str(tiny_model_dir), "ia3", {})
    assert probe_cache.cache_file() == tmp_path / "probes.json" and (tmp_path / "probes.json").exists()

    def measured(*_args):
        raise AssertionError("measured again")

    # a restarted studio (nothing in memory) reads the probe back; an edit of epochs needs no new one
    estimates.training_model.cache_clear()
    monkeypatch.setattr(estimates, "_fit", measured)
    again = estimates.estimate(str(tiny_model_dir), "ia3", {"num_train_epochs": 9})
    assert again.peak_bytes == first.peak_bytes and again.training_bytes == first.training_bytes

    # new code or libraries measure again; so does a torn file, which is rewritten whole
    monkeypatch.setattr(probe_cache, "_code", lambda: "another version")
    estimates.training_model.cache_clear()
    with pytest.raises(AssertionError, match="measured again"):
        estimates.estimate(str(tiny_model_dir), "ia3", {})
    monkeypatch.undo()
    monkeypatch.setenv(probe_cache.ENV, str(tmp_path))
    (tmp_path / "probes.json").write_text('{"half": [1, 2')
    estimates.training_model.cache_clear()
    assert estimates.estimate(str(tiny_model_dir), "ia3", {}).peak_bytes == pytest.approx(first.peak_bytes, rel=0.05)
    import json

    assert len(json.loads((tmp_path / "probes.json").read_text())) == 1
    estimates.training_model.cache_clear()


def test_a_probe_asked_for_twice_at_once_is_measured_once(tiny_model_dir, tmp_path, monkeypatch):
    """The page's estimate and another asker (the Method tab's table, a test beside the page) measured
    the same probe each, at once: twice the work, and two estimates made together could differ by the
    measurements' noise (a reward model's cost, read as one estimate minus another, was kilobytes off)."""
    import threading
    import time

    from pipelines import probe_cache

    monkeypatch.setenv(probe_cache.ENV, str(tmp_path))
    estimates.training_model.cache_clear()
    real, calls = estimates._fit, []

    def counted(*args):
        calls.append(args)
        time.sleep(1)  # the other asker comes while this one measures
        return real(*args)

    monkeypatch.setattr(estimates, "_fit", counted)
    together, got = threading.Barrier(2), []

    def ask():
        together.wait()
        try:
            got.append(estimates.estimate(str(tiny_model_dir), "lora", {}))
        except Exception as err:  # noqa: BLE001  (said below, not lost in the thread)
            got.append(err)

    askers = [threading.Thread(target=ask) for _ in range(2)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join()
    assert len(calls) == 1, got
    assert got[0].training_bytes == got[1].training_bytes
    estimates.training_model.cache_clear()


def test_held_out_passes_follow_the_trainers_cadence():
    # 14 steps, ten checks wanted: every 2 steps, plus the one before the first step
    assert evals.every(14, 0, 10) == 2 and evals.passes(14, 2) == 1 + 7
    assert evals.every(14, 5, 10) == 5 and evals.passes(14, 5) == 1 + 2 + 1  # 5, 10, then after 14
    assert evals.every(3, 0, 10) == 1 and evals.passes(3, 1) == 4


def test_the_estimate_counts_the_held_out_passes(tiny_model_dir):
    path, lengths = str(tiny_model_dir), [40] * 32
    settings = {"per_device_train_batch_size": 4, "max_length": 64, "num_train_epochs": 1}
    none = estimates.estimate(path, "lora", settings, lengths=lengths)
    some = estimates.estimate(path, "lora", settings, lengths=lengths, eval_rows=8)
    assert none.eval_seconds == 0 and some.seconds_per_epoch == none.seconds_per_epoch
    # 8 steps: checked before, then every step (8 // 10 rounds up to 1); 8 rows of 40 tokens each
    # time, one forward pass (2 FLOPs per weight per token), at the speed the training steps assume
    bf16 = estimates.hardware.use_bf16()
    flops = estimates.hardware.matmul_flops("cpu", bf16) * estimates.step_efficiency("cpu", bf16)
    # (and the adapter's own matmuls: LoRA's are its trainable weights)
    one_pass = 2 * (some.total_params + some.trainable_params) * 8 * 40 / flops
    assert some.eval_seconds == pytest.approx(9 * one_pass)
    sparse = estimates.estimate(path, "lora", {**settings, "eval_steps": 4}, lengths=lengths, eval_rows=8)
    assert sparse.eval_seconds == pytest.approx(3 * one_pass)  # before, at 4, at 8


def test_kto_counts_its_mismatched_pair_batch_through_the_model_and_the_reference(tiny_model_dir, monkeypatch):
    """TRL's KTO runs a second, mismatched-pair batch forward through the model and the reference
    (KTOTrainer._compute_kl_logps), in training and in its held-out checks: the estimate left the
    model's pass out, and the checks' both, and KTO runs took 1.4x what the Train tab said."""
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 0.0)
    path, lengths = str(tiny_model_dir), [40] * 8
    same = {"per_device_train_batch_size": 4, "max_length": 64, "num_train_epochs": 1, "eval_steps": 1}
    kto, dpo = (estimates.estimate(path, key, same, lengths=lengths, eval_rows=4) for key in ("kto", "dpo"))
    t, trained, adapters = estimates._counted(path, "kto", same)
    # per token: forward + backward (4t, 2 per trained weight, the adapters' 4a), the reference's forward
    # (2t), and KTO's KL batch forward through both (4t); DPO's pairs are twice the tokens
    train = (4 * t + 2 * trained + 4 * adapters + 2 * t + 4 * t) / (2 * (4 * t + 2 * trained + 4 * adapters + 2 * t))
    assert kto.seconds_per_epoch / dpo.seconds_per_epoch == pytest.approx(train)
    # a check: the model and the reference forward, KTO on its KL batch as well
    assert kto.eval_seconds / dpo.eval_seconds == pytest.approx((8 * t + 2 * adapters) / (2 * (4 * t + 2 * adapters)))


def test_the_estimate_counts_each_steps_optimizer_update(tiny_model_dir, monkeypatch):
    path, lengths = str(tiny_model_dir), [40] * 32
    settings = {"per_device_train_batch_size": 4, "max_length": 64}  # 8 steps an epoch

    def at(per_weight, key):
        monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: per_weight)
        return estimates.estimate(path, key, settings, lengths=lengths)

    full = at(1e-6, "full")
    assert full.seconds_per_epoch - at(0.0, "full").seconds_per_epoch == pytest.approx(8 * full.trainable_params * 1e-6)
    # DoRA also rebuilds every adapted weight (all but the embeddings) each step
    dora = at(1e-6, "dora")
    text = estimates._config(path).get_text_config()
    embed = text.vocab_size * text.hidden_size * (1 if text.tie_word_embeddings else 2)
    extra = 8 * (dora.trainable_params + estimates.REBUILD["dora"] * (dora.total_params - embed)) * 1e-6
    assert dora.seconds_per_epoch - at(0.0, "dora").seconds_per_epoch == pytest.approx(extra)


def test_galore_counts_its_svds_and_projections_over_the_run(tiny_model_dir, monkeypatch):
    path, lengths = str(tiny_model_dir), [40] * 32
    monkeypatch.setattr(estimates.hardware, "svd_seconds_per_unit", lambda device: 1e-9)
    fp32 = estimates.hardware.matmul_flops("cpu", False)
    shapes, _ = lowrank_optim._shapes(path)
    units = sum(m * n * min(m, n) for m, n in shapes)
    assert shapes and all(len(shape) == 2 for shape in shapes)

    def seconds(gap, epochs):
        settings = {"per_device_train_batch_size": 4, "max_length": 64, "update_proj_gap": gap,
                    "num_train_epochs": epochs}  # 8 steps an epoch
        return estimates.estimate(path, "galore", settings, lengths=lengths).seconds_per_epoch

    # 16 steps over 2 epochs: one SVD per matrix at the first step with a gap of 200, four with a gap
    # of 5 (steps 0, 5, 10, 15); the run's SVDs are spread over its two epochs
    assert seconds(5, 2) - seconds(200, 2) == pytest.approx((4 - 1) * units * 1e-9 / 2)
    # each step projects every gradient down to the rank and its update back up: 2 x 2·r·m·n FLOPs
    # (the tiny model's matrices are smaller than the rank 2: r is their short side)
    products = 16 * sum(4 * min(2, m, n) * m * n for m, n in shapes)
    assert lowrank_optim.projection_seconds(path, SimpleNamespace(update_proj_gap=200, rank=2), 16, "cpu") \
        == pytest.approx(units * 1e-9 + products / fp32)


def test_mezo_counts_four_random_draws_over_every_weight_a_step(tiny_model_dir, monkeypatch):
    path, lengths = str(tiny_model_dir), [40] * 32
    settings = {"per_device_train_batch_size": 4, "max_length": 64}  # 8 steps an epoch

    def at(per_weight):
        monkeypatch.setattr(estimates.hardware, "perturb_seconds_per_weight", lambda device: per_weight)
        return estimates.estimate(path, "mezo", settings, lengths=lengths)

    mezo = at(1e-6)
    assert mezo.seconds_per_epoch - at(0.0).seconds_per_epoch == pytest.approx(8 * 4 * mezo.trainable_params * 1e-6)


def test_prompt_tuning_counts_its_virtual_tokens_and_the_padded_path(tiny_model_dir, monkeypatch):
    path, lengths = str(tiny_model_dir), [40] * 32
    settings = {"per_device_train_batch_size": 4, "max_length": 64, "num_virtual_tokens": 10}
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 0.0)
    flops = estimates.hardware.matmul_flops("cpu", estimates.hardware.use_bf16())

    def passes(est, tokens):  # forward, input gradients, the learned weights' gradients
        per_token = 4 * est.total_params + 2 * est.trainable_params
        return per_token * tokens / (flops * estimates.step_efficiency("cpu", estimates.hardware.use_bf16())
                                     * estimates.PADDED["cpu"])

    # every row is 40 tokens + the 10 learned ones, in padded batches at the padded path's share
    prompt = estimates.estimate(path, "prompt", settings, lengths=lengths)
    assert prompt.tokens_per_epoch == 32 * 50
    assert prompt.seconds_per_epoch == pytest.approx(passes(prompt, 32 * 50))
    prefix = estimates.estimate(path, "prefix", settings, lengths=lengths)
    assert prefix.tokens_per_epoch == 32 * 40  # a prefix is keys and values only
    assert prefix.seconds_per_epoch == pytest.approx(passes(prefix, 32 * 40))
    # a row cut to max_length still gets its learned tokens
    long = estimates.estimate(path, "prompt", settings, lengths=[100] * 32)
    assert long.tokens_per_epoch == 32 * (64 + 10)


def test_measuring_memory_prints_nothing_to_the_servers_terminal():
    # the profiler's own "USDT: ... profiler_start/stop" lines came at every probe, and a server's first
    # probe (from a worker thread) wrote "ERROR: External init callback must run in same thread ..."
    code = ("import threading, torch; from pipelines import estimates; "
            "probe = lambda: print(estimates.peak_allocated(lambda: torch.ones(1000) * 2)); "
            "worker = threading.Thread(target=probe); worker.start(); worker.join(); probe()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [int(n) >= 4000 for n in done.stdout.split()] == [True, True]
    assert done.stderr == "", done.stderr


def test_a_reward_model_computes_no_vocabulary_wide_output_layer(tiny_model_dir, monkeypatch):
    path, lengths = str(tiny_model_dir), [40] * 16
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 0.0)
    flops = estimates.hardware.matmul_flops("cpu", estimates.hardware.use_bf16())
    est = estimates.estimate(path, "reward_model", {"per_device_train_batch_size": 4, "max_length": 64},
                             lengths=lengths)
    text = estimates._config(path).get_text_config()
    head = text.vocab_size * text.hidden_size
    # both replies of each pair; forward, input and adapter gradients, the adapter's own matmuls, less
    # the output layer's forward and input gradients
    per_token = 4 * est.total_params + 2 * est.trainable_params + 4 * est.trainable_params - 4 * head
    assert est.tokens_per_epoch == 2 * 16 * 40
    assert est.seconds_per_epoch == pytest.approx(
        per_token * 2 * 16 * 40 / (flops * estimates.step_efficiency("cpu", estimates.hardware.use_bf16())
                                   * estimates.PADDED["cpu"]))


def test_an_rl_run_counts_the_reward_model_that_scores_its_replies(tiny_model_dir, monkeypatch):
    path, lengths = str(tiny_model_dir), [20] * 16
    settings = {"per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 16}
    monkeypatch.setattr(estimates.hardware, "matmul_flops", lambda device, bf16: 1e9 if bf16 else 5e8)
    alone = estimates.estimate(path, "grpo", settings, lengths=lengths)
    scored = estimates.estimate(path, "grpo", settings, lengths=lengths, scorers=(path,))
    text = estimates._config(path).get_text_config()
    embed = text.vocab_size * text.hidden_size * (1 if text.tie_word_embeddings else 2)
    # held in fp32 beside the run; it reads the 16 x 4 prompts + replies of 36 tokens once, through
    # the body only, in fp32 on the CPU, in padded batches of 8
    total = alone.total_params
    assert (alone.rows, alone.steps_per_epoch) == (16, 8)  # 16 prompts x 4 replies, 8 replies a step
    assert scored.peak_bytes - alone.peak_bytes == 4 * total
    # on a GPU it is held in bf16: half that
    monkeypatch.setattr(estimates, "available_bytes", lambda device: 80 * 2**30)  # (no GPU here to ask)
    on_gpu = [estimates.estimate(path, "grpo", settings, device="cuda", scorers=given) for given in ((), (path,))]
    assert on_gpu[1].peak_bytes - on_gpu[0].peak_bytes == 2 * total
    per_second = 5e8 * estimates.step_efficiency("cpu", False) * estimates.PADDED["cpu"]
    added = scored.seconds_per_epoch - alone.seconds_per_epoch
    assert added == pytest.approx(2 * (total - embed) * 64 * 36 / per_second)
    # a method that learns from pairs has no replies to score
    dpo = [estimates.estimate(path, "dpo", {}, lengths=lengths, scorers=given) for given in ((), (path,))]
    assert dpo[0].peak_bytes == dpo[1].peak_bytes



def test_a_model_that_keeps_padded_batches_is_estimated_padded(tiny_model_dir, tmp_path, monkeypatch):
    """Training pads the batches of a model whose attention the row-by-row path cannot reproduce (a sliding
    window, soft-capped scores, a hybrid's other layers); its estimate counted padding-free batches: only the
    real tokens, at the padding-free speed, and a probe of one row as long as the batch."""
    import json
    import shutil

    capped = tmp_path / "capped"
    shutil.copytree(tiny_model_dir, capped)
    config = json.loads((capped / "config.json").read_text())
    (capped / "config.json").write_text(json.dumps({**config, "attn_logit_softcapping": 50.0}))
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 0.0)
    settings, lengths = {"per_device_train_batch_size": 4, "max_length": 64}, [10, 40] * 16
    plain = estimates.estimate(str(tiny_model_dir), "lora", settings, lengths=lengths)
    padded = estimates.estimate(str(capped), "lora", settings, lengths=lengths)
    assert plain.tokens_per_epoch == plain.real_tokens_per_epoch == 16 * 50
    assert padded.real_tokens_per_epoch == 16 * 50 < padded.tokens_per_epoch  # each batch padded to its longest
    assert padded.seconds_per_epoch == pytest.approx(
        plain.seconds_per_epoch * padded.tokens_per_epoch / (16 * 50) / estimates.PADDED["cpu"])


def test_qlora_on_a_gpu_counts_its_loading_in_the_machines_memory_and_its_adapter_in_fp32(tiny_model_dir,
                                                                                         monkeypatch):
    """The 4-bit loader quantizes one tensor at a time on the GPU, the file in the machine's memory: counted
    as GPU memory, QLoRA looked heavier than LoRA on the GPUs it is for. Its adapter (fp32, as peft's
    prepare_model_for_kbit_training leaves it) was counted at 2 bytes a weight, its moments at 4."""
    monkeypatch.setattr(estimates, "available_bytes", lambda device: 80 * 2**30)  # (no GPU here to ask)
    path = str(tiny_model_dir)
    cpu, gpu = (estimates.estimate(path, "qlora", {}, device=device) for device in ("cpu", "cuda"))
    total, trainable = cpu.total_params, cpu.trainable_params
    text = estimates._config(path).get_text_config()
    embed = text.vocab_size * text.hidden_size  # tied
    assert cpu.weights_bytes == int((total - embed) * (0.5 + 1 / 64) + 4 * embed + 4 * trainable)
    assert cpu.peak_bytes == max(cpu.runtime_bytes + cpu.weights_bytes + cpu.training_bytes,
                                 cpu.runtime_bytes + 4 * total + cpu.weights_bytes)
    assert gpu.peak_bytes == gpu.runtime_bytes + gpu.weights_bytes + gpu.training_bytes


def test_ppo_counts_its_rollout_pass_and_each_update_per_batch(tiny_model_dir, monkeypatch):
    """The estimate counted one forward and backward a batch: PPO reads each batch through the policy and
    the reference, then learns from it `Updates per batch` times, an optimizer step each."""
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 0.0)
    path, lengths = str(tiny_model_dir), [20] * 16
    once, four = (estimates.estimate(path, "ppo", {"ppo_epochs": n}, lengths=lengths) for n in (1, 4))
    t, trained, adapters = estimates._counted(path, "ppo", {})
    generated = 16 * parse(METHODS["ppo"].params, {}).max_completion_length
    decode = 2 * t * generated / (estimates.hardware.matmul_flops("cpu", estimates.hardware.use_bf16())
                                  * estimates.DECODE_EFFICIENCY["cpu"])
    one_pass = 4 * t + 2 * trained + 4 * adapters
    assert (four.seconds_per_epoch - decode) / (once.seconds_per_epoch - decode) == pytest.approx(
        (4 * t + 4 * one_pass) / (4 * t + one_pass))
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 1e-6)
    stepped = estimates.estimate(path, "ppo", {"ppo_epochs": 4}, lengths=lengths)
    assert stepped.seconds_per_epoch - four.seconds_per_epoch == pytest.approx(
        4 * stepped.steps_per_epoch * trained * 1e-6)


def test_badam_counts_weight_gradients_for_its_one_block_only(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 0.0)
    path, lengths = str(tiny_model_dir), [40] * 16
    badam, full = (estimates.estimate(path, key, {}, lengths=lengths) for key in ("badam", "full"))
    assert badam.trainable_params < full.trainable_params == full.total_params
    t = full.total_params
    assert badam.seconds_per_epoch / full.seconds_per_epoch == pytest.approx((4 * t + 2 * badam.trainable_params)
                                                                             / (6 * t))


@pytest.fixture(scope="module")
def other_families(tmp_path_factory, real_tokenizer_dir):
    """Tiny GPT-2 (its blocks at transformer.h, Conv1D layers) and GPT-NeoX (gpt_neox.layers) models."""
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    made = {}
    for family, model_class, sizes in (
            ("GPT2", transformers.GPT2LMHeadModel, dict(n_embd=64, n_layer=3, n_head=4, n_positions=256)),
            ("GPTNeoX", transformers.GPTNeoXForCausalLM,
             dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128))):
        config = getattr(transformers, f"{family}Config")(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                                          eos_token_id=tokenizer.eos_token_id, **sizes)
        torch.manual_seed(0)
        made[family] = tmp_path_factory.mktemp(family)
        model_class(config).save_pretrained(made[family])
        tokenizer.save_pretrained(made[family])
    return made


@pytest.mark.parametrize("family, blocks, norm", [("GPT2", "transformer.h", "transformer.ln_f"),
                                                  ("GPTNeoX", "gpt_neox.layers", "gpt_neox.final_layer_norm")])
def test_freeze_tuning_and_badam_find_the_blocks_of_other_families(other_families, family, blocks, norm):
    """Both read model.model.layers (or '.layers.N.' names): on GPT-2, GPT-NeoX and OPT they stopped the
    Method table, the estimate and the run with AttributeError or IndexError."""
    from transformers import AutoModelForCausalLM

    from pipelines.methods import blockwise, full

    model = AutoModelForCausalLM.from_pretrained(other_families[family])
    full.train_last_blocks(model, SimpleNamespace(freeze_trainable_layers=1))
    learning = {name.rsplit(".", 1)[0].split(".weight")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert all(name.startswith((f"{blocks}.2.", norm)) for name in learning) and any(n.startswith(norm) for n in learning)
    assert blockwise._blocks(model) == [f"{blocks}.{i}." for i in range(3)]
    for key in ("freeze", "badam"):
        assert estimates.estimate(str(other_families[family]), key, {}, device="cpu").trainable_params > 0


def test_an_adapter_that_cannot_wrap_a_models_layers_is_one_sentence(other_families):
    """LoHa and LoKr on GPT-2's Conv1D layers: PEFT's TypeError stopped the Method table and the run."""
    from pipelines.methods import ConfigError

    with pytest.raises(ConfigError) as err:
        estimates.estimate(str(other_families["GPT2"]), "loha", {}, device="cpu")
    assert str(err.value).startswith("this adapter cannot be put on this model's layers (Target module of type "
                                     "<class 'transformers.pytorch_utils.Conv1D'> not supported")
    assert str(err.value).endswith("); use LoRA")
    assert estimates.estimate(str(other_families["GPT2"]), "lora", {}, device="cpu").trainable_params > 0


@pytest.mark.parametrize("key, values, says", [
    ("adalora", {"init_r": 8, "target_r": 8}, "parameter 'target_r': the final average rank (8) must be below the "
                                              "starting rank (8), which AdaLoRA prunes down to it; for a fixed rank "
                                              "use LoRA"),
    ("prefix", {"prefix_init_text": "  "}, "parameter 'prefix_init_text': the starting instruction is empty; write "
                                           "a few words for the prefix to start from"),
    ("prompt", {"prompt_tuning_init_text": ""}, "parameter 'prompt_tuning_init_text': the starting instruction is "
                                                "empty; write a few words for the soft prompt to start from, or "
                                                "start it from RANDOM"),
])
def test_settings_that_stop_a_run_midway_are_refused_before_it_starts(studio, tiny_model_dir, key, values, says):
    """AdaLoRA with nothing to prune stopped at its first budget step ("kthvalue(): selected number k out of
    range"); an empty starting instruction stopped prefix and prompt tuning at their start."""
    from pipelines.methods import ConfigError

    with pytest.raises(ConfigError) as err:
        studio.start_run(model=str(tiny_model_dir), dataset="quillpad_faq", method=key, params=values)
    assert str(err.value) == says
    assert studio.list_runs() == []
    METHODS["prefix"].validate(parse(METHODS["prefix"].params, {"prefix_init_text": "", "prefix_projection": True}))
    METHODS["prompt"].validate(parse(METHODS["prompt"].params, {"prompt_tuning_init_text": "",
                                                                "prompt_tuning_init": "RANDOM"}))


def test_qlora_counts_unpacking_its_4bit_weights_in_every_pass(tiny_model_dir, monkeypatch):
    """QLoRA's time was LoRA's: bitsandbytes unpacks every 4-bit weight before each forward and backward
    matmul (on a CPU a step took 4x LoRA's). Measured per weight on this machine, counted per batch."""
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 0.0)
    path, lengths = str(tiny_model_dir), [40] * 16
    settings = {"per_device_train_batch_size": 4}

    def at(per_weight, **more):
        monkeypatch.setattr(estimates.hardware, "dequant_seconds_per_weight", lambda device, bf16: per_weight)
        return estimates.estimate(path, "qlora", {**settings, **more}, lengths=lengths, eval_rows=8)

    free, paid = at(0.0), at(1e-9)
    text = estimates._config(path).get_text_config()
    quantized = paid.total_params - text.vocab_size * text.hidden_size  # (tied embeddings stay unpacked)
    assert paid.seconds_per_epoch - free.seconds_per_epoch == pytest.approx(4 * 2 * quantized * 1e-9)
    checkpointed = at(1e-9, gradient_checkpointing=True).seconds_per_epoch - at(0.0, gradient_checkpointing=True)\
        .seconds_per_epoch
    assert checkpointed == pytest.approx(4 * 3 * quantized * 1e-9)
    assert paid.eval_seconds > free.eval_seconds
    assert estimates.hardware._measure_dequant("cpu", False) > 0  # the real measurement runs here


def test_freeze_tuning_leaves_a_norm_before_the_first_block_frozen():
    """Bloom normalises the embeddings before its first block: taken for the final norm, it sent the backward
    pass through every frozen block (no memory saved, and more than the estimate said)."""
    import transformers

    from pipelines.methods import full

    config = transformers.BloomConfig(vocab_size=128, hidden_size=32, n_layer=3, n_head=4)
    model = transformers.BloomForCausalLM(config)
    name, blocks = full.decoder_blocks(model)
    assert (name, len(blocks)) == ("transformer.h", 3)
    assert full.final_norms(model, name) == [model.transformer.ln_f]


def test_passes_over_each_batch_of_replies_repeat_the_learning_not_the_writing(tiny_model_dir, monkeypatch):
    """GRPO's μ (num_iterations): each batch of replies is written once and learned from μ times. The steps
    are μ times as many; the writing's time stays, the learning's doubles at μ = 2 (the reference's forward
    runs once a batch, and one more keeps the writing model's probabilities for the clip)."""
    path, lengths = str(tiny_model_dir), [20] * 16
    settings = {"per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 16}
    monkeypatch.setattr(estimates.hardware, "matmul_flops", lambda device, bf16: 1e9 if bf16 else 5e8)
    monkeypatch.setattr(estimates.hardware, "optimizer_seconds_per_weight", lambda device: 0.0)
    one, two, three = (estimates.estimate(path, method, {**settings, "num_iterations": n}, lengths=lengths)
                       for method, n in (("grpo", 1), ("grpo", 2), ("grpo", 3)))
    assert (one.steps_per_epoch, two.steps_per_epoch, three.steps_per_epoch) == (8, 16, 24)
    flops = 5e8 if not estimates.hardware.use_bf16() else 1e9
    writing = 2 * one.total_params * 16 * 4 * 16 / (flops * estimates.DECODE_EFFICIENCY["cpu"])
    learning = one.seconds_per_epoch - writing
    assert two.seconds_per_epoch == pytest.approx(writing + 2 * learning)
    assert two.seconds_per_epoch < three.seconds_per_epoch < writing + 3 * learning
    assert two.peak_bytes == one.peak_bytes  # (the same batch in memory)
    rloo = estimates.estimate(path, "rloo", {**settings, "num_iterations": 2}, lengths=lengths)
    assert rloo.steps_per_epoch == 16
    # TRL leaves out a last batch of prompts too few for a step: 9 prompts, 2 a step, 4 steps (5 were counted)
    assert estimates.estimate(path, "grpo", settings, lengths=[20] * 9).steps_per_epoch == 4
    # without a KL leash, no reference forward: the learning's time is the policy's alone
    free = estimates.estimate(path, "grpo", {**settings, "beta": 0.0}, lengths=lengths)
    assert free.seconds_per_epoch == pytest.approx(
        one.seconds_per_epoch - 2 * one.total_params * one.tokens_per_epoch / (flops * estimates.step_efficiency(
            "cpu", estimates.hardware.use_bf16())))
