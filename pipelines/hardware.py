"""What the machine can do: device and whether bf16 autocast pays off."""

from __future__ import annotations

import os
import time
from functools import lru_cache

# bf16 must beat fp32 by this much on a measured matmul before training uses it on a CPU. CPUs
# with AMX run it 3-4x faster (835 vs 234 GFLOP/s measured on a 2-core Intel Xeon here); CPUs
# without (AVX2-only AMD EPYC) convert to fp32 and back, slower than plain fp32.
CPU_BF16_MIN_GAIN = 1.5


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@lru_cache(maxsize=4)
def matmul_flops(device: str, bf16: bool) -> float:
    """This machine's measured matmul speed (FLOP/s), best of a few 1024^3 products."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    x = torch.randn(1024, 1024, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(4):
            x @ x
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * 1024**3 / best


def cpu_bf16_gain() -> float:
    """Measured: bf16 matmul speed / fp32 matmul speed on this CPU (the same measurements the time
    estimate uses, once per process)."""
    return matmul_flops("cpu", True) / matmul_flops("cpu", False)


def use_bf16() -> bool:
    """bf16 mixed precision where the hardware does it natively: CUDA with bf16, or a CPU whose
    measured bf16 matmul is clearly faster than fp32 (never decided from the CPU's name).

    STUDIO_BF16=0/1 overrides (benchmarks compare both)."""
    forced = os.environ.get("STUDIO_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if has_cuda():
        import torch

        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_bf16_gain() >= CPU_BF16_MIN_GAIN


def autocast():
    """bf16 autocast where use_bf16() says it pays (the Trainer's `bf16=True` does the same for the
    TRL runners); otherwise nothing."""
    import contextlib

    import torch

    if not use_bf16():
        return contextlib.nullcontext()
    return torch.autocast("cuda" if has_cuda() else "cpu", dtype=torch.bfloat16)
