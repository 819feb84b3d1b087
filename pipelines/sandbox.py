"""Run untrusted, model-written Python in a separate, limited process and say how it went.

A GRPO reward like "the code in the reply runs and passes the row's tests" has to execute
whatever the model wrote, thousands of times, while the studio keeps working. So the code never
runs here: it runs in a fresh `python -I` child, in its own session, in a scratch folder that is
removed afterwards, under rlimits (memory, CPU, file size, open files) and a wall-clock timeout
after which the whole process group is killed. Inside the child an audit hook (PEP 578) refuses
network use, new processes, signals, native code and writes outside the scratch folder. PEP 578
says audit hooks are not a sandbox against a determined attacker (the code shares the hook's
interpreter), which is why the process, the limits, the scratch folder and, where the kernel
allows it, an empty network namespace are there too. Nothing the code does makes us raise.

Against reward hacking: leaving early (sys.exit, os._exit) or writing a fake report fails, and
a refusal the code catches still fails the run. Code that deliberately walks the interpreter's
frames to forge the report can still pass; so can objects whose __eq__ always says True. Linux
first: RLIMIT_AS and unshare do not hold on macOS, where the audit hook and timeout remain.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

PREFIX = "studio-sandbox-"
KEEP_BYTES = 64 * 1024  # what we read of the child's stderr and report; the rest is drained
FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)

# The child's first code, passed with -c. It runs before the untrusted code and keeps what it
# needs in _main's locals (not in __main__, which the code can import). It reads and deletes
# job.json, so the code can read neither the tests nor the nonce from disk; the nonce makes a
# plain os._exit(0) or a hand-written report fail instead of passing (code that walks the
# interpreter's frames can still find it: see the module docstring). Limits are set here, not
# in preexec_fn: that is unsafe in a threaded parent (the studio, run_many) and would force a
# full fork of what may be a many-GB training process. RLIMIT_NPROC is left alone: it counts
# all of the user's processes (and threads), so a fixed number either does nothing or breaks
# the code's threads depending on the machine; the audit hook and the group kill cover forks.
BOOT = r'''
import builtins, json, os, resource, signal, sys
def _main():
    fd, mb, cpu = (int(a) for a in sys.argv[1:4])
    root, getcwd, stat, fspath, dumps, write, exit_ = (
        os.getcwd(), os.getcwd, os.stat, os.fspath, json.dumps, os.write, os._exit)
    with open("job.json") as f:
        job = json.load(f)
    os.remove("job.json")
    nonce = job.pop("nonce")
    for lim, val in ((resource.RLIMIT_AS, mb << 20), (resource.RLIMIT_CPU, cpu),
                     (resource.RLIMIT_FSIZE, 10 << 20), (resource.RLIMIT_NOFILE, 64),
                     (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(lim, (val, val + 1 if lim == resource.RLIMIT_CPU else val))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big file is an OSError, not a kill
    import _posixsubprocess  # subprocess's fork; it has no audit event of its own
    refused, W = [], os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def refuse(why):
        refused.append(why)
        raise PermissionError("sandbox: " + why)
    _posixsubprocess.fork_exec = lambda *a: refuse("tried to start a process")
    def outside(p):  # the absolute path if p is outside the scratch folder, else ""
        if isinstance(p, int):  # an already-open file descriptor
            return ""
        p = fspath(p)  # by string only: realpath could be fooled by a patched os.lstat
        p = p.decode("utf-8", "surrogateescape") if isinstance(p, bytes) else p
        parts = []
        for x in (p if p.startswith("/") else getcwd() + "/" + p).split("/"):
            if x == "..":
                parts = parts[:-1]
            elif x not in ("", "."):
                parts.append(x)
        p = "/" + "/".join(parts)
        ok = p == root or p.startswith(root + "/") or p in ("/dev/null", "/dev/stdout", "/dev/stderr")
        return "" if ok else p
    paths = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
             "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
             "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,), "os.chflags": (0,)}
    import posix
    for name in ("mkfifo", "mknod"):  # these raise no audit event: wrapped, in os and posix alike
        def guarded(path, *a, _real=getattr(posix, name), **k):
            bad = outside(path)
            if bad:
                refuse(f"tried to write outside its scratch folder: {bad}")
            return _real(path, *a, **k)
        setattr(posix, name, guarded)
        setattr(os, name, guarded)
    said = {e: "tried to start a process" for e in ("subprocess.Popen", "os.system", "os.exec",
            "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty")}
    said |= {"os.kill": "tried to signal a process", "os.killpg": "tried to signal a process",
             "os.symlink": "tried to make a file link", "os.link": "tried to make a file link",
             "resource.setrlimit": "tried to change its limits",
             "resource.prlimit": "tried to change its limits"}
    def hook(event, args):
        if event == "open":
            bad = outside(args[0])
            if bad and args[2] & W:
                refuse(f"tried to write outside its scratch folder: {bad}")
            if bad and args[1] is None:  # os.open of a folder: its fd would allow dir_fd= writes
                try:
                    folder = stat(args[0]).st_mode & 0o170000 == 0o040000
                except (OSError, TypeError, ValueError):
                    folder = False
                if folder:
                    refuse(f"tried to open a folder outside its scratch folder: {bad}")
        elif event == "sqlite3.connect":  # sqlite opens its files in C: no "open" event
            db = args[0]
            db = db.decode("utf-8", "surrogateescape") if isinstance(db, bytes) else db
            if isinstance(db, str) and db.startswith("file:"):
                refuse("tried to open a database by URI")
            bad = "" if db in (":memory:", "") else outside(db)
            if bad:
                refuse(f"tried to write outside its scratch folder: {bad}")
        elif event in paths:
            for i in paths[event]:
                bad = outside(args[i])
                if bad:
                    refuse(f"tried to write outside its scratch folder: {bad}")
        elif event.startswith("socket.") and event not in ("socket.__new__", "socket.gethostname"):
            refuse("tried to use the network")
        elif event in said:
            refuse(said[event])
        elif event == "import" and args[0] == "_posixsubprocess":  # a fresh, unpatched copy
            refuse("tried to start a process")
        elif event.startswith("ctypes.") and (event, args) != ("ctypes.dlopen", (None,)):
            # dlopen(None) alone is what `import ctypes` (and so numpy) does; any symbol
            # lookup, foreign call or raw memory access after it is still refused
            refuse("tried to load native code with ctypes")
    names = {"<code>": "line", "<tests>": "tests line"}
    def where(e):  # " (tests line 3)": the deepest line of the code or tests in the traceback
        found, tb = "", e.__traceback__
        while tb is not None:
            name = names.get(tb.tb_frame.f_code.co_filename)
            found, tb = (f" ({name} {tb.tb_lineno})" if name else found), tb.tb_next
        return found
    def describe(e):
        if refused:
            return refused[0]
        if isinstance(e, MemoryError):
            return f"used more than {mb} MB of memory"
        if isinstance(e, SyntaxError):
            return f"{type(e).__name__}: {e.msg} ({names.get(e.filename, 'line')} {e.lineno})"
        if isinstance(e, SystemExit):
            return f"exited (code {e.code}) before the tests finished"
        try:
            msg = (str(e).strip().splitlines() or [""])[0]
        except BaseException:
            msg = ""
        return (f"{type(e).__name__}: {msg}" if msg else type(e).__name__)[:200] + where(e)
    # a fresh module, so the code cannot see this one; named "solution", not "__main__", so a reply's
    # `if __name__ == "__main__":` demo (input(), unittest.main()) does not run, as in HumanEval
    module = type(sys)("solution")
    module.__builtins__, sys.argv = builtins, ["solution.py"]
    sys.modules["__main__"] = sys.modules["solution"] = module
    try:
        parts = [compile(job.pop("code"), "<code>", "exec"), compile(job.pop("tests"), "<tests>", "exec")]
        sys.addaudithook(hook)
        for part in parts:
            exec(part, module.__dict__)
        # a refusal the code caught and ignored still fails the run
        report = {"passed": False, "reason": refused[0]} if refused else {"passed": True, "nonce": nonce}
    except BaseException as e:
        report = {"passed": False, "reason": describe(e)}
    # distinct exit codes for whoever reads them: 0 passed, 1 exception, 3 refused, 4 memory
    code = (0 if report["passed"] else 3 if refused
            else 4 if report["reason"].startswith("used more than") else 1)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    try:
        write(fd, dumps(report).encode())
    finally:
        exit_(code)
_main()
'''


@dataclass(frozen=True)
class Outcome:
    passed: bool  # code and tests ran to the end without an exception
    reason: str  # "" when passed; else one short line saying what went wrong
    seconds: float


def extract_code(reply: str) -> str:
    """The Python code in a model reply: its ```python (or ```py) fenced blocks, else its bare ```
    ones, joined in order, else the whole reply. Joined, because a reply often defines the
    function in one block and shows its use in the next; where the joined blocks are not valid
    Python together (a one-line fix shown before the full code), the last block alone. An
    unclosed last fence counts, because GRPO completions are often cut off at the length limit."""
    found = FENCE.findall(reply)
    blocks = ([body for lang, body in found if lang.lower() in ("py", "python", "python3")]
              or [body for lang, body in found if not lang])
    if len(blocks) < 2:
        return blocks[0] if blocks else reply
    import ast

    joined = "".join(block if block.endswith("\n") else block + "\n" for block in blocks)
    try:  # parsed, never run, here; the parser bounds its own nesting (a SyntaxError)
        ast.parse(joined)
    except Exception:  # noqa: BLE001 - anything the parser says means: not valid together
        return blocks[-1]
    return joined


def run_python(code: str, tests: str = "", *, timeout_s: float = 2.0, memory_mb: int = 256) -> Outcome:
    """Run `code` followed by `tests` (e.g. assert lines) in a fresh, limited child process."""
    start = time.monotonic()
    scratch, proc, read_end, write_end = None, None, -1, -1
    try:
        scratch = tempfile.mkdtemp(prefix=PREFIX)
        nonce = secrets.token_hex(16)
        with open(os.path.join(scratch, "job.json"), "w") as f:
            json.dump({"code": code, "tests": tests, "nonce": nonce}, f)
        read_end, write_end = os.pipe()
        cpu_s = math.ceil(timeout_s) + 1
        cmd = [*_unshare_prefix(), sys.executable, "-I", "-B", "-c", BOOT,
               str(write_end), str(memory_mb), str(cpu_s)]
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "TMPDIR": scratch, "LANG": "C.UTF-8",
               # one math thread: OpenBLAS reserves 32-64 MB of address space per core at `import numpy`,
               # so on a many-core machine every numpy solution hit the memory limit before its first line
               **{var: "1" for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
        # stdout goes to /dev/null: nothing reads it, so printing forever costs nothing.
        proc = subprocess.Popen(cmd, cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                pass_fds=(write_end,), start_new_session=True)
        os.close(write_end)
        write_end = -1
        report, err = _collect(proc, read_end, start + timeout_s)
        exited = _wait_unreaped(proc, start + timeout_s)
        _kill_group(proc)  # before reaping, so the group id cannot have been reused
        proc.wait()
        if not exited:
            return _outcome(False, f"timed out after {float(timeout_s)} s", start)
        if report.get("passed") is True and report.get("nonce") == nonce and proc.returncode == 0:
            return _outcome(True, "", start)
        return _outcome(False, _reason(report, proc.returncode, err, timeout_s, memory_mb), start)
    except OSError as e:  # the machine, not the code: no temp space, no processes left
        return _outcome(False, f"could not start the sandbox: {e}", start)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc)
            proc.wait()
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        if scratch is not None:
            _remove(scratch)


def run_many(items: list[tuple[str, str]], *, timeout_s: float = 2.0, memory_mb: int = 256,
             workers: int = 2) -> list[Outcome]:
    """Several (code, tests) at once, each in its own process, at most `workers` at a time; same
    order as given. Threads suffice: each one only waits on its child."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda item: run_python(*item, timeout_s=timeout_s,
                                                     memory_mb=memory_mb), items))


def _outcome(passed: bool, reason: str, start: float) -> Outcome:
    return Outcome(passed, reason, round(time.monotonic() - start, 3))


def _reason(report: dict, rc: int, err: bytes, timeout_s: float, memory_mb: int) -> str:
    """One line for a failed run: the child's own report, else what its exit says."""
    if report.get("reason"):
        return str(report["reason"])[:300]
    if report.get("passed") is True:
        return "tampered with the sandbox's report"
    if rc == -signal.SIGXCPU:
        return f"timed out after {float(timeout_s)} s"
    if rc == -signal.SIGKILL:  # not ours (we had not timed out): the kernel's out-of-memory kill
        return f"used more than {memory_mb} MB of memory"
    if rc < 0:
        return f"crashed ({signal.Signals(-rc).name})"
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:200] if lines else f"exited (code {rc}) before the tests finished"


def _collect(proc: subprocess.Popen, report_fd: int, deadline: float) -> tuple[dict, bytes]:
    """The child's report and the start of its stderr, read until both close or the deadline.
    Everything past KEEP_BYTES is read and dropped, so a flood neither blocks nor fills memory."""
    kept = {report_fd: bytearray(), proc.stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as sel:
        for fd in kept:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fd)
                elif len(kept[key.fd]) < KEEP_BYTES:
                    kept[key.fd] += data[: KEEP_BYTES - len(kept[key.fd])]
    try:
        report = json.loads(bytes(kept[report_fd]))
    except ValueError:
        report = None
    return (report if isinstance(report, dict) else {}), bytes(kept[proc.stderr.fileno()])


def _wait_unreaped(proc: subprocess.Popen, deadline: float) -> bool:
    """Whether the child exited by the deadline, leaving it a zombie so its pid stays taken."""
    if not hasattr(os, "waitid"):  # macOS before Python 3.13: reap it, a tiny pid-reuse risk
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's session group, then the child itself in case it left the group."""
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except OSError:
            pass


def _remove(folder: str) -> None:
    """Delete the scratch folder even if the code locked some of its subfolders."""
    for parent, dirs, _ in os.walk(folder):
        for d in dirs:
            path = os.path.join(parent, d)
            if not os.path.islink(path):
                try:
                    os.chmod(path, 0o700)
                except OSError:
                    pass
    shutil.rmtree(folder, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """`unshare` into an empty network namespace, if the kernel allows it without root; tried
    once per process. The current user is kept (never mapped to root: root in its namespace, the
    code would hold every capability there), so where `unshare` cannot keep it (util-linux before
    2.38) there is no namespace, and the audit hook alone keeps the code off the network."""
    exe = shutil.which("unshare")
    cmd = (exe, "--user", "--net", "--map-current-user") if exe else ()
    try:
        if cmd and subprocess.run([*cmd, "true"], stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=5).returncode == 0:
            return cmd
    except (OSError, subprocess.SubprocessError):
        pass
    return ()
