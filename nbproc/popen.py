"""How a child process is launched, one small strategy per start method.

Data flow at ``Process.start()`` (parent, calling thread)::

    Process.start()
      -> <Context>Process._Popen(process)          picks the strategy below
      -> Popen._launch(process)
           1. _child_payload(): prep data + process object -> bytes   (nbproc.serialization,
              with this Popen registered as the "spawning popen" so locks, Values and
              connections agree to be pickled and their fds are duplicated for the child)
           2. start the child                                          (strategy-specific)
           3. write the payload to the child's pipe                    (spawn / forkserver)

    child: multiprocessing.spawn._main reads prep data, prepare()s, reads the process
           object, calls process._bootstrap()   (nbproc's override applies nbproc settings)

fork needs no payload: the child is a copy of the parent and runs ``_bootstrap`` directly, so
the stdlib's fork Popen is used unchanged. spawn and forkserver reuse the stdlib's launching
machinery (pipes, resource tracker, the fork server process, fd passing) and differ from it in
one place: the payload is written by nbproc's serializer, so notebook-defined targets, lambdas,
closures and Process subclasses reach the child by value.

Serialization happens *before* any process is created: an unpicklable argument raises
:class:`nbproc.serialization.SerializationError` at ``start()`` and nothing is left running.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import sys
from collections.abc import Iterator
from multiprocessing import (
    forkserver,
    popen_fork,
    popen_forkserver,
    popen_spawn_posix,
    process,
    resource_tracker,
    spawn,
    util,
)
from multiprocessing.context import set_spawning_popen
from typing import Any

from . import serialization

__all__ = [
    "ForkPopen",
    "SpawnPopen",
    "ForkServerPopen",
    "set_executable",
    "get_executable",
    "forkserver_instance",
    "spawn_command_line",
]

ForkPopen = popen_fork.Popen

_executable: str | bytes | None = None


def set_executable(path: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None) -> None:
    """Interpreter used to start spawned children (nbproc's own setting; the stdlib's is untouched).

    Stored as the stdlib stores it — bytes on POSIX, str on Windows — since the POSIX launcher
    (``_posixsubprocess.fork_exec``) wants the program path as bytes. ``None`` goes back to the
    stdlib's choice (``sys.executable`` unless changed through ``multiprocessing.set_executable``).
    """
    global _executable
    if path is None:
        _executable = None
    elif sys.platform == "win32":  # pragma: no cover - nbproc targets POSIX
        _executable = os.fsdecode(path)
    else:
        _executable = os.fsencode(path)


def get_executable() -> str | bytes:
    return _executable or spawn.get_executable()


def spawn_command_line(**kwds: Any) -> list[str | bytes]:
    """The command that starts a spawned child: the stdlib's ``spawn_main`` reads the payload.

    ``kwds`` become ``spawn_main``'s keyword arguments (``tracker_fd``, ``pipe_handle``).
    """
    args = ", ".join(f"{key}={value!r}" for key, value in kwds.items())
    return [
        get_executable(),
        *util._args_from_interpreter_flags(),
        "-c",
        f"from multiprocessing.spawn import spawn_main; spawn_main({args})",
        "--multiprocessing-fork",
    ]


def _preparation_data(name: str) -> dict[str, Any]:
    """Start-up data for ``multiprocessing.spawn.prepare`` in the child.

    Built here rather than by ``spawn.get_preparation_data`` because that function also
    fixes the *stdlib's* start method as a side effect, which would break a later
    ``multiprocessing.set_start_method()`` in user code. nbproc's start method travels in the
    child config instead.

    A notebook's ``__main__`` has no file, so nothing is re-run in the child: what it needs
    arrives by value. A script's main module is re-run as ``__mp_main__`` as in the stdlib;
    ``python -`` leaves a pseudo path ``<stdin>`` that cannot be re-run, so it is dropped.

    Raises RuntimeError, as the stdlib does, when called while this process is itself still
    re-running its parent's main module (a script without the ``if __name__ == "__main__":``
    guard): otherwise every spawned child would start another one — a fork bomb.
    """
    spawn._check_not_importing_main()
    sys_path = list(sys.path)
    if "" in sys_path:
        sys_path[sys_path.index("")] = process.ORIGINAL_DIR
    data: dict[str, Any] = {
        "name": name,
        "sys_path": sys_path,
        "sys_argv": sys.argv,
        "orig_dir": process.ORIGINAL_DIR,
        "dir": os.getcwd(),
        "authkey": bytes(process.current_process().authkey),
        "log_to_stderr": util._log_to_stderr,
    }
    if util._logger is not None:
        data["log_level"] = util._logger.getEffectiveLevel()
    main_module = sys.modules.get("__main__")
    spec_name = getattr(getattr(main_module, "__spec__", None), "name", None)
    if spec_name is not None:
        data["init_main_from_name"] = spec_name
    else:
        main_path = getattr(main_module, "__file__", None)
        if main_path is not None:
            if not os.path.isabs(main_path) and process.ORIGINAL_DIR is not None:
                main_path = os.path.join(process.ORIGINAL_DIR, main_path)
            if os.path.isfile(main_path):
                data["init_main_from_path"] = os.path.normpath(main_path)
    return data


def child_config(method: str) -> dict[str, Any]:
    """nbproc's own per-process settings that a child must inherit."""
    return {"start_method": method, "serializer": serialization.get_serializer()}


def _child_payload(popen: Any, process_obj: Any) -> bytes:
    """Serialize start-up data and the process object while ``popen`` is the spawning popen."""
    buf = io.BytesIO()
    process_obj._nbproc_config = child_config(popen.method)
    stdio = getattr(popen, "_stdio_indexes", None)
    if stdio is not None:
        process_obj._nbproc_config["stdio_fds"] = stdio
    set_spawning_popen(popen)
    try:
        buf.write(serialization.dumps(_preparation_data(process_obj._name), what="start-up data"))
        buf.write(serialization.dumps(process_obj))
    finally:
        set_spawning_popen(None)
        del process_obj._nbproc_config
    return buf.getvalue()


class SpawnPopen(popen_spawn_posix.Popen):
    """Start a fresh interpreter and feed it the payload through a pipe."""

    def _launch(self, process_obj: Any) -> None:
        payload = _child_payload(self, process_obj)
        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            cmd = spawn_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            self._fds.extend([child_r, child_w])
            self.pid = util.spawnv_passfds(get_executable(), cmd, self._fds)
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(payload)
        finally:
            fds_to_close = [fd for fd in (parent_r, parent_w) if fd is not None]
            self.finalizer = util.Finalize(self, util.close_fds, fds_to_close)
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


# nbproc's own fork server: its preload list is nbproc's (set_forkserver_preload), and a
# stdlib user in the same interpreter keeps its own server and settings.
_forkserver = forkserver.ForkServer()
_forkserver.set_forkserver_preload(["__main__", "nbproc"])


def _fresh_forkserver_after_fork() -> None:
    """A forked child gets its own (lazily started) fork server.

    The inherited ForkServer object names the parent's server process, which the child can
    neither ``waitpid`` on (the stdlib then fails with ChildProcessError when a forked child
    uses forkserver) nor keep alive. A fresh instance starts a server only if the child uses
    forkserver, and that server exits with the child.
    """
    global _forkserver
    preload = _forkserver._preload_modules
    _forkserver = forkserver.ForkServer()
    _forkserver.set_forkserver_preload(list(preload))


os.register_at_fork(after_in_child=_fresh_forkserver_after_fork)


def forkserver_instance() -> forkserver.ForkServer:
    return _forkserver


def set_forkserver_preload(module_names: list[str]) -> None:
    """Modules the fork server imports once, so that forked children start with them loaded.

    ``nbproc`` itself is always preloaded: it makes every forkserver child cheaper.
    """
    names = list(module_names)
    if not all(type(mod) is str for mod in names):
        raise TypeError("module_names must be a list of strings")
    if "nbproc" not in names:
        names.append("nbproc")
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


class ForkServerPopen(popen_forkserver.Popen):
    """Ask nbproc's fork server for a child and feed it the payload through a pipe."""

    def _launch(self, process_obj: Any) -> None:
        self._stdio_indexes = self._pass_stdio()
        payload = _child_payload(self, process_obj)
        with _stdlib_start_method_untouched():
            self.sentinel, w = _forkserver.connect_to_new_process(self._fds)
        # A duplicate of the data pipe's write end is the child's view of its parent being alive.
        parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(payload)
        self.pid = forkserver.read_signed(self.sentinel)

    def _pass_stdio(self) -> tuple[int, int] | None:
        """Hand the parent's *current* stdout/stderr to the child.

        A forkserver child otherwise writes to whatever fds 1 and 2 were when the server
        started (a stale capture file under pytest, the kernel's terminal...), unlike fork
        and spawn children, which share the parent's. Spawn-like behaviour is less surprising.
        """
        try:
            os.fstat(1)
            os.fstat(2)
        except OSError:
            return None
        return self.duplicate_for_child(1), self.duplicate_for_child(2)


if sys.platform == "win32":  # pragma: no cover - nbproc targets POSIX; Windows uses the stdlib's spawn
    from multiprocessing import popen_spawn_win32

    SpawnPopen = popen_spawn_win32.Popen  # type: ignore[misc,assignment]
