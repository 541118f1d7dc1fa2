"""Worker output forwarding — the half that runs everywhere and never imports IPython.

The kernel half (the router that reads the children's pipes and sends ``stream`` messages on
iopub) is :mod:`nbproc.jupyter.output`; its docstring draws the whole data flow. This module
holds what the lower layers call, each a no-op unless forwarding is on:

- the child set-up hook (:func:`capture` in the parent, :func:`apply` in the child), registered
  with :func:`nbproc.process.register_setup_hook` under every start method;
- in a pool worker, :func:`task_started` / :func:`task_finished` around each task: they mark in
  the output streams which job the following bytes belong to, and flush Python's buffers before
  the result leaves, so that a blocking call can deliver all of a task's output;
- in the kernel, :func:`note_job` when a Pool job is created (remembers the submitting cell) and
  :func:`sync` when a blocking call (``get``, ``map``, ``next``, ``join``) is about to return.

Child side, after :func:`apply`::

    print() / sys.stderr (line-buffered, UTF-8) --+
    os.write(1|2), C code, subprocesses ----------+--> fd 1 = write end of pipe "stdout"  --> kernel router
                                                       fd 2 = write end of pipe "stderr"  --> kernel router
    pool worker at a new job: MARK(job) written to fds 1 and 2 (after flushing Python's buffers)

The read ends travel to the router over its Unix datagram socket (``SCM_RIGHTS``), sent by the
child itself: the parent never holds a write end, so the router sees end-of-file when the child
and everything that inherited its fds are gone, and the same path serves fork, spawn and
forkserver without passing descriptors through the launcher.

Outside a kernel :func:`capture` returns ``None`` and children keep the inherited descriptors,
exactly as the stdlib's do. A child of a forwarded child is not forwarded again: it inherits
its parent's pipes.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import sys
from collections import namedtuple

TYPE_CHECKING = False  # typing is not imported with nbproc (import time)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ForwardState",
    "capture",
    "apply",
    "task_started",
    "task_finished",
    "note_job",
    "sync",
    "MARK_JOB",
    "REGISTRATION",
]

HOOK_NAME = "nbproc.output"

# child -> router datagram that carries the two read ends: (route key, child pid).
REGISTRATION = struct.Struct("!qi")
# The job id after the router's token in a marker: MARK = token + MARK_JOB.pack(job).
MARK_JOB = struct.Struct("!q")


# A named tuple, not a dataclass: every pool worker imports this module, and dataclasses costs
# ~4 ms of imports (inspect, ast, dis) per spawned worker.
ForwardState = namedtuple("ForwardState", "address route token")
ForwardState.__doc__ = """parent -> child (the set-up hook's state): where and under which route to register.

``address`` (str) is the router's datagram socket; ``route`` (int) names the cell that started
the child (looked up by the router when the pipes arrive); ``token`` (bytes) starts every job
marker the child writes into its own output (random per kernel, so user output cannot forge one).
"""


# True in a child whose fds 1/2 lead to a kernel's router (set by apply, cleared in a forked child).
forwarding = False
_token = b""
_last_job: int | None = None
# (st_dev, st_ino) of the two pipes, to write markers only into them (a task may point fd 1
# at a file of its own with os.dup2; a marker must not end up there).
_pipes: dict[int, tuple[int, int]] = {}
# The kernel-side router, once nbproc.jupyter.output started one in this process (else None).
_router: Any = None


def _after_fork_in_child() -> None:
    """A forked process is neither the kernel (its router copy is dead) nor yet forwarded."""
    global forwarding, _router, _last_job
    forwarding = False
    _router = None
    _last_job = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def set_router(router: Any) -> None:
    """Called by :mod:`nbproc.jupyter.output` when it starts (or stops) this process's router."""
    global _router
    _router = router


# -- the set-up hook ----------------------------------------------------------------------


def capture(start_method: str) -> ForwardState | None:
    """Parent, thread calling ``start()``: a route to the current cell, or ``None`` (no kernel,
    forwarding switched off, or this process is itself a forwarded child)."""
    if forwarding or "ipykernel" not in sys.modules or not hasattr(socket, "send_fds"):
        return None
    from . import config

    if not config.forward_output:
        return None
    from .jupyter import output

    return output.capture_route()


def apply(state: ForwardState) -> None:
    """Child, before ``run()``: point fds 1 and 2 at fresh pipes whose read ends the router gets.

    If the router cannot be reached (the kernel is going away), the child keeps its inherited
    descriptors and says so on stderr: a lost route must not kill the work.
    """
    global forwarding, _token, _last_job
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(state.address)
            socket.send_fds(sock, [REGISTRATION.pack(state.route, os.getpid())], [out_r, err_r])
    except OSError as exc:
        for fd in (out_w, err_w):
            os.close(fd)
        print(f"nbproc: output not forwarded to the notebook ({exc})", file=sys.stderr)
        return
    finally:
        os.close(out_r)
        os.close(err_r)
    for stream in (sys.stdout, sys.stderr):
        # What a spawned child printed before this point belongs to the inherited fds. Under
        # fork the stream is the kernel's object, whose buffer holds the *parent's* unsent
        # text: not flushed here, or the notebook would show it twice.
        if isinstance(stream, io.TextIOWrapper):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    # Fresh streams over the new fds (under fork the inherited ones are the kernel's objects).
    # Line buffering: a print() reaches the cell as it happens, as in a terminal.
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="strict", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    for fd in (1, 2):
        st = os.fstat(fd)
        _pipes[fd] = (st.st_dev, st.st_ino)
    forwarding, _token, _last_job = True, state.token, None


# -- pool workers -------------------------------------------------------------------------


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a user's replacement stream must not fail the task
            pass


def task_started(job: int) -> None:
    """Pool worker, before running a task of ``job``: what follows belongs to that job's cell."""
    global _last_job
    if not forwarding or job == _last_job:
        return
    _last_job = job
    _flush_std_streams()  # what an earlier job printed stays with that job
    mark = _token + MARK_JOB.pack(job)
    for fd, pipe in _pipes.items():
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == pipe:
                os.write(fd, mark)
        except OSError:  # the task closed it: nothing to mark
            pass


def task_finished() -> None:
    """Pool worker, before sending a result: the task's output is in the pipes, none buffered."""
    if forwarding:
        _flush_std_streams()


# -- the kernel side's entry points for the lower layers ------------------------------------


def note_job(job: int) -> None:
    """Kernel, thread creating a Pool job: remember the cell that submitted it."""
    router = _router
    if router is not None:
        router.note_job(job)


def sync() -> None:
    """Kernel, a blocking call about to return: deliver all output already written by children."""
    router = _router
    if router is not None:
        router.sync()


# -- registration: after the nbproc.config hook, so a forkserver child's stdio is in place first.
def _register() -> None:
    from .process import register_setup_hook

    register_setup_hook(HOOK_NAME, capture, apply)


_register()
