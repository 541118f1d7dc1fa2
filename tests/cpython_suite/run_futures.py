"""Run CPython's ``test_concurrent_futures`` process-executor tests against ``nbproc.futures``.

Usage::

    .venv/bin/python tests/cpython_suite/run_futures.py                  # fork, spawn, forkserver
    .venv/bin/python tests/cpython_suite/run_futures.py --methods spawn -k ExecutorTest -x test_map_timeout
    .venv/bin/python tests/cpython_suite/run_futures.py --python .venv-3.13/bin/python
    .venv/bin/python tests/cpython_suite/run_futures.py --stdlib         # baseline: the stdlib's executor

The same machinery as ``run.py`` (which runs the multiprocessing suite; its ``run_method``,
``_runner.py``, hang watchdog, logs and summary table are reused), with a different source:

1. Finds ``test_concurrent_futures`` — a module up to 3.11, a package from 3.12 — in the
   interpreter's ``test`` package. Some installations ship a trimmed ``test`` package without
   it (this machine's 3.11 and 3.12); then the copy of the nearest other CPython installed next
   to it is used (the newest one not newer than the interpreter, else the oldest newer one), or
   ``--source PATH``. The summary says which source ran.
2. Writes a rewritten copy into a temporary directory: ``from concurrent import futures`` and
   ``from concurrent.futures import`` name ``nbproc.futures`` (a drop-in module for
   ``concurrent.futures``), ``multiprocessing`` becomes ``nbproc`` (contexts come from nbproc,
   as in ``run.py``), and ``test.test_concurrent_futures`` names the copy. The stdlib's
   ``concurrent.futures._base``/``.process`` stay (the tests import ``BrokenProcessPool`` and
   the ``Future`` states from there; nbproc's errors subclass them).
3. Writes one driver per start method, ``test_nbproc_<method>.py``, that collects the test
   classes CPython builds for that start method's *process* executor (``ProcessPoolFork...``,
   ``ProcessPoolSpawn...``, ``ProcessPoolForkserver...``). Thread-pool tests and the
   ``Future`` unit tests test the stdlib's own classes, which nbproc.futures re-exports
   unchanged; they are not collected.

``FUTURES_TRIAGE.md`` next to this file explains each deviation seen.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as _suite  # noqa: E402 - the multiprocessing suite's harness, reused

SUITE = "test_concurrent_futures"
# A class is collected for a start method when its name holds this (CPython's mixin names).
_MIXIN = {"fork": "ProcessPoolFork", "spawn": "ProcessPoolSpawn", "forkserver": "ProcessPoolForkserver"}

_PROBE_SOURCE = r"""
import importlib.util, json, sys
spec = importlib.util.find_spec("test.test_concurrent_futures")
print(json.dumps({"origin": None if spec is None else spec.origin, "version": list(sys.version_info[:2]),
                  "base_prefix": sys.base_prefix}))
"""


def _installed_copies(base_prefix: str) -> list[tuple[tuple[int, int], Path]]:
    """``test_concurrent_futures`` of the CPython installations next to this one (pyenv layout)."""
    found = []
    for lib in Path(base_prefix).parent.glob("*/lib/python3.*"):
        match = re.fullmatch(r"python3\.(\d+)", lib.name)
        if not match:
            continue
        for candidate in (lib / "test" / SUITE, lib / "test" / f"{SUITE}.py"):
            if candidate.exists():
                found.append(((3, int(match.group(1))), candidate))
    return sorted(found)


def find_source(python: str, source: Path | None) -> tuple[Path, str]:
    """The test module or package to run, and a note saying where it came from."""
    import json
    import subprocess

    if source is not None:
        return source, f"--source {source}"
    info = json.loads(subprocess.run([python, "-c", _PROBE_SOURCE], check=True, capture_output=True, text=True).stdout)
    if info["origin"]:
        origin = Path(info["origin"])
        return (origin.parent if origin.name == "__init__.py" else origin), "the interpreter's own test package"
    version = tuple(info["version"])
    copies = _installed_copies(info["base_prefix"])
    older = [c for c in copies if c[0] <= version]
    chosen = older[-1] if older else (copies[0] if copies else None)
    if chosen is None:
        raise FileNotFoundError("no test_concurrent_futures found; pass --source")
    return chosen[1], f"copy from CPython {chosen[0][0]}.{chosen[0][1]} (the interpreter's test package lacks it)"


def rewrite(text: str, target: str, module_dir: Path) -> str:
    """The test source with ``target`` as the executor module (``concurrent.futures`` for the baseline)."""
    if target != "concurrent.futures":
        text = text.replace("from concurrent import futures", "from nbproc import futures")
        text = text.replace("from concurrent.futures import ", "from nbproc.futures import ")
        text = re.sub(r"(?<![\w.])multiprocessing\b", "nbproc", text)
    text = text.replace(f"test.{SUITE}", SUITE)
    # Scripts run with `python -I` (which ignores PYTHONPATH) import the copy: give them its folder
    # and this checkout (the code under test is unchanged).
    paths = [str(module_dir), str(_suite.REPO_ROOT)]
    return re.sub(
        rf"^(\s*)(from {SUITE}(\.\w+)? import sleep_and_print)",
        lambda m: f"{m.group(1)}import sys; sys.path[:0] = {paths!r}; {m.group(2)}",
        text,
        flags=re.MULTILINE,
    )


def write_modules(module_dir: Path, source: Path, target: str) -> list[str]:
    """Copy ``source`` rewritten into ``module_dir``; write the drivers; return the test module names."""
    if source.is_dir():
        package = module_dir / SUITE
        package.mkdir(parents=True, exist_ok=True)
        modules = []
        for path in sorted(source.glob("*.py")):
            text = rewrite(path.read_text(encoding="utf-8"), target, module_dir)
            (package / path.name).write_text(text, encoding="utf-8")
            if path.name.startswith("test_"):
                modules.append(f"{SUITE}.{path.stem}")
    else:
        text = rewrite(source.read_text(encoding="utf-8"), target, module_dir)
        (module_dir / f"{SUITE}.py").write_text(text, encoding="utf-8")
        modules = [SUITE]
    for method, mixin in _MIXIN.items():
        (module_dir / f"{_suite.DRIVER_PREFIX}{method}.py").write_text(
            _DRIVER.format(modules=modules, mixin=mixin, method=method), encoding="utf-8"
        )
    return modules


_DRIVER = '''"""CPython's test_concurrent_futures, process executor under {method!r}, rewritten for nbproc."""
import importlib
import unittest

import nbproc.util

_stdlib_cleanup = nbproc.util._cleanup_tests


def _cleanup_tests():
    """Harness: what the suite's module cleanup must also do for nbproc (see FUTURES_TRIAGE.md).

    Executors that a failing test never shut down are terminated (their workers would keep
    the resource tracker alive, and 3.12+'s cleanup waits for it to exit); nbproc's own fork
    server is stopped like the stdlib's (the cleanup deletes the temp dir holding its socket).
    """
    from nbproc import futures, popen

    for core in list(futures._live_cores):
        core.terminate()
    popen.forkserver_instance()._stop()
    _stdlib_cleanup()


nbproc.util._cleanup_tests = _cleanup_tests  # the test modules look it up when they register it

_modules = [importlib.import_module(name) for name in {modules!r}]
for _module in _modules:
    for _name, _obj in vars(_module).items():
        if isinstance(_obj, type) and issubclass(_obj, unittest.TestCase) and {mixin!r} in _name:
            if {method!r} == "fork" and "ProcessPoolForkserver" in _name:
                continue
            globals()[_name] = _obj


def setUpModule():
    for _module in _modules:
        for _hook in ("setUpModule", "setup_module"):
            if hasattr(_module, _hook):
                getattr(_module, _hook)()
                return
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(_suite.ALL_METHODS), help="comma-separated start methods")
    parser.add_argument("-k", "--pattern", dest="patterns", action="append", default=[], help="select tests")
    parser.add_argument("-x", "--exclude", dest="excludes", action="append", default=[], help="drop tests")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the suite")
    parser.add_argument("--source", type=Path, help="test_concurrent_futures module or package to run")
    parser.add_argument("--log-dir", type=Path, help="logs + rewritten modules (default: new temp dir)")
    parser.add_argument("--timeout", type=float, default=_suite.DEFAULT_METHOD_TIMEOUT, help="limit per method (s)")
    parser.add_argument("--test-timeout", type=float, default=60.0, help="limit per test (s)")
    parser.add_argument("--stdlib", action="store_true", help="baseline: the stdlib's concurrent.futures")
    args = parser.parse_args(argv)
    results, note = run_suite(
        [m.strip() for m in args.methods.split(",") if m.strip()],
        args.patterns,
        _suite.resolve_python(args.python),
        args.log_dir,
        args.timeout,
        args.test_timeout,
        "concurrent.futures" if args.stdlib else "nbproc.futures",
        args.excludes,
        args.source,
    )
    print(f"target: {'concurrent.futures' if args.stdlib else 'nbproc.futures'}; source: {note}")
    print(_suite.summarize(results))
    return 0 if all(r.ok for r in results) else 1


def run_suite(
    methods: list[str],
    patterns: list[str],
    python: str = sys.executable,
    log_dir: Path | None = None,
    method_timeout: float = _suite.DEFAULT_METHOD_TIMEOUT,
    test_timeout: float = 60.0,
    target: str = "nbproc.futures",
    excludes: list[str] | None = None,
    source: Path | None = None,
) -> tuple[list[_suite.MethodResult], str]:
    """Run the process-executor tests of each start method; also return where the source came from."""
    source_path, note = find_source(python, source)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="nbproc-futures-suite-"))
    module_dir = log_dir / "modules"
    module_dir.mkdir(parents=True, exist_ok=True)
    write_modules(module_dir, source_path, target)
    print(f"logs: {log_dir}/<method>.log, <method>.failures.txt", file=sys.stderr)
    results = [
        _suite.run_method(python, m, module_dir, log_dir, patterns, method_timeout, test_timeout, excludes)
        for m in methods
    ]
    return results, note


if __name__ == "__main__":
    sys.exit(main())
