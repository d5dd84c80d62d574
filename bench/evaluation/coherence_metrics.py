"""Coherence metrics for panoramas and large canvases (bench/coherence.py, issue [G]).

Papers' metrics:

* **Intra-LPIPS** and **Intra-Style-L** (SyncDiffusion, Lee et al. 2023, §5 and its
  ``eval_code/``): split the panorama into non-overlapping window-size crops (a 512×3072 panorama →
  6 crops) and average the distance over all crop pairs (15 pairs). On a 2-D canvas the crops form a
  grid and every pair of the grid counts. The authors' evaluation scores LPIPS with the VGG trunk
  (``lpips.LPIPS(net="vgg")``) and the style loss on **VGG-19** (Gatys et al. 2016, the PyTorch
  neural-style tutorial's form). VGG-19 weights cannot be had offline: Vista scores the same five
  layers (``conv_1 … conv_5``, pre-ReLU) of the **VGG16** trunk that LPIPS v0.1 ships
  (:func:`vgg16_style_features`). Label it "Style-L (VGG16)": values are not comparable with the
  paper's numbers. The paper's text averages over pairs; its released script sums the 15 pair losses
  (15× the value here for a 1×6 canvas).

Measurements the procedural world (``bench/evaluation/world.py``) makes exact, 0 on every rendered scene:

* :func:`horizon_variance`: the horizon row is estimated per column (:func:`horizon_rows`) and
  its variance along the canvas is reported (px²);
* :func:`sky_drift`: RMS distance of each crop's mean sky colour to their mean;
* :func:`count_suns`: connected bright blobs (the world has exactly one sun or moon per scene).

Non-standard: :func:`frechet_distance` on spatially pooled LPIPS-backbone features
(:func:`lpips_embedding`): the Fréchet (FID) formula on features that are not Inception's.

Sharpness (GVCF's case for Variance-Corrected Fusion): mean squared Laplacian over pixels covered
by several windows vs pixels covered by one (:func:`overlap_sharpness`).

What users see and the papers' metrics miss (issue [B]):

* :func:`seam_score`: gradient energy across the window edges a method used ÷ across the other latent-pixel
  boundaries (1 for a canvas with no seams; a tile edge raises it), on one plan or the union of a shifting
  method's plans (:func:`window_edges`);
* the fidelity guard: :func:`laplacian_energy` of a panorama ÷ that of single-window samples, reported beside
  every coherence number — blur lowers intra-LPIPS, so a blurrier method must not read as more coherent;
* :func:`intra_lpips_from_weights` with ``rows_only``: on a 2-D canvas a sky crop and a ground crop differ
  by design, so only crops of one row are compared; the layout across rows is
  :func:`horizon_variance` on the whole height;
* :func:`horizon_estimate` abstains in columns without a sky/ground edge (:func:`horizon_coverage`), so that
  a sky gradient never reads as a horizon; :func:`horizon_steps` measures the horizon's jumps between
  neighbouring window crops (independent windows each paint their own horizon height).

Convention: images are RGB in [-1, 1], ``(B, 3, H, W)``; crops are taken row-major.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import kornia
import torch
import torch.nn.functional as F
from einops import rearrange

from ...core.checks import check, check_shape
from ...core.guidance.lpips import lpips_features, lpips_net, normalize_channels
from ...core.canvas.windows import Window

__all__ = [
    "LUMA", "SUN_THRESHOLD", "luminance", "window_crops", "crop_pairs", "intra_lpips", "intra_lpips_from_weights",
    "gram_matrix", "style_loss",
    "vgg16_style_features", "intra_style_loss", "sun_mask", "horizon_rows", "horizon_variance", "sky_colours",
    "sky_drift", "count_suns", "lpips_embedding", "gaussian_stats", "frechet_distance_gaussians", "frechet_distance",
    "coverage_count", "laplacian_energy", "overlap_sharpness", "window_edges", "seam_score",
    "HORIZON_MIN_CONTRAST",
    "horizon_estimate", "horizon_coverage", "horizon_steps", "row_pairs",
]

#: Rec. 709 luma weights (R, G, B).
LUMA = (0.2126, 0.7152, 0.0722)

#: A pixel belongs to a sun / moon when its luma (in [-1, 1] units) is at least this (0.85 in [0, 1]):
#: above every sky, mountain and ground colour of the world, below every sun and moon.
SUN_THRESHOLD = 0.7

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Features = Callable[[torch.Tensor], Sequence[torch.Tensor]]


def luminance(image: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luma of RGB images, in the images' units. Shape: ``(B, 3, H, W)`` → ``(B, 1, H, W)``.

    >>> luminance(torch.ones(1, 3, 2, 2)).flatten().tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    check_shape(image, ["B", "3", "H", "W"], "image")
    return (image * image.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)


def window_crops(image: torch.Tensor, window_h: int, window_w: int) -> torch.Tensor:
    """Non-overlapping window-size crops of a canvas, row-major (SyncDiffusion §5: 1×6 → 6 crops).

    Shape: ``(B, C, gh·h, gw·w)`` → ``(B, gh·gw, C, h, w)``; the canvas must be a whole number of windows.

    >>> window_crops(torch.zeros(2, 3, 8, 24), 8, 8).shape
    torch.Size([2, 3, 3, 8, 8])
    """
    check_shape(image, ["B", "C", "H", "W"], "image")
    h, w = image.shape[-2:]
    check(window_h >= 1 and window_w >= 1 and h % window_h == 0 and w % window_w == 0,
          f"the canvas ({h}x{w} px) must be a whole number of windows ({window_h}x{window_w} px); crop or pad it")
    return rearrange(image, "b c (gh h) (gw w) -> b (gh gw) c h w", h=window_h, w=window_w)


def crop_pairs(n: int) -> torch.Tensor:
    """All unordered pairs ``i < j`` of ``n`` crops (itertools.combinations order).

    Shape: → ``(n(n−1)/2, 2)`` long.

    >>> crop_pairs(6).shape[0], crop_pairs(3).tolist()
    (15, [[0, 1], [0, 2], [1, 2]])
    """
    check(n >= 2, f"at least 2 crops are needed to form a pair, got {n}")
    return torch.tensor(list(itertools.combinations(range(n), 2)), dtype=torch.long)


def intra_lpips(image: torch.Tensor, window_h: int, window_w: int, distance: Distance) -> torch.Tensor:
    """Intra-LPIPS (SyncDiffusion §5): mean LPIPS over all pairs of non-overlapping window crops.

    Args:
        image: canvases in [-1, 1], a whole number of windows.
        window_h, window_w: crop size (px).
        distance: ``distance(x (M, 3, h, w), y (M, 3, h, w)) -> (M,)``, e.g.
            ``functools.partial(core.guidance.lpips.lpips, weights=vgg_weights)`` (the authors use LPIPS-VGG).

    Shape: ``(B, 3, H, W)`` → ``(B,)``; ``B · P`` distances are evaluated in one call.
    """
    crops = window_crops(image, window_h, window_w)
    b, n = crops.shape[:2]
    pairs = crop_pairs(n).to(image.device)
    d = distance(rearrange(crops[:, pairs[:, 0]], "b p c h w -> (b p) c h w"),
                 rearrange(crops[:, pairs[:, 1]], "b p c h w -> (b p) c h w"))
    return rearrange(d, "(b p) -> b p", b=b).mean(1)


def row_pairs(rows: int, cols: int) -> torch.Tensor:
    """The pairs ``i < j`` of a ``rows x cols`` crop grid (row-major) that lie in one row.

    Shape: → ``(rows · cols(cols−1)/2, 2)`` long.

    >>> row_pairs(2, 3).tolist()
    [[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5]]
    """
    check(rows >= 1 and cols >= 2, f"a row needs at least 2 crops, got a {rows}x{cols} grid")
    return torch.cat([crop_pairs(cols) + r * cols for r in range(rows)])


def intra_lpips_from_weights(image: torch.Tensor, window_h: int, window_w: int,
                             weights: Mapping[str, torch.Tensor], rows_only: bool = False) -> torch.Tensor:
    """:func:`intra_lpips` with :func:`core.guidance.lpips.lpips`, running the trunk once per crop instead of twice per pair.

    Same value as ``intra_lpips(image, h, w, partial(lpips, weights=weights))`` (LPIPS eq. 1 on the cached,
    channel-normalised taps): 6 trunk passes instead of 30 on a 1×6 canvas, 16 instead of 240 on a 2×8 grid.
    With ``rows_only`` only the pairs within one row of crops count (:func:`row_pairs`): the 2-D canvas's
    score, where a sky crop and a ground crop of one coherent scene differ by design.

    Shape: ``(B, 3, H, W)`` → ``(B,)``; images are processed one at a time (the pair differences of the
    first tap are the memory peak: ``P · 64 · h · w`` values).
    """
    crops = window_crops(image, window_h, window_w)
    grid = (image.shape[-2] // window_h, image.shape[-1] // window_w)
    pairs = (row_pairs(*grid) if rows_only else crop_pairs(crops.shape[1])).to(image.device)
    net = lpips_net(weights)
    w = {k: v.to(device=image.device, dtype=image.dtype) for k, v in weights.items()}
    scores = []
    for canvas_crops in crops:
        total = image.new_zeros(len(pairs))
        for tap, f in enumerate(lpips_features(canvas_crops, w, net)):
            f = normalize_channels(f)
            diff = (f[pairs[:, 0]] - f[pairs[:, 1]]).pow(2)
            total = total + F.conv2d(diff, w[f"lin{tap}.model.1.weight"]).mean(dim=(1, 2, 3))
        scores.append(total.mean())
    return torch.stack(scores)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix normalised by the number of elements (Gatys et al.; SyncDiffusion's Style-L).

    ``G = F Fᵀ / (C·H·W)`` with ``F`` the ``C x HW`` feature matrix of one image.

    Shape: ``(B, C, H, W)`` → ``(B, C, C)``, symmetric.

    >>> gram_matrix(torch.ones(1, 2, 2, 2))[0].tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    check_shape(features, ["B", "C", "H", "W"], "features")
    f = rearrange(features, "b c h w -> b c (h w)")
    return f @ f.transpose(1, 2) / f[0].numel()


def style_loss(fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor]) -> torch.Tensor:
    """Style loss: ``Σ_l mean((G_l(x) − G_l(y))²)`` over the layers (MSE of Gram matrices, summed).

    Shape: two lists of ``(B, C_l, H_l, W_l)`` → ``(B,)``; 0 for identical features, symmetric.
    """
    check(len(fx) == len(fy) and len(fx) > 0, f"fx and fy must list the same layers, got {len(fx)} and {len(fy)}")
    return sum((gram_matrix(a) - gram_matrix(b)).pow(2).mean(dim=(1, 2)) for a, b in zip(fx, fy))


# conv_1 … conv_5 of SyncDiffusion's style metric in the LPIPS v0.1 VGG16 state dict: key, then pool before it.
_STYLE_CONVS = (("net.slice1.0", False), ("net.slice1.2", False), ("net.slice2.5", True), ("net.slice2.7", False),
                ("net.slice3.10", True))


def vgg16_style_features(x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
    """The five style layers ``conv_1 … conv_5`` (conv1_1, conv1_2, conv2_1, conv2_2, conv3_1; pre-ReLU) of VGG16.

    SyncDiffusion's style metric taps the same layers of VGG-19 (unavailable offline); the first five
    convolutions of VGG16 and VGG-19 have the same shapes, not the same weights. The LPIPS ScalingLayer
    on [-1, 1] inputs equals the ImageNet normalisation that metric applies to [0, 1] images.

    Args:
        x: RGB in [-1, 1].
        weights: an LPIPS v0.1 **vgg** state dict (``tools/convert_lpips.py --net vgg``).

    Shape: ``(B, 3, H, W)`` → ``(B, 64, H, W)``, ``(B, 64, H, W)``, ``(B, 128, H/2, W/2)`` ×2, ``(B, 256, H/4, W/4)``.
    """
    check_shape(x, ["B", "3", "H", "W"], "x")
    check(lpips_net(weights) == "vgg", "weights must be an LPIPS v0.1 vgg state dict (tools/convert_lpips.py --net vgg)")
    w = {k: v.to(device=x.device, dtype=x.dtype) for k, v in weights.items()}
    h = (x - w["scaling_layer.shift"]) / w["scaling_layer.scale"]
    taps = []
    for key, pool in _STYLE_CONVS:
        if pool:
            h = F.max_pool2d(h, 2, 2)
        conv = F.conv2d(h, w[f"{key}.weight"], w[f"{key}.bias"], 1, 1)
        taps.append(conv)
        h = F.relu(conv)
    return taps


def intra_style_loss(image: torch.Tensor, window_h: int, window_w: int, features: Features) -> torch.Tensor:
    """Intra-Style-L (SyncDiffusion §5): mean :func:`style_loss` over all pairs of non-overlapping crops.

    Args:
        image: canvases in [-1, 1], a whole number of windows.
        window_h, window_w: crop size (px).
        features: ``features(x (M, 3, h, w)) -> [(M, C_l, h_l, w_l), …]``, e.g.
            ``functools.partial(vgg16_style_features, weights=vgg_weights)``; run once per crop.

    Shape: ``(B, 3, H, W)`` → ``(B,)``.
    """
    crops = window_crops(image, window_h, window_w)
    b, n = crops.shape[:2]
    grams = [rearrange(gram_matrix(f), "(b n) c d -> b n c d", b=b)
             for f in features(rearrange(crops, "b n c h w -> (b n) c h w"))]
    pairs = crop_pairs(n).to(image.device)
    per_pair = sum((g[:, pairs[:, 0]] - g[:, pairs[:, 1]]).pow(2).mean(dim=(2, 3)) for g in grams)
    return per_pair.mean(1)


def sun_mask(image: torch.Tensor, threshold: float = SUN_THRESHOLD, margin: int = 0) -> torch.Tensor:
    """Pixels of a sun / moon: luma ``>= threshold``, grown by ``margin`` px (a square max-filter).

    Shape: ``(B, 3, H, W)`` → ``(B, 1, H, W)`` bool.
    """
    check(margin >= 0, f"margin must be >= 0 px, got {margin}")
    bright = (luminance(image) >= threshold).to(image.dtype)
    return F.max_pool2d(bright, 2 * margin + 1, 1, margin) > 0 if margin else bright > 0


def _segment_sse(sums: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Weighted SSE about the mean of rows ``[lo, hi)`` from zero-padded cumulative sums ``(n, Σx, Σx²)``.

    Shape: ``sums (B, 1 + 2C, H + 1, W)``, ``lo, hi (S,)`` → ``(B, S, W)``.
    """
    seg = sums[:, :, hi] - sums[:, :, lo]  # (B, 1 + 2C, S, W)
    c = (seg.shape[1] - 1) // 2
    n, sx, sxx = seg[:, :1], seg[:, 1:1 + c], seg[:, 1 + c:]
    return (sxx - sx.pow(2) / n.clamp(min=1e-12)).sum(1)


def horizon_rows(image: torch.Tensor, column_blur: int = 3, min_rows: int = 3, sun_margin: int = 2) -> torch.Tensor:
    """Horizon row per column: the best two-segment (sky | ground) piecewise-constant fit of the column.

    For every column, the split ``y`` minimises the squared colour error of fitting rows ``[0, y)``
    and ``[y, H)`` each by its mean colour (a per-column Otsu split; the dominant vertical colour edge,
    judged over the whole column rather than locally, so the ground's texture and the sky's gradient
    do not win). Sun / moon pixels (:func:`sun_mask`, grown by ``sun_margin`` px) are left out of the
    fit: a bright disc is the strongest local edge of its columns. Columns are box-averaged over
    ``column_blur`` px first. On the world's scenes it recovers the rendered horizon within 1 px.
    Every column gets a split, horizon or not: :func:`horizon_estimate` says which have one.

    Args:
        image: RGB in [-1, 1].
        column_blur: horizontal box filter (odd px, 1 = none).
        min_rows: smallest segment (rows): the split lies in ``[min_rows, H − min_rows]``.
        sun_margin: px around bright pixels also left out.

    Returns:
        The first ground row of every column.

    Shape: ``(B, 3, H, W)`` → ``(B, W)`` long.
    """
    check_shape(image, ["B", "3", "H", "W"], "image")
    h = image.shape[-2]
    check(column_blur >= 1 and column_blur % 2 == 1, f"column_blur must be an odd number of px >= 1, got {column_blur}")
    check(1 <= min_rows and 2 * min_rows <= h, f"min_rows must be in [1, H/2 = {h // 2}], got {min_rows}")
    x = image.to(torch.float64)
    keep = (~sun_mask(x, margin=sun_margin)).to(x.dtype)
    if column_blur > 1:
        blur = lambda t: kornia.filters.box_blur(t, (1, column_blur), border_type="replicate")  # noqa: E731
        x, keep = blur(x * keep) / blur(keep).clamp(min=1e-12), (blur(keep) > 0).to(x.dtype)
    sums = F.pad(torch.cat([keep, keep * x, keep * x * x], 1).cumsum(2), (0, 0, 1, 0))
    splits = torch.arange(min_rows, h - min_rows + 1, device=image.device)
    sse = _segment_sse(sums, torch.zeros_like(splits), splits) + _segment_sse(sums, splits, torch.full_like(splits, h))
    return splits[sse.argmin(1)]


#: A column has a horizon when splitting its straight-line fit in ``y`` at the horizon row into two lines explains at
#: least this much colour per row (RGB, [-1, 1] units: ``sqrt(ΔSSE / H)``). Rendered scenes through the latent round
#: trip: >= 0.064 (night, the darkest step) to 0.33; columns of sky only or of ground only: <= 0.057, all but a few
#: sun-grazing sky columns <= 0.03.
HORIZON_MIN_CONTRAST = 0.06


def _line_sse(sums: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Squared error of the least-squares line ``a + b·y`` (per channel) over rows ``[lo, hi)`` of every column.

    Shape: ``sums (B, 3 + 3C, H + 1, W)`` zero-padded cumulative sums of ``(n, y, y², x, x·y, x²)``, ``lo, hi (B, W)``
    → ``(B, W)``.
    """
    take = lambda r: sums.gather(2, r[:, None, None, :].expand(-1, sums.shape[1], 1, -1))[:, :, 0]  # noqa: E731
    seg = take(hi) - take(lo)
    c = (seg.shape[1] - 3) // 3
    n, sy, syy = (seg[:, k:k + 1].clamp(min=0) for k in range(3))
    sx, sxy, sxx = seg[:, 3:3 + c], seg[:, 3 + c:3 + 2 * c], seg[:, 3 + 2 * c:]
    n = n.clamp(min=1e-12)
    var_y = (syy - sy.pow(2) / n).clamp(min=1e-12)
    cov = sxy - sx * sy / n
    return (sxx - sx.pow(2) / n - cov.pow(2) / var_y).clamp(min=0).sum(1)


def horizon_estimate(image: torch.Tensor, min_contrast: float = HORIZON_MIN_CONTRAST, sun_margin: int = 4,
                     **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizon row per column (:func:`horizon_rows`) and whether the column has one.

    Every column gets a split; it is a horizon when the column is not one smooth gradient: fitting one straight line
    in ``y`` to the whole column leaves a squared colour error that two lines, split at that row, reduce by at least
    ``H · min_contrast²``. A column of sky (a gradient: [G]'s estimator put a "horizon" in it) or of ground (a ramp and
    a faint texture) is a line and abstains; a sky | ground column, even the night's dark one, is not. Sun / moon
    pixels are left out of both line fits (``sun_margin`` px around them; the decoder blurs their rim). ``kwargs`` go
    to :func:`horizon_rows`.

    Shape: ``(B, 3, H, W)`` → rows ``(B, W)`` long, found ``(B, W)`` bool.
    """
    check(min_contrast >= 0, f"min_contrast must be >= 0, got {min_contrast}")
    rows = horizon_rows(image, **kwargs)
    x = image.to(torch.float64)
    b, _, h, w = x.shape
    keep = (~sun_mask(x, margin=sun_margin)).to(x.dtype)
    y = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5).view(1, 1, h, 1).expand(b, 1, h, w)
    sums = F.pad(torch.cat([keep, keep * y, keep * y * y, keep * x, keep * x * y, keep * x * x], 1).cumsum(2),
                 (0, 0, 1, 0))
    top, bottom = torch.zeros_like(rows), torch.full_like(rows, h)
    gain = _line_sse(sums, top, bottom) - _line_sse(sums, top, rows) - _line_sse(sums, rows, bottom)
    return rows, gain >= h * min_contrast ** 2


def horizon_variance(image: torch.Tensor, **kwargs) -> torch.Tensor:
    """Variance of the estimated horizon row along the canvas (px²; 0 for a flat horizon), over the columns that
    have one (:func:`horizon_estimate`); NaN for a canvas where fewer than two columns do.

    The world's horizon is flat within a scene, so a coherent panorama scores 0 up to the estimator's
    ±1 px; horizons at different heights in different windows raise it. ``kwargs`` go to :func:`horizon_estimate`.

    Shape: ``(B, 3, H, W)`` → ``(B,)`` float64 (population variance over the columns with a horizon).
    """
    rows, found = horizon_estimate(image, **kwargs)
    rows, found = rows.to(torch.float64), found.to(torch.float64)
    n = found.sum(1)
    mean = (rows * found).sum(1) / n.clamp(min=1)
    var = ((rows - mean[:, None]).pow(2) * found).sum(1) / n.clamp(min=1)
    return torch.where(n >= 2, var, torch.full_like(var, float("nan")))


def horizon_coverage(image: torch.Tensor, **kwargs) -> torch.Tensor:
    """Fraction of columns with a horizon (:func:`horizon_estimate`): 1 on every rendered world scene.

    Shape: ``(B, 3, H, W)`` → ``(B,)`` float64.
    """
    return horizon_estimate(image, **kwargs)[1].to(torch.float64).mean(1)


def horizon_steps(image: torch.Tensor, crop_width: int, **kwargs) -> torch.Tensor:
    """Mean absolute jump of the horizon between neighbouring crops (px): the median horizon row of each
    ``crop_width``-wide column block (its columns with a horizon), differenced along the canvas.

    Independent windows each paint a horizon at their own height, so it jumps at every crop edge; a coherent
    panorama keeps it (0 on a rendered scene). Pairs where either crop has no horizon column are left out; NaN when
    no pair is left.

    Shape: ``(B, 3, H, N·crop_width)`` → ``(B,)`` float64.
    """
    rows, found = horizon_estimate(image, **kwargs)
    blocks = rearrange(torch.where(found, rows.to(torch.float64), float("nan")), "b (n w) -> b n w", w=crop_width)
    median = blocks.nanmedian(dim=2).values  # (B, N); NaN where a block has no horizon column
    return (median[:, 1:] - median[:, :-1]).abs().nanmean(1)


def sky_colours(image: torch.Tensor, crop_width: int, band: int, sun_margin: int = 2) -> torch.Tensor:
    """Mean colour of the top ``band`` rows of every ``crop_width``-wide column block, sun pixels left out.

    A crop whose whole band is bright (a generated sky that a model painted as bright as a sun) keeps all its
    pixels: its colour is then that bright band, which :func:`sky_drift` counts as drift.

    Shape: ``(B, 3, H, N·crop_width)`` → ``(B, N, 3)``.
    """
    check_shape(image, ["B", "3", "H", "W"], "image")
    check(1 <= band <= image.shape[-2], f"band must be in [1, H = {image.shape[-2]}] rows, got {band}")
    top = image[:, :, :band]
    keep = (~sun_mask(top, margin=sun_margin)).to(image.dtype)
    pixels = window_crops(keep, band, crop_width).sum(dim=(2, 3, 4))
    masked = window_crops(top * keep, band, crop_width).sum(dim=(3, 4)) / pixels.clamp(min=1)[..., None]
    plain = window_crops(top, band, crop_width).mean(dim=(3, 4))
    return torch.where((pixels > 0)[..., None], masked, plain)


def sky_drift(image: torch.Tensor, crop_width: int, band: int, **kwargs) -> torch.Tensor:
    """Sky-colour drift: RMS distance of the crops' mean sky colours (:func:`sky_colours`) to their mean.

    ``sqrt(mean_n ‖c_n − c̄‖²)`` in [-1, 1] units: the 3-channel standard deviation across crops; 0 for
    the world's scenes (their sky is constant along ``x``).

    Shape: ``(B, 3, H, N·crop_width)`` → ``(B,)``.
    """
    c = sky_colours(image, crop_width, band, **kwargs)
    return (c - c.mean(1, keepdim=True)).pow(2).sum(-1).mean(1).sqrt()


def count_suns(image: torch.Tensor, threshold: float = SUN_THRESHOLD, min_area: int = 3) -> torch.Tensor:
    """Number of suns / moons: 8-connected blobs of luma ``>= threshold`` with at least ``min_area`` px.

    kornia's connected components (max-pool label propagation, ``H + W`` iterations: enough for any
    blob whose inner path length is below that).

    Shape: ``(B, 3, H, W)`` → ``(B,)`` long.
    """
    check(min_area >= 1, f"min_area must be >= 1 px, got {min_area}")
    mask = sun_mask(image, threshold).to(torch.float32)
    labels = kornia.contrib.connected_components(mask, num_iterations=sum(image.shape[-2:]))
    counts = []
    for lab in labels.flatten(1):
        _, area = torch.unique(lab[lab > 0], return_counts=True)
        counts.append(int((area >= min_area).sum()))
    return torch.tensor(counts, dtype=torch.long, device=image.device)


def lpips_embedding(x: torch.Tensor, weights: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Image embedding for the (non-standard) Fréchet distance: the deepest LPIPS trunk tap, averaged over space.

    AlexNet ``relu5`` (256-d) or VGG16 ``relu5_3`` (512-d), after the LPIPS ScalingLayer; FID uses
    Inception's pooled features instead, so the values are not FIDs.

    Shape: ``(B, 3, H, W)`` in [-1, 1] → ``(B, C)``.
    """
    net = lpips_net(weights)
    w = {k: v.to(device=x.device, dtype=x.dtype) for k, v in weights.items()}
    return lpips_features(x, w, net)[-1].mean(dim=(2, 3))


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance (``N − 1``) of a feature set, in float64 (as FID).

    Shape: ``(N, D)`` → ``(D,)``, ``(D, D)``; ``N >= 2``.
    """
    check_shape(features, ["N", "D"], "features")
    check(features.shape[0] >= 2, f"features needs at least 2 samples, got {features.shape[0]}")
    f = features.to(torch.float64)
    return f.mean(0), torch.cov(f.T, correction=1).reshape(f.shape[1], f.shape[1])


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix by eigh (negative rounding clipped to 0)."""
    evals, evecs = torch.linalg.eigh((m + m.T) / 2)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance_gaussians(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """Fréchet distance of two Gaussians (Dowson & Landau 1982; the FID formula of Heusel et al. 2017).

    ``d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^½ Σ₂ Σ₁^½)^½)``, computed in float64 with symmetric
    eigendecompositions (``tr (Σ₁Σ₂)^½ = tr (Σ₁^½ Σ₂ Σ₁^½)^½``), so it is real and ``>= 0`` up to rounding.

    Shape: ``(D,)``, ``(D, D)``, ``(D,)``, ``(D, D)`` → ``()`` float64.

    >>> eye = torch.eye(2, dtype=torch.float64)
    >>> round(frechet_distance_gaussians(torch.zeros(2), eye, torch.ones(2), 4 * eye).item(), 6)
    4.0
    """
    d = mu1.shape[-1]
    check(mu2.shape == (d,) and cov1.shape == cov2.shape == (d, d),
          f"expected mu (D,), cov (D, D) with one D, got {tuple(mu1.shape)}, {tuple(cov1.shape)}, "
          f"{tuple(mu2.shape)}, {tuple(cov2.shape)}")
    mu1, mu2, cov1, cov2 = (t.to(torch.float64) for t in (mu1, mu2, cov1, cov2))
    root = _sqrtm_psd(cov1)
    cross = torch.linalg.eigvalsh(root @ cov2 @ root).clamp(min=0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross


def frechet_distance(features1: torch.Tensor, features2: torch.Tensor) -> torch.Tensor:
    """Fréchet distance between two feature sets, each fitted by a Gaussian (:func:`gaussian_stats`).

    Shape: ``(N, D)``, ``(M, D)`` → ``()`` float64; 0 for identical sets.
    """
    check(features1.ndim == features2.ndim == 2 and features1.shape[1] == features2.shape[1],
          f"features must be (N, D) and (M, D) with one D, got {tuple(features1.shape)} and {tuple(features2.shape)}")
    return frechet_distance_gaussians(*gaussian_stats(features1), *gaussian_stats(features2))


def coverage_count(windows: Sequence[Window], height: int, width: int, scale: int = 1) -> torch.Tensor:
    """How many windows cover each pixel (windows in latent px, ``scale`` image px per latent px; wrap honoured).

    Shape: → ``(height·scale, width·scale)`` long.

    >>> coverage_count([Window(0, 0, 2, 2), Window(0, 1, 2, 2)], 2, 3)[0].tolist()
    [1, 2, 1]
    """
    check(scale >= 1 and len(windows) > 0, f"need at least one window and scale >= 1, got {len(windows)}, {scale}")
    count = torch.zeros(height, width, dtype=torch.long)
    for win in windows:
        check(0 <= win.y and win.y + win.h <= height and 0 <= win.x < width,
              f"window {win} does not fit the {height}x{width} canvas")
        count[win.y:win.y + win.h, win.columns(width)] += 1
    return count.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


def laplacian_energy(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared Laplacian (3×3, unnormalised, reflected border; kornia) over the pixels of ``mask``.

    Shape: ``(B, C, H, W)``, ``mask (H, W)`` bool → ``(B,)`` (averaged over channels and masked pixels).
    """
    check_shape(image, ["B", "C", "H", "W"], "image")
    check(mask.shape == image.shape[-2:] and mask.dtype == torch.bool and bool(mask.any()),
          f"mask must be a non-empty bool (H, W) = {tuple(image.shape[-2:])} mask, got {mask.dtype} {tuple(mask.shape)}")
    lap = kornia.filters.laplacian(image, kernel_size=3, normalized=False).pow(2)
    return lap[..., mask.to(image.device)].mean(dim=(1, 2))


def overlap_sharpness(image: torch.Tensor, windows: Sequence[Window], scale: int = 1) -> torch.Tensor:
    """High-frequency energy where windows overlap ÷ where one window covers (GVCF §VCF; 1 = no blur).

    Plain averaging of independent step noises in overlaps shrinks their variance (blur); VCF keeps it.

    Shape: ``(B, C, H, W)`` → ``(B,)``; the canvas needs single- and multi-covered pixels.
    """
    h, w = image.shape[-2:]
    check(h % scale == 0 and w % scale == 0, f"the image ({h}x{w} px) must be a whole number of {scale}-px latent pixels")
    count = coverage_count(windows, h // scale, w // scale, scale)
    check(bool((count >= 1).all()), f"the windows leave pixels of the {h}x{w} px image uncovered: plan them for this canvas")
    check(bool((count == 1).any() and (count >= 2).any()), "the windows leave no single- or no multi-covered pixel")
    return laplacian_energy(image, count >= 2) / laplacian_energy(image, count == 1)


def window_edges(plans: Sequence[Sequence[Window]], height: int, width: int,
                 scale: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel boundaries where a window of any plan starts or ends (``scale`` image px per latent px).

    A method that shifts its windows between steps (SpotDiffusion-like) passes every step's plan: its seams may lie
    on any of them. Boundary ``b`` lies between pixels ``b − 1`` and ``b``; the canvas border (0 and the size) is
    never an edge; a wrapped window's edges are taken modulo the width.

    Shape: → columns ``(width·scale + 1,)`` bool, rows ``(height·scale + 1,)`` bool.

    >>> cols, rows = window_edges([[Window(0, 0, 2, 4), Window(0, 2, 2, 4)]], 2, 6)
    >>> cols.nonzero().flatten().tolist(), rows.any().item()
    ([2, 4], False)
    """
    check(scale >= 1 and len(plans) > 0 and all(len(p) > 0 for p in plans),
          f"need at least one non-empty plan and scale >= 1, got {len(plans)} plans, scale {scale}")
    cols = torch.zeros(width * scale + 1, dtype=torch.bool)
    rows = torch.zeros(height * scale + 1, dtype=torch.bool)
    for win in (w for plan in plans for w in plan):
        for x in (win.x % width, (win.x + win.w) % width):
            cols[x * scale] = True
        for y in (win.y, win.y + win.h):
            rows[min(y, height) * scale] = True
    for edges in (cols, rows):
        edges[0] = edges[-1] = False
    return cols, rows


def seam_score(image: torch.Tensor, col_edges: torch.Tensor, row_edges: torch.Tensor, phase: int = 1) -> torch.Tensor:
    """How much more the image changes across window edges than across the other boundaries (issue [B]).

    Every pixel boundary gets the mean absolute step between the pixels on either side of it (over channels and
    along the boundary: vertical boundaries step along ``x``, horizontal ones along ``y``); the score is the median
    over the window edges ÷ the median over the boundaries that are no edge. Only boundaries at multiples of
    ``phase`` count on either side — the latent-pixel boundaries when ``phase`` is the decoder's factor (a bilinear
    decoder's steps differ between latent-pixel boundaries and the pixels between them), which every window edge is.
    Medians, because a sun's rim or a mountain flank is a strong step at one boundary that is no seam. A seamless
    canvas scores about 1 (rendered world scenes through the latent round trip: 0.8–1.4); a tile edge raises it
    (independent windows on the world: about 12).

    Args:
        image: ``(B, C, H, W)``.
        col_edges, row_edges: ``(W + 1,)``, ``(H + 1,)`` bool (:func:`window_edges`).
        phase: px between the boundaries compared (the latent factor).

    Shape: → ``(B,)``.
    """
    check_shape(image, ["B", "C", "H", "W"], "image")
    h, w = image.shape[-2:]
    check(col_edges.shape == (w + 1,) and row_edges.shape == (h + 1,),
          f"edges must be (W + 1,) = ({w + 1},) and (H + 1,) = ({h + 1},), got {tuple(col_edges.shape)}, "
          f"{tuple(row_edges.shape)}")
    check(phase >= 1 and w % phase == 0 and h % phase == 0, f"phase must divide the {h}x{w} px canvas, got {phase}")
    step_x = (image[..., 1:] - image[..., :-1]).abs().mean(dim=(1, 2))  # (B, W − 1): boundary b = index b − 1
    step_y = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=(1, 3))  # (B, H − 1)
    edge_steps, other_steps = [], []
    for steps, edges, size in ((step_x, col_edges, w), (step_y, row_edges, h)):
        on_phase = torch.zeros(size + 1, dtype=torch.bool)
        on_phase[phase:size:phase] = True
        edge_steps.append(steps[:, (edges & on_phase)[1:-1].to(image.device)])
        other_steps.append(steps[:, (~edges & on_phase)[1:-1].to(image.device)])
    edge, other = torch.cat(edge_steps, 1), torch.cat(other_steps, 1)
    check(edge.shape[1] > 0 and other.shape[1] > 0, f"the plan leaves no window edge or no other boundary at a phase "
          f"of {phase} px on the {h}x{w} px canvas ({edge.shape[1]} edges, {other.shape[1]} others)")
    return edge.median(1).values / other.median(1).values.clamp(min=1e-12)
