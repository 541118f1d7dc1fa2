"""``nbproc.util``: the stdlib's logging and helpers, shared with it and reaching children.

Logging tests run in a fresh interpreter (``tests/_examples.py``): ``log_to_stderr`` adds a
handler to the process-wide ``'multiprocessing'`` logger, which must not leak into the rest of
the test session.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.util

import pytest
from _examples import run_example

import nbproc
import nbproc.util

LOGGING_SCRIPT = """
import logging
import multiprocessing

def child():
    logger = multiprocessing.get_logger()
    logger.info('hello from %s', multiprocessing.current_process().name)
    print('child level', logger.getEffectiveLevel(), flush=True)

if __name__ == '__main__':
    logger = multiprocessing.log_to_stderr(logging.INFO)
    assert logger is multiprocessing.get_logger()
    logger.warning('doomed')
    p = multiprocessing.Process(target=child)
    p.start()
    p.join()
    print('exitcode', p.exitcode)
"""

UTIL_SCRIPT = """
import logging
import multiprocessing
import multiprocessing.util as mp_util
import nbproc.util

if __name__ == '__main__':
    assert nbproc.get_logger() is mp_util.get_logger() is logging.getLogger('multiprocessing')
    logger = nbproc.util.log_to_stderr(logging.DEBUG)
    assert logger is nbproc.get_logger() and logger.level == logging.DEBUG
    assert not logger.propagate
    nbproc.util.info('info through the helper')
    nbproc.util.sub_warning('sub-warning through the helper')
    nbproc.util.sub_debug('below DEBUG: not shown')
    assert len(logger.handlers) == 1, logger.handlers
"""


def test_names_are_the_stdlib_objects():
    for name in nbproc.util.__all__:
        assert getattr(nbproc.util, name) is getattr(multiprocessing.util, name), name
    for name in multiprocessing.util.__all__:
        assert name in nbproc.util.__all__, name
    assert nbproc.util.DEFAULT_LOGGING_FORMAT == "[%(levelname)s/%(processName)s] %(message)s"
    assert (nbproc.SUBDEBUG, nbproc.SUBWARNING) == (nbproc.util.SUBDEBUG, nbproc.util.SUBWARNING) == (5, 25)


def _log_lines(stderr: str) -> set[str]:
    """Log records of the documented format, minus ones naming temporary paths."""
    return {line for line in stderr.splitlines() if line.startswith("[") and "temp directory" not in line}


@pytest.mark.timeout(120)
def test_log_to_stderr_reaches_children(start_method):
    nb = run_example(LOGGING_SCRIPT, start_method, "nbproc")
    assert nb.returncode == 0, nb.stderr
    lines = _log_lines(nb.stderr)
    for expected in [
        "[WARNING/MainProcess] doomed",
        "[INFO/Process-1] child process calling self.run()",
        "[INFO/Process-1] hello from Process-1",
        "[INFO/Process-1] process exiting with exitcode 0",
    ]:
        assert expected in lines, f"{expected!r} not in stderr:\n{nb.stderr}"
    assert nb.stdout.splitlines() == ["child level 20", "exitcode 0"]
    std = run_example(LOGGING_SCRIPT, start_method, "multiprocessing")
    assert std.returncode == 0, std.stderr
    assert lines == _log_lines(std.stderr)
    assert nb.stdout == std.stdout


def test_util_helpers_and_context_functions_share_the_logger():
    result = run_example(UTIL_SCRIPT, None, "nbproc")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:2] == [
        "[INFO/MainProcess] info through the helper",
        "[Level 25/MainProcess] sub-warning through the helper",
    ]
    assert "[INFO/MainProcess] process shutting down" in lines  # the stdlib's own records, same logger
    assert not any("below DEBUG" in line for line in lines)


def test_star_import_exports_what_the_stdlibs_does():
    ours, theirs = {}, {}
    exec("from nbproc.util import *", ours)
    exec("from multiprocessing.util import *", theirs)
    assert set(ours) == set(theirs)
    assert all(ours[name] is theirs[name] for name in theirs if name != "__builtins__")
