"""The progress bar in a real browser: JupyterLab on 127.0.0.1 with a token, headless Chromium via Playwright.

A notebook with a ``Pool.map(..., progress=...)`` cell and a ``%%parallel --map`` cell is run
with "Run All" in JupyterLab, as a user would. While it runs, the page is polled (~20 times a
second) for the width of every bar's fill (``.nbproc-progress .progress-bar``): each bar must be rendered,
show at least one intermediate width (it advanced while its cell ran, not only at the end)
and end at 100 %. Screenshots (mid-run and final) go to ``test-artifacts/`` (or
``$NBPROC_TEST_ARTIFACTS``), which git ignores.

Needs Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it), the
``playwright`` Python package (no browser download) and JupyterLab; skipped with the reason
otherwise. About 15-25 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(240)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("NBPROC_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))

CELLS = [
    """import time
import nbproc
%load_ext nbproc
pool = nbproc.get_context("forkserver").Pool(2)

def slow(x):
    time.sleep(0.05)
    return x""",
    'result = pool.map(slow, range(60), chunksize=1, progress="browser-map")',
    """%%parallel -n 2 --map x in range(40)
import time
time.sleep(0.05)
x""",
    "pool.terminate()\n%parallel --shutdown",
]


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return "Debian's chromium is not installed (apt-get install chromium)"
    for module in ("playwright", "jupyterlab"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install {module})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook() -> dict:
    return {
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": src, "outputs": [], "execution_count": None}
            for i, src in enumerate(CELLS)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _wait_for_server(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"JupyterLab did not answer at {url}")


# ipywidgets 8 draws an IntProgress as .widget-hprogress > .progress > .progress-bar (the fill,
# its width a percentage); nbproc's bar box carries the class nbproc-progress.
BAR_WIDTHS = """() => Array.from(document.querySelectorAll('.nbproc-progress .progress-bar'))
    .map(el => parseFloat(el.style.width || '0'))"""
RUNNING = """() => Array.from(document.querySelectorAll('.jp-InputPrompt'))
    .some(el => el.textContent.includes('[*]'))"""
KERNEL_IDLE = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return !!k && k.status === 'idle';
}"""


def test_progress_bars_advance_in_jupyterlab(tmp_path):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    (tmp_path / "bars.ipynb").write_text(json.dumps(_notebook()))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port, token = _free_port(), uuid.uuid4().hex
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--port-retries=0",
            "--allow-root",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--expose-app-in-browser",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "lab.log", "w"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    history: list[list[float]] = []
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", time.monotonic() + 60)
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            try:
                page = browser.new_page()
                page.goto(f"{base}/lab/tree/bars.ipynb?reset&token={token}")
                page.wait_for_function(KERNEL_IDLE, timeout=90_000, polling=200)
                page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
                deadline = time.monotonic() + 120
                shot = False
                started = False
                while time.monotonic() < deadline:
                    widths = page.evaluate(BAR_WIDTHS)
                    history.append(widths)
                    if not shot and any(0 < w < 100 for w in widths):
                        page.screenshot(path=str(ARTIFACTS / "progress-midway.png"))
                        shot = True
                    running = page.evaluate(RUNNING)
                    started = started or running or bool(widths)
                    if started and not running and len(widths) >= 2:
                        break
                    time.sleep(0.05)
                time.sleep(0.5)  # the last widget messages
                history.append(page.evaluate(BAR_WIDTHS))
                page.screenshot(path=str(ARTIFACTS / "progress-final.png"), full_page=True)
            finally:
                browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    final = history[-1]
    assert len(final) == 2, f"expected two bars, saw {final} (log: {(tmp_path / 'lab.log').read_text()[-2000:]})"
    for bar in range(2):
        seen = [widths[bar] for widths in history if len(widths) > bar]
        assert any(0 < w < 100 for w in seen), f"bar {bar} never showed an intermediate width: {sorted(set(seen))}"
        assert seen[-1] == 100, f"bar {bar} ended at {seen[-1]} %"
    print(f"\nbar widths seen: {[sorted(set(w[b] for w in history if len(w) > b)) for b in range(2)]}")
