"""nbproc.exceptions: one home per error, re-exported from the old homes and the stdlib's names kept."""

from __future__ import annotations

import builtins
import multiprocessing
import multiprocessing.pool
import pickle

import pytest

import nbproc
from nbproc import connection, exceptions, pool, serialization


def test_stdlib_errors_are_the_stdlibs() -> None:
    for name in ("ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError"):
        assert getattr(exceptions, name) is getattr(multiprocessing, name)
        assert getattr(nbproc, name) is getattr(multiprocessing, name)


@pytest.mark.parametrize(
    "module, names",
    [
        (pool, ["MaybeEncodingError", "WorkerLostError", "InitializerError", "TaskCancelledError"]),
        (serialization, ["SerializationError"]),
        (connection, ["HandshakeTimeoutError", "HandshakeEOFError", "HandshakeMessageError", "TruncatedFrameError"]),
        (nbproc, ["SerializationError", "WorkerLostError", "InitializerError", "TaskCancelledError"]),
    ],
)
def test_old_homes_reexport(module, names) -> None:
    for name in names:
        assert getattr(module, name) is getattr(exceptions, name)
        assert name in module.__all__


def test_hierarchy_catches_what_the_stdlib_raises() -> None:
    assert issubclass(exceptions.MaybeEncodingError, multiprocessing.pool.MaybeEncodingError)
    assert issubclass(exceptions.SerializationError, (pickle.PicklingError, TypeError))
    assert issubclass(exceptions.InitializerError, exceptions.WorkerLostError)
    assert issubclass(exceptions.WorkerLostError, multiprocessing.ProcessError)
    assert issubclass(exceptions.HandshakeTimeoutError, builtins.TimeoutError)
    assert issubclass(exceptions.HandshakeEOFError, (EOFError, multiprocessing.AuthenticationError))


def test_errors_survive_pickling() -> None:
    lost = pickle.loads(pickle.dumps(exceptions.WorkerLostError("gone", pid=12, exitcode=-9)))
    assert (type(lost), lost.pid, lost.exitcode, str(lost)) == (exceptions.WorkerLostError, 12, -9, "gone")
    enc = pickle.loads(pickle.dumps(exceptions.MaybeEncodingError("e", "v")))
    assert str(enc) == str(exceptions.MaybeEncodingError("e", "v"))


def test_leaf_module_imports_nothing_of_nbproc() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(exceptions))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("nbproc")
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("nbproc") for alias in node.names)
