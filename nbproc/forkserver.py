"""``multiprocessing.forkserver`` for nbproc — nbproc's own fork server, with the stdlib's API.

nbproc runs its own :class:`multiprocessing.forkserver.ForkServer` instance (see
:mod:`nbproc.popen`): its preload list is nbproc's, and a program that also uses the stdlib's
forkserver keeps a separate server with its own settings. This module exposes that instance as
``_forkserver`` and the stdlib's module-level functions bound to it, so code written against
``multiprocessing.forkserver`` (``ensure_running``, ``connect_to_new_process``...) acts on the
server nbproc's children actually come from.

``_forkserver`` is looked up on every access (module ``__getattr__``) because a forked child
replaces the inherited instance with a fresh one (:func:`nbproc.popen._fresh_forkserver_after_fork`).
:func:`get_inherited_fds` is the stdlib's: inside a forkserver child the stdlib's server code
records the fds it passed there, whichever ``ForkServer`` instance asked for the child.
"""

from __future__ import annotations

from multiprocessing.forkserver import (
    MAXFDS_TO_SEND,
    SIGNED_STRUCT,
    ForkServer,
    get_inherited_fds,
    main,
    read_signed,
    write_signed,
)
from typing import Any

from . import popen
from .popen import set_forkserver_preload

__all__ = ["ensure_running", "get_inherited_fds", "connect_to_new_process", "set_forkserver_preload"]
_reexported = (MAXFDS_TO_SEND, SIGNED_STRUCT, ForkServer, main, read_signed, write_signed)


def ensure_running() -> None:
    """Start nbproc's fork server if it is not running (it is restarted if it died)."""
    with popen._stdlib_start_method_untouched():
        popen.forkserver_instance().ensure_running()


def connect_to_new_process(fds: list[int]) -> tuple[int, int]:
    """Ask nbproc's fork server for a new child that inherits ``fds``.

    Returns ``(sentinel/status fd, data pipe write end)`` as the stdlib does. Blocks only for the
    server's start-up (if it was not running) and the fd hand-over; there is no timeout.
    """
    with popen._stdlib_start_method_untouched():
        return popen.forkserver_instance().connect_to_new_process(fds)


def __getattr__(name: str) -> Any:
    if name == "_forkserver":
        return popen.forkserver_instance()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
