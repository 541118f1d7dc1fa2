"""``multiprocessing.resource_sharer`` for nbproc — the stdlib's fd-sharing thread, re-exported.

Why a mirror: outside process start-up, a connection or socket pickled by nbproc is reduced
by the stdlib's ``reduction.DupFd``/``DupSocket``, which register the fd with the stdlib's
resource-sharer thread; a child asks *that* thread for it. ``stop()`` must therefore stop the
same thread, so nbproc re-exports it instead of running a second one.
"""

from __future__ import annotations

from multiprocessing.resource_sharer import DupFd, _resource_sharer, stop

__all__ = ["stop", "DupFd"]
_reexported_private = (_resource_sharer,)  # part of the mirror (the stdlib's tests use it)
