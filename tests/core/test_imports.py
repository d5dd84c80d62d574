"""core/ is host-free: no module under core/ imports ComfyUI nor the evaluation code; packages import only
from the floors below them (core/__init__.py); core doctests pass; nodes/ never reaches bench/."""
import ast
import doctest
import importlib
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "core"
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "nodes", "folder_paths", "execution", "server"}


MODULES = sorted(CORE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(CORE).as_posix()


def _dotted(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(("vista",) + (parts[:-1] if parts[-1] == "__init__" else parts))


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_core_module_imports_no_host(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & HOST_MODULES, f"{_name(path)} imports {imported & HOST_MODULES}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_core_doctests(path):
    module = importlib.import_module(_dotted(path))
    result = doctest.testmod(module)
    assert result.failed == 0


# core/__init__.py's import floors: a package imports only from itself and from lower floors.
FLOORS = {"checks": 0, "sampling": 1, "canvas": 1, "fusion": 2, "mad": 2, "zoom": 2, "guidance": 3}
NODES = CORE.parent / "nodes"


def _pack_imports(path: Path, source: str | None = None) -> set[tuple[str, ...]]:
    """Every pack module ``path`` imports, as dotted parts under the pack root (relative imports resolved)."""
    here = path.relative_to(CORE.parent).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = here[: len(here) - (node.level - 1)]
            target = base + tuple((node.module or "").split(".")) if node.module else base
            found.add(tuple(p for p in target if p))
    return found


def _package(parts: tuple[str, ...]) -> str | None:
    return parts[1] if len(parts) > 1 and parts[0] == "core" else None


def floor_violations(path: Path, source: str | None = None) -> list[str]:
    """Imports of ``path`` (a module under core/) that go up a floor, sideways, or out of core/."""
    own = _package(path.relative_to(CORE.parent).with_suffix("").parts)
    bad = []
    for target in sorted(_pack_imports(path, source)):
        other = _package(target)
        if other is None:
            bad.append(".".join(target) + " (outside core/)")
        elif other != own and own in FLOORS and FLOORS[other] >= FLOORS[own]:
            bad.append(f"{'.'.join(target)} (floor {FLOORS[other]} from {own}, floor {FLOORS[own]})")
    return bad


@pytest.mark.parametrize("path", [p for p in MODULES if p.parent != CORE], ids=_name)
def test_core_packages_import_only_lower_floors(path):
    assert _package(path.relative_to(CORE.parent).with_suffix("").parts) in FLOORS
    assert floor_violations(path) == []


def test_floor_check_trips():
    """The floor check sees an import that goes up (canvas -> fusion), sideways and out of core/ (-> bench)."""
    probe = CORE / "canvas" / "probe.py"
    source = ("from ..fusion.fuse import fuse_average\nfrom ..mad.attention_merge import token_index\n"
              "from ...bench.evaluation.world import render_scene\nfrom .windows import Window\n")
    assert floor_violations(probe, source) == ["bench.evaluation.world (outside core/)",
                                               "core.fusion.fuse (floor 2 from canvas, floor 1)",
                                               "core.mad.attention_merge (floor 2 from canvas, floor 1)"]
    sideways = CORE / "mad" / "probe.py"
    assert floor_violations(sideways, "from ..zoom.stack import area_down\n") == \
        ["core.zoom.stack (floor 2 from mad, floor 2)"]


@pytest.mark.parametrize("path", sorted(NODES.glob("*.py")), ids=lambda p: p.name)
def test_nodes_never_reach_evaluation_code(path):
    """The product's nodes import core/, never bench/ (the world, the coherence and zoom metrics)."""
    reached = {t[0] for t in _pack_imports(path) if t}
    assert "bench" not in reached and reached <= {"core", "nodes"}, f"{path.name} imports {reached}"
