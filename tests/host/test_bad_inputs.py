"""Bad-input sweep (issue [F], verification): every Vista node, bad inputs queued through ``/prompt``.

Each case starts from a shipped workflow (``workflows/*.json`` converted with :func:`ui_to_api`, made tiny: a
small canvas, 1 step) and changes one input, or one link of the graph. It then asserts one of:

* ``reject`` — ``POST /prompt`` answers HTTP 400 and ``node_errors`` names the node (by id and class) and the
  input, with a message that states the allowed range (ComfyUI's own min/max/option check, or the node's
  ``validate_inputs``); where the workflow has another, valid output branch, ComfyUI answers 200 with the same
  ``node_errors`` and runs only the valid branch (Vista Zoom Video's frames_per_level: the levels are still saved);
* ``error`` — the prompt is queued and fails with an ``execution_error`` whose ``exception_message`` starts
  with the Vista node's display name and names the input and the allowed range or the fix; never a raw torch
  error or an out-of-memory;
* ``ok`` — documented as not an error (the host adapts the input), and the run succeeds.

A memory refusal must come before allocating: the server's peak RSS (``/proc``, reset per case) may grow at most
4 GiB. One module-scoped server; tiny canvases, 1 step: about 1-3 minutes on 2 CPU cores.

After every few cases, and once at the end, a small good prompt must succeed: the server keeps serving.
Latents that no widget can make (16 channels with content, 5-D, NaN) come from stock ``LoadLatent`` reading a
``.latent`` file the test writes into the server's input folder (what a user's saved latent would be); Inf
comes from stock nodes with in-range widget values alone (EmptyImage -> VAEEncode -> LatentMultiply x10, 45 times).
Widget values the host cannot convert ("wide", null, {}), missing inputs and NaN/Infinity (which ``json.dumps``
writes and the server's ``json.loads`` reads) go into the prompt as they are; a linked value comes from a stock
``PrimitiveInt``/``PrimitiveFloat`` node (the host checks no range of a linked value).
Run it with ``COMFYUI_PATH`` set, like test_e2e_workflows.py; the table in CONTRIBUTING.md ("The bad-input sweep") lists these
cases.
"""
from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors.numpy import save_file

import comfy_server
from comfy_server import PromptRejected, nodes_of, ui_to_api
from test_e2e_workflows import check_image, errors, fast, provide_inputs

pytestmark = [pytest.mark.host, pytest.mark.e2e, pytest.mark.sweep]

RUN_TIMEOUT = 600.0
GOOD_EVERY = 5  # a good prompt after every GOOD_EVERY bad cases
RAW_SIGNS = ("can't allocate", "out of memory", "CUDA error", "Given groups=", "size of tensor a", "mat1 and mat2",
             "Expected all tensors", "expected input")
NAMES = {"VistaTiledDiffusion": "Vista Tiled Diffusion", "VistaLatentFusionSampler": "Vista Latent Fusion Sampler",
         "VistaStyleAlignment": "Vista Style Alignment", "VistaMADAttention": "Vista MAD Attention",
         "VistaSyncDiffusion": "Vista SyncDiffusion", "VistaMultiScaleDiffusion": "Vista Multi-Scale Diffusion",
         "VistaZoomSettings": "Vista Zoom Settings", "VistaZoomPrompts": "Vista Zoom Prompts",
         "VistaZoomNoise": "Vista Zoom Noise", "VistaZoomStackSampler": "Vista Zoom Stack Sampler",
         "VistaZoomComposite": "Vista Zoom Composite", "VistaZoomVideo": "Vista Zoom Video"}
BASES = {"td": "panorama_multidiffusion", "mad": "panorama_mad", "lfs": "panorama_guided_fusion_style_align",
         "sync": "panorama_syncdiffusion", "msd": "panorama_msd_2d", "zoom": "zoom_text_4_levels",
         "photo": "zoom_from_photo"}
WINDOWS = {"window_width": 128, "window_height": 128, "stride_x": 64, "stride_y": 64}
ZOOM_PX = 128  # zoom level size: feather 16 is at most a quarter of the 64 px centre block at p = 2


# --- the tiny prompts every case starts from ---------------------------------------------------------------
def only(prompt: dict, class_type: str) -> tuple[str, dict]:
    (node_id, node), = nodes_of(prompt, class_type).items()
    return node_id, node


def add(prompt: dict, class_type: str, **inputs) -> str:
    """Add a node; returns its id."""
    node_id = str(max(int(k) for k in prompt) + 1)
    prompt[node_id] = {"class_type": class_type, "inputs": inputs}
    return node_id


def tiny(name: str, prompt: dict) -> dict:
    """The shipped workflow at a tiny size and 1 step (2 with Multi-Scale Diffusion, see ``fast``)."""
    prompt = fast(prompt, steps=1)
    for node in nodes_of(prompt, "EmptyLatentImage").values():
        size = (ZOOM_PX, ZOOM_PX) if name in ("zoom", "photo") else (512, 256) if name == "msd" else (256, 128)
        node["inputs"].update(width=size[0], height=size[1])
    for kind in ("VistaTiledDiffusion", "VistaLatentFusionSampler"):
        for node in nodes_of(prompt, kind).values():
            node["inputs"].update(WINDOWS)
    for node in nodes_of(prompt, "VistaStyleAlignment").values():
        node["inputs"].update(window_width=128, window_height=128)
    for node in nodes_of(prompt, "ImageScale").values():
        node["inputs"].update(width=ZOOM_PX, height=ZOOM_PX)
    for node in nodes_of(prompt, "VistaZoomVideo").values():
        node["inputs"]["frames_per_level"] = 2
    return prompt


@pytest.fixture(scope="module")
def bases(comfyui_server) -> dict[str, dict]:
    info = comfyui_server.object_info()
    out = {}
    for key, name in BASES.items():
        ui = json.loads((comfy_server.REPO_ROOT / "workflows" / f"{name}.json").read_text())
        out[key] = tiny(key, ui_to_api(ui, info))
        provide_inputs(out[key], comfyui_server.workdir / "input")
    return out


# --- graph edits ------------------------------------------------------------------------------------------
def set_input(base: str, class_type: str, **inputs) -> Callable[[dict, Path], dict]:
    def build(bases: dict, input_dir: Path) -> dict:
        prompt = copy.deepcopy(bases[base])
        only(prompt, class_type)[1]["inputs"].update(inputs)
        return prompt
    return build


def sampler_inputs(prompt: dict) -> dict:
    """The inputs of the prompt's sampler node (KSampler or SamplerCustomAdvanced), the one taking latent_image."""
    (node,) = [n for n in prompt.values() if n["class_type"] in ("KSampler", "SamplerCustomAdvanced")]
    return node["inputs"]


def write_latent(input_dir: Path, name: str, array: np.ndarray) -> str:
    """A ``.latent`` file for stock LoadLatent (``latent_format_version_0``: loaded without rescaling)."""
    save_file({"latent_tensor": array.astype(np.float32), "latent_format_version_0": np.zeros(1, np.float32)},
              str(input_dir / name))
    return name


def loaded_latent(base: str, name: str, make: Callable[[], np.ndarray]) -> Callable[[dict, Path], dict]:
    """The sampler's latent_image from LoadLatent of ``make()`` instead of EmptyLatentImage."""
    def build(bases: dict, input_dir: Path) -> dict:
        prompt = copy.deepcopy(bases[base])
        latent_id = add(prompt, "LoadLatent", latent=write_latent(input_dir, name, make()))
        sampler_inputs(prompt)["latent_image"] = [latent_id, 0]
        return prompt
    return build


def rng_latent(shape) -> Callable[[], np.ndarray]:
    return lambda: np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def nan_latent(shape) -> Callable[[], np.ndarray]:
    def make():
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        x[..., :2, :2] = np.nan
        return x
    return make


def inf_latent_by_stock_nodes(prompt: dict) -> None:
    """EmptyImage (white) -> VAEEncode -> 45 x LatentMultiply(10): every widget in range, the latent overflows to Inf."""
    loader_id, _ = only(prompt, "CheckpointLoaderSimple")
    size = only(prompt, "EmptyLatentImage")[1]["inputs"]
    image = add(prompt, "EmptyImage", width=size["width"], height=size["height"], batch_size=1, color=0xFFFFFF)
    latent = add(prompt, "VAEEncode", pixels=[image, 0], vae=[loader_id, 2])
    for _ in range(45):
        latent = add(prompt, "LatentMultiply", samples=[latent, 0], multiplier=10.0)
    sampler_inputs(prompt)["latent_image"] = [latent, 0]


def empty_sd3_latent(prompt: dict) -> None:
    only(prompt, "EmptyLatentImage")[1]["class_type"] = "EmptySD3LatentImage"


def with_node(base: str, edit: Callable[[dict], None]) -> Callable[[dict, Path], dict]:
    def build(bases: dict, input_dir: Path) -> dict:
        prompt = copy.deepcopy(bases[base])
        edit(prompt)
        return prompt
    return build


def second_settings(target: str, **settings) -> Callable[[dict], None]:
    """A second Vista Zoom Settings (``settings``) feeding ``target``'s zoom input (two parts of one stack disagree)."""
    def edit(prompt: dict) -> None:
        other = add(prompt, "VistaZoomSettings", zoom_factor="2", levels=4)
        prompt[other]["inputs"].update(settings)
        only(prompt, target)[1]["inputs"]["zoom"] = [other, 0]
    return edit


def zoom_prompts_3_levels(prompt: dict) -> None:
    second_settings("VistaZoomPrompts", levels=3)(prompt)
    only(prompt, "VistaZoomPrompts")[1]["inputs"]["prompts"] = "a galaxy\na planet\na city"


def random_noise_for_zoom(prompt: dict) -> None:
    only(prompt, "SamplerCustomAdvanced")[1]["inputs"]["noise"] = [add(prompt, "RandomNoise", noise_seed=7), 0]


def inpainting_mask(prompt: dict) -> None:
    _, sampler = only(prompt, "SamplerCustomAdvanced")
    mask = add(prompt, "SolidMask", value=1.0, width=256, height=128)
    masked = add(prompt, "SetLatentNoiseMask", samples=sampler["inputs"]["latent_image"], mask=[mask, 0])
    sampler["inputs"]["latent_image"] = [masked, 0]


def area_conditioning(prompt: dict) -> None:
    _, guider = only(prompt, "CFGGuider")
    area = add(prompt, "ConditioningSetArea", conditioning=guider["inputs"]["positive"], width=128, height=128, x=0, y=0,
               strength=1.0)
    guider["inputs"]["positive"] = [area, 0]


def drop_vae(prompt: dict) -> None:
    del only(prompt, "VistaSyncDiffusion")[1]["inputs"]["vae"]


def huge_mad_canvas(prompt: dict) -> None:
    """16384 x 16384 px through Tiled Diffusion + MAD at tau 1 (MAD merges on the run's only step)."""
    only(prompt, "EmptyLatentImage")[1]["inputs"].update(width=16384, height=16384)
    only(prompt, "VistaMADAttention")[1]["inputs"]["tau"] = 1.0
    only(prompt, "VistaTiledDiffusion")[1]["inputs"].update(window_width=512, window_height=512, stride_x=128,
                                                             stride_y=128)


def mad_canvas_off_grid(prompt: dict) -> None:
    """280 px wide (35 latent px) in 128 px windows: the last window starts at 152 px, off the test UNet's 16 px grid
    (2 levels), where MAD (tau 1: it merges on the run's only step) used to merge it at a rounded position, silently."""
    only(prompt, "EmptyLatentImage")[1]["inputs"]["width"] = 280
    only(prompt, "VistaMADAttention")[1]["inputs"]["tau"] = 1.0


def lfs_with_mad_large_canvas(prompt: dict) -> None:
    """5120 x 5120 px in 1024 px windows at stride 128 px (33 x 33 = 1,089 windows) through the Latent Fusion
    Sampler on a Vista MAD model (tau 1): all windows in one call would need ~10^2 GB."""
    _, guider = only(prompt, "CFGGuider")
    guider["inputs"]["model"] = [add(prompt, "VistaMADAttention", model=guider["inputs"]["model"], tau=1.0,
                                     input_blocks=True, middle_block=True, output_blocks=True), 0]
    only(prompt, "EmptyLatentImage")[1]["inputs"].update(width=5120, height=5120)
    only(prompt, "VistaLatentFusionSampler")[1]["inputs"].update(window_width=1024, window_height=1024, stride_x=128,
                                                                  stride_y=128)


def one_huge_window(prompt: dict) -> None:
    """4 samples of a 16384 x 16384 px canvas in one 16384 px window (no MAD): the UNet's first activation alone
    is 4 x 320 x 2048 x 2048 float32 = 21 GB (43 GB with CFG's two conditionings in one call)."""
    only(prompt, "EmptyLatentImage")[1]["inputs"].update(width=16384, height=16384, batch_size=4)
    only(prompt, "VistaTiledDiffusion")[1]["inputs"].update(window_width=16384, window_height=16384, stride_x=16384,
                                                             stride_y=16384, window_batch_size=1)


def linked(class_type: str, input: str, source: str, value) -> Callable[[dict], None]:
    """``class_type``'s ``input`` linked from a stock primitive node (``PrimitiveInt``/``PrimitiveFloat``) holding
    ``value``: /prompt's validate_inputs sees None, and the host checks no range of a linked value."""
    def edit(prompt: dict) -> None:
        only(prompt, class_type)[1]["inputs"][input] = [add(prompt, source, value=value), 0]
    return edit


def without_input(class_type: str, input: str) -> Callable[[dict], None]:
    def edit(prompt: dict) -> None:
        del only(prompt, class_type)[1]["inputs"][input]
    return edit


def huge_zoom_video(prompt: dict) -> None:
    """Vista Zoom Video of 32 levels x 1000 frames at 1024 px (stock EmptyImage, 400 MB): 31,001 frames, 363 GiB."""
    settings = add(prompt, "VistaZoomSettings", zoom_factor="2", levels=32)
    images = add(prompt, "EmptyImage", width=1024, height=1024, batch_size=32, color=0)
    only(prompt, "VistaZoomVideo")[1]["inputs"].update(images=[images, 0], zoom=[settings, 0], frames_per_level=1000,
                                                       feather=0)


# --- the table ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input: the Vista node and input it concerns, how to build the prompt, what must happen."""

    id: str
    node: str  # Vista node id the bad input belongs to
    input: str  # the input (or the linked value) that is bad
    build: Callable[[dict, Path], dict]
    expect: str  # "reject" | "error" | "ok"
    says: tuple[str, ...] = ()  # fragments the message must hold (the input, the allowed range, the fix)
    max_growth_gib: float | None = None  # a memory refusal: the server's peak RSS may grow at most this much
    # A V3 COMBO value that is not an option: v0.33.0 rejects it at /prompt, v0.3.64 does not check V3 combo
    # options there, so on that host the node must refuse it when it runs, with a message holding these fragments.
    run_says: tuple[str, ...] | None = None


def reject(id, base, node, input, value, *says, target=None, run_says=None) -> Case:
    return Case(id, node, input, set_input(base, target or node, **{input: value}), "reject", says, run_says=run_says)


def error(id, node, input, build, *says, max_growth_gib=None) -> Case:
    return Case(id, node, input, build, "error", says, max_growth_gib)


CASES = [
    # Vista Tiled Diffusion
    error("td-window-132px", "VistaTiledDiffusion", "window_width", set_input("td", "VistaTiledDiffusion", window_width=132),
          "window_width=132 px", "multiple of 8 px"),
    error("td-stride-60px", "VistaTiledDiffusion", "stride_y", set_input("td", "VistaTiledDiffusion", stride_y=60),
          "stride_y=60 px", "multiple of 8 px"),
    reject("td-stride-0", "td", "VistaTiledDiffusion", "stride_x", 0, "stride_x=0 px must be in [8, 16384] px"),
    reject("td-stride-over-window", "td", "VistaTiledDiffusion", "stride_x", 256,
           "stride_x=256 px must be at most window_width=128 px"),
    reject("td-window-32px", "td", "VistaTiledDiffusion", "window_height", 32, "window_height=32 px must be in [64, 16384] px"),
    reject("td-window-20000px", "td", "VistaTiledDiffusion", "window_width", 20000,
           "window_width=20000 px must be in [64, 16384] px"),
    reject("td-batch-0", "td", "VistaTiledDiffusion", "window_batch_size", 0, "smaller than min of 1"),
    # a non-number in a window input: the host's own conversion message, on that input (not an exception on model)
    reject("td-window-wide", "td", "VistaTiledDiffusion", "window_width", "wide",
           "Failed to convert an input value to a INT value", "window_width, wide"),
    reject("td-stride-null", "td", "VistaTiledDiffusion", "stride_y", None,
           "Failed to convert an input value to a INT value", "stride_y, None"),
    reject("td-window-object", "td", "VistaTiledDiffusion", "window_height", {},
           "Failed to convert an input value to a INT value", "window_height, {}"),
    Case("td-stride-missing", "VistaTiledDiffusion", "stride_x",
         with_node("td", without_input("VistaTiledDiffusion", "stride_x")), "reject", ("Required input is missing",)),
    # a linked window input (a stock Int node): checked when the node runs
    Case("td-stride-linked", "VistaTiledDiffusion", "stride_x",
         with_node("td", linked("VistaTiledDiffusion", "stride_x", "PrimitiveInt", 64)), "ok"),
    error("td-stride-linked-over-window", "VistaTiledDiffusion", "stride_x",
          with_node("td", linked("VistaTiledDiffusion", "stride_x", "PrimitiveInt", 256)),
          "stride_x=256 px must be at most window_width=128 px"),
    reject("td-weight-mode", "td", "VistaTiledDiffusion", "weight_mode", "triangle", "not in", "'uniform'",
           run_says=("weight_mode", "triangle", "uniform", "gaussian", "guided")),
    reject("td-positions", "td", "VistaTiledDiffusion", "positions", "page", "not in", "'window'",
           run_says=("positions", "page", "window", "canvas")),
    error("td-positions-canvas-on-a-unet", "VistaTiledDiffusion", "positions",
          set_input("td", "VistaTiledDiffusion", positions="canvas"),
          "positions=canvas is not available for this model", "UNetModel is a UNet", "Use positions=window"),
    # not an error: the host gives an all-zero latent the model's channel count (comfy.sample.fix_empty_latent_channels)
    Case("td-empty-16ch-latent", "VistaTiledDiffusion", "latent_image", with_node("td", empty_sd3_latent), "ok"),
    error("td-canvas-out-of-memory", "VistaTiledDiffusion", "EmptyLatentImage width/height/batch_size",
          with_node("td", one_huge_window), "16384x16384 px", "Refused before the model runs",
          "lower window_batch_size, the window size or the canvas size", max_growth_gib=4.0),
    error("td-16ch-latent", "VistaTiledDiffusion", "latent_image",
          loaded_latent("td", "vista_sweep_16ch.latent", rng_latent((1, 16, 16, 32))), "16 channels", "4"),
    error("td-video-latent", "VistaTiledDiffusion", "latent_image",
          loaded_latent("td", "vista_sweep_5d.latent", rng_latent((1, 4, 3, 16, 32))),
          "image latent of shape (batch, channels, height, width)"),
    error("td-nan-latent", "VistaTiledDiffusion", "latent_image",
          loaded_latent("td", "vista_sweep_nan.latent", nan_latent((1, 4, 16, 32))), "NaN"),
    error("td-inf-latent", "VistaTiledDiffusion", "latent_image", with_node("td", inf_latent_by_stock_nodes), "Inf"),
    # Vista MAD Attention, and canvases that would exhaust memory (refused by the samplers' budget check)
    reject("mad-tau-1.5", "mad", "VistaMADAttention", "tau", 1.5, "Vista MAD Attention: tau=1.5 must be in [0, 1]"),
    reject("mad-tau-negative", "mad", "VistaMADAttention", "tau", -0.1, "tau=-0.1 must be in [0, 1] (default 0.3)"),
    # NaN passes the host's min/max (comparisons with NaN are false); JSON NaN/Infinity and "nan" reach /prompt
    reject("mad-tau-nan", "mad", "VistaMADAttention", "tau", float("nan"),
           "Vista MAD Attention: tau=nan is not a finite number; it must be in [0, 1] (default 0.3)"),
    error("mad-tau-linked-nan", "VistaMADAttention", "tau",
          with_node("mad", linked("VistaMADAttention", "tau", "PrimitiveFloat", float("nan"))),
          "tau=nan is not a finite number", "[0, 1]"),
    error("mad-no-blocks", "VistaMADAttention", "input_blocks",
          set_input("mad", "VistaMADAttention", input_blocks=False, middle_block=False, output_blocks=False),
          "enable input_blocks/middle_block/output_blocks"),
    error("mad-canvas-16384px", "VistaTiledDiffusion", "EmptyLatentImage width/height (with MAD)",
          with_node("mad", huge_mad_canvas),
          "16384x16384 px", "Refused before the model runs", "lower the canvas size", max_growth_gib=4.0),
    # the last window off the UNet's grid (16 px on the test UNet): MAD could only merge it at a rounded position
    error("mad-canvas-off-grid", "VistaTiledDiffusion", "EmptyLatentImage width (with MAD)",
          with_node("mad", mad_canvas_off_grid), "a Vista MAD patch needs every window on the 16 px grid",
          "280x128 px", "Make the latent 272 or 288 px wide", "window_width"),
    error("lfs-mad-canvas-5120px", "VistaLatentFusionSampler", "EmptyLatentImage width/height (with MAD)",
          with_node("lfs", lfs_with_mad_large_canvas), "5120x5120 px", "Refused before the model runs",
          "lower the canvas size", max_growth_gib=4.0),
    # Vista Latent Fusion Sampler
    error("lfs-window-132px", "VistaLatentFusionSampler", "window_width",
          set_input("lfs", "VistaLatentFusionSampler", window_width=132), "window_width=132 px", "multiple of 8 px"),
    error("lfs-positions-canvas-on-a-unet", "VistaLatentFusionSampler", "positions",
          set_input("lfs", "VistaLatentFusionSampler", positions="canvas"),
          "Vista Latent Fusion Sampler: positions=canvas is not available for this model", "UNetModel is a UNet"),
    reject("lfs-stride-0", "lfs", "VistaLatentFusionSampler", "stride_y", 0, "stride_y=0 px must be in [8, 16384] px"),
    reject("lfs-stride-over-window", "lfs", "VistaLatentFusionSampler", "stride_y", 192,
           "stride_y=192 px must be at most window_height=128 px"),
    reject("lfs-eta-1.5", "lfs", "VistaLatentFusionSampler", "eta", 1.5, "eta=1.5 must be in [0, 1]"),
    reject("lfs-s-noise-negative", "lfs", "VistaLatentFusionSampler", "s_noise", -1.0, "s_noise=-1 must be in [0, 2]"),
    reject("lfs-eta-nan", "lfs", "VistaLatentFusionSampler", "eta", float("nan"),
           "Vista Latent Fusion Sampler: eta=nan is not a finite number; it must be in [0, 1]"),
    reject("lfs-s-noise-nan-string", "lfs", "VistaLatentFusionSampler", "s_noise", "nan",
           "s_noise=nan is not a finite number; it must be in [0, 2]"),
    # a non-number in a window input: the host's own conversion message, on that input (not an exception on model)
    reject("lfs-stride-abc", "lfs", "VistaLatentFusionSampler", "stride_x", "abc",
           "Failed to convert an input value to a INT value", "stride_x, abc"),
    reject("lfs-window-null", "lfs", "VistaLatentFusionSampler", "window_width", None,
           "Failed to convert an input value to a INT value", "window_width, None"),
    error("lfs-inpainting-mask", "VistaLatentFusionSampler", "latent_image", with_node("lfs", inpainting_mask),
          "inpainting", "use Vista Tiled Diffusion"),
    error("lfs-area-conditioning", "VistaLatentFusionSampler", "positive", with_node("lfs", area_conditioning),
          "area conditioning", "use Vista Tiled Diffusion"),
    error("lfs-16ch-latent", "VistaLatentFusionSampler", "latent_image",
          loaded_latent("lfs", "vista_sweep_16ch.latent", rng_latent((1, 16, 16, 32))), "16 channels", "4"),
    error("lfs-nan-latent", "VistaLatentFusionSampler", "latent_image",
          loaded_latent("lfs", "vista_sweep_nan.latent", nan_latent((1, 4, 16, 32))), "NaN"),
    # Vista Style Alignment
    error("style-window-132px", "VistaStyleAlignment", "window_width",
          set_input("lfs", "VistaStyleAlignment", window_width=132), "window_width=132 px", "multiple of 8 px"),
    reject("style-alpha-1.5", "lfs", "VistaStyleAlignment", "alpha", 1.5, "alpha=1.5 must be in [0, 1]"),
    reject("style-alpha-nan", "lfs", "VistaStyleAlignment", "alpha", float("nan"),
           "Vista Style Alignment: alpha=nan is not a finite number; it must be in [0, 1]"),
    # Vista SyncDiffusion
    error("sync-vgg-missing", "VistaSyncDiffusion", "lpips_net", set_input("sync", "VistaSyncDiffusion", lpips_net="vgg"),
          "lpips_net=vgg needs lpips_v0.1_vgg.safetensors", "tools/convert_lpips.py", "lpips_net=alex"),
    error("sync-taesd-missing", "VistaSyncDiffusion", "decoder", set_input("sync", "VistaSyncDiffusion", decoder="taesd"),
          "decoder=taesd needs taesd_decoder", "vae_approx", "decoder=vae"),
    error("sync-vae-unconnected", "VistaSyncDiffusion", "vae", with_node("sync", drop_vae),
          "decoder=vae needs the vae input connected", "decoder=taesd"),
    reject("sync-weight-negative", "sync", "VistaSyncDiffusion", "weight", -1.0, "weight=-1 must be in [0, 1000]"),
    reject("sync-decay-1.5", "sync", "VistaSyncDiffusion", "decay", 1.5, "decay=1.5 must be in [0, 1]"),
    reject("sync-weight-nan", "sync", "VistaSyncDiffusion", "weight", float("nan"),
           "Vista SyncDiffusion: weight=nan is not a finite number; it must be in [0, 1000] (default 20)"),
    reject("sync-decay-nan", "sync", "VistaSyncDiffusion", "decay", float("nan"),
           "decay=nan is not a finite number; it must be in [0, 1]"),
    # Vista Multi-Scale Diffusion
    reject("msd-levels-5", "msd", "VistaMultiScaleDiffusion", "levels", 5, "bigger than max of 4"),
    error("msd-levels-too-deep", "VistaMultiScaleDiffusion", "levels",
          set_input("msd", "VistaMultiScaleDiffusion", levels=3), "levels=3", "smaller than the 16x16 window",
          "use fewer levels or a larger canvas"),
    reject("msd-fraction-2", "msd", "VistaMultiScaleDiffusion", "guided_fraction", 2.0,
           "guided_fraction=2 must be in [0, 1]"),
    reject("msd-fraction-nan", "msd", "VistaMultiScaleDiffusion", "guided_fraction", float("nan"),
           "Vista Multi-Scale Diffusion: guided_fraction=nan is not a finite number; it must be in [0, 1]"),
    reject("msd-weight-inf", "msd", "VistaMultiScaleDiffusion", "weight", float("inf"),
           "weight=inf is not a finite number; it must be in [0, 10000]"),
    # Vista Zoom Settings / Prompts / Noise / Stack Sampler
    reject("zoom-levels-0", "zoom", "VistaZoomSettings", "levels", 0, "smaller than min of 1"),
    reject("zoom-factor-3", "zoom", "VistaZoomSettings", "zoom_factor", "3", "not in", "'2', '4'",
           run_says=("zoom factor", "(2, 4)", "got 3")),
    error("zoom-fewer-prompts", "VistaZoomPrompts", "prompts",
          set_input("zoom", "VistaZoomPrompts", prompts="a galaxy\na planet"),
          "prompts has 2 non-blank lines", "levels=4", "one prompt line per zoom level"),
    error("zoom-batch-vs-levels", "VistaZoomNoise", "latent_image batch_size",
          set_input("zoom", "EmptyLatentImage", batch_size=3), "batch 3", "levels=4", "batch_size"),
    error("zoom-noise-other-factor", "VistaZoomStackSampler", "noise",
          with_node("zoom", second_settings("VistaZoomNoise", zoom_factor="4")), "noise", "same Vista Zoom Settings"),
    error("zoom-noise-not-zoom", "VistaZoomStackSampler", "noise", with_node("zoom", random_noise_for_zoom),
          "noise", "Connect Vista Zoom Noise"),
    error("zoom-prompts-other-levels", "VistaZoomStackSampler", "positive", with_node("zoom", zoom_prompts_3_levels),
          "3 zoom prompts", "batch 4", "one prompt line per level"),
    error("zoom-size-not-2p", "VistaZoomNoise", "latent_image width/height",
          set_input("zoom", "EmptyLatentImage", width=72, height=72), "latent_image", "9x9 latent px",
          "multiples of 2·zoom_factor = 4 latent px"),
    reject("zoom-prompts-blank", "zoom", "VistaZoomPrompts", "prompts", " \n \n",
           "Vista Zoom Prompts: prompts is blank", "one line per zoom level"),
    # one range per meaning: eta and s_noise as on the Latent Fusion Sampler
    reject("zoom-eta-1.5", "zoom", "VistaZoomStackSampler", "eta", 1.5, "eta=1.5 must be in [0, 1] (default 1)"),
    reject("zoom-s-noise-3", "zoom", "VistaZoomStackSampler", "s_noise", 3.0, "s_noise=3 must be in [0, 2]"),
    reject("zoom-photo-lr-0", "zoom", "VistaZoomStackSampler", "photo_lr", 0.0, "photo_lr=0 must be in [0.0001, 10]"),
    reject("zoom-eta-nan", "zoom", "VistaZoomStackSampler", "eta", float("nan"),
           "Vista Zoom Stack Sampler: eta=nan is not a finite number; it must be in [0, 1]"),
    reject("zoom-s-noise-nan", "zoom", "VistaZoomStackSampler", "s_noise", float("nan"),
           "s_noise=nan is not a finite number"),
    reject("zoom-photo-lr-nan", "zoom", "VistaZoomStackSampler", "photo_lr", float("nan"),
           "photo_lr=nan is not a finite number; it must be in [0.0001, 10]"),
    reject("zoom-photo-until-minus-inf", "zoom", "VistaZoomStackSampler", "photo_until", float("-inf"),
           "photo_until=-inf is not a finite number; it must be in [0, 1]"),
    error("zoom-photo-size", "VistaZoomStackSampler", "photo", set_input("photo", "ImageScale", width=256, height=256),
          "photo must be one VAE-encoded image of the zoom level size"),
    error("zoom-nan-latent", "VistaZoomStackSampler", "latent_image",
          loaded_latent("zoom", "vista_sweep_zoom_nan.latent", nan_latent((4, 4, 16, 16))), "NaN"),
    # Vista Zoom Composite / Video
    error("composite-feather-4096", "VistaZoomComposite", "feather", set_input("zoom", "VistaZoomComposite", feather=4096),
          "feather=4096 px must be in [0, 16] px"),
    error("composite-other-levels", "VistaZoomComposite", "zoom",
          with_node("zoom", second_settings("VistaZoomComposite", levels=3)), "zoom is zoom_factor=2, levels=3",
          "the images were made with zoom_factor=2, levels=4", "link that same Vista Zoom Settings node"),
    reject("video-frames-0", "zoom", "VistaZoomVideo", "frames_per_level", 0, "smaller than min of 1"),
    error("video-feather-100", "VistaZoomVideo", "feather", set_input("zoom", "VistaZoomVideo", feather=100),
          "feather=100 px must be in [0, 16] px"),
    error("video-31001-frames-1024px", "VistaZoomVideo", "frames_per_level", with_node("zoom", huge_zoom_video),
          "31,001 frames ((levels 32 - 1) x frames_per_level 1000 + 1) of 1024x1024 px need an estimated",
          "Refused before rendering", "lower frames_per_level", max_growth_gib=4.0),
]


def test_every_vista_node_is_swept(comfyui_server):
    vista = {k for k in comfyui_server.object_info() if k.startswith("Vista")}
    assert vista <= {c.node for c in CASES}, vista - {c.node for c in CASES}


# --- running ------------------------------------------------------------------------------------------------
def proc_kib(pid: int, key: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak RSS) of a process, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak_rss(pid: int) -> int:
    """Reset the process's peak RSS to its current RSS (``clear_refs`` 5); returns the RSS in KiB."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return proc_kib(pid, "VmRSS")


@pytest.fixture(scope="module")
def sweep(comfyui_server, bases):
    """Shared state: how many bad cases ran, for the good prompt every GOOD_EVERY cases."""
    return {"bad": 0, "good_seed": itertools.count(100)}


def good_prompt_succeeds(server, bases, seed: int) -> None:
    """A small good prompt (the Tiled Diffusion workflow, a new seed so nothing is cached) succeeds."""
    prompt = copy.deepcopy(bases["td"])
    only(prompt, "KSampler")[1]["inputs"]["seed"] = seed
    assert server.alive(), f"ComfyUI died:\n{server.log_tail()}"
    entry = server.wait_history(server.queue_prompt(prompt), timeout=RUN_TIMEOUT)
    assert entry["status"]["status_str"] == "success", f"good prompt failed: {errors(entry)}\n{server.log_tail()}"
    save_id, _ = only(prompt, "SaveImage")
    (image,) = entry["outputs"][save_id]["images"]
    check_image(server.output_file(image), (256, 128))


def check_rejected(case: Case, prompt: dict, rejected: PromptRejected) -> str:
    """HTTP 400 (or 200 when only one of several output branches is bad: ComfyUI then drops that branch and
    queues the rest); node_errors name the node (id and class) and the input; the message holds ``case.says``."""
    assert rejected.status == 400 or (rejected.status == 200 and rejected.body.get("node_errors")), rejected.body
    node_errors = rejected.body.get("node_errors") or {}
    ids = [k for k, v in prompt.items() if v["class_type"] == case.node]
    hits = [(k, e) for k in ids for e in (node_errors.get(k) or {}).get("errors", [])
            if e.get("extra_info", {}).get("input_name") == case.input]
    assert hits, f"{case.id}: no node_errors entry for {case.node}.{case.input}: {json.dumps(rejected.body)[:1500]}"
    assert all(node_errors[k]["class_type"] == case.node for k, _ in hits)
    texts = [f"{e['message']}: {e['details']}" for _, e in hits]
    assert any(all(s in t for s in case.says) for t in texts), f"{case.id}: {texts} lacks {case.says}"
    return next(t for t in texts if all(s in t for s in case.says))


def check_failed(case: Case, entry: dict, server) -> str:
    """An execution_error whose message starts with the Vista node's name and holds ``case.says``; no raw error."""
    status = entry["status"]["status_str"]
    assert status == "error", (f"{case.id}: the prompt ran to '{status}' instead of failing with a message naming "
                               f"{NAMES[case.node]}.{case.input}")
    (message,) = errors(entry)
    data = message[1]
    text = str(data["exception_message"]).strip()
    raw = [sign for sign in RAW_SIGNS if sign in text]
    assert not raw and data.get("exception_type") not in ("torch.OutOfMemoryError", "MemoryError"), (
        f"{case.id}: raw error on {data['node_type']}: {data.get('exception_type')}: {text[:600]}")
    assert text.startswith(NAMES[case.node]), (f"{case.id}: the message on {data['node_type']} does not start with "
                                               f"'{NAMES[case.node]}': {data.get('exception_type')}: {text[:600]}")
    missing = [s for s in case.says if s not in text]
    assert not missing, f"{case.id}: the message lacks {missing}: {text[:800]}"
    print(f"\n[{case.id}] {data['node_type']}: {text}")
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(comfyui_server, bases, sweep, case: Case):
    server = comfyui_server
    prompt = case.build(bases, server.workdir / "input")
    sweep["bad"] += 1
    rss = reset_peak_rss(server.process.pid) if case.max_growth_gib else 0
    try:
        if case.expect == "reject":
            try:
                prompt_id = server.queue_prompt(prompt)
            except PromptRejected as rejected:
                if rejected.status == 200:  # the valid branches were queued: let them finish
                    server.wait_history(rejected.body["prompt_id"], timeout=RUN_TIMEOUT)
                print(f"\n[{case.id}] HTTP {rejected.status}: {check_rejected(case, prompt, rejected)}")
            else:
                entry = server.wait_history(prompt_id, timeout=RUN_TIMEOUT)
                assert case.run_says is not None, f"{case.id}: /prompt accepted it: {errors(entry) or 'it ran'}"
                check_failed(replace(case, says=case.run_says), entry, server)
        else:
            try:
                prompt_id = server.queue_prompt(prompt)
            except PromptRejected as rejected:
                pytest.fail(f"{case.id}: rejected at /prompt (expected to run): {json.dumps(rejected.body)[:1500]}")
            entry = server.wait_history(prompt_id, timeout=RUN_TIMEOUT)
            if case.expect == "ok":
                assert entry["status"]["status_str"] == "success", f"{case.id}: {errors(entry)}"
            else:
                check_failed(case, entry, server)
            if case.max_growth_gib:
                growth = (proc_kib(server.process.pid, "VmHWM") - rss) / 2**20
                print(f"[{case.id}] server peak RSS grew {growth:.2f} GiB")
                assert growth <= case.max_growth_gib, (f"{case.id}: refused only after the server's memory grew "
                                                       f"{growth:.1f} GiB (at most {case.max_growth_gib} GiB: refuse "
                                                       f"before allocating)")
    finally:
        assert server.alive(), f"ComfyUI died on {case.id}:\n{server.log_tail()}"
        if sweep["bad"] % GOOD_EVERY == 0:
            good_prompt_succeeds(server, bases, next(sweep["good_seed"]))


def test_good_prompt_after_the_sweep(comfyui_server, bases, sweep):
    good_prompt_succeeds(comfyui_server, bases, next(sweep["good_seed"]))


# --- the documented table -----------------------------------------------------------------------------------
CONTRIBUTING = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"
TABLE_CASE = re.compile(r"^\| [^|]+ \| [^|]+ \| `([a-z0-9.-]+)` \|", re.M)


def documented_cases(text: str) -> list[str]:
    """Case ids in CONTRIBUTING.md's "The bad-input sweep" table, in order."""
    section = text.split("## The bad-input sweep", 1)[-1].split("\n## ", 1)[0]
    return TABLE_CASE.findall(section)


def test_contributing_table_lists_every_case():
    """Every case of the sweep is a row of CONTRIBUTING.md's table, and every row is a case (no stale rows)."""
    documented = documented_cases(CONTRIBUTING.read_text())
    ids = [c.id for c in CASES]
    assert sorted(set(ids) - set(documented)) == [], "cases missing from CONTRIBUTING.md's sweep table"
    assert sorted(set(documented) - set(ids)) == [], "rows of CONTRIBUTING.md's sweep table that are no case"
    assert len(documented) == len(set(documented)), "a case is listed twice"


def test_table_check_trips():
    """The table check sees a missing row and a stale one."""
    row = "| Vista Tiled Diffusion | `stride_x` | `{}` | x | y |\n"
    text = "## The bad-input sweep\n\n" + "".join(row.format(c.id) for c in CASES[1:]) + row.format("gone") + "\n## Next\n"
    documented = documented_cases(text)
    assert CASES[0].id not in documented and "gone" in documented
