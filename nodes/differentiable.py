"""Differentiable callables over ComfyUI's models, for gradient guidance (SyncDiffusion, MSD).

ComfyUI runs nodes under ``torch.inference_mode()`` and loads weights as inference tensors, which
autograd cannot save for backward. Guidance therefore runs each network through
``torch.func.functional_call`` with non-inference copies of its parameters and buffers
(:class:`WeightCopies`), made once when a guided run starts and dropped when it ends. ComfyUI's
modules are never assigned to: ``functional_call`` swaps the tensors only for the duration of one
call (so LoRA backup/unpatch and the model cache are untouched). Extra memory while the guided
sampler runs: one copy of the diffusion model's weights, and of the decoder's for SyncDiffusion.

ComfyUI's ``VAE.decode`` is not differentiable (preallocated output buffer, tiled fallback), so the
decoder runs the VAE's network module (``VAE.first_stage_model.decode``) directly.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import chain

import comfy.model_management
import torch
from torch.func import functional_call

from ..core.guidance.gradient import Decode, Denoise

__all__ = ["WeightCopies", "autograd_kernels", "differentiable_denoiser", "differentiable_decoder"]


class WeightCopies:
    """Non-inference copies of a module's parameters and buffers, made outside inference mode.

    Attributes:
        tensors: ``{name: tensor}`` as ``module.named_parameters()`` / ``named_buffers()`` name them.
        nbytes: their total size in bytes (the guidance's extra memory for this module).
    """

    def __init__(self, module: torch.nn.Module):
        with torch.inference_mode(False), torch.no_grad():
            named = chain(module.named_parameters(remove_duplicate=False), module.named_buffers(remove_duplicate=False))
            self.tensors = {name: t.detach().clone() for name, t in named}
        self.nbytes = sum(t.numel() * t.element_size() for t in self.tensors.values())


class _Call(torch.nn.Module):
    """A module whose only submodule is ``net`` and whose forward is ``fn``: what ``functional_call`` swaps."""

    def __init__(self, net: torch.nn.Module, fn: Callable):
        super().__init__()
        self.net, self.fn = net, fn

    def forward(self, *args):
        return self.fn(*args)


def _through_copies(module: torch.nn.Module, copies: WeightCopies, fn: Callable) -> Callable:
    """``fn`` run with ``module``'s tensors swapped for ``copies`` during each call."""
    holder = _Call(module, fn)
    tensors = {f"net.{name}": t for name, t in copies.tensors.items()}
    return lambda *args: functional_call(holder, tensors, args, tie_weights=False, strict=False)


@contextmanager
def autograd_kernels() -> Iterator[None]:
    """The host's own switch to autograd-capable kernels, for the duration of a differentiable pass.

    ComfyUI v0.33.0 runs RoPE (Flux and its relatives) through a ``comfy_kitchen`` custom op that has no
    backward, unless ``comfy.model_management.in_training`` is set: the flag ComfyUI's own training node
    (``comfy_extras/nodes_train.py``) sets around its differentiable passes and restores afterwards. The
    flag is restored here too, also on error. v0.3.64 has no such flag (plain torch ops): nothing to do.
    """
    if not hasattr(comfy.model_management, "in_training"):
        yield
        return
    before = comfy.model_management.in_training
    comfy.model_management.in_training = True
    try:
        yield
    finally:
        comfy.model_management.in_training = before


def differentiable_denoiser(model_wrap, model_options: dict, seed: int | None, copies: WeightCopies) -> Denoise:
    """The guider's CFG'd clean prediction of a window batch, differentiable w.r.t. the windows.

    ``model_wrap`` is the guider a ComfyUI sampler receives (``CFGGuider``: calling it runs ComfyUI's
    own prediction with its processed conds and CFG); ``copies`` must be of
    ``model_wrap.model_patcher.model``. ``model_options`` are the run's, without a MAD layout (guidance
    passes attend per window, see README).
    """
    def call(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with autograd_kernels():
            return model_wrap(x, sigma, model_options=model_options, seed=seed)

    return _through_copies(model_wrap.model_patcher.model, copies, call)


def differentiable_decoder(vae, model_patcher) -> tuple[Decode, WeightCopies]:
    """Model-space clean latents → RGB in [-1, 1] through the VAE's network module, differentiable.

    The latents are turned into the VAE's space with the model's own ``process_latent_out`` (the step
    ComfyUI's samplers take before VAEDecode); the output is float32, clamped to [-1, 1].
    """
    comfy.model_management.load_models_gpu([vae.patcher])
    module = vae.first_stage_model
    copies = WeightCopies(module)
    model = model_patcher.model

    def decode(x0: torch.Tensor) -> torch.Tensor:
        latents = model.process_latent_out(x0).to(device=vae.device, dtype=vae.vae_dtype)
        return module.decode(latents).float().clamp(-1, 1)

    return _through_copies(module, copies, decode), copies
