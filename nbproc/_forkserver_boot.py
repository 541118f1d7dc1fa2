"""How nbproc's fork server is started: the stdlib's server loop, with the main module preloaded.

Why it exists: the stdlib's ``ForkServer.ensure_running`` passes the server the keys
``main_path`` and ``sys_path`` of ``spawn.get_preparation_data()``, but that data names the main
script ``init_main_from_path``; ``main_path`` is never there (CPython 3.11-3.13). So
``set_forkserver_preload(['__main__'])`` preloads nothing, and every forkserver child re-runs
the script's main module itself (as ``__mp_main__``) before its first task: ~2 ms for a light
script, the whole import time of numpy or pandas for a typical one.

nbproc starts its server itself (:meth:`ForkServer.ensure_running` below, written against the
stdlib's documented pieces: its listener address helper, ``spawnv_passfds``, the resource
tracker) and hands the server the main script's path, so the server runs the main module once,
as ``__mp_main__`` exactly as a spawned child would, and every child forked from it starts
with it loaded. The server loop itself is the stdlib's ``multiprocessing.forkserver.main``.

Data flow::

    parent, thread starting the first forkserver child (under the instance's lock)
      ensure_running(): resource tracker running; listener socket + "alive" pipe;
        spawnv_passfds(python -c "import sys; sys.path[:] = ...; serve(...)")
    server process
      serve(): run the main script as __mp_main__ (if preloaded; a failure is left to the
               children, which re-run it and fail as the stdlib's would), then
               multiprocessing.forkserver.main(listener, alive, other preloads)
    children: forked by the server; multiprocessing.spawn.prepare() finds __main__ already
              loaded from the same path and does not run it again.

Differences from the stdlib this makes (documented in docs/differences.rst): a script's main
module runs once in the server rather than once in every child; what the top level computes is
shared by all children of that server.
"""

from __future__ import annotations

import os
import socket
import sys
from multiprocessing import connection, forkserver, process, resource_tracker, spawn, util

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ForkServer", "serve"]


class ForkServer(forkserver.ForkServer):
    """The stdlib's fork server client, whose server preloads the main script for real."""

    def ensure_running(self) -> None:
        """Start the server if it is not running (again if it died). Blocks only for the launch.

        The resource tracker is checked when the server is started, and again by every child's
        launch (``connect_to_new_process`` hands each child the tracker's descriptor).
        """
        with self._lock:
            if not self._server_alive():
                resource_tracker.ensure_running()
                self._launch()

    def _server_alive(self) -> bool:
        """Whether our server process runs; a dead one is reaped and forgotten."""
        if self._forkserver_pid is None:
            return False
        if os.waitpid(self._forkserver_pid, os.WNOHANG)[0] == 0:
            return True
        os.close(self._forkserver_alive_fd)
        self._forkserver_address = self._forkserver_alive_fd = self._forkserver_pid = None
        return False

    def _launch(self) -> None:
        main_path, sys_path, argv = _main_and_path()
        listener, address = _listener()
        # Every process that may ask for children holds the write end; the server exits when
        # the last of them is gone (end of file on the read end).
        alive_r, alive_w = os.pipe()
        try:
            preload = list(self._preload_modules)
            if "cloudpickle" not in preload and (main_path is None or "cloudpickle" in sys.modules):
                # A notebook's (or any main module's without a file) classes reach children by
                # value, as do a program's once it sends something by value (it has loaded
                # cloudpickle): each child would import cloudpickle (20-40 ms) for the first such
                # class. Other programs' children never need it, and every module the server
                # holds costs each child CPU time at its fork and exit (nbproc.popen).
                preload.append("cloudpickle")
            command = _server_command(listener.fileno(), alive_r, preload, main_path, sys_path, argv)
            pid = util.spawnv_passfds(command[0], command, [listener.fileno(), alive_r])
        except BaseException:
            os.close(alive_w)
            raise
        finally:
            os.close(alive_r)
            listener.close()  # the server has its own copy
        self._forkserver_address, self._forkserver_alive_fd, self._forkserver_pid = address, alive_w, pid


def _listener() -> tuple[socket.socket, str]:
    """A listening Unix socket at a fresh address, which only this user may connect to."""
    address = connection.arbitrary_address("AF_UNIX")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock, address


def _server_command(
    listener_fd: int, alive_r: int, preload: list[str], main_path: str | None, sys_path: list[str], argv: list[str]
) -> list[Any]:
    """The server's command line. It starts as the stdlib's server command does, so tools (and
    the test suite) that recognise a fork server by its command line recognise this one."""
    from .popen import get_executable

    code = (
        "from multiprocessing.forkserver import main; "
        f"import sys; sys.path[:] = {sys_path!r}; "
        "from nbproc._forkserver_boot import serve; "
        f"serve({listener_fd}, {alive_r}, {preload!r}, {main_path!r}, {argv!r})"
    )
    executable = get_executable()
    return [executable, *util._args_from_interpreter_flags(), "-c", code]


def _main_and_path() -> tuple[str | None, list[str], list[str]]:
    """The main script to preload (None: no file to run), the parent's ``sys.path`` and ``sys.argv``."""
    from .popen import _preparation_data

    data: dict[str, Any] = _preparation_data("ignore")
    return data.get("init_main_from_path"), data["sys_path"], data["sys_argv"]


def serve(listener_fd: int, alive_r: int, preload: list[str], main_path: str | None, argv: list[str]) -> None:
    """The server process: preload, then run the stdlib's server loop until the parent is gone.

    ``argv`` is the parent's ``sys.argv``: a script's top level may read it, and a child
    running the script (spawn, or the stdlib's forkserver) sees the parent's too.
    """
    if main_path is not None and "__main__" in preload:
        sys.argv = list(argv)
        # The server's stdin is /dev/null while the stdlib's children run the script (its
        # server closes stdin before forking them): so here too, before the script runs.
        util._close_stdin()
        if not _preload_main(main_path):
            # What the script's top level did before failing (an nbproc setting, a module
            # half-imported) must not leak into children that run it again: start over as
            # a fresh server that does not preload it, on the same descriptors.
            command = _server_command(listener_fd, alive_r, preload, None, sys.path, argv)
            os.execv(command[0], command)
    if sys.platform == "linux":
        from . import _orphans

        _orphans._prctl()  # looked up once here: every daemonic child calls it (nbproc._orphans)
    forkserver.main(listener_fd, alive_r, [name for name in preload if name != "__main__"])


def _preload_main(main_path: str) -> bool:
    """Run the main script as ``__mp_main__`` here, as a spawned child runs it; False if it failed.

    ``_inheriting`` marks this process as bootstrapping, as in a child, so a script without the
    ``if __name__ == "__main__":`` guard gets the stdlib's "bootstrapping phase" error instead of
    starting processes from the server. Any failure is left to the children: they see no
    preloaded main module, run the script themselves and fail as the stdlib's children would.
    """
    current = process.current_process()
    current._inheriting = True  # type: ignore[attr-defined]
    try:
        spawn.import_main_path(main_path)
    except BaseException:  # noqa: BLE001 - reported by each child, which re-runs the script
        return False
    finally:
        del current._inheriting  # type: ignore[attr-defined]
        for stream in (sys.stdout, sys.stderr):  # what the top level printed appears now
            stream.flush()
    return True
