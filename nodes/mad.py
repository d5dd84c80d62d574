"""Vista MAD Attention: merge the windows before attention, attend on the canvas, split after."""
from __future__ import annotations

import math

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_management
import comfy.patcher_extension
from comfy_api.latest import io

from ..core.mad.attention_merge import MAD_LAYOUT_KEY, MAD_TAU_KEY, mad_attention_patch, mad_steps
from ..core.canvas.budget import UNetGeometry
from ._common import check_numbers, latent_factor, require
from .budget import check_merged_call, unet_geometry
from .notify import warn_user

NODE = "Vista MAD Attention"
BLOCKS = ("input", "middle", "output")
GUARD_KEY = "vista_mad_merged_call_guard"
UNUSED_KEY = "vista_mad_unused_warning"


def transformer_blocks(diffusion_model, names: tuple[str, ...]) -> list[tuple[str, int]]:
    """(block name, index) of every SpatialTransformer in the chosen UNet blocks."""
    groups = {"input": list(getattr(diffusion_model, "input_blocks", [])),
              "middle": [getattr(diffusion_model, "middle_block", [])],
              "output": list(getattr(diffusion_model, "output_blocks", []))}
    return [(name, i) for name in names for i, block in enumerate(groups[name])
            if any(isinstance(layer, comfy_attention.SpatialTransformer) for layer in block)]


def refuse_non_unet(diffusion_model) -> None:
    """MAD patches UNet attention (attn1/attn2 of SpatialTransformer blocks); refuse every other network.

    DiT models (SD3's MMDiT, Flux, …) attend jointly over text and image tokens in their own blocks, which
    those patches never reach; see the README (MAD on DiT) for why Vista does not merge their attention.
    """
    if not transformer_blocks(diffusion_model, BLOCKS):
        raise ValueError(f"{NODE}: DiT models are not supported ({type(diffusion_model).__name__}: SD3, Flux and other "
                         f"transformer models attend jointly over text and image tokens, which MAD's UNet attention "
                         f"patches cannot reach); use a UNet model (SD1.x/2.x/SDXL), or Vista Tiled Diffusion / the "
                         f"Vista Latent Fusion Sampler without MAD on this model")


class MergedCallGuard:
    """``DIFFUSION_MODEL`` wrapper: before the network runs a merged call (all windows in one batch), honour
    ComfyUI's interrupt and refuse a batch whose estimated memory exceeds what is free (nodes/budget.py).

    Without a MAD layout in the call's ``transformer_options`` (MAD inactive at this step, or no Vista window
    code) it only passes the call on. ``merged_calls`` counts the merged calls of the current run (reset by
    :class:`UnusedMadWarning`).
    """

    def __init__(self, geometry: UNetGeometry | None, factor: int):
        self.geometry, self.factor, self.merged_calls = geometry, factor, 0

    def __call__(self, executor, *args, **kwargs):
        options = kwargs.get("transformer_options", args[5] if len(args) > 5 else None)
        layout = options.get(MAD_LAYOUT_KEY) if isinstance(options, dict) else None
        if layout is not None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            check_merged_call(NODE, self.geometry, layout, args[0], self.factor)
            self.merged_calls += 1
        return executor(*args, **kwargs)


class UnusedMadWarning:
    """``OUTER_SAMPLE`` wrapper: after a run in which no network call was merged, tell the user MAD did nothing.

    MAD only merges the windows that Vista's window code (Vista Tiled Diffusion, the Vista Latent Fusion Sampler)
    hands the network with a layout; a model sampled any other way, or a tau that rounds to 0 steps, gives the
    unpatched model's sample, bit for bit. Counted by the run's :class:`MergedCallGuard`; tau = 0 is "off" and
    is not warned about.
    """

    def __init__(self, guard: MergedCallGuard, tau: float):
        self.guard, self.tau = guard, tau

    def __call__(self, executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
        self.guard.merged_calls = 0
        out = executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
        if self.tau > 0 and self.guard.merged_calls == 0:
            warn_user(NODE, unused_message(self.tau, len(sigmas) - 1))
        return out


def unused_message(tau: float, steps: int) -> str:
    """Why a run with a MAD patch merged nothing, and the fix."""
    if mad_steps(tau, steps) == 0:
        return (f"{NODE}: tau={tau:g} of {steps} steps rounds to 0 merged steps, so MAD changed nothing; set tau to "
                f"at least {math.ceil(50 / steps) / 100:.2f} for 1 step (paper: 0.3)")
    return (f"{NODE}: no Vista windowed sampling ran this model, so MAD changed nothing (the sample is the unpatched "
            f"model's). MAD merges the windows of Vista Tiled Diffusion (chain it before or after this node, then any "
            f"sampler) or of the Vista Latent Fusion Sampler (with SamplerCustom / SamplerCustomAdvanced)")


class VistaMADAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaMADAttention",
            display_name=NODE,
            category="Vista/attention",
            description=(
                "MAD, Merge-Attend-Diffuse (Quattrini et al.): for the first tau of the steps, self-attention runs on "
                "the whole merged canvas (the windows' q, k, v averaged into canvas tokens, attended, split back) and "
                "cross-attention queries are merged the same way, so distant windows agree on content and style. "
                "Chain it with Vista Tiled Diffusion (or use it with the Vista Latent Fusion Sampler); alone it changes "
                "nothing, and a run that merged nothing ends with a warning. While active, all windows of a step are denoised in one call, so memory grows with the number "
                "of windows: a canvas whose window batch cannot fit in free memory is refused, with the estimate, before "
                "the network runs; merged self-attention time grows quadratically with the canvas. Window offsets must "
                "lie on the UNet's grid (64 px on SD1.x/2.x, 32 px on SDXL): strides are rounded down to it, and a "
                "canvas whose last window would start off it (canvas minus window not a multiple of the grid; with "
                "wrap_x, a width that is not) is refused with the nearest sizes that work. "
                "UNet models only (SD1.x/2.x/SDXL): DiT models (SD3, Flux) are refused."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A UNet model (SD1.x/2.x/SDXL), usually before or after Vista Tiled Diffusion."),
                io.Float.Input("tau", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the sampling steps with merged attention, counted from the first: "
                                       "MAD runs for the first round-half-up(tau x steps) steps (paper: 0.3 = 15 of 50; "
                                       "0.29 x 50 = 14.5 -> 15). 0 = off, 1 = every step."),
                io.Boolean.Input("input_blocks", default=True, tooltip="Merge attention in the UNet's input (down) blocks."),
                io.Boolean.Input("middle_block", default=True, tooltip="Merge attention in the UNet's middle block."),
                io.Boolean.Input("output_blocks", default=True, tooltip="Merge attention in the UNet's output (up) blocks."),
            ],
            outputs=[io.Model.Output(tooltip="The model with MAD attention patches.")],
        )

    @classmethod
    def validate_inputs(cls, tau: float = None) -> bool | str:
        return check_numbers(NODE, cls.define_schema(), tau=tau)

    @classmethod
    def execute(cls, model, tau: float, input_blocks: bool, middle_block: bool, output_blocks: bool) -> io.NodeOutput:
        require(cls.validate_inputs(tau))  # a linked value
        names = tuple(n for n, on in zip(BLOCKS, (input_blocks, middle_block, output_blocks)) if on)
        diffusion_model = model.get_model_object("diffusion_model")
        refuse_non_unet(diffusion_model)
        blocks = transformer_blocks(diffusion_model, names)
        if not blocks:
            raise ValueError(f"{NODE}: the model has no SpatialTransformer attention in the chosen blocks {names}; "
                             f"enable input_blocks/middle_block/output_blocks")
        model = model.clone()
        poll = comfy.model_management.throw_exception_if_processing_interrupted  # interrupt within one layer
        attention = comfy_attention.optimized_attention
        for name, index in blocks:
            model.set_model_attn1_replace(mad_attention_patch(False, attention, poll=poll), name, index)
            model.set_model_attn2_replace(mad_attention_patch(True, attention, poll=poll), name, index)
        model.model_options.setdefault("transformer_options", {})[MAD_TAU_KEY] = tau
        guard = MergedCallGuard(unet_geometry(diffusion_model), latent_factor(model))
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, GUARD_KEY, guard)
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, UNUSED_KEY,
                                   UnusedMadWarning(guard, tau))
        return io.NodeOutput(model)
