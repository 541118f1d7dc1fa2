"""Pool with functions, lambdas, closures and classes defined where a notebook defines them.

Everything defined *inside* a test function is not importable by a worker, exactly like a
notebook cell's definitions: it must travel by value. Under spawn and forkserver the stdlib
cannot run any of these (its ``map`` on a ``__main__`` function without a file hangs).

The counting test checks the promise that a task function is deserialized at most once per
worker per map, not once per task or chunk: the function object's rebuild goes through
``_count_rebuild`` (importable, so its counter lives in the worker's copy of this module).
"""

from __future__ import annotations

import os

import pytest

import nbproc

INTERACTIVE_METHODS = ["fork", "spawn", "forkserver"]

_REBUILDS = 0  # per process: how many times a Counted callable was unpickled here


def _count_rebuild(payload):
    global _REBUILDS
    _REBUILDS += 1
    return payload


def _report(x):
    return os.getpid(), _REBUILDS, x


@pytest.fixture(scope="module", params=INTERACTIVE_METHODS)
def pool(request):
    with nbproc.get_context(request.param).Pool(2) as p:
        yield p


def test_lambdas_closures_and_local_functions(pool):
    offset = 10

    def local(x):
        return x + offset

    def make_adder(n):
        return lambda x: x + n

    assert pool.map(lambda x: x * 3, range(5)) == [0, 3, 6, 9, 12]
    assert pool.map(local, range(3)) == [10, 11, 12]
    assert pool.map(make_adder(5), range(3), chunksize=1) == [5, 6, 7]
    assert pool.apply(lambda a, b=2: a**b, (3,)) == 9
    assert list(pool.imap(local, iter(range(3)))) == [10, 11, 12]
    assert sorted(pool.imap_unordered(make_adder(1), range(3))) == [1, 2, 3]
    assert pool.starmap(lambda a, b: a - b, [(5, 1), (9, 4)]) == [4, 5]


def test_local_classes_methods_and_instances_cross_both_ways(pool):
    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

        def norm2(self):
            return self.x**2 + self.y**2

        def scaled(self, k):
            return Point(self.x * k, self.y * k)

        def __eq__(self, other):
            return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    points = [Point(i, i + 1) for i in range(6)]
    assert pool.map(Point.norm2, points) == [p.norm2() for p in points]
    doubled = pool.map(lambda p: p.scaled(2), points, chunksize=2)
    assert doubled == [p.scaled(2) for p in points]
    assert all(type(p) is Point for p in doubled)  # the same class, not a copy of it
    made = pool.starmap(Point, [(1, 2), (3, 4)])
    assert made == [Point(1, 2), Point(3, 4)] and type(made[0]) is Point
    assert pool.apply(points[3].scaled, (3,)) == Point(9, 12)  # a bound method of a local instance


def test_interactive_initializer_and_arguments(start_method):
    value = f"configured-{start_method}"

    def initializer(key):
        os.environ[key] = value  # a closure, run in each worker as it starts

    key = "NBPROC_TEST_INIT"
    with nbproc.get_context(start_method).Pool(2, initializer=initializer, initargs=(key,)) as pool:
        assert pool.map(lambda _: os.environ.get(key), range(4)) == [value] * 4
    assert key not in os.environ  # only the workers ran it


def test_function_is_deserialized_at_most_once_per_worker_per_map(pool):
    class Counted:
        """A by-value callable whose every unpickling is counted in the process doing it."""

        def __init__(self, tag):
            self.tag = tag

        def __reduce__(self):
            return (_count_rebuild, (CountedPayload(self.tag),))

    class CountedPayload:
        def __init__(self, tag):
            self.tag = tag

        def __call__(self, x):
            return _report(x)

    def loads_per_worker(rows):
        seen = {}
        for pid, count, _ in rows:
            seen[pid] = max(seen.get(pid, 0), count)
        return seen

    base = loads_per_worker(pool.map(_report, range(8), chunksize=1))
    for tag, chunksize in (("a", 1), ("b", 7), ("c", None)):
        if chunksize is None:
            rows = list(pool.imap_unordered(Counted(tag), range(100)))
        else:
            rows = pool.map(Counted(tag), range(200), chunksize=chunksize)
        assert sorted(x for _, _, x in rows) == list(range(len(rows)))
        loads = loads_per_worker(rows)
        # every worker that ran tasks of this map unpickled its function exactly once
        assert all(loads[pid] == base.get(pid, 0) + 1 for pid in loads), (tag, base, loads)
        assert all(len({c for p, c, _ in rows if p == pid}) == 1 for pid in loads)
        base.update(loads)
    assert _REBUILDS == 0  # the parent never unpickled a function


def test_same_function_across_apply_async_calls_is_sent_once(pool):
    class Counted:
        def __reduce__(self):
            return (_count_rebuild, (_report,))

    func = Counted()
    rows = [pool.apply_async(func, (i,)).get(timeout=30) for i in range(20)]
    # identical bytes share one cached function: one load per worker over all 20 calls
    for pid in {pid for pid, _, _ in rows}:
        assert len({count for p, count, _ in rows if p == pid}) == 1
