"""Sphinx configuration for nbproc's documentation.

Built by ``make docs`` (and by ``tests/test_docs.py`` in ``make test``) with ``-W``: a warning,
such as a docstring that is not valid reStructuredText or a module that fails to import,
fails the build. The docs are built from the source tree, not from an installed copy, so that
``sphinx-build docs docs/_build`` documents what is checked out.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nbproc  # noqa: E402

project = "nbproc"
author = "the nbproc developers"
copyright = "the nbproc developers"  # noqa: A001 - Sphinx's name
release = nbproc.__version__
version = ".".join(release.split(".")[:2])

# Local extensions (docs/_ext): `reexports`, which documents the names a module re-exports.
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_nb",
    "reexports",
]

# Only offline extensions: the build runs on machines without network access (no intersphinx).
# `tutorials` is a link to the repository's notebooks/ folder: the notebooks are rendered from
# where they live (and where nbval tests them), never copied.
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "tutorials/nbval-sanitize.cfg"]

# Notebooks are rendered with the outputs saved in them (`make test` compares those outputs
# with a fresh run), never executed by the docs build: the build stays fast, needs no kernel,
# and shows exactly what the tests checked.
nb_execution_mode = "off"
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Type aliases named in annotations: point them at their module, so that Sphinx does not try to
# resolve ``Listener`` (nbproc.progress's listener callable) against every class of that name.
autodoc_type_aliases = {"Listener": "nbproc.progress.Listener"}
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    # The stdlib's own exception classes, re-exported by several modules: documented once, in
    # api.rst, instead of once per module that re-exports them (Sphinx warns on duplicates).
    "exclude-members": "ProcessError, BufferTooShort, TimeoutError, AuthenticationError",
}

html_theme = "alabaster"
html_title = f"nbproc {release}"
html_static_path: list[str] = []
