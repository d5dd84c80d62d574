"""Host tier fixtures: a real ComfyUI server (``COMFYUI_PATH``) with the pack installed.

Without ``COMFYUI_PATH`` every test that uses these fixtures skips with a loud reason.
The helpers live in comfy_server.py next to this file (this folder is put on sys.path;
the repo root never is, so our ``nodes/`` cannot shadow ComfyUI's ``nodes.py``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import comfy_server  # noqa: E402


@pytest.fixture(scope="session")
def comfyui_path() -> Path:
    """The ComfyUI checkout under test (skips the tier when COMFYUI_PATH is unset or invalid)."""
    return comfy_server.comfyui_path()


@pytest.fixture(scope="session")
def test_checkpoint(comfyui_path) -> Path:
    """The random-weight SD1.5 checkpoint, built once into VISTA_TEST_CACHE."""
    return comfy_server.build_checkpoint(comfy_server.cache_dir(), comfyui_path)


@pytest.fixture(scope="session")
def comfyui_server(comfyui_path, test_checkpoint, tmp_path_factory):
    """A running ComfyUI server (CPU) with Vista linked into custom_nodes/vista; stopped at the end."""
    workdir = tmp_path_factory.mktemp("comfyui")
    timeout = float(os.environ.get("VISTA_E2E_STARTUP_TIMEOUT", "180"))
    with comfy_server.PackLink(comfyui_path):
        server = comfy_server.ComfyServer(comfyui_path, workdir, test_checkpoint.parent)
        server.start(timeout=timeout)
        try:
            yield server
        finally:
            server.stop()
