"""Tracebacks, interrupts and orphans through a real Jupyter kernel (ipykernel via jupyter_client).

One kernel (fd capture off, as under nbval and older kernels) serves the traceback and the
interrupt cases in order; a second, short-lived one is SIGKILLed for the orphan case.

- Tracebacks: an exception raised in a cell-defined function in a Pool task, a Process and a
  manager method, under spawn and forkserver, reaches the notebook with the cell's source line
  and IPython's ``Cell In[N], line L`` label; the cell-defined exception class is still caught.
- Interrupts: ``KernelManager.interrupt_kernel()`` (SIGINT to the kernel's process group, as the
  stop button) while a cell waits in ``map``, ``imap``, ``AsyncResult.get``, ``Process.join``
  and ``Queue.get``: one KeyboardInterrupt, no "Traceback" in any stream, no process left but
  the pool's idle workers (and the stdlib's fork server and resource tracker), the pool usable.
- Orphans: SIGKILL of the kernel leaves no nbproc process after 5 s.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import time

import psutil
import pytest
from _kernel_session import KernelSession
from conftest import keep_children
from test_orphans import dead_within

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(300)]

# The kernel's own fd capture is off, as under nbval and older kernels: what a child writes to
# its stderr (a Process's traceback, a stray worker traceback) then reaches the iopub streams
# these tests inspect through nbproc's output forwarding (nbproc._output, issue 8's other half).
# On a tree without that forwarding the kernel's capture is turned on instead, so that the
# child's stderr still reaches the streams and the assertions keep their meaning.
CAPTURE_FD_OUTPUT = importlib.util.find_spec("nbproc._output") is None
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Helpers that live for the interpreter's life by design (not leaks), as in conftest.py.
LONG_LIVED = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")

SETUP = """\
import multiprocessing.pool, os, sys, time
import nbproc
from nbproc.managers import BaseManager


class CellError(Exception):
    pass


def fails(x):
    if x == 3:
        raise CellError(f"cell failure {x}")
    return x


class Thing:
    def explode(self):
        return fails(3)


class ThingManager(BaseManager):
    pass


ThingManager.register("Thing", Thing)


def produce_late(q):
    time.sleep(30)
    q.put("late")
"""
RAISE_LINE = 'raise CellError(f"cell failure {x}")'
LINE_FAILS = next(i for i, line in enumerate(SETUP.splitlines(), 1) if RAISE_LINE in line)
LINE_EXPLODE = next(i for i, line in enumerate(SETUP.splitlines(), 1) if "return fails(3)" in line)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    session = KernelSession(str(tmp_path_factory.mktemp("nbruntime")), capture_fd_output=CAPTURE_FD_OUTPUT)
    try:
        reply = session.wait_idle(session.start(SETUP), 60)
        assert reply["status"] == "ok", reply
        session.setup_count = reply["execution_count"]
        yield session
    finally:
        session.shutdown()


def _error(kernel: KernelSession, code: str, timeout: float = 60) -> tuple[dict, str]:
    """Run a cell expected to raise: (execute_reply content, its traceback text without colours)."""
    msg_id = kernel.start(code)
    content = kernel.wait_idle(msg_id, timeout)
    assert content["status"] == "error", f"cell did not raise:\n{code}\n{kernel.text(msg_id, 'stderr')}"
    return content, ANSI.sub("", "\n".join(content["traceback"]))


# -- tracebacks ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pool_task_traceback_shows_the_cell(kernel, method):
    content, text = _error(kernel, f"with nbproc.get_context({method!r}).Pool(1) as p:\n    p.map(fails, range(5))")
    assert content["ename"] == "CellError"
    assert f"Cell In[{kernel.setup_count}], line {LINE_FAILS}, in fails" in text, text
    assert RAISE_LINE in text, text
    msg_id = kernel.run(
        f"with nbproc.get_context({method!r}).Pool(1) as p:\n"
        "    try:\n        p.apply(fails, (3,))\n"
        "    except CellError as e:\n"
        "        print('caught', isinstance(e.__cause__, multiprocessing.pool.RemoteTraceback))"
    )
    assert kernel.text(msg_id, "stdout") == "caught True\n"


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_manager_method_traceback_shows_the_cell(kernel, method):
    content, text = _error(
        kernel, f"with ThingManager(ctx=nbproc.get_context({method!r})) as m:\n    m.Thing().explode()"
    )
    assert content["ename"] == "CellError"
    assert f"Cell In[{kernel.setup_count}], line {LINE_FAILS}, in fails" in text, text
    assert f"Cell In[{kernel.setup_count}], line {LINE_EXPLODE}, in explode" in text, text
    assert RAISE_LINE in text, text


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_process_traceback_shows_the_cell(kernel, method):
    msg_id = kernel.run(
        f"p = nbproc.get_context({method!r}).Process(target=fails, args=(3,))\n"
        "p.start()\np.join()\nprint('exitcode', p.exitcode)"
    )
    assert kernel.text(msg_id, "stdout") == "exitcode 1\n"
    err = kernel.text(msg_id, "stderr")
    assert "Process " in err and "Traceback (most recent call last):" in err, err
    assert f"Cell In[{kernel.setup_count}], line {LINE_FAILS}, in fails" in err, err
    assert RAISE_LINE in err and "CellError: cell failure 3" in err, err


# -- interrupts ------------------------------------------------------------------------------


def _descendants(kernel: KernelSession, *, helpers: bool = True) -> dict[int, str]:
    """The kernel's live descendants (pid -> command line); without the fork server and the
    resource tracker if not ``helpers`` — those are the kernel's direct children with those
    modules on their command line (a forkserver child shows its server's command line too)."""
    kernel_proc = psutil.Process(kernel.km.provisioner.process.pid)
    found = {}
    for child in kernel_proc.children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(child.cmdline())
            if not helpers and child.ppid() == kernel_proc.pid and any(m in cmdline for m in LONG_LIVED):
                continue
            found[child.pid] = cmdline
        except psutil.NoSuchProcess:
            pass
    return found


def _interrupt_while(kernel: KernelSession, code: str) -> None:
    """Start ``code`` (which prints "waiting" just before it blocks), interrupt, expect one KeyboardInterrupt."""
    before = len(kernel.streams())
    msg_id = kernel.start(f"print('waiting', flush=True)\n{code}")
    kernel.wait_for(lambda: "waiting" in kernel.text(msg_id, "stdout"), 60, "the cell to start waiting")
    time.sleep(0.5)  # let it block (and the tasks start running)
    kernel.km.interrupt_kernel()
    content = kernel.wait_idle(msg_id, 30)
    assert content["status"] == "error" and content["ename"] == "KeyboardInterrupt", content
    time.sleep(1.5)  # what is still going to print has had the time to
    streams = "".join(m["content"]["text"] for m in kernel.streams()[before:])
    assert "Traceback" not in streams, streams


def _only_idle_workers_left(kernel: KernelSession, pool_name: str) -> None:
    """Within ~2 s: the kernel's descendants are the pool's (fresh, idle) workers and the long-lived helpers."""
    workers_id = kernel.run(f"print(sorted(w.pid for w in {pool_name}._pool))")
    workers = set(eval(kernel.text(workers_id, "stdout")))
    keep_children(workers)  # the module's pool owns them; what else is left is checked below
    deadline = time.monotonic() + 2.0
    while True:
        extra = {pid: cmd for pid, cmd in _descendants(kernel, helpers=False).items() if pid not in workers}
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not extra, f"left running after the interrupt: {extra}"
    usable = kernel.run(f"print({pool_name}.map(abs, [-1, -2, -3]))")
    assert kernel.text(usable, "stdout") == "[1, 2, 3]\n"


@pytest.fixture(scope="module")
def pool(kernel):
    kernel.run("pool = nbproc.get_context('forkserver').Pool(2)\npool.map(abs, range(4))")
    yield "pool"
    kernel.run("pool.terminate()")


@pytest.mark.parametrize("attempt", [1, 2])  # twice in a row: it still holds
def test_interrupt_during_map(kernel, pool, attempt):
    _interrupt_while(kernel, "pool.map(time.sleep, [30, 30, 30], chunksize=1)")
    _only_idle_workers_left(kernel, pool)


def test_interrupt_during_imap(kernel, pool):
    _interrupt_while(kernel, "for _ in pool.imap(time.sleep, [30, 30]):\n    pass")
    _only_idle_workers_left(kernel, pool)


@pytest.mark.parametrize("call", ["pool.apply_async(time.sleep, (30,)).get()", "pool.apply(time.sleep, (30,))"])
def test_interrupt_during_get(kernel, pool, call):
    _interrupt_while(kernel, call)
    _only_idle_workers_left(kernel, pool)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_interrupt_during_join(kernel, pool, method):
    _interrupt_while(
        kernel, f"p = nbproc.get_context({method!r}).Process(target=time.sleep, args=(30,))\np.start()\np.join()"
    )
    _only_idle_workers_left(kernel, pool)


def test_interrupt_during_join_of_a_child_ignoring_sigint(kernel, pool):
    _interrupt_while(
        kernel,
        "import signal\n"
        "def stubborn():\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    time.sleep(30)\n"
        "p = nbproc.get_context('forkserver').Process(target=stubborn)\np.start()\np.join()",
    )
    _only_idle_workers_left(kernel, pool)


def test_interrupt_during_queue_get(kernel, pool):
    _interrupt_while(
        kernel,
        "q = nbproc.get_context('forkserver').Queue()\n"
        "producer = nbproc.get_context('forkserver').Process(target=produce_late, args=(q,))\n"
        "producer.start()\nq.get()",
    )
    _only_idle_workers_left(kernel, pool)
    kernel.run("producer.join(5)\nassert producer.exitcode is not None")


# -- orphans ---------------------------------------------------------------------------------


def test_no_orphans_after_kernel_sigkill(tmp_path):
    session = KernelSession(str(tmp_path), capture_fd_output=False)
    try:
        session.run(
            SETUP + "\n"
            "pool = nbproc.get_context('forkserver').Pool(2)\n"
            "pool.map(abs, range(4))\n"
            "spawn_pool = nbproc.get_context('spawn').Pool(1)\n"
            "spawn_pool.map(abs, range(2))\n"
            "manager = nbproc.get_context('spawn').Manager()\n"
            "sleepers = [nbproc.get_context(m).Process(target=time.sleep, args=(60,))\n"
            "            for m in ('fork', 'spawn', 'forkserver')]\n"
            "for s in sleepers:\n    s.start()\n"
        )
        kernel_pid = session.km.provisioner.process.pid
        descendants = [psutil.Process(pid) for pid in _descendants(session)]
        assert len(descendants) >= 7, descendants  # 3 workers, manager, 3 sleepers (+ fork server, tracker)
        os.kill(kernel_pid, signal.SIGKILL)
        alive = dead_within(descendants, 5)
        left = [f"{p.pid}: {' '.join(p.cmdline())[:150]}" for p in alive]
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        assert not left, "still running 5 s after the kernel was killed:\n" + "\n".join(left)
    finally:
        session.shutdown()
