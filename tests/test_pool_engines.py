"""One Pool suite over every engine: worker processes (each start method), threads, a Dask cluster.

The Pool facade is the same object over each engine (:mod:`nbproc._pool_engine` is their
contract), so the same tests must pass on each — the way CPython's ``test_concurrent_futures``
builds one suite per executor. Each engine gets one pool per module (``pool``) and a factory
for tests that change a pool's state (``make_pool``). Task functions are defined inside the
tests, so the process and Dask engines send them by value, as they would a notebook cell's.

Skipped, per engine, only where the test cannot mean anything there:

- ``thread``: nothing is serialized (threads share objects), so there is no serialization
  error to report for an argument or a result;
- ``dask``: none — Dask owns its workers, so ``maxtasksperchild`` and worker pids are not part
  of this suite at all (``tests/test_pool.py`` covers them for the process engine).
"""

from __future__ import annotations

import threading
import time

import pytest

import nbproc
import nbproc.pool
from nbproc.pool import MaybeEncodingError, TaskCancelledError
from nbproc.serialization import SerializationError

ENGINES = ["fork", "spawn", "forkserver", "thread", "dask"]


class Engine:
    """How to make a pool of one engine (``make(n, **kwargs)``), and its name."""

    def __init__(self, name: str, client=None) -> None:
        self.name = name
        self.client = client

    def make(self, processes: int = 2, **kwargs):
        if self.name == "thread":
            return nbproc.pool.ThreadPool(processes, **kwargs)
        if self.name == "dask":
            from nbproc.dask import Pool as DaskPool

            return DaskPool(processes, client=self.client, **kwargs)
        return nbproc.get_context(self.name).Pool(processes, **kwargs)

    @property
    def serializes(self) -> bool:
        return self.name != "thread"


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module", params=ENGINES)
def engine(request):
    if request.param == "dask":
        return Engine("dask", request.getfixturevalue("dask_client"))
    return Engine(request.param)


@pytest.fixture(scope="module")
def pool(engine):
    with engine.make(2) as p:
        yield p


def test_engine_fulfils_the_contract(pool):
    """Every member the facade may use (``nbproc._pool_engine.PoolEngine``) exists on the engine."""
    from nbproc._pool_engine import PoolEngine

    members = set(PoolEngine.__annotations__) | {n for n in vars(PoolEngine) if not n.startswith("_")}
    assert members >= {"submit", "make_task", "statistics", "jobs", "state"}
    assert [m for m in sorted(members) if not hasattr(pool._core, m)] == []


def test_map_starmap_and_imap_keep_order(pool):
    k = 3
    xs = list(range(23))
    assert pool.map(lambda x: x * k, xs) == [x * k for x in xs]
    assert pool.map(lambda x: x * k, xs, chunksize=4) == [x * k for x in xs]
    assert pool.map(lambda x: x, []) == []
    assert pool.starmap(lambda a, b: a - b, [(3, 1), (9, 4)]) == [2, 5]
    assert list(pool.imap(lambda x: x + 1, xs, chunksize=3)) == [x + 1 for x in xs]
    assert list(pool.imap(lambda x: x + 1, iter(xs))) == [x + 1 for x in xs]
    assert sorted(pool.imap_unordered(lambda x: -x, xs, chunksize=2)) == sorted(-x for x in xs)
    assert pool.apply(lambda a, *, b: a * b, (6,), {"b": 7}) == 42


def test_callbacks_run_before_get_returns(pool):
    got, errors = [], []
    res = pool.map_async(lambda x: x * 2, range(6), chunksize=2, callback=got.append)
    assert res.get(timeout=30) == [0, 2, 4, 6, 8, 10] and got == [[0, 2, 4, 6, 8, 10]]

    def boom():
        raise KeyError("k")

    failed = pool.apply_async(boom, error_callback=errors.append)
    failed.wait(30)
    assert failed.ready() and not failed.successful()
    assert isinstance(errors[0], KeyError)


def test_errors_keep_their_type_and_position(pool):
    def fail_on_3(x):
        if x == 3:
            raise ValueError(f"bad {x}")
        return x

    with pytest.raises(ValueError, match="bad 3"):
        pool.map(fail_on_3, range(6), chunksize=1)
    it = pool.imap(fail_on_3, range(6))
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad 3"):
        next(it)
    assert list(it) == [4, 5]  # iteration goes on after an error


def test_timeouts_leave_the_work_running(pool):
    res = pool.apply_async(time.sleep, (0.3,))
    with pytest.raises(nbproc.TimeoutError):
        res.get(timeout=0.01)
    assert res.get(timeout=30) is None
    it = pool.imap(lambda x: (time.sleep(0.3), x)[1], [1])
    with pytest.raises(nbproc.TimeoutError):
        it.next(timeout=0.01)
    assert it.next(timeout=30) == 1


def test_progress_events_count_every_item(pool):
    events = []
    pool.add_listener(events.append)
    try:
        pool.map(lambda x: x, range(12), chunksize=4)
    finally:
        pool.remove_listener(events.append)
    final = events[-1]
    assert final.finished and (final.done, final.failed, final.total) == (12, 0, 12)
    assert [e.items for e in events if e.kind == "done"] == [4, 4, 4]


def test_cancel_ends_a_job_at_once(engine):
    with engine.make(1) as p:  # its own pool: a process engine replaces the worker it stops
        res = p.apply_async(time.sleep, (0.3,))
        assert res.cancel() and res.cancelled()
        with pytest.raises(TaskCancelledError):
            res.get(timeout=5)
        assert p.map(lambda x: x + 1, range(3)) == [1, 2, 3]  # the pool carries on


def test_progress_argument_and_statistics(pool, engine):
    events = []
    assert pool.map(lambda x: x, range(9), chunksize=3, progress=events.append) == list(range(9))
    assert events[-1].finished and events[-1].done == 9
    assert list(pool.imap(lambda x: x, iter(range(4)), progress=events.append)) == [0, 1, 2, 3]
    assert events[-1].finished and events[-1].done == 4
    stats = pool.statistics()
    assert stats.state == "RUN" and stats.processes == 2 and stats.done >= 3 + 4
    assert stats.start_method == engine.name


def test_serialization_errors_are_reported_at_the_call(pool, engine):
    if not engine.serializes:
        pytest.skip("threads share objects: nothing is serialized")
    with pytest.raises(SerializationError, match="item 1"):
        pool.map(lambda x: x, [1, threading.Lock()], chunksize=1)
    with pytest.raises(MaybeEncodingError):
        pool.apply(lambda: threading.Lock())


def test_lifecycle(engine):
    p = engine.make(2)
    res = p.map_async(lambda x: (time.sleep(0.02), x)[1], range(6), chunksize=1)
    p.close()
    with pytest.raises(ValueError):
        p.map(abs, [1])
    p.join()
    assert res.get(timeout=1) == list(range(6))

    p = engine.make(2)
    slow = [p.apply_async(time.sleep, (0.5,)) for _ in range(4)]
    p.terminate()
    for res in slow:
        with pytest.raises(TaskCancelledError):
            res.get(timeout=10)
    p.join()


def test_initializer_runs_before_tasks(engine):
    def init(tag):
        import builtins

        builtins._nbproc_engine_suite_tag = tag

    def read_tag(_):
        import builtins

        return getattr(builtins, "_nbproc_engine_suite_tag", None)

    with engine.make(2, initializer=init, initargs=(engine.name,)) as p:
        assert set(p.map(read_tag, range(4), chunksize=1)) == {engine.name}


def test_pending_jobs_are_in_the_cache_and_leave_it(engine):
    """``Pool._cache`` (the engine's ``JobRegistry``) holds the result objects of outstanding
    calls; a finished call leaves it, and ``terminate`` aborts what is still in it — the one
    way an engine reaches a job it holds no task of (an ``imap`` whose feeder reads its input)."""
    with engine.make(1) as p:
        gate = threading.Event()

        def slow_input():
            yield 1
            gate.wait(10)  # the feeder blocks here: no task of the job is queued or running
            yield 2

        it = p.imap(lambda x: x, slow_input(), buffersize=2)  # (a room: each task goes out as read)
        assert next(it) == 1
        res = p.apply_async(lambda: 5)
        assert res.get(timeout=30) == 5
        assert res._job not in p._cache and p._cache[it._job] is it
        p.terminate()
        gate.set()
        with pytest.raises(TaskCancelledError):
            next(it)
        assert len(p._cache) == 0


def test_results_keep_the_stdlib_public_api():
    """The engine-facing methods live on a sink, not on the results: their public names are the
    stdlib's plus nbproc's documented ``cancel``/``cancelled`` (and ``close`` for imap)."""
    import multiprocessing.pool as std

    additions = {"cancel", "cancelled"}
    pairs = [
        (nbproc.pool.ApplyResult, std.ApplyResult, additions),
        (nbproc.pool.MapResult, std.MapResult, additions),
        (nbproc.pool.IMapIterator, std.IMapIterator, additions | {"close"}),
        (nbproc.pool.IMapUnorderedIterator, std.IMapUnorderedIterator, additions | {"close"}),
    ]
    for ours, theirs, extra in pairs:
        public = {n for n in dir(ours) if not n.startswith("_")}
        assert public == {n for n in dir(theirs) if not n.startswith("_")} | extra, ours


def test_engines_reach_results_only_through_their_sink():
    """No engine module touches a private member of a result object (``_set``, ``_abort``,
    ``_job``...): everything goes through ``JobSink``'s public methods and ``JobRegistry``."""
    import ast
    import inspect

    import nbproc._dask_core
    import nbproc._pool_results as results
    import nbproc._pool_threads
    import nbproc._pool_workers

    with nbproc.pool.ThreadPool(1) as p:
        sample = [p.apply_async(abs, (1,)), p.map_async(abs, [1]), p.imap(abs, [1])]
        for res in sample[:2]:
            res.get(timeout=30)
        list(sample[2])
    private = {n for r in sample for n in vars(r) if n.startswith("_") and not n.startswith("__")}
    for cls in (results._Job, results.ApplyResult, results.MapResult, results.IMapIterator):
        private |= {n for n in vars(cls) if n.startswith("_") and not n.startswith("__")}
    assert {"_set", "_abort", "_set_partial", "_job", "_label"} <= private
    for module in (nbproc._pool_workers, nbproc._pool_threads, nbproc._dask_core):
        tree = ast.parse(inspect.getsource(module))
        touched = [
            f"{module.__name__}:{node.lineno}: {ast.unparse(node)}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr in private
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ]
        assert touched == []
