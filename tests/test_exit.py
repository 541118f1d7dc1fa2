"""nbproc._exit: scripts that end with live children of every kind exit like the stdlib's, leave
nothing behind, and still end (with nothing behind) when interrupted during their exit.

Each program is a real script in its own session (see ``_scripts``), run under fork, spawn and
forkserver. Where the stdlib runs a program correctly, its output is the expected output and
both libraries are run side by side; where it does not (the reference's Lock example under
spawn/forkserver loses its Lock to the exit's unlink), the expected output is the one the
stdlib gives under fork — the documented one.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import pytest
from _scripts import finish, normalise, script, start, survivors

START_METHODS = ["fork", "spawn", "forkserver"]

# Shared by every program: with argv[2] == "hold", a child that outlives main() keeps the exit
# busy, and "exiting" is printed by a finalizer that runs just before nbproc's exit sequence (a
# higher priority): a SIGINT sent after it lands while the sequence runs, however loaded the
# machine is.
PRELUDE = """
import functools
import sys
import time
import multiprocessing
from multiprocessing import util


def hold_exit_if_asked():
    if sys.argv[2:] == ["hold"]:
        multiprocessing.Process(target=time.sleep, args=(60,), name="holder").start()
        util.Finalize(None, functools.partial(print, "exiting", file=sys.stderr, flush=True), exitpriority=10**6)
"""

MANAGER = (
    PRELUDE
    + """

def worker(d, key, value):
    d[key] = value


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    mgr = multiprocessing.Manager()
    d = mgr.dict()
    jobs = [multiprocessing.Process(target=worker, args=(d, i, i * 2)) for i in range(4)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    print("Results:", dict(sorted(d.items())))
    hold_exit_if_asked()
"""
)
MANAGER_OUT = ["Results: {0: 0, 1: 2, 2: 4, 3: 6}"]

CUSTOM_MANAGER = (
    PRELUDE
    + """
from multiprocessing.managers import BaseManager


class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1

    def value(self):
        return self.n


class CounterManager(BaseManager):
    pass


CounterManager.register("Counter", Counter)


def work(counter):
    for _ in range(5):
        counter.incr()


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    manager = CounterManager()
    manager.start()
    counter = manager.Counter()
    procs = [multiprocessing.Process(target=work, args=(counter,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print("count", counter.value())
    hold_exit_if_asked()
"""
)
CUSTOM_MANAGER_OUT = ["count 15"]

# The reference's Lock example: ten processes, never joined, each printing under the lock.
LOCK_EXAMPLE = (
    PRELUDE
    + """
from multiprocessing import Process, Lock


def f(l, i):
    l.acquire()
    try:
        print('hello world', i)
    finally:
        l.release()


if __name__ == '__main__':
    multiprocessing.set_start_method(sys.argv[1])
    lock = Lock()
    for num in range(10):
        Process(target=f, args=(lock, num)).start()
    hold_exit_if_asked()
"""
)
LOCK_EXAMPLE_OUT = sorted(f"hello world {i}" for i in range(10))

POOL = (
    PRELUDE
    + """

def init():
    print("initializer ran")


def square(x):
    print("task", x)
    return x * x


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    pool = multiprocessing.Pool(2, initializer=init)
    print(pool.map(square, range(6)))
    hold_exit_if_asked()
"""
)
POOL_OUT = sorted(["initializer ran"] * 2 + [f"task {i}" for i in range(6)] + ["[0, 1, 4, 9, 16, 25]"])

# A never-closed pool with a task still running at exit: the busy worker is terminated, as the
# stdlib's exit does (its initializer flushes its own line, which a terminated worker cannot);
# the exit does not wait for the task.
POOL_BUSY = (
    PRELUDE
    + """

def init():
    print("initializer ran", flush=True)


def nap(seconds):
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    pool = multiprocessing.Pool(2, initializer=init)
    print(pool.map(nap, [0, 0], chunksize=1))
    pool.apply_async(nap, (60,))
    time.sleep(0.2)
    hold_exit_if_asked()
"""
)
POOL_BUSY_OUT = sorted(["initializer ran"] * 2 + ["[0, 0]"])

ALL_AT_ONCE = (
    PRELUDE
    + """
from multiprocessing.managers import BaseManager


class Box:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)

    def get_all(self):
        return sorted(self.items)


class BoxManager(BaseManager):
    pass


BoxManager.register("Box", Box)


def fill(d, box, i):
    d[i] = i * i
    box.put(i)


def locked_print(lock, i):
    with lock:
        print("locked", i)


def tell(x):
    print("pool task", x)
    return -x


def daemon_sleeper():
    time.sleep(60)


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    pool = multiprocessing.Pool(2)
    mgr = multiprocessing.Manager()
    boxes = BoxManager()
    boxes.start()
    d, box = mgr.dict(), boxes.Box()
    multiprocessing.Process(target=daemon_sleeper, daemon=True).start()
    fillers = [multiprocessing.Process(target=fill, args=(d, box, i)) for i in range(3)]
    for p in fillers:
        p.start()
    for p in fillers:
        p.join()
    print("dict", dict(sorted(d.items())), "box", box.get_all())
    print("pool", pool.map(tell, range(3)))
    lock = multiprocessing.Lock()
    for i in range(3):
        multiprocessing.Process(target=locked_print, args=(lock, i)).start()
    hold_exit_if_asked()
"""
)
ALL_AT_ONCE_OUT = sorted(
    ["dict {0: 0, 1: 1, 2: 4} box [0, 1, 2]", "pool [0, -1, -2]"]
    + [f"pool task {i}" for i in range(3)]
    + [f"locked {i}" for i in range(3)]
)

# name: (source, expected sorted stdout, start methods under which the stdlib prints it too)
SCENARIOS = {
    "manager": (MANAGER, MANAGER_OUT, START_METHODS),
    "custom_manager": (CUSTOM_MANAGER, CUSTOM_MANAGER_OUT, START_METHODS),
    "lock_example": (LOCK_EXAMPLE, LOCK_EXAMPLE_OUT, ["fork"]),
    "pool_busy_at_exit": (POOL_BUSY, POOL_BUSY_OUT, START_METHODS),
    "all_at_once": (ALL_AT_ONCE, ALL_AT_ONCE_OUT, []),  # the stdlib's pool/lock parts are lossy
}

# A script's own time (interpreter start-ups, a manager, a few children) is about a second;
# far longer means a hang, which these tests exist to catch.
SCRIPT_TIMEOUT = 30.0


def _run(path, *args):
    run = start(path, *args)
    result = finish(run, SCRIPT_TIMEOUT)
    return result, survivors(run.pid)


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_exit_with_live_children(tmp_path, scenario, start_method):
    source, expected, stdlib_ok = SCENARIOS[scenario]
    nb = script(tmp_path / "nbproc", source, "nbproc")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        mine = pool.submit(_run, nb, start_method)
        if start_method in stdlib_ok:
            std = pool.submit(_run, script(tmp_path / "stdlib", source, "multiprocessing"), start_method)
            std_result, _ = std.result()
            assert normalise(std_result.stdout) == expected, std_result.stderr
            assert std_result.returncode == 0
        result, left = mine.result()
    assert result.returncode == 0, result.stderr
    assert normalise(result.stdout) == expected, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert left == []


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize(
    ("scenario", "target"),
    [(name, "group") for name in sorted(SCENARIOS)] + [("pool", "group"), ("all_at_once", "parent")],
)
def test_sigint_during_exit_ends_everything(tmp_path, scenario, target, start_method):
    """Ctrl-C while the exit waits on a child: as a terminal sends it (to the whole process
    group) or to the parent alone (then only nbproc's exit can stop the children)."""
    source = POOL if scenario == "pool" else SCENARIOS[scenario][0]
    run = start(script(tmp_path, source, "nbproc"), start_method, "hold")
    assert run.wait_for_stderr("exiting", SCRIPT_TIMEOUT), run.stderr_so_far()
    time.sleep(0.1)  # the exit sequence now waits for the holder
    if target == "group":
        os.killpg(run.pid, signal.SIGINT)
    else:
        os.kill(run.pid, signal.SIGINT)
    result = finish(run, SCRIPT_TIMEOUT)
    left = survivors(run.pid)
    assert "nbproc: interrupted while exiting" in result.stderr, result.stderr
    assert "Exception ignored in atexit" not in result.stderr, result.stderr
    assert left == []


POOL_RUNS = 10


@pytest.mark.parametrize("start_method", START_METHODS)
def test_never_closed_pool_keeps_its_workers_output(tmp_path, start_method):
    """stdout redirected to a file (block-buffered): every worker line is there, every run."""
    path = script(tmp_path, POOL, "nbproc")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: _run(path, start_method, str(i)), range(POOL_RUNS)))
    complete = [normalise(r.stdout) == POOL_OUT and r.returncode == 0 and not left for r, left in results]
    assert complete == [True] * POOL_RUNS, [(r.stdout, r.stderr, left) for r, left in results]
