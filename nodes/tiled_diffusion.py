"""Vista Tiled Diffusion: MultiDiffusion in prediction space as a MODEL patch."""
from __future__ import annotations

from dataclasses import replace

import comfy.patcher_extension
from comfy_api.latest import io

from ..core.mad.attention_merge import mad_active, mad_step_index
from ..core.checks import VistaInputError
from ..core.canvas.conditioning import window_call_kwargs
from ..core.canvas.multidiffusion import multidiffusion_predict
from ..core.canvas.windows import WEIGHT_MODES, repeat_for_windows
from ._common import (PlanCache, WindowBatchProgress, WindowSpec, check_image_latent, check_latent_values, check_option,
                      check_patch_grid, check_pixels, check_strides, core_error, latent_factor, mad_tau, require,
                      size_conditioning_input, takes_size_conditioning, unet_alignment, unet_blocks, window_inputs,
                      with_block_progress, with_layout)
from .memory import WindowBatchReservation
from .positions import POSITIONS, CanvasPositionHook, positions_input

NODE = "Vista Tiled Diffusion"
RESERVATION_KEY = "vista_tiled_diffusion"


class TiledDiffusionPatch:
    """``model_function_wrapper``: denoise the canvas as fused windows (chains a previous wrapper).

    Window offsets follow the user's strides exactly, except in a model call that carries ControlNet
    residuals or while a Vista MAD patch is on the model: both need offsets on the UNet's deepest grid
    (``alignment`` latent px), and the strides are then snapped down to it with a warning. With
    ``size_factor`` (SDXL), each window's ``y`` carries its own crop offset and size.

    Row order: ComfyUI batches several conditionings into one call, one chunk of rows per entry of
    ``cond_or_uncond``. Every window batch keeps that grouping (all windows of chunk 0, then of chunk 1, …),
    so a patch that splits the batch by ``cond_or_uncond`` (NAG, SAG, …) sees each chunk whole.
    Progress moves per window batch, and inside a MAD merged call (all windows at once) per UNet block
    (``blocks``, see :func:`~nodes._common.with_block_progress`). With ``positions``
    (:class:`~nodes.positions.CanvasPositionHook`), every window call carries its rows' canvas positions.
    """

    def __init__(self, spec: WindowSpec, weight_mode: str, batch_size: int, alignment: int, previous=None,
                 size_factor: int | None = None, blocks: tuple[int, int] = (0, 0),
                 positions: CanvasPositionHook | None = None):
        self.plans, self.batch_size, self.alignment, self.previous = PlanCache(spec, weight_mode), batch_size, alignment, previous
        self.size_factor, self.progress, self.blocks, self.positions = size_factor, WindowBatchProgress(), blocks, positions

    def align_for(self, c: dict, options: dict) -> tuple[int, str]:
        """(offset grid, why) for this model call: the UNet grid when ControlNet or MAD needs it, else 1."""
        reasons = [why for why, needed in (("ControlNet residuals", c.get("control") is not None),
                                           ("a Vista MAD patch", mad_tau(options) is not None)) if needed]
        return (self.alignment, " and ".join(reasons)) if reasons and self.alignment > 1 else (1, "")

    def __call__(self, apply_model, args: dict):
        x, sigma, c = args["input"], args["timestep"], args["c"]
        check_image_latent(NODE, "the sampled latent", x)
        groups = len(args["cond_or_uncond"])
        options = c.get("transformer_options", {})
        align, reason = self.align_for(c, options)
        plan = self.plans.get(tuple(x.shape[-2:]), align, x.device, reason)
        batch_size, tau, schedule = self.batch_size, mad_tau(options), options.get("sample_sigmas")
        step = mad_step_index(float(sigma.max()), schedule) if schedule is not None else 0
        steps = len(schedule) - 1 if schedule is not None else 1
        units = -(-len(plan.windows) // max(batch_size, 1))
        if tau is not None and schedule is not None and mad_active(step, steps, tau):
            merged = with_layout(options, replace(plan.layout, batch=x.shape[0] // groups))
            c = {**c, "transformer_options": with_block_progress(merged, self.progress, self.blocks)}
            batch_size, units = len(plan.windows), max(sum(self.blocks), 1)  # the merge needs every window in one call

        def predict(crops, chunk):
            window_c, canvas_positions = window_call_kwargs(c, x.shape[-2:], chunk, self.size_factor, groups), None
            if self.positions is not None:
                window_c, canvas_positions = self.positions.call(window_c, chunk, x.shape[-2:], groups,
                                                                 x.shape[0] // groups)
            window_args = {"input": crops, "timestep": repeat_for_windows(sigma, len(chunk), groups),
                           "c": window_c, "cond_or_uncond": args["cond_or_uncond"]}
            if self.previous is not None:
                out = self.previous(apply_model, window_args)
            else:
                out = apply_model(window_args["input"], window_args["timestep"], **window_args["c"])
            if canvas_positions is not None:
                canvas_positions.check_called()
            return out

        self.progress.start_step(step, steps, units)
        try:
            return multidiffusion_predict(predict, x, plan.windows, plan.weights, batch_size,
                                          before_batch=self.progress.before_batch, groups=groups)
        except VistaInputError as e:
            raise core_error(NODE, e) from e


def refuse_second_patch(model) -> None:
    """One Vista Tiled Diffusion per model: a second would tile every window of the first again.

    Found by the first node's ``OUTER_SAMPLE`` wrapper key (``ModelPatcher.get_wrappers``), which every clone of
    its output carries, whatever was chained in between.
    """
    if model.get_wrappers(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, RESERVATION_KEY):
        raise ValueError(f"{NODE}: model is already patched by a Vista Tiled Diffusion node upstream; a second one "
                         f"would tile every window of the first again (with equal windows it does nothing), which "
                         f"neither node's settings describe. Remove one of the two, or take this node's model from "
                         f"before the first one")


def check_sampled_latent(executor, noise, latent_image, *args, **kwargs):
    """``OUTER_SAMPLE`` wrapper: the sampler's latent_image fits the model and is finite, checked once per run
    before the model loads (``executor.class_obj`` is the guider, as in the host's own EasyCache wrapper)."""
    check_image_latent(NODE, "latent_image", latent_image)
    check_latent_values(NODE, "latent_image", latent_image, executor.class_obj.model_patcher)
    return executor(noise, latent_image, *args, **kwargs)


class VistaTiledDiffusion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaTiledDiffusion",
            display_name=NODE,
            category="Vista/sampling",
            description=(
                "MultiDiffusion (Bar-Tal et al. 2023): every model call denoises the latent as overlapping "
                "windows and fuses their predicted clean latents by weighted averaging, so any stock sampler "
                "and scheduler can paint panoramas and large canvases with a model trained at the window size. "
                "Cost: about (number of windows) model calls per step. Area/mask conditioning, inpainting masks, "
                "c_concat and ControlNet hints are cropped per window; on SDXL each window can be told its own "
                "crop and size (window_size_conditioning). Use the model's native window: 512 px SD1.5, "
                "768 px SD2.x-v, 1024 px SDXL."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch (SD1.x/2.x/SDXL/…)."),
                *window_inputs("uniform", " While a Vista MAD patch is active, all windows go in one call."),
                size_conditioning_input(),
                positions_input(),
            ],
            outputs=[io.Model.Output(tooltip="The model, patched to denoise in fused windows at every sampling step.")],
        )

    @classmethod
    def validate_inputs(cls, window_width: int = None, window_height: int = None, stride_x: int = None,
                        stride_y: int = None) -> bool | str:
        return check_strides(NODE, window_width, window_height, stride_x, stride_y)

    @classmethod
    def execute(cls, model, window_width: int, window_height: int, stride_x: int, stride_y: int,
                weight_mode: str, wrap_x: bool, window_batch_size: int, window_size_conditioning: bool = True,
                positions: str = "window") -> io.NodeOutput:
        check_option(NODE, "weight_mode", weight_mode, WEIGHT_MODES)
        check_option(NODE, "positions", positions, POSITIONS)
        require(cls.validate_inputs(window_width, window_height, stride_x, stride_y))  # linked values
        factor = latent_factor(model)
        check_pixels(NODE, factor, window_width=window_width, window_height=window_height, stride_x=stride_x, stride_y=stride_y)
        check_patch_grid(NODE, model, window_width=window_width, window_height=window_height)
        refuse_second_patch(model)
        canvas_positions = CanvasPositionHook.for_model(NODE, model) if positions == "canvas" else None
        spec = WindowSpec(NODE, window_width, window_height, stride_x, stride_y, factor, wrap_x)
        size_factor = factor if window_size_conditioning and takes_size_conditioning(model) else None
        model = model.clone()
        previous = model.model_options.get("model_function_wrapper")
        patch = TiledDiffusionPatch(spec, weight_mode, window_batch_size, unet_alignment(model), previous, size_factor,
                                    unet_blocks(model), canvas_positions)
        model.set_model_unet_function_wrapper(patch)
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, RESERVATION_KEY,
                                   WindowBatchReservation(spec, window_batch_size))
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, RESERVATION_KEY, check_sampled_latent)
        return io.NodeOutput(model)
