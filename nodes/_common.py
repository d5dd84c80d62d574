"""Shared glue between ComfyUI objects and core/: units, errors, interrupts, cond cropping."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import comfy.model_management

from ..core.checks import VistaInputError
from ..core.windows import Window, plan_windows


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
