"""Named shared memory — ``SharedMemory`` and ``ShareableList`` (the stdlib's) and ``SharedMemoryManager``.

``SharedMemory`` and ``ShareableList`` are re-exported unchanged: a block is found by its name,
and both pickle as "attach to this name", so they cross to children under every start method
(and may be put on queues) without anything nbproc-specific. Creating, attaching, ``close()``
and ``unlink()`` and the resource tracker's clean-up are the stdlib's.

``SharedMemoryManager`` is the stdlib's ``multiprocessing.managers.SharedMemoryManager`` (its
server tracks the blocks it handed out and unlinks them at shutdown) with one change: when no
``ctx`` is given, its server process is started by nbproc's default context instead of the
stdlib's, so it follows ``nbproc.set_start_method`` and does not pin the stdlib's start method.
The manager only exchanges block names with its server, so it keeps the stdlib's transport;
it does not depend on :mod:`nbproc.managers`.
"""

from __future__ import annotations

from multiprocessing import managers as _std_managers
from multiprocessing.shared_memory import _USE_POSIX as _USE_POSIX  # read by code that branches on the platform
from multiprocessing.shared_memory import ShareableList, SharedMemory
from typing import Any

__all__ = ["SharedMemory", "ShareableList", "SharedMemoryManager"]


class SharedMemoryManager(_std_managers.SharedMemoryManager):
    """A manager whose server process creates and finally unlinks ``SharedMemory`` blocks.

    Same signature as the stdlib's (``address``, ``authkey``, ``serializer``, ``ctx`` and, from
    Python 3.11, ``shutdown_timeout``); ``ctx=None`` means nbproc's default context.
    """

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: Any = None,
        **kwargs: Any,
    ) -> None:
        if ctx is None:
            from .context import _default_context

            ctx = _default_context.get_context()
        super().__init__(address, authkey, serializer, ctx, **kwargs)
