"""Padding-free SFT: a batch is its rows laid end to end, attention stays inside each row, and the
vocabulary projection runs only where a token is learned.

Why (bench/sft_speed.py, mixed-length chats): padding every batch to its longest row made most of
what the studio computed padding. Here
- TRL's own collator (`padding_free=True`) lays the rows out as one sequence, positions restarting
  per row, with the row boundaries (`cu_seq_lens_q`);
- `varlen_sdpa`, registered with transformers as the attention implementation "studio_varlen",
  runs causal attention row by row inside that sequence (no row sees another; no N x N mask, which
  on CPU costs more than the padding it saves), in float32 on CPU where PyTorch's bfloat16
  attention backward is several times slower than its float32 one (3.6x, measured at 8 x 160 tokens);
- `answer_loss` asks the model for the logits of the answer tokens only (`logits_to_keep`), the
  prompt's positions never reach the 49k-wide output layer.
The loss is the same sum over the same tokens as the padded path (tests/test_packing.py).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

IMPLEMENTATION = "studio_varlen"


def varlen_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                cu_seq_lens_q=None, **kwargs):
    """transformers attention interface: (batch, heads, seq, dim) in, (batch, seq, heads, dim) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None:  # a decoder layer that does not pass them on (StableLM, Falcon, Nemotron)
        cu_seq_lens_q = _passed_over(module, query)
        if cu_seq_lens_q is not None:
            kwargs.setdefault("max_length_q", getattr(module, ROWS).get("max_length_q"))
    if cu_seq_lens_q is None and attention_mask is None and module.training:
        # a padding-free batch without its row boundaries would attend across rows
        raise ValueError("studio_varlen: a training batch with neither row boundaries nor a mask")
    if cu_seq_lens_q is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    dtype = value.dtype  # under autocast: q and k leave the rotary embedding in float32, v in bf16
    half = _half(query)
    if half is not None and _CUDA_VARLEN["ok"] and not (dropout and module.training):  # the kernel has no dropout
        # in the run's half precision, as transformers' FlashAttention path casts them (the studio's
        # weights are float32 under bf16 autocast: q and k come in float32, and skipped the kernel)
        out = _cuda_varlen(query.to(half), key.to(half), value.to(half), cu_seq_lens_q, kwargs.get("max_length_q"),
                           scaling)
        if out is not None:
            return out.to(dtype), None
    if query.device.type == "cpu":
        query, key, value = query.float(), key.float(), value.float()
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    bounds = cu_seq_lens_q.tolist()
    # on a CPU autocast would turn SDPA back to bf16: float32 is what is asked for there; elsewhere the
    # run's own autocast stands (forcing it on made a float32 run's attention float16, unscaled)
    with torch.autocast("cpu", enabled=False) if query.device.type == "cpu" else contextlib.nullcontext():
        parts = [
            F.scaled_dot_product_attention(query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], is_causal=True,
                                           dropout_p=dropout if module.training else 0.0, scale=scaling)
            for s, e in zip(bounds[:-1], bounds[1:]) if e > s
        ]
    out = torch.cat(parts, dim=2).to(dtype)
    return out.transpose(1, 2).contiguous(), None


_CUDA_VARLEN = {"ok": True}


def _half(query) -> torch.dtype | None:
    """The half precision the GPU kernel runs in: the tensors' own, else the run's autocast dtype;
    None on a CPU or in a float32 run (the row loop then)."""
    if query.device.type != "cuda":
        return None
    if query.dtype in (torch.float16, torch.bfloat16):
        return query.dtype
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return None


def _cuda_varlen(query, key, value, cu_seq_lens, max_length, scaling):
    """PyTorch's FlashAttention varlen kernel (torch.nn.attention.varlen) on a GPU: all rows in
    one call. None (and the row loop from then on) where this GPU or build lacks it."""
    try:
        from torch.nn.attention.varlen import varlen_attn

        cu = cu_seq_lens.to(device=query.device, dtype=torch.int32)
        longest = int(max_length) if max_length is not None else int(cu.diff().max())
        q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # (tokens, heads, dim)
        out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling, window_size=(-1, 0),
                          enable_gqa=q.shape[1] != k.shape[1])
        return out[None]
    except torch.OutOfMemoryError:
        raise  # out of memory is the run's problem, not the kernel's
    except (ImportError, RuntimeError, NotImplementedError, TypeError) as err:
        _CUDA_VARLEN["ok"] = False
        print(f"GPU varlen attention unavailable ({type(err).__name__}: {str(err)[:120]}); "
              "attending row by row instead", flush=True)
        return None


def varlen_mask(*args, attention_mask=None, **kwargs):
    """Mask builder for "studio_varlen": none for a padding-free batch (`varlen_sdpa` keeps rows
    apart), SDPA's mask for an ordinary padded batch."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def model_supports(config) -> bool:
    """Row-by-row causal attention reproduces the model's own attention: no sliding window, no
    soft-capped attention scores, no attention sinks (those keep padded batches), and every layer
    attention: a hybrid's convolution or linear-attention layers (LFM2, Qwen3.5) would carry one row
    into the next, which only the attention layers keep apart."""
    text = config.get_text_config()
    types = getattr(text, "layer_types", None)
    if types:  # transformers 5 names each layer's kind
        sliding = any(kind != "full_attention" for kind in types)
    else:  # Qwen2 keeps a window size it does not use
        sliding = bool(getattr(text, "sliding_window", None)) and getattr(text, "use_sliding_window", True)
    return (not (sliding or getattr(text, "attn_logit_softcapping", None) or text.model_type == "gpt_oss")
            and _can_switch(config))


def _can_switch(config) -> bool:
    """Whether transformers lets the model's attention be switched (Bloom's and MPT's cannot: they train on
    padded batches, and the estimate of their time and memory said padding-free)."""
    from transformers import AutoModelForCausalLM

    found = AutoModelForCausalLM._model_mapping.get(type(config), None)
    if found is None:  # (not a causal language model transformers names: `switch` finds out at load time)
        return True
    try:
        return bool(found._can_set_attn_implementation())
    except (AttributeError, TypeError, OSError):
        return True


ROWS = "_studio_rows"  # on each module of a switched model: the row boundaries its last forward was given


def _passed_over(module, query):
    """The row boundaries the model's forward was given, where its decoder layer dropped them on the way to
    the attention: only for a padding-free batch of that many tokens (a gradient checkpoint's recompute in the
    backward pass reads those of the forward it repeats, which were the model's last)."""
    rows = getattr(module, ROWS, None)
    cu = rows.get("cu_seq_lens_q") if rows else None
    if cu is None or query.shape[0] != 1 or query.shape[2] != int(cu[-1]):
        return None
    return cu


def switch(model) -> bool:
    """Train `model` (the base, not its adapter wrapper) on padding-free batches: its attention becomes
    "studio_varlen", and the row boundaries its forward is given reach every attention layer also where a
    decoder layer does not pass them on (StableLM, Falcon and Nemotron dropped them: a training step failed,
    and an evaluation attended across rows). False where the model cannot switch (transformers keeps the old
    implementation, with a warning): it trains on padded batches."""
    model.set_attn_implementation(register())
    if model.config._attn_implementation != IMPLEMENTATION:
        return False
    rows = {}

    def note(_module, _args, kwargs):
        rows.clear()
        rows.update({k: kwargs[k] for k in ("cu_seq_lens_q", "max_length_q") if kwargs.get(k) is not None})

    model.register_forward_pre_hook(note, with_kwargs=True)
    for module in model.modules():
        object.__setattr__(module, ROWS, rows)  # (a plain attribute: not a submodule, not saved)
    return True


def register() -> str:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, varlen_sdpa)
    AttentionMaskInterface.register(IMPLEMENTATION, varlen_mask)
    return IMPLEMENTATION


def collator(pad_token_id: int):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)


class _ChunkedNLL(torch.autograd.Function):
    """Summed negative log-likelihood of `targets` under softmax(hidden @ weight.T), a few hundred
    rows of the (rows x vocabulary) logits at a time: the logits are never held whole, and the
    backward pass recomputes each block (softmax - one-hot) instead of storing it."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, dtype):
        ctx.save_for_backward(hidden, weight, targets)
        ctx.dtype = dtype
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
        w = weight.to(dtype)
        for s in range(0, hidden.shape[0], _chunk(weight)):
            logits = (hidden[s:s + _chunk(weight)].to(dtype) @ w.t()).float()
            t = targets[s:s + logits.shape[0]]
            total += (torch.logsumexp(logits, -1) - logits.gather(1, t[:, None])[:, 0]).sum()
            correct += (logits.argmax(-1) == t).sum()
        ctx.mark_non_differentiable(correct)
        return total, correct

    @staticmethod
    def backward(ctx, grad_total, _grad_correct):
        hidden, weight, targets = ctx.saved_tensors
        dtype = ctx.dtype
        w = weight.to(dtype)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        for s in range(0, hidden.shape[0], _chunk(weight)):
            h = hidden[s:s + _chunk(weight)].to(dtype)
            probs = torch.softmax((h @ w.t()).float(), -1)
            probs[torch.arange(h.shape[0], device=h.device), targets[s:s + h.shape[0]]] -= 1
            g = (probs * grad_total).to(dtype)
            if grad_hidden is not None:
                grad_hidden[s:s + h.shape[0]] = (g @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (g.t() @ h).float()
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None


def _chunk(weight) -> int:
    return max(64, 2**25 // weight.shape[0])  # at most ~128 MB of float32 logits at a time


class _HeadAsIdentity:
    """While active, the output layer hands back its input: the model's forward then returns the
    final hidden states at `logits_to_keep`, and the loss applies the layer's weight in blocks."""

    def __init__(self, head):
        self.head = head

    def __enter__(self):
        self.saved = self.head.__dict__.get("forward")  # a hook library may have set its own
        self.head.forward = lambda x: x

    def __exit__(self, *exc):
        if self.saved is None:
            del self.head.forward
        else:
            self.head.forward = self.saved


def _plain_head(model):
    """The output layer's weight when logits are just hidden @ weight.T (no bias, scaling or
    soft-capping, not wrapped by an adapter), else None."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel):  # several processes: the model inside
        model = model.module
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    config = base.config.get_text_config()
    extra = any(getattr(config, k, None) not in (None, 1.0) for k in
                ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling"))
    if type(head) is not torch.nn.Linear or head.bias is not None or extra:
        return None
    return head


def answer_loss(model, inputs: dict, num_items_in_batch=None, dtype: torch.dtype | None = None,
                router: bool = False):
    """(summed cross-entropy over the learned tokens / their count, tokens predicted right, count,
    the mixture-of-experts' load-balancing loss or None) for a batch whose `labels` mark the learned
    tokens (-100 elsewhere); the output layer only at those positions, in `dtype` (the run's half
    precision; None: autocast's where it is on, else the weight's). The Trainer calls the loss outside
    autocast (accelerate wraps only the model's forward), so a bf16 run says so here, or its output
    layer runs in float32. With `router`, the model is asked for its router logits (and so its aux loss),
    as TRL's SFTTrainer asks where the config gives the aux loss a weight."""
    labels = inputs["labels"]
    shifted = labels[:, 1:]
    rows, cols = (shifted != -100).nonzero(as_tuple=True)
    targets = shifted[rows, cols]
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    if router:
        forward["output_router_logits"] = True
    head = _plain_head(model)
    keep = cols if labels.shape[0] == 1 else 0  # padded rows: every position, then the learned ones
    if head is not None:
        with _HeadAsIdentity(head):
            out = model(**forward, logits_to_keep=keep, use_cache=False)
        hidden = out.logits[0] if labels.shape[0] == 1 else out.logits[rows, cols]
        device = hidden.device.type
        if dtype is None:
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head.weight.dtype
        total, correct = _ChunkedNLL.apply(hidden, head.weight, targets, dtype)
    else:
        out = model(**forward, logits_to_keep=keep, use_cache=False)
        logits = (out.logits[0] if labels.shape[0] == 1 else out.logits[rows, cols]).float()
        total = F.cross_entropy(logits, targets, reduction="sum")
        correct = (logits.detach().argmax(-1) == targets).sum()
    # a window with no learned token gives a zero loss, not 0/0
    count = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else targets.numel()).clamp(min=1)
    return total / count, correct, targets.numel(), getattr(out, "aux_loss", None) if router else None
