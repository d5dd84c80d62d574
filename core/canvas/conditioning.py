"""Per-window model-call arguments: crop what is spatial, repeat what is per sample.

Everything spatial that a window sees must be cropped with it (DESIGN.md): ``c_concat``
(inpainting/instruct models), masks and ControlNet residuals, which arrive canvas-sized in
the model call. Per-sample tensors (prompt embeddings, pooled vectors, timesteps) are
repeated for every window, in the order of :func:`~core.canvas.windows.crop_windows`: window-major
inside each conditioning's chunk of the call, the chunks kept contiguous as ComfyUI batches them.
SDXL's ``y`` can also be told each window's crop offset and size
(:func:`~core.canvas.micro_conditioning.window_size_conditioning`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .micro_conditioning import window_size_conditioning
from .windows import Window, check_on_grid, crop_windows, grid_scale, repeat_for_windows

__all__ = ["feature_scale", "window_call_kwargs"]


def feature_scale(canvas_hw: Sequence[int], feature_hw: Sequence[int]) -> int:
    """Downscale of a feature map relative to the latent, e.g. a UNet block's ControlNet residual.

    The UNet's stride-2 convolutions round up level by level, so level ``l`` of an ``H``-row
    latent has ``ceil(H / 2^l)`` rows (:func:`~core.canvas.windows.grid_scale`).

    >>> feature_scale((64, 64), (16, 16)), feature_scale((65, 64), (9, 8)), feature_scale((8, 8), (8, 8))
    (4, 8, 1)
    """
    return grid_scale(tuple(canvas_hw), tuple(feature_hw))


def _crop_residual(t: torch.Tensor, canvas_hw: Sequence[int], windows: tuple[Window, ...], groups: int) -> torch.Tensor:
    """A ControlNet residual ``(G·B, C, H_s, W_s)`` cropped per window at its block scale, exactly or not at all."""
    scale = feature_scale(canvas_hw, t.shape[-2:])
    check_on_grid(windows, tuple(canvas_hw), scale, "ControlNet residual crops")
    return crop_windows(t, windows, scale, groups)


def window_call_kwargs(c: dict, canvas_hw: Sequence[int], windows: Sequence[Window],
                       size_factor: int | None = None, groups: int = 1) -> dict:
    """The keyword arguments of a canvas model call, rewritten for a batch of windows.

    Args:
        c: keyword arguments of the call (``c_crossattn``, ``c_concat``, ``y``, ``control``,
            ``transformer_options``, …). ``control`` is ``{block: [residual | None, …]}`` with
            residuals ``(B, C, H_s, W_s)`` at each UNet block's scale.
        canvas_hw: ``(H, W)`` of the canvas latent.
        windows: the ``n`` windows of this call.
        size_factor: image px per latent px when ``y`` is SDXL's vector and each window should be
            told its own crop offset and size (SDXL micro-conditioning); None repeats ``y`` as is.
        groups: conditionings batched in the call (``len(cond_or_uncond)``): each one's rows stay one
            contiguous chunk (:func:`~core.canvas.windows.crop_windows`). A tensor whose batch does not
            split into ``groups`` (e.g. one row shared by the whole call) is repeated window-major.

    Returns:
        A new dict: ``(G·B, C, H, W)`` tensors cropped to ``(G·n·B, C, h, w)``, residuals cropped at
        their block scale, other tensors with a batch dim repeated to ``G·n·B``, ``y`` per window
        with ``size_factor``, everything else passed through unchanged.

    Raises if a window is off a residual's block grid (:func:`~core.canvas.windows.check_on_grid`):
    its crop could only be taken a rounded position away from where the window lies.
    """
    windows = tuple(windows)
    out = {}
    for key, value in c.items():
        if key == "control" and value is not None:
            out[key] = {block: [None if t is None else _crop_residual(t, canvas_hw, windows, _groups_of(t, groups))
                                for t in residuals] for block, residuals in value.items()}
        elif isinstance(value, torch.Tensor) and value.ndim == 4 and tuple(value.shape[-2:]) == tuple(canvas_hw):
            out[key] = crop_windows(value, windows, groups=_groups_of(value, groups))
        elif isinstance(value, torch.Tensor) and value.ndim >= 1:
            out[key] = repeat_for_windows(value, len(windows), _groups_of(value, groups))
        else:
            out[key] = value
    if size_factor is not None and isinstance(out.get("y"), torch.Tensor):
        out["y"] = window_size_conditioning(out["y"], windows, size_factor, _groups_of(c["y"], groups))
    return out


def _groups_of(t: torch.Tensor, groups: int) -> int:
    """``groups`` where ``t``'s batch splits into that many chunks, else 1 (a row shared by the call)."""
    return groups if t.shape[0] % groups == 0 else 1
