"""Multi-Scale Diffusion (MSD): a low-resolution MultiDiffusion layer guides the high-resolution windows.

msd paper (Multi-Scale Diffusion), §3.2 and Alg. 1. One denoising step of a canvas ``z_t^S``:

1. downsample it ``S − 1`` times by 2 (``ds``: bilinear), ``z_t^{s−1} = ds(z_t^s)``;
2. take a plain MultiDiffusion step at the lowest level: ``z_{t−1}^1 = MD(z_t^1)`` (eq. 6);
3. for ``s = 2 … S``: move every window ``x_{t,i}^s = F_i(z_t^s)`` by

       x̂_{t,i}^s = x_{t,i}^s − ω ∇ ‖ds(Φ(x_{t,i}^s)) − F_i'(z_{t−1}^{s−1})‖²          (eq. 9)

   (``Φ`` = one denoise + step, ``F_i'`` the matching crop of the level below, the norm the mean
   squared error, §3.2), then take the MultiDiffusion step from the moved windows (eq. 6). The latents
   of eq. 9 are the paper's DDPM latents ``x_t`` and ``z_{t−1}``; the sampler's are ``s(σ)`` times them
   (:func:`~core.guidance.gradient.ddpm_scale`), so :meth:`MultiScale.move` maps both sides first.

§4.1: ω = 10 scaled by the cosine decay ``(1 + cos(π (T − t) / T)) / 2``, and guidance only while
``t`` runs from ``T`` to ``τ = 0.7 T`` — the first 30 % of the steps. Expansion works in both
directions (a 2-D canvas): every level is windowed in both axes.

Convention (noise level of the low-resolution levels): ``ds`` halves the size by averaging 2×2
pixels, which also shrinks the noise of ``z_t`` to half its standard deviation while the model is
told the level is at ``σ_t``. The paper does exactly this (``faithful``, the default). The
``variance_preserving`` variant adds independent noise of variance ``σ_t² (1 − 1/4)`` after each
downsampling, so every level is at the noise level the model is told.

The low-resolution levels only provide targets: they take deterministic (DDIM) steps, and ``Φ``
in eq. 9 is the window's deterministic step to ``σ_{t−1}`` (its mean when the sampler is stochastic).
This module is a :class:`~core.fusion.latent_fusion.Guidance` for :func:`~core.fusion.latent_fusion.sample_latent_fusion`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from kornia.geometry.transform import rescale

from ..checks import check, check_range, check_shape
from .gradient import Denoise, ddpm_scale, paper_space_step
from ..fusion.latent_fusion import StepContext, ancestral_mean, latent_fusion_step
from ..sampling.schedules import cosine_weight, steps_in_fraction
from ..canvas.windows import Window, crop_windows, plan_windows, scale_window, window_weights

__all__ = ["downsample", "LevelPlan", "level_plans", "MultiScaleState", "MultiScale"]


def downsample(z: torch.Tensor) -> torch.Tensor:
    """``ds``: bilinear downsampling by 2 (kornia ``rescale``, no antialiasing = a 2×2 average on even sizes).

    Shape: ``(B, C, H, W)`` → ``(B, C, H/2, W/2)``; ``H`` and ``W`` must be even.

    >>> downsample(torch.arange(16.).view(1, 1, 4, 4))[0, 0].tolist()
    [[2.5, 4.5], [10.5, 12.5]]
    """
    check_shape(z, ["B", "C", "H", "W"], "z")
    check(z.shape[-2] % 2 == 0 and z.shape[-1] % 2 == 0, f"z height and width must be even to halve them, got {tuple(z.shape[-2:])}")
    return rescale(z, 0.5, interpolation="bilinear", align_corners=False, antialias=False)


@dataclass(frozen=True)
class LevelPlan:
    """The windows of one resolution level: the plan, its float32 fusion weights, and the canvas size."""

    windows: tuple[Window, ...]
    weights: torch.Tensor
    canvas_hw: tuple[int, int]


def level_plans(canvas_hw: tuple[int, int], window_hw: tuple[int, int], stride_hw: tuple[int, int], levels: int,
                wrap_x: bool = False, weight_mode: str = "uniform", device=None) -> tuple[LevelPlan, ...]:
    """Window plans of the ``levels`` resolution levels, level 0 = the full canvas, level k = canvas / 2^k.

    Every level uses the same window size and stride (the model's native window); offsets of the
    levels above the lowest are even, so each window's ``F_i'`` crop one level down lies on whole pixels.

    Raises if the lowest level is smaller than a window, or the canvas does not halve ``levels − 1`` times.

    >>> [p.canvas_hw for p in level_plans((64, 256), (32, 32), (16, 16), 2)]
    [(64, 256), (32, 128)]
    """
    check(levels >= 1, f"levels must be >= 1, got {levels}")
    H, W = canvas_hw
    check(H % 2 ** (levels - 1) == 0 and W % 2 ** (levels - 1) == 0,
          f"the canvas {H}x{W} latent px must be divisible by 2^(levels-1) = {2 ** (levels - 1)} to halve it {levels - 1} times")
    plans = []
    for k in range(levels):
        h, w = H >> k, W >> k
        check(h >= window_hw[0] and w >= window_hw[1],
              f"level {k} of {levels} is {h}x{w} latent px, smaller than the {window_hw[0]}x{window_hw[1]} window; "
              f"use fewer levels or a larger canvas")
        align = 2 if k < levels - 1 else 1
        windows = plan_windows(h, w, *window_hw, *stride_hw, wrap_x=wrap_x, align=align)
        plans.append(LevelPlan(windows, window_weights(windows, weight_mode, device=device), (h, w)))
    return tuple(plans)


@dataclass(frozen=True)
class MultiScaleState:
    """One guided step's target: the level below after its step, ``z_{t−1}^{s−1}``, and the weight ``ω_t``."""

    target: torch.Tensor
    weight: float


def _half(win: Window, below_hw: tuple[int, int]) -> Window:
    """``F_i'``: the window's footprint on the level below (half the offsets and size)."""
    return scale_window(win, 2, *below_hw)


@dataclass(frozen=True)
class MultiScale:
    """Multi-Scale Diffusion guidance (msd Alg. 1, eq. 9) for the latent-fusion sampler.

    Attributes:
        denoise: the model's clean prediction of a window batch, differentiable (:data:`~core.guidance.gradient.Denoise`).
        plans: the levels' window plans, level 0 = the canvas being sampled (:func:`level_plans`).
        weight: ω (paper 10; 0 = MultiDiffusion exactly), scaled by the cosine decay.
        fraction: the first fraction of the steps that is guided (paper: until τ = 0.7 T, i.e. 0.3).
        variance_preserving: add noise after each downsampling so every level is at the noise level
            the model is told (see the module docstring); ``False`` is the paper.
        batch_size: windows per model call at the low-resolution levels.
        generator: random stream of the variance-preserving noise.
    """

    denoise: Denoise
    plans: tuple[LevelPlan, ...]
    weight: float = 10.0
    fraction: float = 0.3
    variance_preserving: bool = False
    batch_size: int = 4
    generator: torch.Generator | None = None

    def __post_init__(self):
        check(len(self.plans) >= 2, f"MSD needs at least 2 resolution levels, got {len(self.plans)}")
        check(self.weight >= 0, f"weight must be >= 0, got {self.weight}")
        check_range("fraction", self.fraction, 0.0, 1.0)
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")

    def _pyramid(self, x: torch.Tensor, sigma: float) -> list[torch.Tensor]:
        """``[z_t^S, …, z_t^1]``: the canvas and its downsamplings (variance-preserving if asked)."""
        levels = [x]
        for _ in self.plans[1:]:
            z = downsample(levels[-1])
            if self.variance_preserving:
                noise = torch.randn(z.shape, generator=self.generator, dtype=z.dtype, device="cpu").to(z.device)
                z = z + noise * (sigma * 0.75**0.5)
            levels.append(z)
        return levels

    def _level_step(self, z: torch.Tensor, plan: LevelPlan, ctx: StepContext, guidance=None) -> torch.Tensor:
        """A deterministic MultiDiffusion step of one low-resolution level (eq. 6), optionally guided (eq. 9)."""
        opts = replace(ctx.opts, windows=plan.windows, weights=plan.weights, batch_size=self.batch_size, eta=0.0,
                       guidance=guidance)  # keeps before_batch and the model's noise form (flow_matching)
        level_ctx = replace(ctx, opts=opts)
        with torch.no_grad():
            x_next, _ = latent_fusion_step(lambda x_w, s: self.denoise(x_w, s), z, ctx.sigma, ctx.sigma_next, {},
                                           opts, None, level_ctx)
        return x_next

    def begin_step(self, x: torch.Tensor, ctx: StepContext) -> MultiScaleState | None:
        """Step the low-resolution levels, lowest first (Alg. 1 lines 2–9); ``None`` on an unguided step."""
        if self.weight == 0 or ctx.step >= steps_in_fraction(self.fraction, ctx.n_steps):
            return None
        weight = cosine_weight(self.weight, ctx.step, ctx.n_steps)
        pyramid = self._pyramid(x, float(ctx.sigma))
        target = self._level_step(pyramid[-1], self.plans[-1], ctx)
        for level in range(len(self.plans) - 2, 0, -1):
            target = self._level_step(pyramid[level], self.plans[level], ctx, _Target(self, MultiScaleState(target, weight), level))
        return MultiScaleState(target, weight)

    def guide(self, x_w: torch.Tensor, chunk: Sequence[Window], ctx: StepContext, state: MultiScaleState) -> torch.Tensor:
        """Move a full-resolution window batch toward the level below (eq. 9)."""
        return self.move(x_w, chunk, ctx, state, level=0)

    def move(self, x_w: torch.Tensor, chunk: Sequence[Window], ctx: StepContext, state: MultiScaleState, level: int) -> torch.Tensor:
        """Eq. 9 for the windows ``chunk`` of ``level``: ``x_t − ω_t ∇_{x_t} mean((ds(Φ(x_t)) − F'(z_{t−1}^{below}))²)``.

        Taken in the paper's space on both sides: the loss compares DDPM latents at ``t − 1`` (the one-step
        result and the target, each divided by ``s(σ_{t−1})``) and the step moves the DDPM latent ``x_t``
        (:func:`~core.guidance.gradient.paper_space_step`, weight ``ω_t · s(σ_t)²`` in the sampler's latent).
        Both in the sampler's latent instead would make the step ``s(σ_{t−1})²/s(σ_t)² = ᾱ_t/ᾱ_{t−1}`` of the paper's.

        Shape: ``x_w (n·B, C, h, w)`` window-major → same.
        """
        below_hw = self.plans[level + 1].canvas_hw
        sigma, sigma_next = float(ctx.sigma), float(ctx.sigma_next)
        scale_next = ddpm_scale(sigma_next, ctx.opts.flow_matching)
        targets = crop_windows(state.target, [_half(win, below_hw) for win in chunk]).to(x_w.dtype) / scale_next
        sigmas = ctx.sigma * x_w.new_ones(x_w.shape[0])

        def loss(x: torch.Tensor) -> torch.Tensor:
            phi = ancestral_mean(x, self.denoise(x, sigmas), sigma, sigma_next)
            return (downsample(phi) / scale_next - targets).square().flatten(1).mean(1)

        return paper_space_step(x_w, loss, state.weight, ddpm_scale(sigma, ctx.opts.flow_matching))


@dataclass(frozen=True)
class _Target:
    """The guidance of an intermediate level: a fixed target (the level below, already stepped)."""

    msd: MultiScale
    state: MultiScaleState
    level: int

    def begin_step(self, x: torch.Tensor, ctx: StepContext) -> MultiScaleState:
        return self.state

    def guide(self, x_w: torch.Tensor, chunk: Sequence[Window], ctx: StepContext, state: MultiScaleState) -> torch.Tensor:
        return self.msd.move(x_w, chunk, ctx, state, self.level)
