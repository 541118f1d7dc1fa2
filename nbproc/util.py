"""``multiprocessing.util`` for nbproc: logging, finalizers and process helpers — the stdlib's own.

Why re-export instead of reimplementing: these names carry process-wide state that the stdlib
machinery nbproc reuses reads directly, so there must be exactly one copy of it.

- The ``'multiprocessing'`` logger. :func:`get_logger` and :func:`log_to_stderr` configure the
  logger the stdlib logs to (``child process calling self.run()``, ``process exiting with
  exitcode 0``...), and a child inherits that configuration through its start-up data: fork
  copies it; under spawn and forkserver, nbproc's start-up data carries "log to stderr" and the
  level (read from this very module state) and the child's ``multiprocessing.spawn.prepare``
  applies them. Output uses the documented format ``[%(levelname)s/%(processName)s] %(message)s``.
- Finalizers (:class:`Finalize`) and after-fork hooks (:func:`register_after_fork`): the
  stdlib's bootstrap, which nbproc's children run, calls the stdlib's registries.
- :func:`get_temp_dir`: one private temporary directory per process, shared with the stdlib's
  listeners and the resource tracker.

So ``nbproc.util.get_logger() is multiprocessing.util.get_logger()``: configuring either one
configures both.
"""

from __future__ import annotations

from multiprocessing.util import (
    DEBUG,
    DEFAULT_LOGGING_FORMAT,
    INFO,
    LOGGER_NAME,
    MAXFD,
    NOTSET,
    SUBDEBUG,
    SUBWARNING,
    Finalize,
    ForkAwareLocal,
    ForkAwareThreadLock,
    abstract_sockets_supported,
    close_all_fds_except,
    close_fds,
    debug,
    get_logger,
    get_temp_dir,
    info,
    is_abstract_socket_namespace,
    is_exiting,
    log_to_stderr,
    register_after_fork,
    spawnv_passfds,
    sub_debug,
    sub_warning,
)

# ``from nbproc.util import *`` exports what ``from multiprocessing.util import *`` does (the
# same list on 3.10-3.13; tests/test_util.py compares); the other names imported above
# (``DEBUG``, ``close_fds``, ``spawnv_passfds``...) are public attributes there too, outside its
# ``__all__``.
__all__ = [
    "sub_debug",
    "debug",
    "info",
    "sub_warning",
    "get_logger",
    "log_to_stderr",
    "get_temp_dir",
    "register_after_fork",
    "is_exiting",
    "Finalize",
    "ForkAwareThreadLock",
    "ForkAwareLocal",
    "close_all_fds_except",
    "SUBDEBUG",
    "SUBWARNING",
]
_also_public = (
    DEBUG,
    DEFAULT_LOGGING_FORMAT,
    INFO,
    LOGGER_NAME,
    MAXFD,
    NOTSET,
    abstract_sockets_supported,
    close_fds,
    is_abstract_socket_namespace,
    spawnv_passfds,
)

# The stdlib's registries and exit hooks, shared rather than copied (one registry per
# interpreter is what makes finalizers and after-fork hooks work across both libraries).
# Code written against ``multiprocessing.util`` — CPython's own test suite among it — reads
# these private names directly.
from multiprocessing.util import (  # noqa: E402
    _afterfork_registry,
    _cleanup_tests,
    _exit_function,
    _finalizer_registry,
    _run_after_forkers,
    _run_finalizers,
)

_shared_private = (
    _afterfork_registry,
    _cleanup_tests,
    _exit_function,
    _finalizer_registry,
    _run_after_forkers,
    _run_finalizers,
)
