"""Shared ctypes objects: Value, Array, RawValue, RawArray, synchronized, copy — the reference's
examples, lock variants, ctypes Structures (module-level and defined inside a test, as in a notebook
cell), under every start method and against the stdlib."""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.sharedctypes as std_sharedctypes
import pickle
from ctypes import Structure, c_double, c_int
from multiprocessing.reduction import ForkingPickler

import pytest
from _examples import run_example

import nbproc
from nbproc import sharedctypes
from nbproc.sharedctypes import Array, RawArray, RawValue, Value, copy, synchronized


class Point(Structure):
    _fields_ = [("x", c_double), ("y", c_double)]


# == children =======================================================================================


def _negate(n, a):
    n.value = 3.1415927
    for i in range(len(a)):
        a[i] = -a[i]


def modify(n, x, s, A):
    n.value **= 2
    x.value **= 2
    s.value = s.value.upper()
    for a in A:
        a.x **= 2
        a.y **= 2


def _increment_many(counter, times):
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1


def _fill_raw(value, array):
    value.value = 99
    for i in range(len(array)):
        array[i] = i * i


# == the reference's examples ======================================================================

VALUE_ARRAY_EXAMPLE = """
from multiprocessing import Process, Value, Array

def f(n, a):
    n.value = 3.1415927
    for i in range(len(a)):
        a[i] = -a[i]

if __name__ == '__main__':
    num = Value('d', 0.0)
    arr = Array('i', range(10))

    p = Process(target=f, args=(num, arr))
    p.start()
    p.join()

    print(num.value)
    print(arr[:])
"""

# The sharedctypes section of the reference (absent from /work/shared/spec's text, present in
# the CPython documentation it translates): Value/Array from multiprocessing.sharedctypes, with a
# Lock shared by two arrays and a ctypes Structure defined in the main script.
POINT_EXAMPLE = """
from multiprocessing import Process, Lock
from multiprocessing.sharedctypes import Value, Array
from ctypes import Structure, c_double

class Point(Structure):
    _fields_ = [('x', c_double), ('y', c_double)]

def modify(n, x, s, A):
    n.value **= 2
    x.value **= 2
    s.value = s.value.upper()
    for a in A:
        a.x **= 2
        a.y **= 2

if __name__ == '__main__':
    lock = Lock()

    n = Value('i', 7)
    x = Value(c_double, 1.0/3.0, lock=False)
    s = Array('c', b'hello world', lock=lock)
    A = Array(Point, [(1.875,-6.25), (-5.75,2.0), (2.375,9.5)], lock=lock)

    p = Process(target=modify, args=(n, x, s, A))
    p.start()
    p.join()

    print(n.value)
    print(x.value)
    print(s.value)
    print([(a.x, a.y) for a in A])
"""

POINT_EXPECTED = """49
0.1111111111111111
b'HELLO WORLD'
[(3.515625, 39.0625), (33.0625, 4.0), (5.640625, 90.25)]
"""


def test_value_array_example(start_method):
    nb = run_example(VALUE_ARRAY_EXAMPLE, start_method, "nbproc")
    assert nb.returncode == 0, nb.stderr
    assert nb.stdout == "3.1415927\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]\n"
    std = run_example(VALUE_ARRAY_EXAMPLE, start_method, "multiprocessing")
    assert std.returncode == 0, std.stderr
    assert nb.stdout == std.stdout


def test_point_example(start_method):
    nb = run_example(POINT_EXAMPLE, start_method, "nbproc")
    assert nb.returncode == 0, nb.stderr
    assert nb.stdout == POINT_EXPECTED
    std = run_example(POINT_EXAMPLE, start_method, "multiprocessing")
    assert std.returncode == 0, std.stderr
    assert nb.stdout == std.stdout


def test_point_example_with_a_cell_defined_structure(ctx):
    """The same example with ``Point`` and ``modify`` defined inside the test (a notebook cell's
    situation): under spawn/forkserver the class and the function travel by value."""

    class CellPoint(Structure):
        _fields_ = [("x", c_double), ("y", c_double)]

        def norm2(self):
            return self.x**2 + self.y**2

    def cell_modify(n, x, s, A):
        n.value **= 2
        x.value **= 2
        s.value = s.value.upper()
        for a in A:
            a.x **= 2
            a.y **= 2

    lock = ctx.Lock()
    n = Value("i", 7, ctx=ctx)
    x = Value(c_double, 1.0 / 3.0, lock=False)
    s = Array("c", b"hello world", lock=lock)
    A = Array(CellPoint, [(1.875, -6.25), (-5.75, 2.0), (2.375, 9.5)], lock=lock)
    p = ctx.Process(target=cell_modify, args=(n, x, s, A))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert f"{n.value}\n{x.value}\n{s.value}\n{[(a.x, a.y) for a in A]}\n" == POINT_EXPECTED
    assert A[0].norm2() == pytest.approx(3.515625**2 + 39.0625**2)


def test_value_array_between_processes_and_locking(ctx):
    num, arr = ctx.Value("d", 0.0), ctx.Array("i", range(10))
    p = ctx.Process(target=_negate, args=(num, arr))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert num.value == 3.1415927 and arr[:] == [-i for i in range(10)]
    counter = ctx.Value("i", 0)
    procs = [ctx.Process(target=_increment_many, args=(counter, 500)) for _ in range(2)]
    for q in procs:
        q.start()
    _increment_many(counter, 500)
    for q in procs:
        q.join(30)
    assert counter.value == 1500  # get_lock() made each += atomic


def test_raw_objects_between_processes(ctx):
    value, array = RawValue("l", 0), RawArray(c_int, 5)
    p = ctx.Process(target=_fill_raw, args=(value, array))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert value.value == 99 and list(array) == [0, 1, 4, 9, 16]


# == API, in one process ===========================================================================


def test_lock_argument_variants():
    raw = Value("i", 1, lock=False)
    assert isinstance(raw, c_int) and not hasattr(raw, "get_lock")
    locked = Value("i", 2)
    assert isinstance(locked, sharedctypes.Synchronized)
    assert type(locked.get_lock()) is type(nbproc.RLock())
    assert locked.get_obj().value == 2
    mine = nbproc.Lock()
    shared = Value("i", 3, lock=mine)
    assert shared.get_lock() is mine
    with shared:
        assert not mine.acquire(False)
    assert mine.acquire(False)
    mine.release()
    with pytest.raises(AttributeError, match="acquire"):
        Value("i", 4, lock="not a lock")
    text = Array("c", b"abc")
    assert isinstance(text, sharedctypes.SynchronizedString)
    assert text.value == b"abc" and text.raw == b"abc\x00"[:3]
    numbers = Array("d", 3, lock=False)
    assert isinstance(numbers, ctypes.Array) and list(numbers) == [0.0, 0.0, 0.0]
    arr = Array(c_int, [1, 2, 3])
    assert isinstance(arr, sharedctypes.SynchronizedArray) and len(arr) == 3 and arr[1:] == [2, 3]


def test_copy_and_synchronized():
    original = RawArray("i", [1, 2, 3])
    duplicate = copy(original)
    duplicate[0] = 100
    assert list(original) == [1, 2, 3] and list(duplicate) == [100, 2, 3]
    wrapped = synchronized(RawValue(c_double, 1.5))
    assert isinstance(wrapped, sharedctypes.Synchronized) and wrapped.value == 1.5
    point = synchronized(RawValue(Point, 1.0, 2.0))
    assert (point.x, point.y) == (1.0, 2.0)
    point.x = 5.0
    assert point.get_obj().x == 5.0
    with pytest.raises(AssertionError):
        synchronized(wrapped)  # already synchronized


def test_default_context_is_nbprocs_and_the_stdlib_stays_unpinned():
    before = multiprocessing.get_start_method(allow_none=True)
    value = Value("i", 0)
    array = Array("i", 3)
    sync = synchronized(RawValue("i", 0))
    assert multiprocessing.get_start_method(allow_none=True) == before
    # nbproc's default start method (forkserver here) names its semaphores; fork's are unnamed
    expect_named = nbproc.get_start_method() != "fork"
    for obj in (value, array, sync):
        assert (obj.get_lock()._semlock.name is not None) is expect_named


def test_context_methods_use_nbproc_sharedctypes():
    ctx = nbproc.get_context("spawn")
    assert ctx.Value("i", 1).get_lock()._semlock.name is not None
    assert nbproc.get_context("fork").Array("i", 2).get_lock()._semlock.name is None
    assert ctx.RawValue("d", 2.5).value == 2.5
    assert list(ctx.RawArray("b", [1, 2])) == [1, 2]


def test_shared_objects_pickle_only_while_spawning():
    for obj in (Value("i", 1), RawValue("i", 1), RawArray("i", 2), Array("i", 2)):
        with pytest.raises(RuntimeError, match="through inheritance"):
            ForkingPickler.dumps(obj)  # the stdlib's pickler says the same
        with pytest.raises(nbproc.SerializationError, match="through inheritance"):
            nbproc.Queue().put(obj)


def test_reexports_match_the_stdlib():
    for name in ("RawValue", "RawArray", "copy", "Synchronized", "SynchronizedArray", "SynchronizedString"):
        assert getattr(sharedctypes, name) is getattr(std_sharedctypes, name)


# == ctypes Structures by value ======================================================================


def test_cell_defined_structure_instances_on_a_queue(ctx):
    """Plain (not shared) instances of a locally defined Structure cross a queue and keep one
    class on the receiving side."""

    class Pair(Structure):
        _pack_ = 1
        _fields_ = [("a", ctypes.c_int16), ("b", ctypes.c_int32), ("c", c_double * 2)]

    q, back = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=_return_types_and_values, args=(q, back))
    p.start()
    q.put(Pair(1, 2, (3.0, 4.0)))
    q.put(Pair(5, 6, (7.0, 8.0)))
    same_class, values, size = back.get(timeout=30)
    p.join(30)
    assert same_class is True
    assert values == [(1, 2, [3.0, 4.0]), (5, 6, [7.0, 8.0])]
    assert size == ctypes.sizeof(Pair) == 2 + 4 + 16  # _pack_ survived (unpacked: 24)


def _return_types_and_values(q, back):
    first, second = q.get(timeout=30), q.get(timeout=30)
    values = [(s.a, s.b, list(s.c)) for s in (first, second)]
    back.put((type(first) is type(second), values, ctypes.sizeof(first)))


def test_structure_class_reduction_stays_by_reference_when_importable():
    from nbproc import serialization

    data = serialization.dumps(Point)
    assert b"_rebuild_class" not in data
    assert pickle.loads(data) is Point
