"""Shared glue between ComfyUI objects and core/: units, errors, interrupts, cond cropping."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_management
from comfy_api.latest import io

from ..core.attention_merge import MAD_LAYOUT_KEY, MAD_TAU_KEY, MadLayout, mad_active
from ..core.checks import VistaInputError
from ..core.windows import WEIGHT_MODES, Window, plan_windows


HOST_DEFAULT_LATENT_FACTOR = 8  # what v0.3.64's own EmptyLatentImage assumes for every image model


def latent_factor(model) -> int:
    """Image pixels per latent pixel for this model, from its latent format.

    v0.33.0 publishes ``spacial_downscale_ratio`` on every latent format; v0.3.64 does not
    (its EmptyLatentImage hard-codes 8), so there the host's own convention applies.
    """
    fmt = model.get_model_object("latent_format")
    return int(getattr(fmt, "spacial_downscale_ratio", HOST_DEFAULT_LATENT_FACTOR))


def unet_alignment(model) -> int:
    """2^(levels-1): the latent grid every UNet block lines up with (8 for SD1.5, 1 if unknown)."""
    channel_mult = getattr(model.get_model_object("diffusion_model"), "channel_mult", None)
    return 2 ** (len(channel_mult) - 1) if channel_mult else 1


def throw_if_interrupted() -> None:
    """Honour ComfyUI's interrupt button between window batches."""
    comfy.model_management.throw_exception_if_processing_interrupted()


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
    align: int = 1

    def plan(self, height: int, width: int) -> tuple[Window, ...]:
        """The window plan for a ``height x width`` latent, errors named by node input.

        A window larger than the latent is clamped to it, with a warning: ComfyUI calls the
        model on the area crop for area conditioning, and a small canvas is then sampled plainly.
        """
        f = self.factor
        window_h, window_w = self.window_height // f, self.window_width // f
        for name, px, limit, side in (("window_width", self.window_width, width, "width"),
                                      ("window_height", self.window_height, height, "height")):
            if px > limit * f:
                logging.warning("%s: %s=%d px is larger than the image/area %s %d px; using one window of %d px "
                                "there (lower it to silence this)", self.node, name, px, side, limit * f, limit * f)
        window_h, window_w = min(window_h, height), min(window_w, width)
        try:
            return plan_windows(height, width, window_h, window_w, min(self.stride_y // f, window_h),
                                min(self.stride_x // f, window_w), wrap_x=self.wrap_x, align=self.align)
        except VistaInputError as e:
            raise ValueError(f"{self.node}: {e}") from e


def check_pixels(node: str, factor: int, **sizes: int) -> None:
    """Every size input must be a positive multiple of the latent factor."""
    for name, px in sizes.items():
        if px <= 0 or px % factor:
            raise ValueError(f"{node}: {name}={px} px must be a positive multiple of {factor} px "
                             f"(the model's latent downscale factor)")


WINDOW_PX = (64, 16384)  # schema min/max of window sizes in image px
STRIDE_MIN_PX = 8
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
                     tooltip="Window width in image pixels (512 = 64 latent px on SD1.5; use the model's native size)."),
        io.Int.Input("window_height", default=512, min=WINDOW_PX[0], max=WINDOW_PX[1], step=8,
                     tooltip="Window height in image pixels (512 = 64 latent px on SD1.5)."),
        io.Int.Input("stride_x", default=128, min=STRIDE_MIN_PX, max=WINDOW_PX[1], step=8,
                     tooltip="Horizontal step between windows in image pixels; at most window_width. Smaller = more "
                             "overlap, smoother, slower (128 px = 16 latent px, as in SyncDiffusion/MAD)."),
        io.Int.Input("stride_y", default=128, min=STRIDE_MIN_PX, max=WINDOW_PX[1], step=8,
                     tooltip="Vertical step between windows in image pixels; at most window_height."),
        io.Combo.Input("weight_mode", options=list(WEIGHT_MODES), default=weight_default,
                       tooltip="How overlapping windows are averaged: " + "; ".join(WEIGHT_TOOLTIPS[m] for m in modes) + "."),
        io.Boolean.Input("wrap_x", default=False,
                         tooltip="360° panorama: windows wrap around the left/right edge so the image tiles seamlessly."),
        io.Int.Input("window_batch_size", default=4, min=1, max=256,
                     tooltip="Windows denoised per model call (higher = faster on a GPU, more memory)." + batch_note),
    ]


def check_strides(node: str, window_width: int, window_height: int, stride_x: int, stride_y: int) -> bool | str:
    """validate_inputs rule shared by windowed nodes: windows in range, 8 px <= stride <= window.

    Naming these inputs in ``validate_inputs`` removes ComfyUI's automatic min/max check for
    them, so the schema ranges are re-checked here.
    """
    for stride, window, sname, wname in ((stride_x, window_width, "stride_x", "window_width"),
                                         (stride_y, window_height, "stride_y", "window_height")):
        if not WINDOW_PX[0] <= window <= WINDOW_PX[1]:
            return f"{node}: {wname}={window} px must be in [{WINDOW_PX[0]}, {WINDOW_PX[1]}] px"
        if not STRIDE_MIN_PX <= stride <= window:
            return (f"{node}: {sname}={stride} px must be in [{STRIDE_MIN_PX}, {wname}={window}] px "
                    f"(a stride larger than the window leaves gaps)")
    return True


def with_mad_layout(c: dict, windows, canvas_hw, wrap_x: bool, sigma, batch_size: int) -> tuple[dict, int]:
    """While a Vista MAD patch is active, hand it the window layout and denoise all windows in one call.

    ``c`` is any dict holding ``transformer_options``: a model call's kwargs (Tiled Diffusion) or
    the sampler's ``model_options`` (Latent Fusion Sampler). Returns a copy when it changes it.
    """
    options = c.get("transformer_options", {})
    tau, schedule = options.get(MAD_TAU_KEY), options.get("sample_sigmas")
    if tau is None or schedule is None or not mad_active(sigma, schedule, tau):
        return c, batch_size
    options = {**options, MAD_LAYOUT_KEY: MadLayout(tuple(windows), canvas_hw, wrap_x)}
    return {**c, "transformer_options": options}, len(windows)

