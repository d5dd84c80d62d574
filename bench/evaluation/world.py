"""A procedural landscape world whose global layout is known exactly (coherence benchmark, issue [G]).

No pretrained text-to-image model can be had offline, so Vista's panorama methods are measured on a
world made for it: a small denoiser is trained on **window-sized crops** of wide scenes and must be
made coherent by the panorama method, exactly as Stable Diffusion is (SyncDiffusion §5, MultiDiffusion
§4). A scene of class ``day`` / ``dusk`` / ``night`` (the "prompt") is drawn from a seeded
``torch.Generator`` and composited back to front, with a one-pixel anti-aliased edge on every shape:

1. **sky**: a vertical gradient from ``sky_top`` (row 0) to ``sky_horizon`` (at the horizon),
   constant along ``x``; both colours are the class palette plus a per-scene jitter, so windows of
   one scene must agree on them (:func:`~bench.evaluation.coherence_metrics.sky_drift`);
2. **sun or moon**: exactly one disc per scene (the moon at night), above the mountains;
3. **mountains**: a hazy silhouette ``skyline(x) = horizon − ridge(x)``, ``ridge`` a sum of wide
   Gaussian peaks (σ = 0.35–0.9 scene heights, one per ~1.5 heights of width) with a small ripple,
   so a window-sized crop never shows the whole layout;
4. **ground**: from the horizon down, a far-to-near colour ramp with a low-contrast value-noise
   texture (bicubic value noise, fields stretched along ``x``).

The horizon is **flat** within a scene (one height per scene, 55–75 % of the height): its spread
along a generated panorama measures incoherence (:func:`~bench.evaluation.coherence_metrics.horizon_variance`).
Mountains are hazy (close to the sky colour) while the ground is not, so the sky/ground split is the
dominant vertical colour edge of every column. All geometry scales with the scene height, so a scene
rendered twice as tall is the same world seen through a 2× zoom (:func:`random_crops` ``zooms``).

**The world's latent** (what the denoiser diffuses, its "VAE"): :func:`encode_latent` averages 4×4 pixel blocks,
so a 64 px window is 3 × 16 × 16 — 4 image px per latent px, like SD's 8, and a latent whose every dimension carries
image content. :func:`decode_latent` upsamples bilinearly: lossy in the top two octaves, as SD's VAE is lossy.
(A lossless ``pixel_unshuffle`` latent, 48 × 16 × 16, or a 2×2-pooled 12-channel one, leaves channels that are
nearly constant in the data — the sub-pixel differences; a small denoiser's errors there decode as colour
checkerboards, which the first trained models showed from every noise level.)

Convention: images are RGB in **[-1, 1]** (the LPIPS / VAE-decoded convention), ``(3, H, W)``;
layout colours are in the same units; rows grow downwards; a pixel ``(y, x)`` has its centre at
``(y + 0.5, x + 0.5)``. Everything is drawn on the CPU from ``torch.Generator().manual_seed(seed)``
in a fixed order, so one ``(class_id, seed, height, width)`` gives one image, bit for bit.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...core.checks import check

__all__ = ["SCENE_CLASSES", "Palette", "PALETTES", "SKY_BAND", "LATENT_CHANNELS", "LATENT_FACTOR", "render_scene",
           "crop_layout", "random_crops", "encode_latent", "decode_latent"]

#: The scene classes, indexed by ``class_id``: the denoiser's "prompts".
SCENE_CLASSES = ("day", "dusk", "night")

#: Channels of the world's latent, and image px per latent px (:func:`encode_latent`).
LATENT_CHANNELS, LATENT_FACTOR = 3, 4

#: Fraction of the height whose rows are always sky (no sun, no mountain): the sky-colour band.
SKY_BAND = 0.1


class Palette(NamedTuple):
    """Colours (RGB in [0, 1]) and sun geometry (fractions of the scene height) of one class."""

    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    mountain_dark: tuple[float, float, float]  # mountains = 60 % sky_horizon + 40 % this (haze)
    ground_far: tuple[float, float, float]
    ground_near: tuple[float, float, float]
    sun: tuple[float, float, float]
    sun_radius: float
    sun_rows: tuple[float, float]  # range of the sun centre's row
    texture: float  # amplitude of the ground texture


PALETTES = (
    Palette((0.30, 0.55, 0.90), (0.62, 0.78, 0.95), (0.25, 0.32, 0.45), (0.34, 0.55, 0.24), (0.20, 0.38, 0.14),
            (1.00, 0.97, 0.85), 0.07, (0.19, 0.25), 0.05),
    Palette((0.25, 0.22, 0.50), (0.95, 0.55, 0.30), (0.30, 0.18, 0.30), (0.30, 0.21, 0.16), (0.16, 0.11, 0.09),
            (1.00, 0.93, 0.75), 0.08, (0.20, 0.30), 0.04),
    Palette((0.03, 0.05, 0.16), (0.09, 0.13, 0.30), (0.03, 0.04, 0.08), (0.13, 0.17, 0.09), (0.05, 0.08, 0.05),
            (0.92, 0.92, 0.88), 0.06, (0.17, 0.28), 0.025),
)

_HORIZON = (0.55, 0.75)  # horizon row range, fractions of the height
_RIDGE_MAX = 0.22  # tallest mountain, fraction of the height (skyline >= 0.33 H)
_SKY_JITTER = 0.05  # per-scene jitter of each sky colour channel, [0, 1] units


def _uniform(g: torch.Generator, low: float, high: float, n: int = 1) -> torch.Tensor:
    """``n`` draws from U(low, high) in float64 (the scene's randomness, in a fixed order)."""
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def _coverage(signed_distance: torch.Tensor) -> torch.Tensor:
    """Anti-aliased coverage of a shape from the signed distance (px, > 0 inside): a 1-px linear ramp."""
    return (signed_distance + 0.5).clamp(0.0, 1.0)


def ridge_profile(peaks: torch.Tensor, ripple: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Mountain height above the horizon per column (px): Gaussian peaks plus a ripple where they stand.

    ``ridge(x) = m · tanh(s(x) / m)`` with ``s(x) = Σ_k a_k exp(−(x − c_k)² / 2σ_k²) · (1 + ripple(x))``
    at the column centres ``x + 0.5`` and ``m = _RIDGE_MAX · H`` (a soft cap: overlapping peaks never
    flatten); ``ripple`` is a sum of two sines of relative amplitude ≤ 0.1.

    Args:
        peaks: ``(P, 3)`` rows ``(c, σ, a)`` in px.
        ripple: ``(2, 2)`` rows ``(wavelength px, phase)``.

    Shape: → ``(W,)`` float64, ``>= 0``.
    """
    x = torch.arange(width, dtype=torch.float64) + 0.5
    bumps = peaks[:, 2:3] * torch.exp(-((x - peaks[:, 0:1]) ** 2) / (2 * peaks[:, 1:2] ** 2))
    wiggle = 1 + 0.06 * torch.sin(2 * math.pi * x / ripple[0, 0] + ripple[0, 1]) \
        + 0.04 * torch.sin(2 * math.pi * x / ripple[1, 0] + ripple[1, 1])
    cap = _RIDGE_MAX * height
    return cap * torch.tanh(bumps.sum(0) * wiggle / cap)


def value_noise(g: torch.Generator, height: int, width: int, cell_h: int, cell_w: int) -> torch.Tensor:
    """Smooth noise: uniform values on a ``cell_h x cell_w`` px lattice, bicubically interpolated.

    The lattice is anchored at pixel ``(0, 0)``, so any crop of a scene shows the same texture.

    Shape: → ``(height, width)`` float64, zero-mean lattice values in [-1, 1].
    """
    gh, gw = math.ceil(height / cell_h) + 1, math.ceil(width / cell_w) + 1
    lattice = torch.rand(1, 1, gh, gw, generator=g, dtype=torch.float64) * 2 - 1
    full = F.interpolate(lattice, size=((gh - 1) * cell_h + 1, (gw - 1) * cell_w + 1), mode="bicubic", align_corners=True)
    return full[0, 0, :height, :width]


def _draw_layout(class_id: int, g: torch.Generator, height: int, width: int) -> dict:
    """Draw the global layout of a scene (px, [0, 1] colours) from ``g``, in a fixed order."""
    pal = PALETTES[class_id]
    jitter = lambda colour: (torch.tensor(colour, dtype=torch.float64)  # noqa: E731
                             + _uniform(g, -_SKY_JITTER, _SKY_JITTER, 3)).clamp(0, 1)
    sky_top = jitter(pal.sky_top)
    sky_horizon = jitter(pal.sky_horizon)
    horizon = float(_uniform(g, *_HORIZON)) * height
    n_peaks = max(1, round(width / (1.5 * height)) + int(torch.randint(0, 2, (1,), generator=g)))
    peaks = torch.stack([_uniform(g, -0.5 * height, width + 0.5 * height, n_peaks),
                         _uniform(g, 0.35 * height, 0.9 * height, n_peaks),
                         _uniform(g, 0.06 * height, 0.3 * height, n_peaks)], dim=1)
    ripple = torch.stack([_uniform(g, 0.25 * height, 0.6 * height, 2), _uniform(g, 0.0, 2 * math.pi, 2)], dim=1)
    skyline = horizon - ridge_profile(peaks, ripple, width, height)
    radius = pal.sun_radius * height
    sun_x = float(_uniform(g, radius + 1, width - radius - 1))
    low, high = pal.sun_rows
    sun_y = float(_uniform(g, low, high)) * height
    span = slice(max(0, int(sun_x - radius)), min(width, int(sun_x + radius) + 1))
    sun_y = min(sun_y, float(skyline[span].min()) - radius - 0.02 * height)  # the disc stays above the ridge
    return {"sky_top": sky_top, "sky_horizon": sky_horizon, "horizon": horizon, "peaks": peaks,
            "skyline": skyline, "sun": (sun_y, sun_x, radius)}


def _sky(top: torch.Tensor, bottom: torch.Tensor, horizon: float, height: int) -> torch.Tensor:
    """Sky gradient per row: ``top`` at row centre 0, ``bottom`` at the horizon and below. Shape → ``(3, H, 1)``."""
    t = ((torch.arange(height, dtype=torch.float64) + 0.5) / horizon).clamp(0, 1)
    return (top[:, None] + (bottom - top)[:, None] * t).unsqueeze(-1)


def _ground(pal: Palette, g: torch.Generator, horizon: float, height: int, width: int) -> torch.Tensor:
    """Ground colour below the horizon: far-to-near ramp plus two octaves of value noise. Shape → ``(3, H, W)``."""
    y = torch.arange(height, dtype=torch.float64) + 0.5
    t = ((y - horizon) / max(height - horizon, 1.0)).clamp(0, 1)[None, :, None]
    far, near = (torch.tensor(c, dtype=torch.float64)[:, None, None] for c in (pal.ground_far, pal.ground_near))
    fields = value_noise(g, height, width, max(2, round(0.06 * height)), max(2, round(0.3 * height)))
    grain = value_noise(g, height, width, max(2, round(0.03 * height)), max(2, round(0.08 * height)))
    tint = torch.tensor((0.8, 1.0, 0.6), dtype=torch.float64)[:, None, None]  # texture varies mostly green
    return far + (near - far) * t + pal.texture * tint * (0.7 * fields + 0.3 * grain)


def render_scene(class_id: int, seed: int, height: int, width: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> tuple[torch.Tensor, dict]:
    """Render one landscape and return it with its exact layout.

    Args:
        class_id: index into :data:`SCENE_CLASSES` (0 day, 1 dusk, 2 night).
        seed: the scene's seed; the same ``(class_id, seed, height, width)`` gives the same scene bit
            for bit (drawn on the CPU in float64, then cast).
        height, width: scene size (px); ``height >= 16``. All geometry scales with ``height``.
        dtype, device: of the returned image and layout tensors.

    Returns:
        ``image`` ``(3, H, W)`` RGB in [-1, 1], and ``layout``, a dict (colours in [-1, 1], lengths in px):
        ``class_id``, ``class_name``; ``horizon_y`` ``(W,)`` the horizon row per column (first ground
        row where ``y + 0.5 >= horizon``; flat, so every entry is equal); ``skyline_y`` ``(W,)`` the top
        of the mountains (``<= horizon_y``); ``sky_top``, ``sky_horizon`` ``(3,)``; ``sky_colour``
        ``(3,)`` the exact mean colour of the top :data:`SKY_BAND` rows (no sun, no mountain there);
        ``suns`` ``(K, 3)`` rows ``(y, x, radius)`` of the disc centres (``K = 1``); ``peaks``
        ``(P, 3)`` rows ``(centre, σ, height)``; ``sky_band`` the number of rows of the sky band.

    >>> img, layout = render_scene(0, seed=7, height=32, width=96)
    >>> img.shape, layout["suns"].shape, bool(layout["horizon_y"].eq(layout["horizon_y"][0]).all())
    (torch.Size([3, 32, 96]), torch.Size([1, 3]), True)
    """
    check(class_id in range(len(SCENE_CLASSES)), f"class_id must be one of 0..{len(SCENE_CLASSES) - 1} "
          f"({', '.join(SCENE_CLASSES)}), got {class_id!r}")
    check(height >= 16 and width >= height // 2, f"height must be >= 16 px and width >= height / 2, got {height}x{width}")
    pal, g = PALETTES[class_id], torch.Generator().manual_seed(int(seed))
    lay = _draw_layout(class_id, g, height, width)
    y = (torch.arange(height, dtype=torch.float64) + 0.5)[:, None]
    x = (torch.arange(width, dtype=torch.float64) + 0.5)[None, :]
    mountain = 0.6 * lay["sky_horizon"] + 0.4 * torch.tensor(pal.mountain_dark, dtype=torch.float64)
    sun_y, sun_x, radius = lay["sun"]
    image = _sky(lay["sky_top"], lay["sky_horizon"], lay["horizon"], height).expand(3, height, width)
    image = torch.lerp(image, torch.tensor(pal.sun, dtype=torch.float64)[:, None, None],
                       _coverage(radius - torch.sqrt((y - sun_y) ** 2 + (x - sun_x) ** 2)))
    image = torch.lerp(image, mountain[:, None, None], _coverage(y - lay["skyline"][None, :]))
    ground = _coverage(y - lay["horizon"]).expand(height, width)
    image = torch.lerp(image, _ground(pal, g, lay["horizon"], height, width), ground)
    return (image.clamp(0, 1) * 2 - 1).to(dtype=dtype, device=device), _layout(class_id, lay, height, width, dtype, device)


def _layout(class_id: int, lay: dict, height: int, width: int, dtype: torch.dtype, device) -> dict:
    """The public layout dict of :func:`render_scene` (colours mapped to [-1, 1])."""
    band = max(1, round(SKY_BAND * height))
    sky_band = _sky(lay["sky_top"], lay["sky_horizon"], lay["horizon"], height)[:, :band, 0].mean(1)
    first_ground_row = math.ceil(lay["horizon"] - 0.5)
    as_t = lambda t: torch.as_tensor(t, dtype=torch.float64).to(dtype=dtype, device=device)  # noqa: E731
    return {
        "class_id": class_id, "class_name": SCENE_CLASSES[class_id], "sky_band": band,
        "horizon_y": as_t(torch.full((width,), float(first_ground_row))),
        "skyline_y": as_t(lay["skyline"]),
        "sky_top": as_t(lay["sky_top"] * 2 - 1), "sky_horizon": as_t(lay["sky_horizon"] * 2 - 1),
        "sky_colour": as_t(sky_band * 2 - 1),
        "suns": as_t([lay["sun"]]), "peaks": as_t(lay["peaks"]),
    }


def crop_layout(layout: dict, top: int, left: int, height: int, width: int) -> dict:
    """The layout of the crop ``[top : top + height, left : left + width]`` of a scene.

    Per-column fields are sliced and shifted to crop rows; ``suns`` keeps the discs that reach into
    the crop (centre shifted to crop coordinates); ``peaks`` are shifted; colours are unchanged
    (``sky_colour`` describes the scene's top band, which a lower crop may not contain).

    >>> _, layout = render_scene(1, seed=3, height=32, width=128)
    >>> crop_layout(layout, 0, 40, 32, 32)["horizon_y"].shape
    torch.Size([32])
    """
    out = dict(layout)
    for key in ("horizon_y", "skyline_y"):
        out[key] = layout[key][left:left + width] - top
    suns = layout["suns"] - layout["suns"].new_tensor([top, left, 0.0])
    inside = ((suns[:, 0] + suns[:, 2] > 0) & (suns[:, 0] - suns[:, 2] < height)
              & (suns[:, 1] + suns[:, 2] > 0) & (suns[:, 1] - suns[:, 2] < width))
    out["suns"] = suns[inside]
    out["peaks"] = layout["peaks"] - layout["peaks"].new_tensor([left, 0.0, 0.0])
    return out


def random_crops(seed: int, n: int, size: int, *, scene_windows: int = 6, zooms: tuple[int, ...] = (1,),
                 classes: tuple[int, ...] = (0, 1, 2), crops_per_scene: int = 4,
                 dtype: torch.dtype = torch.float32) -> dict:
    """Window-sized training crops cut from wide scenes (what the world's denoiser is trained on).

    Scene ``s`` has class ``classes[k]`` (drawn uniformly), seed drawn from the master generator,
    zoom ``z`` drawn from ``zooms`` and size ``z·size x scene_windows·z·size``; ``crops_per_scene``
    crops of ``size x size`` px are cut at uniform offsets (a zoom-2 crop shows a quarter-height view,
    so all-sky and all-ground crops occur: what a 2-D canvas needs).

    Args:
        seed: master seed; the same arguments give the same crops, bit for bit.
        n: number of crops.
        size: crop side (px), ``>= 16``.
        scene_windows: scene width in crop widths at zoom 1 (``>= 1``).
        zooms: allowed scene zooms (positive ints).
        classes: allowed class ids.
        crops_per_scene: crops cut from every scene (``>= 1``).

    Returns:
        ``images`` ``(n, 3, size, size)`` in [-1, 1], ``class_ids`` ``(n,)`` long, ``scene_seeds``
        ``(n,)`` long, ``zooms`` ``(n,)`` long and ``offsets`` ``(n, 2)`` long ``(top, left)`` px: enough
        to re-render any crop's scene and call :func:`crop_layout`.

    >>> batch = random_crops(0, 5, 16, scene_windows=3, crops_per_scene=2)
    >>> again = random_crops(0, 5, 16, scene_windows=3, crops_per_scene=2)
    >>> batch["images"].shape, torch.equal(batch["images"], again["images"])
    (torch.Size([5, 3, 16, 16]), True)
    """
    check(n >= 1 and size >= 16, f"n must be >= 1 and size >= 16 px, got n={n}, size={size}")
    check(scene_windows >= 1 and crops_per_scene >= 1,
          f"scene_windows and crops_per_scene must be >= 1, got {scene_windows}, {crops_per_scene}")
    check(len(zooms) > 0 and all(int(z) == z and z >= 1 for z in zooms), f"zooms must be positive ints, got {zooms}")
    check(len(classes) > 0 and all(c in range(len(SCENE_CLASSES)) for c in classes),
          f"classes must be in 0..2, got {classes}")
    g = torch.Generator().manual_seed(int(seed))
    images, rows = [], []
    for _ in range(math.ceil(n / crops_per_scene)):
        cls = classes[int(torch.randint(len(classes), (1,), generator=g))]
        zoom = zooms[int(torch.randint(len(zooms), (1,), generator=g))]
        scene_seed = int(torch.randint(2**62, (1,), generator=g))
        h, w = zoom * size, scene_windows * zoom * size
        scene, _ = render_scene(cls, scene_seed, h, w, dtype=dtype)
        for _ in range(crops_per_scene):
            top = int(torch.randint(h - size + 1, (1,), generator=g))
            left = int(torch.randint(w - size + 1, (1,), generator=g))
            images.append(scene[:, top:top + size, left:left + size])
            rows.append((cls, scene_seed, zoom, top, left))
    meta = torch.tensor(rows[:n], dtype=torch.long)
    return {"images": torch.stack(images[:n]), "class_ids": meta[:, 0], "scene_seeds": meta[:, 1],
            "zooms": meta[:, 2], "offsets": meta[:, 3:5]}


def encode_latent(image: torch.Tensor) -> torch.Tensor:
    """The world's latent: the mean colour of every 4×4 pixel block.

    Shape: ``(B, 3, H, W)`` in [-1, 1], ``H`` and ``W`` multiples of 4 → ``(B, 3, H/4, W/4)``.
    """
    check(image.ndim == 4 and image.shape[1] == 3 and image.shape[-2] % 4 == 0 and image.shape[-1] % 4 == 0,
          f"image must be (B, 3, H, W) with H and W multiples of {LATENT_FACTOR}, got {tuple(image.shape)}")
    return F.avg_pool2d(image, LATENT_FACTOR)


def decode_latent(latent: torch.Tensor) -> torch.Tensor:
    """Back to RGB: 4× bilinear upsampling (half-pixel centres, edges replicated); not clamped.

    ``encode_latent(decode_latent(z))`` is ``z`` wherever ``z`` is linear across the neighbouring latent pixels.

    Shape: ``(B, 3, h, w)`` → ``(B, 3, 4h, 4w)``.
    """
    check(latent.ndim == 4 and latent.shape[1] == LATENT_CHANNELS,
          f"latent must be (B, {LATENT_CHANNELS}, h, w), got {tuple(latent.shape)}")
    return F.interpolate(latent, scale_factor=LATENT_FACTOR, mode="bilinear", align_corners=False)
