"""The notebook progress bar (``nbproc.jupyter.progress``) seen through a real kernel's saved state.

nbclient runs the cells in an ipykernel and saves the final state of every widget in the
notebook's metadata, as JupyterLab does on save. A map of 100 items with ``chunksize=7``
(15 chunks, the last one short) must end with ``value == max == 100`` and the green style;
a map whose items fail ends red and counts the failed items; a map interrupted from outside
(SIGINT to the kernel's process group, as the Interrupt button) ends amber and says
"interrupted". The display's ``text/plain`` part must hold the final line, so a statically
rendered notebook shows where the bar ended. One kernel for all of it (about 10 s).
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
    nb = run_cells([SETUP, OK_MAP, FAILING_MAP, INTERRUPTED_MAP, AFTER], tmp_path, interrupt={3: 3.0})
    assert "100 True" in "".join(o.get("text", "") for o in nb.cells[1].outputs)
    bars = _bars(nb)
    assert set(bars) == {"ok-map", "failing-map", "interrupted-map"}, bars

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
