"""Browser tier: Vista in the frontend that each supported host ships, in headless Chromium (no mocks).

Against a real ComfyUI (``COMFYUI_PATH``) serving its own ``comfyui-frontend-package``:

- web/vista_grid.js plans exactly the windows of core/canvas/windows.py (random sizes, evaluated in the browser);
- every ``workflows/*.json`` loads with every node type registered, no node in error, no two nodes (or a node
  and a node's badge) overlapping, and a window grid / zoom preview on every Vista window node that matches
  core's plan for the workflow's canvas (screenshot per workflow);
- clicking a stride widget's arrow changes the drawn grid (the node's grid state AND its pixels);
- the zoom preview draws the nested levels and follows the levels widget;
- a warning raised by a node while a prompt runs (nodes/notify.py) appears as a toast.
Screenshots are kept in ``VISTA_ARTIFACTS`` (default tests/browser/artifacts/<host>).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import comfy_server
from vista.core.canvas.windows import plan_windows

pytestmark = [pytest.mark.host, pytest.mark.browser]

WORKFLOWS = sorted((comfy_server.REPO_ROOT / "workflows").glob("*.json"))
FACTOR = 8  # image px per latent px of every shipped workflow's model
BADGE_PX = 22  # LGraphBadge: 20 px high, 2 px above the title bar (both frontends)
WINDOW_NODES = ("VistaTiledDiffusion", "VistaLatentFusionSampler", "VistaSyncDiffusion", "VistaMultiScaleDiffusion")
ZOOM_NODES = ("VistaZoomSettings", "VistaZoomStackSampler")
TOAST_TIMEOUT_S = 600.0  # the whole prompt (a 768x64 canvas, 1 step, on CPU) takes seconds

# Page-side helpers (plain LiteGraph/ComfyApp API present in both frontends).
HELPERS = r"""
window.__vt = {
  frames: () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))),
  node: (id) => app.graph.getNodeById(id),
  async load(workflow) {
    await app.loadGraphData(workflow, true, true, null,
      { showMissingNodesDialog: false, showMissingModelsDialog: false, skipAssetScans: true, silentAssetErrors: true });
    app.canvas.setDirty(true, true);
    await __vt.frames();
  },
  badge(node) {
    return (node.badges ?? []).map((b) => (typeof b === "function" ? b() : b)).filter((b) => b && b.text)
      .map((b) => b.text).join(" ");
  },
  nodes() {
    return (app.graph._nodes ?? app.graph.nodes).map((n) => ({
      id: Number(n.id), type: n.type, registered: n.type in LiteGraph.registered_node_types, errors: !!n.has_errors,
      bounds: Array.from(n.getBounding()), badge: __vt.badge(n),
      widgets: Object.fromEntries((n.widgets ?? []).filter((w) => w.serialize !== false).map((w) => [w.name, w.value])),
      grid: n.vistaGrid ? JSON.parse(JSON.stringify(n.vistaGrid)) : null,
    }));
  },
  async view(x, y, w, h) { // show canvas rect (x, y, w, h) in the page, at most 1:1
    const c = app.canvas, el = c.canvas.getBoundingClientRect();
    const scale = Math.min(1, (el.width - 120) / w, (el.height - 160) / h);
    c.ds.scale = scale;
    c.ds.offset = [(el.width - w * scale) / 2 / scale - x, 120 / scale - y];
    c.setDirty(true, true);
    await __vt.frames();
  },
  async fit() {
    const b = (app.graph._nodes ?? app.graph.nodes).map((n) => Array.from(n.getBounding()));
    const x = Math.min(...b.map((r) => r[0])), y = Math.min(...b.map((r) => r[1])) - 30;
    await __vt.view(x, y, Math.max(...b.map((r) => r[0] + r[2])) - x, Math.max(...b.map((r) => r[1] + r[3])) - y);
  },
  screen(x, y) { // canvas coordinates -> page coordinates
    const c = app.canvas, el = c.canvas.getBoundingClientRect();
    return [el.left + (x + c.ds.offset[0]) * c.ds.scale, el.top + (y + c.ds.offset[1]) * c.ds.scale];
  },
  nodeRect(id) {
    const [x, y, w, h] = Array.from(__vt.node(id).getBounding());
    const [left, top] = __vt.screen(x, y);
    return { x: left, y: top, width: w * app.canvas.ds.scale, height: h * app.canvas.ds.scale };
  },
  arrow(id, name, side) { // page point of a number widget's increment (+1) or decrement (-1) arrow
    const n = __vt.node(id), w = n.widgets.find((v) => v.name === name);
    const x = side > 0 ? n.size[0] - 24 : 24;
    return __vt.screen(n.pos[0] + x, n.pos[1] + w.y + LiteGraph.NODE_WIDGET_HEIGHT / 2);
  },
  setWidgets(id, values) {
    const n = __vt.node(id);
    for (const [name, value] of Object.entries(values)) n.widgets.find((w) => w.name === name).value = value;
    app.canvas.setDirty(true, true);
  },
};
"""


def load(page, workflow: dict) -> list[dict]:
    page.evaluate(HELPERS)
    page.evaluate("(wf) => __vt.load(wf)", workflow)
    page.keyboard.press("Escape")  # close any dialog the frontend opened for the new workflow
    page.wait_for_function("() => (app.graph._nodes ?? app.graph.nodes).every((n) => !n.widgets?.some((w) => w.name"
                           " === 'vista_preview') || n.vistaGrid)")
    return page.evaluate("() => __vt.nodes()")


def latent_plan(spec: dict, canvas_px: tuple[int, int], align: int) -> list[list[int]]:
    """Windows [x, y, w, h] in image px, as nodes/_common.py WindowSpec.plan builds them with core's planner."""
    H, W = canvas_px[1] // FACTOR, canvas_px[0] // FACTOR
    wh, ww = min(spec["window_height"] // FACTOR, H), min(spec["window_width"] // FACTOR, W)
    sh, sw = min(spec["stride_y"] // FACTOR, wh), min(spec["stride_x"] // FACTOR, ww)
    windows = plan_windows(H, W, wh, ww, sh, sw, wrap_x=bool(spec["wrap_x"]), align=align)
    return [[w.x * FACTOR, w.y * FACTOR, w.w * FACTOR, w.h * FACTOR] for w in windows]


def overlaps(nodes: list[dict]) -> list[str]:
    """Pairs of nodes whose frontend bounds (grown by the badge drawn above a node's title) intersect."""
    boxes = []
    for n in nodes:
        x, y, w, h = n["bounds"]
        lift = BADGE_PX if n["badge"] else 0
        boxes.append((n, (x, y - lift, x + w, y + h)))
    found = []
    for i, (a, ra) in enumerate(boxes):
        for b, rb in boxes[i + 1:]:
            if ra[0] < rb[2] and rb[0] < ra[2] and ra[1] < rb[3] and rb[1] < ra[3]:
                found.append(f"{a['type']} #{a['id']} {ra} overlaps {b['type']} #{b['id']} {rb}")
    return found


def shot(page, path: Path, clip: dict | None = None) -> np.ndarray:
    page.screenshot(path=str(path), clip=clip)
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def expected_align(workflow: dict) -> int:
    """Window offset grid the sampler will use: the UNet grid (SD1.5: 8 latent px) under MAD, 2 under MSD, else 1."""
    types = {n["type"]: n for n in workflow["nodes"]}
    if "VistaMADAttention" in types and types["VistaMADAttention"]["widgets_values"][0] > 0:
        return 8
    return 2 if "VistaMultiScaleDiffusion" in types else 1


@pytest.fixture(autouse=True)
def no_extension_errors(page):
    yield
    assert not page.vista_errors, "errors from Vista's web files:\n" + "\n".join(page.vista_errors)


def test_grid_planner_matches_core(page):
    """web/vista_grid.js planWindows == core/canvas/windows.py plan_windows on random canvases (wrap, align, edges)."""
    rng = random.Random(1234)
    cases = []
    for _ in range(400):
        H, W = rng.randint(1, 200), rng.randint(1, 400)
        wh, ww = rng.randint(1, H), rng.randint(1, W)
        cases.append([H, W, wh, ww, rng.randint(1, wh), rng.randint(1, ww), rng.random() < 0.3, rng.choice([1, 2, 4, 8])])
    got = page.evaluate(f"""async (cases) => {{
        const grid = await import("/extensions/{comfy_server.PACK_NAME}/vista_grid.js");
        return cases.map((c) => {{ try {{ return grid.planWindows(...c).map((w) => [w.y, w.x, w.h, w.w]); }}
                                   catch (e) {{ return "error"; }} }});
    }}""", cases)
    for case, js in zip(cases, got):
        try:
            py = [[w.y, w.x, w.h, w.w] for w in plan_windows(*case[:6], wrap_x=case[6], align=case[7])]
        except ValueError:
            py = "error"
        assert js == py, f"plan_windows{tuple(case)}: browser {js} != core {py}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_workflow_loads_cleanly(page, artifacts, path):
    workflow = json.loads(path.read_text())
    nodes = load(page, workflow)
    page.evaluate("() => __vt.fit()")
    shot(page, artifacts / f"workflow_{path.stem}.png")

    missing = sorted({n["type"] for n in nodes if not n["registered"]})
    assert not missing, f"{path.name}: node types the frontend does not know: {missing}"
    assert not [n for n in nodes if n["errors"]], f"{path.name}: nodes in error: {[n for n in nodes if n['errors']]}"
    assert len(nodes) == len(workflow["nodes"])
    assert not overlaps(nodes), f"{path.name}: overlapping nodes:\n" + "\n".join(overlaps(nodes))

    latents = [n for n in workflow["nodes"] if n["type"] in ("EmptyLatentImage", "EmptySD3LatentImage")]
    assert len(latents) == 1, f"{path.name}: expected one empty latent, got {[n['type'] for n in latents]}"
    canvas = latents[0]["widgets_values"][:2]
    previews = [n for n in nodes if n["type"] in WINDOW_NODES + ZOOM_NODES]
    assert previews, f"{path.name}: no Vista node with a preview"
    for node in previews:
        grid = node["grid"]
        assert grid and not grid.get("error"), f"{path.name}: {node['type']} #{node['id']}: {grid}"
        assert grid["canvas"] == canvas and grid["source"] == latents[0]["type"], (node["type"], grid["canvas"], grid["source"])
        if node["type"] in ZOOM_NODES:
            check_zoom_grid(grid, canvas)
            continue
        assert grid["align"] == expected_align(workflow), (node["type"], grid["align"])
        assert grid["windows"] == latent_plan(grid["spec"], canvas, grid["align"]), node["type"]
        cfg_factor = 1 if grid["cfg"] == 1 else 2
        assert grid["evals"] == len(grid["windows"]) * cfg_factor * grid["batch"], grid["text"]
        assert f"{len(grid['windows'])} windows, {grid['evals']} model evaluations per step" in grid["text"][1]


def check_zoom_grid(grid: dict, canvas) -> None:
    p, levels = grid["zoom"], grid["levels"]
    assert len(grid["rects"]) == levels
    for i, (x, y, w, h) in enumerate(grid["rects"]):
        assert w == pytest.approx(canvas[0] / p ** i) and h == pytest.approx(canvas[1] / p ** i)
        assert x + w / 2 == pytest.approx(canvas[0] / 2) and y + h / 2 == pytest.approx(canvas[1] / 2)


def node_of(nodes: list[dict], kind: str) -> dict:
    return next(n for n in nodes if n["type"] == kind)


def click_arrow(page, node_id: int, widget: str, side: int = 1) -> None:
    x, y = page.evaluate("([id, name, side]) => __vt.arrow(id, name, side)", [node_id, widget, side])
    page.mouse.click(x, y)
    page.evaluate("() => __vt.frames()")


def changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int((np.abs(a - b).sum(axis=-1) > 24).sum())


def test_stride_widget_redraws_grid(page, artifacts):
    """Clicking stride_x's increment arrow on Vista Tiled Diffusion changes the planned and the drawn grid."""
    nodes = load(page, json.loads((comfy_server.REPO_ROOT / "workflows" / "panorama_multidiffusion.json").read_text()))
    tiled = node_of(nodes, "VistaTiledDiffusion")
    page.evaluate("(b) => __vt.view(...b)", tiled["bounds"])
    clip = page.evaluate("(id) => __vt.nodeRect(id)", tiled["id"])
    before = shot(page, artifacts / "stride_before.png", clip)

    click_arrow(page, tiled["id"], "stride_x")
    page.wait_for_function("([id, v]) => __vt.node(id).vistaGrid.version > v", arg=[tiled["id"], tiled["grid"]["version"]])
    after_state = node_of(page.evaluate("() => __vt.nodes()"), "VistaTiledDiffusion")
    after = shot(page, artifacts / "stride_after.png", clip)

    old, new = tiled["grid"], after_state["grid"]
    assert after_state["widgets"]["stride_x"] > tiled["widgets"]["stride_x"], "the arrow click did not raise stride_x"
    assert new["spec"]["stride_x"] == after_state["widgets"]["stride_x"]
    assert new["windows"] != old["windows"]
    assert new["windows"] == latent_plan(new["spec"], new["canvas"], 1)
    assert changed_pixels(before, after) > 50, "the node's pixels did not change after the stride changed"


def test_zoom_levels_drawn(page, artifacts):
    """The zoom nodes draw p^-i nested levels, read from Vista Zoom Settings, and follow its levels widget."""
    nodes = load(page, json.loads((comfy_server.REPO_ROOT / "workflows" / "zoom_text_4_levels.json").read_text()))
    settings, sampler = node_of(nodes, "VistaZoomSettings"), node_of(nodes, "VistaZoomStackSampler")
    for node in (settings, sampler):
        assert node["grid"]["levels"] == settings["widgets"]["levels"]
        assert node["grid"]["zoom"] == int(settings["widgets"]["zoom_factor"])
    page.evaluate("(b) => __vt.view(...b)", settings["bounds"])
    clip = page.evaluate("(id) => __vt.nodeRect(id)", settings["id"])
    before = shot(page, artifacts / "zoom_before.png", clip)

    click_arrow(page, settings["id"], "levels", side=-1)
    page.wait_for_function("([id, v]) => __vt.node(id).vistaGrid.version > v", arg=[settings["id"], settings["grid"]["version"]])
    page.wait_for_function("([id, v]) => __vt.node(id).vistaGrid.version > v", arg=[sampler["id"], sampler["grid"]["version"]])
    nodes = page.evaluate("() => __vt.nodes()")
    after = shot(page, artifacts / "zoom_after.png", clip)
    levels = node_of(nodes, "VistaZoomSettings")["widgets"]["levels"]
    assert levels == settings["widgets"]["levels"] - 1
    for kind in ZOOM_NODES:
        grid = node_of(nodes, kind)["grid"]
        assert grid["levels"] == levels
        check_zoom_grid(grid, grid["canvas"])
    assert changed_pixels(before, after) > 20, "the zoom preview's pixels did not change with the levels"


def test_warning_reaches_the_user_as_a_toast(page, artifacts, browser_server):
    """A prompt queued from the page whose Tiled Diffusion stride must snap to the UNet grid under MAD: the node's
    warning (nodes/notify.py warn_user) shows as a toast, and the preview announced the same snap beforehand."""
    nodes = load(page, json.loads((comfy_server.REPO_ROOT / "workflows" / "panorama_mad.json").read_text()))
    ids = {n["type"]: n["id"] for n in nodes}
    page.evaluate("(a) => __vt.setWidgets(...a)", [ids["CheckpointLoaderSimple"], {"ckpt_name": comfy_server.CHECKPOINT}])
    page.evaluate("(a) => __vt.setWidgets(...a)", [ids["EmptyLatentImage"], {"width": 768, "height": 64, "batch_size": 1}])
    page.evaluate("(a) => __vt.setWidgets(...a)", [ids["KSampler"], {"steps": 1}])
    page.evaluate("(a) => __vt.setWidgets(...a)", [ids["VistaTiledDiffusion"], {
        "window_width": 512, "window_height": 64, "stride_x": 72, "stride_y": 64}])
    page.wait_for_function("(id) => __vt.node(id).vistaGrid.spec.stride_x === 72 && __vt.node(id).vistaGrid.canvas[0] === 768",
                           arg=ids["VistaTiledDiffusion"])
    grid = node_of(page.evaluate("() => __vt.nodes()"), "VistaTiledDiffusion")["grid"]
    assert grid["align"] == 8 and grid["windows"] == latent_plan(grid["spec"], [768, 64], 8)
    assert any("stride_x=72 px snapped to 64 px" in note for note in grid["notes"]), grid["notes"]

    history_before = set(browser_server.get("/history"))
    page.evaluate("() => app.queuePrompt(0, 1)")
    # The message names the model's own UNet grid (the slim test UNet has 2 levels: 16 px); the toast's title is the
    # node, its text the warning. It lives 12 s, so look for it while the prompt runs.
    toast = page.get_by_text("stride_x=72 px is not a multiple of the UNet grid").filter(visible=True)
    finished, deadline = None, time.monotonic() + TOAST_TIMEOUT_S
    while not toast.count() and time.monotonic() < deadline:
        done = set(browser_server.get("/history")) - history_before
        if done and finished is None:
            finished = time.monotonic()
        assert finished is None or time.monotonic() - finished < 10, "the prompt finished and no warning toast appeared"
        time.sleep(0.25)
    assert toast.count(), f"no warning toast within {TOAST_TIMEOUT_S:.0f} s:\n{browser_server.log_tail()}"
    page.screenshot(path=str(artifacts / "warning_toast.png"))
    assert page.get_by_text("Vista Tiled Diffusion", exact=True).filter(visible=True).count() >= 1, "no toast title"

    while not (done := set(browser_server.get("/history")) - history_before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert done, f"the queued prompt did not finish:\n{browser_server.log_tail()}"
    entry = browser_server.get("/history")[done.pop()]
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
