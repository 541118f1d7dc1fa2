"""``nbproc.dummy``: nbproc's API backed by threads, like the stdlib's ``multiprocessing.dummy``.

Code written for processes runs unchanged on threads by swapping the import
(``import nbproc.dummy as multiprocessing``): useful for I/O-bound work, for debugging a
worker function in one process, and for objects that cannot be serialized at all.

What each name is:

- ``Process`` (:class:`DummyProcess`): a :class:`threading.Thread` with the Process API —
  ``start``, ``join``, ``is_alive``, ``name``, ``daemon``, ``exitcode``; ``current_process()``
  is ``threading.current_thread()``; ``active_children()`` lists the live threads the current
  thread started.
- ``Lock``, ``RLock``, ``Semaphore``, ``BoundedSemaphore``, ``Condition``, ``Event``,
  ``Barrier``: the :mod:`threading` ones.
- ``Queue``/``JoinableQueue``: :class:`queue.Queue` plus the process queue's ``close``,
  ``join_thread`` and ``cancel_join_thread``. ``Pipe``: :mod:`nbproc.dummy.connection`.
- ``Value``/``Array``/``Namespace``/``dict``/``list``: plain in-process objects.
- ``Manager()``: this module itself (as in the stdlib), which also works in a ``with`` block.
- ``Pool``: :class:`nbproc.pool.ThreadPool`.

Who runs what: ``DummyProcess.start()`` starts a thread that runs ``run()`` (the target by
default) and records its exit status — 0 on return, 1 if it raised (the traceback is printed
by :func:`threading.excepthook`, as a process prints it on stderr), the ``sys.exit()`` code
otherwise. The stdlib's ``multiprocessing.dummy`` reports 0 in every case; reporting the
status like a process does is a deliberate difference.
"""

from __future__ import annotations

import array as _array
import queue as _queue
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .connection import Pipe

__all__ = [
    "Process",
    "current_process",
    "active_children",
    "freeze_support",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Barrier",
    "Queue",
    "Manager",
    "Pipe",
    "Pool",
    "JoinableQueue",
]

Lock = threading.Lock
RLock = threading.RLock
Semaphore = threading.Semaphore
BoundedSemaphore = threading.BoundedSemaphore
Condition = threading.Condition
Event = threading.Event
Barrier = threading.Barrier

current_process = threading.current_thread

# Parent thread -> the DummyProcesses it started. Weak on both sides: a finished thread that
# nobody references disappears, and so does the entry of a parent thread that ended.
_children: weakref.WeakKeyDictionary[threading.Thread, weakref.WeakSet[DummyProcess]] = weakref.WeakKeyDictionary()
_children_lock = threading.Lock()


def _exit_status(code: Any) -> int:
    """What a process's exit code would be after ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


class DummyProcess(threading.Thread):
    """A thread with the Process API (see the module docstring for ``exitcode``)."""

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        super().__init__(group, target, name, args, kwargs, daemon=daemon)
        self._parent = threading.current_thread()
        self._exit_status: int | None = None
        self._start_called = False

    def start(self) -> None:
        """Start the thread; only the thread that created this object may (as with processes).

        Another thread trying raises ``RuntimeError``, as the stdlib's dummy does (a process
        raises ``AssertionError`` in that case).
        """
        if self._parent is not threading.current_thread():
            raise RuntimeError(
                f"can only start a process object created by current process: created by {self._parent!r},"
                f" started by {threading.current_thread()!r}"
            )
        run = self.run  # bound now, so a subclass's run() is the one that runs

        def run_and_record_status() -> None:
            try:
                run()
            except SystemExit as exc:
                self._exit_status = _exit_status(exc.code)
            except BaseException:
                self._exit_status = 1
                raise  # threading.excepthook prints it, as a process prints its traceback
            else:
                self._exit_status = 0

        self.run = run_and_record_status  # type: ignore[method-assign]
        with _children_lock:
            _children.setdefault(self._parent, weakref.WeakSet()).add(self)
        self._start_called = True
        super().start()

    @property
    def exitcode(self) -> int | None:
        """``None`` until the thread has finished, then 0, 1 (it raised) or its ``sys.exit`` code."""
        if not self._start_called or self.is_alive():
            return None
        return self._exit_status

    def close(self) -> None:
        """Nothing to release for a thread; ``ValueError`` while it runs, like ``Process.close()``."""
        if self.is_alive():
            raise ValueError("Cannot close a process while it is still running. You should first call join().")


Process = DummyProcess


def active_children() -> list[DummyProcess]:
    """The live DummyProcesses started by the current thread (finished ones are forgotten)."""
    with _children_lock:
        children = _children.get(threading.current_thread())
        if children is None:
            return []
        for child in list(children):
            if not child.is_alive():
                children.discard(child)
        return list(children)


def freeze_support() -> None:
    """Nothing to do for threads."""


class Queue(_queue.Queue):
    """:class:`queue.Queue` with the process queue's ``close``/``join_thread``/``cancel_join_thread``.

    After ``close()``, ``put`` and ``get`` raise ``ValueError`` as a process queue's do.
    ``put``/``get`` block as :class:`queue.Queue`'s do: ``timeout`` seconds at most, then
    :class:`queue.Full`/:class:`queue.Empty`.
    """

    _closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._check_open()
        super().put(item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        self._check_open()
        return super().get(block, timeout)

    def close(self) -> None:
        self._closed = True

    def join_thread(self) -> None:
        """No feeder thread to wait for."""

    def cancel_join_thread(self) -> None:
        """No feeder thread to wait for."""


JoinableQueue = Queue


class Namespace:
    """A plain attribute holder, printed like a manager's Namespace: ``Namespace(a=1, b=2)``."""

    def __init__(self, /, **kwds: Any) -> None:
        self.__dict__.update(kwds)

    def __repr__(self) -> str:
        shown = sorted(f"{name}={value!r}" for name, value in self.__dict__.items() if not name.startswith("_"))
        return f"{type(self).__name__}({', '.join(shown)})"


# A manager's dict() and list() are the builtins here (the stdlib's dummy does the same).
dict = dict
list = list


def _zero_value(typecode_or_type: Any) -> Any:
    """The value a fresh shared ctypes object of that type starts with (0, 0.0, b'\\x00'...)."""
    from multiprocessing.sharedctypes import typecode_to_type

    ctype = typecode_to_type.get(typecode_or_type, typecode_or_type)
    instance = ctype()
    return getattr(instance, "value", instance)


class Value:
    """An in-process value with ``.value``, ``get_lock()`` and ``get_obj()`` like a shared Value.

    ``Value(typecode_or_type, value=<zero>, lock=True)``; ``lock`` may be a lock to use, else
    an :class:`threading.RLock` is made (threads always get a lock; ``lock=False`` is accepted).
    """

    def __init__(self, typecode_or_type: Any, *args: Any, lock: Any = True) -> None:
        if len(args) > 1:
            raise TypeError(f"Value() takes a type and at most one value, got {len(args)} values")
        self._typecode = typecode_or_type
        self._value = args[0] if args else _zero_value(typecode_or_type)
        self._lock = lock if lock not in (True, False, None) else threading.RLock()

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value

    def get_lock(self) -> Any:
        return self._lock

    def get_obj(self) -> Value:
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__}({self._typecode!r}, {self._value!r})>"


def Array(typecode_or_type: Any, size_or_initializer: Any, lock: Any = True) -> _array.array:  # noqa: N802
    """An :class:`array.array`; ``size_or_initializer`` is a length (zero-filled) or a sequence.

    ``typecode_or_type`` is an array typecode or a ctypes type with one (``ctypes.c_int``...).
    ``lock`` is accepted for compatibility (an array of threads needs none to be read).
    """
    typecode = typecode_or_type if isinstance(typecode_or_type, str) else getattr(typecode_or_type, "_type_", None)
    if not isinstance(typecode, str):
        raise TypeError(f"no array typecode for {typecode_or_type!r}")
    if isinstance(size_or_initializer, int):
        return _array.array(typecode, bytes(_array.array(typecode).itemsize * size_or_initializer))
    return _array.array(typecode, size_or_initializer)


def Pool(  # noqa: N802
    processes: int | None = None, initializer: Callable[..., object] | None = None, initargs: Iterable[Any] = ()
) -> Any:
    """A :class:`nbproc.pool.ThreadPool` of ``processes`` threads (default: the CPU count)."""
    from nbproc.pool import ThreadPool

    return ThreadPool(processes, initializer, initargs)


def shutdown() -> None:
    """What a manager's ``shutdown()`` is: nothing to stop for threads."""


def Manager() -> Any:  # noqa: N802
    """This module: its ``Queue``, ``dict``, ``list``, ``Namespace``, ``Value``, ``Lock``... are a thread "manager"."""
    return sys.modules[__name__]


class _ManagerModule(types.ModuleType):
    """Lets ``with nbproc.dummy.Manager() as m:`` work, as it does with a process manager."""

    def __enter__(self) -> types.ModuleType:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        shutdown()


# A module's class may be replaced by a ModuleType subclass (Python >= 3.5): this is how the
# module returned by Manager() gets __enter__/__exit__, which are looked up on the type.
sys.modules[__name__].__class__ = _ManagerModule
