"""Vista zoom nodes: Generative Powers of Ten (Wang et al. 2024) zoom stacks in ComfyUI.

Prompts (one per level) → CONDITIONING of batch N; Zoom Noise + Zoom Stack Sampler plug into
SamplerCustomAdvanced with an EmptyLatentImage of batch N; VAEDecode gives the N levels and
Zoom Video turns them into a continuous zoom.
"""
from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..core.checks import VistaInputError
from ..core.zoom_video import zoom_video_frames
from .zoom_sampling import (NOISE_NODE, PROMPTS_NODE, SAMPLER_NODE, ZOOM_OPTIONS, ZoomNoise, split_prompts,
                            stack_conditioning, zoom_stack_sampler)

VIDEO_NODE = "Vista Zoom Video"
PAPER = "Generative Powers of Ten (Wang et al. 2024)"
DEFAULT_PROMPTS = ("a spiral galaxy in deep space, stars, nebula\n"
                   "a solar system with a bright sun and orbiting planets\n"
                   "a blue planet seen from orbit, clouds and oceans\n"
                   "aerial view of a city on the coast at night, city lights")


def zoom_factor_input() -> io.Combo.Input:
    return io.Combo.Input("zoom_factor", options=ZOOM_OPTIONS, default="2",
                          tooltip="Zoom between consecutive levels (p): level i+1 shows the central 1/p x 1/p of "
                                  "level i. Use the same value on every Vista zoom node of the workflow.")


class VistaZoomPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomPrompts",
            display_name=PROMPTS_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, §4: one text prompt per zoom level, one per line (first line = most zoomed-out; "
                         "blank lines are ignored). Encodes each line with CLIP and stacks them on the batch dimension, "
                         "so an N-level stack latent (EmptyLatentImage batch N) gives every level its own prompt in one "
                         "batched UNet call. Longer prompts are repeated to a common token length (ComfyUI's rule)."),
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder (from the checkpoint loader)."),
                io.String.Input("prompts", multiline=True, default=DEFAULT_PROMPTS,
                                tooltip="One prompt per line, from the most zoomed-out level 0 to the deepest level."),
            ],
            outputs=[
                io.Conditioning.Output(display_name="CONDITIONING",
                                       tooltip="Positive conditioning of batch N (one prompt per level)."),
                io.Int.Output(display_name="levels",
                              tooltip="N, the number of prompts = zoom levels; use it as the EmptyLatentImage batch_size."),
            ],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, clip, prompts: str) -> io.NodeOutput:
        lines = split_prompts(prompts)
        encoded = [clip.encode_from_tokens_scheduled(clip.tokenize(line)) for line in lines]
        return io.NodeOutput(stack_conditioning(encoded), len(lines))


class VistaZoomNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomNoise",
            display_name=NOISE_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, Alg. 1 (Π_noise): initial noise for a zoom stack, i.i.d. normal at every level and "
                         "consistent across levels (each level's centre holds the deeper level's noise, area-downscaled "
                         "and rescaled by p). Connect to SamplerCustomAdvanced's noise with the Vista Zoom Stack Sampler."),
            inputs=[
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise; same seed, same stack. The noise is drawn on the CPU."),
                zoom_factor_input(),
            ],
            outputs=[io.Noise.Output(tooltip="Zoom-consistent noise for a stack latent of batch N (N levels).")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, noise_seed: int, zoom_factor: str) -> io.NodeOutput:
        return io.NodeOutput(ZoomNoise(noise_seed, int(zoom_factor)))


class VistaZoomStackSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomStackSampler",
            display_name=SAMPLER_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, Alg. 2: multi-scale joint sampling of a zoom stack, a SAMPLER for "
                         "SamplerCustomAdvanced. latent_image is the stack: batch N = N levels (level 0 most zoomed-out), "
                         "each with its own prompt (Vista Zoom Prompts). Every step predicts all levels in one batched "
                         "call, blends them with Laplacian multi-resolution blending (§4.2), renders the stack (Alg. 1) "
                         "and takes an ancestral step with zoom-consistent noise. With a photo (§4.4) the clean estimates "
                         "are first pulled towards it by Adam steps on Eq. 1. The output is render-consistent: level i+1 "
                         "area-downscaled by p equals level i's centre. Cost: one batch-N model call per step. "
                         "SD-family (eps / v-prediction) models."),
            inputs=[
                zoom_factor_input(),
                io.Float.Input("eta", default=1.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Ancestral noise per step: 1 = DDPM (the paper), 0 = deterministic DDIM."),
                io.Float.Input("s_noise", default=1.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Scale of the added per-step noise (1 = exact)."),
                io.Int.Input("photo_steps", default=5, min=0, max=100,
                             tooltip="Adam steps on the photo loss before each blending (paper: 5)."),
                io.Float.Input("photo_lr", default=0.1, min=0.0001, max=10.0, step=0.01,
                               tooltip="Adam learning rate in latent units per step (paper: 0.1)."),
                io.Float.Input("photo_until", default=0.8, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the sampling steps, from the first, with photo guidance; the rest "
                                       "add detail freely (0.8 = first 80 %)."),
                io.Latent.Input("photo", optional=True,
                                tooltip="Photo-based zoom (§4.4): the VAE-encoded photo of the most zoomed-out level, "
                                        "the size of one stack level (e.g. 512x512 px on SD1.5)."),
            ],
            outputs=[io.Sampler.Output(tooltip="The zoom-stack sampler, for SamplerCustomAdvanced.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, zoom_factor: str, eta: float, s_noise: float, photo_steps: int, photo_lr: float,
                photo_until: float, photo: dict | None = None) -> io.NodeOutput:
        options = {"p": int(zoom_factor), "eta": eta, "s_noise": s_noise, "photo": photo,
                   "photo_settings": {"steps": photo_steps, "lr": photo_lr, "until": photo_until}}
        return io.NodeOutput(comfy.samplers.KSAMPLER(zoom_stack_sampler, extra_options=options))


class VistaZoomVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomVideo",
            display_name=VIDEO_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, Fig. 1: a continuous zoom video through the decoded levels of a zoom stack. Each "
                         "frame takes every pixel from the deepest level that contains it, so deeper levels replace the "
                         "magnified centre of shallower ones. Frames = (N − 1) · frames_per_level + 1; feed them to "
                         "SaveAnimatedWEBP or a video node (frames_per_level / fps = seconds per zoom step)."),
            inputs=[
                io.Image.Input("images", tooltip="The N decoded stack levels (VAEDecode of the stack), level 0 first."),
                zoom_factor_input(),
                io.Int.Input("frames_per_level", default=24, min=1, max=1000,
                             tooltip="Frames per zoom step p between consecutive levels (24 at 24 fps = 1 s per level)."),
            ],
            outputs=[io.Image.Output(tooltip="The video frames, (N − 1) · frames_per_level + 1 images of the level size.")],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, images, zoom_factor: str, frames_per_level: int) -> io.NodeOutput:
        try:
            return io.NodeOutput(zoom_video_frames(images, int(zoom_factor), frames_per_level))
        except VistaInputError as e:
            raise ValueError(f"{VIDEO_NODE}: {e}") from e
