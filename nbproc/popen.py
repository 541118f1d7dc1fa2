"""How a child process is launched, one small strategy per start method.

Data flow at ``Process.start()`` (parent, the calling thread)::

    Process.start() -> <Context>Process._Popen(process) picks the strategy below
      ForkPopen           attached_setup() (nbproc.process: hooks capture their state onto the
                          process object), then the stdlib's fork; the child runs _bootstrap on
                          its copy of the object
      SpawnPopen /        _PayloadLaunch._launch:
      ForkServerPopen       1. _child_payload(): attached_setup() + start-up data + process
                               object -> bytes (nbproc.serialization, while this Popen is the
                               "spawning popen", so locks, connections and fds are duplicated
                               for the child)
                            2. _start_child(): spawn a fresh interpreter (spawn) or ask the
                               fork server (forkserver) -> (sentinel, payload writer)
                            3. write the payload; 4. _child_started() (forkserver: read the pid)

    child (spawn/forkserver): the stdlib's multiprocessing.spawn._main reads the start-up data,
           prepare()s, reads the process object and calls process._bootstrap(); in every start
           method _bootstrap applies the set-up hooks before run() (nbproc.process).

The stdlib's machinery is reused through its APIs — ``spawn.get_command_line``,
``spawn.get_preparation_data``, ``util.spawnv_passfds``, the resource tracker, the fork server
(``connect_to_new_process``), its Popen classes' ``poll``/``wait``/``duplicate_for_child`` —
and nbproc differs in what is written: its serializer makes notebook-defined targets, lambdas,
closures and Process subclasses reach the child by value, and the set-up hooks ride along.

Serialization happens *before* any process is created: an unpicklable argument raises
:class:`nbproc.serialization.SerializationError` at ``start()`` and nothing is left running.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Iterator
from multiprocessing import (
    forkserver,
    popen_fork,
    popen_forkserver,
    popen_spawn_posix,
    resource_tracker,
    spawn,
    util,
)
from multiprocessing.context import set_spawning_popen
from typing import Any

from . import _forkserver_boot, _shm_buffers, serialization
from .process import attached_setup

__all__ = [
    "ForkPopen",
    "SpawnPopen",
    "ForkServerPopen",
    "set_executable",
    "get_executable",
    "forkserver_instance",
    "spawn_command_line",
]

_executable: str | bytes | None = None


def set_executable(path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None) -> None:
    """Interpreter used to start spawned children (nbproc's own setting; the stdlib's is untouched).

    Stored as the stdlib stores it — bytes on POSIX, str on Windows — since the POSIX launcher
    (``_posixsubprocess.fork_exec``) wants the program path as bytes. ``None`` goes back to the
    stdlib's choice (``sys.executable`` unless changed through ``multiprocessing.set_executable``).
    """
    global _executable
    as_stored = os.fsdecode if sys.platform == "win32" else os.fsencode
    _executable = None if path is None else as_stored(path)


def get_executable() -> str | bytes:
    """The interpreter spawned children run: :func:`set_executable`'s choice, else the stdlib's."""
    return _executable or spawn.get_executable()


def spawn_command_line(**kwds: Any) -> list[str | bytes]:
    """The command that starts a spawned child: the stdlib's ``spawn_main`` reads the payload.

    ``kwds`` become ``spawn_main``'s keyword arguments (``tracker_fd``, ``pipe_handle``). The
    stdlib builds the command; only the interpreter is nbproc's (:func:`set_executable`).
    """
    command = spawn.get_command_line(**kwds)
    if not getattr(sys, "frozen", False):  # a frozen executable is its own interpreter
        command[0] = get_executable()
    return command


def _preparation_data(name: str) -> dict[str, Any]:
    """Start-up data for ``multiprocessing.spawn.prepare`` in the child: the stdlib's, minus two things.

    - The stdlib's start method: computing it fixes the *stdlib's* default context as a side
      effect (undone here), and shipping it would fix it in the child too; a later
      ``multiprocessing.set_start_method()`` in user code would then fail. nbproc's start
      method travels with the child set-up (:mod:`nbproc.process`).
    - A main "path" that is no file (``python -`` leaves ``<stdin>``): it cannot be re-run.
      A notebook's ``__main__`` has neither a spec nor a file, so nothing is re-run in the
      child: what it needs arrives by value. A script's main module is re-run as
      ``__mp_main__`` as in the stdlib.

    Raises RuntimeError, as the stdlib does, when called while this process is itself still
    re-running its parent's main module (a script without the ``if __name__ == "__main__":``
    guard): otherwise every spawned child would start another one — a fork bomb.
    """
    with _stdlib_start_method_untouched():
        data = spawn.get_preparation_data(name)
    data.pop("start_method", None)
    data["authkey"] = bytes(data["authkey"])
    main_path = data.get("init_main_from_path")
    if main_path is not None and not os.path.isfile(main_path):
        del data["init_main_from_path"]
    return data


def _child_payload(popen: Any, process_obj: Any) -> bytes:
    """Start-up data + the process object (carrying the set-up hooks' states), as bytes.

    Serialized while ``popen`` is the "spawning popen", so locks, Values, connections and the
    forkserver child's stdio agree to be pickled and their fds are duplicated for the child.
    """
    with attached_setup(process_obj, popen.method):
        set_spawning_popen(popen)
        try:
            start_up = serialization.dumps(_preparation_data(process_obj._name), what="start-up data")
            # Large arrays among the arguments go through shared memory (nbproc._shm_buffers);
            # the child maps them. If it dies first, the resource tracker removes them.
            refs: list[bytes] = []
            try:
                data = serialization.dumps(process_obj, buffer_callback=_shm_buffers.collector(refs))
                if refs:
                    data = serialization.dumps(_shm_buffers.WithSharedBuffers(data, refs))
            except BaseException:
                _shm_buffers.discard(refs)
                raise
            return start_up + data
        finally:
            set_spawning_popen(None)


class _PayloadLaunch:
    """The launch shared by spawn and forkserver: serialize, start a child, hand it the payload.

    A strategy supplies ``_start_child() -> (sentinel, payload writer)`` and may read what the
    child reports in ``_child_started()``. The writer stays open until the Popen is finalized:
    the child's view of its parent being alive is that pipe's other end (it sees EOF when the
    parent is gone).
    """

    method: str
    sentinel: int
    finalizer: Any

    def _launch(self, process_obj: Any) -> None:
        payload = _child_payload(self, process_obj)
        self.sentinel, writer = self._start_child()
        self.finalizer = util.Finalize(self, util.close_fds, (self.sentinel, writer))
        with open(writer, "wb", closefd=False) as pipe:
            pipe.write(payload)
        self._child_started()

    def _start_child(self) -> tuple[int, int]:
        raise NotImplementedError

    def _child_started(self) -> None:
        """Nothing to read back by default: the pid is known when the child is started."""


class ForkPopen(popen_fork.Popen):
    """Fork: the child is a copy of the parent and runs ``_bootstrap`` directly; no payload.

    The set-up hooks' states are attached to the process object before the fork, so the child
    finds them in its copy (the stdlib's fork launch is used unchanged otherwise).
    """

    def _launch(self, process_obj: Any) -> None:
        with attached_setup(process_obj, self.method):
            super()._launch(process_obj)


class SpawnPopen(_PayloadLaunch, popen_spawn_posix.Popen):
    """Start a fresh interpreter running the stdlib's ``spawn_main``, reading from a pipe."""

    def _start_child(self) -> tuple[int, int]:
        """Two pipes: the payload (child reads), and an exit pipe whose read end is our sentinel —
        the child holds its write end, so it reads EOF when the child is gone."""
        payload_r, payload_w = os.pipe()
        exit_r, exit_w = os.pipe()
        ours, childs = (exit_r, payload_w), (payload_r, exit_w)
        with contextlib.ExitStack() as on_failure:
            on_failure.callback(util.close_fds, *ours)
            try:
                tracker_fd = resource_tracker.getfd()
                command = spawn_command_line(tracker_fd=tracker_fd, pipe_handle=payload_r)
                self.pid = util.spawnv_passfds(get_executable(), command, [*self._fds, tracker_fd, *childs])
            finally:
                util.close_fds(*childs)  # the child's ends belong to the child (or to nobody)
            on_failure.pop_all()
        return ours


# nbproc's own fork server: its preload list is nbproc's (set_forkserver_preload), and a
# stdlib user in the same interpreter keeps its own server and settings. It preloads the main
# script for real (nbproc._forkserver_boot says why the stdlib's does not).
# What the server always imports once, so each forked child starts with it loaded: nbproc, the
# pool worker's module and the stdlib's popen_forkserver (a child unpickles its fd hand-over
# objects). Nothing more: every page the server has mapped is copied into each child's page
# tables at the fork and released at its exit, which costs the child CPU time in proportion
# (measured: preloading this module and ctypes as well cost a Pool(2) cycle ~1 ms of CPU, and
# cloudpickle another ~1 ms). The server looks prctl up itself (nbproc._orphans), so children
# need no ctypes; it preloads cloudpickle only where children will receive classes by value (a
# notebook, or a program that has loaded it: nbproc._forkserver_boot). A module that cannot be
# imported is skipped by the server.
_ALWAYS_PRELOADED = ("nbproc", "nbproc._pool_workers", "multiprocessing.popen_forkserver")
_forkserver = _forkserver_boot.ForkServer()
_forkserver.set_forkserver_preload(["__main__", *_ALWAYS_PRELOADED])


def _fresh_forkserver_after_fork() -> None:
    """A forked child gets its own (lazily started) fork server.

    The inherited ForkServer object names the parent's server process, which the child can
    neither ``waitpid`` on (the stdlib then fails with ChildProcessError when a forked child
    uses forkserver) nor keep alive. A fresh instance starts a server only if the child uses
    forkserver, and that server exits with the child.
    """
    global _forkserver
    preload = _forkserver._preload_modules
    _forkserver = _forkserver_boot.ForkServer()
    _forkserver.set_forkserver_preload(list(preload))


os.register_at_fork(after_in_child=_fresh_forkserver_after_fork)


def forkserver_instance() -> forkserver.ForkServer:
    """nbproc's own fork server of this process (a fresh one after a fork), not the stdlib's."""
    return _forkserver


def set_forkserver_preload(module_names: list[str]) -> None:
    """Modules the fork server imports once, so that forked children start with them loaded.

    ``nbproc`` itself (with the pool worker, see ``_ALWAYS_PRELOADED``) is always preloaded: it
    makes every forkserver child cheaper.
    """
    names = list(module_names)
    if not all(type(mod) is str for mod in names):
        raise TypeError("module_names must be a list of strings")
    names.extend(name for name in _ALWAYS_PRELOADED if name not in names)
    _forkserver.set_forkserver_preload(names)


@contextlib.contextmanager
def _stdlib_start_method_untouched() -> Iterator[None]:
    """Undo the stdlib fixing its own default start method while starting the fork server.

    ``ForkServer.ensure_running`` calls ``spawn.get_preparation_data``, which calls
    ``multiprocessing.get_start_method()``; that pins the stdlib's default context, and a later
    ``multiprocessing.set_start_method()`` in user code would fail. We restore "unset".
    """
    before = multiprocessing.get_start_method(allow_none=True)
    try:
        yield
    finally:
        if before is None:
            multiprocessing.set_start_method(None, force=True)


class ForkServerPopen(_PayloadLaunch, popen_forkserver.Popen):
    """Ask nbproc's fork server for a child; the server reports its pid on the sentinel.

    A process object marked ``_nbproc_pid_on_demand`` (pool workers, see
    :mod:`nbproc._pool_workers`) does not wait for that report in ``start()``: the pid is read
    when first asked for, so the server forks this child while the parent prepares the next
    one (the wait is most of a forkserver start: ~1 ms per child). Until then the sentinel is
    readable without the child having ended, so only a caller that reads ``pid`` before it
    watches the sentinel may ask for this; ``poll()`` reads the pid first (a non-blocking
    ``poll()`` before the report has come answers None: the child is starting).
    """

    _pid: int | None = None

    def _launch(self, process_obj: Any) -> None:
        self._pid_on_demand = bool(getattr(process_obj, "_nbproc_pid_on_demand", False))
        # Two threads reading the report at once (the pool's start, and another thread's
        # Process.start() polling every child) would split it: one gets the pid, the other then
        # waits for the exit code. One reads; the other waits for it.
        self._pid_lock = threading.Lock()
        super()._launch(process_obj)

    def _start_child(self) -> tuple[int, int]:
        with _stdlib_start_method_untouched():
            return _forkserver.connect_to_new_process(self._fds)

    def _child_started(self) -> None:
        if not self._pid_on_demand:
            self._pid = forkserver.read_signed(self.sentinel)

    @property
    def pid(self) -> int:
        """The child's pid, read from the server's report on first use (raises EOFError if the
        server died before reporting it)."""
        if self._pid is None:
            with self._pid_lock:
                if self._pid is None:
                    self._pid = forkserver.read_signed(self.sentinel)
        return self._pid

    @pid.setter
    def pid(self, value: int) -> None:
        self._pid = value

    def poll(self, flag: int = os.WNOHANG) -> int | None:
        if self.returncode is None and self._pid is None:
            if flag == os.WNOHANG and (self._pid_lock.locked() or not _readable(self.sentinel)):
                # No pid reported yet, so no exit status either (the server writes the pid
                # first): the child is starting. Not waiting here matters: Process.start()
                # polls every earlier child (the stdlib's _cleanup), and a blocking read would
                # make each pool worker's launch wait for the previous one's fork.
                return None
            try:
                self.pid  # noqa: B018 - the report comes first on the sentinel, the exit code after it
            except (OSError, EOFError):
                self.returncode = 255  # the server died: as the stdlib's poll() reports it
        return super().poll(flag)


def _readable(fd: int) -> bool:
    """Whether ``fd`` has data (or end of file) to read now."""
    from multiprocessing.connection import wait

    return bool(wait([fd], 0))


if sys.platform == "win32":  # pragma: no cover - nbproc targets POSIX; Windows uses the stdlib's spawn
    from multiprocessing import popen_spawn_win32

    SpawnPopen = popen_spawn_win32.Popen  # type: ignore[misc,assignment]

#: The strategy for each start method (what ``<Context>Process._Popen`` calls).
LAUNCHERS: dict[str, type] = {"fork": ForkPopen, "spawn": SpawnPopen, "forkserver": ForkServerPopen}
