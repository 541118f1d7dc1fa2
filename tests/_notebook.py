"""Run cells in a real kernel (nbclient) for the Jupyter-layer tests, with fd capture off.

fd capture off (``--IPKernelApp.capture_fd_output=False``): with it on, ipykernel would copy
any child's raw output into the cell and hide whether nbproc routed it there.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

CELL_TIMEOUT = 120  # per cell; far above what any cell here needs, for a loaded 2-core machine


def interrupt_kernel(client: NotebookClient) -> None:
    """SIGINT to the kernel's process group, as the Interrupt button does for a local kernel."""
    pid = client.km.provisioner.process.pid
    os.killpg(os.getpgid(pid), signal.SIGINT)


def run_cells(
    sources: list[str], path: Any, *, interrupt: dict[int, float] | None = None, errors: set[int] = frozenset()
) -> Any:
    """Execute ``sources`` as one notebook; return it (outputs and widget state filled in).

    ``interrupt`` maps a cell index to the delay after which the kernel is interrupted while
    that cell runs (the cell must then fail); cells in ``errors`` may fail (their error is kept
    in their outputs), any other failing cell raises nbclient's CellExecutionError.
    """
    interrupt = interrupt or {}
    nb = new_notebook(cells=[new_code_cell(src) for src in sources])
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(path)}},
        extra_arguments=["--IPKernelApp.capture_fd_output=False"],
    )
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            timer = None
            if index in interrupt:
                timer = threading.Timer(interrupt[index], interrupt_kernel, (client,))
                timer.start()
            try:
                client.execute_cell(cell, index, store_history=True)
            except Exception:
                if index not in interrupt and index not in errors:
                    raise
            else:
                if index in interrupt:
                    raise AssertionError(f"cell {index} was meant to be interrupted but completed")
            finally:
                if timer is not None:
                    timer.cancel()
        client.set_widgets_metadata()
    return nb


def text_of(cell: Any, name: str = "stdout") -> str:
    """The stream text of one cell."""
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == name)


def widget_states(nb: Any) -> dict[str, dict[str, Any]]:
    """Model id -> saved state of every widget in the notebook's metadata."""
    saved = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = saved.get("state", {})
    return {model_id: model["state"] | {"_model_name": model["model_name"]} for model_id, model in models.items()}
