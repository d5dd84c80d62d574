"""Fusing window latents on the canvas: weighted average and Variance-Corrected Fusion.

Latent fusion (DESIGN.md, "Two ways of fusing windows") lets every window take its own
sampler step and fuses the resulting window latents ``x_i`` per canvas pixel. With a
stochastic step ``x_i = mu_i + sigma_up * eps_i`` the weighted average

    x = sum_i w_i x_i / W,                      W = sum_i w_i         (GVCF eq. 8)

has noise variance ``sigma_up^2 * sum_i w_i^2 / W^2`` (``sigma_up^2 / n`` for ``n`` equal
weights): too little, so the image blurs. Variance-Corrected Fusion restores it:

    x = sum_i w_i x_i / sqrt(sum_i w_i^2)
        + (1 - W / sqrt(sum_i w_i^2)) * sum_i w_i mu_i / W           (GVCF eq. 14)

which has mean ``sum_i w_i mu_i / W`` and noise variance ``sigma_up^2``; with equal
weights it is GVCF eq. 13. The same formula serves flow-matching models (SD3, Flux), whose
ancestral step is ``x_i = mu_i + renoise * eps_i`` with ``mu_i`` including the
``(1 - sigma_next)/(1 - sigma_down)`` rescale (:mod:`core.sampling.flow_matching`): the fused noise keeps
``renoise^2`` (derivation in :func:`finish_variance_corrected`). A sampler processes windows in batches, so the sums are kept
in a :class:`FusionSums` accumulator: :func:`fusion_sums` makes one,
:func:`accumulate_fusion` adds a window batch, :func:`finish_average` or
:func:`finish_variance_corrected` returns the canvas.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..checks import check, check_shape
from ..canvas.windows import Window, accumulate_windows, fuse_windows

__all__ = [
    "FusionSums",
    "fuse_average",
    "fusion_sums",
    "check_on_canvas",
    "accumulate_fusion",
    "finish_average",
    "finish_variance_corrected",
    "fuse_variance_corrected",
]


@dataclass(frozen=True)
class FusionSums:
    """Per-pixel sums of a (chunked) fusion; the tensors are filled in place.

    Attributes:
        wx: ``(B, C, H, W)`` sum of ``w_i x_i``.
        wmu: ``(B, C, H, W)`` sum of ``w_i mu_i`` (step means; ``None`` for plain averaging).
        w: ``(1, 1, H, W)`` sum of ``w_i`` (``W`` in GVCF eq. 14).
        w2: ``(1, 1, H, W)`` sum of ``w_i^2``.
    """

    wx: torch.Tensor
    wmu: torch.Tensor | None
    w: torch.Tensor
    w2: torch.Tensor


def fuse_average(
    values: torch.Tensor, windows: Sequence[Window], weights: torch.Tensor, denominator: torch.Tensor
) -> torch.Tensor:
    """Weighted average of window values (MultiDiffusion; Guided Fusion, GVCF eq. 8).

    Args:
        values: window values, window-major.
        windows: the ``N`` windows (latent px).
        weights: their fusion weights.
        denominator: ``sum_i w_i`` per pixel, from :func:`~core.canvas.windows.total_weight`.

    Shape: ``values (N·B, C, h, w)``, ``weights (N, 1, h, w)``, ``denominator (1, 1, H, W)``
    → ``(B, C, H, W)``.

    >>> from vista.core.canvas.windows import plan_windows, total_weight, window_weights
    >>> wins = plan_windows(2, 3, 2, 2, 1, 1); wts = window_weights(wins)
    >>> values = torch.tensor([1., 3.]).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    >>> fuse_average(values, wins, wts, total_weight(wins, wts, 2, 3))[0, 0, 0].tolist()
    [1.0, 2.0, 3.0]
    """
    return fuse_windows(values, tuple(windows), weights, denominator)


def fusion_sums(
    batch: int, channels: int, height: int, width: int, *, with_mean: bool = False, dtype=torch.float32, device=None
) -> FusionSums:
    """An empty :class:`FusionSums` for a ``height x width`` canvas (latent px).

    Args:
        batch, channels: canvas batch ``B`` and channels ``C``.
        height, width: canvas size (latent px).
        with_mean: also keep ``sum_i w_i mu_i`` (needed by :func:`finish_variance_corrected`).
        dtype: accumulation dtype (at least float32 is promoted to: fp16 sums of many windows lose bits).

    >>> fusion_sums(2, 4, 8, 16).wx.shape
    torch.Size([2, 4, 8, 16])
    """
    sizes = (batch, channels, height, width)
    check(min(sizes) >= 1, f"batch, channels, height, width must be >= 1, got {sizes}")
    dtype = torch.promote_types(dtype, torch.float32)
    zeros = lambda b, c: torch.zeros(b, c, height, width, dtype=dtype, device=device)
    return FusionSums(zeros(batch, channels), zeros(batch, channels) if with_mean else None, zeros(1, 1), zeros(1, 1))


def accumulate_fusion(
    sums: FusionSums,
    x_windows: torch.Tensor,
    windows: Sequence[Window],
    weights: torch.Tensor,
    mu_windows: torch.Tensor | None = None,
) -> None:
    """Add one batch of windows to ``sums`` in place (GVCF eq. 14 numerators and denominators).

    Args:
        sums: accumulator from :func:`fusion_sums`.
        x_windows: window latents after their own step, window-major.
        windows: the ``n`` windows of this batch (latent px; may wrap past the right edge).
        weights: their fusion weights (the matching slice of the plan's weights).
        mu_windows: the step means ``mu_i`` of the same windows; required iff ``sums.wmu`` is kept.

    Shape: ``x_windows, mu_windows (n·B, C, h, w)``, ``weights (n, 1, h, w)``.
    """
    n = len(windows)
    check_shape(x_windows, ["n·B", "C", "h", "w"], "x_windows")
    check(n >= 1 and weights.shape[0] == n, f"weights has {weights.shape[0]} maps for {n} windows; pass one per window")
    batch, shape, size = x_windows.shape[0], tuple(x_windows.shape), tuple(x_windows.shape[-2:])
    check(batch == sums.wx.shape[0] * n, f"x_windows batch {batch} must be n·B = {n}·{sums.wx.shape[0]}")
    check((mu_windows is None) == (sums.wmu is None), "mu_windows must be given exactly when the sums keep the mean (with_mean=True)")
    check(mu_windows is None or mu_windows.shape == shape, f"mu_windows shape must equal x_windows shape {shape}")
    check(tuple(weights.shape[-2:]) == size, f"weights size {tuple(weights.shape[-2:])} must equal the window size {size}")
    check_on_canvas(windows, *sums.w.shape[-2:])
    accumulate_windows(sums.wx, x_windows, windows, weights)
    if mu_windows is not None:
        accumulate_windows(sums.wmu, mu_windows, windows, weights)
    ones = sums.w.new_ones(n, 1, 1, 1)
    accumulate_windows(sums.w, ones, windows, weights)
    accumulate_windows(sums.w2, ones, windows, weights.to(sums.w) ** 2)


def check_on_canvas(windows: Sequence[Window], height: int, width: int) -> None:
    """Every window must lie on the ``height x width`` canvas (latent px); only the right edge may wrap.

    >>> check_on_canvas([Window(0, 6, 4, 4)], 4, 8)  # wraps past the right edge: allowed
    """
    ok = all(win.y >= 0 and win.y + win.h <= height and 0 <= win.x < width and win.w <= width for win in windows)
    check(ok, f"windows must lie on the {height}x{width} canvas (only wrap past the right edge), got {list(windows)}")


def _check_covered(sums: FusionSums) -> None:
    """Every canvas pixel must have received positive weight (coverage is an invariant)."""
    holes = int((sums.w <= 0).sum())
    check(holes == 0, f"windows must cover every canvas pixel with positive weight; {holes} pixels have total weight 0")


def finish_average(sums: FusionSums) -> torch.Tensor:
    """Weighted average ``sum_i w_i x_i / W`` of the accumulated windows (GVCF eq. 8).

    Shape: → ``(B, C, H, W)`` in the accumulation dtype.

    >>> s = fusion_sums(1, 1, 1, 1); _ = s.wx.add_(3.0), s.w.add_(2.0)
    >>> finish_average(s).item()
    1.5
    """
    _check_covered(sums)
    return sums.wx / sums.w


def finish_variance_corrected(sums: FusionSums) -> torch.Tensor:
    """Variance-Corrected Fusion of the accumulated windows (GVCF eq. 14; eq. 13 for equal weights).

    ``x = sum w_i x_i / sqrt(sum w_i^2) + (1 - W / sqrt(sum w_i^2)) * sum w_i mu_i / W``.
    Where one window covers a pixel this is that window's ``x_i``.

    Derivation, for any ancestral step of the form ``x_i = mu_i + r * eps_i`` (one pixel, windows
    ``i`` over it, ``eps_i`` independent standard normals, the same ``r`` for every window because all
    share the step ``sigma -> sigma_next``). Write ``S = sqrt(sum w_i^2)``:

    * mean: ``E[x] = sum w_i mu_i / S + sum w_i mu_i / W - sum w_i mu_i / S = sum w_i mu_i / W``, the
      MultiDiffusion (GVCF eq. 8) average of the window means;
    * noise: ``x - E[x] = r * sum w_i eps_i / S``, variance ``r^2 * sum w_i^2 / S^2 = r^2``.

    k-diffusion's step (SD): ``mu_i = d_i + (sigma_down / sigma)(x_i - d_i)``, ``r = s_noise * sigma_up``.
    Rectified-flow step (SD3, Flux; ComfyUI ``sample_euler_ancestral_RF``, :func:`~core.sampling.flow_matching.rf_step`):
    ``mu_i = (1 - sigma_next)/(1 - sigma_down) * (d_i + (sigma_down / sigma)(x_i - d_i))`` and
    ``r = s_noise * noise_scale * renoise``, ``renoise^2 = sigma_next^2 - sigma_down^2 (1 - sigma_next)^2 / (1 - sigma_down)^2``.
    Two conditions make the flow case exact: ``mu_i`` must include the rescale (it is linear, so
    rescaling the fused mean instead is the same), and the rescale must not touch the fresh noise.
    Then the fused pixel is ``(1 - sigma_next)/(1 - sigma_down) * euler-mean + renoise-noise``, whose
    noise variance ``((1 - sigma_next) sigma_down / (1 - sigma_down))^2 + renoise^2 = sigma_next^2`` is the
    flow marginal's (the ``eps`` carried in the mean is the canvas's own noise, common to all windows,
    so averaging the means keeps it whole). The plain average would leave ``r^2 sum w_i^2 / W^2``
    (``renoise^2 / n`` for ``n`` equal windows).

    Shape: → ``(B, C, H, W)`` in the accumulation dtype.

    >>> s = fusion_sums(1, 1, 1, 1, with_mean=True)
    >>> _ = s.wx.add_(4.0), s.wmu.add_(2.0), s.w.add_(2.0), s.w2.add_(2.0)
    >>> round(finish_variance_corrected(s).item(), 6)  # mean 1, noise (4 - 2) / sqrt(2)
    2.414214
    """
    check(sums.wmu is not None, "variance-corrected fusion needs the step means: make the sums with with_mean=True")
    _check_covered(sums)
    root = sums.w2.sqrt()
    return sums.wx / root + (1 - sums.w / root) * (sums.wmu / sums.w)


def fuse_variance_corrected(
    x_windows: torch.Tensor,
    mu_windows: torch.Tensor,
    windows: Sequence[Window],
    weights: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """Variance-Corrected Fusion of all windows in one call (GVCF eq. 14).

    Args:
        x_windows: window latents after a stochastic step ``mu_i + sigma_up * eps_i``, window-major.
        mu_windows: the step means ``mu_i``.
        windows: the ``N`` windows (latent px; may wrap past the right edge).
        weights: fusion weights.
        height, width: canvas size (latent px).

    Shape: ``x_windows, mu_windows (N·B, C, h, w)``, ``weights (N, 1, h, w)`` → ``(B, C, H, W)``.

    >>> from vista.core.canvas.windows import plan_windows, window_weights
    >>> wins = plan_windows(1, 2, 1, 1, 1, 1)
    >>> x, mu = torch.ones(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)
    >>> fuse_variance_corrected(x, mu, wins, window_weights(wins), 1, 2).flatten().tolist()
    [1.0, 1.0]
    """
    check_shape(x_windows, ["N·B", "C", "h", "w"], "x_windows")
    n = max(len(windows), 1)
    B, C = x_windows.shape[0] // n, x_windows.shape[1]
    sums = fusion_sums(B, C, height, width, with_mean=True, dtype=x_windows.dtype, device=x_windows.device)
    accumulate_fusion(sums, x_windows, windows, weights, mu_windows)
    return finish_variance_corrected(sums)
