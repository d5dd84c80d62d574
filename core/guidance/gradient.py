"""Gradient guidance of window latents: ``x ← x − w ∇_x L(x)``, taken outside inference mode.

SyncDiffusion (Lee et al. 2023, eq. 14) and Multi-Scale Diffusion (msd paper, eq. 9) both move each
window's noisy latent by the gradient of a loss on its one-step prediction before the window takes
its own step. Both see the diffusion model and the decoder only through callables:

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

from collections.abc import Callable

import torch

from ..checks import check

__all__ = ["Denoise", "Decode", "gradient_step"]

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
    w = torch.as_tensor(weight, dtype=torch.float32)
    check(w.ndim == 0 or tuple(w.shape) == (x.shape[0],), f"weight must be a float or one per row ({x.shape[0]},), got {tuple(w.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        leaf = x.detach().clone().requires_grad_(True)
        values = loss(leaf)
        check(tuple(values.shape) == (x.shape[0],), f"loss must return one value per row ({x.shape[0]},), got {tuple(values.shape)}")
        (grad,) = torch.autograd.grad(values.sum(), leaf)
    w = w.to(grad.device).reshape(-1, *[1] * (x.ndim - 1)) if w.ndim else w.to(grad.device)
    return (x.detach() - (w * grad).to(x.dtype)).detach()

