"""Process objects and the process tree — the stdlib's, shared with it.

``BaseProcess`` (names, identities, ``daemon``, ``authkey``, ``exitcode``, ``sentinel``...)
and the bookkeeping of the current process and its children are reused as they are: keeping
one process tree means ``nbproc.current_process()`` and ``multiprocessing.current_process()``
agree, and ``active_children()`` sees children started by either. nbproc's Process classes
(:mod:`nbproc.context`) subclass ``BaseProcess`` and own how a child is launched
(:mod:`nbproc.popen`).
"""

from __future__ import annotations

from multiprocessing.process import (
    ORIGINAL_DIR,
    AuthenticationString,
    BaseProcess,
    active_children,
    current_process,
    parent_process,
)

from .context import ForkProcess, ForkServerProcess, Process, SpawnProcess

__all__ = [
    "BaseProcess",
    "Process",
    "ForkProcess",
    "SpawnProcess",
    "ForkServerProcess",
    "current_process",
    "active_children",
    "parent_process",
    "AuthenticationString",
    "ORIGINAL_DIR",
]
