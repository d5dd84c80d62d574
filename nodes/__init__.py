"""ComfyUI adapters (V3 node API). Imported only by the host, through ``comfy_entrypoint``."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .latent_fusion import VistaLatentFusionSampler
from .mad import VistaMADAttention
from .style_alignment import VistaStyleAlignment
from .tiled_diffusion import VistaTiledDiffusion
from .zoom import VistaZoomNoise, VistaZoomPrompts, VistaZoomStackSampler, VistaZoomVideo


class VistaExtension(ComfyExtension):
    """Every Vista node."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [VistaTiledDiffusion, VistaMADAttention, VistaLatentFusionSampler, VistaStyleAlignment,
                VistaZoomPrompts, VistaZoomNoise, VistaZoomStackSampler, VistaZoomVideo]
