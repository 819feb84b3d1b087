"""Before a run starts: how many weights a method trains on a model, the peak memory it will
need and the time an epoch will take.

Peak memory = runtime + weights + what training allocates on top (activations kept for the
backward pass, temporaries, gradients, optimizer state). Weight counts come from the model's
config on PyTorch's 'meta' device (nothing loads). What training allocates is *measured*, not
guessed: the method is applied to copies of the architecture cut to one and two blocks, a
forward and backward pass runs at two lengths under PyTorch's profiler, whose memory timeline
records every allocation and free, and the four peaks fit `a + b*layers + c*tokens + d*layers*tokens` exactly, which is then read
at the real depth and the longest batch. Time = training FLOPs / this machine's measured
matmul speed x an efficiency measured by bench/methods.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache

from pipelines import evals, hardware, probe_cache, reward_model
from pipelines.methods import METHODS, Setup, get_method, parse

GB = 1024**3
# A CPU training process holds Python, PyTorch, transformers, TRL, the tokenizer and the
# dataset before any model weight: 0.5-0.56 GB measured on this studio's worker.
RUNTIME_BYTES = {"cpu": int(0.55 * GB), "cuda": int(0.55 * GB)}  # cuda: context + kernels
# The probes count tensor bytes at the allocator; a process holds more: glibc keeps freed
# activation memory in its arenas for the next step. Gradients and optimizer moments live through
# the whole run and are not churned, so the overhead multiplies only the rest (activations and
# temporaries). Peak RSS of that part / its probed bytes: see bench/methods.py. CUDA's caching
# allocator is tighter (not measured here yet: a conservative guess).
ALLOCATOR_OVERHEAD = {"cpu": 1.3, "cuda": 1.15}
# Share of the measured bf16 matmul speed a training step reaches (attention, norms, the
# optimizer and Python overhead take the rest): 0.27-0.33 in bench/methods.py runs here.
STEP_EFFICIENCY = {"cpu": 0.3, "cuda": 0.35}
# In fp32 (a CPU whose bf16 matmuls are slower: AVX2 only) a step reaches a larger share of the
# measured fp32 speed: LoRA's FAQ run took 56 s on a 2-core AVX2 AMD EPYC (fp32 matmul 130-160
# GFLOP/s, bf16 1.4) where 0.3 of it predicted 136 s (bench/methods.py).
FP32_STEP_EFFICIENCY = 0.7
# Methods that keep TRL's padded batches (prompt learning, AdaLoRA, MAM, UniPELT; the preference
# methods' pairs) reach a smaller share: attention through a mask and the output layer and loss at
# every position, where padding-free batches score the learned tokens only. Measured with
# bench/methods.py on a 2-core AMD EPYC: prefix tuning's run 32-33 s against 24 s predicted at the
# padding-free share, DPO's 64-79 s against 48 s. Not measured on a GPU (taken as equal there).
PADDED = {"cpu": 0.75, "cuda": 1.0}
# Adapters that rebuild a whole-size weight from their factors in every forward and backward pass
# (DoRA: W + BA and its norm; LoHa: a Hadamard product of two low-rank products; LoKr: a Kronecker
# product), and AdaLoRA's per-step rank bookkeeping: work per adapted weight per step, in units of
# an AdamW update of one weight (both memory-bound, so it follows the machine's measured optimizer
# speed). Measured with bench/methods.py on the sample FAQ against LoRA's steps, over two or three
# runs each on a 2-core AMD EPYC (whose run times vary by up to a third between runs): DoRA's 14
# steps took 14-26 s more, LoHa's 18-65 s, LoKr's 16-17 s, AdaLoRA's 28-49 s.
REBUILD = {"dora": 3.5, "loha": 3.5, "lokr": 3.0, "adalora": 5.0}
# Reinforcement learning writes its replies one token at a time before it trains on them; a
# decoding step of a batch of replies reaches a small share of the matmul speed (memory-bound).
# Measured by bench/grpo_quality.py's run on the built-in model here.
DECODE_EFFICIENCY = {"cpu": 0.02, "cuda": 0.01}
# Tokens of the two probe passes. Shorter probes mistake per-layer costs for per-token ones: at (32,
# 64) a 500-token batch on all 30 blocks came out at 0.85 GB for BAdam (0.65 measured) and 0.80 GB
# for full tuning (1.10); at (128, 256) both matched (bench/estimate_probe.py).
PROBE_TOKENS = (128, 256)
# PyTorch's profiler is one per process: two at once (two browser tabs estimating) crash it.
_PROFILER = threading.Lock()


@dataclass
class Estimate:
    method: str
    total_params: int
    trainable_params: int
    weights_bytes: int
    training_bytes: int  # activations, temporaries, gradients, optimizer moments (longest batch)
    runtime_bytes: int
    peak_bytes: int
    available_bytes: int
    device: str
    tokens_per_epoch: int | None = None  # what the model computes on: padding included where batches pad
    # what the trainer counts (no padding, no learned virtual tokens): what tokens/s on the curves
    # counts, so what a past run's speed is compared with (None for RL: its replies' length is not known)
    real_tokens_per_epoch: int | None = None
    seconds_per_epoch: float | None = None
    eval_seconds: float = 0.0  # the whole run's passes over its held-out rows (pipelines/evals.py)
    layers: int = 1  # the model's blocks (a sharded model gathers one at a time)
    rows: int = 0  # training rows (prompts for RL)
    steps_per_epoch: int | float | None = None  # optimizer steps (PPO's: a fraction, its batches cross epochs)

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable_params / max(1, self.total_params)

    @property
    def fits(self) -> bool:
        return self.peak_bytes <= self.available_bytes

    def verdict(self) -> str:
        where = "GPU" if self.device == "cuda" else "RAM"
        if self.fits:
            return f"fits in your {self.available_bytes / GB:.0f} GB of {where}"
        return (f"needs about {self.peak_bytes / GB:.1f} GB, more than your {self.available_bytes / GB:.0f} GB "
                f"of {where}: lower the batch size or max length, turn on gradient checkpointing, or "
                "pick a lighter method (QLoRA, LoRA-FA)")


def available_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _config(model_path: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path, trust_remote_code=False)


def _packed(method, model_path: str) -> bool:
    """Does the run train on padding-free batches? Where the method allows and the model's attention is
    what pipelines/packing.py reproduces (train_sft.py asks the same); else it pads."""
    from pipelines import packing

    return bool(method.padding_free) and packing.model_supports(_config(model_path))


def _counting_config(method, params, setup: Setup, meta: bool):
    """The method's PEFT config with data-dependent starts (SVD, text) replaced by plain ones:
    same shapes and counts, and it works on the meta device."""
    config = method.peft_config(params, setup)
    if getattr(config, "init_lora_weights", True) not in (True, False):
        config = dataclasses.replace(config, init_lora_weights=True)
    if getattr(config, "prompt_tuning_init", None) not in (None, "RANDOM"):
        config = dataclasses.replace(config, prompt_tuning_init="RANDOM", prompt_tuning_init_text=None,
                                     tokenizer_name_or_path=None)
    if meta and getattr(config, "mask_fn", None) is not None:  # SHiRA: which entries learn does not change how many
        config = dataclasses.replace(config)
        config.mask_fn = None
    return config


def _apply(model, method, params, setup: Setup, meta: bool = False):
    if method.peft_config is None:
        method.trainable(model, params)
        return model
    from pipelines.methods import adapted

    model = adapted(model, _counting_config(method, params, setup, meta))
    if method.optimizer is not None and method.key == "lorafa":  # A is frozen by its optimizer
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.requires_grad_(False)
    return model


def count_params(model_path: str, method_key: str, values: dict | None = None) -> tuple[int, int]:
    """(the model's own weights, weights that train once the method is applied); nothing loads.

    An adapter's weights come on top of the model's own: LoRA at 3.6% adds 3.6% to the total."""
    return _counted(model_path, method_key, values)[:2]


def _counted(model_path: str, method_key: str, values: dict | None = None) -> tuple[int, int, int]:
    """count_params, and the weights each token multiplies through in the adapters' own matmuls:
    their trainable ones, and VeRA's frozen random matrices, shared but sliced to every adapted
    layer's size (at its default rank 256 about half again the built-in model's own)."""
    import torch
    from transformers import AutoModelForCausalLM

    method = get_method(method_key)
    params = parse(method.params, values)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(_config(model_path))
        total = sum(p.numel() for p in model.parameters())
        model = _apply(model, method, params, Setup(model_path=model_path), meta=True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if method.key == "adalora":  # PEFT marks the singular values as a separate list; all count
        trainable = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    adapters = trainable if method.peft_config is not None and not method.prompt_learning else 0
    for module in model.modules():
        for _name in getattr(module, "vera_lambda_d", {}):
            adapters += module.r[_name] * (module.in_features + module.out_features)
    return total, trainable, adapters


_PROFILED = threading.Event()  # a profile has started in this process


@contextlib.contextmanager
def _quiet_first_start():
    """The process's first profile, started from another thread than the main one (a server's
    worker), makes Kineto write "ERROR: External init callback must run in same thread as
    registerClient" straight to the terminal (file descriptor 2, whatever its log level), although
    the profile works. That start alone goes to /dev/null."""
    first = not _PROFILED.is_set()
    _PROFILED.set()
    if not first or threading.current_thread() is threading.main_thread():
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def peak_allocated(fn) -> int:
    """Peak bytes of the tensors `fn()` allocates (and has not freed yet) at any moment.

    Read from the PyTorch profiler's memory events, one per allocation (+bytes) and free
    (-bytes) at the allocator, forward and backward alike; tensors that existed before do not
    count. Only memory is profiled (no Python stacks: those would trace every thread of a
    running server)."""
    import torch

    # Kineto prints "USDT: ... profiler_start" and "profiler_stop" to the server's terminal at every
    # profile, eight lines per method measured; its levels run to 5 (USDT), so 6 keeps it quiet. Read
    # when a profile starts; a level the person set is kept.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    marker = 12_347  # an odd-sized allocation names this thread among the profiler's events
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
    with _PROFILER:
        with _quiet_first_start():
            prof.__enter__()
        try:
            torch.empty(marker, dtype=torch.uint8)  # allocated and freed at once
            fn()
        finally:
            prof.__exit__(None, None, None)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    # the profiler sees the whole process: keep this thread's events (a server's other threads
    # allocate meanwhile); on CPU the backward pass runs on the calling thread too
    thread = next(e.start_thread_id() for e in events if e.nbytes() == marker)
    live = peak = 0
    mine = [(e.start_ns(), e.nbytes()) for e in events if e.start_thread_id() == thread and abs(e.nbytes()) != marker]
    for _start, nbytes in sorted(mine):
        live += nbytes
        peak = max(peak, live)
    return peak


def _training_peak(model, tokens: int, bf16: bool, padding_free: bool, forward_only: bool = False) -> int:
    """Peak bytes one forward and backward pass allocate beyond the weights: activations,
    temporaries and gradients, on the path training takes (AdamW's moments are exact arithmetic:
    see `estimate`). Every token is learned: the most the output layer can cost."""
    return _training_peaks(model, (tokens,), bf16, padding_free, forward_only)[0]


def _training_peaks(model, sizes: tuple, bf16: bool, padding_free: bool, forward_only: bool = False) -> list[int]:
    """`_training_peak` at each number of tokens in `sizes`, on one model (built and wrapped once)."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    vocab = base.config.get_text_config().vocab_size
    if padding_free:  # one row of a padding-free batch, as pipelines/packing.py trains
        from pipelines import packing

        padding_free = packing.switch(base)  # (one that cannot switch pads, as train_sft does)
    if not padding_free:  # TRL's SFT path (prompt learning, AdaLoRA)
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(base, outputs=("log_probs", "entropy", "is_top1"))  # as TRL's SFT does

    def forward(ids):
        tokens = ids.shape[1]
        if padding_free:
            from pipelines import packing

            bounds = torch.tensor([0, tokens], dtype=torch.int32)
            batch = {"input_ids": ids, "labels": ids, "position_ids": torch.arange(tokens)[None],
                     "cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": tokens,
                     "max_length_k": tokens}
            return packing.answer_loss(model, batch, dtype=torch.float32)[0]  # (as sft_trainer on a CPU)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, fused_lm_head=True)
        return -out.log_probs.mean()

    peaks = []
    for tokens in sizes:
        ids = torch.randint(0, vocab, (1, tokens))

        def step(ids=ids):
            if forward_only:  # zeroth-order (MeZO): loss measurements without gradients
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    forward(ids)
                return
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = forward(ids)
            loss.backward()

        # once unmeasured: a first pass allocates one-time things (kernel workspaces for new
        # shapes, lazily built tables) that would otherwise look like a per-token cost
        step()
        model.zero_grad(set_to_none=True)
        peaks.append(peak_allocated(step))
        model.zero_grad(set_to_none=True)
    return peaks


def _probe_model(model_path: str, layers: int, method, params):
    import torch
    from transformers import AutoModelForCausalLM

    config = _config(model_path)
    text = config.get_text_config()
    text.num_hidden_layers = layers
    if hasattr(text, "layer_types") and text.layer_types:
        text.layer_types = text.layer_types[:layers]
    # a mixture-of-experts model whose first blocks are dense (DeepSeek's first_k_dense_replace, Qwen-MoE's
    # mlp_only_layers or sparse step): the probe's one or two blocks are expert blocks, like most of the model's
    for name, value in (("first_k_dense_replace", 0), ("mlp_only_layers", []), ("decoder_sparse_step", 1)):
        if getattr(text, name, None):
            setattr(text, name, value)
    # allocated, not initialised: memory does not depend on the values, and random init of a
    # 50k-word embedding costs more than the whole probe
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model = model.to_empty(device="cpu")
    for t in [*model.parameters(), *model.buffers()]:
        t.data.zero_()
    torch.manual_seed(0)
    freeze_n = getattr(params, "freeze_trainable_layers", None)
    if freeze_n is not None:  # probe depth is 1-2: train as many of them as the real run would
        params = dataclasses.replace(params, freeze_trainable_layers=min(freeze_n, layers))
    model = _apply(model, method, params, Setup(model_path=model_path, total_steps=100, num_layers=layers))
    model.train()
    if getattr(params, "gradient_checkpointing", False):  # as the trainer does: recompute each block in backward
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if method.peft_config is not None:
            model.enable_input_require_grads()
    return model


def probe_identity(method_key: str, values: dict | None) -> tuple:
    """The settings a probe depends on, every one spelled out (defaults too): the adapter's, the
    studio's and gradient checkpointing. The trainer's others (learning rate, epochs, batch size, max
    length, ...) change nothing a probe measures, so editing them in the Train tab does not probe again,
    and the Method table's defaults and the Train tab's untouched form share one probe."""
    from pipelines.methods import describe

    params = parse(get_method(method_key).params, values)
    return tuple(sorted((info.name, getattr(params, info.name)) for info in describe(type(params))
                        if info.target != "trainer" or info.name == "gradient_checkpointing"))


def _probe_of(method_key: str, values: dict | None) -> tuple[str, tuple]:
    """(method, settings) the memory probe measures for this method and these settings."""
    probe_key, probe_values = method_key, dict(values or {})
    if get_method(method_key).quantized:  # the probe cannot quantize random weights: LoRA trains the same adapter
        probe_key = "lora"
        probe_values = {k: v for k, v in probe_values.items() if k in METHODS["lora"].params.__dataclass_fields__}
    return probe_key, probe_identity(probe_key, probe_values)


def measured(model_path: str, method_key: str, values: dict | None = None) -> bool:
    """Whether this method's estimate for this model is at hand, or would first measure it (a few
    seconds of both cores: the Method tab waits for a training run to end before measuring)."""
    probe_key, frozen = _probe_of(method_key, values)
    return probe_cache.read(probe_cache.key(_config(model_path), probe_key, frozen, hardware.use_bf16(),
                                            PROBE_TOKENS)) is not None


def training_model(model_path: str, method_key: str, frozen_values: tuple, bf16: bool) -> tuple:
    """(a, b, c, d) in bytes: training allocations = a + b*layers + c*tokens + d*layers*tokens.
    Kept on disk (probe_cache), so a restarted studio does not measure every method again. Measured once
    when asked for twice at once (the page's estimate and the Method tab's table): the second asker
    waits for the first's measurement. Each measured the probe itself, and one estimate of a pair made
    together could read the other's measurement, a few kilobytes apart."""
    args = (model_path, method_key, frozen_values, bf16)
    with _MEASURING_LOCK:
        lock = _MEASURING.setdefault(args, threading.Lock())
    with lock:
        return _training_model(*args)


_MEASURING: dict[tuple, threading.Lock] = {}  # one small lock per probe asked for since the studio started
_MEASURING_LOCK = threading.Lock()


@lru_cache(maxsize=256)
def _training_model(model_path: str, method_key: str, frozen_values: tuple, bf16: bool) -> tuple:
    key = probe_cache.key(_config(model_path), method_key, frozen_values, bf16, PROBE_TOKENS)
    kept = probe_cache.read(key)
    if kept is not None:
        return kept
    fitted = _fit(model_path, method_key, frozen_values, bf16)
    probe_cache.write(key, fitted)
    return fitted


training_model.cache_clear = _training_model.cache_clear  # (a restarted studio, in tests and bench/)


def _fit(model_path: str, method_key: str, frozen_values: tuple, bf16: bool) -> tuple:
    method = get_method(method_key)
    params = parse(method.params, dict(frozen_values))
    t1, t2 = PROBE_TOKENS
    m = {}
    for n in (1, 2):  # one model per depth, measured at both lengths
        peaks = _training_peaks(_probe_model(model_path, n, method, params), PROBE_TOKENS, bf16,
                                _packed(method, model_path), method.zeroth_order)
        m.update({(n, t): peak for t, peak in zip(PROBE_TOKENS, peaks)})
    # No cost can be negative: where the peak falls at another moment of the pass in one probe than in
    # another (full tuning on an AVX2 CPU: its peak is the embedding's gradient, not the layers'), a
    # negative per-layer-per-token slope extrapolated to 30 layers and 8k tokens gave -54 GB; such a
    # slope is taken as 0 and each other cost as at least what the probes showed.
    d = max(0.0, ((m[2, t2] - m[1, t2]) - (m[2, t1] - m[1, t1])) / (t2 - t1))
    b = max(0.0, (m[2, t1] - m[1, t1]) - d * t1, (m[2, t2] - m[1, t2]) - d * t2)
    c = max(0.0, (m[1, t2] - m[1, t1]) / (t2 - t1) - d)
    a = m[1, t1] - b - c * t1 - d * t1
    return a, b, c, d


def _batches(lengths: list[int], batch: int, max_length: int, seed: int) -> list[list[int]]:
    import random

    order = [min(n, max_length) for n in lengths]
    random.Random(seed).shuffle(order)
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def padded_tokens(lengths: list[int], batch: int, max_length: int, seed: int = 42) -> int:
    """Tokens the model processes per epoch when batches are padded to their longest example (a
    short last batch holds its own rows only: nothing pads it to the batch size)."""
    return sum(len(b) * max(b) for b in _batches(lengths, batch, max_length, seed))


def batch_tokens(lengths: list[int], batch: int, max_length: int, padding_free: bool, seed: int = 42) -> tuple:
    """(tokens processed per epoch, tokens in the largest batch): padding-free batches hold only
    their rows' tokens, padded ones every row at the longest row's length."""
    batches = _batches(lengths, batch, max_length, seed)
    if padding_free:
        return sum(map(sum, batches)), max(map(sum, batches))
    return padded_tokens(lengths, batch, max_length, seed), max(len(b) * max(b) for b in batches)


def step_efficiency(device: str, bf16: bool) -> float:
    """Share of the measured matmul speed (in the dtype training uses) a training step reaches."""
    return STEP_EFFICIENCY[device] if bf16 or device != "cpu" else FP32_STEP_EFFICIENCY


def _scorer(model_path: str, device: str = "cpu") -> tuple[int, int]:
    """(weights' bytes, multiply-adds per token) of a studio reward model on this base, loaded beside
    the run (pipelines/reward_model.load: in fp32 on the CPU, in bf16 on the GPU); it reads every
    prompt + reply once, through the body only (a one-number score head, no vocabulary-wide output layer)."""
    text = _config(model_path).get_text_config()
    total = count_params(model_path, "lora")[0]
    embed = text.vocab_size * text.hidden_size * (1 if text.tie_word_embeddings else 2)
    return (4 if device == "cpu" else 2) * total, total - embed


def estimate(model_path: str, method_key: str, values: dict | None = None, *,
             lengths: list[int] | None = None, device: str | None = None, eval_rows: int = 0,
             scorers: tuple[str, ...] = (), sequence_lengths: list[tuple[int, ...]] | None = None) -> Estimate:
    """Peak memory and time per epoch for one run. `lengths`: tokens per training example
    (without it the longest batch is taken as full `max_length` and time is not estimated);
    `eval_rows`: how many held-out rows the run measures itself on (taken as long as the training
    ones), which adds the time of those passes; `scorers`: the base model of each reward model
    that scores an RL run's replies; `sequence_lengths`: the tokens of each sequence of each
    training example (a pair's chosen and rejected: `lengths` holds the longer), for the count of
    real tokens (without them each sequence is taken as long as the longer)."""
    method = get_method(method_key)
    params = parse(method.params, values)
    device = device or ("cuda" if hardware.has_cuda() else "cpu")
    bf16 = hardware.use_bf16()
    total, trainable, adapters = _counted(model_path, method_key, values)
    text = _config(model_path).get_text_config()
    packed = _packed(method, model_path)
    layers = text.num_hidden_layers
    head = text.vocab_size * text.hidden_size  # the output layer (the embeddings' own weights when tied)
    embed = head * (1 if text.tie_word_embeddings else 2)  # and the head

    # weights: fp32, except QLoRA's 4-bit blocks (0.5 byte + quantization constants: 1/64 byte
    # per weight with double quantization, 4/64 without), its fp32 embeddings and norms, and its
    # adapter, fp32 too (peft's prepare_model_for_kbit_training leaves what trains in fp32)
    added = trainable if method.peft_config is not None else 0  # adapters come on top
    weights = 4 * (total + added)
    if method.reference and method.peft_config is None:  # full-weight DPO keeps a frozen copy to compare with
        weights += 4 * total
    if method.quantized:
        quant = total - embed
        per = 0.5 + (1 / 64 if params.bnb_4bit_use_double_quant else 4 / 64)
        weights = int(quant * per + 4 * embed + 4 * trainable)
    # a preference batch holds both answers of each pair: twice the sequences in one pass
    sequences = 2 if method.data_kind == "preference" else 1
    max_length = getattr(params, "max_length", None)
    generated, rows = 0, len(lengths or [])
    real_tokens = None
    if lengths and not method.rewards:  # each sequence cut at max_length, as the trainers cut it
        each = sequence_lengths or [(n,) * sequences for n in lengths]
        real_tokens = sum(min(n, max_length or n) for seqs in each for n in seqs)
    if method.rewards:  # RL: each prompt becomes num_generations sequences of prompt + a full-length reply
        reply, replies = params.max_completion_length, getattr(params, "num_generations", 1)  # PPO: one each
        generated = len(lengths or []) * replies * reply
        lengths = [n + reply for n in lengths for _ in range(replies)] if lengths else None
        max_length = max(lengths) if lengths else 512 + reply
    if method.virtual_inputs and max_length:  # the learned tokens, after each row is cut to max_length
        max_length += params.num_virtual_tokens
        lengths = [n + params.num_virtual_tokens for n in lengths] if lengths else None
    tokens_epoch = None
    if lengths:
        tokens_epoch, tokens = batch_tokens(lengths, params.per_device_train_batch_size, max_length,
                                            packed, params.seed)
        tokens_epoch, tokens = sequences * tokens_epoch, sequences * tokens
    else:  # no data yet: the worst case, every row at max_length
        tokens = sequences * params.per_device_train_batch_size * max_length
    a, b, c, d = training_model(model_path, *_probe_of(method_key, values), bf16)
    # AdamW keeps two moments per trainable weight, in the weight's dtype (fp32), alive through
    # every later forward and backward pass
    moments = method.state_bytes(model_path, params) if method.state_bytes else trainable * 8
    if method.quantized:  # fp32 adapter: 2 x 4 bytes, or 2 x 1 byte with an 8-bit optimizer
        from pipelines.methods.qlora import resolve_optim

        moments = trainable * (2 if "8bit" in resolve_optim(params.optim, device == "cuda") else 8)
    # blocks below the first trainable one keep nothing for backward: freeze tuning pays per
    # block only for the blocks that train (the probe trains all of its one or two)
    depth = min(params.freeze_trainable_layers, layers) if hasattr(params, "freeze_trainable_layers") else layers
    # the allocator's overhead is what a training step's churn of activations and temporaries leaves
    # unusable; a forward pass alone (MeZO) frees each layer's work before the next. The gradients
    # (fp32, one per trainable weight) are in the probe but live through the run, like the moments.
    overhead = 1.0 if method.zeroth_order else ALLOCATOR_OVERHEAD[device]
    probed = a + b * depth + c * tokens + d * depth * tokens
    grads = 0 if method.zeroth_order else min(probed, 4 * trainable)
    training = moments + grads + (probed - grads) * overhead
    runtime = RUNTIME_BYTES[device]
    peak = int(runtime + weights + training)
    # loading reads the full-precision weights before quantizing them (QLoRA), or reads the file into
    # memory beside the weights made from it (PiSSA, OLoRA: not memory-mapped, see train_sft.load_base).
    # On a GPU that file is in the machine's memory, not the GPU's: the 4-bit loader quantizes one tensor
    # at a time on the GPU (counted there, it made QLoRA look heavier than LoRA on the GPUs it is for)
    if device == "cpu" and (method.quantized or method.converts_base):
        peak = max(peak, int(runtime + 4 * total + weights))
    scoring = [_scorer(path, device) for path in scorers] if method.rewards else []
    weights += sum(held for held, _ in scoring)
    peak += sum(held for held, _ in scoring)

    seconds = steps = None
    padded = not packed and not method.rewards  # (RL's passes: see DECODE_EFFICIENCY)
    if lengths:
        # forward 2 FLOPs per weight per token; backward 2 for the input gradients (+2 for the
        # weight gradients of what trains: an adapter, BAdam's one block, or every weight); checkpointing
        # re-runs the forward; DPO and KTO run the reference forward only, without gradients, and KTO runs
        # its mismatched-pair KL batch forward only through both the model and the reference (TRL's
        # KTOTrainer._compute_kl_logps)
        per_token = 2 * total + 2 * total + 2 * trainable
        per_token += 4 * adapters  # the adapters' own matmuls: forward and input gradients
        if hasattr(params, "freeze_trainable_layers"):  # freeze tuning: the backward pass stops at the
            # lowest block that trains (input gradients through the head and those blocks only)
            per_token = 2 * total + 2 * (text.vocab_size * text.hidden_size + trainable) + 2 * trainable
        if method.zeroth_order:  # MeZO: two forward passes, no backward
            per_token = 2 * 2 * total
        if getattr(params, "gradient_checkpointing", False):  # PPO's own loop has no checkpointing
            per_token += 2 * total
        # the reference's forward (DPO, KTO; GRPO's and RLOO's KL leash, which with a leash of 0 is not run)
        referenced = method.reference and getattr(params, "beta", 1) != 0
        if referenced:
            per_token += 2 * total * (2 if method.data_kind == "kto" else 1)
        if method.data_kind == "kto":
            per_token += 2 * total
        if hasattr(params, "ppo_epochs"):  # PPO (pipelines/ppo.py): the rollout's forward through the policy
            # and the reference, then `ppo_epochs` forward and backward passes over the batch (one counted)
            per_token = 2 * total + 2 * total + params.ppo_epochs * (4 * total + 2 * trainable + 4 * adapters)
        if method.reward_model:  # a one-number score head, no vocabulary-wide output layer: its
            per_token -= 4 * head  # forward and input gradients are not computed
        passes = getattr(params, "num_iterations", 1)  # GRPO's and RLOO's passes over each batch of replies
        if method.rewards and hasattr(params, "num_iterations"):  # the training passes repeat; the reference's
            # forward runs once a batch, and so does one that keeps the probabilities of the model that wrote the
            # replies, for the clip (TRL's old_per_token_logps: GRPO's with more than one pass, RLOO's always)
            once = 2 * total if referenced else 0
            kept = 2 * total if passes > 1 or method.trl == "rloo" else 0
            per_token = (per_token - once) * passes + once + kept
        flops = hardware.matmul_flops(device, bf16)
        efficiency = step_efficiency(device, bf16) * (PADDED[device] if padded else 1.0)
        seconds = per_token * tokens_epoch / (flops * efficiency)
        per_step = params.per_device_train_batch_size * getattr(params, "gradient_accumulation_steps", 1)
        # per epoch; GRPO and RLOO leave out a last batch of prompts too few to fill a step (TRL's RepeatSampler);
        # PPO's batches run on into the next epoch's prompts, so a part-batch is no step (train_ppo.ppo_steps)
        steps = (len(lengths) // per_step if hasattr(params, "num_iterations") else len(lengths) / per_step
                 if hasattr(params, "ppo_epochs") else math.ceil(len(lengths) / per_step)) * passes
        epochs = max(float(params.num_train_epochs), 1e-9)
        if method.zeroth_order:  # MeZO draws its random direction four times a step over every weight
            seconds += steps * 4 * trainable * hardware.perturb_seconds_per_weight(device)
        else:  # each step's optimizer update, and the rebuilt weights
            factor = REBUILD["dora"] if getattr(params, "use_dora", False) else REBUILD.get(method_key, 0.0)
            rebuilt = factor * (total - embed)  # the adapted weights: every linear layer's
            updates = steps * getattr(params, "ppo_epochs", 1)  # (PPO steps once per pass over a batch)
            seconds += updates * (trainable + rebuilt) * hardware.optimizer_seconds_per_weight(device)
        if method.quantized:  # every pass unpacks each 4-bit weight to the compute dtype before its matmul:
            # the forward, the backward's input gradients, and the forward again under checkpointing (the
            # Method table showed QLoRA as fast as LoRA; on a CPU a step took 4x LoRA's)
            passes = 2 + int(bool(getattr(params, "gradient_checkpointing", False)))
            batches = math.ceil(len(lengths) / params.per_device_train_batch_size)
            seconds += batches * passes * (total - embed) * hardware.dequant_seconds_per_weight(device, bf16)
        if method.projection_seconds:  # spread over the epochs: the whole run's, per epoch
            run_steps = max(1, math.ceil(steps * epochs))
            seconds += method.projection_seconds(model_path, params, run_steps, device) / epochs
        seconds += 2 * total * generated / (flops * DECODE_EFFICIENCY[device])  # writing RL's replies
        if scoring:  # each reward model reads every prompt + reply, forward only, in batches of 8
            scored = batch_tokens(lengths, reward_model.SCORE_BATCH, max_length, False, params.seed)[0]
            cpu = hardware.matmul_flops("cpu", False) * step_efficiency("cpu", False) * PADDED["cpu"]
            seconds += sum(2 * per * scored for _, per in scoring) / cpu
    eval_seconds = 0.0
    if seconds is not None and eval_rows and not method.rewards:  # (RL measures by writing replies)
        kind = "preference" if method.data_kind in ("preference", "kto") else "sft"
        batch = params.per_device_train_batch_size
        total_steps = max(1, math.ceil(steps * params.num_train_epochs))
        every = evals.every(total_steps, getattr(params, "eval_steps", 0), evals.PER_RUN[kind])
        count = evals.passes(total_steps, every)
        held = [lengths[i % len(lengths)] for i in range(eval_rows)]
        per_pass = sequences * batch_tokens(held, batch, max_length, packed, params.seed)[0]
        # forward only: the model, and the reference beside it (DPO, KTO), each on KTO's KL batch too
        per_token = (2 * total * (2 if method.reference else 1) * (2 if method.data_kind == "kto" else 1)
                     + 2 * adapters - (2 * head if method.reward_model else 0))
        eval_seconds = count * per_token * per_pass / (flops * efficiency)
        if method.quantized:  # each held-out batch's forward unpacks the 4-bit weights too
            eval_seconds += (count * math.ceil(eval_rows / batch) * (total - embed)
                             * hardware.dequant_seconds_per_weight(device, bf16))
    return Estimate(method=method_key, total_params=total, trainable_params=trainable, weights_bytes=weights,
                    training_bytes=int(training), runtime_bytes=runtime,
                    peak_bytes=peak, available_bytes=available_bytes(device), device=device,
                    tokens_per_epoch=tokens_epoch, real_tokens_per_epoch=real_tokens, seconds_per_epoch=seconds, eval_seconds=eval_seconds,
                    layers=layers, rows=rows, steps_per_epoch=steps)
