"""Vista: coherent panoramas, very large canvases and zoom stacks for ComfyUI.

ComfyUI imports this file only. Host imports stay lazy (inside ``comfy_entrypoint``) so
the host-free test tiers can import the pack without ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """V3 entry point: the single :class:`VistaExtension` listing every Vista node."""
    from .nodes import VistaExtension

    return VistaExtension()
