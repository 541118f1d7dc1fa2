"""Run small programs as real scripts, through nbproc or the stdlib, and check what outlives them.

Exit behaviour (atexit, finalizers, the fork server...) only exists in a real interpreter that
ends, so the exit tests write a program to a file and run it with ``sys.executable`` in its own
session. :func:`survivors` then lists every process of that session still alive: whatever the
program started — children, manager servers, pool workers, the fork server, the resource
tracker — inherits the session, so "nothing survives" is checked without knowing their pids.

Programs are written against ``multiprocessing`` and take the start method as ``argv[1]``;
:func:`script` points their imports at ``nbproc`` (see :func:`_examples.rewrite_imports`).
``PYTHONUNBUFFERED`` is removed from their environment: block-buffered stdout is what a user's
redirected script has, and what loses output when a worker is killed before it flushes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from _examples import REPO_ROOT, rewrite_imports

__all__ = ["script", "start", "finish", "survivors", "normalise", "Run"]


def script(directory: Path, source: str, module: str, name: str = "program.py") -> Path:
    """Write ``source`` (imports rewritten for ``module``) as ``directory/name``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(rewrite_imports(source, module))
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


class Run:
    """A started script; ``stdout`` goes to a file (``out``) so a late writer is never cut off."""

    def __init__(self, path: Path, args: list[str], stdin_text: str | None = None) -> None:
        self.path = path
        self.out = path.with_suffix(f".{'-'.join(args)}.out")
        self.err = path.with_suffix(f".{'-'.join(args)}.err")
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(path), *args],
                cwd=path.parent,
                env=_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own session: survivors() finds everything it started
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_so_far(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for_stderr(self, marker: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.stderr_so_far():
                return True
            if self.proc.poll() is not None:
                return marker in self.stderr_so_far()
            time.sleep(0.02)
        return False


def start(path: Path, *args: str) -> Run:
    return Run(path, list(args))


def finish(run: Run, timeout: float) -> subprocess.CompletedProcess[str]:
    """Wait at most ``timeout`` s; a script still running then is killed (with its session) and
    the call raises AssertionError, so a hang fails the test instead of the whole suite."""
    try:
        run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_session(run.pid)
        run.proc.wait()
        raise AssertionError(
            f"{run.path.name} {run.proc.args[2:]} did not exit within {timeout} s\n"
            f"stdout:\n{run.out.read_text(errors='replace')}\nstderr:\n{run.stderr_so_far()}"
        ) from None
    return subprocess.CompletedProcess(
        run.proc.args, run.proc.returncode, run.out.read_text(errors="replace"), run.stderr_so_far()
    )


def _session_members(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return found


def survivors(sid: int, grace: float = 1.0) -> list[str]:
    """Processes of session ``sid`` still alive ``grace`` s after its leader exited (then killed)."""
    deadline = time.monotonic() + grace
    members = _session_members(sid)
    while members and time.monotonic() < deadline:
        time.sleep(0.05)
        members = _session_members(sid)
    described = []
    for proc in members:
        try:
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            continue
    kill_session(sid)
    return described


def kill_session(sid: int) -> None:
    for proc in _session_members(sid):
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


_VOLATILE = [
    (re.compile(r"\b(pid|PID)[ =]?\d+"), r"\1 N"),
    (re.compile(r"0x[0-9a-fA-F]+"), "0xADDR"),
    (re.compile(r"/tmp/\S+"), "/tmp/PATH"),
]


def normalise(text: str, *, sort: bool = True) -> list[str]:
    """Lines without pids and addresses; sorted when children print concurrently."""
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _VOLATILE:
            line = pattern.sub(replacement, line)
        lines.append(line.rstrip())
    return sorted(lines) if sort else lines
