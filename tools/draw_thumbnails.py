"""Draw an honest thumbnail for every shipped workflow: what the workflow sets up, never a result image.

Usage::

    python tools/draw_thumbnails.py            # (re)write workflows/<name>.jpg for every workflows/*.json
    python tools/draw_thumbnails.py --check    # exit 1 when a thumbnail is missing or differs from a redraw

Both supported frontends (ComfyUI v0.3.64 with frontend 1.27.10, v0.33.0 with 1.49.6) show a custom-node
template's thumbnail from ``/api/workflow_templates/<pack folder>/<name>.jpg``, i.e. ``workflows/<name>.jpg``
beside ``workflows/<name>.json``; the file name (no title field) is the card's title, so each thumbnail carries
the workflow's own title: the first line of its "Vista — …" Note.

Panorama and large-canvas workflows: the canvas (the EmptyLatentImage-like node's width x height) with the
window plan the Vista node will make, planned by the pack's own ``core.canvas.windows.plan_windows`` from the node's
window, stride and wrap widgets as ``nodes._common.WindowSpec.plan`` does (a window larger than the canvas is
clamped to it; offsets lie on the UNet grid while Vista MAD Attention is on the model, on even latent px with
Vista Multi-Scale Diffusion). The canvas is shaded by how many windows cover each pixel; bars under it (and
beside it, when there is more than one row) show every window's extent; the first window is outlined in white,
SyncDiffusion's anchor window (``core.guidance.syncdiffusion.anchor_window``) in gold, Style Alignment's tiles
(``core.fusion.style_alignment.tile_offsets``) dashed. Zoom-stack workflows: the N nested levels, each the central
1/p x 1/p of the one before, with their prompts.

Deterministic: the same workflow drawn with the same Pillow gives the same bytes. tests/core/test_thumbnails.py
redraws every thumbnail and compares.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
SIZE = 512
MARGIN = 20
FIG_TOP, FIG_BOTTOM = 112, 378
LATENT_FACTOR = 8  # image px per latent px: SD1.x/2.x, SDXL, SD3 and Flux (every shipped workflow's family)
MAD_ALIGN = 8  # latent px: the UNet grid of SD1.x/2.x (2^(4-1)); the shipped MAD workflow is SD1.5
MSD_ALIGN = 2  # latent px: Multi-Scale Diffusion keeps window offsets even (a whole-pixel footprint one level down)
JPEG = {"quality": 90, "subsampling": 0, "optimize": False, "progressive": False}

BG = (20, 22, 28)
FG = (236, 238, 242)
MUTED = (150, 156, 170)
FRAME = (110, 118, 134)
COVER_LOW, COVER_HIGH = (36, 46, 64), (86, 136, 212)
FIRST, ANCHOR, TILE = (255, 255, 255), (255, 196, 0), (200, 210, 230)
PALETTE = [(255, 179, 71), (102, 204, 153), (236, 112, 99), (130, 170, 255),
           (214, 153, 255), (255, 221, 87), (94, 214, 214), (255, 140, 190)]

ASCII = str.maketrans({"×": "x", "−": "-", "…": "...", "’": "'", "“": '"', "”": '"'})  # glyphs the default font lacks
CONTROL = "(control after generate)"  # the frontend's extra widget behind seed inputs: saved, never an input
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# Widget inputs in the order the frontend saves them in widgets_values (tests/host/test_node_docs.py checks the
# Vista and host entries against the live schemas).
WIDGETS = {
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "EmptySD3LatentImage": ("width", "height", "batch_size"),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "UNETLoader": ("unet_name", "weight_dtype"),
    "KSampler": ("seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "LoadImage": ("image",),
    "VistaTiledDiffusion": ("window_width", "window_height", "stride_x", "stride_y", "weight_mode", "wrap_x",
                            "window_batch_size", "window_size_conditioning", "positions"),
    "VistaLatentFusionSampler": ("window_width", "window_height", "stride_x", "stride_y", "weight_mode", "wrap_x",
                                 "window_batch_size", "eta", "s_noise", "variance_corrected", "window_size_conditioning",
                                 "positions"),
    "VistaMADAttention": ("tau", "input_blocks", "middle_block", "output_blocks"),
    "VistaStyleAlignment": ("noise_seed", CONTROL, "window_width", "window_height", "alpha", "reference"),
    "VistaSyncDiffusion": ("weight", "decay", "guided_steps", "lpips_net", "decoder"),
    "VistaMultiScaleDiffusion": ("levels", "weight", "guided_fraction", "noise_level"),
    "VistaZoomSettings": ("zoom_factor", "levels"),
    "VistaZoomPrompts": ("prompts",),
    "VistaZoomNoise": ("noise_seed", CONTROL),
    "VistaZoomStackSampler": ("eta", "s_noise", "photo_steps", "photo_lr", "photo_until"),
    "VistaZoomComposite": ("feather",),
    "VistaZoomVideo": ("frames_per_level", "feather"),
}
CANVAS_NODES = ("EmptyLatentImage", "EmptySD3LatentImage")
WINDOWED_NODES = {"VistaTiledDiffusion": "Vista Tiled Diffusion", "VistaLatentFusionSampler": "Vista Latent Fusion Sampler"}


def _pack():
    """The pack's host-free core, imported as ``vista.core`` (the repo root never goes on sys.path)."""
    if "vista" not in sys.modules:
        spec = importlib.util.spec_from_file_location("vista", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["vista"] = module
        spec.loader.exec_module(module)
    import vista.core.guidance.msd
    import vista.core.fusion.style_alignment
    import vista.core.guidance.syncdiffusion
    import vista.core.canvas.windows

    return vista.core


# --- reading a UI-format workflow ------------------------------------------------------------------
def widgets(node: dict) -> dict:
    """``{input name: value}`` of a node's saved widgets (only node types listed in :data:`WIDGETS`)."""
    values = node.get("widgets_values") or []
    if isinstance(values, dict):
        return dict(values)
    names, out, i = WIDGETS[node["type"]], {}, 0
    for name in names:
        if i >= len(values):
            break
        if name == CONTROL:
            i += values[i] in CONTROL_VALUES
            continue
        out[name] = values[i]
        i += 1
    return out


def nodes_of(workflow: dict, *types: str) -> list[dict]:
    return [n for n in workflow["nodes"] if n["type"] in types and n.get("mode", 0) != 2]


def one(workflow: dict, *types: str) -> dict | None:
    found = nodes_of(workflow, *types)
    return widgets(found[0]) if found else None


def linked(node: dict, name: str) -> bool:
    return any(i.get("name") == name and i.get("link") is not None for i in node.get("inputs", []))


def title(workflow: dict, name: str) -> str:
    """The first line of the workflow's "Vista — …" Note, or the file name made readable."""
    for node in nodes_of(workflow, "Note", "MarkdownNote"):
        text = str((node.get("widgets_values") or [""])[0]).strip()
        if text.startswith("Vista"):
            first = text.split("\n", 1)[0].split("—", 1)[-1].strip().rstrip(".")
            return first[:1].upper() + first[1:]
    return name.replace("_", " ").capitalize()


def checkpoint(workflow: dict) -> str:
    loader = one(workflow, "CheckpointLoaderSimple") or {}
    unet = one(workflow, "UNETLoader") or {}
    return str(loader.get("ckpt_name") or unet.get("unet_name") or "")


def steps(workflow: dict) -> int | None:
    sched = one(workflow, "KSampler", "BasicScheduler")
    return int(sched["steps"]) if sched and "steps" in sched else None


# --- what a workflow sets up -----------------------------------------------------------------------
@dataclass(frozen=True)
class Panorama:
    """A windowed canvas: sizes in image px, the plan in latent px (from core.canvas.windows)."""

    node: str
    canvas: tuple[int, int]  # (width, height) px
    window: tuple[int, int]  # (width, height) px as given
    stride: tuple[int, int]  # (x, y) px as given
    wrap: bool
    weight_mode: str
    align: int
    windows: tuple  # core.canvas.windows.Window records, latent px
    hw: tuple[int, int]  # latent (H, W)
    anchor: int | None = None
    tiles: tuple[list[int], list[int]] | None = None  # Style Alignment tile starts (ys, xs), latent px
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ZoomStack:
    p: int
    levels: int
    size: tuple[int, int]  # one level, px
    prompts: list[str]
    photo: bool = False
    notes: list[str] = field(default_factory=list)


def panorama(workflow: dict) -> Panorama:
    core = _pack()
    canvas = one(workflow, *CANVAS_NODES)
    if canvas is None:
        raise ValueError(f"no canvas node ({' / '.join(CANVAS_NODES)}) in the workflow")
    windowed = nodes_of(workflow, *WINDOWED_NODES)[0]
    v = widgets(windowed)
    f = LATENT_FACTOR
    H, W = int(canvas["height"]) // f, int(canvas["width"]) // f
    mad = one(workflow, "VistaMADAttention")
    msd = one(workflow, "VistaMultiScaleDiffusion")
    align = max([1] + ([MAD_ALIGN] if mad else []) + ([MSD_ALIGN] if msd else []))
    wh, ww = min(int(v["window_height"]) // f, H), min(int(v["window_width"]) // f, W)
    sy, sx = min(int(v["stride_y"]) // f, wh), min(int(v["stride_x"]) // f, ww)
    wrap = bool(v.get("wrap_x", False))
    windows = core.canvas.windows.plan_windows(H, W, wh, ww, sy, sx, wrap_x=wrap, align=align)
    n_steps, notes = steps(workflow), []
    evals = f" = {len(windows) * n_steps} window passes" if n_steps else ""
    if windowed["type"] == "VistaTiledDiffusion":
        sampler = one(workflow, "KSampler", "KSamplerSelect") or {}
        notes.append(f"Tiled Diffusion + {sampler.get('sampler_name', 'a stock sampler')}, {n_steps} steps{evals}")
    else:
        eta = float(v.get("eta", 0.0))
        step = "deterministic (eta 0)" if eta == 0 else f"eta {eta:g}" + (", VCF" if v.get("variance_corrected") else "")
        notes.append(f"Latent Fusion Sampler, {step}, {n_steps} steps{evals}")
    if mad:
        active = math.floor(float(mad["tau"]) * n_steps + 0.5) if n_steps else "?"
        notes.append(f"+ MAD: merged attention for the first {active} steps (tau {float(mad['tau']):g})")
    anchor = None
    if nodes_of(workflow, "VistaSyncDiffusion"):
        sync = one(workflow, "VistaSyncDiffusion")
        anchor = core.guidance.syncdiffusion.anchor_window(windows, (H, W))
        notes.append(f"+ SyncDiffusion: LPIPS toward the gold anchor window, weight {float(sync['weight']):g}")
    if msd:
        lower = core.guidance.msd.level_plans((H, W), (wh, ww), (sy, sx), int(msd["levels"]), wrap)[1:]
        sizes = ", ".join(f"{p.canvas_hw[1] * f}x{p.canvas_hw[0] * f} px: {len(p.windows)} windows" for p in lower)
        notes.append(f"+ MSD {int(msd['levels'])} levels ({sizes}), first {float(msd['guided_fraction']):.0%} of steps")
    tiles = None
    style = one(workflow, "VistaStyleAlignment")
    if style:
        th, tw = min(int(style["window_height"]) // f, H), min(int(style["window_width"]) // f, W)
        tiles = (core.fusion.style_alignment.tile_offsets(H, th), core.fusion.style_alignment.tile_offsets(W, tw))
        notes.append(f"+ Style Alignment: {len(tiles[1])}x{len(tiles[0])} tiles (dashed), alpha {float(style['alpha']):g}")
    return Panorama(WINDOWED_NODES[windowed["type"]], (int(canvas["width"]), int(canvas["height"])),
                    (int(v["window_width"]), int(v["window_height"])), (int(v["stride_x"]), int(v["stride_y"])),
                    wrap, str(v.get("weight_mode", "uniform")), align, windows, (H, W), anchor, tiles, notes)


def zoom_stack(workflow: dict) -> ZoomStack:
    settings = one(workflow, "VistaZoomSettings")
    canvas = one(workflow, *CANVAS_NODES) or {}
    prompts = one(workflow, "VistaZoomPrompts") or {}
    lines = [line.strip() for line in str(prompts.get("prompts", "")).split("\n") if line.strip()]
    p, n = int(settings["zoom_factor"]), int(settings["levels"])
    notes, photo = [], False
    sampler = nodes_of(workflow, "VistaZoomStackSampler")
    if sampler:
        s = widgets(sampler[0])
        notes.append(f"joint sampling of all {n} levels, {steps(workflow)} steps, eta {float(s['eta']):g}")
        photo = linked(sampler[0], "photo")
        if photo:
            source = (one(workflow, "LoadImage") or {}).get("image", "a photo")
            notes.append(f"photo {source} guides level 0 for the first {float(s['photo_until']):.0%} of steps")
    video = one(workflow, "VistaZoomVideo")
    if video:
        frames = (n - 1) * int(video["frames_per_level"]) + 1
        notes.append(f"video: ({n}-1)*{int(video['frames_per_level'])}+1 = {frames} frames, feather {int(video['feather'])} px")
    return ZoomStack(p, n, (int(canvas.get("width", 512)), int(canvas.get("height", 512))), lines, photo, notes)


# --- drawing ---------------------------------------------------------------------------------------
def font(size: int):
    return ImageFont.load_default(size=size)


def wrap_text(draw: ImageDraw.ImageDraw, text: str, fnt, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` px, at most ``max_lines`` lines (the last one ends in … when cut)."""
    lines, line = [], ""
    for word in text.translate(ASCII).split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=fnt) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and draw.textlength(last + " ...", font=fnt) > width:
            last = last[:-1]
        lines[-1] = last.rstrip() + " ..."
    return lines


def header(draw: ImageDraw.ImageDraw, heading: str, subtitle: str) -> None:
    y = 16
    for line in wrap_text(draw, heading, font(24), SIZE - 2 * MARGIN, 2):
        draw.text((MARGIN, y), line, fill=FG, font=font(24))
        y += 30
    draw.text((MARGIN, 84), wrap_text(draw, subtitle, font(14), SIZE - 2 * MARGIN, 1)[0], fill=MUTED, font=font(14))


def footer(draw: ImageDraw.ImageDraw, lines: list[str], name: str) -> None:
    y, fnt = 388, font(13)
    out = []
    for line in lines:
        out += wrap_text(draw, line, fnt, SIZE - 2 * MARGIN, 2)
    for line in out[:5]:
        draw.text((MARGIN, y), line, fill=FG, font=fnt)
        y += 18
    draw.text((MARGIN, SIZE - 24), f"workflows/{name}.json", fill=MUTED, font=font(12))


def spans(start: int, length: int, size: int, wrap: bool) -> list[tuple[int, int]]:
    """``[start, end)`` pieces of an interval on an axis of ``size`` (split at the edge when it wraps)."""
    if wrap and start + length > size:
        return [(start, size), (0, start + length - size)]
    return [(start, min(start + length, size))]


def coverage(plan: Panorama):
    """Windows covering each latent pixel, ``(H, W)`` int tensor (columns modulo the width on a wrapped canvas)."""
    import torch

    H, W = plan.hw
    count = torch.zeros(H, W, dtype=torch.int64)
    for win in plan.windows:
        for a, b in spans(win.x, win.w, W, plan.wrap):
            count[win.y:win.y + win.h, a:b] += 1
    return count


def coverage_range(plan: Panorama) -> str:
    count = coverage(plan)
    low, high = int(count.min()), int(count.max())
    return str(low) if low == high else f"{low}-{high}"


def draw_panorama(img: Image.Image, plan: Panorama) -> None:
    draw = ImageDraw.Draw(img)
    H, W = plan.hw
    xs = sorted({w.x for w in plan.windows})
    ys = sorted({w.y for w in plan.windows})
    pitch = max(3, min(8, (FIG_BOTTOM - FIG_TOP) // 3 // max(len(xs), 1)))
    strip_h = len(xs) * pitch
    strip_w = len(ys) * pitch + 8 if len(ys) > 1 else 0
    scale = min((SIZE - 2 * MARGIN - strip_w) / W, (FIG_BOTTOM - FIG_TOP - strip_h - 8) / H)
    cw, ch = round(W * scale), round(H * scale)
    x0 = (SIZE - cw - strip_w) // 2
    y0 = FIG_TOP + (FIG_BOTTOM - FIG_TOP - ch - strip_h - 8) // 2

    def px(x: float) -> int:
        return x0 + round(x * scale)

    def py(y: float) -> int:
        return y0 + round(y * scale)

    count = coverage(plan)
    top = max(int(count.max()), 2)
    shade = Image.new("RGB", (W, H))
    colours = [tuple(round(lo + (hi - lo) * (k - 1) / (top - 1)) for lo, hi in zip(COVER_LOW, COVER_HIGH))
               for k in range(top + 1)]
    shade.putdata([colours[k] for k in count.flatten().tolist()])
    img.paste(shade.resize((cw, ch), Image.NEAREST), (x0, y0))
    if plan.tiles:
        for ty in plan.tiles[0][1:]:
            for x in range(0, cw, 8):
                draw.line([(x0 + x, py(ty)), (x0 + min(x + 4, cw), py(ty))], fill=TILE, width=1)
        for tx in plan.tiles[1][1:]:
            for y in range(0, ch, 8):
                draw.line([(px(tx), y0 + y), (px(tx), y0 + min(y + 4, ch))], fill=TILE, width=1)
    draw.rectangle([x0 - 1, y0 - 1, x0 + cw, y0 + ch], outline=FRAME, width=1)

    def outline(win, colour, width):
        for a, b in spans(win.x, win.w, W, plan.wrap):
            draw.rectangle([px(a), py(win.y), px(b) - 1, py(win.y + win.h) - 1], outline=colour, width=width)

    outline(plan.windows[0], FIRST, 2)
    if plan.anchor is not None:
        outline(plan.windows[plan.anchor], ANCHOR, 3)
    for lane, x in enumerate(xs):  # horizontal extents, one lane per window column
        yb = y0 + ch + 8 + lane * pitch
        for a, b in spans(x, plan.windows[0].w, W, plan.wrap):
            draw.rectangle([px(a), yb, px(b) - 1, yb + pitch - 2], fill=PALETTE[lane % len(PALETTE)])
    if len(ys) > 1:  # vertical extents, one lane per window row
        for lane, y in enumerate(ys):
            xb = x0 + cw + 8 + lane * pitch
            draw.rectangle([xb, py(y), xb + pitch - 2, py(y + plan.windows[0].h) - 1], fill=PALETTE[lane % len(PALETTE)])


ZOOM_SIDE = FIG_BOTTOM - FIG_TOP - 10  # px: the most zoomed-out level's square


def layout_box(workflow: dict) -> tuple[int, int, int, int]:
    """The part of a thumbnail that holds only geometry (no text): ``(left, top, right, bottom)`` px.

    Text rendering may differ slightly between Pillow/FreeType versions; the geometry may not.
    """
    if nodes_of(workflow, "VistaZoomSettings"):
        return MARGIN, FIG_TOP, MARGIN + ZOOM_SIDE + 1, FIG_BOTTOM
    return 0, FIG_TOP, SIZE, FIG_BOTTOM


def draw_zoom(img: Image.Image, stack: ZoomStack) -> None:
    draw = ImageDraw.Draw(img)
    side = ZOOM_SIDE
    x0, y0 = MARGIN, FIG_TOP + 5
    cx, cy = x0 + side / 2, y0 + side / 2
    draw.rectangle([x0, y0, x0 + side, y0 + side], fill=COVER_LOW)
    for i in range(stack.levels):
        s = max(side / stack.p ** i, 3)
        box = [round(cx - s / 2), round(cy - s / 2), round(cx + s / 2), round(cy + s / 2)]
        draw.rectangle(box, outline=PALETTE[i % len(PALETTE)], width=2 if s >= 12 else 1)
        if s >= 28:
            draw.text((box[0] + 5, box[1] + 3), str(i), fill=PALETTE[i % len(PALETTE)], font=font(13))
    lx, y, fnt = x0 + side + 16, y0, font(13)
    shown = min(stack.levels, 6)
    for i in range(shown):
        draw.rectangle([lx, y + 3, lx + 9, y + 12], fill=PALETTE[i % len(PALETTE)])
        prompt = stack.prompts[i] if i < len(stack.prompts) else "(no prompt line)"
        for line in wrap_text(draw, f"{i}: {prompt}", fnt, SIZE - MARGIN - lx - 14, 3):
            draw.text((lx + 14, y), line, fill=FG, font=fnt)
            y += 16
        y += 6
    if stack.levels > shown:
        draw.text((lx + 14, y), f"... {stack.levels - shown} more levels", fill=MUTED, font=fnt)


def render(workflow: dict, name: str) -> Image.Image:
    """The thumbnail of one UI-format workflow (``name``: its file name without .json)."""
    img = Image.new("RGB", (SIZE, SIZE), BG)
    draw = ImageDraw.Draw(img)
    ckpt = checkpoint(workflow)
    if nodes_of(workflow, "VistaZoomSettings"):
        stack = zoom_stack(workflow)
        kind = "zoom stack from a photo" if stack.photo else "zoom stack from text"
        header(draw, title(workflow, name), f"{kind} · {ckpt}" if ckpt else kind)
        draw_zoom(img, stack)
        deepest = stack.p ** (stack.levels - 1)
        lines = [f"{stack.levels} levels of {stack.size[0]}x{stack.size[1]} px, each the central 1/{stack.p} of the "
                 f"one before (deepest x{deepest})", *stack.notes]
    elif nodes_of(workflow, *WINDOWED_NODES):
        plan = panorama(workflow)
        header(draw, title(workflow, name), f"{plan.node} · {ckpt}" if ckpt else plan.node)
        draw_panorama(img, plan)
        rows, cols = len({w.y for w in plan.windows}), len({w.x for w in plan.windows})
        used = (plan.windows[1].x - plan.windows[0].x) * LATENT_FACTOR if cols > 1 else None
        stride = f"stride {plan.stride[0]}x{plan.stride[1]} px" + (
            f" (used: {used} px on the {plan.align * LATENT_FACTOR} px grid)" if used and used != plan.stride[0] else "")
        lines = [f"canvas {plan.canvas[0]}x{plan.canvas[1]} px · window {plan.window[0]}x{plan.window[1]} px · {stride}",
                 f"{len(plan.windows)} windows per step ({rows}x{cols}) · {plan.weight_mode} weights"
                 + (" · wrap_x: 360°" if plan.wrap else "") + f" · shade: {coverage_range(plan)} windows per pixel",
                 *plan.notes]
    else:
        raise ValueError(f"{name}: no Vista windowed or zoom node to draw")
    footer(draw, lines, name)
    return img


def encode(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", **JPEG)
    return out.getvalue()


def workflow_paths() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.json"))


def thumbnail_path(workflow: Path) -> Path:
    return workflow.with_suffix(".jpg")


def draw_file(path: Path) -> Image.Image:
    return render(json.loads(path.read_text(encoding="utf-8")), path.stem)


def difference(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int] | None = None) -> tuple[float, float]:
    """``(mean, changed)`` of two same-size images, inside ``box`` when given: the mean absolute difference per
    channel (0–255) and the fraction of pixels whose largest channel difference exceeds 64 (a JPEG q90 round
    trip of these drawings stays below 50 everywhere)."""
    if a.size != b.size:
        return 255.0, 1.0
    a, b = a.convert("RGB"), b.convert("RGB")
    if box:
        a, b = a.crop(box), b.crop(box)
    diff = ImageChops.difference(a, b)
    channels = diff.split()
    mean = sum(sum(i * n for i, n in enumerate(c.histogram())) for c in channels) / (3 * a.width * a.height)
    peak = ImageChops.lighter(ImageChops.lighter(channels[0], channels[1]), channels[2])
    changed = sum(peak.histogram()[65:]) / (a.width * a.height)
    return mean, changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a thumbnail is missing or differs from a redraw")
    args = parser.parse_args(argv)
    bad = 0
    for path in workflow_paths():
        target = thumbnail_path(path)
        data = encode(draw_file(path))
        if args.check:
            if not target.is_file() or target.read_bytes() != data:
                print(f"draw_thumbnails: {target.relative_to(ROOT)} is missing or out of date", file=sys.stderr)
                bad += 1
            continue
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
            print(f"draw_thumbnails: wrote {target.relative_to(ROOT)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
