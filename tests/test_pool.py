"""``nbproc.pool``: the documented Pool API and its semantics, differentially against the stdlib.

Most tests share one pool per start method (module scope) to stay fast; tests that change a
pool's state (close, terminate, initializer, maxtasksperchild) make their own.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.pool
import os
import pickle
import threading
import time

import pytest

import nbproc
import nbproc.pool
from nbproc.pool import InitializerError, MaybeEncodingError, TaskCancelledError, ThreadPool

START_METHODS = ["fork", "spawn", "forkserver"]


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail_on(x, bad=3):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def pid_of(_=None):
    return os.getpid()


def sleep_return(seconds):
    time.sleep(seconds)
    return seconds


@pytest.fixture(scope="module", params=START_METHODS)
def pool(request):
    with nbproc.get_context(request.param).Pool(2) as p:
        yield p


def test_results_match_builtin_map(pool):
    xs = list(range(37))
    expected = [x * x for x in xs]
    assert pool.map(square, xs) == expected
    assert pool.map(square, xs, chunksize=5) == expected
    assert pool.map(square, iter(xs)) == expected  # an iterator without len() is listed first
    assert pool.map(square, []) == []
    assert pool.starmap(add, [(1, 2), (3, 4)]) == [3, 7]
    assert pool.apply(add, (1, 2)) == 3
    assert pool.apply(add, (), {"a": 1, "b": 5}) == 6
    assert pool.apply_async(square, (9,)).get(timeout=10) == 81
    assert pool.map_async(square, xs).get(timeout=10) == expected
    assert pool.starmap_async(add, [(1, 1)]).get(timeout=10) == [2]
    assert list(pool.imap(square, xs)) == expected
    assert list(pool.imap(square, xs, chunksize=4)) == expected
    assert list(pool.imap(square, (x for x in xs), chunksize=3)) == expected
    assert sorted(pool.imap_unordered(square, xs)) == expected
    assert sorted(pool.imap_unordered(square, iter(xs), chunksize=6)) == expected
    assert list(pool.imap(square, [])) == []


def test_callbacks_run_on_the_result_thread_before_get_returns(pool):
    seen = []
    result = pool.map_async(square, [1, 2, 3], callback=lambda v: seen.append((v, threading.current_thread())))
    assert result.get(timeout=10) == [1, 4, 9]
    assert seen[0][0] == [1, 4, 9] and seen[0][1] is not threading.main_thread()
    errors = []
    failing = pool.apply_async(fail_on, (3,), error_callback=errors.append)
    failing.wait(10)
    assert failing.ready() and not failing.successful()
    assert isinstance(errors[0], ValueError)


def test_remote_exception_carries_the_worker_traceback(pool):
    with pytest.raises(ValueError, match="bad item 3") as info:
        pool.apply(fail_on, (3,))
    cause = info.value.__cause__
    assert isinstance(cause, multiprocessing.pool.RemoteTraceback)
    assert "fail_on" in str(cause) and "Traceback" in str(cause)
    with pytest.raises(ValueError, match="bad item 3"):
        pool.map(fail_on, range(8), chunksize=2)
    # imap raises at the failing position and goes on (the reference's error-handling example)
    it = pool.imap(fail_on, range(6))
    got = []
    for _ in range(6):
        try:
            got.append(next(it))
        except ValueError:
            got.append("error")
    assert got == [0, 1, 2, "error", 4, 5]
    with pytest.raises(StopIteration):
        next(it)


def test_timeouts_leave_the_pool_available(pool):
    slow = pool.apply_async(sleep_return, (0.5,))
    with pytest.raises(nbproc.TimeoutError):
        slow.get(timeout=0.01)
    assert nbproc.TimeoutError is multiprocessing.TimeoutError
    assert not slow.ready()
    with pytest.raises(ValueError, match="not ready"):
        slow.successful()
    assert pool.map(square, range(4)) == [0, 1, 4, 9]  # the other worker serves it meanwhile
    assert slow.get(timeout=10) == 0.5 and slow.successful()
    it = pool.imap(sleep_return, [0.3, 0.0])
    with pytest.raises(nbproc.TimeoutError):
        it.next(timeout=0.01)
    assert it.next(timeout=10) == 0.3
    assert next(it) == 0.0


def test_async_result_api(pool):
    result = pool.apply_async(square, (3,))
    result.wait()
    assert result.ready() and result.successful() and result.get() == 9
    assert nbproc.pool.AsyncResult is nbproc.pool.ApplyResult
    assert nbproc.pool.AsyncResult[int]  # generic alias, as in the stdlib


def test_lifecycle_and_stdlib_errors(ctx):
    pool = ctx.Pool(1)
    assert repr(pool).startswith("<nbproc.pool.Pool state=RUN pool_size=1")
    with pytest.raises(ValueError, match="Pool is still running"):
        pool.join()
    with pytest.raises(NotImplementedError):
        pickle.dumps(pool)
    pending = pool.map_async(sleep_return, [0.2, 0.0])
    pool.close()
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply_async(square, (1,))
    pool.join()  # waits for the outstanding work, then for the worker to exit
    assert pending.get(timeout=0) == [0.2, 0.0]
    assert "state=CLOSE" in repr(pool) and not pool._pool

    with ctx.Pool(1) as pool:
        slow = pool.apply_async(sleep_return, (30,))
        worker = pool._pool[0]
    # __exit__ terminated: the worker is gone and the outstanding result fails instead of hanging
    assert not worker.is_alive() if worker._popen is not None else True
    with pytest.raises(TaskCancelledError):
        slow.get(timeout=5)
    with pytest.raises(ValueError):
        pool.map(square, [1])


@pytest.mark.parametrize("bad", [0, -1])
def test_argument_validation_matches_stdlib(bad):
    for module in (multiprocessing, nbproc):
        with pytest.raises(ValueError, match="Number of processes must be at least 1"):
            module.get_context("fork").Pool(bad)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        nbproc.Pool(1, maxtasksperchild=bad)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        nbproc.Pool(1, initializer=3)


def _set_marker(value):
    os.environ["NBPROC_TEST_MARKER"] = value


def _read_marker(_):
    return os.environ.get("NBPROC_TEST_MARKER")


def _fail_init():
    raise RuntimeError("cannot initialize")


def test_initializer_and_maxtasksperchild(ctx):
    with ctx.Pool(1, initializer=_set_marker, initargs=("set",), maxtasksperchild=2) as pool:
        assert pool.map(_read_marker, range(3)) == ["set"] * 3
        pids = pool.map(pid_of, range(6), chunksize=1)
    # the first map used 3 tasks of the quota; every worker ran at most 2 tasks before being replaced
    assert max(collections.Counter(pids).values()) <= 2
    assert len(set(pids)) >= 3


def test_failing_initializer_fails_calls_instead_of_hanging(start_method):
    with nbproc.get_context(start_method).Pool(2, initializer=_fail_init) as pool:
        start = time.monotonic()
        with pytest.raises(InitializerError) as info:
            pool.map(square, range(4))
        assert time.monotonic() - start < 30
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "cannot initialize" in str(info.value)
        with pytest.raises(InitializerError):
            pool.apply(square, (1,))


def test_terminate_fails_outstanding_results(ctx):
    pool = ctx.Pool(1)
    results = [pool.apply_async(sleep_return, (30,)) for _ in range(3)]
    it = pool.imap(sleep_return, [30, 30])
    start = time.monotonic()
    pool.terminate()
    assert time.monotonic() - start < 10
    for result in results:
        with pytest.raises(TaskCancelledError):
            result.get(timeout=1)
    with pytest.raises(TaskCancelledError):
        next(it)
    pool.join()


def test_imap_buffersize_reads_the_input_lazily(pool):
    pulled = []

    def numbers():
        for i in range(10**9):  # practically infinite
            pulled.append(i)
            yield i

    it = pool.imap(square, numbers(), buffersize=3)
    assert [next(it) for _ in range(10)] == [i * i for i in range(10)]
    time.sleep(0.2)  # give the feeder every chance to run ahead
    assert len(pulled) <= 10 + 3
    it2 = pool.imap_unordered(square, numbers(), chunksize=2, buffersize=2)
    assert len({next(it2) for _ in range(7)}) == 7
    del it, it2  # dropping the iterators releases their feeder threads
    for _ in range(100):
        if not [t for t in threading.enumerate() if t.name.endswith("-feeder")]:
            break
        time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.endswith("-feeder")]
    with pytest.raises(ValueError):
        pool.imap(square, [1], buffersize=0)


def test_imap_over_a_slow_generator_starts_each_item_at_once(pool):
    """As the stdlib's feeder does: an item is worked on while the input makes the next one
    (nbproc once held items back until 64 had been read or the input ended)."""
    gate = threading.Event()

    def items():
        yield 3
        gate.wait(30)  # the next item comes only once the first result is back
        yield 4

    for method in (pool.imap, pool.imap_unordered):
        gate.clear()
        it = method(square, items())
        assert it.next(timeout=10) == 9
        gate.set()
        assert list(it) == [16]


def test_imap_reports_an_exception_raised_by_the_input_at_its_position(pool):
    def items():
        yield 1
        yield 2
        raise KeyError("input broke")

    it = pool.imap(square, items())
    assert next(it) == 1 and next(it) == 4
    with pytest.raises(KeyError, match="input broke"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


def test_progress_events_count_items(pool):
    events = []
    pool.add_listener(events.append)
    try:
        assert pool.map(square, range(10), chunksize=3) == [x * x for x in range(10)]
        assert list(pool.imap(square, iter(range(5)))) == [0, 1, 4, 9, 16]
    finally:
        pool.remove_listener(events.append)
    jobs = {}
    for event in events:
        jobs.setdefault(event.job, []).append(event)
    assert len(jobs) == 2
    for job_events, total in zip(jobs.values(), (10, 5)):
        assert sum(e.items for e in job_events if e.kind == "submitted") == total
        assert sum(e.items for e in job_events if e.kind == "done") == total
        last = job_events[-1]
        assert last.finished and last.done == total and last.total == total and last.failed == 0
    assert jobs[events[0].job][0].label == "map(square)"
    pool.map(square, [1])
    assert len({e.job for e in events}) == 2  # removed listeners hear nothing more


def test_text_progress_prints_a_bar(pool):
    import io

    from nbproc.progress import TextProgress

    out = io.StringIO()
    with TextProgress(out, interval=0).attach(pool):
        pool.map(square, range(8), chunksize=2)
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("map(square) [") and "8/8" in lines[-1] and lines[-1].endswith("done")


# -- ThreadPool -----------------------------------------------------------------------------


def test_thread_pool_runs_the_same_api_on_threads():
    lock = threading.Lock()  # unpicklable: fine on threads
    with ThreadPool(3) as pool:
        assert pool.map(lambda x: (x, lock.locked()), range(3)) == [(0, False), (1, False), (2, False)]
        assert list(pool.imap(square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
        assert sorted(pool.imap_unordered(square, range(5))) == [0, 1, 4, 9, 16]
        assert pool.starmap(add, [(1, 2)]) == [3]
        assert pool.apply_async(threading.get_ident).get(timeout=5) != threading.get_ident()
        with pytest.raises(ValueError, match="bad item 3"):
            pool.map(fail_on, range(5))
        slow = pool.apply_async(time.sleep, (0.3,))
        with pytest.raises(nbproc.TimeoutError):
            slow.get(timeout=0.01)
        assert "ThreadPool" in repr(pool)
    pool.join()
    closing = ThreadPool(2)
    outstanding = closing.map_async(sleep_return, [0.1, 0.1, 0.1])
    closing.close()
    closing.join()
    assert outstanding.get(timeout=0) == [0.1, 0.1, 0.1]


# -- differential ---------------------------------------------------------------------------


def _outcomes(module, method):
    pool = module.get_context(method).Pool(2)
    try:
        out = [
            pool.map(square, range(9), chunksize=2),
            pool.starmap(add, [(1, 2), (3, 4)]),
            list(pool.imap(square, range(5), chunksize=2)),
            sorted(pool.imap_unordered(square, range(5))),
        ]
        for call in (lambda: pool.apply(fail_on, (3,)), lambda: pool.map(fail_on, range(5))):
            try:
                call()
            except Exception as exc:  # noqa: BLE001
                out.append((type(exc).__name__, str(exc), type(exc.__cause__).__name__))
        for call in (lambda: pool.imap(square, [1], chunksize=0), lambda: pool.join()):
            try:
                call()
            except Exception as exc:  # noqa: BLE001
                out.append((type(exc).__name__, str(exc)))
        empty = pool.map_async(square, [])
        out.append((empty.ready(), empty.get()))
    finally:
        pool.terminate()
        pool.join()
    return out


def test_differential_against_stdlib():
    assert _outcomes(nbproc, "fork") == _outcomes(multiprocessing, "fork")


def test_encoding_error_is_the_stdlib_class_and_a_serialization_error():
    assert issubclass(MaybeEncodingError, multiprocessing.pool.MaybeEncodingError)
    assert issubclass(MaybeEncodingError, nbproc.SerializationError)
    assert issubclass(nbproc.WorkerLostError, nbproc.ProcessError)
    assert "WorkerLostError" in nbproc.__all__
