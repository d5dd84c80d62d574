"""Windows over a latent canvas: planning, weight maps, cropping and fused pasting.

MultiDiffusion (Bar-Tal et al. 2023; msd paper Eq. 6, syncdiffusion Eq. 12) denoises a
large latent as overlapping windows and fuses them by a per-pixel weighted average

    x(p) = sum_i w_i(p) F_i(x)(p) / sum_i w_i(p).

Everything here works in **latent pixels**. A window plan is a tuple of plain-int
:class:`Window` records made by one pure function, :func:`plan_windows`, that covers
every canvas pixel or raises. With ``wrap_x`` the canvas is a horizontal cylinder (a
360° panorama): a window may run past the right edge and continue at column 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, repeat

from ..checks import check, check_shape

__all__ = [
    "Window",
    "WeightMode",
    "WEIGHT_MODES",
    "axis_offsets",
    "plan_windows",
    "weight_map",
    "window_weights",
    "total_weight",
    "crop_windows",
    "repeat_for_windows",
    "grid_scale",
    "scale_window",
    "off_grid_axes",
    "check_on_grid",
    "grid_canvas_sizes",
    "accumulate_windows",
    "fuse_windows",
]

WeightMode = Literal["uniform", "gaussian", "guided"]
WEIGHT_MODES: tuple[str, ...] = ("uniform", "gaussian", "guided")
GUIDED_FLOOR = 0.01  # smallest Guided Fusion weight: no canvas pixel ends with zero total weight


@dataclass(frozen=True)
class Window:
    """One window: top-left ``(y, x)`` and size ``(h, w)`` in latent pixels.

    With a wrapped canvas ``x + w`` may exceed the canvas width; columns are then
    taken modulo the width.
    """

    y: int
    x: int
    h: int
    w: int

    def columns(self, width: int) -> list[int]:
        """Canvas column of every window column (modulo ``width`` for wrapped windows)."""
        return [(self.x + i) % width for i in range(self.w)]

    def wraps(self, width: int) -> bool:
        """Whether the window runs past the right canvas edge (only on a wrapped canvas)."""
        return self.x + self.w > width


def axis_offsets(size: int, window: int, stride: int, wrap: bool = False, align: int = 1) -> list[int]:
    """Window start offsets along one axis that cover ``0..size-1``.

    Convention: offsets are ``0, s, 2s, …`` with ``s = stride`` rounded down to a multiple
    of ``align`` (at least ``align``). Without wrap the last offset is ``size - window``
    (so the far edge is always covered, even when ``stride`` does not divide
    ``size - window``); with wrap there are ``ceil(size / s)`` offsets on a circle.

    Args:
        size: canvas length (latent px).
        window: window length (latent px), ``1 <= window <= size``.
        stride: step between windows (latent px), ``1 <= stride <= window``.
        wrap: treat the axis as circular.
        align: offsets are multiples of this (UNet grid alignment), except the last
            non-wrapped offset when ``size - window`` is not.

    >>> axis_offsets(10, 4, 3)
    [0, 3, 6]
    >>> axis_offsets(11, 4, 3)
    [0, 3, 6, 7]
    >>> axis_offsets(12, 4, 4, wrap=True)
    [0, 4, 8]
    """
    check(window >= 1, f"window must be >= 1 latent px, got {window}")
    check(window <= size, f"window ({window} latent px) must not be larger than the canvas ({size} latent px)")
    check(1 <= stride <= window, f"stride must be in [1, window={window}] latent px, got {stride}")
    check(align >= 1, f"align must be >= 1, got {align}")
    step = max(align, stride // align * align)
    check(step <= window, f"stride {stride} rounded to a multiple of {align} exceeds the window {window}")
    if wrap:
        return [i * step for i in range(math.ceil(size / step))]
    if window == size:
        return [0]
    offsets = list(range(0, size - window, step))
    return offsets + [size - window]


def plan_windows(
    height: int,
    width: int,
    window_h: int,
    window_w: int,
    stride_h: int,
    stride_w: int,
    wrap_x: bool = False,
    align: int = 1,
) -> tuple[Window, ...]:
    """Plan windows that cover an ``height x width`` latent canvas.

    Args:
        height, width: canvas size (latent px).
        window_h, window_w: window size (latent px), at most the canvas size.
        stride_h, stride_w: window steps (latent px), in ``[1, window]``.
        wrap_x: horizontal wrap (360° panorama): windows continue past the right edge at column 0.
        align: window offsets are multiples of ``align`` (see :func:`axis_offsets`).

    Returns:
        Windows in row-major order. Every canvas pixel is covered by at least one window.

    >>> [(w.y, w.x) for w in plan_windows(8, 12, 8, 8, 8, 4)]
    [(0, 0), (0, 4)]
    """
    ys = axis_offsets(height, window_h, stride_h, wrap=False, align=align)
    xs = axis_offsets(width, window_w, stride_w, wrap=wrap_x, align=align)
    return tuple(Window(y, x, window_h, window_w) for y in ys for x in xs)


def weight_map(h: int, w: int, mode: WeightMode = "uniform", *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Per-pixel fusion weight of one ``h x w`` window, max 1, never 0.

    Modes:
        ``uniform``: all ones (MultiDiffusion).
        ``gaussian``: Mixture-of-Diffusers' separable Gaussian, variance 0.01 of the window
        size, normalised to 1 at the centre.
        ``guided``: Guided Fusion (GVCF §"Guided Fusion", Fig. 2): 1 at the centre, falling
        linearly with the distance to 0 at the corners, floored at ``GUIDED_FLOOR`` so that
        no canvas pixel ends with zero total weight.

    Convention: computed in float64 on the CPU, cast to ``dtype`` there and moved once (some
    devices, e.g. Apple MPS, have no float64). Keep weights in float32 (the default): the
    ``gaussian`` corners are ~exp(-25) ≈ 1e-11, which underflows to 0 in float16, and a
    ``dtype`` in which any weight becomes 0 is refused (a zero weight would silently drop that
    pixel of the window from the fusion).

    Shape: ``(h, w)``.

    >>> weight_map(3, 3, "gaussian")[0, 0].item() > 0
    True
    """
    check(mode in WEIGHT_MODES, f"weight mode must be one of {WEIGHT_MODES}, got {mode!r}")
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    if mode == "uniform":
        out = torch.ones(h, w, dtype=torch.float64)
    elif mode == "gaussian":
        var = 0.01
        gy = torch.exp(-(ys / h) ** 2 / (2 * var))
        gx = torch.exp(-(xs / w) ** 2 / (2 * var))
        out = gy[:, None] * gx[None, :]
    else:
        dist = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
        corner = math.hypot((h - 1) / 2, (w - 1) / 2) or 1.0
        out = (1 - dist / corner).clamp_min(GUIDED_FLOOR)
    out = (out / out.max()).to(dtype=dtype)
    zeros = int((out <= 0).sum())
    check(zeros == 0, f"{mode} weights of a {h}x{w} window underflow to 0 in {dtype} at {zeros} of {h * w} pixels; "
                      f"ask for float32 (the default) or float64: fusion sums in float32 whatever the latent's dtype")
    return out.to(device=device)


def window_weights(windows: tuple[Window, ...], mode: WeightMode = "uniform", *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Weight maps of all windows, ``(N, 1, h, w)`` (windows of one plan share a size).

    Keep them float32 whatever the latent's dtype (see :func:`weight_map`); fusion sums in
    float32 and casts only its result. A ``dtype`` in which a weight underflows to 0 (``gaussian``
    in float16) is refused.
    """
    check(len(windows) > 0, "windows must not be empty")
    h, w = windows[0].h, windows[0].w
    check(all((win.h, win.w) == (h, w) for win in windows), "all windows of a plan must have the same size")
    return weight_map(h, w, mode, dtype=dtype, device=device).expand(len(windows), 1, h, w)


def _column_index(win: Window, width: int, device) -> torch.Tensor | slice:
    """Column selector of a window: a slice, or an index tensor for a wrapped window."""
    if not win.wraps(width):
        return slice(win.x, win.x + win.w)
    return torch.tensor(win.columns(width), device=device)


def crop_windows(x: torch.Tensor, windows: tuple[Window, ...] | list[Window], scale: int = 1,
                 groups: int = 1) -> torch.Tensor:
    """Crop windows out of a canvas tensor, window-major within each of ``groups`` batch groups.

    ``scale`` > 1 crops a feature map at ``1/scale`` of the latent resolution (ControlNet
    residuals, attention grids): offsets and sizes are divided by ``scale`` (rounded, and
    clamped to fit the map).

    Convention (batch index ``g·N·B + n·B + b``): the canvas batch is ``groups`` consecutive
    groups of ``B`` samples (``groups`` = the conditionings ComfyUI batched into one model call,
    one per entry of ``cond_or_uncond``); each group's crops stay together, window-major inside,
    so every entry of ``cond_or_uncond`` still covers one contiguous chunk of equal size, as in
    ComfyUI's own batches (patches that split the batch by that list see what they expect).
    ``groups = 1`` is plain window-major order (``n·B + b``). ComfyUI repeats a conditioning of
    batch ``B`` to a larger batch by tiling it (``c_0, c_1, …, c_0, c_1, …``), so in a window-major
    batch every window of sample ``b`` meets sample ``b``'s prompt.

    Shape: ``x (G·B, C, H, W)`` → ``(G·N·B, C, h, w)``.

    >>> crop_windows(torch.arange(8.).view(2, 1, 1, 4), [Window(0, 0, 1, 2), Window(0, 2, 1, 2)])[:, 0, 0].tolist()
    [[0.0, 1.0], [4.0, 5.0], [2.0, 3.0], [6.0, 7.0]]
    >>> crop_windows(torch.arange(8.).view(2, 1, 1, 4), [Window(0, 0, 1, 2), Window(0, 2, 1, 2)], groups=2)[:, 0, 0].tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]
    """
    check_shape(x, ["B", "C", "H", "W"])
    _check_groups(x.shape[0], groups, "x")
    crops = []
    H, W = x.shape[-2:]
    for win in windows:
        sw = scale_window(win, scale, H, W)
        crops.append(x[:, :, sw.y : sw.y + sw.h][..., _column_index(sw, W, x.device)])
    return rearrange(torch.stack(crops), "n (g b) c h w -> (g n b) c h w", g=groups)


def repeat_for_windows(t: torch.Tensor, n: int, groups: int = 1) -> torch.Tensor:
    """Repeat a per-sample tensor for ``n`` windows in :func:`crop_windows`' order (index ``g·n·B + i·B + b``).

    With ``groups = 1`` this is window-major, the order of ComfyUI's own conditioning repeat.

    Shape: ``(G·B, ...)`` → ``(G·n·B, ...)``.

    >>> repeat_for_windows(torch.tensor([1., 2.]), 3).tolist()
    [1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    >>> repeat_for_windows(torch.tensor([1., 2.]), 3, groups=2).tolist()
    [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    """
    _check_groups(t.shape[0], groups, "t")
    return repeat(t, "(g b) ... -> (g n b) ...", g=groups, n=n)


def _check_groups(batch: int, groups: int, name: str) -> None:
    """The batch splits into ``groups`` equal groups (one per conditioning of a model call)."""
    check(groups >= 1 and batch % groups == 0,
          f"{name} batch {batch} must split into groups={groups} equal groups (one per entry of cond_or_uncond)")


def grid_scale(size_hw: tuple[int, int], grid_hw: tuple[int, int]) -> int:
    """Downscale of a feature grid made by stride-2 convolutions: the smallest power of two ``s``
    with ``(ceil(H/s), ceil(W/s)) == grid_hw``.

    A UNet level halves its grid rounding up (``ceil``), level by level, and
    ``ceil(ceil(H/2)/2) = ceil(H/4)``, so level ``l`` has ``ceil(H/2^l)`` rows. Rounding
    ``H / h_s`` instead is wrong where the ceil matters (``H = 65``: 9 rows at scale 8,
    ``round(65/9) = 7``).

    Args:
        size_hw: ``(H, W)`` of the input (latent px).
        grid_hw: ``(h_s, w_s)`` of the feature grid.

    Raises if no power of two maps ``size_hw`` onto ``grid_hw``.

    >>> grid_scale((64, 64), (8, 8)), grid_scale((65, 97), (9, 13)), grid_scale((60, 20), (8, 3))
    (8, 8, 8)
    """
    (h, w), (gh, gw) = size_hw, grid_hw
    check(min(h, w, gh, gw) >= 1, f"size_hw {tuple(size_hw)} and grid_hw {tuple(grid_hw)} must be >= 1")
    s = 1
    while s < 2 * max(h, w):
        if (math.ceil(h / s), math.ceil(w / s)) == (gh, gw):
            return s
        s *= 2
    check(False, f"grid {tuple(grid_hw)} is not {tuple(size_hw)} downscaled by a power of two (ceil, as stride-2 convolutions)")
    return s


def scale_window(win: Window, scale: int, H: int, W: int) -> Window:
    """A window mapped onto a feature grid of size ``(H, W)`` at ``1/scale`` resolution.

    Convention: offsets are rounded, sizes are ceil-divided and clamped to the grid, so a
    grid made by stride-2 convolutions (ceil) lines up when offsets are multiples of ``scale``.
    An offset that is not lies between two grid cells and is rounded: callers that place
    features (MAD's tokens, ControlNet residuals) refuse such windows first (:func:`check_on_grid`).

    >>> scale_window(Window(0, 16, 64, 64), 4, 16, 40)
    Window(y=0, x=4, h=16, w=16)
    """
    if scale == 1:
        return win
    h, w = min(H, math.ceil(win.h / scale)), min(W, math.ceil(win.w / scale))
    y = min(round(win.y / scale), H - h)
    x = round(win.x / scale) % W
    return Window(y, x, h, w)


def off_grid_axes(windows, canvas_hw: tuple[int, int], scale: int) -> tuple[str, ...]:
    """The axes (``"height"``, ``"width"``) on which a window's ``1/scale`` feature grid misses the canvas'.

    A UNet block at downscale ``s`` sees a window ``(y, x, h, w)`` as ``ceil(h/s) x ceil(w/s)`` tokens,
    token ``(r, c)`` starting at latent px ``(y + s·r, x + s·c)``; the canvas' grid (``ceil(H/s) x ceil(W/s)``,
    :func:`grid_scale`) has token ``(R, C)`` starting at ``(s·R, s·C)``. Every window token starts a canvas
    token iff ``y`` and ``x`` are multiples of ``s`` and, where a window wraps past the right edge, ``W`` is
    one too (its column ``x + s·c − W`` must start a token). Elsewhere :func:`scale_window` can only round.

    Args:
        windows: the plan (latent px).
        canvas_hw: canvas ``(H, W)`` in latent px.
        scale: the feature grid's downscale (1, 2, 4, …).

    >>> off_grid_axes([Window(0, 0, 128, 128), Window(0, 131, 128, 128)], (128, 259), 4)
    ('width',)
    >>> off_grid_axes([Window(0, 0, 8, 8), Window(0, 8, 8, 8)], (8, 12), 4)  # wraps on a width of 12
    ()
    """
    check(scale >= 1, f"scale must be >= 1, got {scale}")
    H, W = canvas_hw
    rows = any(win.y % scale for win in windows)
    cols = any(win.x % scale or (win.wraps(W) and W % scale) for win in windows)
    return tuple(axis for axis, off in (("height", rows), ("width", cols)) if off)


def check_on_grid(windows, canvas_hw: tuple[int, int], scale: int, what: str) -> None:
    """Raise unless every window's ``1/scale`` feature grid lies on the canvas' (:func:`off_grid_axes`).

    ``what`` names what would otherwise land at a rounded canvas position (MAD's merged tokens,
    ControlNet residual crops). The node layer plans such runs with ``align`` and refuses canvas sizes
    whose last window is off the grid before this is reached (:func:`grid_canvas_sizes`).
    """
    axes = off_grid_axes(windows, canvas_hw, scale)
    if axes:
        win = next(w for w in windows if off_grid_axes((w,), canvas_hw, scale))
        check(False, f"the window at (y={win.y}, x={win.x}) latent px of the {canvas_hw[0]}x{canvas_hw[1]} canvas is "
                     f"off the 1/{scale} grid ({' and '.join(axes)}): {what} would land at a rounded position; window "
                     f"offsets (and a wrapped canvas width) must be multiples of {scale} latent px")


def grid_canvas_sizes(size: int, window: int, align: int, wrap: bool = False) -> tuple[int, ...]:
    """The canvas sizes nearest ``size`` (one at most below, one above) whose plan lies on the ``align`` grid.

    Without wrap the last offset is ``size − window`` (:func:`axis_offsets`), so the sizes that work are
    ``window + k·align``; with wrap every offset is a multiple of ``align`` and the canvas must be one too.

    Args:
        size: canvas length (latent px).
        window: window length (latent px), at most ``size``.
        align: the grid (latent px), ``>= 1``.
        wrap: the axis is circular.

    >>> grid_canvas_sizes(259, 128, 4), grid_canvas_sizes(259, 128, 4, wrap=True), grid_canvas_sizes(3, 3, 4, wrap=True)
    ((256, 260), (256, 260), (4,))
    """
    check(align >= 1, f"align must be >= 1, got {align}")
    check(1 <= window <= size, f"window ({window} latent px) must be in [1, size={size}]")
    base = size // align * align if wrap else window + (size - window) // align * align
    if base == size:
        return (size,)
    return tuple(n for n in (base, base + align) if n >= 1)


def total_weight(windows: tuple[Window, ...], weights: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sum of all window weights at every canvas pixel (the fusion denominator).

    Shape: ``weights (N, 1, h, w)`` → ``(1, 1, H, W)``, at least float32.
    """
    dtype = torch.promote_types(weights.dtype, torch.float32)
    canvas = torch.zeros(1, 1, height, width, dtype=dtype, device=weights.device)
    accumulate_windows(canvas, torch.ones(len(windows), 1, 1, 1, dtype=dtype, device=weights.device), windows, weights)
    return canvas


def accumulate_windows(canvas: torch.Tensor, values: torch.Tensor, windows, weights: torch.Tensor,
                       groups: int = 1) -> None:
    """Add ``w_i * v_i`` of every window into ``canvas`` in place (a fusion numerator).

    Args:
        canvas: ``(G·B, C, H, W)`` accumulator.
        values: ``(G·N·B, C, h, w)`` window values in :func:`crop_windows`' order (broadcastable).
        windows: the ``N`` windows these values belong to.
        weights: ``(N, 1, h, w)`` their weights (cast to the canvas dtype).
        groups: batch groups ``G`` of ``values`` (see :func:`crop_windows`); 1: window-major.
    """
    W = canvas.shape[-1]
    check(groups >= 1 and values.shape[0] % (groups * len(windows)) == 0,
          f"values batch {values.shape[0]} must be groups={groups} x {len(windows)} windows x samples")
    per_window = rearrange(values, "(g n b) c h w -> n (g b) c h w", g=groups, n=len(windows))
    for win, v, wt in zip(windows, per_window, weights.to(canvas)):
        rows = canvas[:, :, win.y : win.y + win.h]
        if win.wraps(W):
            rows.index_add_(-1, torch.tensor(win.columns(W), device=canvas.device), (v * wt).to(canvas.dtype))
        else:
            rows[..., win.x : win.x + win.w] += v * wt


def fuse_windows(
    values: torch.Tensor,
    windows: tuple[Window, ...],
    weights: torch.Tensor,
    denominator: torch.Tensor,
) -> torch.Tensor:
    """Weighted average of window values on the canvas (MultiDiffusion's fusion step).

    Args:
        values: per-window tensors, window-major ``(N·B, C, h, w)``.
        windows: the plan (``N`` windows).
        weights: ``(N, 1, h, w)`` window weights.
        denominator: ``(1, 1, H, W)`` from :func:`total_weight` (positive everywhere).

    Returns:
        ``(B, C, H, W)``: ``sum_i w_i v_i / sum_i w_i`` per pixel, summed in at least float32
        and returned in ``values``' dtype.
    """
    n = len(windows)
    check(values.shape[0] % n == 0, f"values batch {values.shape[0]} is not a multiple of the {n} windows")
    acc = torch.promote_types(values.dtype, torch.float32)
    canvas = values.new_zeros(values.shape[0] // n, values.shape[1], *denominator.shape[-2:], dtype=acc)
    accumulate_windows(canvas, values, windows, weights)
    return (canvas / denominator.to(canvas)).to(values.dtype)
