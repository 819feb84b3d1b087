"""Chaos: kill training workers with SIGKILL at random moments of real runs, and the server a few
times, and check after every kill what issue #18 asks:

- the run shows failed/interrupted within 10 s (limit: DETECT_LIMIT_S);
- the newest complete (sealed) checkpoint is never lost, and every sealed one reads back whole;
- the step count never goes back (the curve has each step once, in order, to the end);
- `studio resume RUN --wait` completes the run (exit 0);
- the catalogue database passes `PRAGMA integrity_check`.

Moments: while loading, while training (a random step), while evaluating between steps, and while
writing a checkpoint (a checkpoint folder that exists but is not sealed yet; the line says whether
the kill landed inside that window). Server kills: the server alone (the run must go on), and the
server with its worker (a machine crash: the restarted server must mark the run interrupted).

    python bench/chaos.py [--kills 20] [--runs 4] [--model default] [--seed 0]

Runs are small real runs of the model (default: the built-in SmolLM2-135M) on the Quillpad FAQ.
Nothing else should run meanwhile: detection times are measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.events import (  # noqa: E402
    CHECKPOINTS,
    EVALUATING,
    HEARTBEAT,
    SEALED,
    STATUS,
    newest_checkpoint,
    read_json,
    read_metrics,
)
from studio.core import Studio  # noqa: E402

DETECT_LIMIT_S = 10.0
MOMENTS = ("loading", "training", "evaluating", "checkpoint")
PARAMS = {"num_train_epochs": 0.5, "per_device_train_batch_size": 4, "max_length": 96, "save_steps": 2,
          "eval_steps": 4, "eval_fraction": 0.1, "learning_rate": 2e-4}


def step_of(checkpoint: Path | None) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint else 0


def sealed_read_back(run_dir: Path) -> bool:
    """Every sealed checkpoint's weights and state read whole."""
    from safetensors.torch import load_file

    for folder in (run_dir / CHECKPOINTS).glob("checkpoint-*"):
        if (folder / SEALED).exists():
            load_file(str(folder / "adapter_model.safetensors"))
            if read_json(folder / "trainer_state.json") is None:
                return False
    return True


def integrity(studio: Studio) -> str:
    with sqlite3.connect(studio.store.db_path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def worker_pid(run_dir: Path) -> int | None:
    status = read_json(run_dir / STATUS) or {}
    return status.get("pid") if status.get("status") == "running" else None


def wait_for(predicate, timeout: float, poll: float = 0.05):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    return None


def moment_reached(run_dir: Path, moment: str, target_step: int, stale: set):
    """True when the worker is at `moment` (polled fast); for a checkpoint, the unsealed folder it is
    writing (not one left by an earlier kill, in `stale`, which the resumed worker removes)."""
    beat = read_json(run_dir / HEARTBEAT) or {}
    if worker_pid(run_dir) is None:
        return False
    if moment == "loading":
        return beat.get("phase", "").startswith(("loading", "starting"))
    if moment == "training":
        return beat.get("phase") == "training" and beat.get("step", 0) >= target_step
    if moment == "evaluating":
        return beat.get("phase") == EVALUATING
    if moment == "checkpoint":
        newest = step_of(newest_checkpoint(run_dir))
        for folder in (run_dir / CHECKPOINTS).glob("checkpoint-*"):
            if step_of(folder) > newest and folder.name not in stale and not (folder / SEALED).exists():
                return folder
    return False


def kill_once(studio: Studio, run_id: str, moment: str, rng: random.Random) -> dict:
    run_dir = studio.run_dir(run_id)
    before = step_of(newest_checkpoint(run_dir))
    target = before + rng.randint(1, 3)
    stale = {p.name for p in (run_dir / CHECKPOINTS).glob("checkpoint-*") if not (p / SEALED).exists()}
    reached = wait_for(lambda: moment_reached(run_dir, moment, target, stale), timeout=240,
                       poll=0.002 if moment == "checkpoint" else 0.05)
    if not reached:
        return {"moment": moment, "skipped": "the run never reached this moment (it may have finished)"}
    if moment == "loading":
        time.sleep(rng.uniform(0.0, 1.5))
    pid = worker_pid(run_dir)
    if pid is None:
        return {"moment": moment, "skipped": "the worker had already ended"}
    step = (read_json(run_dir / HEARTBEAT) or {}).get("step", 0)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    caught = moment != "checkpoint" or (Path(reached).exists() and not (Path(reached) / SEALED).exists())
    row = wait_for(lambda: (r := studio.get_run(run_id))["status"] in ("failed", "interrupted") and r,
                   timeout=60, poll=0.05)
    detected = time.time() - killed_at
    # what another process (the CLI, a restarted server) sees: it did not start the worker
    observer = Studio(studio.home)
    wait_for(lambda: observer.get_run(run_id)["status"] in ("failed", "interrupted"), timeout=60, poll=0.05)
    observed = time.time() - killed_at
    after = step_of(newest_checkpoint(run_dir))
    return {"moment": moment, "step": step, "checkpoint_before": before, "checkpoint_after": after,
            "caught": caught, "detect_s": detected, "observer_s": observed, "shown": row["status"] if row else "still running",
            "error": (row or {}).get("error"), "read_back": sealed_read_back(run_dir),
            "integrity": integrity(studio)}


def cli(home: Path, *args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio.cli", *args, "--home", str(home)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def finished_cleanly(studio: Studio, run_id: str) -> dict:
    done = cli(studio.home, "resume", run_id, "--wait")
    row = studio.get_run(run_id)
    steps = [m["step"] for m in read_metrics(studio.run_dir(run_id)) if "loss" in m]
    return {"resume_rc": done.returncode, "status": row["status"], "max_steps": row["max_steps"],
            "steps_in_order": steps == sorted(set(steps)) and bool(steps) and steps[-1] == row["max_steps"],
            "result": (studio.run_dir(run_id) / "adapter" / "adapter_model.safetensors").exists(),
            "stderr": done.stderr.strip().splitlines()[-1:] if done.returncode else []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(home: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "studio.cli", "serve", "--home", str(home), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    up = wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, timeout=120, poll=0.2)
    if not up:
        raise SystemExit("the studio server did not start")
    return proc


def server_kills(home: Path, model: str) -> list[str]:
    """The server killed alone (the run goes on), then with its worker (a machine crash)."""
    lines = []
    studio = Studio(home)
    port = free_port()
    server = serve(home, port)
    run_id = studio.start_run(model=model, dataset="quillpad_faq", method="lora", params=PARAMS)
    run_dir = studio.run_dir(run_id)
    wait_for(lambda: (read_json(run_dir / HEARTBEAT) or {}).get("step", 0) >= 2, timeout=300)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    pid = worker_pid(run_dir)
    step = (read_json(run_dir / HEARTBEAT) or {}).get("step", 0)
    went_on = wait_for(lambda: (read_json(run_dir / HEARTBEAT) or {}).get("step", 0) > step, timeout=120)
    lines.append(f"server killed alone at step {step}: worker alive {pid is not None and went_on is not None}, "
                 f"run went on to step {(read_json(run_dir / HEARTBEAT) or {}).get('step')}")
    server = serve(home, port)  # a restarted server finds the run still running
    shown = Studio(home).get_run(run_id)["status"]
    lines.append(f"server restarted: the run shows {shown}")
    # a machine crash: server and worker die together; the next start marks the run interrupted
    pid = worker_pid(run_dir)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    if pid:
        os.kill(pid, signal.SIGKILL)
    started = time.time()
    server = serve(home, port)
    row = wait_for(lambda: (r := Studio(home).store.get_run(run_id))["status"] == "interrupted" and r,
                   timeout=30, poll=0.1)
    lines.append(f"server and worker killed together: after the restart the run shows "
                 f"{row['status'] if row else 'not interrupted'} {time.time() - started:.1f} s after the server "
                 "was started again (including its start-up)")
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    done = finished_cleanly(Studio(home), run_id)
    lines.append(f"studio resume --wait: exit {done['resume_rc']}, {done['status']}, steps once each in order "
                 f"to {done['max_steps']}: {done['steps_in_order']}, result saved: {done['result']}; "
                 f"database integrity: {integrity(Studio(home))}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, help="workspace (default: a new temporary one)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    home = args.home or Path(tempfile.mkdtemp(prefix="chaos-"))
    studio = Studio(home)
    studio.resolve_model(args.model)  # the default model is converted once, before any clock starts
    print(f"chaos: {args.kills} SIGKILLs of training workers over {args.runs} runs of {args.model} "
          f"(LoRA, Quillpad FAQ, checkpoint every {PARAMS['save_steps']} steps, evaluation every "
          f"{PARAMS['eval_steps']}), workspace {home}")
    began = time.time()
    kills, runs = [], []
    per_run = -(-args.kills // args.runs)
    plan = [MOMENTS[i % len(MOMENTS)] for i in range(args.kills)]  # each moment as often, in a random order
    rng.shuffle(plan)
    for r in range(args.runs):
        run_id = studio.start_run(model=args.model, dataset="quillpad_faq", method="lora", params=PARAMS)
        for k in range(min(per_run, args.kills - len(kills))):
            if k:
                studio.resume(run_id)  # the last kill's run goes on (and is killed again)
            moment = plan[len(kills)]
            result = kill_once(studio, run_id, moment, rng)
            result["run"] = run_id
            kills.append(result)
            if "skipped" in result:
                print(f"kill {len(kills):2d} {moment:10s} skipped: {result['skipped']}", flush=True)
                break
            print(f"kill {len(kills):2d} {moment:10s} at step {result['step']:2d}"
                  f"{'' if result['caught'] else ' (missed the write window)'}: shown {result['shown']} after "
                  f"{result['detect_s']:.1f} s here, {result['observer_s']:.1f} s in another process; sealed "
                  f"checkpoint {result['checkpoint_before']} -> {result['checkpoint_after']}; read back "
                  f"{result['read_back']}; integrity {result['integrity']}", flush=True)
        done = finished_cleanly(studio, run_id)
        runs.append(done)
        print(f"run {r + 1} ({run_id}): studio resume --wait exit {done['resume_rc']}, {done['status']}, "
              f"steps once each in order to {done['max_steps']}: {done['steps_in_order']}, result saved: "
              f"{done['result']} {' '.join(done['stderr'])}", flush=True)
    for line in server_kills(home, args.model):
        print(line, flush=True)

    done = [k for k in kills if "skipped" not in k]
    detect = [max(k["detect_s"], k["observer_s"]) for k in done]
    lost = [k for k in done if k["checkpoint_after"] < k["checkpoint_before"]]
    print("\nsummary")
    counts = ", ".join(f"{m} {sum(k['moment'] == m for k in done)}" for m in MOMENTS)
    caught = sum(k["caught"] for k in done if k["moment"] == "checkpoint")
    print(f"kills: {len(done)} of {args.kills} landed ({counts}; checkpoint writes caught inside the window: {caught})")
    print(f"shown failed/interrupted within {DETECT_LIMIT_S:.0f} s: {sum(d <= DETECT_LIMIT_S for d in detect)}/{len(done)} "
          f"(slowest {max(detect):.1f} s; ratio slowest / limit {max(detect) / DETECT_LIMIT_S:.2f}x)")
    print(f"sealed checkpoints lost: {len(lost)}; unreadable after a kill: {sum(not k['read_back'] for k in done)}; "
          f"integrity_check not ok: {sum(k['integrity'] != 'ok' for k in done)}")
    print(f"runs resumed to completion with every step once, in order: "
          f"{sum(r['resume_rc'] == 0 and r['steps_in_order'] and r['result'] for r in runs)}/{len(runs)}")
    print(f"total {time.time() - began:.0f} s")
    ok = (len(done) == args.kills and all(d <= DETECT_LIMIT_S for d in detect) and not lost
          and all(k["read_back"] and k["integrity"] == "ok" for k in done)
          and all(r["resume_rc"] == 0 and r["steps_in_order"] and r["result"] for r in runs))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
