"""Run the reference's example programs as real scripts, through nbproc or through the stdlib.

The reference's examples are written against ``multiprocessing``. :func:`run_example` writes
one to a temporary ``example.py`` with its imports pointed at ``module`` (``nbproc``: ``import
multiprocessing`` becomes ``import nbproc as multiprocessing``, ``from multiprocessing.x
import y`` becomes ``from nbproc.x import y``...), chooses the start method with
``set_start_method`` as the first statement under ``if __name__ == '__main__':``, and runs it
with ``sys.executable`` in a fresh process — so spawned children re-import the file exactly
as they would for a user. Running the same source with ``module='multiprocessing'`` gives
the stdlib's output to compare with.

:func:`start_example` does the same without waiting, for examples that are two programs
(a server and a client). Both kill the example's whole process group if it outlives its
timeout, so a hanging example cannot leave children behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

__all__ = ["run_example", "start_example", "rewrite_imports", "RunningExample"]

REPO_ROOT = Path(__file__).resolve().parent.parent

_IMPORT_NAME = r"[\w.]+(\s+as\s+\w+)?"
_IMPORT = re.compile(rf"^(?P<indent>\s*)import\s+(?P<items>{_IMPORT_NAME}(\s*,\s*{_IMPORT_NAME})*)\s*(#.*)?$")
_IMPORT_ITEM = re.compile(r"^multiprocessing(?P<sub>(\.\w+)*)(\s+as\s+(?P<alias>\w+))?$")
_FROM = re.compile(r"^(?P<indent>\s*)from\s+multiprocessing(?P<sub>(\.\w+)*)\s+import\s+(?P<names>.+)$")
_ANY_IMPORT = re.compile(r"^\s*(import|from)\s.*\bmultiprocessing\b")
_MAIN_GUARD = re.compile(r"""^(?P<indent>\s*)if\s+__name__\s*==\s*(['"])__main__\2\s*:\s*(#.*)?$""")


def rewrite_imports(source: str, module: str) -> str:
    """Point every ``multiprocessing`` import of ``source`` at ``module``.

    Raises ``ValueError`` for an import line it cannot rewrite faithfully (e.g. ``import os,
    multiprocessing``) rather than silently running the example against the stdlib.
    """
    if module == "multiprocessing":
        return source
    lines = []
    for line in source.splitlines():
        if (m := _IMPORT.match(line)) and _ANY_IMPORT.match(line):
            items = [item.strip() for item in m["items"].split(",")]
            line = m["indent"] + "; ".join(_rewrite_import_item(item, module) for item in items)
        elif m := _FROM.match(line):
            line = f"{m['indent']}from {module}{m['sub'] or ''} import {m['names']}"
        elif _ANY_IMPORT.match(line):
            raise ValueError(f"cannot rewrite this import for {module}: {line!r}")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _rewrite_import_item(item: str, module: str) -> str:
    """One name of an ``import a, b as c`` statement, as its own statement."""
    m = _IMPORT_ITEM.match(item)
    if m is None:
        return f"import {item}"
    sub, alias = m["sub"] or "", m["alias"]
    if alias:
        return f"import {module}{sub} as {alias}"
    if sub:
        return f"import {module}{sub}; import {module} as multiprocessing"
    return f"import {module} as multiprocessing"


def _with_start_method(source: str, start_method: str | None, module: str) -> str:
    """Call ``set_start_method`` first thing under the main guard (or, without one, at the top)."""
    if start_method is None:
        return source
    call = f"__import__({module!r}).set_start_method({start_method!r})"
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if m := _MAIN_GUARD.match(line):
            body_indent = next(
                (re.match(r"\s*", body).group() for body in lines[i + 1 :] if body.strip()),
                m["indent"] + "    ",
            )
            lines.insert(i + 1, f"{body_indent}{call}")
            return "\n".join(lines) + "\n"
    return f"if __name__ == '__main__':\n    {call}\n" + source


def _prepare(source: str, start_method: str | None, module: str) -> tuple[Path, list[str], dict[str, str]]:
    script = _with_start_method(rewrite_imports(textwrap.dedent(source), module), start_method, module)
    workdir = Path(tempfile.mkdtemp(prefix="nbproc-example-"))
    path = workdir / "example.py"
    path.write_text(script)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return path, [sys.executable, str(path)], env


class RunningExample:
    """An example started by :func:`start_example`; :meth:`finish` waits for it."""

    def __init__(self, source: str, start_method: str | None, module: str, args: list[str]) -> None:
        self.path, cmd, env = _prepare(source, start_method, module)
        self.proc = subprocess.Popen(
            [*cmd, *args],
            cwd=self.path.parent,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, so a timeout can kill its children too
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Wait at most ``timeout`` seconds; on timeout kill the example's process group and raise."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"example timed out after {timeout} s\nstdout:\n{out}\nstderr:\n{err}") from None
        finally:
            shutil.rmtree(self.path.parent, ignore_errors=True)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_example(
    source: str, start_method: str | None, module: str = "nbproc", *, args: list[str] | None = None
) -> RunningExample:
    """Start ``source`` as a script (see :func:`run_example`) and return without waiting."""
    return RunningExample(source, start_method, module, list(args or []))


def run_example(
    source: str,
    start_method: str | None,
    module: str = "nbproc",
    *,
    timeout: float = 60.0,
    args: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as ``example.py`` with ``module`` standing in for ``multiprocessing``.

    ``start_method`` (``'fork'``, ``'spawn'``, ``'forkserver'`` or ``None`` for the default)
    is set at the top of the main guard. Returns the completed process (``stdout``,
    ``stderr`` as text, ``returncode``); an example still running after ``timeout`` seconds
    is killed with its children and the call raises ``AssertionError``.
    """
    return start_example(source, start_method, module, args=args).finish(timeout)
