"""Loading the CPython-suite harness scripts (``tests/cpython_suite/run*.py``) as modules.

They are scripts, not a package, so each test imports one by path; one loader serves the
multiprocessing suite and the concurrent.futures suite alike.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HARNESS_DIR = Path(__file__).parent / "cpython_suite"


def load_harness(script: str, module_name: str) -> ModuleType:
    """Import ``tests/cpython_suite/<script>`` as ``module_name``."""
    spec = importlib.util.spec_from_file_location(module_name, HARNESS_DIR / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
