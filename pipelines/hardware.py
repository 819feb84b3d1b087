"""What the machine can do: device and whether bf16 autocast pays off."""

from __future__ import annotations

import os
from pathlib import Path


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_has_amx_bf16() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def use_bf16() -> bool:
    """bf16 mixed precision where the hardware does it natively (CUDA bf16, or CPU AMX).

    STUDIO_BF16=0/1 overrides (benchmarks compare both)."""
    forced = os.environ.get("STUDIO_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if has_cuda():
        import torch

        return torch.cuda.is_bf16_supported()
    return cpu_has_amx_bf16()
