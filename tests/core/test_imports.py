"""core/ is host-free: no module under core/ imports ComfyUI; core doctests pass."""
import ast
import doctest
import importlib
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "nodes", "folder_paths", "execution", "server"}


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_no_host(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & HOST_MODULES, f"{path.name} imports {imported & HOST_MODULES}"


@pytest.mark.parametrize("path", sorted(p for p in CORE.glob("*.py") if p.stem != "__init__"), ids=lambda p: p.name)
def test_core_doctests(path):
    module = importlib.import_module(f"vista.core.{path.stem}")
    result = doctest.testmod(module)
    assert result.failed == 0
