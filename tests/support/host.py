"""In-process access to a real ComfyUI host for node-tier tests (no mocks).

``COMFYUI_PATH`` must point at a ComfyUI checkout; otherwise every caller skips with a
loud reason. The host is imported CPU-only with PyTorch cross-attention, as
``main.py --cpu --use-pytorch-cross-attention`` would, and the random-weight SD1.5
checkpoint is built with tools/make_test_checkpoint.py into ``VISTA_TEST_CACHE``.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_REASON = ("COMFYUI_PATH not set: host tier skipped — set COMFYUI_PATH to a ComfyUI checkout "
               "(see README, 'Tests') to run it")


def comfy_path() -> Path:
    """The host checkout, or skip the calling test loudly."""
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        pytest.skip(SKIP_REASON)
    if not (Path(path) / "comfy" / "sd.py").is_file():
        pytest.skip(f"COMFYUI_PATH={path} is not a ComfyUI checkout (no comfy/sd.py): host tier skipped")
    return Path(path)


def cache_dir() -> Path:
    return Path(os.environ.get("VISTA_TEST_CACHE", Path.home() / ".cache" / "vista-tests"))


@functools.lru_cache(maxsize=None)
def _tool():
    spec = importlib.util.spec_from_file_location("vista_make_test_checkpoint", ROOT / "tools" / "make_test_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def _import_host(path: str):
    comfy = _tool()._import_host(Path(path))
    import comfy.sample  # noqa: F401
    import comfy.samplers  # noqa: F401
    import comfy.sd  # noqa: F401

    return comfy


def import_host():
    """The host's ``comfy`` package (imported once per process)."""
    return _import_host(str(comfy_path()))


@functools.lru_cache(maxsize=None)
def load_checkpoint():
    """(model_patcher, clip, vae) of the random-weight SD1.5 test checkpoint."""
    comfy = import_host()
    path = _tool().make_checkpoint(cache_dir(), comfy_path())
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    return model, clip, vae


def encode(clip, text: str):
    """A CONDITIONING list, like CLIPTextEncode."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))
