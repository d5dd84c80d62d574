"""ComfyUI adapters (V3 node API). Imported only by the host, through ``comfy_entrypoint``."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from .mad import VistaMADAttention
from .tiled_diffusion import VistaTiledDiffusion


class VistaExtension(ComfyExtension):
    """Every Vista node."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [VistaTiledDiffusion, VistaMADAttention]
