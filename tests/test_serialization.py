"""nbproc.serialization: by-value for interactive objects, by-reference speed for importable
ones, precise errors, the dill and pickle alternatives."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading

import pytest

import nbproc
from nbproc import serialization


@pytest.fixture
def serializer():
    """Restore the serializer whatever a test selects."""
    before = serialization.get_serializer()
    yield serialization.set_serializer
    serialization.set_serializer(before)


def test_roundtrip_of_interactive_objects():
    k = 3

    def closure(x):
        return x * k

    class Local:
        def __init__(self, v):
            self.v = v

        def double(self):
            return self.v * 2

    square = lambda x: x * x  # noqa: E731
    out = serialization.loads(serialization.dumps((closure, square, Local(21), Local)))
    assert out[0](2) == 6
    assert out[1](5) == 25
    assert out[2].double() == 42
    assert out[3](1).v == 1


def test_importable_objects_pickle_by_reference_like_the_stdlib():
    for obj in (os.path.join, pickle.dumps, ValueError, {"a": [1, 2.0, b"x"]}):
        assert serialization.dumps(obj) == pickle.dumps(obj, protocol=5)


def test_out_of_band_buffers_are_offered():
    np = pytest.importorskip("numpy")
    arr = np.arange(1_000_000, dtype=np.float64)
    buffers = []
    data = serialization.dumps(arr, buffer_callback=buffers.append)
    assert len(buffers) == 1 and len(data) < 1000
    back = serialization.loads(data, buffers=buffers)
    assert (back == arr).all()


class Holder:
    def __init__(self):
        self.conn = threading.Lock()


def test_error_names_the_culprit_and_its_place():
    with pytest.raises(serialization.SerializationError) as info:
        serialization.dumps({"state": [1, Holder()]}, what="Queue item")
    message = str(info.value)
    assert message == (
        "Queue item: value for key 'state': item 1: attribute `conn` of `Holder`: cannot pickle '_thread.lock' object"
    )
    assert isinstance(info.value, pickle.PicklingError) and isinstance(info.value, TypeError)
    assert isinstance(info.value.__cause__, TypeError)


def test_error_names_closure_variables():
    lock = threading.Lock()

    def uses_lock():
        return lock

    with pytest.raises(serialization.SerializationError, match="closure variable `lock` of function .*uses_lock"):
        serialization.dumps(uses_lock)


def test_unknown_serializer_is_rejected(serializer):
    with pytest.raises(ValueError, match="unknown serializer"):
        serializer("marshal")
    assert serialization.get_serializer() == "cloudpickle"


def test_pickle_serializer_behaves_like_the_stdlib(serializer):
    serializer("pickle")
    with pytest.raises(serialization.SerializationError):
        serialization.dumps(lambda: 1)
    assert serialization.loads(serialization.dumps([1, "a"])) == [1, "a"]


def test_dill_serializer_roundtrips_interactive_objects(serializer):
    pytest.importorskip("dill")
    serializer("dill")
    k = 5
    out = serialization.loads(serialization.dumps(lambda x: x + k))
    assert out(1) == 6


def _report(conn):
    conn.send(nbproc.get_serializer())


@pytest.mark.parametrize("name", ["dill", "cloudpickle"])
def test_children_inherit_the_serializer(ctx, serializer, name):
    pytest.importorskip("dill")
    serializer(name)
    a, b = nbproc.Pipe()
    offset = 10
    p = ctx.Process(target=lambda c: (c.send(nbproc.get_serializer()), c.send(offset + 1)), args=(b,))
    p.start()
    assert a.recv() == name
    assert a.recv() == 11
    p.join(10)
    assert p.exitcode == 0


def test_main_functions_share_the_childs_main_namespace():
    """An initializer's global is seen by a later task, as with the stdlib's by-reference
    lookup (regression: plain cloudpickle gives each function private globals)."""
    code = """
import nbproc
STATE = None
K = 2
def init(v):
    global STATE
    STATE = v
def task(c):
    c.send((STATE, K, __name__))
def both(c, v):
    init(v)
    task(c)
if __name__ == "__main__":
    for m in ["fork", "spawn", "forkserver"]:
        ctx = nbproc.get_context(m)
        a, b = nbproc.Pipe()
        K = 3
        p = ctx.Process(target=both, args=(b, "set-in-child"))
        p.start()
        print(m, *a.recv())
        p.join()
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # -c has no file to re-run: children see the parent's values of K, by value
    assert out.stdout.splitlines() == [
        "fork set-in-child 3 __main__",
        "spawn set-in-child 3 __main__",
        "forkserver set-in-child 3 __main__",
    ], out.stderr


class RefusesPickling:
    def __reduce__(self):
        raise RuntimeError("not today")


def test_a_reducers_own_exception_type_is_kept():
    """The stdlib lets a __reduce__'s RuntimeError propagate; code that catches it keeps working."""
    with pytest.raises(RuntimeError, match="not today") as info:
        serialization.dumps([1, RefusesPickling()], what="task argument")
    assert isinstance(info.value, serialization.SerializationError)
    assert str(info.value) == "task argument: item 1: not today"
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, RuntimeError) and isinstance(again, serialization.SerializationError)
    assert str(again) == str(info.value)


def test_main_class_instances_from_a_forked_child_keep_their_class():
    code = """
import nbproc
class Point:
    def __init__(self, x):
        self.x = x
def make(c):
    c.send(Point(3))
if __name__ == "__main__":
    for m in ["fork", "spawn", "forkserver"]:
        a, b = nbproc.Pipe()
        p = nbproc.get_context(m).Process(target=make, args=(b,))
        p.start()
        got = a.recv()
        p.join()
        print(m, isinstance(got, Point), got.x)
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["fork True 3", "spawn True 3", "forkserver True 3"], out.stderr


# --- the explainer never fails on what it walks ----------------------------------------------


class _Bag:
    """An argument holding ``thing`` next to the real culprit, an unpicklable lock."""

    def __init__(self, thing):
        self.thing = thing
        self.culprit = threading.Lock()


class _RaisingAttributes:
    def __getattr__(self, name):
        raise RuntimeError(f"no {name} here")

    @property
    def prop(self):
        raise RuntimeError("property")


class _RaisingClass:
    @property
    def __class__(self):  # what isinstance() reads
        raise RuntimeError("no class")


class _RaisingRepr:
    def __repr__(self):
        raise RuntimeError("no repr")

    def __hash__(self):
        return 1


def _noop():
    pass


@pytest.fixture
def zoo():
    """Objects the explainer may meet next to the culprit: Processes started (alive and
    finished) and closed, a manager and its proxies, objects whose attributes, class or repr raise."""
    fork = nbproc.get_context("fork")
    started = fork.Process(target=_noop)
    started.start()
    started.join()
    closed = fork.Process(target=_noop)
    closed.start()
    closed.join()
    closed.close()
    alive = fork.Process(target=threading.Event().wait, args=(30,), daemon=True)
    alive.start()
    manager = fork.Manager()
    animals = {
        "finished Process": started,
        "closed Process": closed,
        "running Process": alive,
        "manager": manager,
        "dict proxy": manager.dict(a=1),
        "list proxy": manager.list([1]),
        "raising attributes": _RaisingAttributes(),
        "raising class": _RaisingClass(),
        "raising repr as a key": {_RaisingRepr(): threading.Lock()},
        "raising repr in a set": {_RaisingRepr()},
    }
    yield animals
    manager.shutdown()
    alive.terminate()
    alive.join()


def test_the_explainer_never_fails_on_what_it_walks(zoo):
    for name, animal in zoo.items():
        for obj in (_Bag(animal), [animal, threading.Lock()], {"k": animal, "lock": threading.Lock()}):
            with pytest.raises(serialization.SerializationError) as info:
                serialization.dumps(obj, what="argument 1 of Process target")
            message = str(info.value)
            assert message.startswith("argument 1 of Process target: "), (name, message)
            assert "AttributeError" not in repr(info.value), (name, message)


def test_a_started_process_inside_an_argument_is_reported_not_crashed_on(zoo):
    """The issue's case: an argument keeping a started Process (a manager's server)."""
    bag = _Bag(zoo["finished Process"])
    process = nbproc.get_context("spawn").Process(target=_noop, args=(bag,))
    with pytest.raises(serialization.SerializationError) as info:
        process.start()
    # Started, it cannot travel (its popen holds a weakref): that is the first culprit met.
    assert str(info.value).startswith(
        "argument 1 of Process target: attribute `thing` of `_Bag`: attribute `_popen` of `ForkProcess`"
    ), str(info.value)
    del bag.thing  # the lock alone: named exactly
    with pytest.raises(serialization.SerializationError, match=r"attribute `culprit` of `_Bag`: cannot pickle"):
        nbproc.get_context("spawn").Process(target=_noop, args=(bag,)).start()


# --- tracebacks of by-value __main__ functions keep their file ---------------------------------

RAISES = """
import sys
import multiprocessing


def raises(x):
    raise ValueError(f"boom {x}")


if __name__ == "__main__":
    multiprocessing.set_start_method(sys.argv[1])
    p = multiprocessing.Process(target=raises, args=(1,))
    p.start()
    p.join()
    print("exitcode", p.exitcode)
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_child_traceback_shows_the_scripts_file_and_line(tmp_path, start_method):
    from _scripts import finish, normalise, script, start

    runs = {
        module: start(script(tmp_path / module, RAISES, module), start_method)
        for module in ("nbproc", "multiprocessing")
    }
    results = {module: finish(run, 60) for module, run in runs.items()}
    mine = results["nbproc"]
    path = tmp_path / "nbproc" / "program.py"
    assert f'File "{path}", line 7, in raises\n    raise ValueError(f"boom {{x}}")\n' in mine.stderr, mine.stderr
    assert "<dynamic-code>" not in mine.stderr

    def tail(result, module):  # the frames from the script on, with the script's path made neutral
        text = result.stderr.replace(str(tmp_path / module), "DIR")
        return normalise(text[text.index('File "DIR/program.py"') :], sort=False)

    assert tail(mine, "nbproc") == tail(results["multiprocessing"], "multiprocessing")
    assert mine.stdout == results["multiprocessing"].stdout == "exitcode 1\n"


def test_cloudpickle_internals_are_where_nbproc_expects_them():
    import io
    import types

    import cloudpickle
    from cloudpickle import cloudpickle as internals

    moved = [name for name in serialization.CLOUDPICKLE_INTERNALS if not hasattr(internals, name)]
    assert not moved, (
        f"cloudpickle {cloudpickle.__version__} no longer has {moved}, private internals nbproc's serializer "
        "uses (nbproc.serialization.CLOUDPICKLE_INTERNALS): keep cloudpickle in the range pinned in "
        "pyproject.toml, or port nbproc.serialization/_ctypes_classes to the new version"
    )
    # The reduction CloudPickler.reducer_override rewrites for __main__ functions.
    namespace = {"__name__": "__main__"}
    exec("def f(x):\n    return x + 1\n", namespace)
    reduced = cloudpickle.Pickler(io.BytesIO()).reducer_override(namespace["f"])
    shape_ok = (
        isinstance(reduced, tuple)
        and len(reduced) == 6
        and reduced[0] is internals._make_function
        and isinstance(reduced[1][0], types.CodeType)
        and isinstance(reduced[1][1], dict)  # the base globals nbproc swaps for the child's __main__
        and reduced[5] is internals._function_setstate
    )
    assert shape_ok, (
        f"cloudpickle {cloudpickle.__version__} reduces a dynamic function differently "
        f"({type(reduced).__name__} of {len(reduced) if isinstance(reduced, tuple) else '?'}): "
        "nbproc's shared-__main__ rewrite in CloudPickler.reducer_override would silently stop applying"
    )


# -- what gets imported, and when (issue 12: start-up) ------------------------------------------

_HEAVY_AT_IMPORT = ("cloudpickle", "dataclasses", "inspect", "typing", "multiprocessing.pool", "nbproc.popen")


def test_import_nbproc_stays_light():
    """``import nbproc`` loads neither cloudpickle nor what only launching, pools or type
    checkers need (each of these cost milliseconds in every process, workers included)."""
    code = f"import sys, nbproc; print(' '.join(m for m in {_HEAVY_AT_IMPORT!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def test_cloudpickle_is_imported_only_for_classes_by_value():
    """Functions by value (lambdas, closures, ``__main__`` functions) are nbproc's own work
    (nbproc._by_value), on both sides: only a class by value needs cloudpickle."""
    code = """
import sys, os, nbproc
from nbproc import serialization
serialization.loads(serialization.dumps((os.path.join, [1, 2.0], {"a": b"x"}, ValueError("e"))))
print("after importable:", "cloudpickle" in sys.modules)
offset = 1
def outer():
    def closure(x):
        return x + offset + len(os.sep)
    return closure
assert serialization.loads(serialization.dumps([lambda x: x + 1, outer()]))[1](1) == 3
print("after functions:", "cloudpickle" in sys.modules)
class Point:
    pass
serialization.loads(serialization.dumps(Point))
print("after a class:", "cloudpickle" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["after importable: False", "after functions: False", "after a class: True"]


def test_spawned_worker_does_not_import_cloudpickle_for_importable_work():
    """Nor what only a failure needs (traceback: ~3 ms), nor ctypes for its PDEATHSIG (~2 ms)."""
    # eval (a builtin) as the task: the worker does not import this test module (and pytest)
    heavy = ("cloudpickle", "dataclasses", "inspect", "traceback", "ctypes")
    probe = f"[m for m in {heavy!r} if m in __import__('sys').modules]"
    with nbproc.get_context("spawn").Pool(1) as pool:
        assert pool.apply(eval, (probe,)) == []


# -- importable objects stay on the C pickler's path, cloudpickle loaded or not ------------------


def test_importable_classes_and_functions_skip_cloudpickle_once_it_is_loaded(monkeypatch):
    """A message's importable classes and functions go by name without a call into cloudpickle's
    reducer, also once cloudpickle is loaded (in a notebook it always is)."""
    import collections
    import decimal

    core = serialization._load_cloudpickle()
    calls = []
    original = core.Pickler.reducer_override

    def counting(self, obj):
        calls.append(obj)
        return original(self, obj)

    monkeypatch.setattr(core.Pickler, "reducer_override", counting)
    value = (collections.OrderedDict, os.path.join, decimal.Decimal("1.5"), nbproc.Process)
    assert serialization.loads(serialization.dumps(value)) == value
    assert calls == []

    class Local:  # a class by value: cloudpickle's reducer is still asked
        pass

    serialization.dumps(Local)
    assert calls


def test_a_module_registered_with_cloudpickle_by_value_still_goes_by_value(tmp_path, monkeypatch):
    core = serialization._load_cloudpickle()
    (tmp_path / "nbproc_by_value_probe.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import nbproc_by_value_probe as probe

    core.register_pickle_by_value(probe)
    try:
        payload = serialization.dumps(probe.triple)
    finally:
        core.unregister_pickle_by_value(probe)
        del sys.modules["nbproc_by_value_probe"]
    sys.path.remove(str(tmp_path))  # the receiver cannot import the module: only by value works
    assert serialization.loads(payload)(5) == 15
