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
    comfy = import_host()
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management
    import comfy.ops

    config = {k: v for k, v in DEEP_UNET_CONFIG.items() if k not in ("out_channels", "transformer_depth_output")}
    net = comfy.cldm.cldm.ControlNet(**config, hint_channels=3, device="cpu", operations=comfy.ops.disable_weight_init)
    _seeded(net, 12)
    return comfy.controlnet.ControlNet(net, load_device=comfy.model_management.get_torch_device())


# Tiny DiT models (SD3, Flux) that the host's own detection (comfy.model_detection.detect_unet_config) recognises.
# Both are built in-process: a skeleton of the detection keys → the host's detected config → the host's own module
# for the key names and shapes → seeded small weights (make_test_checkpoint's init) → the host's loader.
FLUX_WIDTH = 256  # hidden size; detection (v0.33.0) reads it from img_in.weight, heads = width / 128 → 2 heads
SD3_DEPTH = 2  # MMDiT width = 64 · depth = 128, heads = depth = 2, joint blocks = depth
SD3_POS_GRID = 64  # pos_embed grid in patches: windows up to 128 latent px = 1024 px


def _flux_skeleton(width: int) -> dict:
    """The keys Flux detection reads: key_norm + img_in (detection), txt_in/vector_in/guidance_in (widths, dev), depths."""
    import torch

    return {"img_in.weight": torch.zeros(width, 64), "txt_in.weight": torch.zeros(width, 4096),
            "vector_in.in_layer.weight": torch.zeros(width, 768), "guidance_in.in_layer.weight": torch.zeros(width, 256),
            "double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(128), "single_blocks.0.linear1.weight": torch.zeros(1)}


def _sd3_skeleton(depth: int, grid: int) -> dict:
    """The keys MMDiT detection reads (both hosts read widths and depth from them): SD3 = MMDiT with 16 channels."""
    import torch

    width = 64 * depth
    return {"x_embedder.proj.weight": torch.zeros(width, 16, 2, 2), "final_layer.linear.weight": torch.zeros(64, width),
            "y_embedder.mlp.0.weight": torch.zeros(width, 2048), "context_embedder.weight": torch.zeros(width, 4096),
            "pos_embed": torch.zeros(1, grid * grid, width),
            "joint_blocks.0.context_block.attn.qkv.weight": torch.zeros(3 * width, width)}


def _tiny_dit(skeleton: dict, seed: int, width_keys: dict):
    """(ModelPatcher, detected) for a DiT whose detected config is corrected by ``width_keys`` where the host hard-codes.

    The host detects the family and config from ``skeleton``. Where detection reads the width from the weights
    (v0.33.0 Flux, SD3 on both hosts) the full random state dict is loaded with ``comfy.sd.load_diffusion_model_state_dict``
    (detection again, as UNETLoader does). v0.3.64's Flux detection hard-codes hidden_size 3072 / 24 heads, so there
    the detected config gets ``width_keys`` and the model is built from it with the same public pieces that loader
    uses (``model_config_from_unet_config``, ``get_model``, ``load_model_weights``, ``ModelPatcher``).
    """
    import torch

    import comfy.model_detection
    import comfy.model_management
    import comfy.model_patcher
    import comfy.sd

    config = comfy.model_detection.detect_unet_config(skeleton, "")
    detected = all(config.get(k) == v for k, v in width_keys.items())
    model_config = comfy.model_detection.model_config_from_unet_config({**config, **width_keys})
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.diffusion_model.state_dict().items():
        t = tensor.detach().clone().float()
        _tool()._init_(name, t, generator)
        state[name] = t
    if detected:
        return comfy.sd.load_diffusion_model_state_dict(state), True
    model.load_model_weights(state, "")
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(), offload_device=cpu), False


@functools.lru_cache(maxsize=None)
def tiny_flux():
    """(MODEL, detected): a Flux-dev (guidance-distilled) DiT of width 256, one double and one single block.

    ``detected`` is True where the host read the width from the weights (v0.33.0: loaded through
    ``comfy.sd.load_diffusion_model_state_dict``); False on v0.3.64 (see :func:`_tiny_dit`).
    """
    import_host()
    return _tiny_dit(_flux_skeleton(FLUX_WIDTH), 21, {"hidden_size": FLUX_WIDTH, "num_heads": FLUX_WIDTH // 128})


@functools.lru_cache(maxsize=None)
def tiny_sd3():
    """(MODEL, detected): an SD3 MMDiT of depth 2 (width 128, two joint blocks), detected and loaded on both hosts."""
    import_host()
    return _tiny_dit(_sd3_skeleton(SD3_DEPTH, SD3_POS_GRID), 22, {"depth": SD3_DEPTH})


def dit_conditioning(family: str, seed: int, tokens: int = 8, batch: int = 1, guidance: float = 3.5) -> list:
    """A CONDITIONING built directly, as the family's text encoders would shape it (no T5-XXL / CLIP-G on CPU).

    Flux: T5 context ``(B, L, 4096)``, CLIP-L pooled ``(B, 768)`` and FluxGuidance's ``guidance``;
    SD3: T5 context ``(B, L, 4096)`` and CLIP-L + CLIP-G pooled ``(B, 2048)``.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, 4096, generator=generator)
    if family == "flux":
        return [[context, {"pooled_output": torch.randn(batch, 768, generator=generator), "guidance": guidance}]]
    return [[context, {"pooled_output": torch.randn(batch, 2048, generator=generator)}]]


# SDXL-family and SD2.x v-prediction UNets, built in-process from the host's own classes (the supported_models
# config class, its get_model / model_base class, ModelPatcher) with seeded small weights, and CONDITIONING built
# directly: CLIP-G (695M params) is too slow for the node tier on 2 CPU cores. The slim SDXL test checkpoint
# (tools/make_test_checkpoint.py --family sdxl, 320 channels) covers detection, loading and the text encoders.
SDXL_SMALL_CONFIG = {  # SDXL's geometry (3 levels, 2 res blocks each: deepest grid 4 latent px), Segmind Vega depths
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 64, "num_res_blocks": [2, 2, 2],
    "channel_mult": [1, 1, 2], "transformer_depth": [0, 0, 1, 1, 2, 2], "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2],
    "transformer_depth_middle": 2, "context_dim": 2048, "use_linear_in_transformer": True, "adm_in_channels": 2816,
    "num_classes": "sequential", "use_spatial_transformer": True, "legacy": False, "use_temporal_attention": False,
    "use_temporal_resblock": False, "use_checkpoint": False,
}
SD2_SMALL_CONFIG = {  # SD2.x's 4 levels (deepest grid 8), linear projections, OpenCLIP-H context 1024
    "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 64, "num_res_blocks": [1, 1, 1, 1],
    "channel_mult": [1, 1, 1, 1], "transformer_depth": [0, 1, 1, 1], "transformer_depth_output": [0, 0, 1, 1, 1, 1, 1, 1],
    "transformer_depth_middle": 1, "context_dim": 1024, "use_linear_in_transformer": True, "adm_in_channels": None,
    "use_spatial_transformer": True, "legacy": False, "use_temporal_attention": False, "use_checkpoint": False,
}


def _in_process_model(config_class, unet_config: dict, seed: int, model_type=None):
    """A ModelPatcher of ``config_class(unet_config)``'s model (``model_type`` overrides the config's guess)."""
    import torch

    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher

    config = config_class(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}) if model_type is None else comfy.model_base.BaseModel(config, model_type=model_type)
    _seeded(model.diffusion_model, seed)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(), offload_device=cpu)


@functools.lru_cache(maxsize=None)
def sdxl_model():
    """An SDXL-family MODEL: ``supported_models.Segmind_Vega`` → ``model_base.SDXL`` (eps, SDXL latent format,
    ``y`` = pooled 1280 + six 256-dim size embeddings), 64/64/128 channels."""
    import_host()
    import comfy.supported_models

    return _in_process_model(comfy.supported_models.Segmind_Vega, SDXL_SMALL_CONFIG, 31)


@functools.lru_cache(maxsize=None)
def sd2_v_model():
    """An SD2.x 768-v MODEL: ``supported_models.SD20`` with ``model_type`` V_PREDICTION (what ComfyUI's SD20
    picks for a v checkpoint; both hosts guess it from the weights' statistics), 64 channels, 4 levels."""
    comfy = import_host()
    import comfy.supported_models

    return _in_process_model(comfy.supported_models.SD20, SD2_SMALL_CONFIG, 32, comfy.model_base.ModelType.V_PREDICTION)


def sdxl_conditioning(seed: int, batch: int = 1, **sizes) -> list:
    """A CONDITIONING shaped like CLIPTextEncode's on SDXL: CLIP-L+G context ``(B, 77, 2048)``, CLIP-G pooled
    ``(B, 1280)``; ``sizes`` adds CLIPTextEncodeSDXL's width/height/crop_w/crop_h/target_width/target_height."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77, 2048, generator=generator),
             {"pooled_output": torch.randn(batch, 1280, generator=generator), **sizes}]]


def sd2_conditioning(seed: int, batch: int = 1) -> list:
    """A CONDITIONING shaped like CLIPTextEncode's on SD2.x: OpenCLIP-H context ``(B, 77, 1024)``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 77, 1024, generator=generator), {"pooled_output": torch.randn(batch, 1024, generator=generator)}]]
