"""Per-task timeouts and cancellation of Pool work (nbproc additions), under every start method.

- ``task_timeout``: a 2 s task among fast ones with ``task_timeout=0.5`` fails alone with
  :class:`nbproc.TaskTimeoutError` (naming its index and the limit) long before it would have
  finished; its worker is replaced; the rest of the call and the next call work. In an imap
  chunk, the items finished before the late one are delivered; the late item and the ones after
  it in its chunk fail with one error.
- ``get(timeout)`` keeps the stdlib meaning: it raises ``nbproc.TimeoutError`` and the task
  goes on.
- ``result.cancel()`` stops a running ``apply_async`` (its worker is replaced);
  ``imap_iterator.close()`` stops an iteration.
- the task function is shipped once per worker per version of it.

Time bounds are generous (the machine is shared): the point is "stopped, not waited for".
"""

from __future__ import annotations

import os
import time

import pytest

import nbproc

BOUND = 10.0  # seconds: promptly on a loaded 2-core machine, and far below a hung task's 30 s
SLOW = 2.0  # the late task: four times its limit
LIMIT = 0.5


def nap(seconds):
    time.sleep(seconds)
    return os.getpid()


def outcomes(iterator):
    """Every value or exception an imap iterator yields, in order."""
    out = []
    while True:
        try:
            out.append(next(iterator))
        except StopIteration:
            return out
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            out.append(exc)


def test_late_task_alone_fails_and_pool_goes_on(ctx):
    with ctx.Pool(2) as pool:
        before = {p.pid for p in pool._pool}
        start = time.monotonic()
        results = outcomes(pool.imap(nap, [0.01, 0.01, SLOW, 0.01, 0.01, 0.01], task_timeout=LIMIT))
        elapsed = time.monotonic() - start
        late = results.pop(2)
        assert isinstance(late, nbproc.TaskTimeoutError), late
        assert isinstance(late, nbproc.TimeoutError)
        assert (late.index, late.timeout) == (2, LIMIT)
        assert "task 2 of imap(nap)" in str(late) and "0.5 s" in str(late)
        assert all(isinstance(pid, int) for pid in results), results
        assert elapsed < BOUND
        assert len(before - {p.pid for p in pool._pool}) == 1  # exactly the late task's worker replaced
        assert len(pool.map(nap, [0.0] * 4, chunksize=1)) == 4


def test_pool_default_and_map_raise_for_the_late_task(ctx):
    with ctx.Pool(2, task_timeout=LIMIT) as pool:
        start = time.monotonic()
        with pytest.raises(nbproc.TaskTimeoutError) as info:
            pool.map(nap, [0.0, SLOW, 0.0, 0.0], chunksize=1)
        assert info.value.index == 1
        assert time.monotonic() - start < BOUND
        # a call may lift the pool's limit
        assert isinstance(pool.apply(nap, (LIMIT + 0.2,), task_timeout=None), int)
        assert pool.starmap(divmod, [(7, 2)]) == [(3, 1)]


def test_chunk_keeps_the_items_it_finished_before_the_late_one(ctx):
    events = []
    with ctx.Pool(1) as pool:
        pool.add_listener(events.append)
        work = [0.0, 0.0, 0.0, 0.0, 0.0, SLOW, 0.0, 0.0, 0.0]
        results = outcomes(pool.imap(nap, work, chunksize=3, task_timeout=LIMIT))
        # chunk 0: three values; chunk 1: its two finished items, then the late one's error once
        # for the rest of the chunk; chunk 2 (after the worker was replaced): three values
        assert len(results) == 9, results
        late = results[5]
        assert isinstance(late, nbproc.TaskTimeoutError) and late.index == 5, late
        values = results[:5] + results[6:]
        assert all(isinstance(pid, int) for pid in values), results
        assert len(set(results[:5])) == 1 and results[6] != results[0]  # the late worker was replaced
        unordered = outcomes(pool.imap_unordered(nap, [0.0, SLOW, 0.0], chunksize=3, task_timeout=LIMIT))
        assert isinstance(unordered[0], int) and isinstance(unordered[1], nbproc.TaskTimeoutError), unordered
        assert len(unordered) == 2  # the unstarted third item fails with the late one, in one error
    final = [e for e in events if e.finished]
    assert [(e.done, e.failed) for e in final] == [(8, 1), (1, 2)], final  # items, not chunks


def test_get_timeout_only_stops_waiting(ctx):
    with ctx.Pool(1) as pool:
        result = pool.apply_async(nap, (0.5,))
        with pytest.raises(nbproc.TimeoutError) as info:
            result.get(0.01)
        assert not isinstance(info.value, nbproc.TaskTimeoutError)
        assert isinstance(result.get(BOUND), int)


def test_cancel_a_running_apply_async(ctx):
    with ctx.Pool(1) as pool:
        running = pool.apply_async(nap, (30,))
        queued = pool.apply_async(nap, (30,))
        pid = pool.apply_async(os.getpid)  # queued behind both
        time.sleep(0.3)  # the first has reached its worker
        worker = [p.pid for p in pool._pool]
        start = time.monotonic()
        assert running.cancel() and queued.cancel()
        assert running.cancelled() and queued.cancelled() and running.ready()
        with pytest.raises(nbproc.TaskCancelledError):
            running.get()
        assert pid.get(BOUND) not in worker  # ran on the replacement: the sleeper was stopped
        assert time.monotonic() - start < BOUND
        assert not pid.cancel() and not pid.cancelled()  # finished: nothing to cancel
        assert pool.map(abs, [-1, -2]) == [1, 2]


def test_close_an_imap_iterator(ctx):
    with ctx.Pool(2) as pool:
        iterator = pool.imap(nap, [0.0] + [30] * 4)
        assert isinstance(next(iterator), int)
        start = time.monotonic()
        iterator.close()
        assert iterator.cancelled()
        with pytest.raises(StopIteration):
            next(iterator)
        assert pool.map(abs, [-3], chunksize=1) == [3]
        assert time.monotonic() - start < BOUND


class CountsUnpickling:
    """A task callable that reports how often this worker has unpickled it (pickled by value)."""

    loaded = 0

    def __init__(self, version):
        self.version = version

    def __setstate__(self, state):
        CountsUnpickling.loaded += 1
        self.__dict__.update(state)

    def __call__(self, _):
        return self.version, CountsUnpickling.loaded


def test_function_shipped_once_per_worker_per_version(ctx):
    with ctx.Pool(1) as pool:
        first = pool.map(CountsUnpickling(1), range(20), chunksize=1)
        again = [pool.apply(CountsUnpickling(1), (0,)) for _ in range(3)]
        assert set(first + again) == {(1, 1)}
        assert set(pool.map(CountsUnpickling(2), range(5), chunksize=1)) == {(2, 2)}


def test_invalid_task_timeout_and_thread_pool():
    with pytest.raises(ValueError):
        nbproc.Pool(1, task_timeout=0)
    with pytest.raises(TypeError):
        nbproc.Pool(1, task_timeout="1")
    from nbproc.pool import ThreadPool

    with ThreadPool(1) as pool:
        with pytest.raises(ValueError, match="ThreadPool"):
            pool.map(abs, [1], task_timeout=1)
        assert pool.map(abs, [-1]) == [1]
        result = pool.apply_async(time.sleep, (0.2,))
        assert result.cancel() and result.cancelled()


class LoadsSlowly:
    """A task function whose unpickling in the worker takes longer than the task's limit
    (an expensive import, say): loading is not part of the task's time."""

    def __reduce__(self):
        return (_load_slowly, ())

    def __call__(self, x):
        return x


def _load_slowly():
    time.sleep(LIMIT * 2)
    return LoadsSlowly()


def test_loading_the_function_does_not_count(ctx):
    with ctx.Pool(1) as pool:
        assert pool.map(LoadsSlowly(), [1, 2], chunksize=1, task_timeout=LIMIT) == [1, 2]
        assert pool.apply(LoadsSlowly(), (3,), task_timeout=LIMIT) == 3
