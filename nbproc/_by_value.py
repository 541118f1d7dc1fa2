"""Sending a function by value without cloudpickle: the sender's half of :mod:`nbproc._rebuild`.

Why it exists: a function that the receiver cannot import by name (a notebook cell's, a script's
``__main__`` one, a lambda, a closure) must travel as its code, its defaults, its closure and
the globals it uses. cloudpickle does that, but importing it costs the *sender* 20-40 ms (it
pulls in ``inspect``, ``logging``, ``platform``, ``typing``, ``uuid``...) and ~2 MB that every
child forked afterwards copies and tears down again. Functions are what a pool sends by value
nearly always; classes by value still go through cloudpickle (:mod:`nbproc.serialization`).

What a function becomes (the layout cloudpickle gives it, rebuilt by :mod:`nbproc._rebuild`)::

    _rebuild.function(code, namespace, None, None, empty cells)   the object, memoised before
                                                                  its state: a function that
                                                                  refers to itself resolves
    state = (func.__dict__, {                                     applied by ``setstate``
        __name__, __qualname__, __module__, __doc__, __annotations__, __defaults__,
        __kwdefaults__: the attributes to set,
        __closure__: the closure's cells (their contents go into the new function's cells),
        __globals__: the globals its code (and the code nested in it) reads or writes,
        _cloudpickle_submodules: submodules it reaches as attributes of a package it uses,
                                 listed so that unpickling imports them,
    })

The code object travels as :mod:`marshal` data (as in a ``.pyc``: exact, file name and line
numbers included, so tracebacks point at the source); sender and receiver run the same
interpreter, as cloudpickle's code reduction also requires. Modules travel by name when the
receiver can import them.
"""

from __future__ import annotations

import marshal
import sys
import types
import weakref

from . import _rebuild

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

__all__ = ["reduce_function", "reduce_code", "global_names", "submodules_used"]

# marshal format 2 has no back-references, whose use depends on reference counts: the same code
# always gives the same bytes, so a pool recognises a function it already sent by its payload.
_MARSHAL_VERSION = 2


def reduce_code(code: types.CodeType) -> tuple[Any, tuple[bytes]]:
    return _rebuild.code_from_marshal, (marshal.dumps(code, _MARSHAL_VERSION),)


def reduce_function(func: types.FunctionType, namespace: Any, setstate: Callable[[Any, Any], None]) -> tuple[Any, ...]:
    """The reduce value of ``func`` sent by value (see the module docstring).

    ``namespace`` is what the rebuilt function's globals start as (a dict shared by the
    functions of one module within a message, or a stand-in for the receiver's ``__main__``);
    ``setstate`` applies the state in the receiver.
    """
    code = func.__code__
    closure = func.__closure__
    used = func.__globals__
    referenced = {name: used[name] for name in global_names(code) if name in used}
    contents = list(_cell_values(closure or ()))
    slots = {
        "__name__": func.__name__,
        "__qualname__": func.__qualname__,
        "__annotations__": func.__annotations__,
        "__kwdefaults__": func.__kwdefaults__,
        "__defaults__": func.__defaults__,
        "__module__": func.__module__,
        "__doc__": func.__doc__,
        "__closure__": closure,
        "_cloudpickle_submodules": submodules_used(code, [*referenced.values(), *contents]),
        "__globals__": referenced,
    }
    type_params = getattr(func, "__type_params__", ())  # Python 3.12+: def f[T](...)
    if type_params:
        slots["__type_params__"] = type_params
    new_cells = None if closure is None else tuple(types.CellType() for _ in code.co_freevars)
    state = (dict(func.__dict__), slots)
    return _rebuild.function, (code, namespace, None, None, new_cells), state, None, None, setstate


def _cell_values(cells: tuple[types.CellType, ...]) -> Iterator[Any]:
    """The values in the closure's cells, skipping empty ones (variables not assigned yet)."""
    for cell in cells:
        try:
            yield cell.cell_contents
        except ValueError:
            pass


# -- which globals a code object uses ----------------------------------------------------------

_names_of: weakref.WeakKeyDictionary[types.CodeType, dict[str, None]] = weakref.WeakKeyDictionary()
_global_ops: tuple[int, int, int, int] | None = None  # LOAD/STORE/DELETE_GLOBAL, EXTENDED_ARG


def _opcodes() -> tuple[int, int, int, int]:
    global _global_ops
    if _global_ops is None:
        import opcode  # here, not at import: a process that sends nothing by value never loads it

        names = opcode.opmap
        _global_ops = (names["LOAD_GLOBAL"], names["STORE_GLOBAL"], names["DELETE_GLOBAL"], opcode.EXTENDED_ARG)
    return _global_ops


def global_names(code: types.CodeType) -> dict[str, None]:
    """The names ``code`` and the functions defined in it load, store or delete as globals,
    in order of first use (a dict, for payloads that do not depend on set ordering).

    Read from the bytecode: 2-byte instructions, an ``EXTENDED_ARG`` prefix adding high bits to
    the next argument, and since Python 3.11 ``LOAD_GLOBAL``'s argument being the name's index
    shifted left by one (the low bit says whether a NULL is pushed too). Cached per code object.
    """
    found = _names_of.get(code)
    if found is not None:
        return found
    load, store, delete, extended_arg = _opcodes()
    index_shift = 1 if sys.version_info >= (3, 11) else 0
    names, raw = code.co_names, code.co_code
    found = {}
    high = 0
    for at in range(0, len(raw), 2):
        op, arg = raw[at], raw[at + 1] | high
        high = arg << 8 if op == extended_arg else 0
        if op == load:
            found[names[arg >> index_shift]] = None
        elif op == store or op == delete:
            found[names[arg]] = None
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found.update(global_names(const))
    _names_of[code] = found
    return found


def submodules_used(code: types.CodeType, values: Iterable[Any]) -> list[types.ModuleType]:
    """Loaded submodules that ``code`` can reach as attributes of a package among ``values``.

    ``concurrent.futures.Future`` in a function makes only ``concurrent`` a global; unless
    ``concurrent.futures`` is imported in the receiver too, the attribute is missing there. A
    submodule counts when every part of its name after the package's is a name the code uses.
    """
    attributes = set(code.co_names)
    found = []
    for value in values:
        if not isinstance(value, types.ModuleType) or not getattr(value, "__package__", None):
            continue
        prefix = value.__name__ + "."
        for name in list(sys.modules):  # a copy: another thread may import meanwhile
            if isinstance(name, str) and name.startswith(prefix):
                if set(name[len(prefix) :].split(".")) <= attributes:
                    found.append(sys.modules[name])
    return found
