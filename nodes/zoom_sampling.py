"""Glue between ComfyUI and core/zoom.py: stacked prompts, zoom noise, the zoom-stack sampler function.

Generative Powers of Ten (Wang et al. 2024). A zoom stack of N levels is one LATENT of
batch N (level 0 = most zoomed-out). Each level gets its own prompt through ComfyUI's
ordinary batching: a CONDITIONING whose tensors have batch N is split per batch item by
``comfy.utils.repeat_to_batch_size`` (conds.CONDRegular.process_cond, v0.3.64 and v0.33.0),
so all levels are denoised in one batched UNet call with CFG unchanged.
"""
from __future__ import annotations

import math

import torch

from ..core.checks import VistaInputError
from ..core.zoom import ZOOM_FACTORS, PhotoZoom, sample_zoom_stack, zoom_noise
from ._common import throw_if_interrupted

SAMPLER_NODE = "Vista Zoom Stack Sampler"
NOISE_NODE = "Vista Zoom Noise"
PROMPTS_NODE = "Vista Zoom Prompts"
PROMPT_COUNT_KEY = "vista_zoom_prompts"  # CONDITIONING dict key: the number of stacked level prompts
ZOOM_OPTIONS = [str(p) for p in ZOOM_FACTORS]


def split_prompts(text: str) -> list[str]:
    """One prompt per non-blank line, stripped (level 0 = first line = most zoomed-out)."""
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{PROMPTS_NODE}: prompts must hold at least one non-blank line (one prompt per zoom level)")
    return prompts


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

    def __init__(self, seed: int, p: int):
        self.seed, self.p = seed, p

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        if samples.is_nested or samples.ndim != 4:
            raise ValueError(f"{NOISE_NODE}: the latent must be an image latent (N, C, H, W), got {tuple(samples.shape)}")
        try:
            return zoom_noise(tuple(samples.shape), self.p, torch.Generator().manual_seed(self.seed), dtype=samples.dtype)
        except VistaInputError as e:
            raise ValueError(f"{NOISE_NODE}: {e}; use an image size divisible by 2·zoom_factor latent px") from e


def _guider(model):
    """The guider behind KSAMPLER's model wrapper (``KSamplerX0Inpaint.inner_model``, both hosts)."""
    guider = getattr(model, "inner_model", None)
    if getattr(guider, "model_patcher", None) is None:
        raise ValueError(f"{SAMPLER_NODE}: run this sampler through SamplerCustomAdvanced (or SamplerCustom); "
                         f"it needs the guider's model")
    return guider


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


def _size(h: int, w: int, factor: int | None) -> str:
    """``"WxH latent px (W·f x H·f px)"``; the pixel size only where the host reports the factor."""
    return f"{w}x{h} latent px" + (f" ({w * factor}x{h * factor} px)" if factor else "")


def latent_factor(guider) -> int | None:
    """Image px per latent px: ``latent_format.spacial_downscale_ratio`` (v0.33.0; absent on v0.3.64)."""
    ratio = getattr(guider.model_patcher.get_model_object("latent_format"), "spacial_downscale_ratio", None)
    return int(ratio) if isinstance(ratio, (int, float)) else None


def check_sampling_inputs(x: torch.Tensor, p: int, guider, factor: int | None, denoise_mask) -> None:
    """Stack size, per-level prompt count and masks, each error naming the input to fix."""
    if x.is_nested or x.ndim != 4:
        raise ValueError(f"{SAMPLER_NODE}: latent_image must be an image latent (N, C, H, W), got {tuple(x.shape)}")
    n, _, h, w = x.shape
    if n > 1 and (h % (2 * p) or w % (2 * p)):
        raise ValueError(f"{SAMPLER_NODE}: latent_image is {_size(h, w, factor)}; with zoom_factor={p} width and "
                         f"height must be multiples of 2·zoom_factor = {2 * p} latent px"
                         + (f" ({2 * p * factor} px)" if factor else ""))
    for name, count in prompt_counts(guider).items():
        if count != n:
            raise ValueError(f"{SAMPLER_NODE}: the {name} conditioning has {count} zoom prompts but latent_image has "
                             f"batch {n} (zoom levels); set the EmptyLatentImage batch_size to {count} "
                             f"or give one prompt line per level")
    if denoise_mask is not None:
        raise ValueError(f"{SAMPLER_NODE}: latent_image has a noise_mask; zoom stacks are always denoised whole, "
                         f"remove the SetLatentNoiseMask")


def photo_zoom(guider, photo: dict | None, x: torch.Tensor, factor: int | None, settings: dict) -> PhotoZoom | None:
    """The photo LATENT (VAEEncode output) in the model's sampling space, as core's PhotoZoom.

    KSAMPLER's x and the model's x0 live in the processed latent space: CFGGuider.inner_sample
    converts the latent with ``inner_model.process_latent_in`` (v0.3.64 and v0.33.0). The photo
    goes through the same method of the guider's model (``guider.model_patcher.model``), which
    also covers models that override it rather than their ``latent_format``.
    """
    if photo is None:
        return None
    samples, level_shape = photo["samples"], tuple(x.shape[1:])
    if samples.ndim != 4 or samples.shape[0] != 1 or tuple(samples.shape[1:]) != tuple(level_shape):
        c, h, w = level_shape
        raise ValueError(f"{SAMPLER_NODE}: photo must be one VAE-encoded image of the zoom level size "
                         f"{_size(h, w, factor)}, {c} channels, got a latent of shape {tuple(samples.shape)}; "
                         f"scale the photo to the EmptyLatentImage width and height before VAEEncode")
    processed = guider.model_patcher.model.process_latent_in(samples.to(device=x.device, dtype=torch.float32))
    return PhotoZoom(processed[0].to(x.dtype), **settings)


def zoom_stack_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, *, p: int, eta: float,
                       s_noise: float, photo: dict | None = None, photo_settings: dict | None = None):
    """k-diffusion sampler form of core's ``sample_zoom_stack`` for ``comfy.samplers.KSAMPLER``."""
    extra_args = {} if extra_args is None else extra_args
    guider = _guider(model)
    factor = latent_factor(guider)
    check_sampling_inputs(x, p, guider, factor, extra_args.get("denoise_mask"))
    guidance = photo_zoom(guider, photo, x, factor, photo_settings or {})

    def denoise(x_t, sigma, **kwargs):
        throw_if_interrupted()
        return model(x_t, sigma, **kwargs)

    try:
        return sample_zoom_stack(denoise, x, sigmas, extra_args, callback, disable, p=p, eta=eta, s_noise=s_noise,
                                 photo_guidance=guidance)
    except VistaInputError as e:
        raise ValueError(f"{SAMPLER_NODE}: {e}") from e
