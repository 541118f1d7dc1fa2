"""The Sphinx documentation builds without a single warning (``-W``), as ``make docs`` does.

Run in CI so that a docstring that is not valid reStructuredText, a module that no longer
imports, or a broken cross-reference in ``docs/`` fails the suite rather than the next release.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="sphinx is not installed (it is in the `test` and `docs` extras)")

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.timeout(120)
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    for page in ("index", "api", "differences", "notebooks"):
        assert (out / f"{page}.html").is_file(), page
    # autodoc really documented the modules (an empty API page would also build cleanly).
    api = (out / "api.html").read_text()
    documented = (
        "nbproc.serialization.dumps",
        "nbproc.connection.Connection",
        "nbproc.get_context",
        "nbproc.queues.Queue",
        "nbproc.sharedctypes.Value",
        "nbproc.shared_memory.SharedMemoryManager",
        "nbproc.pool.Pool",
        "nbproc.pool.WorkerLostError",
        "nbproc.progress.TextProgress",
        "nbproc.managers.BaseManager",
        "nbproc.dummy.DummyProcess",
    )
    for name in documented:
        assert f'id="{name}"' in api, name
