"""``multiprocessing.spawn`` for nbproc — how a spawned child starts, with nbproc's settings.

A spawned child runs the stdlib's ``spawn_main``/``_main`` (they read the start-up data and the
process object from a pipe; nbproc only changes who serialized them, see :mod:`nbproc.popen`),
so those are re-exported. What differs is nbproc's own state: the interpreter used for children
(:func:`set_executable` here does not change the stdlib's), the start-up data (nbproc's does not
fix the stdlib's start method as a side effect) and the command line built from them.
"""

from __future__ import annotations

from multiprocessing.spawn import (
    _main,
    freeze_support,
    import_main_path,
    is_forking,
    prepare,
    spawn_main,
)

from .popen import _preparation_data as get_preparation_data
from .popen import get_executable, set_executable
from .popen import spawn_command_line as get_command_line

__all__ = [
    "_main",
    "freeze_support",
    "set_executable",
    "get_executable",
    "get_preparation_data",
    "get_command_line",
    "import_main_path",
    "is_forking",
    "prepare",
    "spawn_main",
]
