"""Gradient guidance of window latents: ``x ← x − w ∇_x L(x)``, taken outside inference mode.

SyncDiffusion (Lee et al. 2023, eq. 14) and Multi-Scale Diffusion (msd paper, eq. 9) both move each
window's noisy latent by the gradient of a loss on its one-step prediction before the window takes
its own step. Both papers (and the official SyncDiffusion code) take that step on the DDPM latent
``x_t``; ComfyUI's samplers carry another latent ``x_σ = s(σ) · x_t``. :func:`ddpm_scale` gives ``s``
and :func:`paper_space_step` takes the papers' step from ``x_σ`` (derivation there). Both see the
diffusion model and the decoder only through callables:

* :data:`Denoise` ``denoise(x_w, sigma) -> x0``: the model's (CFG'd) clean prediction of a window
  batch, differentiable w.r.t. ``x_w``;
* :data:`Decode` ``decode(x0) -> image``: latents → RGB in [-1, 1], differentiable.

ComfyUI runs nodes under ``torch.inference_mode()`` and its weights are inference tensors;
:func:`gradient_step` leaves inference mode and enables autograd itself and clones ``x`` out of
an inference tensor. The callables must bring differentiable (non-inference) weights — the node
layer's business.

Batching: a window's prediction depends only on its own latent (the model treats batch rows
independently; the anchor of SyncDiffusion is detached), so the gradient of the SUM of a batch's
per-window losses is every window's own gradient: one backward per window batch.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..checks import check

__all__ = ["Denoise", "Decode", "gradient_step", "ddpm_scale", "paper_space_step"]

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoise(x_w (n·B, C, h, w), sigma (n·B,)) -> x0 (n·B, C, h, w)``, differentiable w.r.t. ``x_w``."""

Decode = Callable[[torch.Tensor], torch.Tensor]
"""``decode(x0 (n·B, C, h, w)) -> images (n·B, 3, h·f, w·f)`` in [-1, 1], differentiable."""


def gradient_step(x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor], weight: float | torch.Tensor) -> torch.Tensor:
    """Guided-diffusion update ``x − weight · ∇_x Σ_k loss(x)_k`` (SyncDiffusion eq. 14, MSD eq. 9).

    Args:
        x: window latents, any shape ``(K, ...)``; may be an inference tensor.
        loss: ``loss(x) -> (K,)`` per-row losses; row ``k`` must depend on ``x[k]`` only, so that
            the gradient of the sum is each row's own gradient.
        weight: the step size, a float or per-row ``(K,)`` (0 leaves a row unchanged).

    Returns:
        The moved latents, detached, in ``x``'s dtype. The graph is freed before returning.

    >>> gradient_step(torch.tensor([[1.0, 2.0]]), lambda x: (x ** 2).sum(1), 0.25).tolist()
    [[0.5, 1.0]]
    """
    w = weight if torch.is_tensor(weight) else torch.tensor(float(weight), dtype=torch.float64)  # cast to grad's dtype below
    check(w.ndim == 0 or tuple(w.shape) == (x.shape[0],), f"weight must be a float or one per row ({x.shape[0]},), got {tuple(w.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        values = loss(leaf)
        check(tuple(values.shape) == (x.shape[0],), f"loss must return one value per row ({x.shape[0]},), got {tuple(values.shape)}")
        (grad,) = torch.autograd.grad(values.sum(), leaf)
    w = w.to(grad.dtype).to(grad.device)  # dtype first: some devices (MPS) have no float64
    w = w.reshape(-1, *[1] * (x.ndim - 1)) if w.ndim else w
    return (x.detach() - (w * grad).to(x.dtype)).detach()


def ddpm_scale(sigma: float, flow_matching: bool = False) -> float:
    """``s(σ)`` with ``x_σ = s · x_t``: the sampler's latent over the papers' DDPM latent (SyncDiffusion eq. 14, MSD eq. 9).

    The papers move the DDPM latent ``x_t = √ᾱ_t x0 + √(1 − ᾱ_t) ε``. ComfyUI's samplers carry:

    * eps and v models (every ``model_sampling`` but CONST; the model's parameterisation changes only
      how its output becomes ``x0``, not the latent): ``x_σ = x0 + σ ε`` with ``σ = √((1 − ᾱ_t)/ᾱ_t)``,
      so ``x_σ = x_t / √ᾱ_t`` and ``s = √(1 + σ²)``;
    * flow-matching models (CONST: SD3, Flux): ``x_σ = (1 − σ) x0 + σ ε``. The unit-variance latent of
      the same form is ``x_t = x_σ / s`` with ``s = √((1 − σ)² + σ²)``: ``x_t = a x0 + b ε``, ``a² + b² = 1``.

    Args:
        sigma: the step's noise level, ``>= 0`` (flow models: normally in ``[0, 1]``).
        flow_matching: the model samples by flow matching.

    >>> ddpm_scale(0.0), round(ddpm_scale(14.6) ** -2, 4), round(ddpm_scale(0.5, flow_matching=True) ** 2, 12)
    (1.0, 0.0047, 0.5)
    """
    check(sigma >= 0, f"sigma must be >= 0, got {sigma}")
    return math.sqrt((1 - sigma) ** 2 + sigma**2) if flow_matching else math.sqrt(1 + sigma**2)


def paper_space_step(x: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor], weight: float | torch.Tensor,
                     scale: float) -> torch.Tensor:
    """The papers' step ``x̂_t = x_t − w ∇_{x_t} L`` taken from the sampler's latent ``x = x_σ = s · x_t``.

    Derivation. ``loss`` is computed from the sampler's latent, ``L̃(x_σ)``; as a function of the papers'
    latent it is ``L(x_t) = L̃(s · x_t)`` (``s = scale`` is fixed within a step, not a function of ``x``).
    Chain rule: ``∇_{x_σ} L̃ = ∇_{x_t} L · dx_t/dx_σ = ∇_{x_t} L / s``, i.e. ``∇_{x_t} L = s ∇_{x_σ} L̃``. The
    papers' update, mapped back to the sampler's latent:

        x̂_σ = s x̂_t = s x_t − s w ∇_{x_t} L = x_σ − w s² ∇_{x_σ} L̃,

    so the step is :func:`gradient_step` with the weight ``w · s²``. The plain ``x_σ − w ∇_{x_σ} L̃`` is,
    mapped to ``x_t``, ``x_t − (w / s²) ∇_{x_t} L``: ``1/s² = ᾱ_t`` times the papers' step for eps and v
    models (0.5 % at SD's first step, σ = 14.6).

    ``loss`` must return the papers' loss values: a loss of clean predictions (SyncDiffusion's LPIPS of
    decoded ``x0``) is the same in both spaces; a loss of noisy latents (MSD's one-step result at
    ``t − 1`` and its target) must map them to the papers' space first (divide by ``s(σ_{t−1})``).

    Args:
        x: window latents ``x_σ``, any shape ``(K, ...)``; may be an inference tensor.
        loss: ``loss(x_σ) -> (K,)`` per-row losses, row ``k`` depending on ``x[k]`` only.
        weight: the papers' step size ``w``, a float or per-row ``(K,)``.
        scale: ``s`` of this step (:func:`ddpm_scale`).

    Returns:
        The moved latents ``x̂_σ``, detached, in ``x``'s dtype.

    >>> x = torch.tensor([[2.0]])  # x_t = 1 at s = 2; L(x_t) = x_t², so x̂_t = 1 − 0.25·2 = 0.5
    >>> paper_space_step(x, lambda x: (x[:, 0] / 2) ** 2, 0.25, 2.0).tolist()
    [[1.0]]
    """
    check(scale > 0, f"scale must be > 0, got {scale}")
    return gradient_step(x, loss, weight * scale**2)
