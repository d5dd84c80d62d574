"""Continuous zoom video from the rendered levels of a zoom stack.

Generative Powers of Ten (Wang et al. 2024, zoom-stack paper, Fig. 1 and §4): the stack is
rendered at every level (``Π_image``), and a video zooms smoothly through them. Frame ``f``
shows zoom ``p^z`` with ``z = f / frames_per_level``: every output pixel is sampled from the
deepest level whose extent contains it, so detail from the zoomed-in levels replaces the
magnified (blurry) centre of the shallower ones. Works on image-space renders
(ComfyUI ``IMAGE`` layout ``(N, H, W, C)``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from .checks import check, check_shape
from .zoom import ZOOM_FACTORS

__all__ = ["frame_count", "zoom_video_frames"]


def frame_count(levels: int, frames_per_level: int) -> int:
    """Frames of a zoom through ``levels`` levels: ``(levels − 1) · frames_per_level + 1``.

    Convention: frame 0 is level 0 and the last frame is level ``N − 1`` (both included);
    each step between levels takes ``frames_per_level`` frames. One level gives one frame.

    >>> frame_count(3, 4)
    9
    """
    return (levels - 1) * frames_per_level + 1


def _pixel_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    """Normalised pixel-centre coordinates ``(h, w, 2)`` as (x, y), ``align_corners=False``."""
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def _zoom_frame(renders: torch.Tensor, p: int, z: float) -> torch.Tensor:
    """One frame at fractional zoom level ``z`` (zoom ``p^z`` relative to level 0).

    Pixel ``u`` (normalised, centre 0) of the frame lies at ``u · p^(k−z)`` in level ``k``;
    it is taken from the deepest ``k`` where that is inside ``[−1, 1]²``. A level shown smaller
    than its size is first area-downscaled to about its on-screen size (no aliasing), so at
    integer ``z`` the frame equals that level's render (renders are zoom-consistent).

    Shape: ``renders (N, C, H, W)`` → ``(C, H, W)``.
    """
    n, c, h, w = renders.shape
    base = min(int(math.floor(z + 1e-9)), n - 1)
    grid = _pixel_grid(h, w, renders.device, renders.dtype)
    frame = torch.zeros(c, h, w, dtype=renders.dtype, device=renders.device)
    for k in range(base, n):
        scale = p ** (k - z)  # >= 1: level k appears 1/scale of its size on screen
        level = renders[k : k + 1]
        if scale > 1 + 1e-9:
            size = (max(1, math.ceil(h / scale - 1e-6)), max(1, math.ceil(w / scale - 1e-6)))
            level = F.interpolate(level, size=size, mode="area")
        sample = F.grid_sample(level, (grid * scale)[None], mode="bilinear", padding_mode="border",
                               align_corners=False)[0]
        inside = (grid * scale).abs().amax(dim=-1) <= 1
        frame = torch.where(inside, sample, frame)
    return frame


def zoom_video_frames(images: torch.Tensor, p: int, frames_per_level: int) -> torch.Tensor:
    """A continuous zoom video through the rendered levels of a zoom stack.

    Frame ``f`` is :func:`_zoom_frame` at ``z = f / frames_per_level``; the frame count is
    :func:`frame_count` (both end levels included, so chained videos share no frame twice
    only if the caller drops one end).

    Args:
        images: rendered levels in image space, level 0 most zoomed-out (e.g. decoded renders).
        p: zoom factor between levels, 2 or 4.
        frames_per_level: frames per zoom step ``p``, >= 1.

    Shape: ``(N, H, W, C)`` → ``(F, H, W, C)`` with ``F = (N − 1) · frames_per_level + 1``.

    >>> zoom_video_frames(torch.rand(2, 8, 8, 3), 2, 4).shape
    torch.Size([5, 8, 8, 3])
    """
    check(p in ZOOM_FACTORS, f"zoom factor p must be one of {ZOOM_FACTORS}, got {p!r}")
    check_shape(images, ["N", "H", "W", "C"], "images")
    check(images.shape[0] >= 1, f"images must hold at least one level, got N={images.shape[0]}")
    check(frames_per_level >= 1, f"frames_per_level must be >= 1, got {frames_per_level}")
    renders = rearrange(images, "n h w c -> n c h w")
    frames = [_zoom_frame(renders, p, f / frames_per_level)
              for f in range(frame_count(images.shape[0], frames_per_level))]
    return rearrange(torch.stack(frames), "f c h w -> f h w c")
