"""nbproc's fork server runs a script's main module once, as ``__mp_main__`` (nbproc._forkserver_boot).

The stdlib runs a script's top level in every spawn or forkserver child (its forkserver
``__main__`` preload never receives the script's path). nbproc's fork server runs it once,
before forking, so children start with it loaded; spawn children keep running it themselves.
Either way a child sees the script as ``__mp_main__``, with its top-level names and without
what the ``if __name__ == "__main__":`` block did.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(
    """
    import os
    import sys

    import nbproc

    METHOD = sys.argv[1]  # a top level that reads argv, as scripts do
    TOP_PID = os.getpid()  # where the top level ran
    sys.stdout.write("top level ran\\n")  # one write: processes share the pipe
    sys.stdout.flush()


    def where(_):
        main = sys.modules["__main__"]
        return main.__name__, main.METHOD, main.TOP_PID, os.getpid(), hasattr(main, "GUARDED")


    if __name__ == "__main__":
        GUARDED = True
        ctx = nbproc.get_context(METHOD)
        for _ in range(2):  # the second pool reuses the fork server
            pool = ctx.Pool(2)
            for row in pool.map(where, range(4), chunksize=1):
                print("worker", *row, flush=True)
            pool.close()
            pool.join()  # every worker started (and ran whatever it runs at start-up)
        print("main", os.getpid(), flush=True)
    """
)


def _env() -> dict[str, str]:
    """The test's environment, with this checkout importable first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO_ROOT, os.environ.get("PYTHONPATH")]))}


def _run(tmp_path, method: str) -> tuple[str, list[list[str]], str]:
    path = tmp_path / "program.py"
    path.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(path), method], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    workers = [line.split()[1:] for line in lines if line.startswith("worker ")]
    main_pid = next(line.split()[1] for line in lines if line.startswith("main "))
    return out.stdout, workers, main_pid


def test_forkserver_runs_the_main_module_once_in_the_server(tmp_path):
    stdout, workers, main_pid = _run(tmp_path, "forkserver")
    assert len(workers) == 8
    assert {(name, method, guarded) for name, method, _, _, guarded in workers} == {
        ("__mp_main__", "forkserver", "False")
    }
    top_pids = {top for _, _, top, _, _ in workers}
    worker_pids = {pid for _, _, _, pid, _ in workers}
    assert len(top_pids) == 1  # one run of the top level, shared by every worker of both pools
    assert top_pids.isdisjoint(worker_pids | {main_pid})  # ... in the server
    assert stdout.count("top level ran") == 2  # the script itself, then the server


def test_spawn_children_still_run_the_main_module_themselves(tmp_path):
    stdout, workers, main_pid = _run(tmp_path, "spawn")
    assert {(name, method, guarded) for name, method, _, _, guarded in workers} == {("__mp_main__", "spawn", "False")}
    assert all(top == pid for _, _, top, pid, _ in workers)  # as in the stdlib: in each child
    assert stdout.count("top level ran") == 1 + 2 * 2  # the script, then each worker of both pools


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_top_level_that_fails_in_children_fails_them_as_in_the_stdlib(tmp_path, method):
    """The server's failed preload leaves nothing behind (it starts over without it): each
    child runs the top level itself and fails there, as a stdlib child does."""
    path = tmp_path / "program.py"
    path.write_text(
        textwrap.dedent(
            """
            import sys
            import nbproc

            nbproc.set_start_method(sys.argv[1])  # would fail in a child that inherited it
            if __name__ != "__main__":
                raise RuntimeError("no children please")

            if __name__ == "__main__":
                p = nbproc.Process(target=print, args=("child ran",))
                p.start()
                p.join()
                print("exit code", p.exitcode)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(path), method], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )
    assert out.stdout.splitlines() == ["exit code 1"]
    assert "RuntimeError: no children please" in out.stderr
    assert "context has already been set" not in out.stderr


def test_poll_before_the_pid_report_answers_at_once():
    """A forkserver child's sentinel carries first its pid, then its exit code (the server's
    reports). A non-blocking poll() made before the pid arrived answers None at once: a pool's
    Process.start() polls every earlier child (the stdlib's _cleanup), and waiting there made each
    worker's launch wait for the server to fork the previous one."""
    import threading
    import time
    from multiprocessing import forkserver

    from nbproc.popen import ForkServerPopen

    report_r, report_w = os.pipe()
    try:
        popen = ForkServerPopen.__new__(ForkServerPopen)  # only the report pipe matters here
        popen.returncode, popen.sentinel, popen._pid_lock = None, report_r, threading.Lock()
        started = time.monotonic()
        assert popen.poll() is None
        assert time.monotonic() - started < 0.5
        forkserver.write_signed(report_w, 4242)  # the server forked it
        assert popen.poll() is None and popen.pid == 4242
        forkserver.write_signed(report_w, 3)  # ... and it exited with code 3
        assert popen.poll() == 3
    finally:
        os.close(report_r)
        os.close(report_w)


PRELOAD_SCRIPT = textwrap.dedent(
    """
    import sys
    import nbproc

    if __name__ == "__main__":
        if sys.argv[1] == "loaded":
            import cloudpickle  # noqa: F401 - the program sends things by value already
        probe = "[m for m in ('cloudpickle', 'ctypes', 'nbproc.popen') if m in __import__('sys').modules]"
        with nbproc.get_context("forkserver").Pool(1) as pool:
            print(pool.apply(eval, (probe,)))  # eval (a builtin): nothing travels by value
    """
)


@pytest.mark.parametrize(
    ("how", "expected"),
    [("script", "[]"), ("loaded", "['cloudpickle']"), ("stdin", "['cloudpickle']")],
)
def test_the_fork_server_preloads_cloudpickle_only_where_children_will_need_it(tmp_path, how, expected):
    """Every module the server holds costs each child CPU time at its fork and exit (~1 ms per
    Pool(2) cycle for cloudpickle). It is preloaded where classes will travel by value: a main
    module without a file (a notebook; here, a program read from stdin), or a program that has
    loaded cloudpickle. ctypes and nbproc's launching module are never needed by a child."""
    if how == "stdin":
        command, source = [sys.executable, "-", how], PRELOAD_SCRIPT
    else:
        path = tmp_path / "program.py"
        path.write_text(PRELOAD_SCRIPT)
        command, source = [sys.executable, str(path), how], None
    out = subprocess.run(command, input=source, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
