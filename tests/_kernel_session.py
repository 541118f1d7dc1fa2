"""A real ipykernel driven through jupyter_client, with every iopub message kept.

nbclient stops reading a cell's messages at its ``idle`` status, so it cannot show output that
arrives later. Here a thread reads iopub for the kernel's whole life and keeps every message;
tests then ask which ``stream`` messages carried which ``parent_header.msg_id``.

``capture_fd_output`` chooses ipykernel's own fd-level capture. ipykernel turns it off by
itself when ``PYTEST_CURRENT_TEST`` is in its environment, so the variable is removed from the
kernel's environment and the setting passed explicitly either way.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from typing import Any

from jupyter_client import KernelManager

__all__ = ["KernelSession"]

# How long a kernel may take to start on a loaded 2-core machine (about 1-2 s when idle).
READY_TIMEOUT = 60


class KernelSession:
    """One kernel: ``execute`` a cell and wait for it, then inspect the iopub messages."""

    def __init__(self, cwd: str, capture_fd_output: bool, quiet: bool = False) -> None:
        """``quiet``: the kernel's own stdout/stderr (its terminal) go to /dev/null."""
        env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
        self.km = KernelManager(kernel_name="python3")
        terminal = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL} if quiet else {}
        self.km.start_kernel(
            cwd=cwd, env=env, extra_arguments=[f"--IPKernelApp.capture_fd_output={capture_fd_output}"], **terminal
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        self._messages: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._stop = False
        try:
            self.kc.wait_for_ready(timeout=READY_TIMEOUT)
        except BaseException:
            self.shutdown()
            raise
        self._reader = threading.Thread(target=self._read_iopub, name="test-iopub", daemon=True)
        self._reader.start()

    def _read_iopub(self) -> None:
        while not self._stop:
            try:
                msg = self.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                continue
            except Exception:  # noqa: BLE001 - channels closed at shutdown
                return
            with self._cond:
                self._messages.append(msg)
                self._cond.notify_all()

    # -- running cells -------------------------------------------------------------------
    def start(self, code: str) -> str:
        """Submit a cell without waiting; returns its msg_id."""
        return self.kc.execute(code, store_history=True)

    def wait_idle(self, msg_id: str, timeout: float) -> dict[str, Any]:
        """Wait until the cell ``msg_id`` is done; its execute_reply content."""
        self.wait_for(lambda: any(self._is_idle(m, msg_id) for m in self._messages), timeout, f"idle of {msg_id}")
        deadline = time.monotonic() + timeout
        while True:
            reply = self.kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.1))
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply["content"]

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute a cell, fail on an error in it, return its msg_id once it is idle."""
        msg_id = self.start(code)
        content = self.wait_idle(msg_id, timeout)
        assert content["status"] == "ok", f"cell failed: {content.get('ename')}: {content.get('evalue')}\n" + "".join(
            self.text(msg_id, "stderr")
        )
        return msg_id

    @staticmethod
    def _is_idle(msg: dict[str, Any], msg_id: str) -> bool:
        return (
            msg["msg_type"] == "status"
            and msg["content"]["execution_state"] == "idle"
            and msg["parent_header"].get("msg_id") == msg_id
        )

    # -- inspecting what arrived -----------------------------------------------------------
    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cond.wait(left)

    def streams(self, msg_id: str | None = None) -> list[dict[str, Any]]:
        """The stream messages (all, or those of one cell), in arrival order."""
        with self._cond:
            return [
                m
                for m in self._messages
                if m["msg_type"] == "stream" and (msg_id is None or m["parent_header"].get("msg_id") == msg_id)
            ]

    def text(self, msg_id: str | None, name: str) -> str:
        """Everything a cell received on stream ``name`` ("stdout" / "stderr")."""
        return "".join(m["content"]["text"] for m in self.streams(msg_id) if m["content"]["name"] == name)

    def shutdown(self) -> None:
        self._stop = True
        try:
            self.kc.stop_channels()
        finally:
            self.km.shutdown_kernel(now=False)
