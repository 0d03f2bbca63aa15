"""Load a script of ``bench/`` by path for a test (``bench/`` is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench_module(filename: str) -> ModuleType:
    """``bench/<filename>`` imported under a private name (registered in
    ``sys.modules`` so dataclasses and pickling inside it work)."""
    name = f"_bench_{Path(filename).stem.lstrip('_')}_under_test"
    spec = importlib.util.spec_from_file_location(name, BENCH / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCH))  # its sibling imports (_harness)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module
