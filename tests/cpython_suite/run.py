"""Run CPython's own multiprocessing test suite against nbproc — the strictest drop-in check.

Usage::

    .venv/bin/python tests/cpython_suite/run.py                       # fork, spawn, forkserver
    .venv/bin/python tests/cpython_suite/run.py --methods fork -k .WithProcessesTestProcess. -k TestPoll
    .venv/bin/python tests/cpython_suite/run.py -k TestPool -x test_terminate    # -x: leave out
    .venv/bin/python tests/cpython_suite/run.py --python .venv-3.13/bin/python
    .venv/bin/python tests/cpython_suite/run.py --stdlib     # baseline: the same run on the stdlib

Test ids are those CPython's ``install_tests_in_module_dict`` creates: ``_TestProcess`` becomes
``WithProcessesTestProcess``, ``WithThreadsTestProcess`` and (for classes that allow it)
``WithManagerTestProcess``; plain ``unittest.TestCase`` classes keep their names. ``-k``/``-x``
patterns match ``test_nbproc_<method>.<Class>.<test>`` as unittest's ``-k`` does (``*`` added
around a pattern without one).

What it does:

1. Finds the interpreter's ``test/_test_multiprocessing.py`` (``import test``; if the ``test``
   package is missing it prints ``SKIPPED: this interpreter has no test package`` and exits 0).
2. Writes a rewritten copy, ``_test_multiprocessing.py``, into a temporary directory: every
   ``multiprocessing`` module reference becomes ``nbproc`` (the C module ``_multiprocessing``
   stays), ``test._test_multiprocessing`` becomes the copy, the forkserver PRELOAD names the
   copy's forkserver driver, and a few spots are adapted to running outside CPython's tree
   (see ``_patches``; each says why). The ``mp_*.py`` scripts the suite runs by path are
   copied next to it, rewritten the same way.
3. Writes one driver module per start method, ``test_nbproc_<method>.py``, that does what
   CPython's ``test_multiprocessing_<method>`` packages do:
   ``install_tests_in_module_dict(globals(), method)`` (all three types: processes, threads,
   manager, plus the misc test cases).
4. Runs each driver in its own subprocess (``_runner.py``; the temp dir and the repository root
   are on ``PYTHONPATH`` so spawned children import the same modules), with a per-test hang
   watchdog (``--test-timeout``: a hung test is recorded as ``timeout`` and the run resumes
   after it) and a hard limit per start method (``--timeout``). Verbose unittest output goes to
   ``<log-dir>/<method>.log``; outcomes to ``<log-dir>/<method>.jsonl``; the tracebacks of
   failing tests to ``<log-dir>/<method>.failures.txt``.
5. Prints a table per start method (run / passed / failed / errors / skipped / timeouts / not
   run; "failed" includes unexpected successes, "errors" crashes, "skipped" expected failures)
   and the failing test ids. Exit status 0 only if nothing failed.

Other interpreters (``--python``): they need cloudpickle installed; nbproc itself is taken from
this checkout through ``PYTHONPATH``. A few tests start ``python -I`` or ``python -E -S``
subprocesses that ignore ``PYTHONPATH``: they can import nbproc only if it is installed in that
interpreter (a venv with ``pip install -e .`` — the project's ``.venv`` is one).

``TRIAGE.md`` next to this file explains every failure seen so far.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
RUNNER = HERE / "_runner.py"
ALL_METHODS = ("fork", "spawn", "forkserver")
MODULE_NAME = "_test_multiprocessing"  # same file name as CPython's: one test greps tracebacks for it
DRIVER_PREFIX = "test_nbproc_"

DEFAULT_METHOD_TIMEOUT = 15 * 60  # hard limit per start method; the full suite takes ~3-7 min per method here
DEFAULT_TEST_TIMEOUT = 90.0  # per test: CPython's slowest tests take ~30 s here; each hang costs this much


@dataclasses.dataclass
class Probe:
    """What the harness needs to know about the interpreter that runs the suite."""

    test_dir: str | None
    version: str
    extra_paths: list[str]  # where nbproc's dependencies live, for subprocesses started with -S


_PROBE_CODE = r"""
import json, os, sys
try:
    import test
    test_dir = os.path.dirname(test.__file__)
except ImportError:
    test_dir = None
paths = []
try:
    import cloudpickle
    paths.append(os.path.dirname(os.path.dirname(cloudpickle.__file__)))
except ImportError:
    pass
print(json.dumps({"test_dir": test_dir, "version": sys.version.split()[0], "extra_paths": paths}))
"""


def resolve_python(python: str) -> str:
    """An absolute path: the runner starts with the temp dir as its working directory."""
    found = shutil.which(python) if os.sep not in python else python
    if found is None or not os.path.exists(found):
        raise FileNotFoundError(f"no such interpreter: {python}")
    return os.path.abspath(found)


def probe(python: str) -> Probe:
    out = subprocess.run([python, "-c", _PROBE_CODE], check=True, capture_output=True, text=True).stdout
    return Probe(**json.loads(out))


# (old, new, why). Applied before the module rename. A missing ``old`` is reported, not fatal:
# CPython versions differ, and the rest of the suite is still worth running.
def _patches(module_dir: str, probe_: Probe) -> list[tuple[str, str, str]]:
    paths = [module_dir, str(REPO_ROOT), *probe_.extra_paths]
    return [
        (
            "'from test._test_multiprocessing import TestFlags; '",
            repr(f"import sys; sys.path[:0] = {paths!r}; from test._test_multiprocessing import TestFlags; "),
            "TestFlags starts `python -E -S`, which ignores PYTHONPATH and site-packages: "
            "give it the copy, nbproc and cloudpickle explicitly (the flags under test are unchanged)",
        ),
    ]


# Names that mean the stdlib module itself, protected from the rename (restored afterwards).
_KEEP = [
    # The warning text the stdlib's Pool.__del__ emits; the test checks nbproc's pool emits the same.
    "'unclosed running multiprocessing pool'",
]


def rewrite(source: str, module_dir: str, probe_: Probe, target: str = "nbproc") -> tuple[str, list[str]]:
    """The suite with ``target`` in place of multiprocessing; returns (source, warnings).

    ``target="multiprocessing"`` gives the baseline: the same harness running the stdlib.
    """
    warnings: list[str] = []
    for old, new, why in _patches(module_dir, probe_):
        if old in source:
            source = source.replace(old, new)
        else:
            warnings.append(f"patch not applied (text not found): {why}")
    placeholders = {}
    for i, text in enumerate(_KEEP):
        key = f"__NBPROC_SUITE_KEEP_{i}__"
        placeholders[key] = text
        source = source.replace(text, key)
    source = source.replace("test._test_multiprocessing", MODULE_NAME)
    source = source.replace("test.test_multiprocessing_forkserver", DRIVER_PREFIX + "forkserver")
    # `multiprocessing` as a whole word not preceded by a word char or a dot: keeps
    # `_multiprocessing` (the C module), `test_multiprocessing*` and attribute names.
    source = re.sub(r"(?<![\w.])multiprocessing\b", target, source)
    for key, text in placeholders.items():
        source = source.replace(key, text)
    return source, warnings


def write_modules(module_dir: Path, test_dir: str, probe_: Probe, target: str) -> list[str]:
    source = (Path(test_dir) / "_test_multiprocessing.py").read_text(encoding="utf-8")
    rewritten, warnings = rewrite(source, str(module_dir), probe_, target)
    (module_dir / f"{MODULE_NAME}.py").write_text(rewritten, encoding="utf-8")
    # Scripts the suite runs by path next to itself (mp_fork_bomb.py, mp_preload.py...).
    for script in sorted(Path(test_dir).glob("mp_*.py")):
        text, _ = rewrite(script.read_text(encoding="utf-8"), str(module_dir), probe_, target)
        (module_dir / script.name).write_text(text, encoding="utf-8")
    for method in ALL_METHODS:  # every driver exists: the forkserver one is preloaded by name
        (module_dir / f"{DRIVER_PREFIX}{method}.py").write_text(
            f'"""CPython\'s multiprocessing suite, rewritten for nbproc, under the {method!r} start method."""\n'
            f"import {MODULE_NAME}\n\n"
            f"{MODULE_NAME}.install_tests_in_module_dict(globals(), {method!r})\n",
            encoding="utf-8",
        )
    return warnings


@dataclasses.dataclass
class MethodResult:
    """Outcome of every test of one start method (worst outcome wins for a test with subtests)."""

    method: str
    outcomes: dict[str, str] = dataclasses.field(default_factory=dict)
    details: dict[str, str] = dataclasses.field(default_factory=dict)
    tracebacks: dict[str, str] = dataclasses.field(default_factory=dict)
    not_run: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)  # import errors, method timeout...
    seconds: float = 0.0

    def count(self, *outcomes: str) -> int:
        return sum(1 for o in self.outcomes.values() if o in outcomes)

    @property
    def bad(self) -> list[str]:
        return [t for t, o in self.outcomes.items() if o in ("failed", "error", "xpass", "timeout", "crash")]

    @property
    def ok(self) -> bool:
        return not self.bad and not self.problems and not self.not_run


_SEVERITY = {o: i for i, o in enumerate(("passed", "skipped", "xfail", "xpass", "failed", "error", "timeout", "crash"))}


def _record_outcome(result: MethodResult, test_id: str, outcome: str, detail: str, tb: str = "") -> None:
    current = result.outcomes.get(test_id)
    if current is None or _SEVERITY[outcome] > _SEVERITY[current]:
        result.outcomes[test_id] = outcome
        if detail:
            result.details[test_id] = detail
    if tb:
        result.tracebacks[test_id] = result.tracebacks.get(test_id, "") + tb


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc (Linux)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _reap_group(pgid: int, grace: float = 5.0) -> None:
    """Let the run's leftovers (fork server, resource tracker) exit, then kill what remains.

    The resource tracker unlinks leaked semaphores/shared memory when its last user goes away,
    so it gets ``grace`` seconds before SIGTERM, then SIGKILL.
    """
    deadline = time.monotonic() + grace
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
        if not _group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)


def run_method(
    python: str,
    method: str,
    module_dir: Path,
    log_dir: Path,
    patterns: list[str],
    method_timeout: float,
    test_timeout: float,
    excludes: list[str] | None = None,
) -> MethodResult:
    """Run one start method's driver, resuming after hung or crashed tests until all have run."""
    result = MethodResult(method)
    results_path = log_dir / f"{method}.jsonl"
    skip_path = log_dir / f"{method}.skip"
    log_path = log_dir / f"{method}.log"
    for path in (results_path, skip_path, log_path):
        path.unlink(missing_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(module_dir), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("PYTEST_CURRENT_TEST", None)
    start = time.monotonic()
    deadline = start + method_timeout
    plan: list[str] | None = None
    done = False
    with open(log_path, "ab") as log:
        while not done:
            seen_before = len(result.outcomes)
            skip_path.write_text("\n".join(result.outcomes) + "\n", encoding="utf-8")
            cmd = [python, str(RUNNER), "--driver", DRIVER_PREFIX + method, "--results", str(results_path)]
            cmd += ["--test-timeout", str(test_timeout), "--skip-file", str(skip_path)]
            for pattern in patterns:
                cmd += ["-k", pattern]
            for pattern in excludes or []:
                cmd += ["-x", pattern]
            offset = results_path.stat().st_size if results_path.exists() else 0
            proc = subprocess.Popen(
                cmd, cwd=module_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
                result.problems.append(f"hard timeout of {method_timeout:.0f} s reached")
            _reap_group(proc.pid)

            started: dict[str, float] = {}
            with open(results_path, encoding="utf-8") as f:
                f.seek(offset)
                for line in f:
                    record = json.loads(line)
                    event = record["event"]
                    if event == "plan" and plan is None:
                        plan = record["ids"]
                    elif event == "start":
                        started[record["id"]] = record["time"]
                    elif event == "result":
                        started.pop(record["id"], None)
                        detail, tb = record.get("detail", ""), record.get("traceback", "")
                        _record_outcome(result, record["id"], record["outcome"], detail, tb)
                    elif event == "import_error":
                        result.problems.append("import error:\n" + record["detail"])
                    elif event == "done":
                        done = True
            if result.problems:
                break
            if not done:
                hung = list(started)
                for test_id in hung:
                    elapsed = time.time() - started[test_id]
                    outcome = "timeout" if elapsed >= test_timeout * 0.9 else "crash"
                    _record_outcome(result, test_id, outcome, f"runner exit status {rc} after {elapsed:.0f} s")
                if not hung and plan is not None:
                    # The hang was in a class/module fixture: blame the next test and its class.
                    pending = [t for t in plan if t not in result.outcomes]
                    if pending:
                        cls = pending[0].rsplit(".", 1)[0]
                        for test_id in pending:
                            if test_id.rsplit(".", 1)[0] == cls:
                                _record_outcome(result, test_id, "timeout", "class fixture hung or crashed")
                if len(result.outcomes) == seen_before:
                    result.problems.append(f"runner exited with status {rc} without progress")
                    break
    result.seconds = time.monotonic() - start
    if plan is not None:
        result.not_run = [t for t in plan if t not in result.outcomes]
    with open(log_dir / f"{method}.failures.txt", "w", encoding="utf-8") as f:
        for test_id in sorted(result.bad):
            f.write(f"=== {result.outcomes[test_id].upper()} {test_id}\n{result.details.get(test_id, '')}\n")
            f.write(result.tracebacks.get(test_id, "") + "\n")
    return result


def _short_id(test_id: str) -> str:
    return test_id.split(".", 1)[1] if test_id.startswith(DRIVER_PREFIX) else test_id


def summarize(results: list[MethodResult]) -> str:
    header = (
        f"{'method':<11}{'run':>6}{'passed':>8}{'failed':>8}{'errors':>8}"
        f"{'skipped':>9}{'timeout':>9}{'notrun':>8}{'secs':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        run = len(r.outcomes)
        lines.append(
            f"{r.method:<11}{run:>6}{r.count('passed'):>8}{r.count('failed', 'xpass'):>8}"
            f"{r.count('error', 'crash'):>8}{r.count('skipped', 'xfail'):>9}{r.count('timeout'):>9}"
            f"{len(r.not_run):>8}{r.seconds:>7.0f}"
        )
    for r in results:
        if r.problems:
            lines.append(f"\n[{r.method}] problems:")
            lines.extend("  " + p for p in r.problems)
        if r.bad:
            lines.append(f"\n[{r.method}] failing tests ({len(r.bad)}):")
            for test_id in sorted(r.bad):
                detail = r.details.get(test_id, "")
                lines.append(f"  {r.outcomes[test_id].upper():<8} {_short_id(test_id)}  {detail[:160]}")
    return "\n".join(lines)


def run_suite(
    methods: list[str],
    patterns: list[str] | None = None,
    python: str = sys.executable,
    log_dir: Path | None = None,
    method_timeout: float = DEFAULT_METHOD_TIMEOUT,
    test_timeout: float = DEFAULT_TEST_TIMEOUT,
    target: str = "nbproc",
    excludes: list[str] | None = None,
) -> list[MethodResult] | None:
    """Run the suite against ``target``; ``None`` if the interpreter has no ``test`` package."""
    python = resolve_python(python)
    probe_ = probe(python)
    if probe_.test_dir is None:
        return None
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="nbproc-cpython-suite-"))
    module_dir = log_dir / "modules"
    module_dir.mkdir(parents=True, exist_ok=True)
    for warning in write_modules(module_dir, probe_.test_dir, probe_, target):
        print("warning:", warning, file=sys.stderr)
    return [
        run_method(python, m, module_dir, log_dir, list(patterns or []), method_timeout, test_timeout, excludes)
        for m in methods
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated start methods")
    parser.add_argument(
        "-k", "--pattern", dest="patterns", action="append", default=[], help="select tests (unittest -k), repeatable"
    )
    parser.add_argument(
        "-x", "--exclude", dest="excludes", action="append", default=[], help="drop matching tests, repeatable"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the suite")
    parser.add_argument("--log-dir", type=Path, help="logs + rewritten modules (default: new temp dir)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_METHOD_TIMEOUT, help="hard limit per start method (s)")
    parser.add_argument("--test-timeout", type=float, default=DEFAULT_TEST_TIMEOUT, help="limit per test (s)")
    parser.add_argument(
        "--stdlib",
        action="store_true",
        help="baseline: the same harness against the stdlib's multiprocessing (what fails there is the environment)",
    )
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(ALL_METHODS)
    if unknown:
        parser.error(f"unknown start method(s): {', '.join(sorted(unknown))}")
    try:
        args.python = resolve_python(args.python)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="nbproc-cpython-suite-"))
    target = "multiprocessing" if args.stdlib else "nbproc"
    results = run_suite(
        methods, args.patterns, args.python, log_dir, args.timeout, args.test_timeout, target, args.excludes
    )
    if results is None:
        print(f"SKIPPED: this interpreter has no test package ({args.python})")
        return 0
    print(f"target: {target}; python: {args.python} ({probe(args.python).version})")
    print(f"logs: {log_dir}/<method>.log (unittest -v), <method>.failures.txt (tracebacks), <method>.jsonl")
    print(summarize(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
