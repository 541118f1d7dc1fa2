"""Set-up hooks for tests/test_process_setup.py: module-level, so a child can import them."""

from __future__ import annotations

import os

APPLIED: list[str] = []  # in the child: what the hooks applied, in order


def capture_method(start_method: str) -> str:
    return f"captured for {start_method} in {os.getpid()}"


def capture_nothing(start_method: str) -> None:
    return None


def capture_fail(start_method: str) -> None:
    raise LookupError("hook capture broke on purpose")


def apply_record(state: str) -> None:
    APPLIED.append(state)


def apply_record_second(state: str) -> None:
    APPLIED.append("second: " + state)


def apply_fail(state: object) -> None:
    raise RuntimeError("hook apply broke on purpose")


def report(conn) -> None:
    """A Process target: send what was applied before run()."""
    conn.send(list(APPLIED))
    conn.close()


def pool_task(_: object) -> list[str]:
    return list(APPLIED)


def touch(path: str) -> None:
    with open(path, "w") as f:
        f.write("ran")
