"""What the machine can do: device and whether bf16 autocast pays off."""

from __future__ import annotations

import json
import os
import threading
import time
from functools import lru_cache
from pathlib import Path

# bf16 must beat fp32 by this much on a measured matmul before training uses it on a CPU. CPUs
# with AMX run it 3-4x faster (835 vs 234 GFLOP/s measured on a 2-core Intel Xeon here); CPUs
# without (AVX2-only AMD EPYC) convert to fp32 and back, slower than plain fp32.
CPU_BF16_MIN_GAIN = 1.5


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def measurements_file() -> Path:
    """Where this machine's matmul measurements are kept, so a restarted studio (or a run's worker)
    does not measure again: the second measurement would compete with a training run for the CPU
    and come out both wrong and slow (40 s instead of 0.4 s beside a run on 2 cores)."""
    try:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home at all: kept for this machine's session only
        import tempfile

        cache = tempfile.gettempdir()
    return Path(cache) / "tune-studio" / "matmul.json"


def _machine(device: str, bf16: bool, what: str = "") -> str:
    """What a measurement holds for: the processor, the torch build and its threads, the dtype (and
    what was measured, where it is not a matmul)."""
    import torch

    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
            name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                         if line.startswith("model name")), "cpu")
        except OSError:
            name = "cpu"
    key = f"{device} {name} | torch {torch.__version__}, {torch.get_num_threads()} threads | {'bf16' if bf16 else 'fp32'}"
    return f"{key} | {what}" if what else key


_MEASURING = threading.Lock()


@lru_cache(maxsize=4)
def matmul_flops(device: str, bf16: bool) -> float:
    """This machine's measured matmul speed (FLOP/s), best of a few 1024^3 products; measured once
    per machine and kept in measurements_file()."""
    with _MEASURING:  # two threads measuring at once would slow each other and keep the slower figure
        return _kept_or_measured(_machine(device, bf16), lambda: _measure(device, bf16))


@lru_cache(maxsize=2)
def optimizer_seconds_per_weight(device: str) -> float:
    """This machine's measured AdamW step time per trained weight (fp32 weights, gradients and
    moments, torch's default implementation as the Trainer runs it): memory-bound work the matmul
    speed does not tell (0.47 s a step for 135M weights on a 2-core AMD EPYC). Kept like the matmul
    speed."""
    with _MEASURING:
        return _kept_or_measured(_machine(device, False, "adamw s/weight"), lambda: _measure_adamw(device))


def _measure_adamw(device: str) -> float:
    """Best of a few AdamW steps over 8M weights, per weight."""
    import torch

    weights = torch.nn.Parameter(torch.randn(8 * 2**20, device=device))
    weights.grad = torch.randn_like(weights)
    optimizer = torch.optim.AdamW([weights], lr=1e-4)
    optimizer.step()  # warm-up, and the moments' first allocation
    times = []
    for _ in range(5):
        start = time.perf_counter()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times) / weights.numel()


@lru_cache(maxsize=2)
def svd_seconds_per_unit(device: str) -> float:
    """This machine's measured time of a thin SVD (`torch.linalg.svd(full_matrices=False)`, fp32, as
    GaLore recomputes its projections) per m·n·min(m, n), the cost's order for an m x n matrix. Kept
    like the matmul speed."""
    with _MEASURING:
        return _kept_or_measured(_machine(device, False, "svd s/unit"), lambda: _measure_svd(device))


def _measure_svd(device: str) -> float:
    """Best of a few thin SVDs of a 1536 x 576 matrix (the built-in model's feed-forward shape)."""
    import torch

    m, n = 1536, 576
    x = torch.randn(m, n, device=device)
    times = []
    for _ in range(4):  # the first is the warm-up
        start = time.perf_counter()
        torch.linalg.svd(x, full_matrices=False)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:]) / (m * n * min(m, n))


@lru_cache(maxsize=2)
def perturb_seconds_per_weight(device: str) -> float:
    """This machine's measured time to add a fresh seeded N(0, 1) draw to a weight (MeZO moves every
    weight along a random direction it draws again four times a step). Kept like the matmul speed."""
    with _MEASURING:
        return _kept_or_measured(_machine(device, False, "perturb s/weight"), lambda: _measure_perturb(device))


def _measure_perturb(device: str) -> float:
    import torch

    weights = torch.zeros(8 * 2**20, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        weights.add_(torch.randn(weights.shape, generator=generator, device=device), alpha=1e-3)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:]) / weights.numel()


@lru_cache(maxsize=4)
def dequant_seconds_per_weight(device: str, bf16: bool) -> float:
    """This machine's measured time to unpack a 4-bit NF4 weight (double-quantized, as QLoRA stores the
    frozen model) to the compute dtype, which bitsandbytes does for every weight in every forward and
    backward pass of a training step. Kept like the matmul speed."""
    with _MEASURING:
        return _kept_or_measured(_machine(device, bf16, "nf4 unpack s/weight"),
                                 lambda: _measure_dequant(device, bf16))


def _measure_dequant(device: str, bf16: bool) -> float:
    """Best of a few unpackings of a 2048 x 2048 NF4 matrix, per weight."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes.functional as bnbf

        dtype = torch.bfloat16 if bf16 else torch.float32
        weight = torch.randn(2048, 2048, dtype=dtype, device=device)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4", compress_statistics=True, quant_storage=torch.uint8)
        bnbf.dequantize_4bit(packed, state)  # warm-up
        times = []
        for _ in range(5):
            start = time.perf_counter()
            bnbf.dequantize_4bit(packed, state)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return min(times) / weight.numel()


def _kept_or_measured(key: str, measure) -> float:
    path = measurements_file()
    try:
        kept = json.loads(path.read_text())
        if isinstance(kept.get(key), (int, float)) and kept[key] > 0:
            return float(kept[key])
    except (OSError, ValueError, AttributeError):
        kept = {}
    value = measure()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        scratch.write_text(json.dumps({**(kept if isinstance(kept, dict) else {}), key: value}, indent=1))
        os.replace(scratch, path)
    except OSError:
        pass  # a read-only home: measured again by the next process, nothing else lost
    return value


def remeasure(device: str = "cpu") -> dict:
    """Measure again what this machine keeps, and keep the faster of each old and new figure. A
    figure taken while something else ran (a training run, a test suite) was kept for good: on a
    2-core AMD EPYC, AdamW 2.7e-8 s per weight instead of 5.2e-9 and fp32 matmul 131 GFLOP/s instead
    of 175 made every time estimate 2-4x too long. Run where nothing else trains (the server, at its
    start). Returns what is kept now."""
    jobs = [(_machine(device, True), lambda: _measure(device, True), max),
            (_machine(device, False), lambda: _measure(device, False), max),
            (_machine(device, False, "adamw s/weight"), lambda: _measure_adamw(device), min),
            (_machine(device, False, "svd s/unit"), lambda: _measure_svd(device), min),
            (_machine(device, False, "perturb s/weight"), lambda: _measure_perturb(device), min),
            (_machine(device, True, "nf4 unpack s/weight"), lambda: _measure_dequant(device, True), min),
            (_machine(device, False, "nf4 unpack s/weight"), lambda: _measure_dequant(device, False), min)]
    path = measurements_file()
    with _MEASURING:
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            kept = {}
        if not isinstance(kept, dict):
            kept = {}
        fresh = {key: better(kept[key], measure()) for key, measure, better in jobs
                 if isinstance(kept.get(key), (int, float))}  # what was never needed is measured when it is
        if fresh:
            kept.update(fresh)
            try:
                scratch = path.with_name(f".{path.name}.{os.getpid()}")
                scratch.write_text(json.dumps(kept, indent=1))
                os.replace(scratch, path)
            except OSError:
                pass
    for kept_once in (matmul_flops, optimizer_seconds_per_weight, svd_seconds_per_unit, perturb_seconds_per_weight,
                      dequant_seconds_per_weight):
        kept_once.cache_clear()
    return kept


def cpu_sample() -> tuple[int, int, int] | None:
    """(all CPU time, the time spent working by any process, this process's own), in clock ticks,
    from /proc; None where there is none to read. A virtual machine's stolen time is no process's here
    (in the total, not working); guests' time is already in user time. This process's own counts its
    finished children (a reward function's sandbox)."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]] + [0] * 8
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()  # (after the name, which may hold spaces)
        user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
        working = user + nice + system + irq + softirq
        # utime, stime, cutime, cstime: fields 14-17
        return working + idle + iowait + steal, working, sum(int(v) for v in own[11:15])
    except (OSError, ValueError, IndexError):
        return None


def cpu_busy_share(window_s: float = 1.0) -> float | None:
    """The share of all this machine's CPU time spent working (any process) over `window_s`; None
    where there is none to read."""
    before = cpu_sample()
    time.sleep(window_s)
    after = cpu_sample()
    if before is None or after is None:
        return None
    return (after[1] - before[1]) / max(1, after[0] - before[0])


# Beyond this many cores taken by other processes, a run's speed is not its own: one process spinning
# took a whole core. The studio's own server and a browser watching the run's live curves took 0.26-0.40
# of one (a quick run on a 2-core machine), which every run here has.
SHARED_CORES = 0.7


def others_cores(before: tuple | None, after: tuple | None) -> float | None:
    """How many of the machine's cores other processes kept working between two `cpu_sample`s."""
    share = others_share(before, after)
    return None if share is None else share * (os.cpu_count() or 1)


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def others_share(before: tuple | None, after: tuple | None) -> float | None:
    """The share of the machine's CPU time other processes spent working between two `cpu_sample`s
    (a run beside a test suite trained 3x slower, and its speed made every later estimate long)."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    others = (after[1] - before[1]) - (after[2] - before[2])
    return min(1.0, max(0.0, others / (after[0] - before[0])))


# Below this share of the CPU in use, the machine counts as quiet enough to measure its speed
QUIET_SHARE = 0.25


def machine_quiet() -> bool:
    share = cpu_busy_share()
    return share is None or share < QUIET_SHARE


def remeasure_when_quiet(busy, quiet=machine_quiet, poll_s: float = 30.0, every_s: float = 3600.0,
                         stop: threading.Event | None = None) -> None:
    """Keep the speed figures true for a long-lived server: measure again (`remeasure`, keeping the
    faster of each figure) once no run is queued or running (`busy()`) and nothing else takes the CPU
    (`quiet()`, any process: a server started beside a test suite measured 2x slow and its estimates
    read 77 s for a 39 s run all session), then again every `every_s` when both hold."""
    stop = stop or threading.Event()
    while not stop.is_set():
        if not busy() and quiet():
            remeasure()
            stop.wait(every_s)
        else:
            stop.wait(poll_s)


def _measure(device: str, bf16: bool) -> float:
    """Best of a few products of 1024x1024 matrices, or of 256x256 ones where a 1024 product would
    take over 50 ms: bf16 on a CPU without native bf16 runs ~1 GFLOP/s, and twenty 1024 products
    took 49 s there (a 256 probe says as much, clearly slower than fp32, in 0.4 s)."""
    import torch

    def product_time(x, n: int = 1) -> float:
        """Seconds per product, over n products and one wait for the GPU (a wait per product would
        time the waits)."""
        start = time.perf_counter()
        for _ in range(n):
            x @ x
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / n

    dtype = torch.bfloat16 if bf16 else torch.float32
    small = torch.randn(256, 256, dtype=dtype, device=device)
    product_time(small)  # warm-up: first-call setup is not speed
    size = 1024 if product_time(small) * 64 < 0.05 else 256
    x = small if size == 256 else torch.randn(size, size, dtype=dtype, device=device)
    product_time(x)
    best = min(product_time(x, 2) for _ in range(5))
    return 2 * size**3 / best


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
