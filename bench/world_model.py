"""The coherence world's trained denoiser as a ComfyUI MODEL and VAE (issue [G], bench/COHERENCE.md §3).

``tools/train_world_denoiser.py`` trains ComfyUI's own ``UNetModel`` in the world's latent (``bench.evaluation.world.encode_latent``:
a 64 px RGB window in [-1, 1] is 3 × 16 × 16). Here the weights become what a user's checkpoint becomes in ComfyUI:

* :func:`world_model_config` — a ``supported_models_base.BASE`` whose ``get_model`` gives the host's
  ``model_base.BaseModel`` (v-prediction as SD2.x-v, SD1.5's discrete schedule, cross-attention conditioning), with the
  3-channel, 4 px-per-latent-px latent format below; wrapped in a ``ModelPatcher``, it is a MODEL every Vista node accepts;
* the "prompts": CONDITIONING ``[[tokens (1, 4, 64), {}]]`` per scene class (row 3 is the empty prompt);
* :class:`WorldVAE` — what ComfyUI's ``VAE`` offers the pack (``first_stage_model.decode``, ``patcher``,
  ``device``, ``vae_dtype``, ``decode``), so SyncDiffusion's ``decoder=vae`` differentiates through it.
  ComfyUI has no such weightless VAE of factor 4 (its ``PixelspaceConversionVAE`` is factor 1).

Import the host and the pack first (``bench/_common``): the classes subclass ComfyUI's and use ``vista.bench.evaluation.world``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

CLASSES = ("day", "dusk", "night")
EMPTY_PROMPT = 3  # row of the token table used as the negative / unconditional prompt


class WorldCoder(torch.nn.Module):
    """The world's weightless "autoencoder" (``bench.evaluation.world.encode_latent`` / ``decode_latent``) as a module."""

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] → ``(B, 3, H/4, W/4)``."""
        from vista.bench.evaluation.world import encode_latent

        return encode_latent(image)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, 3, h, w)`` → ``(B, 3, 4h, 4w)``, about [-1, 1] (the range SD VAEs decode to)."""
        from vista.bench.evaluation.world import decode_latent

        return decode_latent(latent)


class WorldVAE:
    """The parts of ComfyUI's ``comfy.sd.VAE`` that ComfyUI and Vista use, for the pixel-shuffle coder."""

    def __init__(self, comfy, device=torch.device("cpu")):
        self.first_stage_model = WorldCoder()
        self.device, self.vae_dtype, self.output_device = device, torch.float32, device
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=device, offload_device=device)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """LATENT → IMAGE ``(B, H, W, 3)`` in [0, 1], as ``VAE.decode``."""
        image = self.first_stage_model.decode(samples.float()).clamp(-1, 1)
        return ((image + 1) / 2).movedim(1, -1)


def world_model_config(comfy, unet_config: dict, prediction: str = "v"):
    """``(config, latent_format class)``: the host's BASE/LatentFormat subclassed for the world denoiser."""
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models_base

    from vista.bench.evaluation.world import LATENT_CHANNELS, LATENT_FACTOR

    class WorldLatent(comfy.latent_formats.LatentFormat):
        latent_channels = LATENT_CHANNELS
        spacial_downscale_ratio = LATENT_FACTOR
        scale_factor = 1.0
        latent_rgb_factors = [[1.0 if c == rgb else 0.0 for rgb in range(3)] for c in range(LATENT_CHANNELS)]  # RGB
        latent_rgb_factors_bias = [0.0, 0.0, 0.0]

    class WorldConfig(comfy.supported_models_base.BASE):
        unet_config = {}
        unet_extra_config = {}
        latent_format = WorldLatent
        supported_inference_dtypes = [torch.float32]

        def inpaint_model(self):
            return False  # BASE reads in_channels > 4 as an inpainting UNet (a concatenated mask); this one is not

        def model_type(self, state_dict, prefix=""):
            return comfy.model_base.ModelType.V_PREDICTION if prediction == "v" else comfy.model_base.ModelType.EPS

    config = WorldConfig(dict(unet_config))
    config.set_inference_dtype(torch.float32, None)
    return config


@dataclass
class WorldModel:
    """The MODEL (ModelPatcher), the prompt token table, the VAE, and the training metadata."""

    model: object
    tokens: torch.Tensor  # (4, 4, 64): day, dusk, night, empty
    vae: WorldVAE
    metadata: dict

    def conditioning(self, class_id: int) -> list:
        """CONDITIONING of scene class ``class_id`` (``EMPTY_PROMPT`` for the negative)."""
        return [[self.tokens[class_id:class_id + 1].clone(), {}]]


def load_world_model(comfy, path: Path) -> WorldModel:
    """Load ``tools/train_world_denoiser.py``'s safetensors as a ComfyUI MODEL on the host's torch device."""
    import comfy.model_management
    import comfy.model_patcher
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata() or {})
    if metadata.get("vista") != "world_denoiser":
        raise SystemExit(f"{path} is not a Vista world denoiser (tools/train_world_denoiser.py writes one)")
    state = load_file(str(path))
    tokens = state.pop("vista_world.prompt_tokens")
    config = world_model_config(comfy, json.loads(metadata["unet_config"]), metadata.get("prediction", "eps"))
    device = comfy.model_management.get_torch_device()
    model = config.get_model({}, "model.diffusion_model.", device=None)
    model.load_model_weights(state, "model.diffusion_model.")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device,
                                               offload_device=comfy.model_management.unet_offload_device())
    return WorldModel(patcher, tokens, WorldVAE(comfy, device), metadata)
