"""nbproc.remote_error: the carrier keeps frames and text; the receiver renders (cells labelled in a kernel)."""

from __future__ import annotations

import linecache
import multiprocessing.pool
import pickle
import sys
import types

import pytest

import nbproc
from nbproc import remote_error

CELL = "/tmp/ipykernel_0/1234567.py"  # the shape of an ipykernel cell "file"
CELL_SOURCE = "def cell_func(x):\n    raise ValueError(f'bad {x}')\n"


def _cell_function():
    namespace: dict = {}
    exec(compile(CELL_SOURCE, CELL, "exec"), namespace)
    return namespace["cell_func"]


def _raise_chained():
    try:
        raise KeyError("inner")
    except KeyError as exc:
        raise RuntimeError("outer") from exc


def test_outside_a_kernel_the_text_is_the_stdlibs():
    try:
        _raise_chained()
    except RuntimeError as exc:
        carrier = remote_error.capture(exc)
        import traceback

        assert carrier.render() == "".join(traceback.format_exception(exc))
    assert [s.exception_only.strip() for s in carrier.segments] == ["KeyError: 'inner'", "RuntimeError: outer"]
    assert "direct cause" in carrier.segments[0].link
    assert pickle.loads(pickle.dumps(carrier)) == carrier


def test_cause_is_a_stdlib_remote_traceback_and_pickles():
    exc = remote_error.attach(ValueError("x"), "worker text\n")
    assert isinstance(exc.__cause__, multiprocessing.pool.RemoteTraceback)
    assert str(exc.__cause__) == '\n"""\nworker text\n"""'
    again = pickle.loads(pickle.dumps(exc.__cause__))
    assert str(again) == str(exc.__cause__)


def test_pool_error_keeps_type_and_cause(ctx):
    with ctx.Pool(1) as pool:
        with pytest.raises(ZeroDivisionError) as info:
            pool.apply(divmod, (1, 0))
    cause = info.value.__cause__
    assert isinstance(cause, nbproc.pool.RemoteTraceback)
    assert isinstance(cause, multiprocessing.pool.RemoteTraceback)
    assert cause.tb.startswith('\n"""\nTraceback (most recent call last):\n') and cause.tb.endswith('"""')
    assert "ZeroDivisionError" in cause.tb


def test_receiver_renders_cell_frames_the_worker_could_not(monkeypatch):
    """A spawn/forkserver worker has no cell source; the kernel fills in the line and the label."""
    func = _cell_function()
    linecache.cache.pop(CELL, None)
    try:
        func(3)
    except ValueError as exc:
        carrier = pickle.loads(pickle.dumps(remote_error.capture(exc)))  # as the worker sends it
    assert carrier.segments[-1].frames[-1] == remote_error.RemoteFrame(CELL, 2, "cell_func", None)
    assert carrier.render() == carrier.text  # no kernel here: the stdlib's text

    shell = types.SimpleNamespace(compile=types.SimpleNamespace(_filename_map={CELL: 7}))
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.setitem(linecache.cache, CELL, (len(CELL_SOURCE), None, CELL_SOURCE.splitlines(True), CELL))
    text = str(remote_error.attach(ValueError(), carrier).__cause__)
    assert "  Cell In[7], line 2, in cell_func\n    raise ValueError(f'bad {x}')\n" in text
    assert text.endswith('ValueError: bad 3\n"""')
    assert "Traceback (most recent call last):" in text


def test_manager_method_error_keeps_type_and_cause(ctx):
    with ctx.Manager() as manager:
        namespace = manager.Namespace()
        with pytest.raises(AttributeError) as info:
            namespace.missing  # noqa: B018
    assert isinstance(info.value.__cause__, remote_error.RemoteTraceback)
    assert "AttributeError" in str(info.value.__cause__)
