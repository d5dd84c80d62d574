"""Pixel-space compositing of a decoded zoom stack (feathered render).

Generative Powers of Ten (Wang et al. 2024, zoom-stack paper), Alg. 1 renders a zoom stack by
pasting each deeper level, area-downscaled by ``p``, into the centre of the level above. The
sampler (core/zoom/stack.py) makes the stack consistent in **latent** space: the centre of level
``i`` IS the box-averaged latent of level ``i+1``. A VAE decoder is not linear, so the decoded
images do not agree (averaged SD latents do not decode to averaged images: blur on SD1.5,
artefacts on SDXL). This module applies Alg. 1's render once more, in image space, to the
decoded levels, bottom-up (deepest first), with a feathered boundary:

Convention (feather): the ramp lies INSIDE the pasted ``H/p x W/p`` block. A pixel whose centre
is ``d`` px from the block's edge takes ``m = clamp(d / feather, 0, 1)`` of the deeper level and
``1 - m`` of its own level, so the outermost row of the block gets ``0.5 / feather`` and every
pixel more than ``feather`` px inside is exactly the deeper level. "Consistent" then means: the
block minus a ``feather``-wide ring equals the composited deeper level area-downscaled by ``p``
(exactly, as the latents do); in the ring the two levels cross-fade, and outside the block the
level keeps its own pixels. ``feather = 0`` is Alg. 1's hard paste.
Works on ``(N, C, H, W)``; the node converts ComfyUI's ``IMAGE`` ``(N, H, W, C)``.
"""
from __future__ import annotations

import torch

from ..checks import check
from .stack import area_down, center_crop, check_stack, paste_center

__all__ = ["max_feather", "check_feather", "feather_ramp", "composite_levels"]


def max_feather(height: int, width: int, p: int) -> float:
    """Largest feather (px) for ``height x width`` levels: a quarter of the pasted block's shorter side.

    The composite's ramp then leaves at least half of the block exactly consistent, and the
    zoom video (core/zoom/video.py), which fades the deeper level in over the next ``feather``
    px, still reaches it fully before the block's centre.

    >>> max_feather(512, 512, 2), max_feather(256, 384, 4)
    (64.0, 16.0)
    """
    return min(height, width) / (4 * p)


def check_feather(height: int, width: int, p: int, feather: float, name: str = "feather") -> None:
    """Check ``0 <= feather <= max_feather(height, width, p)``.

    >>> check_feather(512, 512, 2, 32)
    """
    limit = max_feather(height, width, p)
    check(0 <= feather <= limit,
          f"{name}={feather:g} px must be in [0, {limit:g}] px for {width}x{height} px levels with zoom factor p={p} "
          f"(a quarter of the pasted {width // p}x{height // p} px centre block)")


def feather_ramp(height: int, width: int, feather: float, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Weight of the pasted (deeper) level inside a ``height x width`` block: ``clamp(d / feather, 0, 1)``.

    ``d`` is the distance (px) from a pixel's centre to the nearest edge of the block (a square
    ring geometry: ``min`` over the four sides). ``feather = 0`` gives all ones (hard paste).

    Shape: → ``(height, width)``.

    >>> feather_ramp(6, 6, 2.0)[2].tolist()
    [0.25, 0.75, 1.0, 1.0, 0.75, 0.25]
    """
    check(feather >= 0, f"feather must be >= 0 px, got {feather}")
    if feather == 0:
        return torch.ones(height, width, dtype=dtype, device=device)
    ys = torch.arange(height, dtype=torch.float32, device=device)
    xs = torch.arange(width, dtype=torch.float32, device=device)
    dy = torch.minimum(ys + 0.5, height - ys - 0.5)
    dx = torch.minimum(xs + 0.5, width - xs - 0.5)
    distance = torch.minimum(dy[:, None], dx[None, :])
    return (distance / feather).clamp(0, 1).to(dtype)


def composite_levels(images: torch.Tensor, p: int, feather: float) -> torch.Tensor:
    """Feathered Alg. 1 render of decoded zoom levels, bottom-up (paper Alg. 1, ``Π_image``, in pixels).

    ``out[N-1] = images[N-1]``; for ``i = N-2 … 0``, the centre block of ``images[i]`` is
    cross-faded towards ``area_down(out[i+1], p)`` with :func:`feather_ramp` (see the module
    docstring for where the ramp lies). Deeper levels thus reach every shallower level through
    the ones in between, as in :func:`~core.zoom.stack.render_stack`.

    Args:
        images: decoded levels, level 0 most zoomed-out, any value range.
        p: zoom factor between consecutive levels, 2 or 4.
        feather: ramp width in image px, ``0 … max_feather`` (0 = hard paste).

    Shape: ``(N, C, H, W)`` → ``(N, C, H, W)``; ``H`` and ``W`` divisible by ``2·p``.

    Returns:
        Composited levels: ``center_crop(out[i], p)`` equals ``area_down(out[i+1], p)`` except
        in the ``feather``-wide ring along the block's edge.

    >>> x = composite_levels(torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)]), 2, 0)
    >>> x[0, 0, 3].tolist()
    [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """
    check_stack(images, p, "images", unit="px")
    _, _, height, width = images.shape
    check_feather(height, width, p, feather)
    ramp = feather_ramp(height // p, width // p, feather, dtype=images.dtype, device=images.device)
    out = [images[-1]]
    for level in reversed(images[:-1]):  # deepest first: each paste already holds every deeper level
        inner = area_down(out[-1][None], p)[0]
        out.append(paste_center(level, torch.lerp(center_crop(level, p), inner, ramp)))
    return torch.stack(out[::-1])
