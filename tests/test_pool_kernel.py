"""Pool inside a real Jupyter kernel: cell-defined functions and classes under spawn and forkserver,
a worker killed mid-task, and a kernel interrupt during ``map``.

A notebook built with nbformat runs in a real ipykernel through nbclient. Its cells define a
function, a closure and a class, then map them with ``nbproc.get_context(m).Pool`` for spawn
and forkserver (the stdlib cannot: its workers cannot unpickle ``__main__`` names that have no
file). A task that SIGKILLs its own worker must fail with ``WorkerLostError`` and leave the
pool usable. Finally the test interrupts the kernel (SIGINT to its process group, as the
Interrupt button does) while a cell waits in ``map`` on 60-second tasks: the cell must end with
KeyboardInterrupt at once, and the next cell must find the pool working with fresh workers.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

CELL_TIMEOUT = 120

DEFINE = """
import os, signal, time
import nbproc

scale = 3

def square(x):
    return x * x

class Point:
    def __init__(self, x):
        self.x = x
    def scaled(self):
        return Point(self.x * scale)

def kill_self(x):
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x
"""

RUN = """
for method in ("spawn", "forkserver"):
    with nbproc.get_context(method).Pool(2) as pool:
        print(method, pool.map(square, range(5)), pool.map(lambda x: x + scale, range(3)),
              [p.x for p in pool.map(Point.scaled, [Point(1), Point(2)])],
              type(pool.apply(Point, (7,))) is Point)
        try:
            pool.map(kill_self, range(4), chunksize=1)
        except nbproc.WorkerLostError as exc:
            print(method, "lost", exc.exitcode)
        print(method, "after", pool.map(square, [4]))
"""

START_LONG = """
pool = nbproc.get_context("forkserver").Pool(2)
pool.map(square, range(4))
before = {p.pid for p in pool._pool}
started = time.monotonic()
"""

WAIT_LONG = """
pool.map(time.sleep, [60, 60], chunksize=1)
"""

AFTER = """
print("interrupted after", round(time.monotonic() - started) < 30)
print("pool works", pool.map(square, range(3)))
print("fresh workers", not before & {p.pid for p in pool._pool})
pool.terminate()
"""


def interrupt_kernel(client: NotebookClient) -> None:
    """SIGINT to the kernel's process group: what ``KernelManager.interrupt_kernel`` does for a
    local kernel (the kernel runs in its own session), without driving its async API from here."""
    pid = client.km.provisioner.process.pid
    os.killpg(os.getpgid(pid), signal.SIGINT)


def test_pool_in_a_kernel(tmp_path):
    cells = [new_code_cell(src) for src in (DEFINE, RUN, START_LONG, WAIT_LONG, AFTER)]
    nb = new_notebook(cells=cells)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if index == 3:
                # interrupt once the long map is under way, as the Interrupt button would
                timer = threading.Timer(2.0, interrupt_kernel, (client,))
                timer.start()
                try:
                    client.execute_cell(cell, index, store_history=True)
                except Exception as exc:  # noqa: BLE001 - nbclient raises CellExecutionError
                    assert "KeyboardInterrupt" in str(exc)
                else:
                    pytest.fail("the interrupted cell did not raise KeyboardInterrupt")
                finally:
                    timer.cancel()
                continue
            start = time.monotonic()
            client.execute_cell(cell, index, store_history=True)
            assert time.monotonic() - start < CELL_TIMEOUT
    out = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
    for method in ("spawn", "forkserver"):
        assert f"{method} [0, 1, 4, 9, 16] [3, 4, 5] [3, 6] True" in out, out
        assert f"{method} lost -9" in out, out
        assert f"{method} after [16]" in out, out
    assert "interrupted after True" in out, out
    assert "pool works [0, 1, 4]" in out, out
    assert "fresh workers True" in out, out
