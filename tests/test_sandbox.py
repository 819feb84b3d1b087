"""The code sandbox: untrusted code runs in a limited child and every misdeed becomes a failed
Outcome with a clear reason, while this (the studio's) process carries on unharmed."""

from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest

from pipelines import sandbox
from pipelines.sandbox import PREFIX, Outcome, extract_code, run_many, run_python


def test_passing_code_and_tests():
    out = run_python("def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\n")
    assert out == Outcome(True, "", out.seconds)
    assert 0 < out.seconds < 5


def test_failing_assert_names_the_test_line():
    out = run_python("def add(a, b):\n    return a - b\n", "assert add(1, 1) == 0\nassert add(2, 3) == 5")
    assert not out.passed
    assert out.reason.startswith("AssertionError") and "tests line 2" in out.reason


def test_exception_gives_type_and_first_line():
    out = run_python("x = 1\nraise ValueError('bad value\\nmore detail')")
    assert out.reason == "ValueError: bad value (line 2)"


def test_syntax_error_gives_its_line():
    out = run_python("x = 1\ny = 2\ndef broken(:\n    pass\n")
    assert not out.passed
    assert out.reason.startswith("SyntaxError") and out.reason.endswith("(line 3)")


def test_endless_loop_is_killed_at_the_timeout():
    start = time.monotonic()
    out = run_python("while True:\n    pass\n", timeout_s=1)
    assert not out.passed and out.reason == "timed out after 1.0 s"
    assert time.monotonic() - start < 4


def test_memory_hog_hits_the_memory_limit():
    out = run_python("x = bytearray(10**9)", memory_mb=256)
    assert not out.passed and out.reason == "used more than 256 MB of memory"


def test_write_outside_the_scratch_folder_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    out = run_python(f"open({str(target)!r}, 'w').write('x')")
    assert not out.passed
    assert out.reason == f"tried to write outside its scratch folder: {target}"
    assert not target.exists()


def test_write_outside_through_dotdot_and_chdir_is_refused(tmp_path):
    code = f"import os\nos.chdir({str(tmp_path)!r})\nopen('../x/../escaped.txt', 'w')"
    out = run_python(code)
    assert out.reason.startswith("tried to write outside its scratch folder")
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_write_inside_its_own_folder_is_allowed():
    code = "import os\nos.makedirs('a/b')\nopen('a/b/f.txt', 'w').write('hi')\n"
    assert run_python(code, "assert open('a/b/f.txt').read() == 'hi'").passed


def test_network_is_refused():
    out = run_python('import socket\nsocket.create_connection(("127.0.0.1", 9))')
    assert not out.passed and out.reason == "tried to use the network"


def test_the_audit_hook_guards_alone_without_unshare(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "_unshare_prefix", lambda: ())
    assert run_python('import socket\nsocket.create_connection(("127.0.0.1", 9))').reason == (
        "tried to use the network")
    assert not run_python(f"open({str(tmp_path / 'x')!r}, 'w')").passed
    assert not (tmp_path / "x").exists()


def test_child_gets_its_own_network_namespace_where_unshare_works():
    if not sandbox._unshare_prefix():
        pytest.skip("unshare --user --net is not allowed here; the audit hook guards alone")
    out = run_python("import os\nraise ValueError(os.readlink('/proc/self/ns/net'))")
    assert out.reason.startswith("ValueError: net:[")
    assert os.readlink("/proc/self/ns/net") not in out.reason


@pytest.mark.parametrize("code", [
    'import subprocess\nsubprocess.run(["true"])',
    'import os\nos.system("true")',
    "import os\nos.fork()",
    "import multiprocessing\nmultiprocessing.Process(target=print).start()",
])
def test_starting_a_process_is_refused(code):
    out = run_python(code)
    assert not out.passed and out.reason == "tried to start a process"


def test_a_refusal_the_code_swallows_still_fails():
    out = run_python("import os\ntry:\n    os.system('true')\nexcept Exception:\n    pass\n")
    assert not out.passed and out.reason == "tried to start a process"


def test_signalling_the_studio_is_refused():
    # signal 0 only asks whether the process exists, so a broken guard cannot hurt pytest
    out = run_python("import os\nos.kill(os.getppid(), 0)")
    assert out.reason == "tried to signal a process"


def test_ctypes_imports_but_cannot_reach_native_code():
    assert run_python("import ctypes").passed  # numpy imports it
    out = run_python("import ctypes\nctypes.CDLL(None).system(b'true')")
    assert out.reason == "tried to load native code with ctypes"


@pytest.mark.parametrize("code", ["import sys\nsys.exit(0)", "import os\nos._exit(0)"])
def test_exiting_before_the_tests_does_not_pass(code):
    out = run_python(code, "assert False")
    assert not out.passed and "before the tests finished" in out.reason


def test_printing_100_mb_does_not_break_the_parent():
    out = run_python("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 2**20)\n",
                     timeout_s=10)
    assert out.passed, out.reason


def test_a_flood_on_stderr_is_bounded():
    out = run_python("import sys\nsys.stderr.write('e' * 50 * 2**20)\nraise SystemExit(3)",
                     timeout_s=10)
    assert out.reason == "exited (code 3) before the tests finished"


def test_scratch_folder_is_removed_even_after_a_timeout(monkeypatch):
    # The folder this run made, not a listing of the temp dir: other runs may share it.
    made = []
    real_mkdtemp = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(real_mkdtemp(**kw)) or made[-1])
    out = run_python("open('left.txt', 'w').write('x')\nwhile True:\n    pass\n", timeout_s=0.5)
    assert out.reason == "timed out after 0.5 s"
    assert len(made) == 1 and os.path.basename(made[0]).startswith(PREFIX)
    assert not os.path.exists(made[0])


def test_run_many_keeps_order_and_runs_two_at_a_time():
    items = [(f"import time\ntime.sleep(0.5)\nx = {i}", f"assert x == {i} and {i} != 2")
             for i in range(4)]
    start = time.monotonic()
    outs = run_many(items, workers=2)
    elapsed = time.monotonic() - start
    assert [o.passed for o in outs] == [True, True, False, True]
    assert outs[2].reason.startswith("AssertionError")
    assert elapsed >= 2 * 0.5  # never more than two at once
    assert elapsed < 0.75 * sum(o.seconds for o in outs)  # but they did overlap


@pytest.mark.parametrize("reply, code", [
    ("Here you go:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
    ("```py\nx = 1\n```\nthen\n```python\nx = 2\n```", "x = 1\nx = 2\n"),
    # a definition, then its use in a block of its own: both run (the last alone was a NameError)
    ("```python\ndef add(a, b):\n    return a + b\n```\nExample:\n```python\nprint(add(2, 3))\n```",
     "def add(a, b):\n    return a + b\nprint(add(2, 3))\n"),
    # a one-line fix shown before the full code is not valid Python together with it: the last block
    ("Change it to\n```python\n    return a + b\n```\nso:\n```python\ndef add(a, b):\n    return a + b\n```",
     "def add(a, b):\n    return a + b\n"),
    # python-tagged blocks first; a bare block beside them is output, not code
    ("```python\nx = 1\n```\nprints\n```\n1\n```", "x = 1\n"),
    ("```\nbare = True\n```", "bare = True\n"),
    ("```python\nx = 1\n```\nRun it with:\n```bash\npython x.py\n```", "x = 1\n"),
    ("```python\ndef cut_off():\n    return", "def cut_off():\n    return"),
    ("def no_fence():\n    return 3", "def no_fence():\n    return 3"),
])
def test_extract_code(reply, code):
    assert extract_code(reply) == code


def test_sqlite_fifos_and_device_nodes_outside_the_scratch_folder_are_refused(tmp_path):
    """sqlite opens its files in C (no "open" audit event): a reply wrote a database anywhere, the studio's own too."""
    target = tmp_path / "x.db"
    out = run_python(f"import sqlite3\nsqlite3.connect({str(target)!r}).execute('create table t (x)')")
    assert not out.passed and out.reason == f"tried to write outside its scratch folder: {target}"
    assert not target.exists()
    out = run_python(f"import sqlite3\nsqlite3.connect('file:{target}?mode=rwc', uri=True)")
    assert not out.passed and out.reason == "tried to open a database by URI" and not target.exists()
    fifo = tmp_path / "fifo"
    out = run_python(f"import os\nos.mkfifo({str(fifo)!r})")
    assert not out.passed and out.reason == f"tried to write outside its scratch folder: {fifo}"
    assert not fifo.exists()
    # in its own folder, or in memory, a database is the code's business
    code = "import sqlite3\ndb = sqlite3.connect('here.db')\ndb.execute('create table t (x)')\nm = sqlite3.connect(':memory:')"
    assert run_python(code, "assert db.execute('select count(*) from t').fetchone() == (0,)").passed


def test_numpy_imports_under_a_small_memory_limit():
    """OpenBLAS reserves address space per core at import: on a many-core machine every numpy solution failed
    the memory limit before its first line."""
    out = run_python("import numpy as np", "assert np.arange(4).sum() == 6", memory_mb=128)
    assert out.passed, out.reason


def test_a_replys_main_block_does_not_run():
    """The code ran as __main__: a reply's `if __name__ == "__main__": input()` demo failed a correct solution."""
    code = "def add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    print(add(int(input()), 1))\n"
    out = run_python(code, "assert add(2, 3) == 5")
    assert out.passed, out.reason
    assert run_python("import sys\nclass C: pass\nimport pickle\npickle.loads(pickle.dumps(C()))").passed


def test_the_parent_process_is_unaffected(tmp_path):
    # Runs last: after all of the above, this process can still use the network and write.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
    (tmp_path / "still.txt").write_text("ok")
    assert (tmp_path / "still.txt").read_text() == "ok"
