"""Devices: how many processes a run uses and how they split the work (one device, DDP, FSDP,
DeepSpeed ZeRO), declared once like a method's parameters, checked before anything is written, and
turned into an `accelerate launch` config kept in the run directory.

The worker (pipelines/run.py) launches `python -m accelerate.commands.launch --config_file
RUN_DIR/accelerate.yaml -m pipelines.rank RUN_DIR` when a run uses more than the plain single-device
path; the runners stay unaware of the number of processes beyond what accelerate tells them.

What each strategy keeps on every device follows the ZeRO paper (Rajbhandari et al., 2020, section
5): weights W, gradients G and optimizer state O are whole on every device under DDP; ZeRO-1 splits
O, ZeRO-2 (and FSDP's shard-grad-op) O and G, ZeRO-3 (and FSDP's full shard) W, G and O.
"""

from __future__ import annotations

import importlib.util
import shlex
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.methods.params import ConfigError, param, parse

CONFIG_FILE = "accelerate.yaml"  # in the run directory
LAUNCH_FILE = "launch.txt"  # the exact command, for reproducing the run from a shell

STRATEGIES = {
    "single": "One device: the model and its training on one GPU (or the CPU). The default; right "
              "whenever the run fits.",
    "ddp": "DDP: every process keeps a whole copy of the model and trains on its own share of each "
           "batch; the gradients are averaged after every step. Faster when the model fits one device; "
           "saves no memory.",
    "fsdp": "FSDP, full shard: weights, gradients and optimizer state are split across the processes; "
            "each gathers a layer's weights only while it computes that layer. For models that do not "
            "fit one device; costs more communication than DDP.",
    "fsdp_grad_op": "FSDP, shard grad-op: gradients and optimizer state are split, the weights stay whole "
                    "after the forward pass. Less communication than full shard, less memory saved.",
    "zero1": "DeepSpeed ZeRO stage 1: only the optimizer state is split (Adam's two moments are most of "
             "full tuning's memory). Nearly as fast as DDP.",
    "zero2": "DeepSpeed ZeRO stage 2: optimizer state and gradients are split.",
    "zero3": "DeepSpeed ZeRO stage 3: optimizer state, gradients and the weights are split, like FSDP's "
             "full shard; trains models several times one device's memory.",
}
SHARDED = ("fsdp", "zero3")  # the weights themselves are split across the processes
DEEPSPEED = ("zero1", "zero2", "zero3")
FSDP = ("fsdp", "fsdp_grad_op")
# runners that run under accelerate's processes (the PPO loop is the studio's own, one process)
DISTRIBUTED_RUNNERS = ("pipelines.train_sft", "pipelines.train_pref", "pipelines.train_rl")


@dataclass
class Devices:
    strategy: str = param(
        "single", label="Strategy", target="studio", choices=list(STRATEGIES), choice_help=STRATEGIES,
        help="How the work is split when one device is not enough. Keep 'single' unless the run does not "
             "fit or you have several GPUs to make it faster.")
    num_processes: int = param(
        1, label="Processes per machine", target="studio", min=1, max=64, step=1,
        help="Usually one per GPU. On a machine without a GPU, several processes share its CPU cores: "
             "that checks a setup before a cluster, it does not train faster.")
    num_machines: int = param(
        1, label="Machines", target="studio", min=1, max=64, step=1,
        help="More than 1: this machine is the main one; the run prints the command to start on each "
             "other machine (same studio folder and data, shared or copied), and waits for them.")
    main_process_ip: str = param(
        "127.0.0.1", label="Main machine's address", target="studio",
        help="Where the other machines reach this one (its address on your network). Only used with "
             "several machines.")
    main_process_port: int = param(
        0, label="Main machine's port", target="studio", min=0, max=65535, step=1,
        help="The port the processes meet on. 0 = any free port (one machine only); several machines "
             "need a port they can all reach, for example 29500.")
    offload: bool = param(
        False, label="Offload to CPU memory", target="studio",
        help="FSDP and ZeRO: keep the split optimizer state (and under full shard / ZeRO-3 the weights) in "
             "the CPU's memory and bring them to the GPU when needed. Fits much bigger models, trains "
             "noticeably slower. Needs a GPU.")

    @property
    def total_processes(self) -> int:
        return self.num_processes * self.num_machines


def parse_devices(values: dict | None) -> Devices:
    """Validated settings from a config's `devices:` mapping (ConfigError names the field)."""
    if values is not None and not isinstance(values, dict):
        raise ConfigError("'devices' must be a mapping such as {strategy: ddp, num_processes: 2}")
    try:
        return parse(Devices, values)
    except ConfigError as err:  # said as the devices' own settings, not a method's
        raise ConfigError(str(err).replace("parameter '", "devices setting '")
                          .replace("this method accepts", "devices accepts")) from None


def distributed(devices: Devices | dict | None) -> bool:
    """Whether the run goes through `accelerate launch` rather than the plain one-process path."""
    if devices is None:
        return False
    if isinstance(devices, dict):
        devices = Devices(**devices)
    return devices.strategy != "single" or devices.total_processes > 1


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def unavailable(strategy: str, gpus: int) -> str | None:
    """Why a strategy cannot run on this machine (None: it can), in words for the form."""
    if strategy in DEEPSPEED and not deepspeed_installed():
        return "DeepSpeed is not installed here (pip install deepspeed)"
    if strategy in DEEPSPEED and gpus == 0:
        return "DeepSpeed trains on GPUs; this machine has none"
    return None


def strategy_choices(gpus: int) -> list[tuple[str, str]]:
    """(label, value) for the form: each strategy explained, the ones this machine cannot run marked
    with the reason (starting with one is refused with the same reason)."""
    out = []
    for key, text in STRATEGIES.items():
        reason = unavailable(key, gpus)
        out.append((f"{key} — {text}" + (f" ⛔ Unavailable here: {reason}." if reason else ""), key))
    return out


def machine_text(gpus: int) -> str:
    """What this machine offers, above the devices form."""
    if gpus == 0:
        where = ("This machine has no GPU: DDP and FSDP run as CPU processes that share its cores (to check a "
                 "setup before a cluster, not to train faster); DeepSpeed needs GPUs.")
    else:
        where = f"This machine has {gpus} GPU{'s' if gpus > 1 else ''}: one process per GPU."
    if not deepspeed_installed():
        where += " DeepSpeed is not installed (pip install deepspeed) — its ZeRO stages are unavailable."
    return where


def check(devices: Devices, method, gpus: int) -> None:
    """Refuse, in one sentence and before the model loads, a setup this machine or method cannot run."""
    name = STRATEGIES[devices.strategy].split(":")[0]
    if devices.strategy == "single" and devices.total_processes > 1:
        raise ConfigError(f"{devices.total_processes} processes need a strategy that splits the work between "
                          "them: pick DDP, FSDP or DeepSpeed ZeRO, or 1 process")
    reason = unavailable(devices.strategy, gpus)
    if reason:
        raise ConfigError(f"strategy '{devices.strategy}' ({name}) cannot run here: {reason}")
    if gpus and devices.num_processes > gpus:
        raise ConfigError(f"{devices.num_processes} processes per machine, but this machine has {gpus} GPU"
                          f"{'s' if gpus > 1 else ''}: use at most one process per GPU")
    if devices.offload and (devices.strategy not in (*FSDP, *DEEPSPEED) or gpus == 0):
        raise ConfigError("'Offload to CPU memory' moves what FSDP or DeepSpeed split from GPU memory to CPU "
                          "memory: it needs one of those strategies and a GPU")
    if devices.num_machines > 1 and devices.main_process_ip in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError("several machines need the main machine's address on your network (main_process_ip), "
                          "not 127.0.0.1, which each machine reads as itself")
    if devices.num_machines > 1 and not devices.main_process_port:
        raise ConfigError("several machines need a port they all reach on the main machine: set "
                          "main_process_port (for example 29500)")
    if not distributed(devices):
        return
    if method.runner not in DISTRIBUTED_RUNNERS:
        raise ConfigError(f"{method.label} runs in one process (the studio's own training loop); set the "
                          "strategy to 'single'")
    if method.zeroth_order:
        raise ConfigError(f"{method.label} steps every weight in place from two loss measurements, which the "
                          "processes would not share; set the strategy to 'single'")
    if method.one_process:
        raise ConfigError(f"{method.label} {method.one_process.format(name=name)}; set the strategy to 'single'")
    if devices.strategy in (*FSDP, *DEEPSPEED):
        if method.save_result or method.whole_result:
            raise ConfigError(f"{method.label} works on whole weight matrices after each step or at the end, "
                              f"which {name} splits across processes; use DDP")
        if method.runner == "pipelines.train_rl":
            raise ConfigError(f"{method.label} keeps a whole model in each process (it writes or scores replies "
                              f"as it trains); use DDP rather than {name}")
        if method.state_bytes and method.fixed.get("optim"):
            raise ConfigError(f"{method.label}'s optimizer projects whole weight matrices, which {name} hands it "
                              "in pieces; use DDP")
    if devices.strategy in (*FSDP, "zero3"):
        if method.quantized:
            raise ConfigError(f"{method.label}'s 4-bit base cannot be split across processes by {name}; use "
                              "DDP or ZeRO-1/2, or LoRA on the full-precision base")
        if method.optimizer:
            raise ConfigError(f"{method.label} builds its own optimizer, which {name} cannot shard; use DDP, "
                              "or plain LoRA")
        if method.converts_base or method.beside_base:
            raise ConfigError(f"{method.label} cannot be split across processes by {name}; use DDP, or "
                              "LoRA")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_config(devices: Devices, bf16: bool, port: int) -> dict:
    """The `accelerate launch` config for these settings (written as RUN_DIR/accelerate.yaml).

    distributed_type is MULTI_GPU even without a GPU: that is the launcher that starts the processes
    itself (torchrun); each process then finds no GPU and joins a CPU (gloo) group."""
    config = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU",
        "num_processes": devices.total_processes,  # accelerate counts all machines' processes
        "num_machines": devices.num_machines,
        "machine_rank": 0,
        "main_process_ip": devices.main_process_ip,
        "main_process_port": port,
        "rdzv_backend": "static",
        "same_network": True,
        "mixed_precision": "bf16" if bf16 else "no",
        "use_cpu": False,
        "downcast_bf16": "no",
    }
    if devices.strategy in FSDP:
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # one unit per decoder layer
            "fsdp_reshard_after_forward": devices.strategy == "fsdp",
            "fsdp_offload_params": devices.offload,
            # checkpoints as shards, each process its own (resume reads them back); the result is
            # gathered into one ordinary adapter or model folder at the end
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_cpu_ram_efficient_loading": False,
            "fsdp_activation_checkpointing": False,
        }
    elif devices.strategy in DEEPSPEED:
        stage = int(devices.strategy[-1])
        config["distributed_type"] = "DEEPSPEED"
        config["deepspeed_config"] = {
            "zero_stage": stage,
            "offload_optimizer_device": "cpu" if devices.offload else "none",
            "offload_param_device": "cpu" if devices.offload and stage == 3 else "none",
            "zero3_init_flag": False,
            "zero3_save_16bit_model": stage == 3,
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
        }
    return config


def threads_per_process(devices: Devices) -> int:
    """CPU threads each process may use: the cores this process may run on shared out (torchrun's default
    of 1 starves a CPU run; all the host's cores oversubscribe a job given 8 of 128 by Slurm or a cpuset)."""
    from pipelines.hardware import usable_cores

    return max(1, usable_cores() // devices.num_processes)


def launch_command(run_dir: Path, devices: Devices, machine_rank: int = 0) -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(Path(run_dir) / CONFIG_FILE),
               "--num_cpu_threads_per_process", str(threads_per_process(devices))]
    if machine_rank:
        command += ["--machine_rank", str(machine_rank)]
    return command + ["-m", "pipelines.rank", str(run_dir)]


def write_launch(run_dir: Path, devices: Devices, bf16: bool) -> list[str]:
    """Write RUN_DIR/accelerate.yaml and RUN_DIR/launch.txt; returns the command to run here."""
    import yaml

    port = devices.main_process_port or free_port()
    config = accelerate_config(devices, bf16, port)
    (Path(run_dir) / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    command = launch_command(run_dir, devices)
    (Path(run_dir) / LAUNCH_FILE).write_text(describe_launch(run_dir, devices))
    return command


def describe_launch(run_dir: Path, devices: Devices) -> str:
    """The command(s) in words: this machine's, and each other machine's with its machine rank."""
    lines = [f"# this machine (the main one, rank 0), from {Path(__file__).resolve().parent.parent}:",
             shlex.join(launch_command(run_dir, devices))]
    for rank in range(1, devices.num_machines):
        lines += [f"# machine {rank}: the same studio folder and data, then:",
                  shlex.join(launch_command(run_dir, devices, machine_rank=rank))]
    return "\n".join(lines) + "\n"


def as_dict(devices: Devices) -> dict:
    return asdict(devices)


# ---- memory per device -------------------------------------------------------------------------

def per_device_bytes(weights: int, trainable: int, activations: int, runtime: int, devices: Devices,
                     layers: int, device: str = "cuda") -> tuple[int, int]:
    """(bytes on each device, bytes moved to the CPU's memory) under a strategy. `weights` are the
    model's (and adapter's) weights, `trainable` the number of weights that learn (fp32 gradients:
    4 bytes each; AdamW's two moments: 8), `activations` what the batch needs beside them.

    CPU processes are counted as holding everything: each loads the whole model before it is split and
    the CPU's allocator keeps its high-water mark, so splitting saves no memory per process there
    (bench/devices_memory.py: FSDP's processes peaked above a single process's)."""
    n = devices.total_processes if distributed(devices) else 1
    grads, moments = 4 * trainable, 8 * trainable
    w, g, o = weights, grads, moments
    if devices.strategy == "ddp":
        g = 2 * grads  # DDP's communication buckets hold a second copy of the gradients
    elif device != "cuda":
        pass  # CPU processes hold everything (see above)
    elif devices.strategy == "zero1":
        o = moments / n
    elif devices.strategy in ("zero2", "fsdp_grad_op"):
        g, o = grads / n, moments / n
    elif devices.strategy in SHARDED:
        # each process keeps its share, plus one layer gathered whole while it is computed
        w = weights / n + weights / max(1, layers)
        g, o = grads / n, moments / n
    offloaded = 0
    if devices.offload and devices.strategy != "single":
        offloaded += o
        o = 0
        if devices.strategy in SHARDED:
            offloaded += w - weights / max(1, layers)
            w = weights / max(1, layers)
    return int(runtime + w + g + o + activations), int(offloaded)


def fit_text(est, devices: Devices) -> str:
    """What each device holds under the strategy, whether that fits, and the time at best: one line
    under the estimate (`est`: pipelines.estimates.Estimate for one process)."""
    if not distributed(devices):
        return ""
    n = devices.total_processes
    activations = max(0, est.training_bytes - 12 * est.trainable_params)  # less gradients and AdamW moments
    each, offloaded = per_device_bytes(est.weights_bytes, est.trainable_params, activations, est.runtime_bytes,
                                       devices, est.layers, est.device)
    gb = 1024 ** 3
    name = STRATEGIES[devices.strategy].split(":")[0]
    if est.device == "cuda":
        fits = each <= est.available_bytes
        room = f"{'fits' if fits else 'does not fit'} in each GPU's {est.available_bytes / gb:.0f} GB"
    else:  # CPU processes share this machine's memory
        total = each * devices.num_processes + offloaded
        fits = total <= est.available_bytes
        room = (f"{devices.num_processes} × that {'fits' if fits else 'does not fit'} in this machine's "
                f"{est.available_bytes / gb:.0f} GB of RAM (on a CPU each process loads the whole model, so "
                "splitting saves no memory per process)")
    moved = f", {offloaded / gb:.1f} GB kept in CPU memory" if offloaded else ""
    time = "; the processes share this machine's CPU cores, so they train no faster than one"
    if est.device == "cuda":
        time = (f"; each step's batch is shared by {n} processes, so an epoch takes at best 1/{n} of one "
                "device's time, less what they spend exchanging gradients")
    return f"**{name}, {n} processes:** about {each / gb:.2f} GB on each device{moved} — {room}{time}."
