"""Contexts and start methods: ``get_context``, ``set_start_method`` and friends.

As in the stdlib, every public name of the package is reachable from a context object, and a
context fixes the start method of the processes (and of pools, queues, locks...) made through
it. nbproc's contexts subclass the stdlib's ``BaseContext`` so that what nbproc reuses
(``Lock``, ``Value``, ``Event``...) keeps the stdlib's semantics, and override what nbproc owns
(Process launching, ``Pipe``, queues, ``Pool``, managers) so that those use nbproc's
serialization.

Default start method: ``forkserver`` on Linux — safe in a multi-threaded Jupyter kernel, where
``fork`` can deadlock (Python 3.12+ warns, 3.14 made forkserver the Linux default) — and
``spawn`` on macOS and Windows. ``fork`` stays available on request.
"""

from __future__ import annotations

import multiprocessing.context as _std
import sys
from multiprocessing import reduction

from .exceptions import AuthenticationError, BufferTooShort, ProcessError, TimeoutError
from .process import ForkProcess, ForkServerProcess, Process, SpawnProcess

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "BaseContext",
    "DefaultContext",
    "ForkContext",
    "SpawnContext",
    "ForkServerContext",
    "Process",
    "ForkProcess",
    "SpawnProcess",
    "ForkServerProcess",
    "ProcessError",
    "BufferTooShort",
    "TimeoutError",
    "AuthenticationError",
]


class BaseContext(_std.BaseContext):
    """Everything ``nbproc`` offers at module level, bound to one start method."""

    ProcessError = ProcessError
    BufferTooShort = BufferTooShort
    TimeoutError = TimeoutError
    AuthenticationError = AuthenticationError
    _name: str = ""

    # -- what nbproc owns -------------------------------------------------------------
    def Pipe(self, duplex: bool = True) -> Any:  # noqa: N802
        """Two connected :class:`nbproc.connection.Connection` objects."""
        from .connection import Pipe

        return Pipe(duplex)

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802
        from .queues import Queue

        return Queue(maxsize, ctx=self.get_context())

    def JoinableQueue(self, maxsize: int = 0) -> Any:  # noqa: N802
        from .queues import JoinableQueue

        return JoinableQueue(maxsize, ctx=self.get_context())

    def SimpleQueue(self) -> Any:  # noqa: N802
        from .queues import SimpleQueue

        return SimpleQueue(ctx=self.get_context())

    def Pool(  # noqa: N802
        self,
        processes: int | None = None,
        initializer: Any = None,
        initargs: tuple = (),
        maxtasksperchild: int | None = None,
        **kwargs: Any,
    ) -> Any:
        from .pool import Pool

        return Pool(processes, initializer, initargs, maxtasksperchild, context=self.get_context(), **kwargs)

    def Manager(self) -> Any:  # noqa: N802
        from .managers import SyncManager

        m = SyncManager(ctx=self.get_context())
        m.start()
        return m

    def RawValue(self, typecode_or_type: Any, *args: Any) -> Any:  # noqa: N802
        from .sharedctypes import RawValue

        return RawValue(typecode_or_type, *args)

    def RawArray(self, typecode_or_type: Any, size_or_initializer: Any) -> Any:  # noqa: N802
        from .sharedctypes import RawArray

        return RawArray(typecode_or_type, size_or_initializer)

    def Value(self, typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:  # noqa: N802
        from .sharedctypes import Value

        return Value(typecode_or_type, *args, lock=lock, ctx=self.get_context())

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True) -> Any:  # noqa: N802
        from .sharedctypes import Array

        return Array(typecode_or_type, size_or_initializer, lock=lock, ctx=self.get_context())

    def freeze_support(self) -> None:
        """Only meaningful for frozen Windows executables; harmless elsewhere (as documented)."""
        if sys.platform == "win32" and getattr(sys, "frozen", False):  # pragma: no cover
            from multiprocessing.spawn import freeze_support

            freeze_support()

    def get_logger(self) -> Any:
        from .util import get_logger

        return get_logger()

    def log_to_stderr(self, level: Any = None) -> Any:
        from .util import log_to_stderr

        return log_to_stderr(level)

    def allow_connection_pickling(self) -> None:
        """Connections are always picklable in nbproc (they are registered with the serializer)."""
        from . import connection  # noqa: F401

    def set_executable(self, executable: str) -> None:
        from . import popen  # launching machinery: loaded when used, not with nbproc

        popen.set_executable(executable)

    def set_forkserver_preload(self, module_names: list[str]) -> None:
        from . import popen

        popen.set_forkserver_preload(module_names)

    # -- contexts and start methods -----------------------------------------------------
    # get_start_method and set_start_method are the stdlib's (``return self._name``; a
    # concrete context's method cannot be set). get_context is not: the stdlib's looks the
    # name up in its own module's contexts, and must find nbproc's.
    def get_context(self, method: str | None = None) -> BaseContext:
        return self if method is None else _concrete_context(method)

    def get_all_start_methods(self) -> list[str]:
        return _default_context.get_all_start_methods()

    @property
    def reducer(self) -> Any:
        """The module that serializes for nbproc (``nbproc.reduction``)."""
        from . import reduction as nb_reduction

        return nb_reduction

    @reducer.setter
    def reducer(self, reduction: Any) -> None:
        raise ValueError(
            "nbproc serializes through nbproc.serialization; use nbproc.set_serializer('cloudpickle'|'dill'|'pickle')"
        )


class DefaultContext(BaseContext):
    """The context behind the module-level API; its start method can be chosen once.

    Documented rules: ``set_start_method`` may be called once, before the method is first used,
    unless ``force=True`` (``None`` with ``force`` un-chooses it); anything that needs the method
    — ``get_context()``, ``get_start_method()``, starting a process — fixes the default from then
    on; ``get_start_method(allow_none=True)`` only looks. The attribute names
    (``_default_context``, ``_actual_context``) are the stdlib's: its tests and tools read them.
    """

    Process = Process

    def __init__(self, context: BaseContext) -> None:
        self._default_context = context
        self._actual_context: BaseContext | None = None

    def _chosen(self) -> BaseContext:
        """The context in use; using one fixes the default if nothing was chosen."""
        if self._actual_context is None:
            self._actual_context = self._default_context
        return self._actual_context

    def get_context(self, method: str | None = None) -> BaseContext:
        """The context for ``method`` (``"fork"``, ``"spawn"``, ``"forkserver"``); the one in use if ``None``.

        Raises :class:`ValueError` for an unknown or unavailable method.
        """
        return self._chosen() if method is None else _concrete_context(method)

    def set_start_method(self, method: str | None, force: bool = False) -> None:
        """Choose the start method of the module-level API; :class:`RuntimeError` if already chosen."""
        if not force and self._actual_context is not None:
            raise RuntimeError("context has already been set")
        self._actual_context = None if method is None and force else self.get_context(method)

    def get_start_method(self, allow_none: bool = False) -> str | None:  # type: ignore[override]
        """The start method in use (fixing the default), or ``None`` if unchosen and ``allow_none``."""
        if allow_none and self._actual_context is None:
            return None
        return self._chosen()._name

    def get_all_start_methods(self) -> list[str]:
        """Available methods, the default first (as the stdlib does since 3.13)."""
        if sys.platform == "win32":
            return ["spawn"]
        default = self._default_context._name
        available = [name for name in _concrete_contexts if name != "forkserver" or reduction.HAVE_SEND_HANDLE]
        return [default, *(name for name in available if name != default)]


def _context_class(class_name: str, method: str, process: type, doc: str) -> type[BaseContext]:
    """A concrete context class: BaseContext bound to one start method's name and Process
    class, which is all the stdlib's contract asks of one (``_name`` and ``Process``)."""
    namespace = {"__doc__": doc, "__module__": __name__, "_name": method, "Process": process}
    return type(class_name, (BaseContext,), namespace)


ForkContext = _context_class(
    "ForkContext",
    "fork",
    ForkProcess,
    "Processes started by ``os.fork()``: fastest, inherits everything, unsafe in threaded parents.",
)
SpawnContext = _context_class(
    "SpawnContext", "spawn", SpawnProcess, "Processes started as fresh interpreters: slowest to start, safe everywhere."
)
ForkServerContext = _context_class(
    "ForkServerContext",
    "forkserver",
    ForkServerProcess,
    "Processes forked by a single-threaded server process: safe with threads, quick to start.",
)


def _concrete_context(method: str) -> BaseContext:
    """The context of start method ``method``; :class:`ValueError` if unknown or unavailable here.

    Availability has one source, ``get_all_start_methods()`` (forkserver needs descriptor
    passing, ``reduction.HAVE_SEND_HANDLE``).
    """
    found = _concrete_contexts.get(method)
    if found is None:
        raise ValueError(f"cannot find context for {method!r}")
    if method not in _default_context.get_all_start_methods():
        raise ValueError(f"{method} start method not available")
    return found


#: Every start method's context by name, in the order ``get_all_start_methods`` lists them.
_concrete_contexts: dict[str, BaseContext] = {
    ctx._name: ctx for ctx in (ForkContext(), SpawnContext(), ForkServerContext())
}

# forkserver where it works (Linux; safe in a threaded kernel), spawn elsewhere (see above).
_DEFAULT_START_METHOD = "forkserver" if sys.platform == "linux" and reduction.HAVE_SEND_HANDLE else "spawn"
_default_context = DefaultContext(_concrete_contexts[_DEFAULT_START_METHOD])
