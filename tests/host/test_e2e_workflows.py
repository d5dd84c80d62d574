"""e2e tier: every shipped workflow runs on a real ComfyUI server (COMFYUI_PATH), no mocks.

Each ``workflows/*.json`` (UI format) is converted to an API prompt through ``/object_info``,
queued, and polled in ``/history``; every image output must have the EmptyLatentImage size
(and the batch count where it comes straight from a VAEDecode) and must not be flat.
Test-only overrides, for speed on 2 CPU cores: the ``steps`` of samplers/schedulers
(``VISTA_E2E_STEPS``, default 1: a 2048x512 panorama is ~13 windows per model call) and the
checkpoint (the random-weight test checkpoint: the SD1.5 one, or the SDXL-family one for workflows
named ``*sdxl*``). A LoadImage picture that the input folder lacks is generated (a deterministic
gradient). Every other widget value is the workflow's own.

Determinism (issue [F]): every queued workflow also runs twice at a quarter of its sizes (``shrunk``: canvas,
windows, strides, photo scale and feathers ÷ 4 — the same nodes, widgets and seeds; the full-size pass above
would double this tier's time), and the saved files (PNG, animated WEBP) must be byte-identical. ComfyUI would
answer the second run from its node cache, so ``POST /free`` (``free_memory``: drop every cached node output;
``unload_models`` false) comes first and the second run must report no cached node: every node, checkpoint
loading included, runs again. The same prompt gives the same PNG metadata (it embeds the prompt), so the bytes
are compared as they are (and the decoded pixels first, to say which differed).
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import comfy_server
from comfy_server import PromptRejected, nodes_of, ui_to_api

pytestmark = [pytest.mark.host, pytest.mark.e2e]

# Workflows the e2e tier loads but does not queue, with the reason (their sampling chain runs in the node tier).
LOAD_ONLY = {"panorama_flux": "Flux's T5-XXL text encoder (~4.7B parameters) is far too heavy for CPU CI; the "
                              "workflow's sampling chain runs in tests/host/test_flux_sd3_nodes.py (TestWorkflow)"}
WORKFLOWS = sorted(p for p in (comfy_server.REPO_ROOT / "workflows").glob("*.json") if p.stem not in LOAD_ONLY)
MODEL_FILE_INPUTS = {"ckpt_name", "unet_name", "clip_name", "clip_name1", "clip_name2", "clip_name3", "vae_name"}
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".gguf")
STEPS = int(os.environ.get("VISTA_E2E_STEPS", "1"))
RUN_TIMEOUT = float(os.environ.get("VISTA_E2E_TIMEOUT", "900"))
SAMPLERS = ("KSampler", "KSamplerAdvanced")
IMAGE_OUTPUTS = ("SaveImage", "PreviewImage")
ANIMATED_OUTPUTS = ("SaveAnimatedWEBP", "SaveAnimatedPNG")


def fast(prompt: dict, steps: int = STEPS, guide_msd: bool = False) -> dict:
    """The prompt with fewer sampling steps (speed only; documented override).

    Touches the ``steps`` of KSampler(Advanced) and of sigma schedulers (BasicScheduler, …). With ``guide_msd``
    a workflow with Vista Multi-Scale Diffusion gets at least 2 steps: it guides the first round(0.3 x steps)
    steps, which is none of 1 step. The determinism pass (a quarter of the sizes, run twice) sets it, so the
    guidance runs e2e there; the full-size pass checks the shipped sizes at 1 unguided step (its guided step on
    the 2048x1024 canvas alone took ≈ 200 s of CI on 2 cores).
    """
    prompt = copy.deepcopy(prompt)
    if guide_msd and nodes_of(prompt, "VistaMultiScaleDiffusion"):
        steps = max(steps, 2)
    for node in prompt.values():
        kind, value = node["class_type"], node["inputs"].get("steps")
        if (kind in SAMPLERS or kind.endswith("Scheduler")) and isinstance(value, int):
            node["inputs"]["steps"] = min(value, steps)
    return prompt


def provide_inputs(prompt: dict, input_dir: Path) -> None:
    """Write a deterministic test picture for every LoadImage file the input folder lacks."""
    for node in nodes_of(prompt, "LoadImage").values():
        target = input_dir / node["inputs"]["image"]
        if not target.exists():
            y, x = np.mgrid[0:480, 0:640]
            rgb = np.stack([x * 255 // 639, y * 255 // 479, (x + y) % 256], axis=-1).astype(np.uint8)
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(target)


def run(server, prompt: dict) -> dict:
    """Queue ``prompt`` and return its finished history entry."""
    return server.wait_history(server.queue_prompt(prompt), timeout=RUN_TIMEOUT)


def errors(entry: dict) -> list:
    return [m for m in entry.get("status", {}).get("messages", []) if m[0] == "execution_error"]


def cached_nodes(entry: dict) -> list:
    return [n for m in entry.get("status", {}).get("messages", []) if m[0] == "execution_cached"
            for n in m[1].get("nodes", [])]


def rerun_uncached(server, prompt: dict) -> dict:
    """``prompt`` once more after ``POST /free``, with no node answered from ComfyUI's cache.

    The server drops its caches when its worker next looks at its flags, after the prompt it may still be
    finishing: a run queued meanwhile can be served from the old cache. It then looked at the flags right
    after that run, so a run queued after it is computed anew.
    """
    status, body = server.request("POST", "/free", {"unload_models": False, "free_memory": True})
    assert status == 200, body
    entry = run(server, prompt)
    if cached_nodes(entry):
        entry = run(server, prompt)
    assert not cached_nodes(entry), f"nodes {cached_nodes(entry)} answered from the cache after /free"
    return entry


def frames(path: Path) -> list[bytes]:
    """Decoded RGBA pixels of every frame."""
    with Image.open(path) as img:
        out = []
        for i in range(getattr(img, "n_frames", 1)):
            img.seek(i)
            out.append(img.convert("RGBA").tobytes())
        return out


def check_identical(server, first: dict, second: dict, outputs: dict) -> None:
    """The two runs saved the same files: same count per output node, same pixels, same bytes."""
    for node_id, node in outputs.items():
        a, b = first["outputs"][node_id]["images"], second["outputs"][node_id]["images"]
        assert len(a) == len(b), f"{node['class_type']} {node_id}: {len(a)} then {len(b)} files"
        for x, y in zip(a, b):
            fx, fy = server.output_file(x), server.output_file(y)
            assert frames(fx) == frames(fy), f"{node['class_type']} {node_id}: {fx.name} and {fy.name} differ in pixels"
            assert fx.read_bytes() == fy.read_bytes(), f"{node['class_type']} {node_id}: {fx.name} and {fy.name} differ"


SIZE_INPUTS = {"EmptyLatentImage": ("width", "height"), "ImageScale": ("width", "height"),
               "VistaTiledDiffusion": ("window_width", "window_height", "stride_x", "stride_y"),
               "VistaLatentFusionSampler": ("window_width", "window_height", "stride_x", "stride_y"),
               "VistaStyleAlignment": ("window_width", "window_height"),
               "VistaZoomComposite": ("feather",), "VistaZoomVideo": ("feather",)}


def shrunk(prompt: dict, k: int = 4) -> dict:
    """The prompt with every size input of :data:`SIZE_INPUTS` divided by ``k`` (all relations between them kept)."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        for name in SIZE_INPUTS.get(node["class_type"], ()):
            value = node["inputs"].get(name)
            if isinstance(value, int):
                assert value % k == 0 and (name == "feather" or value // k % 8 == 0), (node["class_type"], name, value)
                node["inputs"][name] = value // k
    return prompt


def latent_size(prompt: dict) -> tuple[int, int, int]:
    """(width, height, batch) of the (single) EmptyLatentImage."""
    (latent,) = nodes_of(prompt, "EmptyLatentImage").values()
    i = latent["inputs"]
    return i["width"], i["height"], i.get("batch_size", 1)


def check_image(path: Path, size: tuple[int, int], animated: bool = False) -> None:
    """The saved image has ``size`` and is not blank (a NaN latent decodes to a flat image)."""
    with Image.open(path) as img:
        assert img.size == size, f"{path.name}: {img.size} != {size}"
        if animated:
            assert getattr(img, "n_frames", 1) > 1, f"{path.name}: expected an animation, got one frame"
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 1.0, f"{path.name} is flat (std {pixels.std():.3f}): NaN or blank output?"


@pytest.fixture(scope="module")
def panorama(comfyui_server) -> dict:
    """The MultiDiffusion panorama workflow as an API prompt (base for the bad-input tests)."""
    ui = json.loads((comfy_server.REPO_ROOT / "workflows" / "panorama_multidiffusion.json").read_text())
    return ui_to_api(ui, comfyui_server.object_info())


def small(prompt: dict, width: int, height: int, **vista) -> dict:
    """A cheap variant: a small canvas and the given VistaTiledDiffusion inputs."""
    prompt = fast(prompt, steps=1)
    for node in nodes_of(prompt, "EmptyLatentImage").values():
        node["inputs"].update(width=width, height=height)
    for node in nodes_of(prompt, "VistaTiledDiffusion").values():
        node["inputs"].update(vista)
    return prompt


@pytest.fixture(scope="module")
def sdxl_checkpoint(comfyui_path) -> Path:
    """The random-weight SDXL-family checkpoint (1.8 GB), built once into VISTA_TEST_CACHE, the folder the
    server lists checkpoints from; only SDXL workflows ask for it."""
    return comfy_server.build_checkpoint(comfy_server.cache_dir(), comfyui_path, family="sdxl")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_runs(comfyui_server, path: Path, request):
    ui = json.loads(path.read_text())
    checkpoint = comfy_server.checkpoint_for(path)
    if checkpoint == comfy_server.SDXL_CHECKPOINT:
        request.getfixturevalue("sdxl_checkpoint")
    prompt = fast(ui_to_api(ui, comfyui_server.object_info(), checkpoint))
    provide_inputs(prompt, comfyui_server.workdir / "input")
    entry = run(comfyui_server, prompt)
    assert entry["status"]["status_str"] == "success", f"{errors(entry)}\n{comfyui_server.log_tail()}"
    width, height, batch = latent_size(prompt)
    outputs = {k: v for k, v in prompt.items() if v["class_type"] in IMAGE_OUTPUTS + ANIMATED_OUTPUTS}
    assert outputs, f"{path.name} has no image output node"
    for node_id, node in outputs.items():
        images = entry["outputs"][node_id]["images"]
        source = node["inputs"]["images"]
        if node["class_type"] in IMAGE_OUTPUTS and prompt[source[0]]["class_type"] == "VAEDecode":
            assert len(images) == batch, f"{node['class_type']} {node_id}: {len(images)} images, batch {batch}"
        assert images, f"{node['class_type']} {node_id} saved nothing"
        for image in images:
            check_image(comfyui_server.output_file(image), (width, height),
                        animated=node["class_type"] in ANIMATED_OUTPUTS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_deterministic(comfyui_server, path: Path, request):
    """Same workflow (at a quarter of its sizes) and seed twice, nothing cached: byte-identical outputs."""
    checkpoint = comfy_server.checkpoint_for(path)
    if checkpoint == comfy_server.SDXL_CHECKPOINT:
        request.getfixturevalue("sdxl_checkpoint")
    prompt = shrunk(fast(ui_to_api(json.loads(path.read_text()), comfyui_server.object_info(), checkpoint), guide_msd=True))
    provide_inputs(prompt, comfyui_server.workdir / "input")
    first = rerun_uncached(comfyui_server, prompt)
    assert first["status"]["status_str"] == "success", f"{errors(first)}\n{comfyui_server.log_tail()}"
    second = rerun_uncached(comfyui_server, prompt)
    assert second["status"]["status_str"] == "success", f"{errors(second)}\n{comfyui_server.log_tail()}"
    outputs = {k: v for k, v in prompt.items() if v["class_type"] in IMAGE_OUTPUTS + ANIMATED_OUTPUTS}
    assert outputs and all(first["outputs"][k]["images"] for k in outputs), f"{path.name} saved nothing"
    check_identical(comfyui_server, first, second, outputs)


def _combo_options(spec) -> list | None:
    """The options of a COMBO input spec (V1: a list as the type; V3 on v0.33.0: "COMBO" + {"options": [...]})."""
    if isinstance(spec[0], list):
        return spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return options.get("options") if spec[0] == "COMBO" else None


@pytest.mark.parametrize("name", sorted(LOAD_ONLY))
def test_workflow_loads(comfyui_server, name):
    """Loaded, not queued (see LOAD_ONLY for why): the UI graph converts to an API prompt through the live
    /object_info, every node type exists, every widget value maps to a widget input (no value left over, no
    required one missing; optional widgets added later may be absent and take their defaults), every COMBO value
    is one of the node's options (model files, which the CPU server does not have, only need a model file name),
    every required input is set, and every link joins an output and an input of the same type."""
    ui = json.loads((comfy_server.REPO_ROOT / "workflows" / f"{name}.json").read_text())
    info = comfyui_server.object_info()
    prompt = ui_to_api(ui, info, checkpoint=None)  # raises on a node type the server does not know
    nodes = {node["id"]: node for node in ui["nodes"]}
    for link_id, src, slot, dst, dst_slot, kind in ui["links"]:
        target = nodes[dst]["inputs"][dst_slot]
        outputs = info[nodes[src]["type"]]["output"]
        specs = dict(comfy_server._ordered_inputs(info[nodes[dst]["type"]]))
        assert outputs[slot] == kind == specs[target["name"]][0], (link_id, outputs[slot], kind, target)
    for node_id, node in prompt.items():
        ui_node, specs = nodes[int(node_id)], dict(comfy_server._ordered_inputs(info[node["class_type"]]))
        required = info[node["class_type"]]["input"].get("required", {})
        widgets = [n for n, spec in specs.items() if comfy_server._is_widget(spec)]
        slots = [1 + bool(comfy_server._has_control_widget(n, specs[n]) or comfy_server._has_upload_widget(specs[n]))
                 for n in widgets]
        needed = sum(k for n, k in zip(widgets, slots) if n in required)  # optional widgets may be absent (defaults)
        assert needed <= len(ui_node.get("widgets_values") or []) <= sum(slots), (node_id, node["class_type"])
        assert set(required) <= set(node["inputs"]), (node_id, node["class_type"], set(required) - set(node["inputs"]))
        for input_name, value in node["inputs"].items():
            options = _combo_options(specs[input_name]) if not isinstance(value, list) else None
            if input_name in MODEL_FILE_INPUTS:
                assert str(value).endswith(MODEL_FILE_SUFFIXES), (node_id, input_name, value)
            elif options is not None:
                assert value in options, (node_id, input_name, value)


def test_bad_prompts_do_not_break_the_server(comfyui_server, panorama):
    # Rejected at /prompt (HTTP 400): window_batch_size=0 is below the schema minimum 1.
    with pytest.raises(PromptRejected) as rejected:
        comfyui_server.queue_prompt(small(panorama, 256, 256, window_width=128, window_height=128,
                                 stride_x=64, stride_y=64, window_batch_size=0))
    assert rejected.value.status == 400
    assert "window_batch_size" in json.dumps(rejected.value.body)
    # Rejected at /prompt by validate_inputs: a stride larger than the window, and a stride below the schema
    # minimum (validate_inputs names it, so it re-checks the range with its own message; issue [R] 14).
    for stride, message in ((256, "stride_x=256 px must be at most window_width=128 px"),
                            (0, "stride_x=0 px must be in [8, 16384] px")):
        with pytest.raises(PromptRejected) as rejected:
            comfyui_server.queue_prompt(small(panorama, 256, 256, window_width=128, window_height=128, stride_x=stride,
                                              stride_y=64))
        assert rejected.value.status == 400
        assert message in json.dumps(rejected.value.body), rejected.value.body
    # Accepted at /prompt (the schema's step=8 is only a UI hint), fails at execution:
    # 132 px is not a multiple of the latent factor 8. (A window wider than the canvas is
    # clamped with a warning by design, so it is no longer an error.)
    entry = run(comfyui_server, small(panorama, 256, 256, window_width=132, window_height=128, stride_x=64, stride_y=64))
    assert entry["status"]["status_str"] == "error"
    (message,) = errors(entry)
    assert message[1]["node_type"] in ("KSampler", "VistaTiledDiffusion")
    assert "window_width" in message[1]["exception_message"], message[1]["exception_message"]
    # The server keeps serving: a good prompt succeeds right after.
    good = small(panorama, 256, 256, window_width=128, window_height=128, stride_x=64, stride_y=64)
    entry = run(comfyui_server, good)
    assert entry["status"]["status_str"] == "success", f"{errors(entry)}\n{comfyui_server.log_tail()}"
    (save_id,) = nodes_of(good, "SaveImage")
    (image,) = entry["outputs"][save_id]["images"]
    check_image(comfyui_server.output_file(image), (256, 256))


def test_ui_to_api_frontend_rules(comfyui_server):
    """Reroute/PrimitiveNode/Note handling and the 'control after generate' value, on the live /object_info."""
    def n(id, type, inputs=(), widgets=(), mode=0):
        return {"id": id, "type": type, "mode": mode, "widgets_values": list(widgets),
                "inputs": [{"name": name, "type": t, "link": link} for name, t, link in inputs]}

    ui = {"nodes": [
        n(1, "CheckpointLoaderSimple", widgets=["v1-5-pruned-emaonly.safetensors"]),
        n(2, "Reroute", inputs=[("", "*", 1)]),
        n(3, "KSampler", inputs=[("model", "MODEL", 2), ("seed", "INT", 3)],
          widgets=[42, "randomize", 4, 7.5, "euler", "normal", 0.5]),
        n(4, "PrimitiveNode", widgets=[42, "randomize"]),
        n(5, "PrimitiveInt", widgets=[7, "fixed"]),  # V3 node: control_after_generate True (0.3.64) or "fixed" (0.33)
        n(6, "Note", widgets=["a note"]),
        n(7, "EmptyLatentImage", widgets=[512, 256, 1], mode=2),  # muted
        n(8, "LoadImage", widgets=["photo.png", "image"]),  # "image": the upload button's saved value
    ], "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 4, 0, 3, 4, "INT"]]}
    api = ui_to_api(ui, comfyui_server.object_info())
    assert sorted(api) == ["1", "3", "5", "8"]
    assert api["8"]["inputs"] == {"image": "photo.png"}
    assert api["1"]["inputs"] == {"ckpt_name": comfy_server.CHECKPOINT}
    assert api["3"]["inputs"] == {"model": ["1", 0], "seed": 42, "steps": 4, "cfg": 7.5, "sampler_name": "euler",
                                  "scheduler": "normal", "denoise": 0.5}
    assert api["5"]["inputs"] == {"value": 7}
