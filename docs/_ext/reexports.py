"""``.. reexports:: MODULE`` — document the names a module re-exports from elsewhere.

Why: nbproc mirrors the stdlib's modules, and many of their public names *are* the stdlib's
objects (``nbproc.synchronize.Lock is multiprocessing.synchronize.Lock``) or another nbproc
module's (``nbproc.process.Process is nbproc.context.Process``). autodoc documents a name where
it is defined; a reader who looks up ``nbproc.util.Finalize`` needs an entry under that name
saying what it is, and ``tests/test_docs.py`` checks that every public name has one. Writing
those entries by hand, a hundred of them, would drift from the code; this directive writes them
from the module itself.

Which names it documents:

- without options: every public name of ``MODULE.__all__`` that is the very object of the same
  name in the stdlib module ``MODULE`` mirrors (``nbproc.X`` -> ``multiprocessing.X``);
- ``:exclude: a, b``: minus these (documented elsewhere on the page, so not twice);
- ``:names: a, b``: exactly these, whatever they are (aliases of other nbproc objects).

A name that nbproc defines itself is *not* picked up: it belongs to an ``automodule`` with a
docstring, and the public-names test reports it until it has one.
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def _names_option(text: str | None) -> list[str]:
    return [n for n in (text or "").replace(",", " ").split() if n]


def stdlib_mirror(module_name: str) -> ModuleType | None:
    """The stdlib module that ``module_name`` mirrors (``nbproc.pool`` -> ``multiprocessing.pool``)."""
    if module_name != "nbproc" and not module_name.startswith("nbproc."):
        return None
    try:
        return importlib.import_module("multiprocessing" + module_name[len("nbproc") :])
    except ImportError:
        return None


def stdlib_names(module: ModuleType) -> list[str]:
    """Public names of ``module.__all__`` that are the very objects of its stdlib mirror."""
    mirror = stdlib_mirror(module.__name__)
    if mirror is None:
        return []
    missing = object()
    return [
        name
        for name in getattr(module, "__all__", [])
        if not name.startswith("_") and getattr(mirror, name, missing) is getattr(module, name)
    ]


def home_of(module: ModuleType, name: str, obj: Any) -> str:
    """Where ``obj`` really lives, as a dotted name for the entry's text."""
    mirror = stdlib_mirror(module.__name__)
    if mirror is not None and getattr(mirror, name, None) is obj:
        return f"{mirror.__name__}.{name}"
    if inspect.ismodule(obj):
        return obj.__name__
    owner = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if owner and qualname:
        return f"{owner}.{qualname}"
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def entry_lines(module: ModuleType, name: str) -> list[str]:
    """The reStructuredText of one entry: the right py directive and one sentence."""
    obj = getattr(module, name)
    home = home_of(module, name, obj)
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        kind, role = "exception", "exc"
    elif inspect.isclass(obj):
        kind, role = "class", "class"
    elif inspect.ismodule(obj):
        kind, role = "data", "mod"
    elif callable(obj):
        kind, role = "function", "func"
    else:
        kind, role = "data", "data"
    lines = [f".. py:{kind}:: {name}", f"   :module: {module.__name__}"]
    if kind == "data" and isinstance(obj, (int, str)) and not isinstance(obj, bool):
        lines.append(f"   :value: {obj!r}")
    origin = "the stdlib's" if home.startswith("multiprocessing") else "the same object as"
    lines += ["", f"   Re-exported: {origin} :py:{role}:`{home}`.", ""]
    return lines


class ReexportsDirective(SphinxDirective):
    required_arguments = 1
    has_content = False
    option_spec = {"exclude": directives.unchanged, "names": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        module = importlib.import_module(self.arguments[0])
        names = _names_option(self.options.get("names")) or stdlib_names(module)
        excluded = set(_names_option(self.options.get("exclude")))
        lines: list[str] = []
        for name in names:
            if name not in excluded:
                lines += entry_lines(module, name)
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=f"reexports of {module.__name__}"), container)
        return container.children


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("reexports", ReexportsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
