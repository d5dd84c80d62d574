"""Canvas positions on DiTs (issue [T] item 1): each window row told its canvas offset through the host's hook.

The hook is ComfyUI's ``post_input`` model patch (``ModelPatcher.set_model_post_input_patch`` fills the same list):
the DiT calls it with the batch's ``img``, ``txt``, ``img_ids`` and ``txt_ids`` right before it builds its rotary
embedding, and takes back what it returns — per row, so every window of a batched call gets its own positions.
Vista adds its patch to each window call's own ``transformer_options`` (first in the list, so later patches see
canvas positions), never to the model: the offsets belong to that call's windows.

Which networks call the hook with per-row ids, and where their grid starts, is a fact of the host's code
(``comfy/ldm/flux/model.py``: both hosts, Flux and, on v0.33.0, Flux.2), so it is a table of the host's classes
here. Every call also checks that the hook ran, so a host whose class stops calling it is refused at the first
model call instead of sampling with window positions silently. Qwen-Image (v0.33.0) has the hook too, with a
centred grid (:class:`core.canvas.positions.GridOrigin`), but its latents are 5-D (``Wan21`` format, a frame
axis), which the windowed nodes do not take yet.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from comfy_api.latest import io

from ..core.canvas.positions import GridOrigin, shift_image_ids, text_shift, window_shifts
from ..core.canvas.windows import Window
from ._common import patch_size

POSITIONS = ("window", "canvas")
#: (module, class) of the host's diffusion models that call ``post_input`` with per-row ids → their grid origin.
PER_ROW_HOOK = {
    ("comfy.ldm.flux.model", "Flux"): GridOrigin(),
}
#: Networks with rotary positions but no per-row hook in either host (the reason a user reads).
NO_HOOK = {
    ("comfy.ldm.chroma.model", "Chroma"): "builds its img_ids from 0 inside forward with no patch point",
    ("comfy.ldm.chroma_radiance.model", "ChromaRadiance"): "builds its img_ids from 0 inside forward with no patch point",
    ("comfy.ldm.hidream.model", "HiDreamImageTransformer2DModel"): "builds its img_ids inside forward with no patch point",
    ("comfy.ldm.modules.diffusionmodules.mmdit", "OpenAISignatureMMDITWrapper"):
        "uses a learned position embedding cropped to the image (no rotary positions to shift)",
    ("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel"):
        "samples 5-D latents (a frame axis), which Vista's windowed nodes do not take yet",
}


def positions_input() -> io.Combo.Input:
    """The optional ``positions`` COMBO shared by the windowed nodes (old workflows load with ``window``)."""
    return io.Combo.Input(
        "positions", options=list(POSITIONS), default="window", optional=True,
        tooltip="DiTs with rotary positions and a per-row position hook only (Flux; Flux.2 on v0.33.0). "
                "window = every window is called as a standalone image, positions from 0 (what the model was trained on; the safe default). "
                "canvas = each window's tokens carry their position on the whole canvas (through the host's "
                "post_input patch, per window in the same batched call): image-to-image attention inside a window "
                "is unchanged (RoPE is relative), image-to-text offsets follow the canvas. Whether that helps plain "
                "MultiDiffusion on a real model is not measured; refused, with the reason, on models without a "
                "per-row position hook (UNets, SD3, Chroma, HiDream) or not yet supported (Qwen-Image).")


def _key(diffusion_model) -> tuple[str, str]:
    return type(diffusion_model).__module__, type(diffusion_model).__name__


def position_grid(node: str, model) -> GridOrigin:
    """The grid convention of ``model``'s DiT for positions=canvas, or a ValueError naming why it cannot have them."""
    diffusion_model = model.get_model_object("diffusion_model")
    key = _key(diffusion_model)
    if key in PER_ROW_HOOK:
        return PER_ROW_HOOK[key]
    name = key[1]
    if key in NO_HOOK:
        why = f"{name} {NO_HOOK[key]}"
    elif hasattr(diffusion_model, "input_blocks"):
        why = f"{name} is a UNet: its tokens have no positions (windows already see only their own pixels)"
    else:
        why = f"ComfyUI gives {name} no per-row position hook that Vista knows of"
    raise ValueError(f"{node}: positions=canvas is not available for this model: {why}. Supported: Flux (and "
                     f"Flux.2 on ComfyUI v0.33.0). Use positions=window")


def token_grid(hw: Sequence[int], patch: int) -> tuple[int, int]:
    """Tokens per side, as the hosts' ``process_img`` count them: ``(n + p // 2) // p``."""
    return tuple((n + patch // 2) // patch for n in hw)


class CanvasPositions:
    """``post_input`` patch of ONE model call: its rows' image ids moved to their windows' canvas positions.

    ``shifts (R, 2)`` in tokens (:func:`core.canvas.positions.window_shifts`), the first ``image_tokens`` ids of a
    row are the window's (reference latents follow), ``text`` moves the text ids (0 for Flux). ``called`` says
    whether the host ran it.
    """

    def __init__(self, node: str, model_name: str, shifts, image_tokens: int, text: float):
        self.node, self.model_name, self.shifts, self.image_tokens, self.text = node, model_name, shifts, image_tokens, text
        self.called = False

    def __call__(self, args: dict) -> dict:
        img_ids = args["img_ids"]
        if img_ids is None or img_ids.ndim != 3 or img_ids.shape[0] != self.shifts.shape[0]:
            shape = None if img_ids is None else tuple(img_ids.shape)
            raise ValueError(f"{self.node}: positions=canvas: the model call's image ids {shape} do not fit its "
                             f"{self.shifts.shape[0]} window rows; this model's call layout is not supported — "
                             f"use positions=window")
        out = dict(args)
        out["img_ids"] = shift_image_ids(img_ids, self.shifts, self.image_tokens)
        if self.text:
            out["txt_ids"] = args["txt_ids"].float() + self.text
        self.called = True
        return out

    def check_called(self) -> None:
        if not self.called:
            raise ValueError(f"{self.node}: positions=canvas: this ComfyUI's {self.model_name} did not call the "
                             f"post_input patch, so every window would keep window positions; use positions=window")


@dataclass(frozen=True)
class CanvasPositionHook:
    """positions=canvas for one model: its grid convention, patch size and class name, checked once per node run."""

    node: str
    grid: GridOrigin
    patch: int
    model_name: str

    @classmethod
    def for_model(cls, node: str, model) -> "CanvasPositionHook":
        """The hook for ``model`` (a ModelPatcher), or a ValueError naming why it cannot have canvas positions."""
        grid = position_grid(node, model)
        return cls(node, grid, patch_size(model), type(model.get_model_object("diffusion_model")).__name__)

    def call(self, c: dict, windows: Sequence[Window], canvas_hw: Sequence[int], groups: int,
             batch: int) -> tuple[dict, CanvasPositions]:
        """The model call's kwargs ``c`` with a :class:`CanvasPositions` patch for ``windows`` (rows as crop_windows:
        ``groups`` conditionings of ``batch`` samples), added first to that call's own ``post_input`` list; check
        :meth:`CanvasPositions.check_called` after the call."""
        window_tokens = token_grid((windows[0].h, windows[0].w), self.patch)
        canvas_tokens = token_grid(canvas_hw, self.patch)
        shifts = window_shifts(windows, self.patch, canvas_tokens, window_tokens, self.grid, groups, batch)
        positions = CanvasPositions(self.node, self.model_name, shifts, window_tokens[0] * window_tokens[1],
                                    text_shift(self.grid, canvas_tokens, window_tokens))
        options = dict(c.get("transformer_options", {}))
        patches = dict(options.get("patches", {}))
        patches["post_input"] = [positions, *patches.get("post_input", [])]
        options["patches"] = patches
        return {**c, "transformer_options": options}, positions
