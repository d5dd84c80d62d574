"""Load the pack as the package ``vista`` without putting the repo root on sys.path.

ComfyUI has a top-level module ``nodes``; our ``nodes/`` package must never shadow it,
so the repo root stays off ``sys.path`` and tests import ``vista.core…`` / ``vista.nodes…``.
Test helpers live in ``tests/support/`` (on sys.path, e.g. ``from denoisers import euler``).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load_pack() -> None:
    if "vista" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("vista", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["vista"] = module
    spec.loader.exec_module(module)


_load_pack()
# Shared test helpers (tiny denoisers, …) are plain modules in tests/support/.
sys.path.insert(0, str(ROOT / "tests" / "support"))
