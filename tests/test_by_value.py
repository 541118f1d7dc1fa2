"""Functions sent by value without cloudpickle (nbproc._by_value), checked against cloudpickle.

nbproc reduces a function the receiver cannot import (a lambda, a closure, a ``__main__`` or
notebook function) itself, in cloudpickle's layout, so that neither side imports cloudpickle for
it. These tests compare the result with cloudpickle's, which is the reference for what such a
function must carry: the same globals found in the bytecode, the same submodules, the same
behaviour once rebuilt.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import inspect
import os
import subprocess
import sys
import textwrap
import types

import cloudpickle
import pytest
from cloudpickle import cloudpickle as cloudpickle_core

from nbproc import _by_value, serialization

COUNTER = 0
SCALE = 3


def _child_env() -> dict[str, str]:
    """For a fresh interpreter: this checkout and the test's own path importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(__file__)), *sys.path])}


def _roundtrip(obj):
    return serialization.loads(serialization.dumps(obj))


def _functions_of(module_names):
    for name in module_names:
        module = importlib.import_module(name)
        for _, value in vars(module).items():
            if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
                yield value
            elif isinstance(value, type) and value.__module__ == module.__name__:
                for member in vars(value).values():
                    if isinstance(member, types.FunctionType):
                        yield member


CORPUS = ["json.decoder", "json.encoder", "email.utils", "collections", "asyncio.tasks", "argparse", "dataclasses"]


def test_globals_found_in_the_bytecode_are_cloudpickles():
    """The bytecode scan (EXTENDED_ARG, LOAD_GLOBAL's shifted argument since 3.11, nested code)
    finds exactly the names cloudpickle's dis-based scan finds, over real stdlib code."""
    functions = list(_functions_of(CORPUS))
    assert len(functions) > 300
    differing = [
        f.__qualname__
        for f in functions
        if list(_by_value.global_names(f.__code__)) != list(cloudpickle_core._extract_code_globals(f.__code__))
    ]
    assert differing == []


def test_extended_arguments_reach_every_global():
    names = [f"g{i}" for i in range(300)]  # indexes above 255 need EXTENDED_ARG
    source = "def many():\n    return [" + ", ".join(names) + "]\n"
    namespace: dict = {name: i for i, name in enumerate(names)}
    exec(source, namespace)
    found = _by_value.global_names(namespace["many"].__code__)
    assert list(found) == names == list(cloudpickle_core._extract_code_globals(namespace["many"].__code__))
    assert _roundtrip(namespace["many"])() == list(range(300))


def _make_cases():
    def with_defaults(a, b=2, *, c=SCALE) -> int:
        """doc kept"""
        return a + b + c

    with_defaults.tag = "attribute"

    items = [1, 2]

    def closure():
        return sum(items) * SCALE

    def uses_a_submodule():
        return concurrent.futures.Future.__name__  # only `concurrent` is a global

    def counts():
        global COUNTER
        COUNTER += 1
        return COUNTER

    def nested(x):
        def inner(y):
            return y * SCALE + len(os.sep)

        return inner(x)

    def recursive(n):
        return 1 if n <= 1 else n * recursive(n - 1)

    def generator(n):
        yield from range(n)

    async def coroutine():
        return SCALE

    def later():
        return assigned_later

    empty_at_pickling = later  # its cell is still empty here
    assigned_later = "filled"  # noqa: F841 - read through the closure

    return {
        "defaults": (with_defaults, lambda f: (f(1), f(1, 1, c=0), f.__doc__, f.tag, f.__annotations__)),
        "lambda": (lambda x, *, k=4: x * k, lambda f: (f(2), f(2, k=1))),
        "closure": (closure, lambda f: f()),
        "submodule": (uses_a_submodule, lambda f: f()),
        "store_global": (counts, lambda f: f() - COUNTER),
        "nested": (nested, lambda f: f(2)),
        "recursive": (recursive, lambda f: f(5)),
        "generator": (generator, lambda f: list(f(3))),
        "coroutine": (coroutine, lambda f: inspect.iscoroutinefunction(f)),
        "empty_cell": (empty_at_pickling, lambda f: f.__closure__[0].cell_contents),
    }


@pytest.mark.parametrize("case", sorted(_make_cases()))
def test_a_function_rebuilds_as_cloudpickles_does(case):
    func, probe = _make_cases()[case]
    ours = _roundtrip(func)
    theirs = cloudpickle.loads(cloudpickle.dumps(func))
    assert probe(ours) == probe(theirs)
    for attribute in ("__name__", "__qualname__", "__module__", "__doc__", "__defaults__", "__kwdefaults__"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert ours.__code__ == func.__code__  # marshal gives the same code, file name and lines included
    assert ours.__code__.co_filename == func.__code__.co_filename
    assert set(ours.__globals__) - {"__builtins__"} >= set(theirs.__globals__) - {"__builtins__"}


def test_functions_of_one_namespace_share_it_within_a_message():
    namespace: dict = {"__name__": "made_up_module"}
    exec("STATE = []\ndef add(x):\n    STATE.append(x)\ndef read():\n    return list(STATE)\n", namespace)
    add, read = _roundtrip([namespace["add"], namespace["read"]])
    add(1)
    assert read() == [1]  # one namespace, as in the sender
    add_again = _roundtrip(namespace["add"])  # another message: a namespace of its own
    add_again(2)
    assert read() == [1]


def test_the_receiver_imports_a_submodule_the_function_reaches_by_attribute(tmp_path):
    """``concurrent.futures.Future`` makes only ``concurrent`` a global: the payload lists the
    submodule, so a receiver that never imported it still finds the attribute."""

    def future_name():
        return concurrent.futures.Future.__name__

    payload = tmp_path / "payload.bin"
    payload.write_bytes(serialization.dumps(future_name))
    code = textwrap.dedent(
        f"""
        import sys
        from nbproc import serialization
        assert "concurrent.futures" not in sys.modules
        func = serialization.loads(open({str(payload)!r}, "rb").read())
        print(func(), "cloudpickle" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Future", "False"]


def test_the_same_function_gives_the_same_payload():
    """A pool recognises a function it already sent by its payload's bytes."""
    offset = 5

    def shifted(x):
        return x + offset + SCALE

    assert serialization.dumps(shifted) == serialization.dumps(shifted)


def test_a_function_using_a_typevar_pickles_when_typing_comes_after_nbproc():
    """A TypeVar travels by value through cloudpickle (it is rarely importable by name); nbproc
    recognises one whenever typing was imported, not only before nbproc."""
    code = textwrap.dedent(
        """
        import sys
        import nbproc
        from nbproc import serialization
        assert "typing" not in sys.modules
        from typing import TypeVar

        def make():
            T = TypeVar("T")

            def ident(x: T) -> T:
                return x

            return ident

        rebuilt = serialization.loads(serialization.dumps(make()))
        print(rebuilt(3), rebuilt.__annotations__["x"].__name__)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "T"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="type parameter syntax (PEP 695) is Python 3.12+")
def test_a_generic_function_keeps_its_type_parameters():
    namespace: dict = {"__name__": "made_up_module"}
    exec("def first[T](items: list[T]) -> T:\n    return items[0]\n", namespace)
    rebuilt = _roundtrip(namespace["first"])
    assert rebuilt([4, 5]) == 4
    assert [p.__name__ for p in rebuilt.__type_params__] == ["T"]


def test_a_code_object_with_a_constant_marshal_refuses_still_travels():
    """Bytecode tools may put any object among a code object's constants; marshal writes only
    the compiler's kinds, so such code goes through cloudpickle's reduction (constants pickled)."""
    import decimal

    def price():
        return 1.5

    consts = tuple(decimal.Decimal("1.5") if c == 1.5 else c for c in price.__code__.co_consts)
    price.__code__ = price.__code__.replace(co_consts=consts)
    assert _roundtrip(price)() == decimal.Decimal("1.5")
