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
    _cleanup,
    _dangling,
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

# The same process-tree bookkeeping as the stdlib's (one tree, see above): ``_cleanup`` reaps
# finished children, ``_dangling`` tracks live Process objects (test suites read both).
_reexported_private = (_cleanup, _dangling)
