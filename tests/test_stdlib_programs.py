"""Differential: small stdlib-style programs behave the same through nbproc and the stdlib.

Each program is written for ``multiprocessing`` as a user would (no shutdown() for managers,
daemons left running, children never joined...), run as a real script under each start method
through both libraries side by side, and compared on exit code, stdout and stderr (pids,
addresses and the script's directory normalised; lines sorted, since children interleave).
This is the kind of check that catches an exit that hangs or output that is lost.
"""

from __future__ import annotations

import concurrent.futures

import pytest
from _scripts import finish, normalise, script, start, survivors

START_METHODS = ["fork", "spawn", "forkserver"]

PROGRAMS = {
    # A live manager at exit, with a Namespace, a list, a dict and a manager Lock.
    "manager_namespace": """
import sys
import multiprocessing


def update(ns, items, table, lock, i):
    with lock:
        ns.total += i
    items.append(i)
    table[i] = str(i)


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    manager = multiprocessing.Manager()
    ns = manager.Namespace()
    ns.total = 0
    items, table, lock = manager.list(), manager.dict(), manager.Lock()
    procs = [multiprocessing.Process(target=update, args=(ns, items, table, lock, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print("total", ns.total, "items", sorted(items), "table", sorted(table.items()))
""",
    # A Semaphore bounding concurrency (measured with a shared Value), an Event releasing the
    # workers, a Barrier.
    "semaphore_event": """
import sys
import time
import multiprocessing


def work(sem, start, barrier, running, peak, i):
    start.wait()
    with sem:
        with running.get_lock():
            running.value += 1
            peak.value = max(peak.value, running.value)
        time.sleep(0.05)
        with running.get_lock():
            running.value -= 1
    barrier.wait()
    print("worker", i, "passed the barrier")


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    sem, start, barrier = multiprocessing.Semaphore(2), multiprocessing.Event(), multiprocessing.Barrier(4)
    running, peak = multiprocessing.Value("i", 0), multiprocessing.Value("i", 0)
    procs = [multiprocessing.Process(target=work, args=(sem, start, barrier, running, peak, i)) for i in range(4)]
    for p in procs:
        p.start()
    print("event set:", start.is_set())
    start.set()
    for p in procs:
        p.join()
    print("peak concurrency within the bound:", 1 <= peak.value <= 2, "exit codes", [p.exitcode for p in procs])
""",
    # Exit codes: normal, sys.exit(n), sys.exit(message), an exception, os._exit, terminate();
    # the program itself ends with sys.exit(5).
    "exit_codes": """
import os
import sys
import time
import multiprocessing


def normal():
    pass


def exits(code):
    sys.exit(code)


def raises():
    raise KeyError("missing")


def hard_exit():
    os._exit(7)


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    targets = [(normal, ()), (exits, (3,)), (exits, ("a message",)), (raises, ()), (hard_exit, ())]
    procs = [multiprocessing.Process(target=t, args=a) for t, a in targets]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    sleeper = multiprocessing.Process(target=time.sleep, args=(30,))
    sleeper.start()
    sleeper.terminate()
    sleeper.join()
    print([p.exitcode for p in procs + [sleeper]])
    sys.exit(5)
""",
    # log_to_stderr at INFO: the children's and the exit's log lines (one child never joined).
    "logging_stderr": """
import logging
import sys
import time
import multiprocessing


def child(i, delay):
    time.sleep(delay)  # the unjoined one is still running when the program exits, even under load
    multiprocessing.get_logger().info("child %d says hello", i)


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    multiprocessing.log_to_stderr(logging.INFO)
    first = multiprocessing.Process(target=child, args=(1, 0), name="First")
    first.start()
    first.join()
    multiprocessing.Process(target=child, args=(2, 1.0), name="Unjoined").start()
""",
    # Daemons: one still running at exit (terminated), one refused children of its own.
    "daemons": """
import sys
import time
import multiprocessing


def sleeper(up):
    print("sleeper up", flush=True)
    up.set()
    time.sleep(60)


def parent_daemon(q):
    try:
        multiprocessing.Process(target=time.sleep, args=(0,)).start()
    except AssertionError as exc:
        q.put(str(exc))


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    q = multiprocessing.Queue()
    d = multiprocessing.Process(target=parent_daemon, args=(q,), daemon=True)
    d.start()
    print("daemon child refused:", q.get(timeout=30))
    d.join()
    up = multiprocessing.Event()
    s = multiprocessing.Process(target=sleeper, args=(up,), daemon=True)
    s.start()
    print("sleeper started:", up.wait(30))
    print("main done; sleeper alive:", s.is_alive())
""",
    # Producer/consumer: a JoinableQueue with daemon consumers and task_done(), then a Queue
    # with sentinel-terminated consumers that are never joined.
    "producer_consumer": """
import sys
import multiprocessing


def square_all(tasks, results):
    while True:
        item = tasks.get()
        results.put(item * item)
        tasks.task_done()


def consume(q, name):
    while True:
        item = q.get()
        if item is None:
            break
        print(name, "got", item)


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    tasks, results = multiprocessing.JoinableQueue(), multiprocessing.Queue()
    for _ in range(2):
        multiprocessing.Process(target=square_all, args=(tasks, results), daemon=True).start()
    for i in range(10):
        tasks.put(i)
    tasks.join()
    print("squares", sorted(results.get() for _ in range(10)))
    q = multiprocessing.Queue()
    for name in ("A", "B"):
        multiprocessing.Process(target=consume, args=(q, name)).start()
    for i in range(6):
        q.put(i)
    q.put(None)
    q.put(None)
""",
}


# Programs the stdlib runs correctly only under fork: under spawn and forkserver its exit unlinks
# the queues' semaphores before the never-joined consumers have unpickled them (FileNotFoundError
# in each child; the reference's Lock example fails the same way). nbproc joins those children
# first, so it is compared with the stdlib's fork run.
STDLIB_REFERENCE_METHOD = {"producer_consumer": "fork"}


def _normalised(result, directory) -> tuple[int, list[str], list[str]]:
    stderr = result.stderr.replace(str(directory), "DIR")
    # Which consumer gets which item varies from run to run; that every item arrives does not.
    stdout = [line[2:] if line.startswith(("A got", "B got")) else line for line in normalise(result.stdout)]
    return result.returncode, sorted(stdout), normalise(stderr)


def _run(path, start_method):
    run = start(path, start_method)
    return finish(run, 60), survivors(run.pid)


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_program_behaves_as_with_the_stdlib(tmp_path, program, start_method):
    runs = {}
    methods = {"multiprocessing": STDLIB_REFERENCE_METHOD.get(program, start_method), "nbproc": start_method}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for module, method in methods.items():
            path = script(tmp_path / module, PROGRAMS[program], module)
            runs[module] = pool.submit(_run, path, method)
        (std, _), (mine, left) = runs["multiprocessing"].result(), runs["nbproc"].result()
    assert _normalised(mine, tmp_path / "nbproc") == _normalised(std, tmp_path / "multiprocessing")
    assert left == []
