"""In-process access to a real ComfyUI host for node-tier tests (no mocks).

``COMFYUI_PATH`` must point at a ComfyUI checkout; otherwise every caller skips with a
loud reason. The host is imported CPU-only with PyTorch cross-attention, as
``main.py --cpu --use-pytorch-cross-attention`` would, and the random-weight SD1.5
checkpoint is built with tools/make_test_checkpoint.py into ``VISTA_TEST_CACHE``.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_REASON = ("COMFYUI_PATH not set: host tier skipped — set COMFYUI_PATH to a ComfyUI checkout "
               "(see README, 'Tests') to run it")


def comfy_path() -> Path:
    """The host checkout, or skip the calling test loudly."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        pytest.skip(SKIP_REASON)
    if not (Path(path) / "comfy" / "sd.py").is_file():
        pytest.skip(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no comfy/sd.py): host tier skipped")
    return Path(path)


def cache_dir() -> Path:
    return Path(os.environ.get("VISTA_TEST_CACHE", Path.home() / ".cache" / "vista-tests"))


@functools.lru_cache(maxsize=None)
def _tool():
    spec = importlib.util.spec_from_file_location("vista_make_test_checkpoint", ROOT / "tools" / "make_test_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _import_host(path: str):
    comfy = _tool()._import_host(Path(path))
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    import comfy.sd  # noqa: F401

    return comfy


def import_host():
    """The host's ``comfy`` package (imported once per process)."""
    return _import_host(str(comfy_path()))


@functools.lru_cache(maxsize=None)
def load_checkpoint():
    """(model_patcher, clip, vae) of the random-weight SD1.5 test checkpoint."""
    comfy = import_host()
    path = _tool().make_checkpoint(cache_dir(), comfy_path())
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return model, clip, vae


def encode(clip, text: str):
    """A CONDITIONING list, like CLIPTextEncode."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


# A 4-level UNet (deepest block at latent scale 8, like SD1.x/SDXL) for tests that need SD's block geometry.
# Built in-process from the host's own classes (SD15 model config, BaseModel, cldm.ControlNet) with seeded small
# weights; 32 channels keep a forward cheap on CPU. It does not go through checkpoint detection (which needs
# model_channels 320); the slim 2-level test checkpoint covers detection.
DEEP_UNET_CONFIG = {
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32, "num_res_blocks": [1, 1, 1, 1],
    "channel_mult": [1, 1, 1, 1], "transformer_depth": [0, 0, 1, 1], "transformer_depth_output": [0, 0, 0, 0, 1, 1, 1, 1],
    "transformer_depth_middle": 1, "context_dim": 768, "num_heads": 4, "num_head_channels": -1,
    "use_spatial_transformer": True, "use_linear_in_transformer": False, "legacy": False, "adm_in_channels": None,
    "use_checkpoint": False,
}


def _seeded(module, seed: int) -> None:
    import torch

    state = _tool()._randomised_state_dict(module, "", torch.Generator().manual_seed(seed))
    module.load_state_dict({k: v.float() for k, v in state.items()})


@functools.lru_cache(maxsize=None)
def deep_unet_model():
    """A MODEL (ModelPatcher) whose UNet has 4 levels (scales 1, 2, 4, 8), SD1.5 family (eps, CLIP-L context)."""
    import torch

    comfy = import_host()
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.SD15(dict(DEEP_UNET_CONFIG))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    _seeded(model.diffusion_model, 11)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(), offload_device=cpu)


@functools.lru_cache(maxsize=None)
def deep_controlnet():
    """A ControlNet matching :func:`deep_unet_model` (the host's cldm.ControlNet + comfy.controlnet.ControlNet)."""
    import torch

    comfy = import_host()
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management
    import comfy.ops

    config = {k: v for k, v in DEEP_UNET_CONFIG.items() if k not in ("out_channels", "transformer_depth_output")}
    net = comfy.cldm.cldm.ControlNet(**config, hint_channels=3, device="cpu", operations=comfy.ops.disable_weight_init)
    _seeded(net, 12)
    return comfy.controlnet.ControlNet(net, load_device=comfy.model_management.get_torch_device())
