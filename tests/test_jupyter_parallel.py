"""``%%parallel`` in a real kernel (nbclient, fd capture off): every option, warm reuse, interrupt.

One kernel runs the whole notebook below (about 15 s here); each cell prints what the test
checks. What it shows:

- names the body reads arrive by value with their *current* values (``scale`` changes between
  two runs), including a cell-defined class, a lambda and a module imported under an alias;
- ``--map`` over 100 items keeps input order, ``--map x, y in zip(...)`` unpacks, ``--out``;
- a failing run shows its traceback with the cell's source line, labelled ``[i]``, while the
  other runs' results stay in ``--out``; ``--fail-fast`` stops the others; ``--timeout`` stops
  a run that exceeds it; ``--bg`` returns a handle at once;
- a second cell on warm workers starts in well under the 50 ms target (the figure is printed,
  the bound asserted is generous: this machine is shared);
- nothing a body defines leaks into the next run;
- an interrupt ends the cell at once, and the next cell reuses the same warm pool;
- a run's output lines reach the cell prefixed with its worker (``[0] hello``), under
  forkserver (nbproc's output forwarding) and fork;
- bad options raise a UsageError saying what is wrong; ``%parallel --status/--shutdown``;
  ``%unload_ext nbproc`` removes the magic and turns automatic progress off again.
"""

from __future__ import annotations

import re
import time

import pytest
from _notebook import run_cells, text_of

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

CELLS = [
    # 0
    """
%load_ext nbproc
import time
import numpy as np
import nbproc.jupyter.parallel as par
scale = 10
class Point:
    def __init__(self, x):
        self.x = x
f = lambda v: v * scale
""",
    # 1
    """%%parallel -n 2 --out first --start-method forkserver
import os
(worker_id, n_workers, f(worker_id), Point(worker_id).x, int(np.arange(4).sum()), os.getpid())
""",
    # 2
    """
print("first", [r[:-1] for r in first], "distinct workers:", len({r[-1] for r in first}))
scale = 100
pool = par.current_warm_pool()
""",
    # 3
    """%%parallel -n 2 --out second
print("streamed from", worker_id)
f(worker_id)
""",
    # 4
    """
print("second", second, par.current_warm_pool() is pool)
t0 = time.perf_counter()
r = get_ipython().run_cell_magic("parallel", "-n 2", "worker_id")
warm_ms = (time.perf_counter() - t0) * 1000
t0 = time.perf_counter()
pool.map(abs, [1, 2])
bare_ms = (time.perf_counter() - t0) * 1000
print(f"warm {warm_ms:.1f} ms, bare map {bare_ms:.1f} ms", r)
""",
    # 5
    """%%parallel --map x in range(100) --out squares
x * x
""",
    # 6
    """
print("squares", squares == [x * x for x in range(100)])
a, b = [1, 2, 3], [10, 20, 30]
""",
    # 7
    """%%parallel -n 2 --map x, y in zip(a, b)
x + y
""",
    # 8
    """%%parallel -n 3 --out partial
if worker_id == 1:
    1 / 0
worker_id
""",
    # 9
    """
print("partial", partial[0], type(partial[1]).__name__, partial[2])
t0 = time.perf_counter()
""",
    # 10
    """%%parallel -n 3 --fail-fast --out ff
import time
if worker_id == 0:
    raise ValueError("first to fail")
time.sleep(30)
""",
    # 11
    """
print("fail-fast", round(time.perf_counter() - t0) < 15, [type(v).__name__ for v in ff])
t0 = time.perf_counter()
""",
    # 12
    """%%parallel -n 2 --timeout 1 --out slow
import time
time.sleep(0.1 if worker_id == 0 else 30)
worker_id
""",
    # 13
    """
print("timeout", round(time.perf_counter() - t0) < 15, slow[0], type(slow[1]).__name__)
t0 = time.perf_counter()
""",
    # 14
    """%%parallel -n 2 --bg
import time
time.sleep(1)
worker_id * 7
""",
    # 15
    """
handle = _
print("bg returned at once", time.perf_counter() - t0 < 1.0, handle.ready())
print("bg", handle.get(timeout=60), handle.ready())
""",
    # 16
    """%%parallel -n 2
leak = "defined in a run"
worker_id
""",
    # 17
    """%%parallel -n 2
try:
    leak
except NameError:
    result = "no leak"
result
""",
    # 18
    """
pool = par.current_warm_pool()
before = {w.pid for w in pool.statistics().workers}
t0 = time.perf_counter()
""",
    # 19
    """%%parallel -n 2
import time
time.sleep(60)
""",
    # 20
    """
import os
print(f"interrupted within {time.perf_counter() - t0:.2f} s")
time.sleep(1)

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

print("old workers alive 1 s later:", [pid for pid in before if alive(pid)])
""",
    # 21
    """%%parallel -n 2 --out again
worker_id
""",
    # 22
    """
print("after interrupt", again, par.current_warm_pool() is pool)
doc = get_ipython().find_cell_magic("parallel").__doc__
print("doc", all(opt in doc for opt in ("-n", "--map", "--out", "--start-method", "--timeout", "--fail-fast",
                                      "--bg", "--status", "--shutdown", "--cluster")))
""",
    # 23
    "%%parallel -n 2 --start-method fork\nprint('hello from the body')\nworker_id",
    # 24
    "%%parallel --bogus\n1",
    # 25
    "%%parallel --cluster tcp://127.0.0.1:8786 --start-method spawn\n1",
    # 26
    "%%parallel --map nothing here\n1",
    # 27
    "%%parallel -n 2\nopen_file\n",
    # 28
    "open_file = open(__file__ if '__file__' in dir() else 'x.txt', 'w')",
    # 29
    "%%parallel -n 2\nopen_file\n",
    # 30
    "%parallel --status",
    # 31
    "%parallel --shutdown",
    # 32
    "%parallel --status",
    # 33
    """%unload_ext nbproc
import nbproc
print("unloaded", nbproc.config.progress, get_ipython().find_cell_magic("parallel"))""",
    # 34: a failing --map run: its bar counts the failure (not "done" over failed runs)
    "%load_ext nbproc\n"
    "get_ipython().run_cell_magic('parallel', '--map x in range(6) --out mapped',"
    " 'if x == 3:\\n    raise ValueError(x)\\nx')",
    # 35
    "print('mapped', [type(v).__name__ for v in mapped])",
]

INTERRUPTED = 19
ERRORS = {8, 10, 12, 24, 25, 26, 27, 29, 34}


def _error(cell):
    errors = [o for o in cell.outputs if o.output_type == "error"]
    usage = [o for o in cell.outputs if o.get("name") == "stderr" and "UsageError" in o.get("text", "")]
    return errors[0] if errors else (usage[0] if usage else None)


def test_parallel_magic_in_a_kernel(tmp_path):
    started = time.monotonic()
    nb = run_cells(CELLS, tmp_path, interrupt={INTERRUPTED: 3.0}, errors=ERRORS)
    out = {i: text_of(c) for i, c in enumerate(nb.cells)}

    # current values, by value: class, lambda, alias-imported module
    assert "first [(0, 2, 0, 0, 6), (1, 2, 10, 1, 6)] distinct workers: 2" in out[2], out[2]
    assert "second [0, 100] True" in out[4], out[4]
    # forkserver workers' output reaches the cell (nbproc's output forwarding), labelled by run
    assert "[0] streamed from 0" in out[3] and "[1] streamed from 1" in out[3], out[3]
    warm = re.search(r"warm ([\d.]+) ms, bare map ([\d.]+) ms \[0, 1\]", out[4])
    assert warm, out[4]
    print(f"\n%%parallel -n 2 on warm workers: {warm[1]} ms (bare Pool.map of 2 tasks: {warm[2]} ms)")
    assert float(warm[1]) < 1000  # target < 50 ms; generous on a shared machine

    # --map: order, progress bar, unpacking
    assert "squares True" in out[6]
    assert any(o.output_type == "display_data" and "100/100" in o.data["text/plain"] for o in nb.cells[5].outputs)
    assert nb.cells[7].outputs[-1].data["text/plain"] == "[11, 22, 33]"

    # a failing run: labelled traceback with the cell's source line; the others' results kept
    error = _error(nb.cells[8])
    assert error.ename == "ParallelError" and "1 of 3 runs failed" in error.evalue
    tb = "\n".join(error.traceback)
    assert "[1] ---" in tb and "Cell In[9], line 3" in tb and "1 / 0" in tb and "ZeroDivisionError" in tb, tb
    assert "_cell_runner" not in tb, tb  # the traceback starts in the cell
    assert "partial 0 ZeroDivisionError 2" in out[9], out[9]

    assert "fail-fast True ['ValueError', 'TaskCancelledError', 'TaskCancelledError']" in out[11], out[11]
    assert "timeout True 0 TimeoutError" in out[13], out[13]
    assert "bg returned at once True False" in out[15] and "bg [0, 7] True" in out[15], out[15]
    assert nb.cells[17].outputs[-1].data["text/plain"] == "['no leak', 'no leak']"

    # interrupt: the cell ends at once, the warm pool is reused afterwards
    assert any(o.output_type == "error" and o.ename == "KeyboardInterrupt" for o in nb.cells[INTERRUPTED].outputs)
    seconds = float(re.search(r"interrupted within ([\d.]+) s", out[20])[1])
    print(f"interrupt -> cell ended after {seconds - 3:.2f} s (interrupt sent 3 s into the cell)")
    assert seconds <= 3 + 5, out[20]  # the cell ends promptly
    assert "old workers alive 1 s later: []" in out[20], out[20]
    assert "after interrupt [0, 1] True" in out[22] and "doc True" in out[22], out[22]

    # the same under fork
    assert "[0] hello from the body" in out[23] and "[1] hello from the body" in out[23], out[23]

    # usage errors say what is wrong
    assert "unrecognized arguments: --bogus" in _error(nb.cells[24])["text"]
    assert "--start-method does not apply with --cluster" in _error(nb.cells[25])["text"]  # runs: tests/test_dask.py
    assert "--map expects" in _error(nb.cells[26])["text"]
    error = _error(nb.cells[27])  # not defined in the notebook: NameError in the workers
    assert error.ename == "ParallelError" and "NameError" in error.evalue
    assert "cannot send `open_file`" in _error(nb.cells[29])["text"]

    assert "forkserver" in nb.cells[30].outputs[-1].data["text/html"]
    assert "stopped the warm pool" in out[31] and "no warm pool" in out[32]
    assert "unloaded off None" in out[33], out[33]

    bars = [o.data["text/plain"] for o in nb.cells[34].outputs if o.output_type == "display_data"]
    assert any("1 failed" in bar for bar in bars), bars
    assert "mapped ['int', 'int', 'int', 'ValueError', 'int', 'int']" in out[35], out[35]
    print(f"kernel run took {time.monotonic() - started:.1f} s")
