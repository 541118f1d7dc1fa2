"""The Sphinx documentation: it builds without a warning, renders the notebooks, documents every name.

Run in CI so that a docstring that is not valid reStructuredText, a module that no longer
imports, a broken cross-reference in ``docs/``, a notebook that no longer renders, or a public
name added without documentation fails the suite rather than the next release.

The site is built once per test session (``make docs`` builds the same, with ``-W``); the tests
read what the build produced: its HTML pages and its ``objects.inv``, the inventory of every
documented Python object, which is what the public-names check compares ``__all__`` with.
"""

from __future__ import annotations

import html
import importlib
import pkgutil
import posixpath
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx", reason="sphinx is not installed (it is in the `test` and `docs` extras)")
pytest.importorskip("myst_nb", reason="myst-nb is not installed (it is in the `test` and `docs` extras)")

import nbproc  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    return out


@pytest.mark.timeout(180)
def test_docs_build_without_warnings(built_docs: Path) -> None:
    for page in ("index", "api", "differences", "notebooks", "concepts", "troubleshooting", "performance"):
        assert (built_docs / f"{page}.html").is_file(), page
    # autodoc really documented the modules (an empty API page would also build cleanly).
    api = (built_docs / "api.html").read_text()
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


@pytest.mark.timeout(180)
def test_every_notebook_is_rendered_with_its_outputs(built_docs: Path) -> None:
    """Each notebook of notebooks/ has a page, and the pool notebook's page shows a stored output.

    The docs never execute notebooks: an output on the page can only come from the outputs saved
    in the notebook, which is what nbval compares in ``make test``.
    """
    notebooks = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    missing = [nb for nb in notebooks if not (built_docs / "tutorials" / f"{nb}.html").is_file()]
    assert not missing, f"notebooks without a page in the docs: {missing}"

    page = (built_docs / "tutorials" / "02-pool.html").read_text()
    assert 'class="cell_output' in page, "the 02-pool page has no output cell"
    outputs = re.findall(r'class="cell_output[^"]*">(.*?)</div>\s*</div>\s*</div>', page, flags=re.S)
    text = html.unescape(re.sub(r"<[^>]+>", "", "".join(outputs)))
    # The output of the chunksize cell (one progress event per chunk), as stored in the notebook.
    assert "chunksize=10: 10 chunks" in text, text[:2000]
    # The markdown around the cells is rendered too, not shown as source.
    assert "<h1>Pools" in page

    # The Jupyter-features page keeps what only a kernel produces: a spawned child's output
    # forwarded to its cell, and a worker's traceback labelled with the cell it came from.
    page = html.unescape((built_docs / "tutorials" / "04-jupyter-features.html").read_text())
    assert "hello from spawn" in page
    assert re.search(r"Cell In\[\d+\], line 3, in check", page), "no cell-labelled worker traceback"


def public_modules() -> list[str]:
    """``nbproc`` and every submodule whose dotted name has no part starting with ``_``."""
    names = ["nbproc"]
    for info in pkgutil.walk_packages(nbproc.__path__, "nbproc."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def public_names(module_name: str) -> list[str]:
    """A module's public names: its ``__all__`` (or, without one, its non-underscore globals that
    are not modules), minus names starting with ``_`` (the stdlib lists ``spawn._main`` in its)."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items() if not n.startswith("_") and not isinstance(v, type(sys))]
    return [n for n in names if not n.startswith("_")]


def documented_objects(inventory: Path) -> tuple[set[str], set[str]]:
    """(documented Python objects, documented modules) from a built site's ``objects.inv``."""
    from sphinx.util.inventory import InventoryFile

    with inventory.open("rb") as f:
        inv = InventoryFile.load(f, "", posixpath.join)
    objects: set[str] = set()
    modules: set[str] = set()
    # Sphinx 8.2+ returns an _Inventory with .data; older ones a plain dict of dicts.
    entries = getattr(inv, "data", inv)
    for kind, items in entries.items():
        if kind.startswith("py:"):
            objects.update(items)
            if kind == "py:module":
                modules.update(items)
    return objects, modules


@pytest.mark.timeout(180)
def test_every_public_name_is_documented(built_docs: Path) -> None:
    """``nbproc.__all__`` and each public submodule's public names all have an entry in the docs.

    The failure message lists exactly what lacks one, and where it would go, so that whoever adds
    a name (or a module) can fix the docs in a minute.
    """
    objects, modules = documented_objects(built_docs / "objects.inv")
    problems: list[str] = []
    for module_name in public_modules():
        if module_name not in modules:
            problems.append(
                f"module {module_name} is not documented: add a section with "
                f"`.. automodule:: {module_name}` to docs/api.rst"
            )
            continue
        for name in public_names(module_name):
            if f"{module_name}.{name}" not in objects:
                problems.append(
                    f"{module_name}.{name} is not documented: give it a docstring under the "
                    f"`.. automodule:: {module_name}` of docs/api.rst, or, if it is re-exported from "
                    f"the stdlib or another nbproc module, list it in a `.. reexports:: {module_name}` "
                    f"there (`:names: {name}`)"
                )
    assert not problems, "public names without documentation:\n  " + "\n  ".join(problems)


def test_public_names_check_can_fail(tmp_path: Path) -> None:
    """The inventory reader sees what a build documents, and nothing it does not.

    Guards the check above against passing vacuously (say, if the inventory format changed and
    every lookup hit an empty set): a tiny site that documents one function yields exactly it.
    """
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("extensions = []\n")
    (src / "index.rst").write_text("T\n=\n\n.. py:module:: demo\n\n.. py:function:: documented()\n\n   Doc.\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(src), str(out)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr
    objects, modules = documented_objects(out / "objects.inv")
    assert modules == {"demo"}
    assert "demo.documented" in objects and "demo.undocumented" not in objects
