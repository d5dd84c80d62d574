"""SDXL size and crop micro-conditioning, per window.

SDXL (Podell et al. 2023, "SDXL: Improving Latent Diffusion Models for High-Resolution Image
Synthesis", §2.2 "Micro-Conditioning" and §2.3 multi-aspect training) conditions its UNet on a
vector ``y`` that holds, after the pooled text embedding, six Fourier-feature encoded integers:

    y = [pooled | F(h_orig) | F(w_orig) | F(c_top) | F(c_left) | F(h_target) | F(w_target)]

``F`` is the sinusoidal embedding of DDPM timesteps with 256 dims (cos half, then sin half,
``max_period`` 10000), sizes and crop offsets in image pixels. In training, the original size is
the source image's size before resizing, ``(c_top, c_left)`` the crop's top-left corner, and the
target size the bucket the UNet sees (§2.3). A window of a MultiDiffusion canvas is a crop of the
canvas: told honestly, its crop is the window's offset in the canvas and its target size is the
window's own size. :func:`window_size_conditioning` rewrites those four fields per window and keeps
the pooled embedding and the original size as the caller's ``y`` has them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange, repeat

from ..checks import check
from .windows import Window

__all__ = ["SIZE_EMBED_DIM", "SIZE_FIELDS", "fourier_embedding", "size_embedding", "window_crop_target",
           "window_size_conditioning"]

SIZE_EMBED_DIM = 256
SIZE_FIELDS = ("height", "width", "crop_h", "crop_w", "target_height", "target_width")
"""The six integers of SDXL's ``y`` after the pooled embedding, in their order (image px)."""
REWRITTEN = 4  # crop_h, crop_w, target_height, target_width: the last four fields


def fourier_embedding(values: torch.Tensor, dim: int = SIZE_EMBED_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of real values (DDPM timestep embedding; SDXL §2.2 "Fourier feature encoding").

    Convention: ``[cos(v f_0), …, cos(v f_{d/2-1}), sin(v f_0), …]`` with ``f_k = max_period^(-k/(d/2))``,
    computed in float32 on the values' device; an odd ``dim`` gets one zero column.

    Args:
        values: ``(N,)`` values (pixel sizes and offsets for SDXL).
        dim: embedding width (SDXL: 256).
        max_period: frequency scale (DDPM and SDXL: 10000).

    Returns:
        ``(N, dim)`` float32 embeddings.

    >>> fourier_embedding(torch.tensor([0.0]), 4).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    """
    check(values.ndim == 1, f"values must have shape (N,), got {tuple(values.shape)}")
    check(dim >= 2, f"dim must be >= 2, got {dim}")
    half = dim // 2
    steps = torch.arange(start=0, end=half, dtype=torch.float32, device=values.device)
    freqs = torch.exp(-math.log(max_period) * steps / half)
    args = values[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def size_embedding(sizes: torch.Tensor, dim: int = SIZE_EMBED_DIM) -> torch.Tensor:
    """Each row's integers Fourier-embedded and concatenated in order (SDXL's ``y`` tail).

    Shape: ``sizes (N, K)`` → ``(N, K·dim)``.

    >>> size_embedding(torch.tensor([[1024.0, 2048.0]])).shape
    torch.Size([1, 512])
    """
    check(sizes.ndim == 2, f"sizes must have shape (N, K), got {tuple(sizes.shape)}")
    flat = fourier_embedding(rearrange(sizes, "n k -> (n k)"), dim)
    return rearrange(flat, "(n k) d -> n (k d)", k=sizes.shape[1])


def window_crop_target(windows: Sequence[Window], factor: int) -> torch.Tensor:
    """``(crop_h, crop_w, target_height, target_width)`` of each window in image px.

    The crop is the window's top-left offset in the canvas (a wrapped window keeps its offset,
    ``x`` in ``[0, W)``), the target its own size; ``factor`` is image px per latent px.

    Shape: ``n`` windows → ``(n, 4)`` float32.

    >>> window_crop_target([Window(0, 16, 128, 128)], 8).tolist()
    [[0.0, 128.0, 1024.0, 1024.0]]
    """
    check(factor >= 1, f"factor must be >= 1 image px per latent px, got {factor}")
    return torch.tensor([[w.y * factor, w.x * factor, w.h * factor, w.w * factor] for w in windows], dtype=torch.float32)


def window_size_conditioning(y: torch.Tensor, windows: Sequence[Window], factor: int, groups: int = 1) -> torch.Tensor:
    """SDXL's ``y`` with each window's crop offset and target size (SDXL §2.2).

    Keeps the pooled text embedding and the original size (ComfyUI's default: the canvas size) and
    replaces ``F(c_top) | F(c_left) | F(h_target) | F(w_target)`` (the last ``4·256`` values) with
    :func:`window_crop_target` of each row's window. The embeddings are computed in float32 on the CPU, as
    ComfyUI's ``SDXL.encode_adm`` computes them, so a window covering the canvas at offset (0, 0) gets
    exactly ComfyUI's own ``y`` (crop 0, target = original = canvas).

    Convention: the batch holds ``groups`` consecutive blocks, each window-major with ``R`` rows per
    window (row ``g·n·R + i·R + r`` belongs to window ``i``): ``groups = 1`` for a canvas call repeated
    per window (:func:`~core.canvas.windows.repeat_for_windows`), ``groups`` = the conditionings batched in one
    model call when each block was repeated to the window batch (ComfyUI's ``repeat_to_batch_size``).

    Args:
        y: ``(groups·n·R, D)`` SDXL vectors, ``D = P + 6·256`` with pooled width ``P`` (1280 for SDXL).
        windows: the ``n`` windows of the batch (latent px).
        factor: image px per latent px (8 for SDXL).
        groups: consecutive window-major blocks in the batch.

    Returns:
        A new ``(groups·n·R, D)`` tensor in ``y``'s dtype and device.
    """
    n = len(windows)
    check(y.ndim == 2 and y.shape[1] > len(SIZE_FIELDS) * SIZE_EMBED_DIM,
          f"y must have shape (batch, pooled + {len(SIZE_FIELDS)}x{SIZE_EMBED_DIM}), got {tuple(y.shape)}")
    check(n >= 1 and groups >= 1 and y.shape[0] % (groups * n) == 0,
          f"y batch {y.shape[0]} must be a multiple of groups={groups} x {n} windows")
    tail = size_embedding(window_crop_target(windows, factor)).to(device=y.device, dtype=y.dtype)  # (n, 4·256)
    rows = rearrange(y, "(g n r) d -> g n r d", g=groups, n=n)
    keep = rows[..., : y.shape[1] - REWRITTEN * SIZE_EMBED_DIM]
    new = repeat(tail, "n d -> g n r d", g=groups, r=rows.shape[2])
    return rearrange(torch.cat([keep, new], dim=-1), "g n r d -> (g n r) d")
