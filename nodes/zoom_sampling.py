"""Glue between ComfyUI and core/zoom/stack.py: stacked prompts, zoom noise, the zoom-stack SAMPLER.

Generative Powers of Ten (Wang et al. 2024). A zoom stack of N levels is one LATENT of
batch N (level 0 = most zoomed-out). Each level gets its own prompt through ComfyUI's
ordinary batching: a CONDITIONING whose tensors have batch N is split per batch item by
``comfy.utils.repeat_to_batch_size`` (conds.CONDRegular.process_cond, v0.3.64 and v0.33.0),
so all levels are denoised in one batched UNet call with CFG unchanged. Every part of one stack
takes the same :class:`~core.zoom.stack.ZoomSettings` (p, levels) from Vista Zoom Settings.
"""
from __future__ import annotations

import itertools
import math

import comfy.samplers
import torch

from ..core.checks import VistaInputError
from ..core.zoom.stack import ZOOM_FACTORS, PhotoZoom, ZoomSettings, check_zoom_noise, sample_zoom_stack, zoom_noise
from ._common import (WindowBatchProgress, check_image_latent, check_latent_values, core_error, latent_factor,
                      step_form, throw_if_interrupted, unet_blocks, with_block_progress)

SAMPLER_NODE = "Vista Zoom Stack Sampler"
NOISE_NODE = "Vista Zoom Noise"
PROMPTS_NODE = "Vista Zoom Prompts"
SETTINGS_NODE = "Vista Zoom Settings"
LINK_LEVELS = f"link {SETTINGS_NODE}' levels output to the EmptyLatentImage batch_size"
PROMPT_COUNT_KEY = "vista_zoom_prompts"  # CONDITIONING dict key: the number of stacked level prompts
ZOOM_OPTIONS = [str(p) for p in ZOOM_FACTORS]
LEVELS_RANGE = (1, 32)  # Vista Zoom Settings' levels (schema min/max)


def blank_prompts(levels: int | None = None) -> str:
    """The message for a prompts text without a non-blank line."""
    count = f"levels={levels} lines" if levels is not None else f"as many lines as the levels of {SETTINGS_NODE}"
    return (f"{PROMPTS_NODE}: prompts is blank; write one prompt per line, one line per zoom level ({count}), "
            f"the most zoomed-out first")


def split_prompts(text: str, levels: int) -> list[str]:
    """One prompt per non-blank line, stripped (level 0 = first line = most zoomed-out); one per level."""
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(blank_prompts(levels))
    if len(prompts) != levels:
        low, high = LEVELS_RANGE
        other = (f", or set levels to {len(prompts)} on {SETTINGS_NODE}" if low <= len(prompts) <= high else
                 f" ({SETTINGS_NODE} takes at most {high} levels)")
        raise ValueError(f"{PROMPTS_NODE}: prompts has {len(prompts)} non-blank lines but the zoom settings have "
                         f"levels={levels}; write one prompt line per zoom level{other}")
    return prompts


def check_levels(node: str, name: str, batch: int, settings: ZoomSettings, fix: str) -> None:
    """A consumer's batch (latent or image levels) must be the settings' level count."""
    if batch != settings.levels:
        raise ValueError(f"{node}: {name} has batch {batch} but the zoom settings have levels={settings.levels}; {fix}")


def _pad_tokens(conds: list[torch.Tensor]) -> list[torch.Tensor]:
    """Bring token sequences to one length by repeating each to the lcm of the lengths.

    This is ComfyUI's own rule (conds.CONDCrossAttn.concat): a prompt longer than 77 tokens
    is encoded as several 77-token chunks, and repeating a whole key/value sequence leaves
    cross-attention's output unchanged, so no prompt is truncated or altered.
    """
    length = math.lcm(*(c.shape[1] for c in conds))
    return [c.repeat(1, length // c.shape[1], 1) for c in conds]


def stack_conditioning(encoded: list[list]) -> list:
    """N single-prompt CONDITIONINGs (one ``[cond, dict]`` each) → one CONDITIONING of batch N."""
    for i, conditioning in enumerate(encoded):
        if len(conditioning) != 1 or conditioning[0][0].shape[0] != 1:
            raise ValueError(f"{PROMPTS_NODE}: prompt line {i + 1} encoded to {len(conditioning)} scheduled conds; "
                             f"CLIP hook scheduling is not supported here, remove the CLIP hooks")
    conds = _pad_tokens([c[0][0] for c in encoded])
    extras = {}
    for key in encoded[0][0][1]:
        values = [c[0][1].get(key) for c in encoded]
        if all(isinstance(v, torch.Tensor) and v.shape == values[0].shape and v.shape[:1] == (1,) for v in values):
            extras[key] = torch.cat(values)
        elif all(not isinstance(v, torch.Tensor) and v == values[0] for v in values):
            extras[key] = values[0]
        else:
            raise ValueError(f"{PROMPTS_NODE}: the prompts' conditioning entry {key!r} cannot be stacked per level")
    extras[PROMPT_COUNT_KEY] = len(encoded)
    return [[torch.cat(conds), extras]]


class ZoomNoise:
    """A NOISE for SamplerCustomAdvanced: zoom-consistent initial noise (paper Alg. 1, Π_noise).

    The whole batch is one stack, so ``batch_index`` is ignored; the noise is drawn on the
    CPU from ``seed`` (same seed, same noise on every device).
    """

    def __init__(self, seed: int, settings: ZoomSettings):
        self.seed, self.settings = seed, settings

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        check_image_latent(NOISE_NODE, "the latent (SamplerCustomAdvanced latent_image)", samples)
        check_levels(NOISE_NODE, "the latent (SamplerCustomAdvanced latent_image)", samples.shape[0], self.settings,
                     LINK_LEVELS)
        n, _, h, w = samples.shape
        p = self.settings.p
        if n > 1 and (h % (2 * p) or w % (2 * p)):
            raise ValueError(f"{NOISE_NODE}: latent_image (SamplerCustomAdvanced) is {w}x{h} latent px; with "
                             f"zoom_factor={p} its width and height must be multiples of 2·zoom_factor = {2 * p} latent "
                             f"px (EmptyLatentImage width and height multiples of {16 * p} px on 8 px-per-latent-px "
                             f"models such as SD1.5/SDXL)")
        generator = torch.Generator().manual_seed(self.seed)
        try:
            return zoom_noise(tuple(samples.shape), p, generator, dtype=samples.dtype)
        except VistaInputError as e:
            raise core_error(NOISE_NODE, e) from e


def prompt_counts(guider) -> dict[str, int]:
    """{cond name: prompts} of the guider's conditionings: the Vista tag, else the cross-attn batch."""
    counts = {}
    for name, entries in (getattr(guider, "original_conds", None) or {}).items():
        for entry in entries:
            tagged = entry.get(PROMPT_COUNT_KEY)
            batch = entry["cross_attn"].shape[0] if isinstance(entry.get("cross_attn"), torch.Tensor) else 1
            if tagged is not None or batch > 1:
                counts[name] = tagged if tagged is not None else batch
    return counts


def _size(h: int, w: int, factor: int) -> str:
    """``"WxH latent px (W·f x H·f px)"``."""
    return f"{w}x{h} latent px ({w * factor}x{h * factor} px)"


def check_sampling_inputs(x: torch.Tensor, settings: ZoomSettings, guider, factor: int, denoise_mask) -> None:
    """Stack size and level count, per-level prompt count and masks, each error naming the input to fix."""
    check_image_latent(SAMPLER_NODE, "latent_image", x)
    n, _, h, w = x.shape
    p = settings.p
    check_levels(SAMPLER_NODE, "latent_image", n, settings, LINK_LEVELS)
    if n > 1 and (h % (2 * p) or w % (2 * p)):
        raise ValueError(f"{SAMPLER_NODE}: latent_image is {_size(h, w, factor)}; with zoom_factor={p} width and "
                         f"height must be multiples of 2·zoom_factor = {2 * p} latent px ({2 * p * factor} px)")
    for name, count in prompt_counts(guider).items():
        if count != n:
            raise ValueError(f"{SAMPLER_NODE}: the {name} conditioning has {count} zoom prompts but latent_image has "
                             f"batch {n} (zoom levels); give one prompt line per level (Vista Zoom Prompts with the "
                             f"same {SETTINGS_NODE})")
    if denoise_mask is not None:
        raise ValueError(f"{SAMPLER_NODE}: latent_image has a noise_mask; zoom stacks are always denoised whole, "
                         f"remove the SetLatentNoiseMask")


def check_noise(noise: torch.Tensor, p: int) -> None:
    """The initial noise must be zoom-consistent for this sampler's p (Vista Zoom Noise of the same settings)."""
    try:
        check_zoom_noise(noise, p)
    except VistaInputError as e:
        raise ValueError(f"{SAMPLER_NODE}: the noise input of SamplerCustomAdvanced: {e}. Connect {NOISE_NODE} fed by "
                         f"the same {SETTINGS_NODE} as this sampler") from e


def photo_zoom(guider, photo: dict | None, x: torch.Tensor, factor: int, settings: dict) -> PhotoZoom | None:
    """The photo LATENT (VAEEncode output) in the model's sampling space, as core's PhotoZoom.

    KSAMPLER's x and the model's x0 live in the processed latent space: CFGGuider.inner_sample
    converts the latent with ``inner_model.process_latent_in`` (v0.3.64 and v0.33.0). The photo
    goes through the same method of the guider's model (``guider.model_patcher.model``), which
    also covers models that override it rather than their ``latent_format``.
    """
    if photo is None:
        return None
    samples, level_shape = photo["samples"], tuple(x.shape[1:])
    check_image_latent(SAMPLER_NODE, "photo", samples)
    if samples.shape[0] != 1 or tuple(samples.shape[1:]) != tuple(level_shape):
        c, h, w = level_shape
        raise ValueError(f"{SAMPLER_NODE}: photo must be one VAE-encoded image of the zoom level size "
                         f"{_size(h, w, factor)}, {c} channels, got a latent of shape {tuple(samples.shape)}; "
                         f"scale the photo to the EmptyLatentImage width and height before VAEEncode")
    processed = guider.model_patcher.model.process_latent_in(samples.to(device=x.device, dtype=torch.float32))
    return PhotoZoom(processed[0].to(x.dtype), **settings)


def stack_progress(patcher, extra_args: dict, steps: int) -> tuple[dict, object]:
    """Progress inside each step's one batched call of all levels: ``(extra_args, before_step)``.

    The levels cannot go in separate calls (their prompts reach the UNet through ComfyUI's batching of one
    batch-N conditioning), so on a UNet the bar moves per UNet block of that call
    (:func:`~nodes._common.with_block_progress`, each report also honours the interrupt button); on other
    networks (SD3, Flux) once per step. ``before_step`` starts each step's count and checks the interrupt.
    """
    blocks, progress, step = unet_blocks(patcher), WindowBatchProgress(), itertools.count()

    def before_step() -> None:
        progress.start_step(next(step), steps, max(sum(blocks), 1))
        throw_if_interrupted()

    if not sum(blocks):
        return extra_args, before_step
    options = extra_args.get("model_options", {})
    transformer_options = with_block_progress(options.get("transformer_options", {}), progress, blocks)
    return {**extra_args, "model_options": {**options, "transformer_options": transformer_options}}, before_step


class ZoomStackSampler(comfy.samplers.Sampler):
    """A SAMPLER for SamplerCustomAdvanced: checks the stack against the guider it is handed, then runs
    :func:`core.zoom.stack.sample_zoom_stack` through ComfyUI's own ``KSAMPLER`` plumbing (noise scaling,
    callback/previews, inverse scaling)."""

    def __init__(self, settings: ZoomSettings, eta: float, s_noise: float, photo: dict | None, photo_settings: dict):
        self.settings, self.eta, self.s_noise = settings, eta, s_noise
        self.photo, self.photo_settings = photo, photo_settings

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        patcher = model_wrap.model_patcher
        factor = latent_factor(patcher)
        check_sampling_inputs(noise, self.settings, model_wrap, factor, denoise_mask)
        if latent_image is not None:
            check_latent_values(SAMPLER_NODE, "latent_image", latent_image, patcher)
        guidance = photo_zoom(model_wrap, self.photo, noise, factor, self.photo_settings)
        check_noise(noise, self.settings.p)
        extra_args, before_step = stack_progress(patcher, extra_args, len(sigmas) - 1)
        options = {"p": self.settings.p, "eta": self.eta, "s_noise": self.s_noise, "photo_guidance": guidance,
                   "before_step": before_step, **step_form(patcher)}
        inner = comfy.samplers.KSAMPLER(sample_zoom_stack, extra_options=options)
        try:
            return inner.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)
        except VistaInputError as e:
            raise core_error(SAMPLER_NODE, e) from e
