"""Warnings that reach the user: the server log and, when a ComfyUI server runs, a toast in the browser.

The web extension (web/vista.js) listens for ``vista.warning`` websocket messages and shows each as a
warning toast. Without a running server (node tests, scripts) only the log line is written.
"""
from __future__ import annotations

import logging
import sys

EVENT = "vista.warning"


def _prompt_server():
    """ComfyUI's running ``PromptServer``, or None (looked up lazily: never imports the server module)."""
    server = sys.modules.get("server")
    prompt_server = getattr(server, "PromptServer", None)
    return getattr(prompt_server, "instance", None)


def warn_user(node: str, message: str) -> None:
    """Log ``message`` as a warning and send it to the browser of the prompt that is running.

    Args:
        node: display name of the node that warns (the toast's title), e.g. "Vista Tiled Diffusion".
        message: the full warning, naming the input and the value used.
    """
    logging.warning(message)
    server = _prompt_server()
    if server is None:
        return
    # The client that queued the running prompt (None broadcasts), like ComfyUI's own progress messages.
    server.send_sync(EVENT, {"node": node, "message": message}, getattr(server, "client_id", None))
