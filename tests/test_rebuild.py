"""By-value functions rebuild without cloudpickle in the receiver (nbproc._rebuild).

The payload of a lambda, a closure or a ``__main__`` function names only nbproc and the stdlib,
so a process that receives one (a spawned pool worker, above all) does not import cloudpickle
(~10-20 ms). Each function is rebuilt in a fresh interpreter and must behave as the original.
"""

from __future__ import annotations

import functools
import os.path
import pickletools
import subprocess
import sys

import pytest

import nbproc
from nbproc import serialization

SCALE = 10


def _outer(k):
    def inner(y, *, extra=1):
        """doc of inner"""
        return y * k + extra + len(os.path.join("a", "b"))

    inner.tag = "attribute"
    return inner


def _recursive_closure():
    def fact(n):
        return 1 if n < 2 else n * fact(n - 1)

    return fact


def _not_yet_assigned():
    def reads_later():
        return later  # noqa: F821 - assigned after this function is defined

    cell_owner = reads_later
    later = "assigned afterwards"
    return cell_owner


def _uses_module_global(x):
    return x * SCALE


FUNCTIONS = {
    "lambda": (lambda x, y=3: x + y, (1,), 4),
    "closure with defaults, kwdefaults, doc, attribute, module": (_outer(3), (2,), 2 * 3 + 1 + 3),
    "recursive closure": (_recursive_closure(), (5,), 120),
    "cell filled after definition": (_not_yet_assigned(), (), "assigned afterwards"),
    "partial of a lambda": (functools.partial(lambda a, b: a - b, 10), (4,), 6),
}


def _names_in(payload: bytes) -> set[str]:
    """Every string in the pickle: module names of the globals it loads among them."""
    return {arg for op, arg, _ in pickletools.genops(payload) if op.name in ("SHORT_BINUNICODE", "BINUNICODE")}


@pytest.mark.parametrize("label", list(FUNCTIONS))
def test_a_by_value_function_rebuilds_in_a_fresh_interpreter_without_cloudpickle(label):
    func, args, expected = FUNCTIONS[label]
    payload = serialization.dumps(func)
    assert not any(str(name).startswith("cloudpickle") for name in _names_in(payload))
    code = (
        "import sys; from nbproc import serialization; "
        f"f = serialization.loads({payload!r}); "
        f"print(repr(f(*{args!r}))); print('cloudpickle' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [repr(expected), "False"]


def test_the_rebuilt_function_keeps_its_attributes():
    rebuilt = serialization.loads(serialization.dumps(_outer(2)))
    assert (rebuilt.__name__, rebuilt.__qualname__) == ("inner", "_outer.<locals>.inner")
    assert rebuilt.__doc__ == "doc of inner"
    assert rebuilt.__kwdefaults__ == {"extra": 1}
    assert rebuilt.tag == "attribute"
    assert rebuilt(1, extra=0) == 2 + 3


def test_a_module_level_function_of_a_module_sent_by_value_sees_its_globals():
    rebuilt = serialization.loads(serialization.dumps(lambda x: _uses_module_global(x) + SCALE))
    assert rebuilt(2) == 30


def test_a_spawned_worker_runs_a_lambda_without_importing_cloudpickle():
    with nbproc.get_context("spawn").Pool(1) as pool:
        assert pool.map(lambda _: "cloudpickle" in sys.modules, [0]) == [False]
