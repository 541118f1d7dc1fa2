"""Fresh code after a cell re-runs, proven in a real Jupyter kernel (nbclient + ipykernel).

A notebook defines ``f`` and a class ``Shape``, then creates an nbproc pool under fork and
under forkserver, plus the stdlib's fork pool for comparison, and runs them. Then the cell that
defines ``f`` and ``Shape`` is edited and re-run, as a user does, and the same pools run
again: nbproc's pools run the new ``f`` and the new method under both start methods, while the
stdlib's fork pool silently runs the definitions its worker inherited when it forked (its
forkserver/spawn pools cannot run cell code at all). ``nbproc.futures`` does the same.
"""

from __future__ import annotations

import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(120)]

CELL_TIMEOUT = 60

DEFINE_V1 = """
def f(x):
    return x + 1

class Shape:
    def area(self):
        return "v1"
"""

DEFINE_V2 = """
def f(x):
    return x + 100

class Shape:
    def area(self):
        return "v2"
"""

CREATE = """
import multiprocessing
import nbproc
from nbproc.futures import ProcessPoolExecutor

pools = {m: nbproc.get_context(m).Pool(1) for m in ("fork", "forkserver")}
executor = ProcessPoolExecutor(1, mp_context=nbproc.get_context("forkserver"))
stdlib_fork = multiprocessing.get_context("fork").Pool(1)

def report(when):
    for m, pool in pools.items():
        print(when, m, pool.map(f, [1, 2]), pool.apply(Shape().area))
    print(when, "futures", executor.submit(f, 1).result(), executor.submit(Shape().area).result())
    print(when, "stdlib-fork", stdlib_fork.map(f, [1, 2]), stdlib_fork.apply(Shape().area))

report("before")
"""

AFTER = """
report("after")
for pool in (*pools.values(), stdlib_fork):
    pool.terminate()
executor.shutdown()
"""


def test_pool_runs_the_new_definition_after_a_cell_reruns(tmp_path):
    define = new_code_cell(DEFINE_V1)
    nb = new_notebook(cells=[define, new_code_cell(CREATE), new_code_cell(AFTER)])
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    with client.setup_kernel():
        client.execute_cell(define, 0, store_history=True)
        client.execute_cell(nb.cells[1], 1, store_history=True)
        define.source = DEFINE_V2  # the user edits the cell and runs it again
        client.execute_cell(define, 0, store_history=True)
        client.execute_cell(nb.cells[2], 2, store_history=True)
    out = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    for method in ("fork", "forkserver"):
        assert f"before {method} [2, 3] v1" in out, out
        assert f"after {method} [101, 102] v2" in out, out
    assert "before futures 2 v1" in out and "after futures 101 v2" in out, out
    # the stdlib's fork pool keeps running what its worker inherited
    assert "before stdlib-fork [2, 3] v1" in out and "after stdlib-fork [2, 3] v1" in out, out
