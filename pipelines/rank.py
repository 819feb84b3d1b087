"""One process of a run started through `accelerate launch` (pipelines/devices.py):
`python -m pipelines.rank RUN_DIR`, started by the launcher once per device.

Every process runs the same runner. Only the main process (rank 0) writes what the world reads
(metrics, progress, the result); the worker that launched them (pipelines/run.py) keeps the status.
A cancel request reaches every process through the run directory, and the processes agree on it
before stopping (callbacks.CancelCallback), so they stop after the same step.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from pathlib import Path

from pipelines.events import CANCEL, JOB, RunEvents, read_json, write_json

RESULT = "rank-result.json"  # rank 0's summary, for the launching worker
FAILURE = "rank-failure.json"  # the first process that failed says why, in a sentence


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def any_process(flag: bool) -> bool:
    """True on every process when it is true on any (a no-op without a process group)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_gathered(trainer, out: Path, **save_options) -> bool:
    """FSDP and DeepSpeed hold the weights in pieces: every process takes part in gathering them, and
    the main process writes one ordinary adapter or model folder. False when this process holds the
    whole model (one process, or DDP): then the main process saves it the usual way."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    if accelerator.distributed_type == DistributedType.FSDP:
        state = accelerator.get_state_dict(trainer.model)
        if is_main():
            accelerator.unwrap_model(trainer.model).save_pretrained(str(out), state_dict=state, **save_options)
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        trainer.save_model(str(out))  # ZeRO-3 splits the weights; stages 1 and 2 keep them whole
        return True
    return False


class QuietEvents(RunEvents):
    """What a process other than the main one writes: nothing (it still sees a cancel request)."""

    def status(self, status: str, **extra) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def metric(self, record: dict) -> None:
        pass

    def beat(self) -> None:
        pass


def shard_on_cpu() -> None:
    """accelerate 1.15 turns FSDP on only for accelerator devices: a group of CPU processes (gloo) is
    always plain data-parallel there. torch's FSDP2 shards CPU tensors over gloo as well, so when the
    launcher asked for FSDP and the processes found no GPU, the state is switched to FSDP after it
    was set up (the same plugin accelerate would have used on GPUs)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    original = AcceleratorState.__init__
    if getattr(original, "studio_cpu_fsdp", False):
        return

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin or FullyShardedDataParallelPlugin()

    init.studio_cpu_fsdp = True
    AcceleratorState.__init__ = init


def main(run_dir: str) -> int:
    run_dir = Path(run_dir).resolve()
    job = read_json(run_dir / JOB)
    # the launcher passes a polite kill on to every process: it becomes a cancel request, so the
    # processes save a checkpoint together instead of dying mid-step
    signal.signal(signal.SIGTERM, lambda _s, _f: (run_dir / CANCEL).touch())
    if not is_main():  # the main process's lines are the run's log; the others keep their own
        log = open(run_dir / f"rank{rank()}.log", "a", buffering=1)
        sys.stdout = sys.stderr = log
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    from pipelines.run import failure_message, quiet_libraries

    quiet_libraries()
    shard_on_cpu()
    events = RunEvents(run_dir) if is_main() else QuietEvents(run_dir)
    if is_main():
        events.start_heartbeat()  # the progress the studio shows comes from here from now on
    try:
        from pipelines.methods import get_method

        runner = importlib.import_module(get_method(job["method"]).runner)
        summary = runner.train(job, run_dir, events)
    except Exception as err:
        message = failure_message(err, run_dir, f"error-rank{rank()}.txt")
        print(f"process {rank()} failed: {message}", flush=True)
        if not (run_dir / FAILURE).exists():
            with contextlib.suppress(OSError):
                write_json(run_dir / FAILURE, {"rank": rank(), "error": message})
        return 1
    finally:
        events.stop_heartbeat()
    if is_main():
        write_json(run_dir / RESULT, {"summary": summary})
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m pipelines.rank RUN_DIR (started by accelerate launch)", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
