"""MultiDiffusion in prediction space: denoise windows in batches, fuse their predictions.

For one model evaluation at noise level sigma (msd paper Eq. 6, syncdiffusion Eq. 12):

    x0_hat(p) = sum_i w_i(p) D(crop_i(x), sigma)(p) / sum_i w_i(p)

Any sampler that takes a step linear in ``x0_hat`` (euler/DDIM, linear multistep) then
takes exactly MultiDiffusion's step; see DESIGN.md, "Two ways of fusing windows".
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..checks import check, check_shape
from .windows import Window, accumulate_windows, crop_windows, total_weight

__all__ = ["WindowPredictor", "chunks", "multidiffusion_predict"]

WindowPredictor = Callable[[torch.Tensor, Sequence[Window]], torch.Tensor]
"""``predict(x_windows (G·n·B, C, h, w), windows) -> (G·n·B, C', h, w)``, in
:func:`~core.canvas.windows.crop_windows`' order (window-major inside each of ``G`` batch groups)."""


def chunks(windows: Sequence[Window], size: int) -> list[tuple[Window, ...]]:
    """Split a window plan into consecutive batches of at most ``size`` windows.

    >>> [len(c) for c in chunks([Window(0, i, 1, 1) for i in range(5)], 2)]
    [2, 2, 1]
    """
    check(size >= 1, f"window batch size must be >= 1, got {size}")
    return [tuple(windows[i : i + size]) for i in range(0, len(windows), size)]


def multidiffusion_predict(
    predict: WindowPredictor,
    x: torch.Tensor,
    windows: Sequence[Window],
    weights: torch.Tensor,
    batch_size: int,
    before_batch: Callable[[], None] | None = None,
    groups: int = 1,
) -> torch.Tensor:
    """Fused prediction of all windows of ``x`` (MultiDiffusion, one model evaluation).

    Args:
        predict: denoises a batch of window crops (see :data:`WindowPredictor`).
        x: noisy canvas latent.
        windows: window plan covering the canvas (:func:`~core.canvas.windows.plan_windows`).
        weights: ``(N, 1, h, w)`` fusion weights (:func:`~core.canvas.windows.window_weights`).
        batch_size: windows per ``predict`` call (memory budget).
        before_batch: called before each batch (interrupt checks, progress).
        groups: ``x``'s batch is ``groups`` equal groups that stay contiguous in every window batch
            (one per conditioning of a ComfyUI model call, ``len(cond_or_uncond)``); see
            :func:`~core.canvas.windows.crop_windows`.

    Shape: ``x (G·B, C, H, W)`` → ``(G·B, C', H, W)``.
    """
    check_shape(x, ["B", "C", "H", "W"])
    check(len(windows) == weights.shape[0], f"{len(windows)} windows but {weights.shape[0]} weight maps")
    check(batch_size >= 1, f"window batch size must be >= 1, got {batch_size}")
    H, W = x.shape[-2:]
    out = None
    for start, chunk in zip(range(0, len(windows), batch_size), chunks(windows, batch_size)):
        if before_batch is not None:
            before_batch()
        pred = predict(crop_windows(x, chunk, groups=groups), chunk)
        if out is None:  # accumulate in at least float32 (fp16 sums of many windows lose bits)
            out = pred.new_zeros(x.shape[0], pred.shape[1], H, W, dtype=torch.promote_types(pred.dtype, torch.float32))
        accumulate_windows(out, pred, chunk, weights[start : start + len(chunk)], groups)
    return (out / total_weight(tuple(windows), weights, H, W).to(out)).to(pred.dtype)
