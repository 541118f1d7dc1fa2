"""Shared test fixtures: start-method parametrization and the leftover-children check.

Every test that starts processes takes ``ctx`` (or ``start_method``) and so runs under fork,
spawn and forkserver. The autouse ``no_leftover_children`` fixture fails any test that leaves
a child process running when it ends (and kills what it finds, so one leak does not cascade).
Long-lived helpers that the stdlib keeps on purpose for the whole interpreter — the fork
server and the resource tracker — are not counted as leaks.
"""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

import nbproc

START_METHODS = ["fork", "spawn", "forkserver"]

# Processes that live for the whole interpreter by design (one per interpreter, not per test).
_LONG_LIVED_MARKERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


def _is_long_lived(proc: psutil.Process) -> bool:
    try:
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False
    if not any(marker in cmdline for marker in _LONG_LIVED_MARKERS):
        return False
    # A fork server's children carry the server's command line too (they are forks of it), so
    # the command line alone would hide a leaked forkserver worker: a process whose parent has
    # the same command line is such a child, not a server.
    try:
        parent = proc.parent()
        return parent is None or " ".join(parent.cmdline()) != cmdline
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return False


# Children a module-scoped fixture owns beyond one test (e.g. a kernel's pool that replaced its
# interrupted workers), each added by the test that checked it is idle and expected there.
_KEPT_BY_FIXTURES: set[int] = set()


def keep_children(pids: set[int] | list[int]) -> None:
    """Exempt these verified, fixture-owned children from the leftover check (see above)."""
    _KEPT_BY_FIXTURES.update(pids)


def _live_children() -> list[psutil.Process]:
    me = psutil.Process()
    found = []
    for child in me.children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        if child.pid not in _KEPT_BY_FIXTURES and not _is_long_lived(child):
            found.append(child)
    return found


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def ctx(start_method: str):
    return nbproc.get_context(start_method)


@pytest.fixture(autouse=True)
def no_leftover_children(request: pytest.FixtureRequest):
    before = {p.pid for p in _live_children()}
    yield
    nbproc.active_children()  # joins finished children, as a user's next call would
    deadline = time.monotonic() + 5.0  # children given a few seconds to finish exiting
    leftover = [p for p in _live_children() if p.pid not in before]
    while leftover and time.monotonic() < deadline:
        time.sleep(0.05)
        nbproc.active_children()
        leftover = [p for p in _live_children() if p.pid not in before]
    if leftover:
        described = []
        for proc in leftover:
            try:
                described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        pytest.fail(f"test left {len(leftover)} child process(es) running:\n" + "\n".join(described))


def pytest_report_header(config: pytest.Config) -> str:
    methods = ", ".join(START_METHODS)
    return f"nbproc start methods under test: {methods}; python {sys.version.split()[0]}; pid {os.getpid()}"
