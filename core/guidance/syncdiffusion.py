"""SyncDiffusion: synchronise the windows of a joint diffusion by a perceptual-loss gradient.

Lee et al. 2023, "SyncDiffusion: Coherent Montage via Synchronized Joint Diffusions", Alg. 1 and
eq. 14. At a guided step every window ``i`` except the anchor moves by

    x_t^(i) ← x_t^(i) − w_t ∇_{x_t^(i)} L( D(φ(x_t^(i), t)), D(φ(x_t^(0), t)) )          (eq. 14)

where ``φ`` is the model's clean prediction (DDIM's "foreseen denoised" observation), ``D`` the
decoder, ``L`` LPIPS and the anchor term is detached; then every window takes its step from its
moved latent and the windows are fused (MultiDiffusion). §5: the anchor is the centre window,
``w = 20`` decayed by 0.95 per step, every step of 50 guided (``f = 50``; supp. §6.6 also guides
``f = 10`` or 5 uniformly spread steps). As in the official code (``lpips.LPIPS(net='vgg')``, the step
``latent − w·0.95^i·∇`` on the DDIM latent when ``(i + 1) % sync_freq == 0``): the step is taken on the
DDPM latent ``x_t`` whatever the sampler's latent is (:func:`~core.guidance.gradient.paper_space_step`),
and with ``f < n`` the guided steps end at the last one (10 of 50: steps 4, 9, …, 49, weights
``w·0.95^i``; :func:`~core.sampling.schedules.uniform_steps`).

This module is a :class:`~core.fusion.latent_fusion.Guidance` for :func:`~core.fusion.latent_fusion.sample_latent_fusion`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..checks import check, check_range
from .gradient import Decode, Denoise, ddpm_scale, paper_space_step
from ..fusion.latent_fusion import StepContext
from ..sampling.schedules import decayed_weight, uniform_steps
from ..canvas.windows import Window, crop_windows

__all__ = ["Distance", "SyncState", "SyncDiffusion", "anchor_window"]

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``distance(images (K, 3, H, W), anchors (K, 3, H, W)) -> (K,)``, e.g. LPIPS; differentiable in ``images``."""


def anchor_window(windows: Sequence[Window], canvas_hw: tuple[int, int]) -> int:
    """Index of the centre window (SyncDiffusion §5): the window whose centre is nearest the canvas centre.

    Convention: distances in latent px between centres, ties to the lower index; a wrapped window's
    centre is taken unwrapped (it lies past the right edge).

    >>> from vista.core.canvas.windows import plan_windows
    >>> anchor_window(plan_windows(64, 384, 64, 64, 16, 16), (64, 384))
    10
    """
    check(len(windows) > 0, "windows must not be empty")
    cy, cx = (canvas_hw[0] - 1) / 2, (canvas_hw[1] - 1) / 2
    dist = [(w.y + (w.h - 1) / 2 - cy) ** 2 + (w.x + (w.w - 1) / 2 - cx) ** 2 for w in windows]
    return min(range(len(windows)), key=lambda i: (dist[i], i))


@dataclass(frozen=True)
class SyncState:
    """One guided step's anchor: its decoded prediction ``(B, 3, H, W)`` (detached) and the step weight ``w_t``."""

    anchor_image: torch.Tensor
    weight: float


@dataclass(frozen=True)
class SyncDiffusion:
    """SyncDiffusion guidance (Alg. 1, eq. 14) for the latent-fusion sampler.

    Attributes:
        denoise: the model's clean prediction of a window batch, differentiable (:data:`~core.guidance.gradient.Denoise`).
        decode: latents → RGB in [-1, 1], differentiable (:data:`~core.guidance.gradient.Decode`).
        distance: perceptual distance, e.g. LPIPS (:data:`Distance`).
        anchor: the anchor's window index in the plan (:func:`anchor_window`).
        weight: initial gradient weight ``w`` (paper 20; 0 = MultiDiffusion exactly).
        decay: per-step decay of the weight (paper 0.95); ``w_t = w · decay^t`` with ``t`` counting
            every step of the run from 0 (:func:`~core.sampling.schedules.decayed_weight`).
        guided_steps: how many steps are guided, spread uniformly and ending at the last step (``f``; paper
            50 of 50; 10 of 50 = steps 4, 9, …, 49 as the official code's ``sync_freq = 5``).
    """

    denoise: Denoise
    decode: Decode
    distance: Distance
    anchor: int
    weight: float = 20.0
    decay: float = 0.95
    guided_steps: int = 50

    def __post_init__(self):
        check(self.weight >= 0, f"weight must be >= 0, got {self.weight}")
        check_range("decay", self.decay, 0.0, 1.0)
        check(self.guided_steps >= 0, f"guided_steps must be >= 0, got {self.guided_steps}")

    def begin_step(self, x: torch.Tensor, ctx: StepContext) -> SyncState | None:
        """Decode the anchor window's prediction (no gradient), or ``None`` on an unguided step."""
        if self.weight == 0 or ctx.step not in uniform_steps(self.guided_steps, ctx.n_steps):
            return None
        check(0 <= self.anchor < len(ctx.opts.windows), f"anchor {self.anchor} is not a window of the {len(ctx.opts.windows)}-window plan")
        x_a = crop_windows(x, [ctx.opts.windows[self.anchor]])
        with torch.no_grad():
            image = self.decode(self.denoise(x_a, ctx.sigma * x_a.new_ones(x_a.shape[0])))
        return SyncState(image.detach(), decayed_weight(self.weight, self.decay, ctx.step))

    def guide(self, x_w: torch.Tensor, chunk: Sequence[Window], ctx: StepContext, state: SyncState) -> torch.Tensor:
        """Move every non-anchor window of the batch by eq. 14 (one backward for the whole batch).

        The step is the paper's, on the DDPM latent ``x_t`` (:func:`~core.guidance.gradient.paper_space_step`):
        in the sampler's latent the weight is ``w_t · s²``, ``s² = 1 + σ²`` (eps, v) or ``(1 − σ)² + σ²``
        (flow matching, ``ctx.opts.flow_matching``).

        Shape: ``x_w (n·B, C, h, w)`` window-major → same.
        """
        n = len(chunk)
        anchor = ctx.opts.windows[self.anchor]
        rows = torch.tensor([0.0 if win == anchor else state.weight for win in chunk], dtype=torch.float64)
        rows = rows.repeat_interleave(x_w.shape[0] // n)
        if not bool((rows > 0).any()):
            return x_w
        anchors = state.anchor_image.repeat(n, 1, 1, 1)  # window-major: row n·B + b meets sample b's anchor
        sigma = ctx.sigma * x_w.new_ones(x_w.shape[0])

        def loss(x: torch.Tensor) -> torch.Tensor:
            return self.distance(self.decode(self.denoise(x, sigma)), anchors.to(x.dtype))

        return paper_space_step(x_w, loss, rows, ddpm_scale(float(ctx.sigma), ctx.opts.flow_matching))
