"""Zoom stacks: rendering, zoom-consistent noise and multi-resolution blending.

Generative Powers of Ten (Wang et al. 2024, "zoom-stack paper"). A zoom stack
``L = (L_0, …, L_{N-1})`` holds N latents of one size ``H x W``; level ``i`` shows the
scene at zoom ``p^i`` (level 0 is the most zoomed-out), so level ``i+1`` covers the central
``H/p x W/p`` region of level ``i``. Everything here works in **latent pixels** and uses
exact area (box) downscaling, so overlapping regions agree to float tolerance.

Convention (sizes): rendering needs ``H`` and ``W`` divisible by ``2·p`` (the central
``H/p`` block must start on a whole pixel). Alg. 1 pastes level ``j`` into level ``i``
downscaled by ``p^(j-i)``; we render recursively instead (level ``i+1``'s *render*,
area-downscaled by ``p``, replaces level ``i``'s centre). Box filters compose, so this is
exactly Alg. 1 whenever ``H, W`` are divisible by ``2·p^(N-1)``, and it stays exactly
render-consistent for deeper stacks, where a footprint smaller than a pixel is averaged in.
Blending and photo guidance only pair levels whose footprints fall on whole pixels
(:func:`aligned_depth`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry.transform import pyrup

from tqdm.auto import trange

from ..checks import check, check_range, check_shape
from ..sampling.flow_matching import ancestral_step
from ..sampling.noise_streams import step_generator

__all__ = [
    "ZOOM_FACTORS",
    "ZoomSettings",
    "check_stack",
    "aligned_depth",
    "center_crop",
    "area_down",
    "paste_center",
    "render_stack",
    "render_image",
    "render_noise",
    "zoom_noise",
    "check_zoom_noise",
    "blend_stack",
    "photo_loss",
    "photo_guidance",
    "PhotoZoom",
    "ancestral_sigmas",
    "sample_zoom_stack",
]

ZOOM_FACTORS: tuple[int, ...] = (2, 4)


@dataclass(frozen=True)
class ZoomSettings:
    """The two numbers every part of one zoom stack must agree on (paper §4.1).

    ``p``: zoom factor between consecutive levels (2 or 4; level ``i`` is zoom ``p^i``);
    ``levels``: ``N``, the number of levels (= prompts = latent batch = decoded images).
    Made once and handed to every consumer, so noise, sampler, composite and video cannot
    disagree.

    >>> ZoomSettings(2, 4)
    ZoomSettings(p=2, levels=4)
    """

    p: int
    levels: int

    def __post_init__(self):
        check(self.p in ZOOM_FACTORS, f"zoom factor p must be one of {ZOOM_FACTORS}, got {self.p!r}")
        check(isinstance(self.levels, int) and self.levels >= 1, f"levels must be an integer >= 1, got {self.levels!r}")


def check_stack(stack: torch.Tensor, p: int, name: str = "stack", unit: str = "latent px") -> None:
    """Check a zoom stack ``(N, C, H, W)`` and its zoom factor ``p``.

    Rule: ``p`` in :data:`ZOOM_FACTORS`; ``N >= 1``; with ``N >= 2`` levels ``H`` and ``W``
    must be divisible by ``2·p`` so the central ``H/p x W/p`` block starts on a whole pixel.

    >>> check_stack(torch.zeros(3, 4, 8, 16), 2)
    """
    check(p in ZOOM_FACTORS, f"zoom factor p must be one of {ZOOM_FACTORS}, got {p!r}")
    check_shape(stack, ["N", "C", "H", "W"], name)
    n, _, h, w = stack.shape
    check(n >= 1, f"{name} must have at least one zoom level, got N={n}")
    check(n == 1 or (h % (2 * p) == 0 and w % (2 * p) == 0),
          f"{name} height and width must be divisible by 2·p = {2 * p} ({unit}) for a {n}-level "
          f"zoom stack, got {h}x{w}")


def aligned_depth(height: int, width: int, p: int) -> int:
    """Largest ``d`` with ``height`` and ``width`` divisible by ``2·p^d``.

    A level ``d`` steps deeper then covers a central block of whole pixels at every
    intermediate level, so its area downscale by ``p^d`` lines up exactly (paper §4.1, ``D_d``
    and ``M_d``). Blending and photo guidance pair levels at most this far apart.

    >>> aligned_depth(64, 64, 2), aligned_depth(64, 64, 4), aligned_depth(64, 96, 2)
    (5, 2, 4)
    """
    check(p in ZOOM_FACTORS, f"zoom factor p must be one of {ZOOM_FACTORS}, got {p!r}")
    d = 0
    while height % (2 * p ** (d + 1)) == 0 and width % (2 * p ** (d + 1)) == 0:
        d += 1
    return d


def center_crop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Central ``H/scale x W/scale`` block (the mask ``M`` of paper §4.1).

    Shape: ``(..., H, W)`` → ``(..., H/scale, W/scale)``.

    >>> center_crop(torch.arange(16.).reshape(4, 4), 2).tolist()
    [[5.0, 6.0], [9.0, 10.0]]
    """
    h, w = x.shape[-2:]
    check(h % scale == 0 and w % scale == 0 and (h - h // scale) % 2 == 0 and (w - w // scale) % 2 == 0,
          f"center_crop: size {h}x{w} has no whole-pixel central 1/{scale} block")
    top, left = (h - h // scale) // 2, (w - w // scale) // 2
    return x[..., top : top + h // scale, left : left + w // scale]


def area_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Exact area (box) downscale by an integer ``scale`` (the paper's ``D``, box prefilter).

    Shape: ``(B, C, H, W)`` → ``(B, C, H/scale, W/scale)``.

    >>> area_down(torch.arange(4.).reshape(1, 1, 2, 2), 2).item()
    1.5
    """
    check(scale >= 1 and x.shape[-2] % scale == 0 and x.shape[-1] % scale == 0,
          f"area_down: scale must be >= 1 and divide the size {tuple(x.shape[-2:])}, got {scale}")
    return x if scale == 1 else F.avg_pool2d(x, scale)


def paste_center(x: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Copy of ``x`` with its centre replaced by ``inner`` (the inverse of :func:`center_crop`).

    Convention: the block starts at ``((H - h) // 2, (W - w) // 2)``; the input is not modified.

    Shape: ``x (..., H, W)``, ``inner (..., h, w)`` → ``(..., H, W)``.

    >>> paste_center(torch.zeros(4, 4), torch.ones(2, 2))[1].tolist()
    [0.0, 1.0, 1.0, 0.0]
    """
    h, w = x.shape[-2:]
    top, left = (h - inner.shape[-2]) // 2, (w - inner.shape[-1]) // 2
    out = x.clone()
    out[..., top : top + inner.shape[-2], left : left + inner.shape[-1]] = inner
    return out


def _render(stack: torch.Tensor, p: int, gain: float) -> torch.Tensor:
    """Bottom-up composite: level i's centre ← gain · area_down(render(i+1), p)."""
    levels = [stack[-1]]
    for layer in reversed(stack[:-1]):
        inner = gain * area_down(levels[-1][None], p)[0]
        levels.append(paste_center(layer, inner))
    return torch.stack(levels[::-1])


def render_stack(stack: torch.Tensor, p: int) -> torch.Tensor:
    """Render every zoom level of a zoom stack (paper Alg. 1, ``Π_image``).

    The render of level ``i`` is ``L_i`` with its central ``H/p^k`` block replaced by
    ``L_{i+k}`` area-downscaled by ``p^k``, for ``k = 1 … N-1-i`` (deeper levels win), so the
    render of level ``i+1`` area-downscaled by ``p`` equals the central ``H/p x W/p`` block of
    the render of level ``i`` exactly.

    Args:
        stack: zoom stack layers ``L``, latent units.
        p: zoom factor between consecutive levels, 2 or 4.

    Shape: ``(N, C, H, W)`` → ``(N, C, H, W)``.

    Returns:
        The rendered images ``x_i = Π_image(L; i)``; the deepest level is returned as is.

    >>> render_stack(torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]), 2)[0, 0].tolist()[1]
    [0.0, 1.0, 1.0, 0.0]
    """
    check_stack(stack, p)
    return _render(stack, p, 1.0)


def render_image(stack: torch.Tensor, i: int, p: int) -> torch.Tensor:
    """Render zoom level ``i`` of a zoom stack (paper Alg. 1, ``Π_image(L; i)``).

    Only levels ``j >= i`` take part. See :func:`render_stack`.

    Shape: ``stack (N, C, H, W)`` → ``(C, H, W)``.

    >>> render_image(torch.ones(2, 1, 4, 4), 0, 2).shape
    torch.Size([1, 4, 4])
    """
    check_stack(stack, p)
    check(0 <= i < stack.shape[0], f"zoom level i must be in [0, {stack.shape[0] - 1}], got {i}")
    return _render(stack[i:], p, 1.0)[0]


def render_noise(noise_stack: torch.Tensor, p: int) -> torch.Tensor:
    """Zoom-consistent noise (paper Alg. 1 line 4, ``Π_noise``).

    Same composite as :func:`render_stack`, but each pasted, area-downscaled noise is
    multiplied by ``p`` per level (``p_j/p_i = p^(j-i)`` overall): averaging ``p^k x p^k``
    i.i.d. normals divides their std by ``p^k``. If ``noise_stack`` is i.i.d. ``N(0, 1)``,
    every rendered level is i.i.d. ``N(0, 1)``, composited centre included.

    Args:
        noise_stack: independent noise layers ``E``.
        p: zoom factor, 2 or 4.

    Shape: ``(N, C, H, W)`` → ``(N, C, H, W)``.

    >>> render_noise(torch.ones(2, 1, 4, 4), 2)[0, 0, 1, 1].item()
    2.0
    """
    check_stack(noise_stack, p, "noise_stack")
    return _render(noise_stack, p, float(p))


def zoom_noise(shape: tuple[int, ...], p: int, generator: torch.Generator, *, dtype=torch.float32,
               device=None) -> torch.Tensor:
    """Draw i.i.d. normal layers with ``generator`` (on CPU) and render them with :func:`render_noise`.

    Drawing on CPU makes a seed give the same noise on every device.

    Shape: ``shape = (N, C, H, W)`` → ``(N, C, H, W)``.

    >>> zoom_noise((2, 1, 4, 4), 2, torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 4, 4])
    """
    check(len(shape) == 4, f"shape must be (N, C, H, W), got {tuple(shape)}")
    layers = torch.randn(tuple(shape), generator=generator, dtype=torch.float32, device="cpu")
    return render_noise(layers, p).to(device=device, dtype=dtype)


def check_zoom_noise(noise: torch.Tensor, p: int, name: str = "noise", rtol: float = 1e-2) -> None:
    """Check that ``noise`` is zoom-consistent for ``p`` (paper Alg. 1 line 4, ``Π_noise``).

    Rule: for every level ``i``, the central ``H/p x W/p`` block of ``noise[i]`` equals
    ``p · area_down(noise[i+1], p)`` up to ``rtol`` of the noise's largest magnitude (room for
    float16 rounding). Noise drawn for another ``p``, or plain i.i.d. noise, differs by
    ``O(1)`` almost everywhere. All-zero noise (no noise added) passes.

    Shape: ``noise (N, C, H, W)``.

    >>> check_zoom_noise(zoom_noise((3, 1, 16, 16), 4, torch.Generator().manual_seed(0)), 4)
    """
    check_stack(noise, p, name)
    if noise.shape[0] < 2:
        return
    x = noise.float()
    error = (center_crop(x[:-1], p) - p * area_down(x[1:], p)).abs().amax().item()
    scale = max(1.0, x.abs().amax().item())
    check(error <= rtol * scale,
          f"{name} is not zoom-consistent for zoom factor p={p}: a level's centre differs from the next level's "
          f"area-downscaled noise × p by up to {error:.3g}; draw it for the same p (Alg. 1, Π_noise)")


# --- §4.2 multi-resolution blending -----------------------------------------------------
#
# Which observations feed layer L_i? §4.1 indexes levels so that p_i = p^i (level 0 is the
# most zoomed-out), and §4.2's first paragraph says layer L_j is used to render every level
# i <= j, so it must agree with the observations {x_i : i <= j}; Fig. 5 says the same
# ("merging the central region of the zoomed-out images x_j for j <= i"). The next paragraph
# says "cropping all samples j >= i", "N-i-1 images" and "all further zoomed-out levels
# j >= i": that is the same rule written with the levels counted from the most zoomed-IN
# one (then "zoomed-out" means a larger index and the count is N-i-1, itself excluded).
# With this module's indexing the zoomed-out observers of L_i are j <= i, so we follow the
# figure: L_i blends x_i and the centres of x_{i-1}, x_{i-2}, ….


def _box_laplacian(x: torch.Tensor, start: int, stop: int) -> list[torch.Tensor]:
    """Laplacian bands of ``x`` for octaves ``start … stop-1`` plus the octave-``stop`` residual.

    Down = 2x2 box (so octave ``k`` of an image equals its area downscale by ``2^k``, exactly
    the renderer's filter); up = kornia ``pyrup``. Reconstruction is exact for any ``up``.
    """
    bands, g = [], x
    for _ in range(start, stop):
        coarse = F.avg_pool2d(g, 2)
        bands.append(g - pyrup(coarse, border_type="replicate"))
        g = coarse
    return bands + [g]


def _blend_layer(x0_hats: torch.Tensor, i: int, p: int, depth: int) -> torch.Tensor:
    """Blend observations ``x_i, …, x_{i-depth}`` of layer ``i``'s extent (``(C, H, W)``)."""
    q = int(math.log2(p))  # octaves per zoom level
    stop = q * depth
    sums = [None] * (stop + 1)
    counts = [0] * (stop + 1)
    for d in range(depth + 1):
        view = center_crop(x0_hats[i - d], p**d)[None]  # layer i's extent seen by x_{i-d}
        for k, band in enumerate(_box_laplacian(view, q * d, stop), start=q * d):
            sums[k] = band if sums[k] is None else sums[k] + band
            counts[k] += 1
    out = sums[stop] / counts[stop]
    for k in reversed(range(stop)):
        out = sums[k] / counts[k] + pyrup(out, border_type="replicate")
    return out[0]


def blend_stack(x0_hats: torch.Tensor, p: int, levels: int | None = None) -> torch.Tensor:
    """Fuse per-level clean estimates into one zoom stack (paper §4.2, Fig. 5).

    Multi-resolution blending: layer ``L_i`` merges the central ``H/p^d x W/p^d`` block of
    each zoomed-out observation ``x_{i-d}`` (``d = 0 … D``). Each view is analysed into a
    Laplacian pyramid that starts at octave ``d·log2 p`` (it has no finer detail), every
    frequency band is averaged over the views that contain it, and the mean pyramid is
    recomposed. Fine bands come from ``x_i`` alone, the coarsest from all ``D+1`` views; naive
    averaging would blur deep levels instead. The pyramid downsamples with a 2x2 box, so
    observations that are renders of one stack (consistent) come back unchanged. The
    result is linear in ``x0_hats``.

    Args:
        x0_hats: per-level clean estimates ``x̂_i`` (latent units).
        p: zoom factor, 2 or 4.
        levels: most observations blended per layer (itself included); ``None`` = all that
            line up on whole pixels, ``D = min(i, aligned_depth(H, W, p))``; 1 = no blending.

    Shape: ``(N, C, H, W)`` → ``(N, C, H, W)``.

    Returns:
        The stack layers ``L``; render them with :func:`render_stack`.

    >>> x = render_stack(torch.randn(3, 1, 16, 16), 2)
    >>> torch.allclose(blend_stack(x, 2), x, atol=1e-5)
    True
    """
    check_stack(x0_hats, p, "x0_hats")
    check(levels is None or levels >= 1, f"levels must be None or >= 1, got {levels}")
    n, _, h, w = x0_hats.shape
    max_d = aligned_depth(h, w, p) if levels is None else min(levels - 1, aligned_depth(h, w, p))
    return torch.stack([_blend_layer(x0_hats, i, p, min(i, max_d)) for i in range(n)])


# --- §4.4 photograph-based zoom ----------------------------------------------------------


def photo_loss(x0_hats: torch.Tensor, photo: torch.Tensor, p: int) -> torch.Tensor:
    """Photo-zoom loss (paper §4.4, Eq. 1): ``Σ_i ||D_i(x̂_i) − M_i ⊙ ξ||²``.

    ``D_i`` area-downscales level ``i`` by ``p^i``; ``M_i ⊙ ξ`` is the photo's central
    ``H/p^i x W/p^i`` block (the zero-padded parts of Eq. 1 cancel and are left out). Levels
    deeper than :func:`aligned_depth` (footprint not on whole photo pixels) are skipped.

    Shape: ``x0_hats (N, C, H, W)``, ``photo (C, H, W)`` → scalar.

    >>> photo_loss(torch.ones(2, 1, 4, 4), torch.ones(1, 4, 4), 2).item()
    0.0
    """
    check_stack(x0_hats, p, "x0_hats")
    check(tuple(photo.shape) == tuple(x0_hats.shape[1:]),
          f"photo must have one level's shape {tuple(x0_hats.shape[1:])}, got {tuple(photo.shape)}")
    depth = min(x0_hats.shape[0] - 1, aligned_depth(*photo.shape[-2:], p))
    terms = [(area_down(x0_hats[i : i + 1], p**i)[0] - center_crop(photo, p**i)).square().sum()
             for i in range(depth + 1)]
    return torch.stack(terms).sum()


def photo_guidance(x0_hats: torch.Tensor, photo_latent: torch.Tensor, p: int, steps: int = 5,
                   lr: float = 0.1) -> torch.Tensor:
    """Pull the clean estimates towards a photo (paper §4.4: 5 Adam steps, lr 0.1, before blending).

    Works under ``torch.inference_mode`` (ComfyUI runs nodes in it): it leaves inference
    mode, enables grad and clones the inputs out of inference tensors; the graph is freed
    before returning.

    Args:
        x0_hats: per-level clean estimates ``x̂_i`` (latent units).
        photo_latent: the most zoomed-out view ``ξ``, the size of one level.
        p: zoom factor, 2 or 4.
        steps: Adam steps, >= 0.
        lr: Adam learning rate (latent units per step), > 0.

    Shape: ``x0_hats (N, C, H, W)``, ``photo_latent (C, H, W)`` → ``(N, C, H, W)``.

    >>> x = photo_guidance(torch.zeros(2, 1, 4, 4), torch.ones(1, 4, 4), 2, steps=1)
    >>> round(x[0, 0, 0, 0].item(), 3)
    0.1
    """
    check_stack(x0_hats, p, "x0_hats")
    check(tuple(photo_latent.shape) == tuple(x0_hats.shape[1:]),
          f"photo_latent must have one level's shape {tuple(x0_hats.shape[1:])}, got {tuple(photo_latent.shape)}")
    check(steps >= 0, f"photo guidance steps must be >= 0, got {steps}")
    check(lr > 0, f"photo guidance lr must be > 0, got {lr}")
    with torch.inference_mode(False), torch.enable_grad():
        x = x0_hats.detach().clone().float().requires_grad_(True)  # fp32 Adam, even for fp16 models
        photo = photo_latent.detach().clone().to(x)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            photo_loss(x, photo, p).backward()
            opt.step()
        return x.detach().to(x0_hats.dtype).clone()


@dataclass(frozen=True)
class PhotoZoom:
    """Photo-zoom settings for :func:`sample_zoom_stack` (paper §4.4).

    ``until``: guide only while ``step < until · total_steps`` (a public reimplementation
    stops after 80 % of the steps, letting the last steps add detail freely).
    """

    photo: torch.Tensor
    steps: int = 5
    lr: float = 0.1
    until: float = 0.8

    def active(self, step: int, total: int) -> bool:
        """Whether guidance applies at 0-based ``step`` of ``total`` sampling steps."""
        return step < self.until * total

    def apply(self, x0_hats: torch.Tensor, p: int) -> torch.Tensor:
        """Run :func:`photo_guidance` with these settings."""
        return photo_guidance(x0_hats, self.photo, p, self.steps, self.lr)


# --- §4.3 multi-scale joint sampling -----------------------------------------------------


def ancestral_sigmas(sigma_from: float, sigma_to: float, eta: float = 1.0) -> tuple[float, float]:
    """``(sigma_down, sigma_up)`` of an ancestral step (k-diffusion ``get_ancestral_step``).

    ``eta = 1`` is DDPM's posterior variance; ``eta = 0`` is deterministic (DDIM).

    >>> ancestral_sigmas(1.0, 0.0)
    (0.0, 0.0)
    """
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - up**2) ** 0.5, up


def _check_sampler(x: torch.Tensor, sigmas: torch.Tensor, p: int, eta: float, photo: PhotoZoom | None) -> None:
    """Preconditions of :func:`sample_zoom_stack`."""
    check_stack(x, p, "x")
    check(sigmas.ndim == 1 and len(sigmas) >= 1, f"sigmas must be a 1-D schedule, got shape {tuple(sigmas.shape)}")
    check(eta >= 0, f"eta must be >= 0, got {eta}")
    if photo is not None:
        check(tuple(photo.photo.shape) == tuple(x.shape[1:]),
              f"photo latent must have one level's shape {tuple(x.shape[1:])}, got {tuple(photo.photo.shape)}")
        check_range("photo until", photo.until, 0.0, 1.0)
        check(photo.steps >= 0, f"photo guidance steps must be >= 0, got {photo.steps}")
        check(photo.lr > 0, f"photo guidance lr must be > 0, got {photo.lr}")


def sample_zoom_stack(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict | None = None,
                      callback: Callable | None = None, disable: bool | None = None, *, p: int, eta: float = 1.0,
                      s_noise: float = 1.0, photo_guidance: PhotoZoom | None = None,
                      before_step: Callable[[], None] | None = None, flow_matching: bool = False,
                      noise_scale: float = 1.0) -> torch.Tensor:
    """Multi-scale joint sampling of a zoom stack (paper Alg. 2), k-diffusion sampler form.

    Per step: predict every level's ``x̂_i`` from its own noisy image, optionally apply photo
    guidance (§4.4), blend the estimates into one stack (§4.2), render it (Alg. 1), then take
    an ancestral (DDPM-like for ``eta = 1``) step per level towards its render, with
    zoom-consistent noise ``Π_noise``. A step to sigma 0 returns the rendered blended
    estimate, so the output is render-consistent.

    Convention (randomness): the step noise comes from
    :func:`~core.sampling.noise_streams.step_generator` of ``extra_args["seed"]``, a stream independent
    of the initial noise that a NOISE drew from the same seed (seeding both alike would make
    the first step's noise the initial noise again, and the noisy stack after step 1 would
    carry it twice).

    The step is the k-diffusion (variance-exploding) ancestral step for ``x = x0 + sigma·eps``, or with
    ``flow_matching`` ComfyUI's rectified-flow step ``sample_euler_ancestral_RF`` for
    ``x = (1 - sigma)·x0 + sigma·eps`` (SD3, Flux; :func:`~core.sampling.flow_matching.rf_step`): the euler part
    is rescaled by ``(1 - sigma_next)/(1 - sigma_down)`` and the zoom-consistent noise is scaled by
    ``renoise``. ``Π_noise`` renders i.i.d. ``N(0, 1)`` noise at every level, so each level's fresh
    noise has the step's variance ``(s_noise · noise · noise_scale)^2`` in either form.

    Args:
        model: ``model(x, sigma * ones(N), **extra_args) -> x̂`` (each level's own prompt).
        x: noisy zoom stack, already scaled by ``sigmas[0]``.
        sigmas: noise levels, decreasing.
        extra_args: passed unopened to ``model``; ``"seed"`` (default 0) seeds the step noise.
        callback: called once per step with ``{x, i, sigma, sigma_hat, denoised}``.
        disable: disable the progress bar.
        p: zoom factor, 2 or 4.
        eta, s_noise: ancestral noise amount and scale.
        flow_matching: the model samples by flow matching (ComfyUI's CONST sampling): take the RF step.
        noise_scale: multiplies ``s_noise`` (ComfyUI v0.33.0 ``model_sampling.noise_scale``; default 1).
        photo_guidance: optional :class:`PhotoZoom`.
        before_step: called at the start of every step (interrupt checks).

    Shape: ``x (N, C, H, W)`` → ``(N, C, H, W)``.
    """
    extra_args = {} if extra_args is None else extra_args
    _check_sampler(x, sigmas, p, eta, photo_guidance)
    check(noise_scale >= 0, f"noise_scale must be >= 0, got {noise_scale}")
    generator = step_generator(extra_args.get("seed"))  # CPU, like zoom_noise: same seed, same stack everywhere
    s_in, total = x.new_ones(x.shape[0]), len(sigmas) - 1
    for i in trange(total, disable=disable):
        if before_step is not None:
            before_step()
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        x0_hats = model(x, sigmas[i] * s_in, **extra_args)
        if photo_guidance is not None and photo_guidance.active(i, total):
            x0_hats = photo_guidance.apply(x0_hats, p)
        denoised = render_stack(blend_stack(x0_hats, p), p)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigma_next == 0:
            x = denoised
            continue
        step = ancestral_step(sigma, sigma_next, eta, flow_matching)
        x = step.mean(x, denoised)
        if step.noise > 0:
            x = x + zoom_noise(tuple(x.shape), p, generator, dtype=x.dtype, device=x.device) * (s_noise * noise_scale * step.noise)
    return x
