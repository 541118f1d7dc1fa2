"""nbproc._orphans outside a kernel: a daemonic child ends when its parent is SIGKILLed; a
non-daemonic one keeps the stdlib's behaviour (it outlives its parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

SCRIPT = """
import sys, threading, time
import nbproc

if __name__ == "__main__":
    method, kind = sys.argv[1], sys.argv[2]
    ctx = nbproc.get_context(method)
    def start():
        p = ctx.Process(target=time.sleep, args=(60,), daemon=kind != "plain")
        p.start()
        print(p.pid, flush=True)
    if kind == "daemon-from-thread":  # PR_SET_PDEATHSIG would fire when this thread ends: not used
        t = threading.Thread(target=start)
        t.start()
        t.join()
    else:
        start()
    time.sleep(60)
"""


def dead_within(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process is gone or a zombie (an orphan's zombie waits for a reaper that a
    container's PID 1 may never be); return those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def _start_parent(tmp_path, method: str, kind: str) -> tuple[subprocess.Popen, psutil.Process]:
    script = tmp_path / "parent.py"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), method, kind], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    return parent, child


@pytest.mark.parametrize("kind", ["daemon", "daemon-from-thread"])
def test_daemonic_child_ends_with_its_killed_parent(tmp_path, start_method, kind):
    parent, child = _start_parent(tmp_path, start_method, kind)
    time.sleep(0.3)  # the thread-started case: the starting thread has ended; the child must live on
    assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        assert not dead_within([child], 5), f"daemonic {start_method} child {child.pid} survived its parent"
    finally:
        for proc in [child]:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def test_plain_child_outlives_its_killed_parent_as_in_the_stdlib(tmp_path, start_method):
    parent, child = _start_parent(tmp_path, start_method, "plain")
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        time.sleep(0.5)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    finally:
        child.kill()


@pytest.mark.skipif(sys.platform != "linux", reason="prctl is Linux-only")
def test_prctl_without_ctypes_answers_as_ctypes_does():
    """The spawned child's prctl (built on ``_ctypes`` alone, see ``_orphans._bare_libc_function``)
    returns what ctypes' returns, and sets errno on failure."""
    import ctypes

    from nbproc import _orphans

    bare = _orphans._bare_libc_function("prctl")
    libc = ctypes.CDLL(None, use_errno=True).prctl
    pr_get_dumpable = 3
    assert bare(pr_get_dumpable, 0, 0, 0, 0) == libc(pr_get_dumpable, 0, 0, 0, 0) in (0, 1)
    assert bare(-1, 0, 0, 0, 0) == -1  # no such option
    assert ctypes.get_errno() == 22  # EINVAL, kept by the function type (FUNCFLAG_USE_ERRNO)
