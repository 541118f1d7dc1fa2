"""No orphans: a child ends when the process that started it dies (SIGKILL included).

A child set-up hook (name ``"nbproc.orphans"``). It applies to the children whose life is
bound to their parent's: daemonic ones (pool workers, by the stdlib's definition of a daemon)
always, and every nbproc child started from a Jupyter kernel (a restarted or killed kernel must
leave no worker, manager or user Process behind). A non-daemonic child of a script keeps the
stdlib's behaviour: it outlives a killed parent.

Two mechanisms, because neither covers everything::

    parent (thread calling start())          child (apply, before run())
    -------------------------------          ---------------------------
    capture(): pid, whether this is   ---->  1. Linux: prctl(PR_SET_PDEATHSIG, SIGKILL) when
      the main thread, in a kernel?             the child's OS parent is long-lived: the fork
                                                server (forkserver), or our main thread (fork,
                                                spawn); then re-check the parent, which may
                                                have died before the prctl
                                             2. where 1 does not follow the parent itself
                                                (forkserver, a child started from another
                                                thread, not Linux): a daemon thread waits on
                                                the parent's sentinel (a pipe whose other end
                                                only the parent holds) and ends the child when
                                                it reads EOF

Why not PDEATHSIG alone: it fires when the *thread* that forked the child exits, not the
process. A child started from a short-lived thread (a Pool built in a worker thread) would be
killed when that thread ends, so such children get only the watch thread. PDEATHSIG is also
Linux-only. Why not the watch alone: under fork, siblings forked later inherit the parent's end
of the sentinel pipe, so EOF can come late; and a child stuck in C code with the GIL held never
runs the thread. The forkserver's own server exits when the kernel's end of its "alive" pipe
closes, which takes its children with it through PDEATHSIG; but the server's children hold
that pipe too, so a forkserver child needs the watch thread to notice its parent's death.
Where PDEATHSIG follows the parent itself (fork and spawn from the main thread, on Linux) the
thread would add nothing, and starting it costs every child a thread hand-off before its
first task.
"""

from __future__ import annotations

import _thread
import os
import signal
import sys
import threading
from collections import namedtuple
from multiprocessing.process import current_process, parent_process

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHAN_EXIT_CODE = 3  # exit code of a child whose parent died (nobody reads it; useful in logs)


# A named tuple, not a dataclass: ``import nbproc`` loads this module (dataclasses: ~4 ms).
# Fields:
# pid: int
# start_method: str
# main_thread: bool
# in_kernel: bool
_ParentInfo = namedtuple("_ParentInfo", "pid start_method main_thread in_kernel")


def capture(start_method: str) -> _ParentInfo:
    from . import remote_error  # loaded when used: it imports dataclasses, multiprocessing.pool

    main_thread = threading.current_thread() is threading.main_thread()
    if start_method == "fork" and main_thread and sys.platform == "linux":
        _prctl()  # looked up here, once: every forked child inherits it instead of importing ctypes
    return _ParentInfo(os.getpid(), start_method, main_thread, remote_error._kernel_shell() is not None)


def apply(info: _ParentInfo) -> None:
    if not (current_process().daemon or info.in_kernel):
        return
    global _watching
    if sys.platform == "linux" and (info.main_thread or info.start_method == "forkserver"):
        _die_with_os_parent()
        if info.start_method != "forkserver":
            if os.getppid() != info.pid:
                os._exit(ORPHAN_EXIT_CODE)  # the parent died before the prctl
            _watching = True  # the signal follows the parent itself: no thread needed
            return
    sentinel = getattr(parent_process(), "sentinel", None)
    if sentinel is not None:
        _watching = True
        # A bare thread, not threading.Thread: its start() waits until the new thread has run,
        # a hand-off that every child would pay before its first task. This one needs nothing
        # of threading (no name, no join; like a daemon thread it never holds up the exit).
        _thread.start_new_thread(_exit_when_closed, (sentinel,))


_watching = False  # apply() made this process end with its parent (pool workers then need no watch of their own)


def watching_parent() -> bool:
    """Whether :func:`apply` made this process end with its parent (PDEATHSIG or the watch thread)."""
    return _watching


_prctl_function: Any = None  # libc's prctl through ctypes, once looked up (see _prctl)


def _prctl() -> Any:
    """libc's ``prctl``, looked up once per process.

    Importing ctypes costs 1-3 ms, which a child would pay before its first task. So the
    lookup is done where it is shared: a fork parent does it once in :func:`capture` (its
    forked children inherit the result), the fork server preloads ctypes
    (:mod:`nbproc.popen`); only a spawned child looks it up itself, through ``_ctypes`` alone
    (:func:`_bare_libc_function`, ~0.4 ms instead of ctypes' 2).
    """
    global _prctl_function
    if _prctl_function is None:
        try:
            _prctl_function = _bare_libc_function("prctl")
        except Exception:  # noqa: BLE001 - an interpreter whose _ctypes differs: the public way
            import ctypes

            _prctl_function = ctypes.CDLL(None, use_errno=True).prctl
    return _prctl_function


def _bare_libc_function(name: str) -> Any:
    """A libc function returning a C int, called with int arguments, built on ``_ctypes`` alone.

    ``ctypes`` itself is ``_ctypes`` plus ~2 ms of Python (its type classes, ``CDLL``, the
    endianness module) that a spawned child would import only to make this one call; here are
    the three pieces that call needs, as ``ctypes.CDLL(None, use_errno=True)`` builds them:
    an int return type, a cdecl function type keeping ``errno``, and the process's own symbols.
    """
    import _ctypes

    class CInt(_ctypes._SimpleCData):
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = CInt

    class Library:
        _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)

    return Function((name, Library))


def _die_with_os_parent() -> None:
    if _prctl()(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        import _ctypes

        raise OSError(_ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _exit_when_closed(sentinel: int) -> None:
    try:
        from multiprocessing.connection import wait  # only in a child watching its parent

        wait([sentinel])
    except OSError:
        return  # the fd went away with an orderly shutdown of this process
    os._exit(ORPHAN_EXIT_CODE)
