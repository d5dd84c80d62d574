"""Continuous zoom video from the rendered levels of a zoom stack.

Generative Powers of Ten (Wang et al. 2024, zoom-stack paper, Fig. 1 and §4): the stack is
rendered at every level (``Π_image``), and a video zooms smoothly through them. Frame ``f``
shows zoom ``p^z`` with ``z = f / frames_per_level``: level ``floor(z)`` fills the frame and
every deeper level is laid over it where it lies, so detail from the zoomed-in levels replaces
the magnified (blurry) centre of the shallower ones. Works on image-space renders
(ComfyUI ``IMAGE`` layout ``(N, H, W, C)``), best on levels composited by
core/zoom/composite.py.

Convention (feather, in px of the level a deeper level is pasted into, as in
:func:`~core.zoom.composite.composite_levels`): a deeper level ``k`` fades in over its outer
``feather`` px, the composite's ramp, anchored to the scene, so a frame has no hard edge. In
the last zoom step before level ``k`` fills the frame (``s = k − z < 1``) the ramp narrows to
``s · feather`` px, so the frame hands over to level ``k`` without a jump. On raw decoded
levels a whole-level frame is then the feathered composite (Alg. 1 in pixels); on composited
levels its block interior is the composite exactly and the ring is faded once more.
``feather = 0``: every pixel from the deepest level containing it (a hard edge).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from ..checks import check, check_shape
from .stack import ZOOM_FACTORS
from .composite import check_feather

__all__ = ["WORKING_FRAMES", "frame_count", "video_bytes", "level_weight", "zoom_video_frames"]

WORKING_FRAMES = 8
"""Frame-sized temporaries while one frame is made, in frames of ``H·W·C``: the sampling grid and a level's
coordinates, its area-downscaled copy and sample, its weight and the weight's intermediates, the frame and its blend
(measured with a storage counter: at most 5.6 frames beyond the output at ``C = 3``, tests/core/zoom/test_stack.py)."""


def frame_count(levels: int, frames_per_level: int) -> int:
    """Frames of a zoom through ``levels`` levels: ``(levels − 1) · frames_per_level + 1``.

    Convention: frame 0 is level 0 and the last frame is level ``N − 1`` (both included);
    each step between levels takes ``frames_per_level`` frames. One level gives one frame.

    >>> frame_count(3, 4)
    9
    """
    return (levels - 1) * frames_per_level + 1


def video_bytes(levels: int, frames_per_level: int, height: int, width: int, channels: int, itemsize: int = 4) -> int:
    """Memory :func:`zoom_video_frames` allocates: its output plus :data:`WORKING_FRAMES` frames of temporaries.

    ``(F + WORKING_FRAMES)·H·W·C·itemsize`` with ``F`` = :func:`frame_count` (the frames are written into one
    preallocated tensor, so nothing else grows with ``F``). Integer arithmetic, nothing is allocated: check it
    against the free memory before rendering (the output grows as ``levels x frames_per_level x H x W``).

    Args:
        levels, frames_per_level: the stack's levels ``N`` (>= 1) and the frames per zoom step (>= 1).
        height, width, channels: the level size in px and its channels (``IMAGE``: ``C = 3``).
        itemsize: bytes per element (4 for ComfyUI's float32 images).

    >>> round(video_bytes(32, 1000, 512, 512, 3) / 2**30, 1)  # 31,001 frames of 512 px, float32: GiB
    90.8
    """
    check(min(levels, frames_per_level, height, width, channels, itemsize) >= 1,
          f"levels, frames_per_level, height, width, channels and itemsize must be >= 1, got "
          f"{(levels, frames_per_level, height, width, channels, itemsize)}")
    return (frame_count(levels, frames_per_level) + WORKING_FRAMES) * height * width * channels * itemsize


def _pixel_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    """Normalised pixel-centre coordinates ``(h, w, 2)`` as (x, y), ``align_corners=False``."""
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def level_weight(coords: torch.Tensor, height: int, width: int, p: int, ramp: float) -> torch.Tensor:
    """Weight of a deeper level at frame points ``coords`` (its own normalised coordinates).

    ``d`` = distance to the level's edge in px of the level it is pasted into (level px / p);
    the weight is ``clamp(d / ramp, 0, 1)``, the composite's :func:`~core.zoom.composite.feather_ramp`;
    ``ramp = 0`` is 1 inside the level and 0 outside (hard edge).

    Shape: ``coords (..., 2)`` as (x, y), ``[−1, 1]`` inside → ``(...)``.

    >>> level_weight(torch.tensor([[0.0, 0.0], [0.9, 0.0], [1.5, 0.0]]), 16, 16, 2, 0.0).tolist()
    [1.0, 1.0, 0.0]
    >>> level_weight(torch.tensor([[0.0, 0.0], [0.875, 0.0], [1.5, 0.0]]), 16, 16, 2, 2.0).tolist()
    [1.0, 0.25, 0.0]
    """
    size = coords.new_tensor([width, height])
    distance = ((1 - coords.abs()) * size / (2 * p)).amin(dim=-1)
    if ramp == 0:
        return (distance >= 0).to(coords.dtype)
    return (distance / ramp).clamp(0, 1)


def _zoom_frame(renders: torch.Tensor, p: int, z: float, feather: float) -> torch.Tensor:
    """One frame at fractional zoom level ``z`` (zoom ``p^z`` relative to level 0).

    Pixel ``u`` (normalised, centre 0) of the frame lies at ``u · p^(k−z)`` in level ``k``;
    levels ``floor(z) … N−1`` are laid over each other there with :func:`level_weight` (see the
    module's feather convention). A level shown smaller than its size is first area-downscaled
    to about its on-screen size (no aliasing), so at integer ``z`` the frame equals that level's
    render (renders are zoom-consistent).

    Shape: ``renders (N, C, H, W)`` → ``(C, H, W)``.
    """
    n, c, h, w = renders.shape
    base = min(int(math.floor(z + 1e-9)), n - 1)
    grid = _pixel_grid(h, w, renders.device, renders.dtype)
    frame = torch.zeros(c, h, w, dtype=renders.dtype, device=renders.device)
    for k in range(base, n):
        scale = p ** (k - z)  # >= 1 for k > z: level k appears 1/scale of its size on screen
        level = renders[k : k + 1]
        if scale > 1 + 1e-9:
            size = (max(1, math.ceil(h / scale - 1e-6)), max(1, math.ceil(w / scale - 1e-6)))
            level = F.interpolate(level, size=size, mode="area")
        coords = grid * scale
        sample = F.grid_sample(level, coords[None], mode="bilinear", padding_mode="border", align_corners=False)[0]
        ramp = feather * min(k - z, 1.0) if k > base else 0.0  # the base level fills the frame
        frame = torch.lerp(frame, sample, level_weight(coords, h, w, p, ramp))
    return frame


def zoom_video_frames(images: torch.Tensor, p: int, frames_per_level: int, feather: float = 0.0) -> torch.Tensor:
    """A continuous zoom video through the rendered levels of a zoom stack.

    Frame ``f`` is :func:`_zoom_frame` at ``z = f / frames_per_level``; the frame count is
    :func:`frame_count` (both end levels included, so chained videos share no frame twice
    only if the caller drops one end).

    Args:
        images: rendered levels in image space, level 0 most zoomed-out (e.g. decoded renders).
        p: zoom factor between levels, 2 or 4.
        frames_per_level: frames per zoom step ``p``, >= 1.
        feather: px (of the outer level) over which a deeper level fades in, ``0 … max_feather``
            (see the module's convention; use the composite's feather); 0 = hard edges.

    Shape: ``(N, H, W, C)`` → ``(F, H, W, C)`` with ``F = (N − 1) · frames_per_level + 1``; the frames are
    written into one tensor allocated up front (:func:`video_bytes` is the memory this takes).

    >>> zoom_video_frames(torch.rand(2, 8, 8, 3), 2, 4).shape
    torch.Size([5, 8, 8, 3])
    """
    check(p in ZOOM_FACTORS, f"zoom factor p must be one of {ZOOM_FACTORS}, got {p!r}")
    check_shape(images, ["N", "H", "W", "C"], "images")
    check(images.shape[0] >= 1, f"images must hold at least one level, got N={images.shape[0]}")
    check(frames_per_level >= 1, f"frames_per_level must be >= 1, got {frames_per_level}")
    check_feather(images.shape[1], images.shape[2], p, feather)
    n, h, w, c = images.shape
    renders = rearrange(images, "n h w c -> n c h w")
    frames = images.new_empty((frame_count(n, frames_per_level), h, w, c))
    for f in range(frames.shape[0]):
        frames[f] = rearrange(_zoom_frame(renders, p, f / frames_per_level, feather), "c h w -> h w c")
    return frames
