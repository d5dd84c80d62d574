"""Every shipped workflow has an honest, up-to-date thumbnail (tools/draw_thumbnails.py), no host needed.

The template browser of both supported frontends loads ``workflows/<name>.jpg`` as the card image of
``workflows/<name>.json``. The thumbnails are drawings of what each workflow sets up (its canvas and window
plan from core/canvas/windows.py, or its nested zoom levels), so a workflow edit that changes the layout must come
with a redraw: ``python tools/draw_thumbnails.py``.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    name = "vista_draw_thumbnails"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "draw_thumbnails.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


draw = _tool()
WORKFLOWS = draw.workflow_paths()
# A JPEG q90 round trip of these drawings: mean |diff| 1.0-1.4 per channel, no pixel off by more than 50
# (measured). Text may render slightly differently under another Pillow/FreeType, hence a loose mean over the
# whole image; the geometry-only layout box must match to the pixel (no pixel off by more than 64).
MEAN_MAX = 3.0
LAYOUT_CHANGED_MAX = 0.001


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def shipped(path: Path) -> Image.Image:
    return Image.open(draw.thumbnail_path(path))


def test_there_are_workflows():
    assert WORKFLOWS, "workflows/ holds no *.json"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
class TestThumbnail:
    def test_exists_as_square_jpeg(self, path):
        target = draw.thumbnail_path(path)
        assert target.is_file(), f"{target.name} is missing: run python tools/draw_thumbnails.py"
        image = shipped(path)
        assert (image.format, image.size) == ("JPEG", (draw.SIZE, draw.SIZE))

    def test_matches_a_redraw(self, path):
        """The shipped thumbnail is what the script draws from the workflow as it is now."""
        fresh, old = draw.draw_file(path), shipped(path)
        mean, _ = draw.difference(fresh, old)
        _, changed = draw.difference(fresh, old, draw.layout_box(load(path)))
        assert mean <= MEAN_MAX and changed <= LAYOUT_CHANGED_MAX, (
            f"{path.stem}.jpg is out of date (mean {mean:.2f}, layout pixels changed {changed:.4f}): "
            f"run python tools/draw_thumbnails.py")

    def test_drawing_is_deterministic(self, path):
        assert draw.encode(draw.draw_file(path)) == draw.encode(draw.draw_file(path))


def test_no_thumbnail_without_a_workflow():
    orphans = [p.name for p in sorted((ROOT / "workflows").glob("*.jpg")) if not p.with_suffix(".json").is_file()]
    assert not orphans, f"thumbnails without a workflow: {orphans}"


def _edited(workflow: dict) -> dict:
    """The workflow with its layout changed: stride_x doubled (or halved), or one zoom level fewer."""
    out = copy.deepcopy(workflow)
    for node in out["nodes"]:
        names = draw.WIDGETS.get(node["type"], ())
        if node["type"] in draw.WINDOWED_NODES:
            i, window = names.index("stride_x"), node["widgets_values"][names.index("window_width")]
            stride = node["widgets_values"][i]
            node["widgets_values"][i] = stride * 2 if stride * 2 <= window else stride // 2
        if node["type"] == "VistaZoomSettings":
            node["widgets_values"][names.index("levels")] -= 1
    return out


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_a_changed_layout_is_caught(path):
    """The comparison trips when the workflow's layout no longer matches its thumbnail."""
    workflow = load(path)
    _, changed = draw.difference(draw.render(_edited(workflow), path.stem), shipped(path), draw.layout_box(workflow))
    assert changed > LAYOUT_CHANGED_MAX


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if draw.nodes_of(load(p), *draw.WINDOWED_NODES)], ids=lambda p: p.stem)
def test_panorama_plan_is_the_core_plan(path):
    """The drawn plan is core.canvas.windows.plan_windows of the node's widgets (px / 8, window clamped) and covers
    every latent pixel."""
    from vista.core.canvas.windows import plan_windows

    workflow = load(path)
    plan = draw.panorama(workflow)
    node = draw.widgets(draw.nodes_of(workflow, *draw.WINDOWED_NODES)[0])
    canvas = draw.one(workflow, *draw.CANVAS_NODES)
    H, W = canvas["height"] // 8, canvas["width"] // 8
    wh, ww = min(node["window_height"] // 8, H), min(node["window_width"] // 8, W)
    expected = plan_windows(H, W, wh, ww, min(node["stride_y"] // 8, wh), min(node["stride_x"] // 8, ww),
                            wrap_x=bool(node["wrap_x"]), align=plan.align)
    assert plan.windows == expected
    assert int(draw.coverage(plan).min()) >= 1


def test_title_is_the_workflows_note():
    workflow = {"nodes": [{"id": 1, "type": "Note", "widgets_values": ["Vista — a test title.\n\nbody"]}]}
    assert draw.title(workflow, "x") == "A test title"
    assert draw.title({"nodes": []}, "panorama_test") == "Panorama test"
