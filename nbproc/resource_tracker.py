"""``multiprocessing.resource_tracker`` for nbproc — the stdlib's tracker process, re-exported.

Why a mirror: named semaphores and shared-memory segments created by nbproc's processes are
registered with the stdlib's resource tracker (nbproc's spawn/forkserver launchers pass its fd
to every child), so there must be one tracker per interpreter tree, not one per library.
``nbproc.resource_tracker._resource_tracker is multiprocessing.resource_tracker._resource_tracker``.
"""

from __future__ import annotations

from multiprocessing.resource_tracker import (
    _CLEANUP_FUNCS,
    ResourceTracker,
    _resource_tracker,
    ensure_running,
    getfd,
    main,
    register,
    unregister,
)

__all__ = ["ensure_running", "register", "unregister", "getfd", "main", "ResourceTracker"]
_reexported_private = (_CLEANUP_FUNCS, _resource_tracker)  # part of the mirror (the stdlib's tests use them)
