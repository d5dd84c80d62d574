"""Latent-fusion MultiDiffusion sampler: every window takes its own step, then the latents are fused.

This is the papers' literal formulation (MultiDiffusion; GVCF §"Correcting Variance of
Fused Patches with SDE Samplers"; DESIGN.md, "Two ways of fusing windows"). Each step
``sigma -> sigma_next`` (k-diffusion sigma space, ``x = x0 + sigma * eps``):

0. optional canvas-level guidance work (:class:`Guidance`: SyncDiffusion's anchor, MSD's low-resolution
   levels), once, before any window moves;
1. crop the windows of the canvas, optionally move them by the guidance gradient, then denoise them in
   batches: ``d_i = D(x_i, sigma)``;
3. each window steps on its own: mean ``mu_i = d_i + (sigma_down / sigma)(x_i - d_i)`` and
   ``x_i' = mu_i + sigma_up * s_noise * eps_i`` with independent per-window noise
   (ancestral step, :func:`get_ancestral_step`; ``eta = 0`` is the deterministic DDIM/euler step).
   Flow-matching models (SD3, Flux: ``x = (1 - sigma) x0 + sigma eps``) take ComfyUI's
   ``sample_euler_ancestral_RF`` step instead (:func:`~core.sampling.flow_matching.rf_step`):
   ``mu_i = (1 - sigma_next)/(1 - sigma_down) * (d_i + (sigma_down / sigma)(x_i - d_i))`` and noise
   ``renoise * s_noise * noise_scale``;
4. fuse the ``x_i'`` by weighted average (GVCF eq. 8), or by Variance-Corrected Fusion
   (GVCF eq. 14) when the step is stochastic, so the fused noise keeps the step's noise variance
   (``sigma_up^2``, or ``renoise^2`` for flow models; derivation in :func:`~core.fusion.fuse.finish_variance_corrected`).

With ``eta = 0`` this equals prediction fusion (:func:`~core.canvas.multidiffusion.multidiffusion_predict`
fed to euler): the step is linear in the prediction.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from tqdm.auto import trange

from ..checks import check, check_shape
from ..sampling.flow_matching import ancestral_step
from .fuse import accumulate_fusion, check_on_canvas, finish_average, finish_variance_corrected, fusion_sums
from ..canvas.multidiffusion import chunks
from ..sampling.noise_streams import step_generator
from ..canvas.windows import Window, crop_windows, total_weight

__all__ = [
    "Guidance",
    "StepContext",
    "StepSetup",
    "LatentFusionOptions",
    "get_ancestral_step",
    "ancestral_mean",
    "window_noise",
    "denoise_windows",
    "latent_fusion_step",
    "sample_latent_fusion",
]

@dataclass(frozen=True)
class StepContext:
    """What a :class:`Guidance` knows about the step being taken.

    Attributes:
        sigma, sigma_next: the step ``sigma -> sigma_next`` (0-d tensors).
        step, n_steps: 0-based step index and the number of steps of the run.
        opts: the sampler's :class:`LatentFusionOptions` (windows, weights, batch size, eta).
    """

    sigma: torch.Tensor
    sigma_next: torch.Tensor
    step: int
    n_steps: int
    opts: "LatentFusionOptions"


class Guidance(Protocol):
    """Gradient guidance of the window latents before their own step (SyncDiffusion Alg. 1, MSD Alg. 1).

    ``begin_step`` runs once per step on the whole canvas, before any window moves (SyncDiffusion: the
    anchor window's decoded prediction; MSD: the low-resolution levels' step), and returns that step's
    state, or ``None`` when the step is not guided (then the step is exactly the unguided one).
    ``guide`` moves one window batch ``(n·B, C, h, w)`` (window-major) and returns the moved latents,
    detached; it runs once per batch, before the model call that takes the step.
    """

    def begin_step(self, x: torch.Tensor, ctx: StepContext) -> object | None: ...

    def guide(self, x_w: torch.Tensor, chunk: Sequence[Window], ctx: StepContext, state: object) -> torch.Tensor: ...


StepSetup = Callable[[int, int, dict], tuple[dict, int]]
"""``step_setup(i, n_steps, extra_args) -> (extra_args, batch_size)``: per-step model arguments.

Called once at the start of step ``i`` of ``n_steps``; returns the ``extra_args`` for that
step's model calls and its window batch size. E.g. MAD: while merged attention is active the
layout travels in the step's ``model_options`` and all windows go in one call; afterwards the
user's batch size applies again.
"""


@dataclass(frozen=True)
class LatentFusionOptions:
    """Everything one latent-fusion step needs besides the model and the canvas.

    Attributes:
        windows: window plan covering the canvas (latent px), ``N`` windows.
        weights: ``(N, 1, h, w)`` fusion weights.
        batch_size: windows per model call.
        eta: ancestral noise amount; 0 = deterministic DDIM/euler step, 1 = DDPM-like.
        s_noise: noise scale of the stochastic part.
        variance_corrected: fuse stochastic steps with GVCF eq. 14 instead of the average.
        guidance: gradient guidance of the windows, see :class:`Guidance`.
        before_batch: called before each window batch (interrupt checks, progress).
        flow_matching: the model is a flow-matching one (``x = (1 - sigma) x0 + sigma eps``): take the
            rectified-flow ancestral step (:func:`~core.sampling.flow_matching.rf_step`), else k-diffusion's.
        noise_scale: the model's training noise scale; multiplies ``s_noise`` (ComfyUI v0.33.0's
            ``model_sampling.noise_scale``; 1 for every SD/SD3/Flux model).
    """

    windows: tuple[Window, ...]
    weights: torch.Tensor
    batch_size: int = 4
    eta: float = 0.0
    s_noise: float = 1.0
    variance_corrected: bool = True
    guidance: Guidance | None = None
    before_batch: Callable[[], None] | None = None
    flow_matching: bool = False
    noise_scale: float = 1.0


def get_ancestral_step(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """``(sigma_down, sigma_up)`` of an ancestral step from ``sigma_from`` to ``sigma_to`` (k-diffusion).

    ``sigma_down^2 + sigma_up^2 = sigma_to^2``; ``eta = 0`` gives ``(sigma_to, 0)`` (DDIM),
    ``eta = 1`` the DDPM posterior noise.

    >>> get_ancestral_step(2.0, 1.0, 0.0)
    (1.0, 0.0)
    >>> [round(s, 4) for s in get_ancestral_step(2.0, 1.0, 1.0)]
    [0.5, 0.866]
    """
    check(eta >= 0, f"eta must be >= 0, got {eta}")
    if not eta:
        return float(sigma_to), 0.0
    sigma_up = min(sigma_to, eta * math.sqrt(max(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2, 0.0)))
    return math.sqrt(max(sigma_to**2 - sigma_up**2, 0.0)), float(sigma_up)


def ancestral_mean(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_down: float) -> torch.Tensor:
    """Deterministic part of a step: ``mu = d + (sigma_down / sigma)(x - d)`` (euler/DDIM in sigma space).

    Shape: ``x, denoised (..., C, h, w)`` → same.

    >>> ancestral_mean(torch.tensor([3.0]), torch.tensor([1.0]), 2.0, 1.0).item()
    2.0
    """
    return denoised + (sigma_down / sigma) * (x - denoised)


def window_noise(generator: torch.Generator, like: torch.Tensor, n: int) -> torch.Tensor:
    """Independent standard normal noise for ``n`` windows, drawn window by window, window-major.

    Drawing per window (all ``B`` samples of window 0, then window 1, …) makes the noise of
    a window independent of how the plan is split into batches; the result is in the
    window-major batch order of :func:`~core.canvas.windows.crop_windows`.

    Shape: ``like (n·B, C, h, w)`` → same.

    >>> window_noise(torch.Generator().manual_seed(0), torch.zeros(6, 4, 2, 2), 3).shape
    torch.Size([6, 4, 2, 2])
    """
    check(n >= 1 and like.shape[0] % n == 0, f"like batch {like.shape[0]} must be a multiple of n={n} windows")
    b = like.shape[0] // n
    draws = [torch.randn(b, *like.shape[1:], generator=generator, dtype=like.dtype, device=like.device) for _ in range(n)]
    return torch.cat(draws)  # n draws of (b, ...) -> (n·b, ...): window-major


def denoise_windows(
    model, x: torch.Tensor, sigma: torch.Tensor, chunk: Sequence[Window], extra_args: dict,
    guide: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop one window batch, move it by the guidance (if any), denoise it.

    Args:
        model: ``model(x_windows, sigma * ones(n·B), **extra_args) -> denoised``.
        x: noisy canvas ``(B, C, H, W)``.
        sigma: 0-d current sigma.
        chunk: the ``n`` windows of this batch (latent px).
        extra_args: passed unopened to ``model``.
        guide: ``guide(x_w) -> x_w``, the guided window latents (see :class:`Guidance`).

    Returns:
        ``(x_w, denoised_w)``, each ``(n·B, C, h, w)`` window-major.
    """
    x_w = crop_windows(x, chunk)
    if guide is not None:
        x_w = guide(x_w)
    return x_w, model(x_w, sigma * x_w.new_ones(x_w.shape[0]), **extra_args)


def latent_fusion_step(
    model,
    x: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    extra_args: dict,
    opts: LatentFusionOptions,
    generator: torch.Generator,
    ctx: StepContext | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One latent-fusion step ``sigma -> sigma_next`` of the whole canvas (GVCF eq. 8 / eq. 14).

    With ``opts.guidance`` and a step context, the guidance's canvas work runs first and every
    window batch is moved by it before its model call (SyncDiffusion Alg. 1, MSD Alg. 1).

    Returns:
        ``(x_next, denoised)``: the fused window latents at ``sigma_next`` and the fused
        denoised prediction, both ``(B, C, H, W)`` in ``x``'s dtype.
    """
    step = ancestral_step(float(sigma), float(sigma_next), opts.eta, opts.flow_matching)
    noise_std = step.noise * opts.s_noise * opts.noise_scale
    vcf = opts.variance_corrected and noise_std > 0
    B, C, H, W = x.shape
    state = None if opts.guidance is None or ctx is None else opts.guidance.begin_step(x, ctx)
    steps = fusion_sums(B, C, H, W, with_mean=vcf, dtype=x.dtype, device=x.device)
    dens = fusion_sums(B, C, H, W, dtype=x.dtype, device=x.device)
    for start, chunk in zip(range(0, len(opts.windows), opts.batch_size), chunks(opts.windows, opts.batch_size)):
        if opts.before_batch is not None:
            opts.before_batch()
        weights = opts.weights[start : start + len(chunk)]
        guide = None if state is None else (lambda x_w, chunk=chunk: opts.guidance.guide(x_w, chunk, ctx, state))
        x_w, d_w = denoise_windows(model, x, sigma, chunk, extra_args, guide)
        mu_w = step.mean(x_w, d_w)
        x_next_w = mu_w
        if noise_std > 0:  # each window draws its own noise (ancestral step)
            x_next_w = mu_w + window_noise(generator, mu_w, len(chunk)) * noise_std
        accumulate_fusion(steps, x_next_w, chunk, weights, mu_w if vcf else None)
        accumulate_fusion(dens, d_w, chunk, weights)
    x_next = finish_variance_corrected(steps) if vcf else finish_average(steps)
    return x_next.to(x.dtype), finish_average(dens).to(x.dtype)


def _check_sampler_inputs(x: torch.Tensor, sigmas: torch.Tensor, opts: LatentFusionOptions) -> None:
    """Preconditions of :func:`sample_latent_fusion`, one line each."""
    check_shape(x, ["B", "C", "H", "W"])
    check(sigmas.ndim == 1 and len(sigmas) >= 1, f"sigmas must be a 1-D schedule, got shape {tuple(sigmas.shape)}")
    positive = bool((sigmas[:-1] > 0).all()) and bool((sigmas >= 0).all())
    check(positive, f"sigmas must be > 0 except the last (>= 0), got {sigmas.tolist()}")
    n, maps = len(opts.windows), opts.weights.shape[0]
    check(n >= 1 and maps == n, f"{n} windows but {maps} weight maps; pass one weight map per window")
    check(opts.batch_size >= 1, f"batch_size must be >= 1 window, got {opts.batch_size}")
    check(opts.eta >= 0, f"eta must be >= 0, got {opts.eta}")
    check(opts.s_noise >= 0, f"s_noise must be >= 0, got {opts.s_noise}")
    check(opts.noise_scale >= 0, f"noise_scale must be >= 0, got {opts.noise_scale}")
    H, W = x.shape[-2:]
    check_on_canvas(opts.windows, H, W)
    holes = int((total_weight(opts.windows, opts.weights, H, W) <= 0).sum())
    check(holes == 0, f"windows must cover every canvas pixel with positive weight; {holes} pixels are uncovered (use plan_windows)")


@torch.no_grad()
def sample_latent_fusion(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    *,
    windows: Sequence[Window],
    weights: torch.Tensor,
    batch_size: int = 4,
    eta: float = 0.0,
    variance_corrected: bool = True,
    s_noise: float = 1.0,
    guidance: Guidance | None = None,
    before_batch: Callable[[], None] | None = None,
    step_setup: StepSetup | None = None,
    flow_matching: bool = False,
    noise_scale: float = 1.0,
) -> torch.Tensor:
    """Latent-fusion MultiDiffusion sampler, k-diffusion form (GVCF eq. 8, eq. 14).

    Args:
        model: ``model(x_windows (n·B, C, h, w), sigma * ones(n·B), **extra_args) -> denoised x0``.
        x: noisy canvas latent at ``sigmas[0]`` (already noise-scaled).
        sigmas: ``(S + 1,)`` decreasing schedule; the last may be 0 (then the fused denoised is returned).
        extra_args: passed to ``model``; the window step noise comes from
            :func:`~core.sampling.noise_streams.step_generator` of ``extra_args["seed"]`` (default 0), a stream
            independent of the initial noise that a NOISE object drew from the same seed.
        callback: gets ``{x, i, sigma, sigma_hat, denoised}`` once per step (fused canvas tensors).
        disable: disable the tqdm progress bar.
        windows: window plan covering the canvas (latent px; :func:`~core.canvas.windows.plan_windows`).
        weights: ``(N, 1, h, w)`` fusion weights (:func:`~core.canvas.windows.window_weights`).
        batch_size: windows per model call (memory budget; does not change the result).
        eta: 0 = deterministic DDIM/euler steps; > 0 ancestral steps (1 = DDPM-like).
        variance_corrected: fuse stochastic steps with Variance-Corrected Fusion (GVCF eq. 14).
        s_noise: scale of the per-window noise.
        guidance: gradient guidance of the windows (SyncDiffusion, MSD), see :class:`Guidance`.
        before_batch: called before every window batch (interrupt checks).
        step_setup: per-step model arguments and window batch size, see :data:`StepSetup`.
        flow_matching: the model samples by flow matching (SD3, Flux; ComfyUI's CONST): stochastic steps
            are ComfyUI's ``sample_euler_ancestral_RF`` step (:func:`~core.sampling.flow_matching.rf_step`).
        noise_scale: multiplies ``s_noise`` (ComfyUI v0.33.0 ``model_sampling.noise_scale``; default 1).

    Shape: ``x (B, C, H, W)`` → ``(B, C, H, W)``.

    >>> from vista.core.canvas.windows import plan_windows, window_weights
    >>> wins = plan_windows(4, 8, 4, 4, 2, 2)
    >>> sigmas = torch.tensor([1.0, 0.5, 0.0])
    >>> model = lambda x, sigma: torch.zeros_like(x)
    >>> out = sample_latent_fusion(model, torch.ones(1, 1, 4, 8), sigmas, disable=True, windows=wins, weights=window_weights(wins))
    >>> out.abs().max().item()
    0.0
    """
    extra_args = {} if extra_args is None else extra_args
    opts = LatentFusionOptions(tuple(windows), weights, batch_size, eta, s_noise, variance_corrected, guidance, before_batch,
                               flow_matching, noise_scale)
    _check_sampler_inputs(x, sigmas, opts)
    generator = step_generator(extra_args.get("seed"), x.device)
    n_steps = len(sigmas) - 1
    for i in trange(n_steps, disable=disable):
        step_args, step_opts = extra_args, opts
        if step_setup is not None:
            step_args, step_batch = step_setup(i, n_steps, extra_args)
            check(step_batch >= 1, f"step_setup gave batch_size {step_batch} at step {i}; it must be >= 1 window")
            step_opts = replace(opts, batch_size=step_batch)
        ctx = StepContext(sigmas[i], sigmas[i + 1], i, n_steps, step_opts)
        x_next, denoised = latent_fusion_step(model, x, sigmas[i], sigmas[i + 1], step_args, step_opts, generator, ctx)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised if sigmas[i + 1] == 0 else x_next
    return x
