"""The one place where nbproc turns objects into bytes and back.

Why this module exists: the stdlib pickles functions and classes *by reference* (module +
qualified name). A notebook cell's function lives in ``__main__``, which a spawned or
forkserver child cannot import, and lambdas/closures never pickle at all. nbproc pickles with
cloudpickle's reductions instead: importable objects still go through the C pickler by
reference, interactive ones travel by value.

cloudpickle itself is imported only when a class (or a ``TypeVar``, a property...) must travel
by value (``_load_cloudpickle``): the pickler is the C pickler, whose ``reducer_override``
answers "by reference" on its own for every function and class it can find by name in an
imported module (what cloudpickle would decide too), and reduces functions by value itself
(:mod:`nbproc._by_value`, rebuilt by :mod:`nbproc._rebuild`). So neither a pool's parent nor
its workers pay cloudpickle's import (20-40 ms: it pulls in ``inspect``, ``dataclasses``,
``logging``, ``platform``, ``uuid``) for lambdas, closures and ``__main__`` functions;
unpickling a class sent by value imports it by itself, since the payload names cloudpickle's
constructors.

Everything that crosses a process boundary in nbproc — Process objects at start, Connection
``send``/``recv``, queue items, pool tasks and results, manager messages — calls :func:`dumps`
/ :func:`loads` here, looked up at call time, so :func:`set_serializer` reaches all of them.

Failures name their culprit: a :class:`SerializationError` says which argument, attribute or
closure variable could not be pickled ("argument 1 of Process target: attribute `conn` of
`MyState`: cannot pickle '_thread.lock' object").
"""

from __future__ import annotations

import abc
import copyreg
import io
import os
import pickle
import reprlib
import sys
import threading
import types
from _weakrefset import WeakSet  # weakref.WeakSet itself, without importing weakref
from collections import ChainMap, OrderedDict
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler

from . import _rebuild
from .exceptions import SerializationError

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

#: The private parts of ``cloudpickle.cloudpickle`` that nbproc relies on (here and in
#: ``_ctypes_classes``), for the supported range pinned in pyproject.toml. The test suite checks
#: they are still there, so an upgrade that moves them fails loudly rather than silently
#: dropping class identities or by-value modules.
CLOUDPICKLE_INTERNALS = (
    "_module_reduce",  # a module the receiver cannot import (made at run time): by value
    "_code_reduce",  # a code object marshal refuses (a constant put there by a bytecode tool)
    "_get_or_create_tracker_id",  # give __main__ classes their identity before a fork
    "_should_pickle_by_reference",  # ctypes classes: importable ones travel by name
    "_lookup_class_or_track",  # ctypes classes: one class per identity in the receiver
    "_PICKLE_BY_VALUE_MODULES",  # register_pickle_by_value's registry: importable, yet by value
)

__all__ = [
    "SerializationError",
    "dumps",
    "loads",
    "dump",
    "load",
    "register",
    "set_serializer",
    "get_serializer",
    "PROTOCOL",
]

#: Protocol 5 gives out-of-band buffers (PEP 574) for large binary payloads.
PROTOCOL = 5

# Reducers for process-shared objects (connections, locks, sockets...). The stdlib's
# ForkingPickler keeps its own in ``_extra_reducers`` (sockets, connections, methods);
# we consult ours first, then those, then cloudpickle's and copyreg's.
_registry: dict[type, Callable[[Any], Any]] = {}


def register(type_: type, reducer: Callable[[Any], Any]) -> None:
    """Register ``reducer(obj) -> (callable, args)`` for instances of ``type_``.

    Used for objects that are shared between processes rather than copied (connections,
    semaphores, file descriptors): their reducer duplicates the handle for the child.
    """
    _registry[type_] = reducer


_MAIN_MODULES = ("__main__", "__mp_main__")


def _main_globals() -> dict[str, Any]:
    """In the loading process: the namespace of its ``__main__`` module."""
    return sys.modules["__main__"].__dict__


class _MainGlobalsRef:
    """Pickles as "the loading process's ``__main__`` namespace"."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _main_globals, ()


_MAIN_GLOBALS_REF = _MainGlobalsRef()


def _is_main_definition(value: Any) -> bool:
    return isinstance(value, types.FunctionType | type) and getattr(value, "__module__", None) in _MAIN_MODULES


def _setstate_in_main(func: types.FunctionType, state: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Install a by-value ``__main__`` function's globals into the child's ``__main__``.

    The stdlib finds a ``__main__`` function by reference in the child's main module (a fork
    copy, or the script re-run as ``__mp_main__``), so every such function shares one module
    namespace there: an initializer that sets a global is seen by the task function. Plain
    cloudpickle gives each pickled function a private globals dict, which breaks that pattern.
    We keep the stdlib's semantics: definitions (functions and classes of ``__main__``) follow
    the parent's current ones; other values are installed only where the child has none yet,
    so state the child set itself (``global STATE`` in an initializer) is not clobbered.
    """
    func_state, slotstate = state
    namespace = func.__globals__
    for name, value in slotstate["__globals__"].items():
        if name not in namespace or _is_main_definition(value):
            namespace[name] = value
    _rebuild.set_function_state(func, (func_state, {**slotstate, "__globals__": {}}))


def _main_classes() -> list[type]:
    main = sys.modules.get("__main__")
    if main is None:
        return []
    return [v for v in list(vars(main).values()) if isinstance(v, type) and v.__module__ in _MAIN_MODULES]


def _tag_main_classes_before_fork() -> None:
    """Give every class of ``__main__`` its cloudpickle identity before a fork.

    cloudpickle recognises a by-value class coming back as one it already has by a tracker id
    assigned the first time the class is pickled *in that process*. A forked child that sends
    back an instance of a ``__main__`` class the parent never pickled would assign a fresh id,
    and the parent would rebuild a second class: ``isinstance`` fails, unlike the stdlib (which
    finds the class by name). Tagging before the fork makes parent and child agree. Classes
    defined inside functions are not reachable here and keep cloudpickle's behaviour.

    Runs inside ``os.fork()``: it must not import anything (a module imported here, such as
    logging, would register fork handlers halfway through the fork). nbproc's own fork start
    loads cloudpickle beforehand when ``__main__`` has classes (:func:`prepare_fork`).
    """
    module = _cloudpickle_module or sys.modules.get("cloudpickle.cloudpickle")
    tag = getattr(module, "_get_or_create_tracker_id", None)
    if tag is not None:
        for cls in _main_classes():
            tag(cls)


def prepare_fork() -> None:
    """Before nbproc forks a child: load cloudpickle if ``__main__`` defines classes, so that the
    fork can tag them (see :func:`_tag_main_classes_before_fork`). Once per process at most;
    a ``__main__`` without classes (most scripts) never pays for it."""
    if _cloudpickle_module is None and _main_classes():
        _load_cloudpickle()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_tag_main_classes_before_fork)


def _reduce_code(code: types.CodeType) -> Any:
    """A code object, as its marshal data (see :mod:`nbproc._by_value`): exact, with its real
    file name and line numbers, so a child's traceback through a script's ``__main__`` function
    shows the file and the line, as the stdlib's (which re-imports the script) does.
    (cloudpickle 3 would write every by-value code object's file name as ``"<dynamic-code>"``.)

    A code object holding a constant marshal cannot write (put there by a bytecode tool, never
    by the compiler) goes through cloudpickle's reduction instead, constants pickled."""
    from . import _by_value

    try:
        return _by_value.reduce_code(code)
    except ValueError:  # "unmarshallable object"
        return _load_cloudpickle()._code_reduce(code)


def _reduce_cell(cell: types.CellType) -> Any:
    """A closure cell, rebuilt without cloudpickle (see :mod:`nbproc._rebuild`)."""
    try:
        return _rebuild.cell, (cell.cell_contents,)
    except ValueError:  # empty: a free variable not assigned yet
        return _rebuild.empty_cell, ()


def _reduce_module(module: types.ModuleType) -> Any:
    """A module a function uses: by name when the receiver can import it (cloudpickle's rule: it
    is in ``sys.modules`` and not registered to go by value), rebuilt without cloudpickle; else
    by value, through cloudpickle."""
    if module.__name__ in sys.modules and not _registered_by_value(module.__name__):
        return _rebuild.module, (module.__name__,)
    return _load_cloudpickle()._module_reduce(module)


#: Types nbproc reduces itself, whether cloudpickle is loaded or not: what a by-value function
#: is made of (its code, its cells, the modules it uses), rebuilt through nbproc._rebuild.
_OWN_REDUCERS: dict[type, Callable[[Any], Any]] = {
    types.CodeType: _reduce_code,
    types.CellType: _reduce_cell,
    types.ModuleType: _reduce_module,
}


# -- loading cloudpickle on first need ------------------------------------------------------
#
# What the pickler reduces itself, and what sends it to cloudpickle:
#   * functions and classes: by reference (the C pickler's ``save_global``) when they are found
#     under their qualified name in an imported module other than ``__main__``/``__mp_main__``
#     and cloudpickle's by-value registry does not name the module -- cloudpickle's own rule
#     (``_should_pickle_by_reference``).
#   * other functions: by value, by nbproc itself (nbproc._by_value), in cloudpickle's layout;
#     their code, cells and modules through _OWN_REDUCERS.
#   * other classes, and the types cloudpickle has reducers for (``_CLOUDPICKLE_TYPES``:
#     properties, dict views, method objects...): cloudpickle, loaded on first need; its
#     reducers then join the dispatch table.

_cloudpickle_module: Any = None  # cloudpickle.cloudpickle, once imported
# The dispatch table of nbproc's pickler: process-shared objects first, then the stdlib's
# (sockets, connections), then nbproc's own reducers (code, cells, modules), then (inserted on
# load) cloudpickle's reducers, then copyreg's.
_DISPATCH = ChainMap(_registry, ForkingPickler._extra_reducers, _OWN_REDUCERS, copyreg.dispatch_table)
_CLOUDPICKLE_TYPES: frozenset[type] = frozenset(
    {
        classmethod, staticmethod, property,
        types.GetSetDescriptorType, types.MethodType, types.MappingProxyType,
        WeakSet, io.TextIOWrapper,
        type({}.keys()), type({}.values()), type({}.items()),
        type(OrderedDict().keys()), type(OrderedDict().values()), type(OrderedDict().items()),
        abc.abstractmethod, abc.abstractclassmethod, abc.abstractstaticmethod, abc.abstractproperty,
    }
)  # fmt: skip
# Not listed: ``memoryview``, which nbproc reduces itself (below); ``typing.TypeVar``, checked
# by name (typing may be imported after nbproc, which does not import it); and (left to the
# plain pickler until cloudpickle is loaded) ``logging.Logger``, which pickles by name either
# way, and dataclasses' field markers, met only inside a class that travels by value, by which
# time cloudpickle is loaded.


def _reduce_memoryview(view: memoryview) -> tuple[Any, tuple[Any, ...]]:
    """A memoryview travels as its bytes and comes back as a memoryview of the same format and
    shape (cloudpickle sends ``bytes``; the stdlib cannot pickle it). A contiguous one is handed
    over as a protocol-5 buffer, so a large one goes out of band like an array's memory."""
    data = pickle.PickleBuffer(view) if view.c_contiguous else view.tobytes()
    return _rebuild_memoryview, (data, view.format, view.shape)


def _rebuild_memoryview(data: Any, fmt: str, shape: tuple[int, ...]) -> memoryview:
    view = memoryview(data)
    try:
        return view.cast("B").cast(fmt, shape)
    except (TypeError, ValueError):  # a format or shape cast() cannot express: the bytes, flat
        return view.cast("B")


register(memoryview, _reduce_memoryview)


def _load_cloudpickle() -> Any:
    """Import cloudpickle (once) and give nbproc's pickler its reducers; returns its module."""
    global _cloudpickle_module
    if _cloudpickle_module is None:
        from cloudpickle import cloudpickle as module

        table = getattr(module.Pickler, "_dispatch_table", None)
        # After ours (_OWN_REDUCERS): code, cells and modules stay nbproc's.
        _DISPATCH.maps.insert(3, table if table is not None else module.Pickler.dispatch_table)
        _cloudpickle_module = module
    return _cloudpickle_module


def _found_by_reference(obj: Any) -> bool:
    """Whether ``obj`` (a function or class) is what its module holds under its qualified name,
    in a module that the receiver can import — i.e. cloudpickle would also pickle it by name."""
    module_name = getattr(obj, "__module__", None)
    if module_name is None or module_name in _MAIN_MODULES:
        return False
    found: Any = sys.modules.get(module_name)
    if found is None:
        return False
    for part in obj.__qualname__.split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is obj


def _registered_by_value(module_name: str) -> bool:
    """Whether cloudpickle was asked to send this module's objects by value
    (``cloudpickle.register_pickle_by_value``, for the module or a package above it)."""
    core = sys.modules.get("cloudpickle.cloudpickle")
    if core is None:
        return False  # cloudpickle was never imported: nothing can be registered
    registry = getattr(core, "_PICKLE_BY_VALUE_MODULES", None)
    if registry is None:
        return False  # a cloudpickle without that registry (outside the pinned range): none
    return bool(registry) and any(module_name == name or module_name.startswith(name + ".") for name in registry)


class CloudPickler(pickle.Pickler):
    """nbproc's pickler: the C pickler, with cloudpickle's by-value reductions for interactive
    functions and classes (cloudpickle imported on first need, see above), the reducers for
    process-shared objects, and ``__main__`` functions that share the loading process's
    ``__main__`` namespace (see :func:`_setstate_in_main`)."""

    dispatch_table = _DISPATCH

    def __init__(self, file: Any, protocol: int | None = PROTOCOL, buffer_callback: Any = None) -> None:
        super().__init__(file, protocol, buffer_callback=buffer_callback)
        self._cloud: Any = None  # a cloudpickle.Pickler whose reductions we borrow (classes by value)
        self._namespaces: dict[int, dict[str, Any]] = {}  # by-value functions' globals, per module, per dump

    def dump(self, obj: Any) -> None:
        try:
            super().dump(obj)
        except RecursionError as exc:  # as cloudpickle reports it
            raise pickle.PicklingError("Could not pickle object as excessively deep recursion required.") from exc
        finally:
            # one globals dict per module namespace *within* a message only (as cloudpickle)
            self._namespaces.clear()

    def reducer_override(self, obj: Any) -> Any:
        # Called by the C pickler for every object that is not a builtin container or scalar:
        # return early for what neither we nor cloudpickle reduce, which keeps importable data
        # at the C pickler's speed.
        kind = type(obj)
        if kind in _CLOUDPICKLE_TYPES:
            _load_cloudpickle()  # its reducer is now in the dispatch table, consulted next
            return NotImplemented
        if kind is not types.FunctionType and not issubclass(kind, type):
            if kind.__name__ == "TypeVar" and kind.__module__ == "typing":
                _load_cloudpickle()  # by value, as cloudpickle sends them (a TypeVar is rarely importable)
            return NotImplemented
        if kind.__module__ == "_ctypes":
            from . import _ctypes_classes

            if _ctypes_classes.is_ctypes_class(obj):
                # cloudpickle cannot rebuild a notebook-defined ctypes Structure (see the module).
                ctypes_reduced = _ctypes_classes.reduce_ctypes_class(obj)
                if ctypes_reduced is not NotImplemented:
                    return ctypes_reduced
        if _found_by_reference(obj) and not _registered_by_value(obj.__module__):
            # Importable: by name, as cloudpickle would, at the C pickler's speed — also once
            # cloudpickle is loaded (in a notebook, always), where asking its reducer cost every
            # class in a message (a process object's payload has ten) several microseconds.
            return NotImplemented
        if kind is types.FunctionType:
            return self._function_by_value(obj)
        if self._cloud is None:
            self._cloud = _load_cloudpickle().Pickler(io.BytesIO(), PROTOCOL)
        return self._cloud.reducer_override(obj)

    def _function_by_value(self, func: types.FunctionType) -> Any:
        """A function the receiver cannot import (nbproc._by_value). A ``__main__`` function
        gets the receiver's ``__main__`` namespace (see :func:`_setstate_in_main`); the others of
        one module share one namespace within a message, as they shared their module."""
        from . import _by_value

        if func.__module__ in _MAIN_MODULES:
            return _by_value.reduce_function(func, _MAIN_GLOBALS_REF, _setstate_in_main)
        namespace = self._namespaces.get(id(func.__globals__))
        if namespace is None:
            # What a relative import inside the function resolves against.
            keys = ("__package__", "__name__", "__path__", "__file__")
            namespace = {key: func.__globals__[key] for key in keys if key in func.__globals__}
            self._namespaces[id(func.__globals__)] = namespace
        return _by_value.reduce_function(func, namespace, _rebuild.set_function_state)


_dill_pickler_class: type | None = None


def _save_module_by_reference(pickler: Any, module: types.ModuleType) -> None:
    """dill pickles every module outside ``sys.prefix`` *by value* (its whole ``__dict__``),
    which fails for modules holding locks or structs (nbproc itself, a project's own
    packages). A module that the child can import travels by name, as with cloudpickle;
    only ``__main__`` keeps dill's by-value treatment.
    """
    import dill

    if module.__name__ in ("__main__", "__mp_main__"):
        dill._dill.save_module(pickler, module)
    else:
        import importlib

        pickler.save_reduce(importlib.import_module, (module.__name__,), obj=module)


def _DillPickler(file: Any, protocol: int = PROTOCOL, buffer_callback: Any = None) -> Any:
    """dill's Pickler with nbproc's reducers and by-reference importable modules."""
    global _dill_pickler_class
    if _dill_pickler_class is None:
        import dill

        class DillPickler(dill.Pickler):
            dispatch = {**dill.Pickler.dispatch, types.ModuleType: _save_module_by_reference}
            dispatch_table = ChainMap(_registry, ForkingPickler._extra_reducers, copyreg.dispatch_table)

        _dill_pickler_class = DillPickler
    return _dill_pickler_class(file, protocol=protocol, buffer_callback=buffer_callback, recurse=True)


class _PlainPickler(pickle.Pickler):
    """The stdlib's behaviour (by reference only), selectable for comparison and speed."""

    dispatch_table = ChainMap(_registry, ForkingPickler._extra_reducers, copyreg.dispatch_table)


_PICKLERS: dict[str, Callable[..., Any]] = {
    "cloudpickle": CloudPickler,
    "dill": _DillPickler,
    "pickle": _PlainPickler,
}
_current_name = "cloudpickle"
_current_pickler: Callable[..., Any] = CloudPickler


def set_serializer(name: str) -> None:
    """Choose the serializer for everything nbproc sends: ``cloudpickle`` (default),
    ``dill`` or ``pickle`` (the stdlib's by-reference behaviour).

    The choice is per process; children started afterwards inherit it (it travels with the
    start-up data). Any of the three can *load* what the others wrote, since the by-value
    constructors are importable functions of cloudpickle/dill.
    """
    global _current_name, _current_pickler
    if name not in _PICKLERS:
        raise ValueError(f"unknown serializer {name!r}; choose one of {sorted(_PICKLERS)}")
    if name == "dill":
        try:
            import dill  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ValueError("the 'dill' serializer needs the dill package: pip install nbproc[dill]") from exc
    _current_name = name
    _current_pickler = _PICKLERS[name]


def get_serializer() -> str:
    """Name of the serializer in use in this process."""
    return _current_name


# Exact types whose pickle is the same whichever serializer is chosen and that can never fail
# or carry out-of-band buffers. Small messages made only of these (queue items, results such as
# ints, strings, short tuples) skip building a cloudpickle Pickler, which costs ~2 µs a call —
# most of a small item's serialization time. Flat containers only, and short ones: checking a
# long or nested container would cost more than it saves.
_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})
_PLAIN_MAX_ITEMS = 8


def _is_plain_data(obj: Any) -> bool:
    kind = type(obj)
    if kind in _PLAIN_TYPES:
        return True
    if kind is tuple or kind is list:
        if len(obj) > _PLAIN_MAX_ITEMS:
            return False
        for item in obj:
            if type(item) not in _PLAIN_TYPES:
                return False
        return True
    return False


def dumps(obj: Any, *, what: str | None = None, buffer_callback: Callable[[Any], Any] | None = None) -> bytes:
    """Serialize ``obj``; on failure raise :class:`SerializationError` naming the culprit.

    ``what`` describes ``obj`` for the error message (e.g. ``"Queue item"``). With
    ``buffer_callback`` large contiguous buffers (numpy arrays, ``pickle.PickleBuffer``...) are handed to the
    callback instead of being copied into the stream (protocol 5 out-of-band data).
    """
    if _is_plain_data(obj):
        return pickle.dumps(obj, PROTOCOL)
    current = getattr(_tls, "pickler", None)
    if current is not None and current.factory is _current_pickler and not current.busy:
        pickler = current
    else:
        # First use on this thread, a serializer change, or a dumps() nested in a reducer
        # (the thread's pickler is busy: use a fresh one and keep the cached one).
        pickler = _ReusablePickler(_current_pickler)
        if current is None or not current.busy:
            _tls.pickler = pickler
    try:
        return pickler.dump(obj, buffer_callback)
    except SerializationError:
        raise
    except Exception as exc:
        raise _explain(obj, what, exc) from exc


_tls = threading.local()


class _ReusablePickler:
    """One pickler and output buffer per thread, reset between messages.

    Building a cloudpickle Pickler costs about 2 µs (a Python-level ``__init__``), a large
    share of a small message's serialization; reusing it keeps nbproc near the stdlib's
    per-message cost. The buffer callback is bound at construction, so the pickler gets a
    trampoline that forwards to the current call's callback (or keeps buffers in band).
    """

    def __init__(self, factory: Callable[..., Any]) -> None:
        self.factory = factory
        self.busy = False
        self.callback: Callable[[Any], Any] | None = None
        self.buf = io.BytesIO()
        self.pickler = factory(self.buf, PROTOCOL, buffer_callback=self._forward)

    def _forward(self, buffer: pickle.PickleBuffer) -> Any:
        return True if self.callback is None else self.callback(buffer)

    def dump(self, obj: Any, callback: Callable[[Any], Any] | None) -> bytes:
        self.busy = True
        self.callback = callback
        try:
            self.pickler.dump(obj)
            return self.buf.getvalue()
        except BaseException:
            # A failed dump may leave the pickler mid-frame: never reuse it.
            if getattr(_tls, "pickler", None) is self:
                _tls.pickler = None
            raise
        finally:
            self.busy = False
            self.callback = None
            self.buf.seek(0)
            self.buf.truncate()
            self.pickler.clear_memo()


def dump(obj: Any, file: Any, *, what: str | None = None) -> None:
    """Serialize ``obj`` into ``file`` (see :func:`dumps`)."""
    file.write(dumps(obj, what=what))


def loads(data: Any, *, buffers: Any = None) -> Any:
    """Rebuild an object from :func:`dumps` output (any serializer's)."""
    return pickle.loads(data, buffers=buffers)


def load(file: Any) -> Any:
    """Read one object from ``file``."""
    return pickle.load(file)


# --------------------------------------------------------------------------------------
# Finding the culprit. Only runs after a failure, so it may be slow.
# --------------------------------------------------------------------------------------

_MAX_DEPTH = 12  # deep enough for real object graphs, shallow enough to stay quick on cycles


def _try_dump(obj: Any) -> Exception | None:
    try:
        _current_pickler(io.BytesIO(), PROTOCOL).dump(obj)
    except Exception as exc:  # noqa: BLE001 - we report whatever the pickler raised
        return exc
    return None


def _parts(obj: Any) -> Iterator[tuple[str, Any]]:
    """The labelled components of ``obj`` that the pickler would visit.

    Reads only what is there: a started Process has no ``_target``/``_args``/``_kwargs`` any
    more (``start()`` deletes them), a closed one no popen, and proxies or user objects may
    raise from any attribute; :func:`_safe_parts` stops the walk of an object that raises.
    """
    if isinstance(obj, BaseProcess):
        state = vars(obj)
        if "_target" in state:
            yield "Process target", state["_target"]
        for i, arg in enumerate(state.get("_args", ())):
            yield f"argument {i + 1} of Process target", arg
        for key, value in dict(state.get("_kwargs", {})).items():
            yield f"keyword argument `{key}` of Process target", value
        for attr, value in list(state.items()):
            if attr not in ("_target", "_args", "_kwargs"):
                yield f"attribute `{attr}` of `{_type_name(obj)}`", value
    elif isinstance(obj, tuple | list):
        for i, item in enumerate(obj):
            yield f"item {i}", item
    elif isinstance(obj, dict):
        for key, value in list(obj.items()):
            yield f"key {_short_repr(key)}", key
            yield f"value for key {_short_repr(key)}", value
    elif isinstance(obj, set | frozenset):
        for item in obj:
            yield f"element {_short_repr(item)}", item
    elif callable(obj) and hasattr(obj, "__code__"):
        name = getattr(obj, "__qualname__", "?")
        code = obj.__code__
        for var, cell in zip(code.co_freevars, obj.__closure__ or (), strict=False):
            try:
                yield f"closure variable `{var}` of function `{name}`", cell.cell_contents
            except ValueError:  # empty cell
                continue
        for var in code.co_names:
            if var in obj.__globals__:
                yield f"global `{var}` of function `{name}`", obj.__globals__[var]
    elif not isinstance(obj, types.ModuleType) and _pickles_its_dict(obj):
        state = object.__getattribute__(obj, "__dict__")  # not a class's ``__getattr__``
        if isinstance(state, dict):
            for attr, value in list(state.items()):
                yield f"attribute `{attr}` of `{_type_name(obj)}`", value


def _safe_parts(obj: Any) -> Iterator[tuple[str, Any]]:
    """:func:`_parts`, ending the walk of ``obj`` quietly if looking at it raises.

    The explainer runs while an error is being reported: failing there would replace the
    user's real error with one about nbproc's own inspection.
    """
    try:
        yield from _parts(obj)
    except Exception:  # noqa: BLE001 - whatever the object raised, the walk just stops here
        return


def _type_name(obj: Any) -> str:
    return getattr(type(obj), "__name__", "?")


def _short_repr(obj: Any) -> str:
    """``repr`` for a label, bounded, and never raising (a ``__repr__`` may fail)."""
    try:
        return reprlib.repr(obj)
    except Exception:  # noqa: BLE001 - any failing __repr__
        return f"<{_type_name(obj)} object>"


def _pickles_its_dict(obj: Any) -> bool:
    """Whether pickling ``obj`` visits its ``__dict__`` (no reduction of its own class's).

    An object with its own ``__reduce__``/``__getstate__`` (a multiprocessing Lock, Queue,
    Value...) is reported as a whole: its own error ("... should only be shared between
    processes through inheritance") says more than an attribute the pickler never visits.
    """
    cls = type(obj)
    if cls.__reduce_ex__ is not object.__reduce_ex__ or cls.__reduce__ is not object.__reduce__:
        return False
    getstate = getattr(cls, "__getstate__", None)
    return getstate is None or getstate is getattr(object, "__getstate__", None)


def _describe(exc: Exception) -> str:
    try:
        return str(exc) or type(exc).__name__
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails
        return type(exc).__name__


def _locate(obj: Any, depth: int, seen: set[int]) -> tuple[list[str], Exception] | None:
    """Depth-first search for the innermost part of ``obj`` that fails to pickle."""
    if depth > _MAX_DEPTH or id(obj) in seen:
        return None
    seen.add(id(obj))
    for label, part in _safe_parts(obj):
        exc = _try_dump(part)
        if exc is None:
            continue
        inner = _locate(part, depth + 1, seen)
        if inner is not None:
            path, inner_exc = inner
            return [label, *path], inner_exc
        return [label], exc
    return None


def _explain(obj: Any, what: str | None, exc: Exception, path: list[str] | None = None) -> SerializationError:
    try:
        found = _locate(obj, 0, set())
    except Exception:  # noqa: BLE001 - the walk must never hide the real error (see _safe_parts)
        found = None
    labels = ([what] if what else []) + list(path or [])
    if found is not None:
        inner_path, exc = found
        labels.extend(inner_path)
    if not labels:
        labels = [f"object of type {_type_name(obj)}"]
    return _error_class(type(exc))(f"{': '.join(labels)}: {_describe(exc)}")


_error_classes: dict[type, type[SerializationError]] = {}


def _error_class(original: type) -> type[SerializationError]:
    """:class:`SerializationError`, also an instance of the pickler's original exception type.

    The stdlib lets a reducer's own exception (a ``RuntimeError`` raised by a ``__reduce__``,
    a ``ValueError``...) propagate unchanged, and code catches that type; our message wraps it,
    so the class we raise derives from both. Types whose instance layout cannot be combined
    (``OSError`` and its subclasses) fall back to plain :class:`SerializationError`, with the
    original still in ``__cause__``.
    """
    if issubclass(SerializationError, original) or not issubclass(original, Exception):
        return SerializationError
    cls = _error_classes.get(original)
    if cls is None:
        try:
            cls = type(f"SerializationError[{original.__name__}]", (SerializationError, original), {})
            cls.__module__ = __name__
            cls.__reduce__ = _reduce_error  # type: ignore[method-assign]
        except TypeError:  # instance lay-out conflict
            cls = SerializationError
        _error_classes[original] = cls
    return cls


def _reduce_error(self: BaseException) -> tuple[Any, tuple[Any, ...]]:
    """The combined classes are made at run time: they travel as (original type, message)."""
    return _rebuild_error, (type(self).__bases__[1], str(self))


def _rebuild_error(original: type, message: str) -> SerializationError:
    return _error_class(original)(message)
