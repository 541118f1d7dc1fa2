"""What Binder does with this repository, done here without Binder: install, postBuild, run.

Binder (repo2docker) builds an image from ``binder/``: it installs ``binder/requirements.txt``
into a fresh environment, runs ``binder/postBuild`` from the repository's root, and starts
Jupyter there. This test does the same in a fresh virtual environment, from a copy of the
repository: pip uses whatever index this machine is configured with (the network is not
needed where that index is local), ``postBuild`` must succeed, and then every notebook in
``notebooks/`` must run top to bottom in a kernel of that environment, against the nbproc
that ``postBuild`` installed (not this checkout's editable install).

It takes about a minute (installing JupyterLab is most of it), so it runs once, not per start
method; the notebooks themselves exercise spawn and forkserver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.kernel

# Generous bounds for a shared 2-core machine: the install takes ~20 s there, a notebook a few
# seconds; a real hang (a notebook waiting forever) still ends the test.
INSTALL_TIMEOUT = 400
NOTEBOOK_TIMEOUT = 240

PROBE = """\
import json, sys, nbproc, nbproc.serialization
print(json.dumps({"prefix": sys.prefix, "nbproc": nbproc.__file__}))
"""


def _copy_repository(dest: Path) -> Path:
    """The repository as Binder would clone it: sources only, no virtualenv or build output."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "_build", ".pytest_cache", "__pycache__", "*.egg-info", ".ipynb_checkpoints", ".ruff_cache"
    )
    return Path(shutil.copytree(ROOT, dest, ignore=ignore, symlinks=True))


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail}"
    return proc


@pytest.mark.timeout(INSTALL_TIMEOUT + 6 * NOTEBOOK_TIMEOUT)
def test_binder_environment_installs_and_runs_every_notebook(tmp_path: Path) -> None:
    repo = _copy_repository(tmp_path / "repo")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "JUPYTER", "PYTEST"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    # Kernel specs of this environment first, as in Binder's image (the `python3` kernel is the
    # environment's own interpreter).
    env["JUPYTER_PATH"] = str(venv / "share" / "jupyter")

    pip = [str(bin_dir / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
    _run([*pip, "install", "-r", "binder/requirements.txt"], repo, env, INSTALL_TIMEOUT)
    _run(["bash", "binder/postBuild"], repo, env, INSTALL_TIMEOUT)

    # The notebooks' kernel is the environment's interpreter and imports the nbproc postBuild
    # installed (into the environment's site-packages, not this checkout).
    probe = tmp_path / "probe.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROBE)]), probe)
    out = _run([str(bin_dir / "python"), "notebooks/run_notebook.py", str(probe)], repo, env, NOTEBOOK_TIMEOUT).stdout
    assert f'"prefix": "{venv}"' in out, out
    assert f"{venv}/lib/" in out and "site-packages/nbproc/__init__.py" in out, out

    notebooks = sorted((repo / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 5, notebooks
    for notebook in notebooks:
        result = _run(
            [str(bin_dir / "python"), "notebooks/run_notebook.py", str(notebook), "--timeout", "120"],
            repo,
            env,
            NOTEBOOK_TIMEOUT,
        )
        assert "OK:" in result.stdout, result.stdout[-2000:]
