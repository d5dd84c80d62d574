"""Vista zoom nodes: Generative Powers of Ten (Wang et al. 2024) zoom stacks in ComfyUI.

Zoom Settings (p, levels) is the one source of truth of a stack: it feeds Prompts (one per level),
Noise + Stack Sampler (for SamplerCustomAdvanced, with an EmptyLatentImage of batch = levels),
Composite (the decoded levels made consistent in pixels) and Video (a continuous zoom).
"""
from __future__ import annotations

from comfy_api.latest import io
from einops import rearrange

from ..core.checks import VistaInputError
from ..core.zoom.stack import ZoomSettings
from ..core.zoom.composite import composite_levels
from ..core.zoom.video import zoom_video_frames
from ._common import ETA_RANGE, S_NOISE_RANGE, check_numbers, core_error, require
from .budget import check_video_budget
from .zoom_links import check_stack_settings
from .zoom_sampling import (LEVELS_RANGE, NOISE_NODE, PROMPTS_NODE, SAMPLER_NODE, SETTINGS_NODE, ZOOM_OPTIONS,
                            ZoomNoise, ZoomStackSampler, blank_prompts, check_levels, split_prompts,
                            stack_conditioning)

VIDEO_NODE = "Vista Zoom Video"
COMPOSITE_NODE = "Vista Zoom Composite"
PAPER = "Generative Powers of Ten (Wang et al. 2024)"
DEFAULT_PROMPTS = ("a spiral galaxy in deep space, stars, nebula\n"
                   "a solar system with a bright sun and orbiting planets\n"
                   "a blue planet seen from orbit, clouds and oceans\n"
                   "aerial view of a city on the coast at night, city lights")
ZoomType = io.Custom("VISTA_ZOOM")
DECODE_ALL = "decode the whole stack (VAEDecode of the Zoom Stack Sampler's output, one image per level)"
FEATHER_PX = (0, 4096)


def zoom_input() -> io.Input:
    return ZoomType.Input("zoom", tooltip=f"The zoom stack's settings (zoom factor p, levels) from {SETTINGS_NODE}; "
                                          "link the same settings to every Vista zoom node of the stack.")


def feather_input(what: str) -> io.Int.Input:
    return io.Int.Input("feather", default=16, min=FEATHER_PX[0], max=FEATHER_PX[1], step=1,
                        tooltip=f"Width in image px of the ramp inside the pasted centre block over which {what}; "
                                "0 = hard edge. At most a quarter of the block's side (e.g. 64 px for 512 px levels "
                                "at zoom factor 2, 32 px at 4). Use the same value on Composite and Video.")


class VistaZoomSettings(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomSettings",
            display_name=SETTINGS_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, §4.1: the zoom stack's two shared numbers, made once — the zoom factor p between "
                         "consecutive levels and the number of levels N. Link its zoom output to Vista Zoom Prompts, "
                         "Noise, Stack Sampler, Composite and Video, and its levels output to the EmptyLatentImage "
                         "batch_size, so no two parts of one stack can disagree."),
            inputs=[
                io.Combo.Input("zoom_factor", options=ZOOM_OPTIONS, default="2",
                               tooltip="Zoom between consecutive levels (p): level i+1 shows the central 1/p x 1/p "
                                       "of level i (paper: 2 or 4)."),
                io.Int.Input("levels", default=4, min=LEVELS_RANGE[0], max=LEVELS_RANGE[1],
                             tooltip="Number of zoom levels N (= prompt lines = latent batch = decoded images); the "
                                     "deepest level is zoomed in p^(N-1) times."),
            ],
            outputs=[
                ZoomType.Output(display_name="zoom", tooltip="The settings (p, levels) for every Vista zoom node."),
                io.Int.Output(display_name="levels", tooltip="N; link it to the EmptyLatentImage batch_size."),
            ],
        )

    @classmethod
    def execute(cls, zoom_factor: str, levels: int) -> io.NodeOutput:
        try:
            return io.NodeOutput(ZoomSettings(int(zoom_factor), levels), levels)
        except VistaInputError as e:
            raise core_error(SETTINGS_NODE, e) from e


class VistaZoomPrompts(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomPrompts",
            display_name=PROMPTS_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, §4: one text prompt per zoom level, one per line (first line = most zoomed-out; "
                         "blank lines are ignored; exactly `levels` lines). Encodes each line with CLIP and stacks them "
                         "on the batch dimension, so an N-level stack latent (EmptyLatentImage batch N) gives every "
                         "level its own prompt in one batched UNet call. Longer prompts are repeated to a common token "
                         "length (ComfyUI's rule)."),
            inputs=[
                zoom_input(),
                io.Clip.Input("clip", tooltip="The text encoder (from the checkpoint loader)."),
                io.String.Input("prompts", multiline=True, default=DEFAULT_PROMPTS,
                                tooltip="One prompt per line, from the most zoomed-out level 0 to the deepest; as many "
                                        "lines as the settings' levels."),
            ],
            outputs=[io.Conditioning.Output(display_name="CONDITIONING",
                                            tooltip="Positive conditioning of batch N (one prompt per level).")],
        )

    @classmethod
    def validate_inputs(cls, prompts: str = None) -> bool | str:
        return blank_prompts() if isinstance(prompts, str) and not prompts.strip() else True

    @classmethod
    def execute(cls, zoom: ZoomSettings, clip, prompts: str) -> io.NodeOutput:
        lines = split_prompts(prompts, zoom.levels)
        encoded = [clip.encode_from_tokens_scheduled(clip.tokenize(line)) for line in lines]
        return io.NodeOutput(stack_conditioning(encoded))


class VistaZoomNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomNoise",
            display_name=NOISE_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, Alg. 1 (Π_noise): initial noise for a zoom stack, i.i.d. normal at every level and "
                         "consistent across levels (each level's centre holds the deeper level's noise, area-downscaled "
                         "and rescaled by p). Connect to SamplerCustomAdvanced's noise with the Vista Zoom Stack Sampler "
                         "of the same settings."),
            inputs=[
                zoom_input(),
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise; same seed, same stack. The noise is drawn on the CPU."),
            ],
            outputs=[io.Noise.Output(tooltip="Zoom-consistent noise for a stack latent of batch N (N levels).")],
        )

    @classmethod
    def execute(cls, zoom: ZoomSettings, noise_seed: int) -> io.NodeOutput:
        return io.NodeOutput(ZoomNoise(noise_seed, zoom))


class VistaZoomStackSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomStackSampler",
            display_name=SAMPLER_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, Alg. 2: multi-scale joint sampling of a zoom stack, a SAMPLER for "
                         "SamplerCustomAdvanced. latent_image is the stack: batch N = N levels (level 0 most zoomed-out), "
                         "each with its own prompt (Vista Zoom Prompts), and the noise must be Vista Zoom Noise of the "
                         "same settings. Every step predicts all levels in one batched call, blends them with Laplacian "
                         "multi-resolution blending (§4.2), renders the stack (Alg. 1) and takes an ancestral step with "
                         "zoom-consistent noise drawn from its own stream. With a photo (§4.4) the clean estimates are "
                         "first pulled towards it by Adam steps on Eq. 1. The output is render-consistent: level i+1 "
                         "area-downscaled by p equals level i's centre. Cost: one batch-N model call per step. "
                         "SD-family (eps / v-prediction) and flow-matching models (SD3, Flux: ComfyUI's RF ancestral step, "
                         "as its euler_ancestral)."),
            inputs=[
                zoom_input(),
                io.Float.Input("eta", default=1.0, min=ETA_RANGE[0], max=ETA_RANGE[1], step=0.01,
                               tooltip="Ancestral noise per step: 1 = DDPM (the paper), 0 = deterministic DDIM. "
                                       "On SD3/Flux the step is ComfyUI's RF form (as its euler_ancestral)."),
                io.Float.Input("s_noise", default=1.0, min=S_NOISE_RANGE[0], max=S_NOISE_RANGE[1], step=0.01,
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
        )

    @classmethod
    def validate_inputs(cls, eta: float = None, s_noise: float = None, photo_lr: float = None,
                        photo_until: float = None) -> bool | str:
        return check_numbers(SAMPLER_NODE, cls.define_schema(), eta=eta, s_noise=s_noise, photo_lr=photo_lr,
                             photo_until=photo_until)

    @classmethod
    def execute(cls, zoom: ZoomSettings, eta: float, s_noise: float, photo_steps: int, photo_lr: float,
                photo_until: float, photo: dict | None = None) -> io.NodeOutput:
        require(cls.validate_inputs(eta, s_noise, photo_lr, photo_until))  # linked values
        photo_settings = {"steps": photo_steps, "lr": photo_lr, "until": photo_until}
        return io.NodeOutput(ZoomStackSampler(zoom, eta, s_noise, photo, photo_settings))


class VistaZoomComposite(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomComposite",
            display_name=COMPOSITE_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, Alg. 1 in pixels: the sampler makes the levels consistent in latent space, but a "
                         "VAE does not decode averaged latents to averaged images, so the decoded levels disagree where "
                         "they overlap. This node renders the decoded levels once more, deepest first: each deeper "
                         "level, area-downscaled by p, is pasted into the centre of the level above with a feathered "
                         "edge. The ramp lies inside the pasted block: beyond `feather` px from its edge a level's centre "
                         "IS the deeper level downscaled (consistent), in the ring the two cross-fade, outside it the "
                         "level keeps its own pixels. Feed the result to Save Image and Vista Zoom Video."),
            inputs=[
                io.Image.Input("images", tooltip="The N decoded stack levels (VAEDecode of the stack), level 0 first."),
                zoom_input(),
                feather_input("a level cross-fades into the deeper level"),
            ],
            outputs=[io.Image.Output(tooltip="The N levels, each one's centre made from the deeper levels.")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],  # to compare zoom with the stack's (nodes/zoom_links.py)
        )

    @classmethod
    def execute(cls, images, zoom: ZoomSettings, feather: int) -> io.NodeOutput:
        check_stack_settings(COMPOSITE_NODE, cls.hidden, zoom)
        check_levels(COMPOSITE_NODE, "images", images.shape[0], zoom, DECODE_ALL)
        try:
            out = composite_levels(rearrange(images, "n h w c -> n c h w"), zoom.p, feather)
        except VistaInputError as e:
            raise core_error(COMPOSITE_NODE, e) from e
        return io.NodeOutput(rearrange(out, "n c h w -> n h w c"))


class VistaZoomVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaZoomVideo",
            display_name=VIDEO_NODE,
            category="Vista/zoom",
            description=(f"{PAPER}, Fig. 1: a continuous zoom video through the levels of a zoom stack (best: the "
                         "output of Vista Zoom Composite). Each frame lays the deeper levels over the magnified "
                         "shallower ones; a deeper level fades in over its outer `feather` px (no hard edge) and, in "
                         "the last zoom step before it fills the frame, the ramp narrows so the hand-over has no jump. "
                         "Frames = (N − 1) · frames_per_level + 1; feed them to SaveAnimatedWEBP or a video node "
                         "(frames_per_level / fps = seconds per zoom step)."),
            inputs=[
                io.Image.Input("images", tooltip="The N stack levels (Vista Zoom Composite output), level 0 first."),
                zoom_input(),
                io.Int.Input("frames_per_level", default=24, min=1, max=1000,
                             tooltip="Frames per zoom step p between consecutive levels (24 at 24 fps = 1 s per level)."),
                feather_input("a deeper level fades in"),
            ],
            outputs=[io.Image.Output(tooltip="The video frames, (N − 1) · frames_per_level + 1 images of the level size.")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],  # to compare zoom with the stack's (nodes/zoom_links.py)
        )

    @classmethod
    def execute(cls, images, zoom: ZoomSettings, frames_per_level: int, feather: int) -> io.NodeOutput:
        check_stack_settings(VIDEO_NODE, cls.hidden, zoom, feather)
        check_levels(VIDEO_NODE, "images", images.shape[0], zoom, DECODE_ALL)
        if frames_per_level < 1:  # named here: the budget estimate below would refuse it less clearly
            raise ValueError(f"{VIDEO_NODE}: frames_per_level must be >= 1, got {frames_per_level}")
        check_video_budget(VIDEO_NODE, images, frames_per_level)
        try:
            return io.NodeOutput(zoom_video_frames(images, zoom.p, frames_per_level, feather))
        except VistaInputError as e:
            raise core_error(VIDEO_NODE, e) from e
