"""Vista Style Alignment: initial noise whose window-sized tiles are slerped toward one reference (GVCF eq. 15)."""
from __future__ import annotations


import comfy.sample
import torch
from comfy_api.latest import io

from ..core.checks import VistaInputError
from ..core.fusion.style_alignment import reference_from_canvas, style_align_noise
from ._common import check_image_latent, check_numbers, check_pixels, clamp_notice, core_error, latent_factor, require
from .notify import warn_user

NODE = "Vista Style Alignment"
REFERENCES = ("seeded", "canvas crop")


class StyleAlignedNoise:
    """A NOISE: ``seed`` + ``generate_noise(latent)``, like ComfyUI's RandomNoise, then style-aligned.

    The canvas noise is exactly RandomNoise's (``comfy.sample.prepare_noise``, honouring
    ``batch_index``); the "seeded" reference is a tile drawn the same way from ``seed + 1``.
    """

    def __init__(self, seed: int, tile_hw_px: tuple[int, int], factor: int, alpha: float, reference: str):
        self.seed, self.tile_hw_px, self.factor, self.alpha, self.reference = seed, tile_hw_px, factor, alpha, reference

    def tile(self, canvas_hw: tuple[int, int]) -> tuple[int, int]:
        """The tile size in latent px; a tile larger than the canvas is clamped to it (the windowed nodes' rule)."""
        tile = []
        for name, px, size, side in zip(("window_height", "window_width"), self.tile_hw_px, canvas_hw, ("height", "width")):
            if px > size * self.factor:
                warn_user(NODE, clamp_notice(NODE, name, px, size * self.factor, side, "tile"))
            tile.append(min(px // self.factor, size))
        return tile[0], tile[1]

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        latent = input_latent["samples"]
        check_image_latent(NODE, "latent_image", latent)
        batch_inds = input_latent.get("batch_index")
        noise = comfy.sample.prepare_noise(latent, self.seed, batch_inds)
        tile_h, tile_w = self.tile(tuple(latent.shape[-2:]))
        try:
            if self.reference == "canvas crop":
                reference = reference_from_canvas(noise, tile_h, tile_w)
            else:
                reference = comfy.sample.prepare_noise(latent[..., :tile_h, :tile_w], self.seed + 1, batch_inds)
            return style_align_noise(noise, reference, tile_h, tile_w, self.alpha)
        except VistaInputError as e:
            raise core_error(NODE, e) from e


class VistaStyleAlignment(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="VistaStyleAlignment",
            display_name=NODE,
            category="Vista/fusion",
            description=(
                "One-shot Style Alignment (GVCF eq. 15): the initial canvas noise (exactly RandomNoise's for this seed) "
                "is cut into window-sized tiles and each tile is slerped toward one reference noise, so all windows "
                "start from similar noise and the panorama keeps one style. Free: it only changes the starting noise. "
                "Plug it into SamplerCustomAdvanced's noise input, with any sampler (Vista Latent Fusion Sampler, or a "
                "stock one on a Vista Tiled Diffusion model). alpha = 0 is plain RandomNoise."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model that will sample; only its latent downscale factor is read, "
                                                "to turn the tile size from image px into latent px."),
                io.Int.Input("noise_seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the canvas noise (the same noise RandomNoise makes with this seed)."),
                io.Int.Input("window_width", default=512, min=64, max=16384, step=8,
                             tooltip="Tile width in image pixels: the window width of the fusion (512 = 64 latent px on SD1.5)."),
                io.Int.Input("window_height", default=512, min=64, max=16384, step=8,
                             tooltip="Tile height in image pixels: the window height of the fusion."),
                io.Float.Input("alpha", default=0.4, min=0.0, max=1.0, step=0.01,
                               tooltip="Slerp ratio toward the reference (GVCF eq. 15; paper 0.4). 0 = plain noise, "
                                       "1 = every tile is the reference (repetitive)."),
                io.Combo.Input("reference", options=list(REFERENCES), default="seeded",
                               tooltip="seeded = a reference tile drawn from noise_seed + 1; canvas crop = the "
                                       "top-left tile of the canvas noise itself."),
            ],
            outputs=[io.Noise.Output(tooltip="A NOISE for SamplerCustomAdvanced.")],
        )

    @classmethod
    def validate_inputs(cls, alpha: float = None) -> bool | str:
        return check_numbers(NODE, cls.define_schema(), alpha=alpha)

    @classmethod
    def execute(cls, model, noise_seed: int, window_width: int, window_height: int, alpha: float,
                reference: str) -> io.NodeOutput:
        require(cls.validate_inputs(alpha))  # a linked value
        factor = latent_factor(model)
        check_pixels(NODE, factor, window_width=window_width, window_height=window_height)
        return io.NodeOutput(StyleAlignedNoise(noise_seed, (window_height, window_width), factor, alpha, reference))
