"""ComfyUI adapters (V3 node API). Imported only by the host, through ``comfy_entrypoint``."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .guidance import VistaMultiScaleDiffusion, VistaSyncDiffusion, register_lpips_folder
from .latent_fusion import VistaLatentFusionSampler
from .mad import VistaMADAttention
from .style_alignment import VistaStyleAlignment
from .tiled_diffusion import VistaTiledDiffusion
from .zoom import (VistaZoomComposite, VistaZoomNoise, VistaZoomPrompts, VistaZoomSettings, VistaZoomStackSampler,
                   VistaZoomVideo)


register_lpips_folder()  # models/lpips: where Vista SyncDiffusion finds the VGG LPIPS weights


class VistaExtension(ComfyExtension):
    """Every Vista node."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [VistaTiledDiffusion, VistaMADAttention, VistaLatentFusionSampler, VistaStyleAlignment,
                VistaSyncDiffusion, VistaMultiScaleDiffusion, VistaZoomSettings, VistaZoomPrompts, VistaZoomNoise, VistaZoomStackSampler, VistaZoomComposite,
                VistaZoomVideo]
