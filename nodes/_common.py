"""Shared glue between ComfyUI objects and core/: units, errors, interrupts, window plans, validation."""
from __future__ import annotations

import math
from dataclasses import dataclass

import comfy.model_base
import comfy.model_management
import comfy.model_sampling
import comfy.utils
from comfy_api.latest import io

import torch

from ..core.mad.attention_merge import MAD_LAYOUT_KEY, MAD_TAU_KEY, MadLayout
from ..core.checks import VistaInputError
from ..core.canvas.windows import (WEIGHT_MODES, Window, grid_canvas_sizes, off_grid_axes, plan_windows,
                                   window_weights)
from .notify import warn_user


HOST_DEFAULT_LATENT_FACTOR = 8  # what v0.3.64's own EmptyLatentImage assumes for every image model


def latent_factor(model) -> int:
    """Image pixels per latent pixel for this model, from its latent format.

    v0.33.0 publishes ``spacial_downscale_ratio`` on every latent format; v0.3.64 does not
    (its EmptyLatentImage hard-codes 8), so there the host's own convention applies.
    """
    fmt = model.get_model_object("latent_format")
    return int(getattr(fmt, "spacial_downscale_ratio", HOST_DEFAULT_LATENT_FACTOR))


def takes_size_conditioning(model) -> bool:
    """Whether the model reads SDXL's size/crop micro-conditioning from ``y``.

    ComfyUI builds ``comfy.model_base.SDXL`` (whose ``encode_adm`` appends the six size fields) for SDXL
    and every checkpoint it detects as its relative (SSD-1B, Segmind Vega, KOALA, Playground, …);
    the refiner (``SDXLRefiner``) has another layout and is not one of them.
    """
    return isinstance(model.model, comfy.model_base.SDXL)


def size_conditioning_input() -> io.Boolean.Input:
    """The per-window SDXL micro-conditioning switch shared by the windowed nodes (optional: older
    workflows without it load with the default)."""
    return io.Boolean.Input(
        "window_size_conditioning", default=True, optional=True,
        tooltip="SDXL-family models only (no effect on others): tell each window its own crop and size in SDXL's "
                "micro-conditioning: original size = the canvas, crop = the window's offset in px, target size = "
                "the window size, which is what the UNet sees (SDXL was trained that way). Off: every window is "
                "told it is the whole canvas at crop (0, 0), ComfyUI's default for the canvas.")


def is_flow_matching(model) -> bool:
    """Whether the model samples by flow matching (ComfyUI's CONST sampling: SD3, Flux, AuraFlow, …)."""
    return isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)


def step_form(model) -> dict:
    """The keyword arguments that tell a core sampler which ancestral step the model needs.

    ``flow_matching``: ComfyUI's RF step (``sample_euler_ancestral_RF``) for CONST models, else k-diffusion's;
    ``noise_scale``: ``model_sampling.noise_scale`` where the host has it (v0.33.0 multiplies the RF step's
    ``s_noise`` by it), else 1 — the same ``getattr`` default the host's sampler uses.
    """
    sampling = model.get_model_object("model_sampling")
    return {"flow_matching": is_flow_matching(model), "noise_scale": float(getattr(sampling, "noise_scale", 1.0))}


def patch_size(model) -> int:
    """Latent px per token side of a DiT's patchify (2 for SD3 and Flux); 1 for a UNet (no patch grid)."""
    size = getattr(model.get_model_object("diffusion_model"), "patch_size", 1)
    return int(size[-1] if isinstance(size, (tuple, list)) else size)


def check_patch_grid(node: str, model, **sizes: int) -> None:
    """Every window size must be a whole number of the DiT's patches (16 px on SD3/Flux); no-op for UNets.

    A DiT pads a window that is not (``pad_to_patch_size``) and crops the padded tokens off again, so such a
    window wastes a token row/column and its edge pixels share a patch with padding.
    """
    patch = patch_size(model)
    grid = latent_factor(model) * patch
    for name, px in sizes.items():
        if patch > 1 and px % grid:
            raise ValueError(f"{node}: {name}={px} px must be a multiple of {grid} px for this model (its DiT "
                             f"patchifies {patch}x{patch} latent px = {grid} px); "
                             f"use {max(grid, px // grid * grid)} or {(px // grid + 1) * grid}")


def core_error(node: str, error: Exception) -> ValueError:
    """A core/ precondition failure as a plain ValueError prefixed with the node name.

    ComfyUI prints an exception's type by module path; the pack's own exception class would show as a file path,
    so nodes re-raise core errors as ValueError: ``raise core_error(NODE, e) from e``.
    """
    return ValueError(f"{node}: {error}")


def check_image_latent(node: str, name: str, x) -> None:
    """The latent must be an image latent ``(B, C, H, W)`` (not a video/audio latent), named by node and input."""
    if getattr(x, "is_nested", False) or x.ndim != 4:
        shape = "nested" if getattr(x, "is_nested", False) else tuple(x.shape)
        raise ValueError(f"{node}: {name} must be an image latent of shape (batch, channels, height, width), got "
                         f"{shape}; video and audio latents are not supported")


def check_latent_values(node: str, name: str, x: torch.Tensor, model_patcher) -> None:
    """The user's latent must fit the model and hold numbers: ``C`` = the model's latent channels, all finite.

    Call it once per run, before the first model call (one reduction and one host sync). ComfyUI has already given
    an all-zero (empty) latent the model's channel count (``comfy.sample.fix_empty_latent_channels``), so a
    mismatch here is a latent with content from another model family; NaN/Inf would silently turn the whole
    canvas into NaN through the fusion.
    """
    channels = getattr(model_patcher.get_model_object("latent_format"), "latent_channels", None)
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{node}: {name} has {x.shape[1]} channels but this model's latents have {channels}; "
                         f"encode the image with this model's VAE (or start from an Empty Latent Image) — a latent "
                         f"made for another model family cannot be sampled here")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        nan = int(torch.isnan(x).sum())
        parts = [f"{n} {what}" for n, what in ((nan, "NaN"), (int((~finite).sum()) - nan, "Inf")) if n]
        raise ValueError(f"{node}: {name} holds {' and '.join(parts)} values of {x.numel()}; every value must be "
                         f"finite — check the nodes that made it (e.g. a LatentMultiply chain or a corrupt .latent file)")


def check_option(node: str, name: str, value: str, options) -> None:
    """A COMBO value must be one of ``options`` (v0.3.64 does not check V3 combo values at /prompt)."""
    if value not in options:
        raise ValueError(f"{node}: {name}={value!r} is not one of {', '.join(map(repr, options))}")


def unet_alignment(model) -> int:
    """2^(levels-1): the latent grid every UNet block lines up with (8 for SD1.5, 1 if unknown)."""
    channel_mult = getattr(model.get_model_object("diffusion_model"), "channel_mult", None)
    return 2 ** (len(channel_mult) - 1) if channel_mult else 1


def throw_if_interrupted() -> None:
    """Honour ComfyUI's interrupt button between window batches."""
    comfy.model_management.throw_exception_if_processing_interrupted()


class WindowBatchProgress:
    """Progress to the UI per window batch, on the sampler's own scale.

    ComfyUI's samplers report ``(i + 1) / steps`` after each step, which on a large canvas can be minutes
    apart. Before window batch ``b`` (of ``n``) of step ``i`` this reports ``(i·n + b) / (steps·n)`` — the
    same fraction scale, so the bar moves every batch and meets the sampler's value at each step's end
    (``b = 0`` is that value and is left to the sampler). Reports only move forward (second-order samplers
    call the model more than once per step). Every batch also honours the interrupt button.
    """

    def __init__(self):
        self.step, self.steps, self.batches, self.batch, self.best = 0, 1, 1, 0, 0.0

    def start_step(self, step: int, steps: int, batches: int) -> None:
        if step == 0 and self.step != 0:
            self.best = 0.0  # a new run
        self.step, self.steps, self.batches, self.batch = step, max(steps, 1), max(batches, 1), 0

    def before_batch(self) -> None:
        self.report(self.batch)
        self.batch += 1

    def report(self, done: int) -> None:
        """``done`` of this step's units are finished: honour the interrupt button, and move the bar to
        ``(i·n + done) / (steps·n)`` when ``0 < done < n`` and that is further than before."""
        throw_if_interrupted()
        value, total = self.step * self.batches + done, self.steps * self.batches
        if 0 < done < self.batches and value / total > self.best:
            self.best = value / total
            comfy.utils.ProgressBar(total).update_absolute(value, total)


def unet_blocks(model) -> tuple[int, int]:
    """``(input blocks, output blocks)`` of the model's UNet; ``(0, 0)`` for other networks (DiTs)."""
    diffusion_model = model.get_model_object("diffusion_model")
    return tuple(len(getattr(diffusion_model, name, None) or ()) for name in ("input_blocks", "output_blocks"))


def with_block_progress(options: dict, progress: WindowBatchProgress, blocks: tuple[int, int]) -> dict:
    """A copy of ``transformer_options`` whose UNet reports ``progress`` inside one model call.

    For a call that is a whole step (a MAD merged call of every window, a zoom stack's batched levels): the
    step's units are the UNet's ``n_in + n_out`` blocks (:func:`unet_blocks`); the bar moves after each input
    block and before each output block (the host's public ``input_block_patch`` / ``output_block_patch``, the
    entries ``ModelPatcher.set_model_input_block_patch`` / ``set_model_output_block_patch`` fill, added for this
    call only, after any the model has), and each report honours the interrupt button. The patches return the
    activations unchanged. Start the step with ``progress.start_step(i, steps, n_in + n_out)``.
    """
    n_in = blocks[0]

    def after_input(h, transformer_options):
        progress.report(transformer_options["block"][1] + 1)
        return h

    def before_output(h, hsp, transformer_options):
        progress.report(n_in + transformer_options["block"][1])
        return h, hsp

    patches = dict(options.get("patches", {}))
    patches["input_block_patch"] = [*patches.get("input_block_patch", []), after_input]
    patches["output_block_patch"] = [*patches.get("output_block_patch", []), before_output]
    return {**options, "patches": patches}


def clamp_notice(node: str, name: str, px: int, size_px: int, side: str, what: str = "window") -> str:
    """The one rule for a window (or tile) larger than the canvas, on every node: clamp it, and say so.

    Clamping (rather than refusing) is needed because ComfyUI calls the model on the area crop for area
    conditioning, which can be smaller than any sane window.
    """
    return (f"{node}: {name}={px} px is larger than the image/area {side} {size_px} px; using one {what} of "
            f"{size_px} px there (lower it to silence this)")


@dataclass(frozen=True)
class WindowSpec:
    """A node's window inputs in image pixels, and how to turn them into a latent plan."""

    node: str
    window_width: int
    window_height: int
    stride_x: int
    stride_y: int
    factor: int
    wrap_x: bool = False

    def _axes(self, height: int, width: int):
        """Per axis: (window input, window px, stride input, stride px, canvas latent px, side)."""
        return (("window_height", self.window_height, "stride_y", self.stride_y, height, "height"),
                ("window_width", self.window_width, "stride_x", self.stride_x, width, "width"))

    def plan(self, height: int, width: int, align: int = 1) -> tuple[Window, ...]:
        """The window plan for a ``height x width`` latent, offsets on multiples of ``align`` latent px.

        A window larger than the latent is clamped to it (ComfyUI calls the model on the area crop for
        area conditioning, and a small canvas is then sampled plainly); see :meth:`notices`.
        """
        f = self.factor
        (_, wh, _, sy, _, _), (_, ww, _, sx, _, _) = self._axes(height, width)
        window_h, window_w = min(wh // f, height), min(ww // f, width)
        try:
            return plan_windows(height, width, window_h, window_w, min(sy // f, window_h), min(sx // f, window_w),
                                wrap_x=self.wrap_x, align=align)
        except VistaInputError as e:
            raise core_error(self.node, e) from e

    def latent_stride(self, window_hw: tuple[int, int]) -> tuple[int, int]:
        """The strides ``(y, x)`` in latent px for windows of ``window_hw`` latent px (clamped to the window)."""
        return min(self.stride_y // self.factor, window_hw[0]), min(self.stride_x // self.factor, window_hw[1])

    def notices(self, height: int, width: int, align: int = 1, reason: str = "") -> list[str]:
        """Warnings for this canvas: windows clamped to the canvas, strides snapped to the ``align`` grid."""
        f, out = self.factor, []
        for wname, wpx, sname, spx, size, side in self._axes(height, width):
            if wpx > size * f:
                out.append(clamp_notice(self.node, wname, wpx, size * f, side))
            stride = min(spx // f, wpx // f, size)
            step = max(align, stride // align * align)
            if align > 1 and step != stride:
                out.append(f"{self.node}: {sname}={spx} px is not a multiple of the UNet grid {align * f} px, which "
                           f"{reason or 'this run'} needs; using {step * f} px (set {sname} to a multiple of "
                           f"{align * f} px to silence this)")
        return out

    def grid_error(self, height: int, width: int, windows: tuple[Window, ...], align: int, reason: str) -> str | None:
        """Why this canvas's plan is off the ``align`` grid that ``reason`` needs (None when it is on it).

        Offsets step on the grid, but the last window of an axis starts at ``size − window``; off the grid,
        MAD's merged tokens and ControlNet's residual crops could only be placed at a rounded position
        (``core.canvas.windows.off_grid_axes``), so the canvas is refused with the nearest sizes that work.
        """
        axes = off_grid_axes(windows, (height, width), align)
        if not axes:
            return None
        f, grid = self.factor, align * self.factor
        where, fixes = [], []
        for wname, _, _, _, size, side in self._axes(height, width):
            if side not in axes:
                continue
            window, wrap = (windows[0].h, False) if side == "height" else (windows[0].w, self.wrap_x)
            sizes = " or ".join(f"{n * f}" for n in grid_canvas_sizes(size, window, align, wrap))
            adjective = "high" if side == "height" else "wide"
            if wrap:
                where.append(f"with wrap_x the windows that wrap past the right edge continue off it (the width "
                             f"{size * f} px is not a multiple of {grid} px)")
                fixes.append(f"{sizes} px {adjective} (a multiple of {grid} px)")
            else:
                where.append(f"the last {window * f} px window starts at {'y' if side == 'height' else 'x'} = "
                             f"{(size - window) * f} px, off it")
                fixes.append(f"{sizes} px {adjective} ({wname} {window * f} px + a multiple of {grid} px), or change "
                             f"{wname} so that the {side} minus it is a multiple of {grid} px")
        return (f"{self.node}: {reason} needs every window on the {grid} px grid, but on this {width * f}x{height * f} px "
                f"canvas ({width}x{height} latent px) {' and '.join(where)}, so {reason} could only be applied there at a "
                f"rounded position. Make the latent {'; and '.join(fixes)}.")


@dataclass(frozen=True)
class CanvasPlan:
    """One canvas size's windows, their float32 fusion weights on the device, and their MAD layout."""

    windows: tuple[Window, ...]
    weights: torch.Tensor
    layout: MadLayout


class PlanCache:
    """The plans of one patched model / sampler, per canvas size, alignment and device.

    Planned, and warned about, once per canvas size rather than on every model call; the MAD token
    indices cached on each plan's layout are built once per run too. Lives on the patch / sampler
    object that owns it (never on a module, class or node).
    """

    def __init__(self, spec: WindowSpec, weight_mode: str):
        self.spec, self.weight_mode, self.plans = spec, weight_mode, {}

    def get(self, canvas_hw: tuple[int, int], align: int, device, reason: str = "") -> CanvasPlan:
        key = (tuple(canvas_hw), align, str(device))
        if key not in self.plans:
            windows = self.spec.plan(*canvas_hw, align)
            off_grid = self.spec.grid_error(*canvas_hw, windows, align, reason or "this run") if align > 1 else None
            if off_grid:
                raise ValueError(off_grid)
            for message in self.spec.notices(*canvas_hw, align, reason):
                warn_user(self.spec.node, message)
            try:
                weights = window_weights(windows, self.weight_mode, device=device)
            except VistaInputError as e:
                raise core_error(self.spec.node, e) from e
            self.plans[key] = CanvasPlan(windows, weights, MadLayout(windows, tuple(canvas_hw), self.spec.wrap_x))
        return self.plans[key]


def check_pixels(node: str, factor: int, **sizes: int) -> None:
    """Every size input must be a positive multiple of the latent factor."""
    for name, px in sizes.items():
        if px <= 0 or px % factor:
            raise ValueError(f"{node}: {name}={px} px must be a positive multiple of {factor} px "
                             f"(the model's latent downscale factor)")


WINDOW_PX = (64, 16384)  # schema min/max of window sizes in image px
STRIDE_MIN_PX = 8
# One range per meaning on every ancestral sampler node (Latent Fusion, Zoom Stack): eta 0 = DDIM/euler, 1 = DDPM /
# euler ancestral (above 1 the rectified-flow step of SD3/Flux can leave sigma_down < 0, core/sampling/flow_matching.py);
# s_noise scales the step noise, 1 = exact.
ETA_RANGE = (0.0, 1.0)
S_NOISE_RANGE = (0.0, 2.0)
WEIGHT_TOOLTIPS = {
    "uniform": "uniform = MultiDiffusion",
    "gaussian": "gaussian = Mixture-of-Diffusers bell",
    "guided": "guided = Guided Fusion (GVCF): 1 at the centre, linear to the corners",
}


def window_inputs(weight_default: str, batch_note: str = "") -> list:
    """The window inputs shared by windowed nodes, in image pixels (order = widget order)."""
    modes = sorted(WEIGHT_MODES, key=lambda m: m != weight_default)
    return [
        io.Int.Input("window_width", default=512, min=WINDOW_PX[0], max=WINDOW_PX[1], step=8,
                     tooltip="Window width in image pixels; use the model's native size: 512 on SD1.5 (64 latent px), "
                             "768 on SD2.x 768-v, 1024 on SDXL (128 latent px)."),
        io.Int.Input("window_height", default=512, min=WINDOW_PX[0], max=WINDOW_PX[1], step=8,
                     tooltip="Window height in image pixels: 512 on SD1.5, 768 on SD2.x 768-v, 1024 on SDXL."),
        io.Int.Input("stride_x", default=128, min=STRIDE_MIN_PX, max=WINDOW_PX[1], step=8,
                     tooltip="Horizontal step between windows in image pixels; at most window_width. Smaller = more "
                             "overlap, smoother, slower (128 px = 16 latent px, as in SyncDiffusion/MAD). Used exactly, "
                             "except when ControlNet or a Vista MAD patch needs window offsets on the UNet's grid "
                             "(64 px on SD1.x/2.x, 32 px on SDXL): then it is rounded down to a multiple of that, with "
                             "a warning, and the canvas must fit that grid too (canvas width minus window_width a "
                             "multiple of it; with wrap_x the width itself), else the run is refused naming the nearest "
                             "sizes that do. On SDXL with 1024 px windows, 256 px keeps this overlap ratio."),
        io.Int.Input("stride_y", default=128, min=STRIDE_MIN_PX, max=WINDOW_PX[1], step=8,
                     tooltip="Vertical step between windows in image pixels; at most window_height. Rounded like "
                             "stride_x when ControlNet or MAD needs the UNet grid (canvas height minus window_height "
                             "must then be a multiple of it too)."),
        io.Combo.Input("weight_mode", options=list(WEIGHT_MODES), default=weight_default,
                       tooltip="How overlapping windows are averaged: " + "; ".join(WEIGHT_TOOLTIPS[m] for m in modes) + "."),
        io.Boolean.Input("wrap_x", default=False,
                         tooltip="360° panorama: windows wrap around the left/right edge, so the latent joins up; the VAE decode may still leave a faint line at the join."),
        io.Int.Input("window_batch_size", default=4, min=1, max=256,
                     tooltip="Windows denoised per model call (higher = faster on a GPU, more memory)." + batch_note),
    ]


def is_number(value) -> bool:
    """Whether ``validate_inputs`` received a number to check.

    ComfyUI calls ``validate_inputs`` even when it has already refused a widget value itself, with the raw value:
    ``None`` for a linked input (known only when the node runs) or a missing one ("Required input is missing"),
    and the unconverted value ("wide", ``{}``) when its own conversion failed ("Failed to convert an input value to
    a INT value: window_width, wide, …", on that input alone). Those are left to ComfyUI's message: the check
    skips them rather than fail on a comparison (execution.py ``validate_inputs``, v0.3.64 and v0.33.0).
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(x) -> str:
    """A number as messages print it: ints as they are, floats short (``nan``, ``inf``, ``0.0001``, ``1000``)."""
    return str(x) if isinstance(x, int) else format(x, ".6g")


def number_error(node: str, name: str, value, low, high, default=None, unit: str = "") -> str | None:
    """The message for a number outside ``[low, high]`` or not finite; None when it is fine.

    NaN passes ComfyUI's own min/max check (every comparison with NaN is false), and JSON's ``NaN``/``Infinity``
    and the strings "nan"/"inf" all reach a FLOAT input through /prompt (Python's json and ``float`` accept them).
    """
    u = f" {unit}" if unit else ""
    span = f"[{_number(low)}, {_number(high)}]{u}" + (f" (default {_number(default)}{u})" if default is not None else "")
    if not math.isfinite(value):
        return f"{node}: {name}={_number(value)} is not a finite number; it must be in {span}"
    if not low <= value <= high:
        return f"{node}: {name}={_number(value)}{u} must be in {span}"
    return None


def check_numbers(node: str, schema: io.Schema, **values) -> bool | str:
    """validate_inputs rule for number widgets: each named value finite and in its schema range (min/max, default).

    Naming an input in ``validate_inputs`` removes ComfyUI's own min/max check for it, and that check lets NaN
    through anyway; values that are not numbers are ComfyUI's to report (:func:`is_number`).
    """
    specs = {spec.id: spec for spec in schema.inputs}
    for name, value in values.items():
        spec = specs[name]
        message = number_error(node, name, value, spec.min, spec.max, spec.default) if is_number(value) else None
        if message:
            return message
    return True


def require(result: bool | str) -> None:
    """When the node runs: raise a validate_inputs-style failure as a ValueError.

    ComfyUI range-checks only widget values; a linked value (a Primitive node's output) is None to
    ``validate_inputs`` and unchecked by the host, so ``execute`` runs the same rules on it.
    """
    if result is not True:
        raise ValueError(result)


def first_failure(*results: bool | str) -> bool | str:
    """The first failed validate_inputs-style result, else True."""
    return next((r for r in results if r is not True), True)


def check_strides(node: str, window_width: int, window_height: int, stride_x: int, stride_y: int) -> bool | str:
    """validate_inputs rule shared by windowed nodes: each stride at most its window.

    Naming these inputs in ``validate_inputs`` removes ComfyUI's automatic min/max check for
    them, so their schema ranges are re-checked first, each with its own message. A value that is
    not a number (linked, missing, or refused by ComfyUI's conversion) is skipped (:func:`is_number`).
    """
    ranges = (("window_width", window_width, WINDOW_PX), ("window_height", window_height, WINDOW_PX),
              ("stride_x", stride_x, (STRIDE_MIN_PX, WINDOW_PX[1])), ("stride_y", stride_y, (STRIDE_MIN_PX, WINDOW_PX[1])))
    for name, value, (low, high) in ranges:
        message = number_error(node, name, value, low, high, unit="px") if is_number(value) else None
        if message:
            return message
    for stride, window, sname, wname in ((stride_x, window_width, "stride_x", "window_width"),
                                         (stride_y, window_height, "stride_y", "window_height")):
        if is_number(stride) and is_number(window) and stride > window:
            return (f"{node}: {sname}={stride} px must be at most {wname}={window} px; a stride larger than the "
                    f"window leaves gaps between windows")
    return True


def mad_tau(transformer_options: dict) -> float | None:
    """τ of a Vista MAD patch on the model (None without one, or with τ = 0: MAD never runs)."""
    tau = transformer_options.get(MAD_TAU_KEY)
    return tau if tau else None


def with_layout(options: dict, layout: MadLayout) -> dict:
    """A copy of ``transformer_options`` carrying the MAD layout (the patch then merges)."""
    return {**options, MAD_LAYOUT_KEY: layout}
