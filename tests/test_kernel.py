"""nbproc inside a real Jupyter kernel: cell-defined objects cross to spawn and forkserver children.

This is the acceptance test of nbproc's reason to exist. A notebook is built with nbformat
and executed by nbclient in a real ipykernel (no mocks). Its cells define a function, a
lambda, a closure over a notebook variable, an instance of a notebook class and a notebook
``Process`` subclass. Each one is the child's target (or the child itself), and the child
sends its result back through a ``Pipe``. A cell prints one ``label: result`` line for each
case, and the test compares those lines.

The same cells then run with the stdlib's ``multiprocessing`` and spawn. There they must fail:
the lambda and the closure cannot be pickled in the parent, and children whose target lives in
the notebook's ``__main__`` die while unpickling (``AttributeError: Can't get attribute ...``).
If those cells passed, the nbproc cells would prove nothing.

One kernel per test function (about 1-2 s to start here), shut down by nbclient when the
notebook ends. The kernel's child processes go with it, which the autouse leftover-children
fixture checks.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(180)]

# Per-cell limit for nbclient. Far above the ~0.1 s a child takes here, for a loaded machine.
CELL_TIMEOUT = 120

# The cells' own bound on waiting for a child (seconds): a dead child never hangs a cell.
SETUP = """
import multiprocessing
import sys

import nbproc

ctx = {ctx_expr}
TIMEOUT = 60


class ChildFailed(Exception):
    pass


def run_child(process, receiver, sender):
    \"\"\"Start `process`, wait at most TIMEOUT s for one result on `receiver`; ChildFailed if none.\"\"\"
    try:
        process.start()
    finally:
        sender.close()
    try:
        if receiver.poll(TIMEOUT):
            try:
                return receiver.recv()
            except EOFError:
                pass
        process.join(TIMEOUT)
        raise ChildFailed(f"no result, child exit code {{process.exitcode}}")
    finally:
        receiver.close()
        if process.is_alive():
            process.kill()
        process.join(TIMEOUT)


def report(label, make_process, *args):
    \"\"\"Print `label: result` or `label: FAILED ...`: one comparable line per case.\"\"\"
    receiver, sender = ctx.Pipe(duplex=False)
    try:
        result = run_child(make_process(sender, *args), receiver, sender)
    except Exception as exc:
        print(f"{{label}}: FAILED {{type(exc).__name__}}: {{exc}}")
    else:
        print(f"{{label}}: {{result!r}}")
"""

# Each case cell sends its result back through the `conn` it is given.
CASES = {
    "function": """
        def square(x):
            return x * x


        def send_square(conn, x):
            conn.send(square(x))
            conn.close()
    """,
    "function-run": """
        report("function", lambda conn: ctx.Process(target=send_square, args=(conn, 7)))
    """,
    "lambda": """
        report("lambda", lambda conn: ctx.Process(target=lambda c, x: c.send(x**10), args=(conn, 2)))
    """,
    "closure": """
        greeting = "Hello"


        def make_sender(punctuation):
            def send_greeting(conn, name):
                conn.send(f"{greeting}, {name}{punctuation}")

            return send_greeting


        report("closure", lambda conn: ctx.Process(target=make_sender("!"), args=(conn, "kernel")))
    """,
    "instance": """
        class Tally:
            def __init__(self, start):
                self.total = start

            def add_and_send(self, conn, *amounts):
                self.total += sum(amounts)
                conn.send(self)

            def __repr__(self):
                return f"Tally({self.total})"


        tally = Tally(100)
        report("instance", lambda conn: ctx.Process(target=tally.add_and_send, args=(conn, 1, 2, 3)))
        print("parent still", tally)
    """,
    "process-subclass": """
        class Squarer(ctx.Process):
            def __init__(self, conn, numbers):
                super().__init__()
                self.conn = conn
                self.numbers = numbers

            def run(self):
                self.conn.send([n * n for n in self.numbers])
                self.conn.close()


        report("Process subclass", Squarer, [1, 2, 3])
    """,
    # A spawned or forkserver child is a fresh interpreter: the kernel's namespace (`In`,
    # `Out`, the cells' names) is not in its __main__, whereas a forked child would have it.
    "fresh-child": """
        report(
            "fresh child",
            lambda conn: ctx.Process(target=lambda c: c.send("In" in vars(sys.modules["__main__"])), args=(conn,)),
        )
    """,
}

CASE_LABELS = ["function", "lambda", "closure", "instance", "Process subclass", "fresh child"]

EXPECTED_NBPROC = [
    "function: 49",
    "lambda: 1024",
    "closure: 'Hello, kernel!'",
    "instance: Tally(106)",
    "parent still Tally(100)",
    "Process subclass: [1, 4, 9]",
    "fresh child: False",
]


def _kernel_env() -> dict[str, str]:
    """The test's environment minus PYTEST_CURRENT_TEST.

    ipykernel stops capturing fds 1 and 2 when it sees that variable, and then a child's
    stderr (the stdlib child's AttributeError) would not reach the cell as it does for users.
    """
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def _run_notebook(ctx_expr: str, workdir: Path) -> tuple[list[str], str]:
    """Execute the cells in a fresh kernel and return (stdout lines, all stderr text)."""
    sources = [SETUP.format(ctx_expr=ctx_expr)] + [textwrap.dedent(src) for src in CASES.values()]
    nb = new_notebook(cells=[new_code_cell(src.strip()) for src in sources])
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
    )
    with open(workdir / "kernel.log", "w") as kernel_log:
        client.execute(env=_kernel_env(), stderr=kernel_log)
    stdout: list[str] = []
    stderr = ""
    for cell in nb.cells:
        # A cell's stream messages joined, as a front end shows them: one print may arrive as
        # two messages ("text", then "\n") when the kernel's stream is flushed between its writes.
        cell_stdout = ""
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"cell raised {out.ename}: {out.evalue}\n{cell.source}"
            if out.output_type == "stream" and out.name == "stdout":
                cell_stdout += out.text
            elif out.output_type == "stream" and out.name == "stderr":
                stderr += out.text
        stdout.extend(cell_stdout.splitlines())
    return stdout, stderr


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_cell_defined_objects_cross_to_children(method: str, tmp_path: Path) -> None:
    stdout, stderr = _run_notebook(f"nbproc.get_context({method!r})", tmp_path)
    assert stdout == EXPECTED_NBPROC, f"kernel stderr:\n{stderr}"


def test_stdlib_multiprocessing_fails_on_the_same_cells(tmp_path: Path) -> None:
    """The control: the stdlib under spawn fails every case that nbproc passes."""
    stdout, stderr = _run_notebook('multiprocessing.get_context("spawn")', tmp_path)
    results = {line.split(":", 1)[0]: line for line in stdout if ":" in line}
    assert sorted(results) == sorted(CASE_LABELS), stdout
    # The fresh-child probe is itself a lambda, so it fails as well: every case does.
    for label in CASE_LABELS:
        assert "FAILED" in results[label], results[label]
    # Children whose target lives in the notebook's __main__ died while unpickling it...
    assert "exit code 1" in results["function"]
    assert "exit code 1" in results["instance"]
    assert "exit code 1" in results["Process subclass"]
    # ...and said why on their stderr, which the kernel forwarded to the cells.
    assert "AttributeError: Can't get attribute 'send_square'" in stderr
    assert "Can't get attribute 'Tally'" in stderr
    assert "Can't get attribute 'Squarer'" in stderr
