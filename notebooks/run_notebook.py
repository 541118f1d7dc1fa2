"""Run a notebook headlessly through a real Jupyter kernel and print what each cell did.

This is ``make demo``: it shows nbproc working where it matters — inside an ipykernel, with
cell-defined functions — without a browser. The notebook is executed by nbclient in a
``python3`` kernel whose working directory is the notebook's folder (so relative paths behave
as in JupyterLab), then every code cell is printed as ``In [n]:`` with its source (abbreviated)
followed by its outputs as text: stream text, the ``text/plain`` of results and displays, and
the name and value of an error.

The notebook on disk is left as it is unless ``--save`` is given: then the executed notebook,
outputs included, is written back. That is how the stored outputs that ``pytest --nbval``
compares against are refreshed after a notebook is edited.

The kernel's own stderr (its start-up warnings, and echoes of what child processes write to
fd 2, which the cells show anyway) goes to a log file; its tail is printed if the run fails.

The exit status is 0 when every cell ran, 1 when a cell raised or timed out (the cells' output
is still printed), 2 on bad usage.

Usage: ``python notebooks/run_notebook.py NOTEBOOK.ipynb [--timeout SECONDS] [--save]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

# Per-cell limit. Generous because the machine is small and shared: a cell that starts a fork
# server and a few spawned interpreters takes a second or two here, but can take far longer
# under load; a real hang is still caught instead of blocking `make demo` forever.
DEFAULT_CELL_TIMEOUT = 300

# How much of a cell's source is echoed: enough to recognise the cell, not a wall of code.
SOURCE_LINES_SHOWN = 8

# Lines of the kernel's stderr log shown when a run fails: enough for a crash's traceback.
KERNEL_LOG_TAIL = 40


def abbreviate(source: str, max_lines: int = SOURCE_LINES_SHOWN) -> str:
    """The first ``max_lines`` lines of a cell's source, with a note of how many were left out."""
    lines = source.rstrip().splitlines()
    if len(lines) <= max_lines:
        return "\n".join(lines)
    return "\n".join(lines[:max_lines] + [f"... ({len(lines) - max_lines} more lines)"])


def output_text(output: dict[str, Any]) -> str:
    """One output of a code cell as plain text (what a terminal can show of it)."""
    kind = output.get("output_type")
    if kind == "stream":
        return str(output.get("text", ""))
    if kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        if "text/plain" in data:
            return str(data["text/plain"]) + "\n"
        return f"<{', '.join(sorted(data))}>\n"
    if kind == "error":
        return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}\n"
    return f"<{kind} output>\n"


def print_cells(nb: nbformat.NotebookNode, out: Any = sys.stdout) -> None:
    """Echo each executed code cell's source and outputs."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        count = cell.get("execution_count") or " "
        print(f"In [{count}]:", file=out)
        for line in abbreviate(cell.source).splitlines():
            print(f"    {line}", file=out)
        outputs = "".join(output_text(o) for o in cell.get("outputs", []))
        if outputs:
            print(f"Out[{count}]:", file=out)
            for line in outputs.rstrip("\n").splitlines():
                print(f"    {line}", file=out)
        print(file=out)


def run(path: Path, timeout: int = DEFAULT_CELL_TIMEOUT, save: bool = False) -> int:
    """Execute the notebook at ``path`` in a fresh kernel; print its cells; return an exit status.

    Each cell may run for ``timeout`` seconds; a cell that takes longer is interrupted and
    reported as failed (nbclient raises ``CellTimeoutError``, a ``CellExecutionError``).
    The kernel is always shut down, even on failure. With ``save``, the executed notebook is
    written back to ``path`` only if every cell ran.
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
        record_timing=False,  # no per-cell timestamps: a re-saved notebook differs only where outputs do
    )
    started = time.monotonic()
    failure: BaseException | None = None
    with tempfile.NamedTemporaryFile("w+", prefix="nbproc-kernel-", suffix=".log") as kernel_log:
        try:
            client.execute(stderr=kernel_log)
        except CellExecutionError as exc:
            failure = exc
        elapsed = time.monotonic() - started
        print_cells(nb)
        if failure is not None:
            kernel_log.seek(0)
            tail = "".join(kernel_log.readlines()[-KERNEL_LOG_TAIL:])
            print(f"FAILED: a cell of {path} raised after {elapsed:.1f} s:\n{failure}", file=sys.stderr)
            print(f"--- kernel stderr (last {KERNEL_LOG_TAIL} lines) ---\n{tail}", file=sys.stderr)
            return 1
    n_code = sum(1 for c in nb.cells if c.cell_type == "code")
    print(f"OK: {path}: {n_code} code cells ran in a real kernel in {elapsed:.1f} s")
    if save:
        nbformat.write(nb, path)
        print(f"saved the outputs to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=int, default=DEFAULT_CELL_TIMEOUT, help="per-cell limit in seconds")
    parser.add_argument("--save", action="store_true", help="write the executed notebook (with outputs) back")
    args = parser.parse_args(argv)
    if not args.notebook.is_file():
        parser.error(f"no such notebook: {args.notebook}")
    return run(args.notebook, args.timeout, args.save)


if __name__ == "__main__":
    sys.exit(main())
