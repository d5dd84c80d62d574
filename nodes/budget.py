"""Refuse a canvas that cannot fit and warn about an expensive one, before sampling allocates (issue [F] 2).

The arithmetic is :mod:`core.canvas.budget` (and :func:`core.zoom.video.video_bytes`); this module reads the UNet's
levels from the host's model, the free memory from ``comfy.model_management.get_free_memory`` and words the
messages. Three entry points:

* :func:`check_canvas_budget` — for the samplers, once per canvas plan, before any window is cropped;
* :func:`check_merged_call` — Vista MAD Attention's last line of defence: a ``DIFFUSION_MODEL`` wrapper
  checks every merged model call (all windows in one batch) before the network allocates anything;
* :func:`check_video_budget` — Vista Zoom Video, before the first frame is rendered.
"""
from __future__ import annotations

import comfy.ldm.modules.attention as comfy_attention
import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
import comfy.model_management
import torch

from ..core.canvas.budget import (GIB, TIGHT_FRACTION, CanvasBudget, UNetGeometry, estimate_canvas_budget,
                                  merged_attention_bytes, unet_window_elements)
from ..core.checks import VistaInputError
from ..core.zoom.video import WORKING_FRAMES, frame_count, video_bytes
from .notify import warn_user

__all__ = ["unet_geometry", "compute_dtype", "check_canvas_budget", "check_merged_call", "check_video_budget"]

BUDGET_CACHE_KEY = "vista_budget_checked"


def unet_geometry(diffusion_model) -> UNetGeometry | None:
    """The levels of a host ``UNetModel`` (model channels, multipliers, res blocks, attention per level); None otherwise.

    The attention levels are read from the input blocks (a ``Downsample`` starts the next level) and the middle
    block (the deepest level), the heads from the model's ``num_heads`` / ``num_head_channels``.
    """
    channels, mult = getattr(diffusion_model, "model_channels", None), getattr(diffusion_model, "channel_mult", None)
    res_blocks, blocks = getattr(diffusion_model, "num_res_blocks", None), getattr(diffusion_model, "input_blocks", None)
    if not (isinstance(channels, int) and mult and res_blocks and blocks is not None):
        return None
    attention, level = [False] * len(mult), 0
    for block in list(blocks)[1:]:
        if any(isinstance(layer, openaimodel.Downsample) for layer in block):
            level = min(level + 1, len(mult) - 1)
        elif any(isinstance(layer, comfy_attention.SpatialTransformer) for layer in block):
            attention[level] = True
    middle = getattr(diffusion_model, "middle_block", None) or []
    attention[-1] |= any(isinstance(layer, comfy_attention.SpatialTransformer) for layer in middle)
    finest = next((lvl for lvl, on in enumerate(attention) if on), 0)
    head_channels = getattr(diffusion_model, "num_head_channels", -1)
    heads = (channels * mult[finest] // head_channels if head_channels and head_channels > 0
             else getattr(diffusion_model, "num_heads", 8))
    return UNetGeometry(channels, tuple(mult), tuple(res_blocks), tuple(attention), max(1, int(heads)))


def window_bytes(model_patcher, geometry: UNetGeometry | None, window_hw, dtype) -> int:
    """Activation bytes one window adds to a model call: the UNet estimate, or the host's own for other networks."""
    if geometry is not None:
        return unet_window_elements(geometry, window_hw) * dtype.itemsize
    channels = model_patcher.get_model_object("latent_format").latent_channels
    return int(model_patcher.model.memory_required([1, channels, *window_hw]))


def _px(hw, factor: int | None) -> str:
    """``"W x H px (w x h latent px)"``, or latent px alone without a factor."""
    h, w = hw
    latent = f"{w}x{h} latent px"
    return f"{w * factor}x{h * factor} px ({latent})" if factor else latent


def _windows(n: int) -> str:
    """``"1 window"``, ``"1,089 windows"``."""
    return f"{n:,} window" + ("" if n == 1 else "s")


def _gb(n: int) -> str:
    return f"{n / GIB:,.1f} GB"


def describe_run(canvas_hw, window_hw, stride_hw, samples: int, factor: int | None) -> str:
    """The inputs a budget message names: canvas, window, stride and batch."""
    stride = f" at stride {_px(stride_hw, factor)}" if stride_hw else ""
    return f"a {_px(canvas_hw, factor)} canvas with {_px(window_hw, factor)} windows{stride}, batch {samples}"


def refusal(node: str, budget: CanvasBudget, run: str, free: int, device, mad: bool) -> str:
    """The ValueError message: the numbers, and what to change."""
    merged = f" + {_gb(budget.merged_attention_bytes)} for MAD's merged attention" if mad else ""
    change = ("MAD needs every window of a step in one model call: lower the canvas size, raise stride_x/stride_y "
              "(fewer windows) or use larger windows, or drop Vista MAD Attention (or set tau 0) so that "
              "window_batch_size windows go per call" if mad else
              "lower window_batch_size, the window size or the canvas size")
    return (f"{node}: {run}: {_windows(budget.windows_per_step)} per step ({budget.evaluations_per_step:,} window "
            f"evaluations with CFG); one model call of {_windows(budget.windows_per_call)} needs an estimated "
            f"{_gb(budget.total_bytes)} ({_gb(budget.activation_bytes)} of window activations{merged}), but only "
            f"{_gb(free)} is free on {device}. Refused before the model runs; {change}")


def warnings_for(node: str, budget: CanvasBudget, run: str, free: int, device) -> list[str]:
    """Warnings for a run that fits: too many windows per step, or memory close to the limit."""
    out = []
    if budget.expensive:
        out.append(f"{node}: {run}: {_windows(budget.windows_per_step)} per step ({budget.evaluations_per_step:,} "
                   f"window evaluations per step with CFG, each step about {budget.windows_per_step:,}x the cost of one "
                   f"window's step); raise stride_x/stride_y or lower the canvas size if that is not intended")
    if budget.tight(free):
        out.append(f"{node}: {run}: one model call of {_windows(budget.windows_per_call)} needs an estimated "
                   f"{_gb(budget.total_bytes)} of the {_gb(free)} free on {device}; it may run out of memory")
    return out


def compute_dtype(model_patcher) -> torch.dtype:
    """The dtype the network computes in: the manual-cast dtype when the host casts weights per layer, else the weights'."""
    return getattr(model_patcher.model, "manual_cast_dtype", None) or model_patcher.model_dtype()


def check_canvas_budget(node: str, model_patcher, canvas_hw_latent, windows_per_step: int, batch_size: int,
                        mad_active: bool, dtype=None, *, window_hw_latent, stride_hw_latent=None, samples: int = 1,
                        factor: int | None = None) -> None:
    """Refuse (ValueError) a windowed run whose largest model call cannot fit; warn when it is expensive or tight.

    Call it once per canvas plan, before cropping any window. The estimate (:mod:`core.canvas.budget`) counts one
    conditioning per call (the least ComfyUI runs), so a refusal means even that cannot fit.

    Args:
        node: display name of the calling node (messages start with it).
        model_patcher: the MODEL being sampled (its UNet levels; its load device's free memory).
        canvas_hw_latent: canvas ``(H, W)`` in latent px.
        windows_per_step: windows of the plan.
        batch_size: windows per model call without MAD (the node's ``window_batch_size``).
        mad_active: whether a Vista MAD patch merges on some step (then all windows go in one call).
        dtype: the model's compute dtype; None: :func:`compute_dtype` (the manual-cast dtype, else the weights').
        window_hw_latent: window ``(h, w)`` in latent px.
        stride_hw_latent: stride ``(y, x)`` in latent px (named in the message only).
        samples: canvas samples ``B`` (the latent batch).
        factor: image px per latent px (messages give px when known).
    """
    geometry = unet_geometry(model_patcher.get_model_object("diffusion_model"))
    dtype = dtype if dtype is not None else compute_dtype(model_patcher)
    itemsize = torch.empty((), dtype=dtype).element_size()
    merged = merged_attention_bytes(geometry, canvas_hw_latent, samples, itemsize) if mad_active and geometry else 0
    budget = estimate_canvas_budget(window_bytes=window_bytes(model_patcher, geometry, window_hw_latent, dtype),
                                    windows_per_step=windows_per_step,
                                    windows_per_call=windows_per_step if mad_active else batch_size,
                                    samples=samples, merged_bytes=merged)
    run = describe_run(canvas_hw_latent, window_hw_latent, stride_hw_latent, samples, factor)
    _judge(node, budget, run, model_patcher.load_device, mad_active)


def _judge(node: str, budget: CanvasBudget, run: str, device, mad: bool) -> None:
    free = int(comfy.model_management.get_free_memory(device))
    if budget.exceeds(free):
        raise ValueError(refusal(node, budget, run, free, device, mad))
    for message in warnings_for(node, budget, run, free, device):
        warn_user(node, message)


def plan_stride(layout) -> tuple[int, int] | None:
    """The plan's stride (y, x) in latent px, read from its window offsets (None for a single window)."""
    first, steps = layout.windows[0], []
    for offsets, size in (({w.y for w in layout.windows}, first.h), ({w.x for w in layout.windows}, first.w)):
        ordered = sorted(offsets)
        steps.append(min((b - a for a, b in zip(ordered, ordered[1:])), default=size))
    return (steps[0], steps[1]) if len(layout.windows) > 1 else None


def check_merged_call(node: str, geometry: UNetGeometry | None, layout, x: torch.Tensor, factor: int | None,
                      device=None) -> None:
    """Refuse a merged (MAD) model call whose window batch ``x`` cannot fit, before the network runs.

    Counts exactly the call's batch (``x``: windows x samples x conditionings, in the model's compute
    dtype) and the merged attention of ``layout``'s canvas. Checked once per layout and call shape (the
    layout's cache); a refusal is not cached, so the next run checks again. It only refuses: the warnings
    (expensive, tight) are :func:`check_canvas_budget`'s, once per plan.
    """
    key = (BUDGET_CACHE_KEY, tuple(x.shape), str(x.dtype))
    if geometry is None or layout.cache.get(key):
        return
    window_hw = (layout.windows[0].h, layout.windows[0].w)
    conditionings = max(1, x.shape[0] // (layout.n_windows * layout.batch))
    try:
        budget = estimate_canvas_budget(
            window_bytes=unet_window_elements(geometry, window_hw) * x.element_size(), windows_per_step=layout.n_windows,
            windows_per_call=layout.n_windows, samples=layout.batch, conditionings=conditionings,
            merged_bytes=merged_attention_bytes(geometry, layout.canvas_hw, conditionings * layout.batch, x.element_size()))
    except VistaInputError as e:
        raise ValueError(f"{node}: {e}") from e
    device = device if device is not None else x.device
    free = int(comfy.model_management.get_free_memory(device))
    if budget.exceeds(free):
        run = describe_run(layout.canvas_hw, window_hw, plan_stride(layout), layout.batch, factor)
        raise ValueError(refusal(node, budget, run, free, device, True))
    layout.cache[key] = True


def video_fit(levels: int, frame_bytes: int, free: int) -> int:
    """The largest frames_per_level whose video fits in ``free`` bytes (0: not even one; any for one level)."""
    frames = free // frame_bytes - WORKING_FRAMES
    return max(0, (frames - 1) // (levels - 1)) if levels > 1 else (1 if frames >= 1 else 0)


def check_video_budget(node: str, images: torch.Tensor, frames_per_level: int) -> None:
    """Refuse (ValueError) a zoom video whose frames cannot fit in the free memory of the images' device, before
    rendering; warn when it takes most of it (the saving nodes after it need memory too).

    The frames are one ``(F, H, W, C)`` tensor of the images' dtype (:func:`core.zoom.video.video_bytes`), with
    ``F = (N − 1) · frames_per_level + 1``: 32 levels x 1000 frames of 512 px is 31,001 frames, 91 GiB in float32.
    """
    n, h, w, c = images.shape
    need = video_bytes(n, frames_per_level, h, w, c, images.element_size())
    free = int(comfy.model_management.get_free_memory(images.device))
    run = (f"{frame_count(n, frames_per_level):,} frames ((levels {n} - 1) x frames_per_level {frames_per_level} + 1) "
           f"of {w}x{h} px")
    if need > free:
        fit = video_fit(n, h * w * c * images.element_size(), free)
        fix = (f"lower frames_per_level (at most {fit} fits now) or scale the images down" if fit else
               "scale the images down (not even one frame per level fits)")
        raise ValueError(f"{node}: {run} need an estimated {_gb(need)}, but only {_gb(free)} is free on "
                         f"{images.device}. Refused before rendering; {fix}")
    if need > TIGHT_FRACTION * free:
        warn_user(node, f"{node}: {run} need an estimated {_gb(need)} of the {_gb(free)} free on {images.device}; "
                        f"saving them needs more, so it may run out of memory (lower frames_per_level)")
