"""Vista Tiled Diffusion: MultiDiffusion in prediction space as a MODEL patch."""
from __future__ import annotations

from comfy_api.latest import io

from ..core.conditioning import window_call_kwargs
from ..core.multidiffusion import multidiffusion_predict
from ..core.windows import repeat_for_windows, window_weights
from ._common import (WindowSpec, check_pixels, check_strides, latent_factor, throw_if_interrupted, unet_alignment,
                      window_inputs, with_mad_layout)

NODE = "Vista Tiled Diffusion"


class TiledDiffusionPatch:
    """``model_function_wrapper``: denoise the canvas as fused windows (chains a previous wrapper)."""

    def __init__(self, spec: WindowSpec, weight_mode: str, batch_size: int, previous=None):
        self.spec, self.weight_mode, self.batch_size, self.previous = spec, weight_mode, batch_size, previous

    def __call__(self, apply_model, args: dict):
        x, sigma, c = args["input"], args["timestep"], args["c"]
        windows = self.spec.plan(*x.shape[-2:])
        weights = window_weights(windows, self.weight_mode, dtype=x.dtype, device=x.device)
        c, batch_size = with_mad_layout(c, windows, tuple(x.shape[-2:]), self.spec.wrap_x, sigma, self.batch_size)

        def predict(crops, chunk):
            window_args = {"input": crops, "timestep": repeat_for_windows(sigma, len(chunk)),
                           "c": window_call_kwargs(c, x.shape[-2:], chunk), "cond_or_uncond": args["cond_or_uncond"]}
            if self.previous is not None:
                return self.previous(apply_model, window_args)
            return apply_model(window_args["input"], window_args["timestep"], **window_args["c"])

        return multidiffusion_predict(predict, x, windows, weights, batch_size, before_batch=throw_if_interrupted)


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
                "c_concat and ControlNet hints are cropped per window."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch (SD1.x/2.x/SDXL/…)."),
                *window_inputs("uniform", " While a Vista MAD patch is active, all windows go in one call."),
            ],
            outputs=[io.Model.Output(tooltip="The model, patched to denoise in fused windows at every sampling step.")],
            is_experimental=True,
        )

    @classmethod
    def validate_inputs(cls, window_width: int, window_height: int, stride_x: int, stride_y: int) -> bool | str:
        return check_strides(NODE, window_width, window_height, stride_x, stride_y)

    @classmethod
    def execute(cls, model, window_width: int, window_height: int, stride_x: int, stride_y: int,
                weight_mode: str, wrap_x: bool, window_batch_size: int) -> io.NodeOutput:
        factor = latent_factor(model)
        check_pixels(NODE, factor, window_width=window_width, window_height=window_height, stride_x=stride_x, stride_y=stride_y)
        spec = WindowSpec(NODE, window_width, window_height, stride_x, stride_y, factor, wrap_x, unet_alignment(model))
        model = model.clone()
        previous = model.model_options.get("model_function_wrapper")
        model.set_model_unet_function_wrapper(TiledDiffusionPatch(spec, weight_mode, window_batch_size, previous))
        return io.NodeOutput(model)
