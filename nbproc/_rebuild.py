"""Rebuilding by-value functions in the receiver without importing cloudpickle.

Why it exists: a function sent by value (a notebook cell's, a script's ``__main__`` one, a
lambda or a closure) would otherwise be rebuilt by cloudpickle's functions, so the receiver
would import cloudpickle to unpickle it: 20-40 ms per process (it pulls in ``inspect``,
``logging``, ``platform``, ``typing``, ``uuid``), paid by every spawned pool worker before its
first task. The rebuild itself needs nothing of that: it makes a code object, a function,
cells, and sets attributes.

:mod:`nbproc._by_value` reduces such a function to the functions below, in cloudpickle's state
layout, so its payload names nbproc and the stdlib only. Anything else sent by value (a class,
a dynamic module, a ``TypeVar``...) still names cloudpickle, which the receiver then imports by
itself.

This module imports only the stdlib's always-loaded modules: it is imported in every receiver.
"""

from __future__ import annotations

import builtins
import marshal
import sys
import types

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["code_from_marshal", "function", "empty_cell", "cell", "set_function_state", "module"]


def code_from_marshal(data: bytes) -> types.CodeType:
    """A code object from its :mod:`marshal` data (written by :mod:`nbproc._by_value`)."""
    return marshal.loads(data)


def function(
    code_object: types.CodeType, namespace: dict[str, Any], name: str, defaults: Any, closure: Any
) -> types.FunctionType:
    """The function object, before its state (attributes, globals' values, cells) is set."""
    namespace.setdefault("__builtins__", builtins.__dict__)
    return types.FunctionType(code_object, namespace, name, defaults, closure)


def empty_cell() -> types.CellType:
    """A cell to be filled later (the function's own cells, filled from its state)."""
    return types.CellType()


def cell(value: Any) -> types.CellType:
    return types.CellType(value)


def set_function_state(func: types.FunctionType, state: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Apply cloudpickle's function state: ``(func.__dict__, slots)``.

    ``slots`` holds the attributes to set, and three entries that are not attributes:
    ``__globals__`` (values to add to the function's globals), ``__closure__`` (cells whose
    contents go into the function's own cells: a function's closure cannot be replaced) and
    ``_cloudpickle_submodules`` (modules the function uses, listed only so that unpickling
    imported them).
    """
    attributes, slots = state
    func.__dict__.update(attributes)
    slots = dict(slots)
    func.__globals__.update(slots.pop("__globals__"))
    func.__globals__.setdefault("__builtins__", builtins.__dict__)
    closure = slots.pop("__closure__")
    slots.pop("_cloudpickle_submodules", None)
    if closure is not None:
        for own, sent in zip(func.__closure__ or (), closure, strict=False):
            try:
                own.cell_contents = sent.cell_contents
            except ValueError:  # sent empty (a variable not assigned yet): stays empty
                pass
    for name, value in slots.items():
        setattr(func, name, value)


def module(name: str) -> types.ModuleType:
    """An importable module, imported if needed (``__import__`` alone returns the top package)."""
    __import__(name)
    return sys.modules[name]
