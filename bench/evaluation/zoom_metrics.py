"""Measurements of what can still go wrong in a composited zoom stack and its video.

Generative Powers of Ten (Wang et al. 2024, zoom-stack paper). After
:func:`~core.zoom.composite.composite_levels` the decoded levels agree by construction
inside each pasted block, so two things remain to measure (bench/zoom_seams.py):

* the **seam** along the edge of the pasted block: the image gradient across the boundary
  contours vs the gradient of the same rows/columns further from it (:func:`seam_ratio`);
* the **level switches** of the zoom video: a hard-edged video takes each pixel from the
  deepest level containing it, so between two frames the pixels that a level's edge sweeps
  over switch level; :func:`switch_jump_ratio` compares their change with a typical frame
  change. :func:`handover_ratio` compares whole frames at the switch to the next base level.

All are ratios (1 = nothing special at the seam / switch), independent of the image's
contrast. Images are ``(C, H, W)``, videos ``(F, H, W, C)`` (ComfyUI ``IMAGE``).
"""
from __future__ import annotations

import math

import torch

from ...core.checks import check, check_shape
from ...core.zoom.stack import ZOOM_FACTORS
from ...core.zoom.video import frame_count

__all__ = ["seam_profile", "seam_ratio", "frame_differences", "source_levels", "switch_jump_ratio", "handover_ratio"]


def seam_profile(image: torch.Tensor, p: int, reach: int) -> torch.Tensor:
    """Mean |perpendicular difference| across the contours parallel to the pasted block's edge.

    The block is the central ``H/p x W/p`` of ``image``. Entry ``t + reach`` is the mean,
    over channels and over the four sides (their middle parts, ``reach`` px clear of the
    corners), of ``|I(inside) − I(outside)|`` between the two pixels that straddle the
    contour ``t`` px inside the block's edge (``t < 0``: outside; ``t = 0``: the edge itself).

    Shape: ``image (C, H, W)`` → ``(2·reach + 1,)`` for ``t = −reach … reach``.

    >>> x = torch.zeros(1, 16, 16); x[:, 4:12, 4:12] = 1
    >>> seam_profile(x, 2, 2).tolist()
    [0.0, 0.0, 1.0, 0.0, 0.0]
    """
    check_shape(image, ["C", "H", "W"], "image")
    check(p in ZOOM_FACTORS, f"zoom factor p must be one of {ZOOM_FACTORS}, got {p!r}")
    _, h, w = image.shape
    bh, bw = h // p, w // p
    top, left = (h - bh) // 2, (w - bw) // 2
    check(reach >= 1 and 2 * reach < min(bh, bw) and reach < min(top, left),
          f"reach must be >= 1 and fit inside the block and its surround, got {reach} for a {h}x{w} image and p={p}")
    dx = (image[:, :, 1:] - image[:, :, :-1]).abs().mean(0)  # (H, W-1): dx[:, x] straddles the line x+1
    dy = (image[:, 1:, :] - image[:, :-1, :]).abs().mean(0)  # (H-1, W)
    rows, cols = slice(top + reach, top + bh - reach), slice(left + reach, left + bw - reach)
    t = torch.arange(-reach, reach + 1, device=image.device)
    sides = [dx[rows, left - 1 + t].mean(0), dx[rows, left + bw - 1 - t].mean(0),
             dy[top - 1 + t, cols].mean(1), dy[top + bh - 1 - t, cols].mean(1)]
    return torch.stack(sides).mean(0)


def seam_ratio(image: torch.Tensor, p: int, band: int) -> float:
    """Seam strength: the strongest contour within ``band`` px of the block's edge ÷ the gradient beyond.

    ``max_{|t| <= band} P(t) / mean_{band < |t| <= reach} P(t)`` with ``P`` the
    :func:`seam_profile` and ``reach = 2·band`` (less where the block is too small): ~1 where the
    boundary is invisible, the step's height over the
    typical gradient for a hard paste of mismatching content. Use ``band >= feather`` so the
    whole ramp is inside the measured zone.

    >>> x = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    >>> 0.8 < seam_ratio(x, 2, 4) < 1.3
    True
    """
    h, w = image.shape[-2:]
    reach = min(2 * band, (min(h, w) // p - 1) // 2, (min(h, w) - min(h, w) // p) // 2 - 1)
    check(band >= 0 and reach > band, f"band={band} px leaves no room beyond it in a {h}x{w} image with p={p}")
    profile = seam_profile(image, p, reach)
    t = torch.arange(-reach, reach + 1, device=profile.device).abs()
    return (profile[t <= band].amax() / profile[t > band].mean()).item()


def frame_differences(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of each frame to the one before it.

    Shape: ``frames (F, H, W, C)`` → ``(F − 1,)``; entry ``f − 1`` compares frames ``f − 1`` and ``f``.

    >>> frame_differences(torch.arange(3.).reshape(3, 1, 1, 1)).tolist()
    [1.0, 1.0]
    """
    check_shape(frames, ["F", "H", "W", "C"], "frames")
    check(frames.shape[0] >= 2, f"frames must hold at least 2 frames, got {frames.shape[0]}")
    return (frames[1:] - frames[:-1]).abs().flatten(1).mean(1)


def source_levels(levels: int, p: int, frames_per_level: int, height: int, width: int) -> torch.Tensor:
    """The level each pixel of each frame comes from in the hard-edged zoom video (feather 0).

    Frame ``f`` is zoom ``z = f / frames_per_level``; pixel ``u`` (normalised, centre 0) lies
    in level ``k >= floor(z)`` when ``|u|_inf · p^(k − z) <= 1``; the deepest such level wins
    (core/zoom/video.py's geometry).

    Shape: → ``(F, height, width)`` integer levels, ``F = (levels − 1) · frames_per_level + 1``.

    >>> source_levels(2, 2, 1, 4, 4)[0].tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    check(p in ZOOM_FACTORS, f"zoom factor p must be one of {ZOOM_FACTORS}, got {p!r}")
    ys = ((torch.arange(height, dtype=torch.float64) * 2 + 1) / height - 1).abs()
    xs = ((torch.arange(width, dtype=torch.float64) * 2 + 1) / width - 1).abs()
    radius = torch.maximum(ys[:, None], xs[None, :])
    out = []
    for f in range(frame_count(levels, frames_per_level)):
        z = f / frames_per_level
        base = min(int(math.floor(z + 1e-9)), levels - 1)
        inside = torch.stack([radius * p ** (k - z) <= 1 for k in range(base, levels)])
        out.append(base + inside.long().cumprod(0).sum(0) - 1)  # levels nest: count the consecutive ones
    return torch.stack(out)


def switch_jump_ratio(frames: torch.Tensor, sources: torch.Tensor) -> float:
    """Frame-to-frame change at the level switches ÷ the median frame-to-frame change.

    The switches are the pixels whose :func:`source_levels` differ between two consecutive
    frames (the rings a level's edge sweeps over). Returns ``mean |Δ|`` over those pixels of
    all frame pairs ÷ the median over frame pairs of the whole frame's ``mean |Δ|``: ~1 where
    a level hands over smoothly, > 1 where the pixels jump as the edge passes.

    Shape: ``frames (F, H, W, C)``, ``sources (F, H, W)``.

    >>> frames = torch.zeros(3, 2, 2, 1); frames[2, 0, 0] = 4.0
    >>> sources = torch.zeros(3, 2, 2, dtype=torch.long); sources[2, 0, 0] = 1
    >>> switch_jump_ratio(frames + torch.arange(3.).reshape(3, 1, 1, 1), sources)
    5.0
    """
    check(tuple(sources.shape) == tuple(frames.shape[:3]),
          f"sources must have the frames' shape (F, H, W) = {tuple(frames.shape[:3])}, got {tuple(sources.shape)}")
    change = (frames[1:] - frames[:-1]).abs().mean(-1)
    switched = sources[1:] != sources[:-1]
    check(bool(switched.any()), "no pixel switches level between any two frames")
    return (change[switched].mean() / frame_differences(frames).median()).item()


def handover_ratio(frames: torch.Tensor, frames_per_level: int) -> float:
    """Whole-frame change into each whole-level frame ÷ the median frame change of the video.

    At frame ``f`` with ``f % frames_per_level == 0`` the zoom's base level becomes the next
    level. Returns ``mean_{those f} D_f / median_f D_f`` with ``D`` the
    :func:`frame_differences` (dominated by the zoom motion itself on textured content).

    >>> handover_ratio(torch.tensor([0., 1, 3, 4, 5]).reshape(5, 1, 1, 1), 2)
    1.5
    """
    check(frames_per_level >= 1, f"frames_per_level must be >= 1, got {frames_per_level}")
    diffs = frame_differences(frames)
    check(frames.shape[0] > frames_per_level, f"frames must span at least one level switch, got {frames.shape[0]} "
                                              f"frames at {frames_per_level} frames per level")
    switches = torch.arange(frames_per_level, frames.shape[0], frames_per_level, device=diffs.device) - 1
    return (diffs[switches].mean() / diffs.median()).item()
