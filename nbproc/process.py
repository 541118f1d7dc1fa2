"""Process objects, their lifecycle, and the one child set-up path shared by every start method.

The process tree is the stdlib's: ``BaseProcess`` (names, identities, ``daemon``, ``authkey``,
``exitcode``, ``sentinel``...) and the bookkeeping of the current process and its children are
reused as they are, so ``nbproc.current_process()`` and ``multiprocessing.current_process()``
agree and ``active_children()`` sees children started by either. nbproc's Process classes
(defined here, re-exported by :mod:`nbproc.context`) own what happens around a child's life:

Data flow of one child's set-up (``register_setup_hook`` adds entries to the hook list)::

    PARENT, the thread calling Process.start()
      _NbprocProcess.start() -> Popen(process)  (nbproc.popen, after the stdlib's checks)
      attached_setup(process, start_method):
        for each registered hook, in registration order:
            state = hook.capture(start_method)         None -> the hook is skipped
        process._nbproc_setup = _ChildSetup(start_method, [(hook name, module, qualname, state)...])
        launch the child                                fork copies the object, spawn/forkserver
                                                        serialize it (the states travel with it)
        del process._nbproc_setup                       the parent's object stays clean
    CHILD, main thread, inside BaseProcess._bootstrap (current_process() is already the child)
      _NbprocProcess._after_fork()
        fork/forkserver: the stdlib's after-fork re-initialisation (finalizers, after-forkers)
        for each shipped hook, in order: import module, look up qualname, apply(state)
            an exception -> "nbproc: child set-up hook 'name' failed" + traceback on stderr,
                            exit code 1 (run() never starts)
      BaseProcess._bootstrap -> run()

The first hook is nbproc's own ("nbproc.config": start method, serializer, the forkserver
child's stdio), so there is one path for nbproc's settings and for upper layers' — a forked
child receives them exactly like a spawned one. nbproc also registers "nbproc.orphans" (a
child ends with its parent: :mod:`nbproc._orphans`) and "nbproc.notebook" (cell tracebacks and
quiet interrupts in children of a Jupyter kernel: :mod:`nbproc._notebook_child`); output
forwarding registers its own from :mod:`nbproc.jupyter`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections import namedtuple
from collections.abc import Callable, Iterator
from multiprocessing.process import (
    ORIGINAL_DIR,
    AuthenticationString,
    BaseProcess,
    _cleanup,
    _dangling,
    active_children,
    current_process,
    parent_process,
)

from . import _notebook_child, _orphans

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "BaseProcess",
    "Process",
    "ForkProcess",
    "SpawnProcess",
    "ForkServerProcess",
    "current_process",
    "active_children",
    "parent_process",
    "AuthenticationString",
    "ORIGINAL_DIR",
    "register_setup_hook",
]

# The same process-tree bookkeeping as the stdlib's (one tree, see above): ``_cleanup`` reaps
# finished children, ``_dangling`` tracks live Process objects (test suites read both).
_reexported_private = (_cleanup, _dangling)


# --------------------------------------------------------------------------------------------
# The child set-up registry
# --------------------------------------------------------------------------------------------


# The records below are named tuples, not dataclasses nor typing.NamedTuple: ``import nbproc``
# loads this module, and dataclasses (inspect, ast, dis: ~4 ms) or typing (~2 ms) would be
# imported by every process, pool workers included.

#: A registered hook: name, capture(start_method) -> state, apply(state).
_Hook = namedtuple("_Hook", "name capture apply")
#: One hook's state on its way to a child: ``apply`` travels as module + qualified name.
_ShippedHook = namedtuple("_ShippedHook", "name module qualname state")
#: Everything a child applies before ``run()``: what travels on the process object
#: (``hooks``: a tuple of _ShippedHook).
_ChildSetup = namedtuple("_ChildSetup", "start_method hooks")


_hooks: dict[str, _Hook] = {}  # insertion order is the order hooks run in


def _importable_name(func: Callable[..., Any], role: str) -> tuple[str, str]:
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not module or module in ("__main__", "__mp_main__") or "<" in qualname:
        raise ValueError(f"set-up hook {role} must be a module-level function of an importable module: {func!r}")
    return module, qualname


def register_setup_hook(name: str, capture: Callable[[str], Any], apply: Callable[[Any], None]) -> None:
    """Run ``apply(capture(start_method))`` in every nbproc child before its target runs.

    ``capture(start_method)`` runs in the parent, on the thread calling ``Process.start()``, for
    every nbproc child (user Processes, pool workers, manager servers); it returns a picklable
    state, or ``None`` for "nothing to do in this child". An exception in ``capture``
    propagates from ``start()`` before any process exists. ``apply(state)`` runs in the child
    under fork, spawn and forkserver alike, after the process object is rebuilt and before
    ``run()``; if it raises, the child reports it on stderr with the hook's name and exits
    with code 1. Both must be module-level functions of importable modules: the child finds
    ``apply`` by module and qualified name, importing the module if needed.

    Registering ``name`` again replaces that hook in its original position; hooks run in
    registration order. Raises :class:`ValueError` for a function the child could not find.
    """
    _importable_name(capture, "capture")
    _importable_name(apply, "apply")
    _hooks[name] = _Hook(name, capture, apply)


def _capture_setup(start_method: str) -> _ChildSetup:
    shipped = []
    for hook in list(_hooks.values()):
        state = hook.capture(start_method)
        if state is not None:
            module, qualname = _importable_name(hook.apply, "apply")
            shipped.append(_ShippedHook(hook.name, module, qualname, state))
    return _ChildSetup(start_method, tuple(shipped))


@contextlib.contextmanager
def attached_setup(process_obj: BaseProcess, start_method: str) -> Iterator[None]:
    """While a child is launched: the hooks' captured states ride on the process object.

    Called by every launch strategy (:mod:`nbproc.popen`) on the thread calling ``start()``,
    after the stdlib's checks, so a refused ``start()`` captures nothing. A forked child
    finds the attribute in its copy of memory, spawn and forkserver serialize it with the
    object; the parent's object is left without it.
    """
    process_obj._nbproc_setup = _capture_setup(start_method)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        process_obj.__dict__.pop("_nbproc_setup", None)


def _resolve(module: str, qualname: str) -> Callable[[Any], None]:
    import importlib

    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _apply_setup(setup: _ChildSetup) -> None:
    """In the child: apply each shipped hook; a failure ends the child with exit code 1."""
    for hook in setup.hooks:
        try:
            _resolve(hook.module, hook.qualname)(hook.state)
        except BaseException as exc:  # a child that half set itself up must not run user code
            sys.stderr.write(f"nbproc: child set-up hook {hook.name!r} failed in {current_process().name}:\n")
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__)
            sys.stderr.flush()
            raise SystemExit(1) from None


# --------------------------------------------------------------------------------------------
# nbproc's own settings: the first hook
# --------------------------------------------------------------------------------------------


class _ParentStdio:
    """The parent's *current* fds 1 and 2, handed to a forkserver child when it is serialized.

    A forkserver child otherwise writes to whatever fds 1 and 2 were when the server started
    (a stale capture file under pytest, the kernel's terminal...), unlike fork and spawn
    children, which share the parent's. Spawn-like behaviour is less surprising. The fds are
    passed at pickling time, while the forkserver Popen collects the fds it sends to the server.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.context import get_spawning_popen

        popen = get_spawning_popen()
        try:
            os.fstat(1)
            os.fstat(2)
        except OSError:
            popen = None
        if popen is None or not hasattr(popen, "duplicate_for_child"):
            return (type(None), ())
        return (_InheritedStdio, tuple(popen.DupFd(popen.duplicate_for_child(fd)) for fd in (1, 2)))


class _InheritedStdio:
    """In the forkserver child: the parent's stdout/stderr, to be installed as fds 1 and 2."""

    def __init__(self, out: Any, err: Any) -> None:
        self.fds = (out, err)

    def install(self) -> None:
        for target, dup in zip((1, 2), self.fds, strict=True):
            os.dup2(dup.detach(), target)


#: nbproc's own settings for a child; ``stdio``: _ParentStdio in the parent, _InheritedStdio
#: or None in the child.
_Config = namedtuple("_Config", "start_method serializer stdio")


def _capture_config(start_method: str) -> _Config:
    from . import serialization

    stdio = _ParentStdio() if start_method == "forkserver" else None
    return _Config(start_method, serialization.get_serializer(), stdio)


def _apply_config(config: _Config) -> None:
    """A child's default start method is the one it was started with (as in the stdlib), its
    serializer the parent's, and a forkserver child writes to the parent's current stdio."""
    from . import context, serialization

    context._default_context._actual_context = context._concrete_contexts[config.start_method]
    if isinstance(config.stdio, _InheritedStdio):
        config.stdio.install()
    if config.serializer != serialization.get_serializer():
        serialization.set_serializer(config.serializer)


register_setup_hook("nbproc.config", _capture_config, _apply_config)

# The other hooks nbproc itself needs (each module's docstring says what and why).
register_setup_hook("nbproc.orphans", _orphans.capture, _orphans.apply)
register_setup_hook("nbproc.notebook", _notebook_child.capture, _notebook_child.apply)


# --------------------------------------------------------------------------------------------
# Process classes
# --------------------------------------------------------------------------------------------


def _context_for(method: str | None) -> Any:
    from . import context

    if method is None:
        return context._default_context.get_context()
    return context._concrete_contexts[method]


class _NbprocProcess(BaseProcess):
    """Base of nbproc's Process classes: runs the child set-up path (see the module docstring).

    ``class C(_NbprocProcess, start_method="spawn")`` binds a class to one start method: its
    ``_start_method`` and its ``_Popen`` (the launch strategy of :mod:`nbproc.popen`).
    """

    def __init_subclass__(cls, start_method: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if start_method is not None:
            cls._start_method = start_method
            cls._Popen = _launcher(start_method)

    def start(self) -> None:
        """Start the child (see ``multiprocessing.Process.start``).

        The set-up hooks capture their state on this thread as the child is launched
        (:func:`attached_setup`); at exit nbproc's exit sequence (:mod:`nbproc._exit`) stops
        it, and every other kind of child, in a safe order.
        """
        super().start()
        from . import _exit  # loaded with the first child: it imports multiprocessing.util, subprocess...

        _exit.install()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child (see ``multiprocessing.Process.join``); once it has ended, what it
        wrote is delivered to the notebook before this returns (:func:`nbproc._output.sync`).

        In a Jupyter kernel, an interrupt (KeyboardInterrupt) while waiting also stops the
        child before it propagates — the cell was waiting for it, so nothing must be left
        running: see :func:`_stop_interrupted`. In a script the stdlib's behaviour is kept (the
        terminal's Ctrl-C reaches the child by itself).
        """
        try:
            super().join(timeout)
        except KeyboardInterrupt:
            from . import remote_error  # loaded when needed: it imports dataclasses, multiprocessing.pool

            if self._popen is not None and remote_error._kernel_shell() is not None:
                _stop_interrupted(self)
            raise
        if self._popen is not None and self._popen.returncode is not None:
            from . import _output

            _output.sync()

    def _after_fork(self) -> None:  # type: ignore[override] - the stdlib's is a staticmethod, called on self
        setup = self.__dict__.pop("_nbproc_setup", None)
        method = setup.start_method if setup is not None else self._start_method
        if method != "spawn":  # a spawned child is no fork: nothing to re-initialise
            BaseProcess._after_fork()
        if setup is not None:
            _apply_setup(setup)


# What a child interrupted in join() gets, and how long it has to end before the next step.
# The kernel's interrupt already sent it SIGINT (to the whole process group); a child that
# ignores SIGINT (or runs C code that never checks for signals) gets SIGTERM, then SIGKILL.
# 0.5 s lets a Python child run its ``finally`` blocks; the whole escalation stays near the
# "stopped within ~1 s" the notebook user expects, the last wait only reaps the killed child.
_INTERRUPT_ESCALATION = ((signal.SIGINT, 0.5), (signal.SIGTERM, 0.3), (signal.SIGKILL, 5.0))


def _stop_interrupted(process_obj: BaseProcess) -> None:
    """Stop a child whose join() was interrupted; a second interrupt only hurries it along."""
    for signum, grace in _INTERRUPT_ESCALATION:
        try:
            if process_obj._popen.poll() is not None:
                break
            os.kill(process_obj.pid, signum)
            BaseProcess.join(process_obj, grace)
        except KeyboardInterrupt:
            continue
        except ProcessLookupError:
            break
    if process_obj._popen.poll() is not None:
        BaseProcess.join(process_obj, 0)  # reaped: forget it as the stdlib's join does


def _tracker_running(resource_tracker: Any) -> None:
    """``resource_tracker.ensure_running()``, without waking the tracker when we can tell it runs.

    The stdlib checks a running tracker by writing a probe message into its pipe, so the tracker
    process wakes up (and takes a CPU) at each check; a fork pool's start would pay that for every
    worker. When this process started the tracker, it is our child, and ``waitpid`` tells whether
    it still runs without a word to it. Otherwise (a tracker inherited from our parent, or gone),
    the stdlib's check runs and restarts it if needed.
    """
    tracker = resource_tracker._resource_tracker
    pid = getattr(tracker, "_pid", None)
    if pid is not None and getattr(tracker, "_fd", None) is not None:
        try:
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                return
        except ChildProcessError:
            pass  # not ours to wait for after all: let the stdlib check it
    resource_tracker.ensure_running()


def _launcher(method: str) -> Any:
    """The ``_Popen`` of a Process class bound to ``method``: the strategy of :mod:`nbproc.popen`."""

    def launch(process_obj: Any) -> Any:
        from . import popen

        if method == "fork":
            from multiprocessing import resource_tracker

            from . import serialization

            # The child must share our resource tracker (spawn and forkserver children always
            # do): large buffers sent through shared memory are registered there (see
            # nbproc._shm_buffers). Starting it costs this process one fork+exec, once.
            _tracker_running(resource_tracker)
            serialization.prepare_fork()
        return popen.LAUNCHERS[method](process_obj)

    return staticmethod(launch)


class ForkProcess(_NbprocProcess, start_method="fork"):
    """A child that is a copy of this process (``fork``)."""


class SpawnProcess(_NbprocProcess, start_method="spawn"):
    """A child in a fresh interpreter (``spawn``); what it runs arrives serialized."""


class ForkServerProcess(_NbprocProcess, start_method="forkserver"):
    """A child forked by nbproc's fork server (``forkserver``); what it runs arrives serialized."""


class Process(_NbprocProcess):
    """``nbproc.Process``: started with the default context's start method at ``start()``."""

    _start_method = None

    @staticmethod
    def _Popen(process_obj: Any) -> Any:  # noqa: N802 - the stdlib's name
        return _context_for(None).Process._Popen(process_obj)
