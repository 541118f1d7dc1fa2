"""nbproc — process-based parallelism that works from Jupyter notebooks.

A drop-in for the stdlib's :mod:`multiprocessing` (``import nbproc as multiprocessing``):
the same names, signatures and semantics, with objects crossing process boundaries through
cloudpickle, so functions, lambdas, closures and classes defined in a notebook cell work
under every start method. The default start method is ``forkserver`` on Linux.

As in the stdlib, the module-level functions are the bound methods of the default context.
Importing nbproc imports neither IPython, ipywidgets nor dask.
"""

from __future__ import annotations

import multiprocessing as _std_multiprocessing
import sys as _sys

# process: always loaded, as multiprocessing.process is (code reads nbproc.process._dangling);
# _output: registers the output-forwarding set-up hook (a no-op outside a Jupyter kernel);
# config: the user's switches (nbproc.config.forward_output).
from . import _output, config, process  # noqa: F401
from . import context as _context
from .exceptions import SerializationError
from .serialization import get_serializer, set_serializer

__version__ = "0.1.0"

# ``from nbproc import *`` exports exactly the names ``from multiprocessing import *`` does —
# the running stdlib's list, so a Python that adds one is noticed at once — each bound to
# nbproc's default context, then nbproc's own additions.
__all__ = list(_std_multiprocessing.__all__)
globals().update((name, getattr(_context._default_context, name)) for name in __all__)
__all__ += ["SerializationError", "set_serializer", "get_serializer"]
__all__ += ["load_ipython_extension", "unload_ipython_extension"]

from .exceptions import (  # noqa: E402 - after the context names
    InitializerError,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerLostError,
)

__all__ += ["WorkerLostError", "InitializerError", "TaskCancelledError", "TaskTimeoutError"]

SUBDEBUG = 5
SUBWARNING = 25

# As the stdlib does: lets a child that re-runs a script's main module find it under this name.
if "__main__" in _sys.modules:
    _sys.modules.setdefault("__mp_main__", _sys.modules["__main__"])


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext nbproc``: imported lazily so that workers never import IPython."""
    from .jupyter import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext nbproc``: removes what ``%load_ext nbproc`` installed."""
    from .jupyter import unload_ipython_extension as _unload

    _unload(ipython)
