"""Shared glue between ComfyUI objects and core/: units, errors, interrupts, cond cropping."""
from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import torch

from ..core.checks import VistaInputError
from ..core.windows import Window, crop_windows, plan_windows, repeat_for_windows

CANVAS_KEYS_NOT_CROPPED = ("c_crossattn", "y")  # per-sample conditioning, repeated per window


def latent_factor(model) -> int:
    """Image pixels per latent pixel for this model (8 for SD1.x/SDXL; never assumed)."""
    return int(model.get_model_object("latent_format").spacial_downscale_ratio)


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
        """The window plan for a ``height x width`` latent, errors named by node input."""
        f = self.factor
        for name, px, limit, side in (("window_width", self.window_width, width, "width"),
                                      ("window_height", self.window_height, height, "height")):
            if px > limit * f:
                raise ValueError(f"{self.node}: {name}={px} px is larger than the image {side} {limit * f} px; "
                                 f"lower it to at most {limit * f} or enlarge the canvas")
        try:
            return plan_windows(height, width, self.window_height // f, self.window_width // f,
                                self.stride_y // f, self.stride_x // f, wrap_x=self.wrap_x, align=self.align)
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


def window_conds(c: dict, canvas_hw: tuple[int, int], windows: tuple[Window, ...]) -> dict:
    """The model-call kwargs ``c`` of a canvas, rewritten for a sample-major batch of windows.

    Canvas-sized tensors (``c_concat``, masks) are cropped per window; ControlNet residuals
    are cropped per UNet block at that block's scale; per-sample tensors are repeated.
    """
    n, H = len(windows), canvas_hw[0]
    out = {}
    for key, value in c.items():
        if key == "control" and value is not None:
            out[key] = {block: [None if t is None else crop_windows(t, windows, scale=max(1, round(H / t.shape[-2])))
                                for t in residuals] for block, residuals in value.items()}
        elif isinstance(value, torch.Tensor) and value.ndim == 4 and tuple(value.shape[-2:]) == tuple(canvas_hw):
            out[key] = crop_windows(value, windows)
        elif isinstance(value, torch.Tensor) and value.ndim >= 1:
            out[key] = repeat_for_windows(value, n)
        else:
            out[key] = value
    return out
