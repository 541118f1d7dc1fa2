"""Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier — the reference's documented
behaviour (and its differences from ``threading``), across processes under every start method, and
compared with the stdlib."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize as std_synchronize
import pickle
import threading
import time

import pytest
from _examples import run_example

import nbproc
from nbproc import SerializationError, synchronize

# == children (module level: importable under every start method) ================================


def _release_parents_lock(lock, done):
    lock.release()  # any process may release a Lock, not only the one that acquired it
    done.set()


def _exercise_in_child(lock, rlock, sem, cond, flag, event, barrier, results):
    """Runs in a child while the parent holds ``lock`` and ``rlock``; reports what it saw."""
    out = {}
    out["lock busy"] = lock.acquire(block=False)
    out["lock timeout"] = lock.acquire(timeout=0.05)
    out["rlock busy"] = rlock.acquire(False)
    try:
        rlock.release()
    except AssertionError:
        out["rlock release not owner"] = "AssertionError"
    out["sem value"] = sem.get_value()
    out["sem acquire"] = sem.acquire(timeout=5)
    with cond:
        flag.value = 1
        cond.notify_all()
    out["event"] = event.wait(timeout=30)
    out["barrier index"] = barrier.wait(timeout=30)
    results.put(out)


def _barrier_party(barrier, results):
    results.put(("barrier", barrier.wait(timeout=30)))


def _wait_for_flag(cond, flag, results):
    with cond:
        results.put(("wait_for", cond.wait_for(lambda: flag.value == 2, timeout=30)))


def _abort_barrier(barrier):
    barrier.abort()


# == the reference's example =======================================================================

LOCK_EXAMPLE = """
from multiprocessing import Process, Lock

def f(l, i):
    l.acquire()
    try:
        print('hello world', i)
    finally:
        l.release()

if __name__ == '__main__':
    lock = Lock()

    for num in range(10):
        Process(target=f, args=(lock, num)).start()
"""


def test_lock_example(start_method):
    """The example never joins its children. Under spawn/forkserver the stdlib's exit handler
    unlinks the Lock's semaphore before the children have opened it, so most of them die with
    FileNotFoundError (seen on 3.11); nbproc joins children before that clean-up, so all ten
    print. The stdlib's output is compared under fork, where it works."""
    nb = run_example(LOCK_EXAMPLE, start_method, "nbproc")
    assert nb.returncode == 0, nb.stderr
    assert sorted(nb.stdout.splitlines()) == sorted(f"hello world {i}" for i in range(10))
    assert "Error" not in nb.stderr, nb.stderr
    if start_method == "fork":
        std = run_example(LOCK_EXAMPLE, start_method, "multiprocessing")
        assert std.returncode == 0, std.stderr
        assert sorted(nb.stdout.splitlines()) == sorted(std.stdout.splitlines())


# == the module: the stdlib's classes =============================================================


def test_module_reexports_the_stdlib_classes():
    for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier", "SemLock"):
        assert getattr(synchronize, name) is getattr(std_synchronize, name)
    assert synchronize.SEM_VALUE_MAX == std_synchronize.SEM_VALUE_MAX
    assert isinstance(nbproc.Lock(), synchronize.Lock)
    assert isinstance(nbproc.RLock(), synchronize.RLock)
    assert isinstance(nbproc.Semaphore(2), synchronize.Semaphore)
    assert isinstance(nbproc.BoundedSemaphore(2), synchronize.BoundedSemaphore)
    assert isinstance(nbproc.Condition(), synchronize.Condition)
    assert isinstance(nbproc.Event(), synchronize.Event)
    assert isinstance(nbproc.Barrier(2), synchronize.Barrier)
    lock = synchronize.Lock(ctx=nbproc.get_context("spawn"))
    assert lock.acquire() and (lock.release() is None)


def test_context_start_method_reaches_the_semaphore():
    """Semaphores of a non-fork context are named (they must be reachable by spawned children);
    a fork context's are unlinked at once — decided by nbproc's start method, not the stdlib's."""
    assert nbproc.get_context("spawn").Lock()._semlock.name is not None
    assert nbproc.get_context("forkserver").Lock()._semlock.name is not None
    assert nbproc.get_context("fork").Lock()._semlock.name is None


# == documented behaviour, in one process ============================================================


def test_lock_acquire_arguments_and_release_errors():
    lock = nbproc.Lock()
    assert lock.acquire(block=True, timeout=None) is True
    assert lock.acquire(False) is False
    assert lock.acquire(block=False, timeout=10) is False  # timeout ignored without blocking
    start = time.monotonic()
    assert lock.acquire(timeout=0.1) is False
    assert 0.05 <= time.monotonic() - start < 10
    assert lock.acquire(timeout=-1) is False  # negative timeout: like zero (threading raises)
    with pytest.raises(TypeError):
        lock.acquire(blocking=False)  # the argument is named block, unlike threading's
    lock.release()
    with pytest.raises(ValueError):
        lock.release()  # threading raises RuntimeError here
    with lock:
        assert not lock.acquire(False)
    assert lock.acquire(False)
    lock.release()


def test_rlock_recursion_and_owner_rules():
    rlock = nbproc.RLock()
    with pytest.raises(AssertionError):
        rlock.release()  # not owned: AssertionError (threading: RuntimeError)
    assert rlock.acquire() and rlock.acquire(block=False) and rlock.acquire(timeout=1)
    outcome = {}

    def other_thread():
        outcome["acquire"] = rlock.acquire(block=False)
        outcome["timeout"] = rlock.acquire(timeout=0.05)
        try:
            rlock.release()
        except AssertionError:
            outcome["release"] = "AssertionError"

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join(10)
    assert outcome == {"acquire": False, "timeout": False, "release": "AssertionError"}
    for _ in range(3):
        rlock.release()
    with pytest.raises(AssertionError):
        rlock.release()


def test_semaphores():
    sem = nbproc.Semaphore(2)
    assert sem.get_value() == 2
    assert sem.acquire(block=False) and sem.acquire(timeout=1)
    assert not sem.acquire(block=False)
    assert not sem.acquire(timeout=0.01)
    sem.release()
    sem.release()
    sem.release()  # an unbounded semaphore may go above its initial value
    assert sem.get_value() == 3
    bounded = nbproc.BoundedSemaphore(1)
    assert bounded.acquire(False)
    bounded.release()
    with pytest.raises(ValueError):
        bounded.release()
    with pytest.raises(TypeError):
        bounded.acquire(blocking=False)


def test_condition_wait_timeout_and_wait_for_in_threads():
    cond = nbproc.Condition()
    with cond:
        assert cond.wait(timeout=0.05) is False
        assert cond.wait_for(lambda: False, timeout=0.05) is False
        assert cond.wait_for(lambda: 42) == 42
    state = []

    def setter():
        time.sleep(0.05)
        with cond:
            state.append(1)
            cond.notify()

    threading.Thread(target=setter, daemon=True).start()
    with cond:
        assert cond.wait_for(lambda: state, timeout=10) == [1]
    with pytest.raises(AssertionError):
        cond.notify()  # not holding the lock (threading raises RuntimeError)
    explicit = nbproc.Condition(nbproc.Lock())
    with explicit:
        assert not explicit._lock.acquire(False)


def test_event_and_barrier_in_threads():
    event = nbproc.Event()
    assert not event.is_set() and event.wait(0.01) is False
    event.set()
    assert event.is_set() and event.wait() is True and event.wait(0) is True
    event.clear()
    assert not event.is_set()
    hits = []
    barrier = nbproc.Barrier(2, action=lambda: hits.append("action"), timeout=10)
    assert barrier.parties == 2 and barrier.n_waiting == 0 and not barrier.broken
    indices = []
    t = threading.Thread(target=lambda: indices.append(barrier.wait()))
    t.start()
    indices.append(barrier.wait())
    t.join(10)
    assert sorted(indices) == [0, 1] and hits == ["action"]
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(timeout=0.05)  # the only party: times out and breaks the barrier
    assert barrier.broken
    barrier.reset()
    assert not barrier.broken


# == across processes, every start method ===========================================================


def test_primitives_passed_to_a_child(ctx):
    """One child gets every primitive as a Process argument and uses it against the parent."""
    lock, rlock = ctx.Lock(), ctx.RLock()
    sem, cond, flag = ctx.Semaphore(2), ctx.Condition(), ctx.Value("i", 0)
    event, barrier, results = ctx.Event(), ctx.Barrier(2, timeout=30), ctx.Queue()
    lock.acquire()
    rlock.acquire()
    p = ctx.Process(target=_exercise_in_child, args=(lock, rlock, sem, cond, flag, event, barrier, results))
    p.start()
    with cond:
        assert cond.wait_for(lambda: flag.value == 1, timeout=30)
    event.set()
    my_index = barrier.wait(timeout=30)
    out = results.get(timeout=30)
    p.join(30)
    assert p.exitcode == 0
    assert out == {
        "lock busy": False,
        "lock timeout": False,
        "rlock busy": False,
        "rlock release not owner": "AssertionError",
        "sem value": 2,
        "sem acquire": True,
        "event": True,
        "barrier index": 1 - my_index,
    }
    assert sem.get_value() == 1  # the child's acquire is seen here
    lock.release()
    rlock.release()


def test_lock_released_by_another_process(ctx):
    lock, done = ctx.Lock(), ctx.Event()
    lock.acquire()
    p = ctx.Process(target=_release_parents_lock, args=(lock, done))
    p.start()
    assert done.wait(30)
    assert lock.acquire(timeout=10)
    p.join(30)
    assert p.exitcode == 0


def test_barrier_action_lambda_and_wait_for_across_processes(ctx):
    """The barrier's action is a lambda (by value under spawn/forkserver); three parties."""
    results = ctx.Queue()
    counter = ctx.Value("i", 0)
    barrier = ctx.Barrier(3, action=lambda: setattr(counter, "value", counter.value + 100), timeout=30)
    cond, flag = ctx.Condition(), ctx.Value("i", 0)
    procs = [ctx.Process(target=_barrier_party, args=(barrier, results)) for _ in range(2)]
    procs.append(ctx.Process(target=_wait_for_flag, args=(cond, flag, results)))
    for p in procs:
        p.start()
    mine = barrier.wait(timeout=30)
    with cond:
        flag.value = 2
        cond.notify_all()
    got = sorted(results.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert got[2] == ("wait_for", True)  # the predicate's value
    assert sorted([got[0][1], got[1][1], mine]) == [0, 1, 2]
    assert counter.value == 100  # the action ran exactly once


def test_barrier_abort_breaks_waiters_in_other_process(ctx):
    barrier = ctx.Barrier(2, timeout=30)
    p = ctx.Process(target=_abort_barrier, args=(barrier,))
    p.start()
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()
    p.join(30)
    assert barrier.broken


# == sharing rules ====================================================================================


def test_primitives_pickle_only_while_spawning():
    for make in (nbproc.Lock, nbproc.RLock, nbproc.Semaphore, nbproc.Condition, nbproc.Event):
        obj = make()
        with pytest.raises(RuntimeError, match="through inheritance"):
            pickle.dumps(obj)
        with pytest.raises(SerializationError, match="through inheritance"):
            nbproc.Queue().put(obj)


# == differential: the same calls against the stdlib ==================================================


def _sync_script(ctx):
    log = []

    def step(name, fn):
        try:
            log.append((name, "ok", fn()))
        except Exception as exc:  # noqa: BLE001 - the exception type is the result
            log.append((name, "raised", type(exc).__name__))

    lock, rlock = ctx.Lock(), ctx.RLock()
    step("lock acquire", lambda: lock.acquire())
    step("lock nonblocking", lambda: lock.acquire(False))
    step("lock negative timeout", lambda: lock.acquire(True, -5))
    step("lock blocking kw", lambda: lock.acquire(blocking=False))
    step("lock release", lock.release)
    step("lock release unlocked", lock.release)
    step("rlock release unowned", rlock.release)
    step("rlock twice", lambda: (rlock.acquire(), rlock.acquire(False)))
    step("rlock release", lambda: (rlock.release(), rlock.release()))
    sem, bsem = ctx.Semaphore(0), ctx.BoundedSemaphore(1)
    step("sem empty", lambda: sem.acquire(timeout=0.01))
    step("sem release", lambda: (sem.release(), sem.get_value()))
    step("bsem over", bsem.release)
    step("sem repr kind", lambda: repr(sem).split(" ")[0])
    cond = ctx.Condition()
    step("cond notify unlocked", cond.notify)
    step("cond wait_for", lambda: cond.acquire() and cond.wait_for(lambda: "yes", 0.01))
    step("cond wait timeout", lambda: cond.wait(0.01))
    step("cond release", cond.release)
    event = ctx.Event()
    step("event", lambda: (event.is_set(), event.wait(0.01), event.set(), event.wait(), event.is_set()))
    barrier = ctx.Barrier(1, timeout=1)
    step("barrier", lambda: (barrier.wait(), barrier.parties, barrier.n_waiting, barrier.broken))
    step("barrier abort", lambda: (barrier.abort(), barrier.broken))
    step("barrier broken wait", barrier.wait)
    step("pickle lock", lambda: pickle.dumps(lock))
    return log


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_differential_against_stdlib(method):
    assert _sync_script(nbproc.get_context(method)) == _sync_script(multiprocessing.get_context(method))
