"""Silent outcomes (issue [H] 8) through a real server's ``/prompt``: what ran without a word now speaks.

* Vista MAD Attention straight into KSampler (no Vista windowed route): the run succeeds and the server log
  holds the node's warning (nodes/notify.py warn_user also sends it to the browser as a ``vista.warning`` toast).
* Vista Tiled Diffusion applied twice: the second node fails the prompt, naming itself and the fix.
* Vista Zoom Video linked to another Vista Zoom Settings node (zoom factor 4) than the one its images were
  composited with (2): the prompt fails at the Video, naming both settings nodes; the same settings node with
  another feather runs and warns.

Hand-written API prompts of a few nodes, 64 px images and 2 steps (the zoom case samples nothing): about a
minute on 2 CPU cores once the server runs.
"""
from __future__ import annotations

import pytest

from comfy_server import CHECKPOINT
from test_e2e_workflows import errors

pytestmark = [pytest.mark.host, pytest.mark.e2e]


def ksampler_prompt(*patches: tuple[str, dict]) -> dict:
    """Checkpoint → the ``patches`` (class_type, widget inputs) in order on the model → KSampler (2 steps: MAD's
    tau 0.3 then merges round-half-up(0.6) = 1 step when windowed, 64x64 px) → VAEDecode → PreviewImage."""
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a beach", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    }
    model = ["1", 0]
    for i, (class_type, inputs) in enumerate(patches):
        prompt[str(10 + i)] = {"class_type": class_type, "inputs": {"model": model, **inputs}}
        model = [str(10 + i), 0]
    prompt["5"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}}
    prompt["6"] = {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}}
    prompt["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    return prompt


MAD = ("VistaMADAttention", {"tau": 0.3, "input_blocks": True, "middle_block": True, "output_blocks": True})


def tiled(window: int) -> tuple[str, dict]:
    return ("VistaTiledDiffusion", {"window_width": window, "window_height": window, "stride_x": 64, "stride_y": 64,
                                    "weight_mode": "uniform", "wrap_x": False, "window_batch_size": 4})


def zoom_prompt(video_settings: str, video_feather: int) -> dict:
    """EmptyImage (4 levels of 128 px) → Vista Zoom Composite (settings #20: p 2) → Vista Zoom Video (settings
    ``video_settings``: #20, or #21 with p 4) → PreviewImage."""
    return {
        "20": {"class_type": "VistaZoomSettings", "inputs": {"zoom_factor": "2", "levels": 4}},
        "21": {"class_type": "VistaZoomSettings", "inputs": {"zoom_factor": "4", "levels": 4}},
        "22": {"class_type": "EmptyImage", "inputs": {"width": 128, "height": 128, "batch_size": 4, "color": 8421504}},
        "23": {"class_type": "VistaZoomComposite", "inputs": {"images": ["22", 0], "zoom": ["20", 0], "feather": 16}},
        "24": {"class_type": "VistaZoomVideo", "inputs": {"images": ["23", 0], "zoom": [video_settings, 0],
                                                          "frames_per_level": 2, "feather": video_feather}},
        "25": {"class_type": "PreviewImage", "inputs": {"images": ["24", 0]}},
    }


def run(server, prompt: dict) -> dict:
    return server.wait_history(server.queue_prompt(prompt), timeout=600)


def failure(entry: dict) -> dict:
    (message,) = errors(entry)
    return message[1]


class TestSilentOutcomes:
    def test_mad_into_ksampler_warns(self, comfyui_server):
        entry = run(comfyui_server, ksampler_prompt(MAD))
        assert entry["status"]["status_str"] == "success", f"{errors(entry)}\n{comfyui_server.log_tail()}"
        assert "Vista MAD Attention: no Vista windowed sampling ran this model, so MAD changed nothing" in \
            comfyui_server.log_tail(400)

    def test_tiled_diffusion_twice_fails(self, comfyui_server):
        entry = run(comfyui_server, ksampler_prompt(tiled(512), tiled(256)))
        error = failure(entry)
        assert error["node_id"] == "11" and error["node_type"] == "VistaTiledDiffusion"
        assert error["exception_message"].startswith("Vista Tiled Diffusion: model is already patched by a Vista "
                                                     "Tiled Diffusion node upstream")

    def test_zoom_video_of_another_settings_node_fails(self, comfyui_server):
        error = failure(run(comfyui_server, zoom_prompt("21", 8)))
        assert error["node_id"] == "24" and error["node_type"] == "VistaZoomVideo"
        assert error["exception_message"].startswith(
            "Vista Zoom Video: zoom is zoom_factor=4, levels=4 (Vista Zoom Settings node #21) but the images were "
            "made with zoom_factor=2, levels=4 (Vista Zoom Settings node #20, via node #23)")

    def test_zoom_video_of_the_same_settings_runs_and_warns_about_feather(self, comfyui_server):
        entry = run(comfyui_server, zoom_prompt("20", 8))
        assert entry["status"]["status_str"] == "success", f"{errors(entry)}\n{comfyui_server.log_tail()}"
        assert ("Vista Zoom Video: feather=8 px but the images were composited with feather=16 px (Vista Zoom "
                "Composite node #23)") in comfyui_server.log_tail(400)
