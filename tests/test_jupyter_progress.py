"""The notebook progress bar (``nbproc.jupyter.progress``) seen through a real kernel's saved state.

nbclient runs the cells in an ipykernel and saves the final state of every widget in the
notebook's metadata, as JupyterLab does on save. A map of 100 items with ``chunksize=7``
(15 chunks, the last one short) must end with ``value == max == 100`` and the green style;
a map whose items fail ends red and counts the failed items; a map interrupted from outside
(SIGINT to the kernel's process group, as the Interrupt button) ends amber and says
"interrupted". The display's ``text/plain`` part must hold the final line, so a statically
rendered notebook shows where the bar ended. After ``%load_ext nbproc`` (automatic mode) a
quick map shows no bar and a ~2 s one does; an ``imap`` over a generator reaches its total.
One kernel for all of it (about 12 s).
"""

from __future__ import annotations

import re

import pytest
from _notebook import run_cells, widget_states

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

SETUP = """
import time
import nbproc

pool = nbproc.get_context("forkserver").Pool(2)

def slow(x):
    time.sleep(0.01)
    return x

def fail_some(x):
    if x % 10 == 3:
        raise ValueError(x)
    return x
"""

OK_MAP = """
result = pool.map(slow, range(100), chunksize=7, progress="ok-map")
print(len(result), result == list(range(100)))
"""

FAILING_MAP = """
try:
    pool.map(fail_some, range(30), chunksize=1, progress="failing-map")
except ValueError as exc:
    print("raised", exc)
"""

INTERRUPTED_MAP = """
pool.map(time.sleep, [30, 30, 30, 30], chunksize=1, progress="interrupted-map")
"""

AFTER = """
print("after", pool.map(slow, range(3)))
"""

AUTO = "%load_ext nbproc"
AUTO_QUICK = "quick = pool.map(slow, range(10))"  # ~0.05 s: no bar in automatic mode
AUTO_SLOW = "slow_result = pool.map(time.sleep, [0.6] * 6, chunksize=1)"  # ~1.8 s: a bar appears
UNSIZED = """
unsized = list(pool.imap(slow, iter(range(40)), progress="unsized-imap"))
pool.terminate()
"""


def _bars(nb):
    """label -> (IntProgress state, status text) for every nbproc bar in the saved widget state."""
    states = widget_states(nb)
    bars = {}
    for state in states.values():
        if state["_model_name"] != "HBoxModel" or "nbproc-progress" not in state.get("_dom_classes", []):
            continue
        title, bar, status = (states[child.removeprefix("IPY_MODEL_")] for child in state["children"])
        label = re.sub(r"<[^>]+>", "", title["value"])
        bars[label] = (bar, status["value"])
    return bars


def _plain_texts(cell):
    return [o["data"]["text/plain"] for o in cell["outputs"] if o.get("output_type") == "display_data"]


def test_widget_end_states_are_saved(tmp_path):
    cells = [SETUP, OK_MAP, FAILING_MAP, INTERRUPTED_MAP, AFTER, AUTO, AUTO_QUICK, AUTO_SLOW, UNSIZED]
    nb = run_cells(cells, tmp_path, interrupt={3: 3.0})
    assert "100 True" in "".join(o.get("text", "") for o in nb.cells[1].outputs)
    bars = _bars(nb)
    assert set(bars) == {"ok-map", "failing-map", "interrupted-map", "map(sleep)", "unsized-imap"}, bars

    ok, status = bars["ok-map"]
    assert ok["value"] == ok["max"] == 100, ok
    assert ok["bar_style"] == "success" and "100/100" in status and "done in" in status, (ok, status)

    failing, status = bars["failing-map"]
    assert failing["value"] == failing["max"] == 30
    assert failing["bar_style"] == "danger" and "3 failed" in status, (failing, status)

    interrupted, status = bars["interrupted-map"]
    assert interrupted["max"] == 4 and interrupted["value"] == 0  # stops where the work stopped
    assert interrupted["bar_style"] == "warning" and "0/4 · interrupted" in status, (interrupted, status)

    # A static render shows where each bar ended: the display's text/plain was replaced.
    assert any(t.startswith("ok-map: 100/100") for t in _plain_texts(nb.cells[1])), nb.cells[1].outputs
    assert any("3 failed" in t for t in _plain_texts(nb.cells[2])), nb.cells[2].outputs
    assert any("interrupted" in t for t in _plain_texts(nb.cells[3])), nb.cells[3].outputs
    assert "after [0, 1, 2]" in "".join(o.get("text", "") for o in nb.cells[4].outputs)

    # automatic mode (%load_ext nbproc): no bar for quick work, a bar for work over ~1 s
    assert _plain_texts(nb.cells[6]) == []
    auto, status = bars["map(sleep)"]
    assert auto["value"] == auto["max"] == 6 and auto["bar_style"] == "success", (auto, status)
    assert any(t.startswith("map(sleep): 6/6") for t in _plain_texts(nb.cells[7]))

    # an iterable of unknown length: the total is known at the end, and the bar reaches it
    unsized, status = bars["unsized-imap"]
    assert unsized["value"] == unsized["max"] == 40 and "40/40" in status, (unsized, status)


def test_status_text_has_no_eta_without_a_total():
    from nbproc.jupyter.progress import format_status
    from nbproc.progress import ProgressEvent

    running = ProgressEvent("done", 1, "imap(f)", 1, None, 20, 12, 0, False)
    assert format_status(running, 2.0) == "12 done · 6/s"
    sized = ProgressEvent("done", 1, "map(f)", 1, 40, 40, 10, 2, False)
    assert format_status(sized, 2.0) == "12/40 · 2 failed · 6/s · ETA 5s"
    stopped = ProgressEvent("cancelled", 1, "imap(f)", 8, None, 20, 12, 8, True, reason="stopped")
    assert format_status(stopped, 2.0) == "12 done · stopped"
