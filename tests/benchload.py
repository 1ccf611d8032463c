"""Import a script of bench/ by path for the tests that check it: a script that no longer imports is a failure,
never a skip."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str) -> ModuleType:
    """bench/NAME.py as the module ``bench_NAME`` (bench/ is on sys.path while it runs: the scripts import their
    siblings, _common and others)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"bench/{name}.py: no loader for it")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))
