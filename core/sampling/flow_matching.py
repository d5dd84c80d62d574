"""Ancestral (stochastic) steps in both noise parameterisations: k-diffusion's and rectified flow's.

Two ways a model's noisy latent is written (DESIGN.md, "Turn-2 facts"):

* **variance exploding** (k-diffusion sigma space; SD1.x/2.x/SDXL through ``model_sampling``):
  ``x_sigma = x0 + sigma * eps``;
* **flow matching** (rectified flow; SD3, Flux, AuraFlow — ComfyUI's CONST sampling):
  ``x_sigma = (1 - sigma) * x0 + sigma * eps`` with ``sigma`` in ``[0, 1]``.

An ancestral step from ``sigma`` to ``sigma_next`` takes a deterministic euler (DDIM) step down to
``sigma_down <= sigma_next`` and adds fresh noise back up to ``sigma_next``. Every step here has the
form (an :class:`AncestralStep`)::

    mu     = scale * (d + (sigma_down / sigma) * (x - d))        # d = the model's x0 prediction
    x_next = mu + s_noise * noise * eps,                        eps ~ N(0, I)

* k-diffusion ``get_ancestral_step`` (:func:`ve_step`): ``scale = 1``,
  ``noise = sigma_up = min(sigma_next, eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``,
  ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``.
* ComfyUI's ``sample_euler_ancestral_RF`` (comfy/k_diffusion/sampling.py, v0.3.64 and v0.33.0;
  :func:`rf_step`)::

      sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
      scale      = (1 - sigma_next) / (1 - sigma_down)
      noise      = sqrt(sigma_next^2 - sigma_down^2 (1 - sigma_next)^2 / (1 - sigma_down)^2)

  Why (derivation): with an exact ``d = x0``, the euler step maps ``(1 - sigma) x0 + sigma eps`` to
  ``(1 - sigma_down) x0 + sigma_down eps``; scaling by ``scale`` gives
  ``(1 - sigma_next) x0 + (sigma_down * scale) eps``, and noise of variance
  ``sigma_next^2 - (sigma_down * scale)^2`` brings the noise back to ``sigma_next^2``: the step maps the
  flow marginal at ``sigma`` onto the one at ``sigma_next``. The VE step used on a flow model
  instead leaves ``x0`` weighted by ``1 - sigma_down`` rather than ``1 - sigma_next``.
  ComfyUI v0.33.0 also multiplies ``s_noise`` by the model's ``model_sampling.noise_scale`` (the
  training noise scale, 1 for SD3/Flux; v0.3.64 has none): the node passes it as ``noise_scale``.

Fusing stochastic window steps (Variance-Corrected Fusion, GVCF eq. 14) only needs this form: see
:func:`~core.fusion.fuse.finish_variance_corrected` for the derivation that it keeps ``noise^2`` for either
parameterisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checks import check

__all__ = ["AncestralStep", "ve_step", "rf_step", "ancestral_step"]


@dataclass(frozen=True)
class AncestralStep:
    """One ancestral step ``sigma -> sigma_next``: ``x_next = scale * euler(x, d, sigma -> sigma_down) + noise * eps``.

    Attributes:
        sigma: the step's start (> 0).
        sigma_down: where the deterministic euler (DDIM) part goes, ``<= sigma_next``.
        scale: factor on the euler result (1 for k-diffusion; ``(1 - sigma_next) / (1 - sigma_down)`` for flow).
        noise: standard deviation of the fresh noise before ``s_noise`` (``sigma_up``; flow: ``renoise``).
    """

    sigma: float
    sigma_down: float
    scale: float
    noise: float

    def mean(self, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """Deterministic part ``scale * (r x + (1 - r) d)``, ``r = sigma_down / sigma`` (ComfyUI's operation order).

        Shape: ``x, denoised (..., C, h, w)`` → same.

        >>> AncestralStep(2.0, 1.0, 1.0, 0.0).mean(torch.tensor([3.0]), torch.tensor([1.0])).item()
        2.0
        """
        ratio = self.sigma_down / self.sigma
        out = ratio * x + (1 - ratio) * denoised
        return out if self.scale == 1 else self.scale * out


def _check_step(sigma: float, sigma_next: float, eta: float) -> None:
    """Preconditions shared by the step constructors."""
    check(eta >= 0, f"eta must be >= 0, got {eta}")
    check(sigma > 0 and sigma_next >= 0, f"a step needs sigma > 0 and sigma_next >= 0, got {sigma} -> {sigma_next}")


def ve_step(sigma: float, sigma_next: float, eta: float = 1.0) -> AncestralStep:
    """k-diffusion's ancestral step (``get_ancestral_step``; DDPM posterior noise at ``eta = 1``) for ``x = x0 + sigma eps``.

    ``sigma_down^2 + noise^2 = sigma_next^2``; ``eta = 0`` is DDIM/euler.

    >>> s = ve_step(2.0, 1.0, 1.0); round(s.sigma_down, 4), s.scale, round(s.noise, 4)
    (0.5, 1.0, 0.866)
    """
    _check_step(sigma, sigma_next, eta)
    if not eta:
        return AncestralStep(sigma, sigma_next, 1.0, 0.0)
    up = min(sigma_next, eta * math.sqrt(max(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2, 0.0)))
    return AncestralStep(sigma, math.sqrt(max(sigma_next**2 - up**2, 0.0)), 1.0, up)


def rf_step(sigma: float, sigma_next: float, eta: float = 1.0) -> AncestralStep:
    """Rectified-flow ancestral step, ComfyUI's ``sample_euler_ancestral_RF``, for ``x = (1 - sigma) x0 + sigma eps``.

    Convention: ``eta = 0`` is the deterministic euler step (scale 1, no noise); a step to
    ``sigma_next = 0`` has no noise (the sampler then returns ``d``). ``eta`` must keep
    ``sigma_down >= 0`` (``eta <= sigma / (sigma - sigma_next)``; any ``eta`` in ``[0, 1]`` does).

    Args:
        sigma, sigma_next: the step, ``0 <= sigma_next <= sigma``, ``sigma_next < 1``.
        eta: noise amount, 1 = ComfyUI's euler_ancestral on flow models.

    >>> s = rf_step(0.8, 0.6, 1.0); round(s.sigma_down, 4), round(s.scale, 4), round(s.noise, 4)
    (0.45, 0.7273, 0.5029)
    """
    _check_step(sigma, sigma_next, eta)
    check(sigma_next <= sigma and sigma_next < 1, f"flow-matching steps need sigma_next <= sigma and sigma_next < 1, "
                                                  f"got {sigma} -> {sigma_next}")
    if not eta or sigma_next == 0:
        return AncestralStep(sigma, sigma_next, 1.0, 0.0)
    down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    check(down >= 0, f"eta={eta} is too large for the step {sigma} -> {sigma_next}: sigma_down = {down} < 0; "
                     f"use eta <= {sigma / (sigma - sigma_next):.4g}")
    scale = (1 - sigma_next) / (1 - down)
    return AncestralStep(sigma, down, scale, math.sqrt(max(sigma_next**2 - (down * scale) ** 2, 0.0)))


def ancestral_step(sigma: float, sigma_next: float, eta: float, flow_matching: bool = False) -> AncestralStep:
    """The ancestral step of the model's parameterisation: :func:`rf_step` if ``flow_matching``, else :func:`ve_step`.

    >>> ancestral_step(0.8, 0.6, 0.0, flow_matching=True) == ancestral_step(0.8, 0.6, 0.0)
    True
    """
    return (rf_step if flow_matching else ve_step)(float(sigma), float(sigma_next), float(eta))
