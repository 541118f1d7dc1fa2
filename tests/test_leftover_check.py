"""The leftover-children check itself: it must see every kind of child a test can leak.

A fork server's children are forks of the server and carry its command line, which once made the
check take a leaked forkserver worker for the long-lived server and let it pass unnoticed.
"""

from __future__ import annotations

import time

import pytest
from conftest import START_METHODS, _live_children

import nbproc


@pytest.mark.parametrize("start_method", START_METHODS)
def test_a_running_child_is_seen_under_every_start_method(start_method: str) -> None:
    proc = nbproc.get_context(start_method).Process(target=time.sleep, args=(30,))
    proc.start()
    try:
        assert proc.pid in {p.pid for p in _live_children()}
    finally:
        proc.terminate()
        proc.join(10)
    assert proc.pid not in {p.pid for p in _live_children()}
