"""One-shot Style Alignment of the initial noise (GVCF §"One-shot Style Alignment", eq. 15).

Every non-overlapping tile-sized crop ``x_T^(i)`` of the initial canvas noise is rotated
toward a reference noise by spherical linear interpolation,

    x_T^(i) := slerp(x_T^(i), z_ref, alpha)                                  (GVCF eq. 15)

so the crops cluster around ``z_ref`` and the windows start from similar noise (a
coherent style) at no extra sampling cost. ``alpha = 0`` leaves the noise unchanged,
``alpha = 1`` tiles the canvas with the reference; the paper uses ``alpha = 0.4``.
Slerp of two independent standard Gaussians of many elements keeps (approximately)
unit variance, because such vectors are nearly orthogonal and of nearly equal norm.
"""
from __future__ import annotations

import torch

from ..checks import check, check_range, check_shape

__all__ = ["slerp", "tile_offsets", "reference_from_canvas", "style_align_noise"]

_PARALLEL_EPS = 1e-6  # |sin(theta)| below this: the vectors are (anti-)parallel, use lerp


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical linear interpolation from ``a`` to ``b`` per sample (Shoemake 1985; GVCF eq. 15).

    Convention: the angle ``theta`` is taken per sample over all non-batch dims; the result is
    ``sin((1-alpha) theta)/sin(theta) a + sin(alpha theta)/sin(theta) b``. Samples whose
    vectors are (anti-)parallel fall back to the linear interpolation. ``alpha = 0`` returns
    ``a`` and ``alpha = 1`` returns ``b`` exactly.

    Args:
        a: start, e.g. a noise crop.
        b: end, e.g. the reference noise; same shape as ``a``.
        alpha: interpolation ratio in ``[0, 1]``.

    Shape: ``a, b (B, ...)`` → ``(B, ...)``.

    >>> slerp(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5).tolist()
    [[0.7071067690849304, 0.7071067690849304]]
    """
    check(a.shape == b.shape, f"slerp inputs must have the same shape, got a {tuple(a.shape)} and b {tuple(b.shape)}")
    check(a.ndim >= 2, f"slerp inputs must be (B, ...) with at least one non-batch dim, got shape {tuple(a.shape)}")
    check_range("alpha", alpha, 0.0, 1.0)
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-300)
    theta = cos.clamp(-1.0, 1.0).acos()
    sin = theta.sin()
    parallel = sin.abs() < _PARALLEL_EPS
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    ca = torch.where(parallel, torch.full_like(sin, 1.0 - alpha), ((1.0 - alpha) * theta).sin() / safe)
    cb = torch.where(parallel, torch.full_like(sin, alpha), (alpha * theta).sin() / safe)
    view = (-1,) + (1,) * (a.ndim - 1)
    return (ca.view(view).to(a.dtype) * a + cb.view(view).to(a.dtype) * b).to(a.dtype)


def tile_offsets(size: int, tile: int) -> list[int]:
    """Starts of the non-overlapping tiles along one axis; the last tile may be shorter (remainder).

    >>> tile_offsets(10, 4)
    [0, 4, 8]
    """
    check(1 <= tile <= size, f"tile must be in [1, {size}] latent px (the canvas size), got {tile}")
    return list(range(0, size, tile))


def reference_from_canvas(noise: torch.Tensor, tile_h: int, tile_w: int, row: int = 0, col: int = 0) -> torch.Tensor:
    """A reference noise taken from the canvas noise itself: the full tile at grid ``(row, col)``.

    GVCF: "the reference noise ... may originate from a patch of the initial noise".

    Args:
        noise: canvas noise.
        tile_h, tile_w: tile size (latent px).
        row, col: tile grid index of a full (non-remainder) tile.

    Shape: ``noise (B, C, H, W)`` → ``(B, C, tile_h, tile_w)`` (a copy).

    >>> reference_from_canvas(torch.arange(16.0).view(1, 1, 4, 4), 2, 2, 1, 0).flatten().tolist()
    [8.0, 9.0, 12.0, 13.0]
    """
    check_shape(noise, ["B", "C", "H", "W"], "noise")
    H, W = noise.shape[-2:]
    check(1 <= tile_h <= H and 1 <= tile_w <= W, f"tile {tile_h}x{tile_w} must be between 1x1 and the canvas {H}x{W} latent px")
    check(0 <= row < H // tile_h, f"row must be in [0, {H // tile_h - 1}] (full tiles only), got {row}")
    check(0 <= col < W // tile_w, f"col must be in [0, {W // tile_w - 1}] (full tiles only), got {col}")
    y, x = row * tile_h, col * tile_w
    return noise[:, :, y : y + tile_h, x : x + tile_w].clone()


def style_align_noise(noise: torch.Tensor, reference: torch.Tensor, tile_h: int, tile_w: int, alpha: float) -> torch.Tensor:
    """One-shot Style Alignment: slerp every non-overlapping tile of the canvas noise toward ``reference`` (GVCF eq. 15).

    Convention: tiles start at ``0, tile, 2·tile, …``; the remainder tiles at the right and
    bottom edges (smaller than a tile) slerp toward the top-left crop of ``reference`` of
    their size. Each tile is slerped per sample over ``(C, h, w)``.

    Args:
        noise: initial canvas noise (unit variance, before scaling by sigma).
        reference: reference noise ``z_ref``; its batch is 1 (shared) or ``B``.
        tile_h, tile_w: tile size (latent px), usually the window size.
        alpha: interpolation ratio in ``[0, 1]``; 0 = unchanged, 1 = tiled reference; paper: 0.4.

    Shape: ``noise (B, C, H, W)``, ``reference (B or 1, C, tile_h', tile_w')`` with
    ``tile_h' >= tile_h``, ``tile_w' >= tile_w`` → ``(B, C, H, W)``.

    >>> out = style_align_noise(torch.randn(1, 4, 8, 12), torch.zeros(1, 4, 4, 4) + 1, 4, 4, 1.0)
    >>> bool((out == 1).all())
    True
    """
    check_shape(noise, ["B", "C", "H", "W"], "noise")
    check_shape(reference, ["B", "C", "h", "w"], "reference")
    B, C, H, W = noise.shape
    Br, Cr, h, w = reference.shape
    check(Br in (1, B) and Cr == C, f"reference must be (1 or {B}, {C}, h, w) to match noise, got {tuple(reference.shape)}")
    check(h >= tile_h and w >= tile_w, f"reference {h}x{w} must be at least the tile {tile_h}x{tile_w} latent px")
    check_range("alpha", alpha, 0.0, 1.0)
    out = noise.clone()
    for y in tile_offsets(H, tile_h):
        for x in tile_offsets(W, tile_w):
            crop = noise[:, :, y : y + tile_h, x : x + tile_w]
            ref = reference[:, :, : crop.shape[2], : crop.shape[3]].expand_as(crop).to(noise)
            out[:, :, y : y + tile_h, x : x + tile_w] = slerp(crop, ref, alpha)
    return out
