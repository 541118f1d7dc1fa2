"""``nbproc.futures.ProcessPoolExecutor``: the concurrent.futures API for notebook-style code.

Under every start method: lambdas and closures through ``submit`` and ``map`` (which the
stdlib's executor refuses, even with an nbproc context — checked side by side), real Futures
for ``as_completed``/``wait``, ``map`` timeout and chunksize, ``shutdown(cancel_futures=True)``,
initializer (working and failing), ``max_tasks_per_child``, a dying worker failing only its
call, and progress events. CPython's own executor tests run in ``tests/test_futures_suite.py``.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import pickle
import threading
import time

import pytest

import nbproc
from nbproc.futures import BrokenInitializerError, BrokenWorkerError, ProcessPoolExecutor

BOUND = 10.0  # seconds: generous on a loaded 2-core machine


def test_cell_code_runs_and_futures_interoperate(ctx):
    offset = 10
    with ProcessPoolExecutor(2, mp_context=ctx) as executor:
        futures = [executor.submit(lambda x: x + offset, i) for i in range(6)]
        assert all(type(f) is cf.Future for f in futures)
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=BOUND)) == list(range(10, 16))
        done, not_done = cf.wait([executor.submit(divmod, 7, 2)], timeout=BOUND)
        assert [f.result() for f in done] == [(3, 1)] and not not_done
        assert list(executor.map(lambda a, b: a * b, range(7), range(10), chunksize=3)) == [i * i for i in range(7)]
        assert executor.submit(pow, 2, exp=5).result() == 32
        errors = executor.map(divmod, [1, 1, 1], [1, 0, 1])
        assert next(errors) == (1, 0)
        with pytest.raises(ZeroDivisionError):
            next(errors)
        unpicklable = executor.submit(len, threading.Lock())
        with pytest.raises(pickle.PicklingError):
            unpicklable.result()
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(abs, 1)


def test_stdlib_executor_refuses_a_lambda_that_nbproc_runs():
    context = nbproc.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=context) as stdlib_executor:
        with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
            stdlib_executor.submit(lambda: 1).result(BOUND)
    with ProcessPoolExecutor(1, mp_context=context) as executor:
        assert executor.submit(lambda: 1).result(BOUND) == 1


def test_map_timeout_and_cancel_futures(ctx):
    executor = ProcessPoolExecutor(1, mp_context=ctx)
    try:
        executor.submit(abs, 0).result(BOUND)  # the worker is up: the map's timeout is about the map
        results = executor.map(time.sleep, [0, 0, 1.0], timeout=0.3)
        assert [next(results), next(results)] == [None, None]
        with pytest.raises(cf.TimeoutError):
            next(results)
        sleeper = executor.submit(time.sleep, 0.3)
        deadline = time.monotonic() + BOUND
        while not sleeper.running() and time.monotonic() < deadline:  # behind the map's 1 s call
            time.sleep(0.01)
        assert sleeper.running() and not sleeper.cancel()  # running calls cannot be cancelled
        queued = [executor.submit(abs, -i) for i in range(8)]
        assert queued[-1].cancel()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    assert sleeper.done() and not sleeper.cancelled()
    assert all(f.done() for f in queued)
    assert all(f.cancelled() for f in queued[2:])  # at most one more was handed out with the sleeper


def init_worker(value):
    global INITIALIZED
    INITIALIZED = value


def initialized():
    return INITIALIZED


def fail_init():
    raise ValueError("error in initializer")


def test_initializer_and_failing_initializer(ctx):
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=init_worker, initargs=("ready",)) as executor:
        assert [executor.submit(initialized).result(BOUND) for _ in range(2)] == ["ready", "ready"]
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=fail_init) as executor:
        future = executor.submit(abs, 1)
        with pytest.raises(cf.process.BrokenProcessPool) as info:
            future.result(BOUND)
        assert isinstance(info.value, BrokenInitializerError)
        with pytest.raises(cf.process.BrokenProcessPool):
            executor.submit(abs, 1)


def test_dying_worker_fails_only_its_call(ctx):
    events = []
    with ProcessPoolExecutor(2, mp_context=ctx, progress=events.append) as executor:
        ok = [executor.submit(abs, -i) for i in range(4)]
        lost = executor.submit(os._exit, 7)
        with pytest.raises(cf.process.BrokenProcessPool) as info:
            lost.result(BOUND)
        assert isinstance(info.value, BrokenWorkerError) and info.value.exitcode == 7
        assert [f.result(BOUND) for f in ok] == [0, 1, 2, 3]
        assert executor.submit(abs, -9).result(BOUND) == 9
    kinds = [e.kind for e in events]
    assert kinds.count("submitted") == 6 and kinds.count("done") >= 5 and "worker_lost" in kinds
    assert events[-1].finished and events[-1].done == 5 and events[-1].failed == 1


def test_max_tasks_per_child(start_method):
    if start_method == "fork":
        with pytest.raises(ValueError, match="fork"):
            ProcessPoolExecutor(1, mp_context=nbproc.get_context("fork"), max_tasks_per_child=2)
        return
    context = nbproc.get_context(start_method)
    with ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=2) as executor:
        pids = [executor.submit(os.getpid).result(BOUND) for _ in range(4)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]


def test_a_worker_exiting_leaves_other_executors_alone():
    """Regression: a forked worker inherits the at-exit hook that joins executors; run in the
    worker as it exited, it used to terminate the parent's other executors' workers."""
    context = nbproc.get_context("fork")
    with ProcessPoolExecutor(2, mp_context=context) as survivor:
        assert survivor.submit(abs, -1).result(BOUND) == 1
        before = set(survivor._processes)
        for _ in range(2):
            with ProcessPoolExecutor(1, mp_context=context) as short_lived:
                assert short_lived.submit(abs, -2).result(BOUND) == 2
        time.sleep(0.2)  # a stray SIGTERM would have landed by now
        assert set(survivor._processes) == before
        assert survivor.submit(abs, -3).result(BOUND) == 3
