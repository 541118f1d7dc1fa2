"""Runs one driver module of the rewritten CPython suite and records every outcome as JSON lines.

Started by ``run.py`` once per start method (and again after a hang, skipping what already ran)::

    run.py ──(subprocess, new session)──> _runner.py --driver test_nbproc_fork --results fork.jsonl
                                            │ imports the driver, which installs the suite's
                                            │ test classes for its start method
                                            │ writes {"event": "plan"}, then per test "start"
                                            │ and "result" records (flushed at once)
                                            └ faulthandler: if one test (or a class fixture)
                                              runs longer than --test-timeout, dump every
                                              thread's stack to the log and exit(1)
    run.py reads the records: a "start" without "result" is the test that hung (or crashed).

Only the runner's own pid writes records: a forked test child that wanders back into unittest
code cannot corrupt them. Verbose unittest output goes to stderr (the log file).
"""

from __future__ import annotations

import argparse
import faulthandler
import fnmatch
import importlib
import json
import os
import signal
import sys
import time
import traceback
import unittest
from collections.abc import Iterator
from typing import Any, TextIO


class _Recorder:
    """Appends one JSON object per line to the results file, from the runner's process only."""

    def __init__(self, path: str) -> None:
        self._pid = os.getpid()
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def write(self, event: str, **fields: Any) -> None:
        if os.getpid() != self._pid:
            return
        fields.update(event=event, time=time.time())
        self._file.write(json.dumps(fields) + "\n")
        self._file.flush()


def _short(err: Any) -> str:
    """The last line of a formatted exception: enough to triage at a glance."""
    lines = "".join(traceback.format_exception(*err)).strip().splitlines()
    return lines[-1][:300] if lines else ""


def make_result_class(recorder: _Recorder, test_timeout: float) -> type[unittest.TextTestResult]:
    def rearm() -> None:
        faulthandler.dump_traceback_later(test_timeout, exit=True)

    class RecordingResult(unittest.TextTestResult):
        """TextTestResult that also records outcomes and re-arms the hang watchdog per test."""

        def startTest(self, test: unittest.TestCase) -> None:  # noqa: N802 - unittest API
            rearm()
            recorder.write("start", id=test.id())
            super().startTest(test)

        def stopTest(self, test: unittest.TestCase) -> None:  # noqa: N802
            super().stopTest(test)
            rearm()  # class/module fixtures between tests get the same budget

        def _record(self, test: Any, outcome: str, detail: str = "", err: Any = None) -> None:
            tb = "".join(traceback.format_exception(*err)) if err is not None else ""
            recorder.write("result", id=test.id(), outcome=outcome, detail=detail, traceback=tb)

        def addSuccess(self, test: Any) -> None:  # noqa: N802
            super().addSuccess(test)
            self._record(test, "passed")

        def addFailure(self, test: Any, err: Any) -> None:  # noqa: N802
            super().addFailure(test, err)
            self._record(test, "failed", _short(err), err)

        def addError(self, test: Any, err: Any) -> None:  # noqa: N802
            super().addError(test, err)
            self._record(test, "error", _short(err), err)

        def addSkip(self, test: Any, reason: str) -> None:  # noqa: N802
            super().addSkip(test, reason)
            self._record(test, "skipped", reason[:300])

        def addExpectedFailure(self, test: Any, err: Any) -> None:  # noqa: N802
            super().addExpectedFailure(test, err)
            self._record(test, "xfail", _short(err))

        def addUnexpectedSuccess(self, test: Any) -> None:  # noqa: N802
            super().addUnexpectedSuccess(test)
            self._record(test, "xpass")

        def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:  # noqa: N802
            super().addSubTest(test, subtest, err)
            if err is not None:
                failed = issubclass(err[0], test.failureException)
                self._record(test, "failed" if failed else "error", f"{subtest.id()}: {_short(err)}", err)

    return RecordingResult


def _flatten(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--driver", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--test-timeout", type=float, required=True)
    parser.add_argument("--skip-file")
    parser.add_argument("-k", dest="patterns", action="append", default=[])
    parser.add_argument("-x", dest="excludes", action="append", default=[])
    args = parser.parse_args()

    recorder = _Recorder(args.results)
    faulthandler.enable()
    # A job started in the background by a non-interactive shell inherits SIGINT as ignored;
    # several tests send themselves SIGINT and expect KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        module = importlib.import_module(args.driver)
    except BaseException:  # noqa: BLE001 - anything at import time is reported, not raised
        recorder.write("import_error", detail=traceback.format_exc())
        traceback.print_exc()
        return 3

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in args.patterns]
    skip: set[str] = set()
    if args.skip_file:
        with open(args.skip_file, encoding="utf-8") as f:
            skip = {line.strip() for line in f if line.strip()}
    excludes = [p if "*" in p else f"*{p}*" for p in args.excludes]
    tests = [
        t
        for t in _flatten(loader.loadTestsFromModule(module))
        if t.id() not in skip and not any(fnmatch.fnmatchcase(t.id(), p) for p in excludes)
    ]
    recorder.write("plan", ids=[t.id() for t in tests])

    runner = unittest.TextTestRunner(
        stream=sys.stderr,
        verbosity=2,
        resultclass=make_result_class(recorder, args.test_timeout),
    )
    faulthandler.dump_traceback_later(args.test_timeout, exit=True)
    runner.run(unittest.TestSuite(tests))
    faulthandler.cancel_dump_traceback_later()
    recorder.write("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
