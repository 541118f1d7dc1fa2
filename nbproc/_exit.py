"""The exit sequence of a process that started nbproc children: one order, in one place.

Why it exists: the stdlib's exit (``multiprocessing.util._exit_function``, run by ``atexit`` in
the main process and at the end of every child's bootstrap) first runs the finalizers of
priority >= 0 — pools terminated (15), queues told to flush (10), managers shut down and named
semaphores unlinked (0) — then terminates daemonic children and joins every child. Two
orders there hurt: a spawn/forkserver child still unpickling its arguments finds its Lock
unlinked (the reference's Lock example fails that way under the stdlib), and a pool's workers
are killed while idle, losing what they printed. Reordering by adding one more finalizer at
some priority is what broke before (joining "every non-daemonic child" before the managers'
shutdown joined the manager's server, which only stops at that shutdown: a hang).

The sequence, run once per process by a finalizer of the highest priority (so, before all of
the above, on the thread running the exit — the main thread)::

    1. pools never closed      idle workers get STOP (they flush stdio, run their finalizers,
                               exit 0); busy ones are terminated, as the stdlib's exit does —
                               both done by each pool's own thread, which this one wakes;
                               whoever is left after POOL_STOP_GRACE is terminated, then killed
    2. user Processes          non-daemonic children that are not a manager's server are
                               joined, without a time limit (as the stdlib does), while their
                               Locks still exist and the managers they use still answer
    3. managers                each live manager's own shutdown finalizer (ask, terminate,
                               kill — each step bounded by the manager's shutdown_timeout)
    4. daemonic children       terminated (as the stdlib does); killed after DAEMON_STOP_GRACE
    5. the fork server         its alive pipe closed and the server reaped (it would otherwise
                               exit on its own a moment after this process)

The stdlib's exit then runs the remaining finalizers (queues, semaphore unlinks, temp dir)
and finds no child left to join. Last of all (lowest priority), the resource tracker this
process started is reaped once nothing can use it any more (waited for, never killed: it may
still have leaked semaphores or shared memory to unlink for a process that outlived us).

Interrupts: a KeyboardInterrupt (Ctrl-C sent to the process group, or to this process only)
during any step would otherwise escape the stdlib's finalizer loop and skip the rest of its
exit, leaving servers and children running. Here it switches to the forced path: SIGINT is
ignored while it runs, every remaining child of any kind is terminated (killed after
FORCED_STOP_GRACE), the managers' finalizers and the fork server's stop run, and one line on
stderr says so. The rest of the exit then runs as usual (exit status unchanged); nothing
survives the program.

Known difference kept on purpose: a never-joined child that waits forever on a manager object
(for a value nobody will set) keeps the exit waiting, as any never-ending child does in the
stdlib; the stdlib, which shuts managers down first, would break its connection instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing import process, resource_tracker, util
from typing import Any

__all__ = ["install"]

#: Priority of the exit sequence's finalizer: above every finalizer of the stdlib and of nbproc
#: (the highest, a Pool's, is 15), so the sequence decides the order of everything else.
EXIT_SEQUENCE_PRIORITY = 1000
#: Priority of reaping the resource tracker: after the stdlib's last finalizer (the temporary
#: directory's removal, -100), when no unlink or unregister can reach the tracker any more.
TRACKER_REAP_PRIORITY = -1000

#: Seconds a stopped pool worker gets to exit on its own (flush its output, run its finalizers)
#: before it is terminated. Exiting takes a few ms, but a worker still starting up (a spawned
#: interpreter, its initializer) only reads STOP once ready, which takes a second or more on a
#: loaded machine. The bound only costs time for a worker that does not exit (a blocked
#: finalizer, an output pipe nobody reads); busy workers are terminated at once regardless.
POOL_STOP_GRACE = 3.0
#: Seconds a terminated daemonic child gets before SIGKILL. The stdlib waits forever here; a
#: child that blocks SIGTERM would hang the exit. One second is ample for a default handler.
DAEMON_STOP_GRACE = 1.0
#: Seconds each child gets after SIGTERM on the interrupted path before SIGKILL: short, since
#: the user asked to stop, long enough for a default SIGTERM to land under load.
FORCED_STOP_GRACE = 0.5
#: Seconds to wait for the fork server / resource tracker to exit after their pipe closes
#: (they notice EOF at once); past it they are killed, so the exit never waits on them.
HELPER_EXIT_GRACE = 2.0
#: How often bounded waits on processes that are not our children (no sentinel) poll.
_POLL = 0.01

_installed_pid: int | None = None  # the process whose finalizer registry holds the sequence
_install_lock = threading.Lock()


def install() -> None:
    """Register the exit sequence in this process, once. Again in a forked child (whose
    finalizer registry starts empty) and after the sequence has run early (the stdlib's
    ``_cleanup_tests``, used by test suites, runs every finalizer). Called whenever nbproc
    starts a child process."""
    global _installed_pid
    if _installed_pid == os.getpid():
        return
    with _install_lock:
        if _installed_pid != os.getpid():
            util.Finalize(None, run, exitpriority=EXIT_SEQUENCE_PRIORITY)
            util.Finalize(None, _reap_resource_tracker, exitpriority=TRACKER_REAP_PRIORITY)
            _installed_pid = os.getpid()


def run() -> None:
    """The exit sequence (see the module docstring); never raises.

    A step that fails is reported on stderr (as the stdlib reports a failing finalizer) and the
    next step still runs; a KeyboardInterrupt anywhere switches to :func:`_forced_stop`.
    """
    global _installed_pid
    _installed_pid = None  # run: the next child started (if any) registers it again
    try:
        _call_quietly(_stop_pools)
        managers = _manager_finalizers()
        _call_quietly(_join_user_processes, {id(proc) for proc, _ in managers})
        for _, finalizer in managers:
            _call_quietly(finalizer)
        _call_quietly(_stop_daemons)
        _call_quietly(_stop_fork_server)
    except KeyboardInterrupt:
        _forced_stop()


# ------------------------------------------------------------------------------------------------
# What is still alive: found through the finalizers the program registered for it
# ------------------------------------------------------------------------------------------------


def _live_finalizers() -> list[Any]:
    """Pending finalizers, latest registered first (the order the stdlib would run them in)."""
    entries = list(util._finalizer_registry.items())
    entries.sort(key=lambda item: item[0][1], reverse=True)
    return [finalizer for _, finalizer in entries]


def _manager_finalizers() -> list[tuple[Any, Any]]:
    """``(server process, shutdown finalizer)`` of each live manager, the stdlib's or nbproc's.

    Every manager started with ``start()`` registers ``_finalize_manager(process, ...)`` as its
    ``shutdown``; that finalizer is the one that knows the manager's address and key, so the
    sequence calls it rather than reaching for the server process itself.
    """
    found = []
    for finalizer in _live_finalizers():
        callback = getattr(finalizer, "_callback", None)
        args = getattr(finalizer, "_args", None) or ()
        if getattr(callback, "__name__", "") == "_finalize_manager" and args and hasattr(args[0], "is_alive"):
            found.append((args[0], finalizer))
    return found


def _pool_cores() -> list[Any]:
    """The engines of nbproc Pools whose exit-time termination is still pending."""
    from ._pool_workers import ProcessCore

    cores = []
    for finalizer in _live_finalizers():
        owner = getattr(getattr(finalizer, "_callback", None), "__self__", None)
        if isinstance(owner, ProcessCore):
            cores.append(owner)
    return cores


# ------------------------------------------------------------------------------------------------
# The steps
# ------------------------------------------------------------------------------------------------


def _stop_pools() -> None:
    cores = _pool_cores()
    for core in cores:  # ask every pool first, so their workers wind down concurrently
        core.retire_at_exit()
    deadline = time.monotonic() + POOL_STOP_GRACE
    for core in cores:
        core.join(max(0.0, deadline - time.monotonic()))
        core.terminate()  # no-op once its workers are gone; else terminate, then kill


def _join_user_processes(manager_processes: set[int]) -> None:
    for child in process.active_children():
        if not child.daemon and id(child) not in manager_processes:
            util.info("calling join() for process %s", child.name)  # the stdlib's exit logs the same
            child.join()


def _stop_daemons() -> None:
    daemons = [child for child in process.active_children() if child.daemon]
    for child in daemons:
        util.info("calling terminate() for daemon %s", child.name)  # as the stdlib's exit logs it
    _terminate_all(daemons, DAEMON_STOP_GRACE)


def _terminate_all(children: Iterable[Any], grace: float) -> None:
    """SIGTERM each child, wait up to ``grace`` for all of them, SIGKILL the rest, reap all."""
    children = list(children)
    for child in children:
        _signal_quietly(child.terminate)
    deadline = time.monotonic() + grace
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
    for child in children:
        if child.exitcode is None:
            _signal_quietly(child.kill)
            child.join()


def _signal_quietly(send: Callable[[], None]) -> None:
    try:
        send()
    except (OSError, ValueError, AttributeError):
        pass  # already gone, closed, or never started


def _call_quietly(step: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Run a step or a finalizer as the stdlib's loop runs finalizers: report an error, carry on."""
    try:
        step(*args, **kwargs)
    except Exception:  # noqa: BLE001 - one failing clean-up must not stop the others
        try:
            import traceback

            traceback.print_exc()
        except Exception:  # noqa: BLE001 - stderr itself may be gone at exit
            pass


# ------------------------------------------------------------------------------------------------
# Helper processes: the fork server and the resource tracker
# ------------------------------------------------------------------------------------------------


def _stop_fork_server() -> None:
    """Close nbproc's fork server's alive pipe and reap the server (it exits on EOF)."""
    from . import popen

    server = popen.forkserver_instance()
    pid = getattr(server, "_forkserver_pid", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if pid is None or alive_fd is None:
        return
    with getattr(server, "_lock", None) or contextlib.nullcontext():
        server._forkserver_pid = None
        server._forkserver_alive_fd = None
        server._forkserver_address = None  # a later start (from a finalizer) gets a new server
        _close_quietly(alive_fd)
    _reap(pid, HELPER_EXIT_GRACE, kill=True)


def _reap_resource_tracker() -> None:
    """Close this process's end of the resource tracker's pipe and reap the tracker.

    Only the process that started the tracker can reap it (``waitpid`` fails elsewhere, and
    then nothing is done). The tracker exits once every holder of its pipe has closed it —
    by now our children are gone — after unlinking whatever was leaked, as it always does.
    """
    tracker = resource_tracker._resource_tracker
    pid = getattr(tracker, "_pid", None)
    fd = getattr(tracker, "_fd", None)
    if pid is None or fd is None:
        return
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return  # started by an ancestor: not ours to stop
    with getattr(tracker, "_lock", None) or contextlib.nullcontext():
        tracker._fd = None
        tracker._pid = None
        _close_quietly(fd)
    if not done:
        # Never killed: if something still holds its pipe (an orphaned grandchild), it must
        # outlive us to unlink what was leaked; we only stop waiting for it.
        _reap(pid, HELPER_EXIT_GRACE, kill=False)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _reap(pid: int, grace: float, *, kill: bool) -> None:
    """Wait up to ``grace`` seconds for our child ``pid`` to exit; then, with ``kill``, kill and reap it."""
    deadline = time.monotonic() + grace
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL)
    if not kill:
        return
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


# ------------------------------------------------------------------------------------------------
# Interrupted exit
# ------------------------------------------------------------------------------------------------


def _forced_stop() -> None:
    """After a KeyboardInterrupt during the exit: stop every child now, uninterruptibly."""
    previous = _ignore_sigint()
    try:
        _call_quietly(print, "nbproc: interrupted while exiting; stopping child processes", file=sys.stderr, flush=True)
        for core in _pool_cores():
            _call_quietly(core.terminate)
        managers = _manager_finalizers()
        _call_quietly(_terminate_all, process.active_children(), FORCED_STOP_GRACE)
        for _, finalizer in managers:  # servers are gone: this only records the shutdown
            _call_quietly(finalizer)
        _call_quietly(_stop_fork_server)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _ignore_sigint() -> Any:
    """Ignore SIGINT (only the main thread may change handlers); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        return None
