"""bench/evaluation/coherence_metrics.py: SyncDiffusion's intra-metrics, the world's layout scores, Fréchet, sharpness ([G])."""
import functools
import math

import pytest
import torch
from einops import rearrange
from safetensors.torch import load_file

from vista.bench.evaluation import coherence_metrics as cm
from vista.core.checks import VistaInputError
from vista.core.guidance.lpips import LPIPS_ALEX_WEIGHTS, lpips, lpips_weight_shapes
from vista.core.canvas.windows import plan_windows
from vista.bench.evaluation.world import render_scene

H = 32  # window side (px) of the tests' canvases


@functools.cache
def alex_weights():
    return load_file(LPIPS_ALEX_WEIGHTS)


@functools.cache
def random_vgg_weights():
    """Seeded random LPIPS-VGG16 weights: the style metric's invariants hold for any trunk (never mutate)."""
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in lpips_weight_shapes("vgg").items()}


def scenes(classes_seeds, h=H, windows=6, dtype=torch.float32):
    """A batch of rendered scenes (B, 3, h, windows·h) and their layouts."""
    out = [render_scene(c, s, h, windows * h, dtype=dtype) for c, s in classes_seeds]
    return torch.stack([img for img, _ in out]), [layout for _, layout in out]


def noise(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 2 - 1


class TestWindowCrops:
    def test_row_major(self):
        x = torch.arange(4 * 6, dtype=torch.float32).view(1, 1, 4, 6)
        crops = cm.window_crops(x, 2, 2)
        assert crops.shape == (1, 6, 1, 2, 2)
        assert torch.equal(crops[0, 1, 0], x[0, 0, 0:2, 2:4]) and torch.equal(crops[0, 3, 0], x[0, 0, 2:4, 0:2])

    def test_exception_not_whole_windows(self):
        with pytest.raises(VistaInputError, match=r"the canvas \(32x100 px\) must be a whole number of windows"):
            cm.window_crops(torch.zeros(1, 3, 32, 100), 32, 32)


class TestCropPairs:
    @pytest.mark.parametrize("n, pairs", [(6, 15), (16, 120), (2, 1)])
    def test_count(self, n, pairs):
        p = cm.crop_pairs(n)
        assert p.shape == (pairs, 2) and bool((p[:, 0] < p[:, 1]).all()) and len({tuple(r) for r in p.tolist()}) == pairs

    def test_exception(self):
        with pytest.raises(VistaInputError, match="at least 2 crops are needed"):
            cm.crop_pairs(1)


class TestIntraLpips:
    def test_identical_tiles_score_zero(self):
        tile = noise(1, 3, H, H)
        canvas = tile.repeat(2, 1, 1, 6)
        assert cm.intra_lpips(canvas, H, H, functools.partial(lpips, weights=alex_weights())).tolist() == [0.0, 0.0]

    def test_fifteen_pairs_on_a_1x6_canvas(self):
        seen = []

        def distance(x, y):
            seen.append((x.shape, y.shape))
            return (x - y).abs().mean(dim=(1, 2, 3))

        out = cm.intra_lpips(noise(2, 3, H, 6 * H), H, H, distance)
        assert out.shape == (2,) and seen == [((30, 3, H, H), (30, 3, H, H))]

    def test_mean_over_pairs(self):
        """A 1x3 canvas of constant tiles 0, 1, 3 under |a − b|: pairs 1, 3, 2 → mean 2."""
        canvas = torch.cat([torch.full((1, 3, H, H), v) for v in (0.0, 1.0, 3.0)], dim=3)
        out = cm.intra_lpips(canvas, H, H, lambda x, y: (x - y).abs().mean(dim=(1, 2, 3)))
        assert out.tolist() == [2.0]

    def test_2d_grid_has_all_pairs(self):
        calls = []
        cm.intra_lpips(noise(1, 3, 2 * H, 8 * H), H, H, lambda x, y: calls.append(len(x)) or x.new_zeros(len(x)))
        assert calls == [120]

    def test_real_lpips_separates_different_scenes(self):
        """A canvas of one scene scores lower than a canvas pasted from six different scenes (same classes)."""
        one, _ = scenes([(0, 1)])
        pasted = torch.cat([scenes([(0, s)])[0][..., :H] for s in range(6)], dim=3)
        dist = functools.partial(lpips, weights=alex_weights())
        assert cm.intra_lpips(one, H, H, dist) < cm.intra_lpips(pasted, H, H, dist)


class TestIntraLpipsFromWeights:
    def test_equals_pairwise_lpips(self):
        """Cached taps give the same value as LPIPS called on every pair (float64, 1×3 and 2×2 grids)."""
        w = {k: v.double() for k, v in alex_weights().items()}
        for shape in ((2, 3, H, 3 * H), (1, 3, 2 * H, 2 * H)):
            x = noise(*shape, seed=4, dtype=torch.float64)
            torch.testing.assert_close(cm.intra_lpips_from_weights(x, H, H, w),
                                       cm.intra_lpips(x, H, H, functools.partial(lpips, weights=w)))

    def test_identical_tiles_score_zero(self):
        canvas = noise(1, 3, H, H).repeat(1, 1, 1, 4)
        assert cm.intra_lpips_from_weights(canvas, H, H, alex_weights()).tolist() == [0.0]


class TestGramMatrix:
    def test_symmetric_and_normalised(self):
        f = noise(2, 5, 4, 3)
        g = cm.gram_matrix(f)
        assert g.shape == (2, 5, 5)
        torch.testing.assert_close(g, g.transpose(1, 2))
        torch.testing.assert_close(g[1, 2, 3], (f[1, 2] * f[1, 3]).sum() / (5 * 4 * 3))

    def test_exception_shape(self):
        with pytest.raises(VistaInputError, match=r"features must have shape \(B, C, H, W\)"):
            cm.gram_matrix(torch.zeros(5, 4, 3))


class TestStyleLoss:
    def test_symmetric_and_zero_for_identical(self):
        fx, fy = [noise(2, 4, 6, 6, seed=1), noise(2, 8, 3, 3, seed=2)], [noise(2, 4, 6, 6, seed=3), noise(2, 8, 3, 3, seed=4)]
        torch.testing.assert_close(cm.style_loss(fx, fy), cm.style_loss(fy, fx))
        assert cm.style_loss(fx, fx).tolist() == [0.0, 0.0]
        assert bool((cm.style_loss(fx, fy) > 0).all())

    def test_exception_layers(self):
        with pytest.raises(VistaInputError, match="fx and fy must list the same layers"):
            cm.style_loss([torch.zeros(1, 1, 2, 2)], [])


class TestVgg16StyleFeatures:
    def test_shapes(self):
        taps = cm.vgg16_style_features(noise(2, 3, H, H), random_vgg_weights())
        assert [tuple(t.shape) for t in taps] == [(2, 64, 32, 32), (2, 64, 32, 32), (2, 128, 16, 16), (2, 128, 16, 16),
                                                  (2, 256, 8, 8)]

    def test_pre_relu(self):
        """The taps are convolution outputs (SyncDiffusion's conv_1 … conv_5), so they take negative values."""
        assert all(bool((t < 0).any()) for t in cm.vgg16_style_features(noise(1, 3, H, H), random_vgg_weights()))

    def test_first_tap_is_conv1_1_of_the_scaled_input(self):
        w, x = random_vgg_weights(), noise(1, 3, H, H, dtype=torch.float64)
        scaled = (x - w["scaling_layer.shift"].double()) / w["scaling_layer.scale"].double()
        ref = torch.nn.functional.conv2d(scaled, w["net.slice1.0.weight"].double(), w["net.slice1.0.bias"].double(), 1, 1)
        torch.testing.assert_close(cm.vgg16_style_features(x, w)[0], ref)

    def test_exception_alex_weights(self):
        with pytest.raises(VistaInputError, match="weights must be an LPIPS v0.1 vgg state dict"):
            cm.vgg16_style_features(noise(1, 3, H, H), alex_weights())


class TestIntraStyleLoss:
    features = staticmethod(functools.partial(cm.vgg16_style_features, weights=random_vgg_weights()))

    def test_identical_tiles_score_zero(self):
        canvas = noise(1, 3, H, H).repeat(1, 1, 1, 6)
        assert cm.intra_style_loss(canvas, H, H, self.features).tolist() == [0.0]

    def test_equals_pairwise_style_loss(self):
        canvas = noise(1, 3, H, 3 * H)
        crops = [canvas[..., i * H : (i + 1) * H] for i in range(3)]
        pairs = [cm.style_loss(self.features(crops[i]), self.features(crops[j])) for i, j in ((0, 1), (0, 2), (1, 2))]
        torch.testing.assert_close(cm.intra_style_loss(canvas, H, H, self.features), sum(pairs) / 3)


class TestHorizonRows:
    @pytest.mark.parametrize("h", [32, 64])
    def test_recovers_rendered_horizon_within_2px(self, h):
        """Every column of 4 scenes per class: the estimate is within 2 px of the rendered horizon (1 px measured)."""
        x, layouts = scenes([(c, s) for c in range(3) for s in range(4)], h=h)
        truth = torch.stack([layout["horizon_y"] for layout in layouts])
        assert (cm.horizon_rows(x) - truth).abs().max() <= 2

    def test_robust_to_mild_noise(self):
        """With additive Gaussian noise of std 0.03 (a near-converged sample) the error stays within 2 px."""
        x, layouts = scenes([(c, 10 + c) for c in range(3)])
        noisy = x + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        truth = torch.stack([layout["horizon_y"] for layout in layouts])
        assert (cm.horizon_rows(noisy) - truth).abs().max() <= 2

    def test_ignores_the_sun(self):
        """A bright disc is the strongest local edge of its columns; the estimate there stays on the horizon."""
        x, layouts = scenes([(c, 20 + c) for c in range(3)])
        for rows, layout in zip(cm.horizon_rows(x), layouts):
            y, sx, r = layout["suns"][0].tolist()
            columns = slice(int(sx - r), int(sx + r) + 1)
            assert (rows[columns] - layout["horizon_y"][columns]).abs().max() <= 2

    def test_step_image(self):
        x = torch.zeros(1, 3, 20, 5)
        x[:, :, 13:] = -0.8
        assert cm.horizon_rows(x).tolist() == [[13] * 5]

    def test_exception_column_blur(self):
        with pytest.raises(VistaInputError, match="column_blur must be an odd number of px >= 1, got 2"):
            cm.horizon_rows(torch.zeros(1, 3, 20, 5), column_blur=2)

    def test_exception_min_rows(self):
        with pytest.raises(VistaInputError, match=r"min_rows must be in \[1, H/2 = 10\], got 11"):
            cm.horizon_rows(torch.zeros(1, 3, 20, 5), min_rows=11)


class TestHorizonVariance:
    def test_near_zero_on_rendered_scenes(self):
        x, _ = scenes([(c, 30 + c) for c in range(3)])
        assert bool((cm.horizon_variance(x) <= 0.25).all())

    def test_two_horizons(self):
        """Half a canvas from each of two scenes whose horizons differ by d rows: variance (d/2)² ± the estimator."""
        x, layouts = scenes([(0, s) for s in range(8)], windows=2)
        rows = torch.stack([layout["horizon_y"][0] for layout in layouts])
        a, b = x[rows.argmin()], x[rows.argmax()]
        d = float(rows.max() - rows.min())
        assert d >= 3
        canvas = torch.cat([a[..., :H], b[..., :H]], dim=-1)[None]
        assert cm.horizon_variance(canvas).item() == pytest.approx((d / 2) ** 2, abs=d + 1)


class TestHorizonEstimate:
    @pytest.mark.parametrize("h", [64, 128])
    def test_every_column_of_rendered_scenes_has_a_horizon(self, h):
        """Through the latent round trip, as the benchmark sees them: 4 scenes per class."""
        from vista.bench.evaluation.world import decode_latent, encode_latent

        x, layouts = scenes([(c, 40 + s) for c in range(3) for s in range(4)], h=h)
        x = decode_latent(encode_latent(x))
        rows, found = cm.horizon_estimate(x)
        truth = torch.stack([layout["horizon_y"] for layout in layouts])
        assert bool(found.all())
        assert ((rows - truth).abs() <= 2).double().mean() >= 0.99  # a few columns under a sun's decoded rim miss

    def test_abstains_on_sky_only_and_ground_only_crops(self):
        """The top and bottom quarters of 128 px scenes hold no horizon: a sky gradient or a ground ramp is no horizon
        (the [G] estimator found one in every column)."""
        x, _ = scenes([(c, 50 + s) for c in range(3) for s in range(4)], h=128)
        assert cm.horizon_coverage(x[:, :, :32]).max().item() <= 0.05  # sky (horizon at >= 70 px)
        assert cm.horizon_coverage(x[:, :, -32:]).max().item() <= 0.05  # ground only

    def test_variance_over_found_columns_only(self):
        """Half sky-only, half a scene: the variance is that of the scene's half (0), not of a horizon in the sky."""
        x, _ = scenes([(0, 60)], h=64, windows=2)
        sky = x[..., :16, :].repeat_interleave(4, dim=-2)  # rows 0-15 stretched: a sky gradient, no horizon
        canvas = torch.cat([sky[..., :64], x[..., 64:]], dim=-1)
        rows, found = cm.horizon_estimate(canvas)
        assert not found[0, :64].any() and found[0, 64:].all()
        assert cm.horizon_variance(canvas).item() <= 0.25
        assert cm.horizon_coverage(canvas).item() == pytest.approx(0.5)

    def test_exception_band(self):
        with pytest.raises(VistaInputError, match="min_contrast must be >= 0, got -1"):
            cm.horizon_estimate(torch.zeros(1, 3, 20, 5), min_contrast=-1)


class TestHorizonSteps:
    def test_zero_on_rendered_scenes(self):
        x, _ = scenes([(c, 70 + c) for c in range(3)])
        assert bool((cm.horizon_steps(x, H) <= 1).all())

    def test_mosaic_of_scenes_jumps_at_every_crop(self):
        """Crops of six scenes side by side (what independent windows make): the horizon jumps by the scenes' mean
        absolute difference."""
        x, layouts = scenes([(0, s) for s in range(6)], windows=1)
        mosaic = torch.cat(list(x), dim=-1)[None]
        rows = torch.stack([layout["horizon_y"][0] for layout in layouts])
        expected = (rows[1:] - rows[:-1]).abs().mean().item()
        assert expected >= 1
        assert cm.horizon_steps(mosaic, H).item() == pytest.approx(expected, abs=1.5)


class TestRowPairs:
    def test_pairs_within_rows(self):
        p = cm.row_pairs(2, 4)
        assert p.shape == (12, 2) and bool((p // 4)[:, 0].eq((p // 4)[:, 1]).all())

    def test_exception(self):
        with pytest.raises(VistaInputError, match="a row needs at least 2 crops, got a 2x1 grid"):
            cm.row_pairs(2, 1)


class Test2DLayoutScore:
    def test_rendered_scenes_beat_independent_windows(self):
        """On a 2-D canvas (2 x 6 windows) the row-wise intra-LPIPS and the full-height horizon variance are lowest
        for rendered scenes; a grid of windows cut from other scenes (what independent windows paint) scores worse on
        both, while the all-pairs intra-LPIPS ranks the rendered scenes worse (it compares sky crops with ground
        crops: "lower is better" is false there, [B])."""
        h = 2 * H
        x, _ = scenes([(c, 80 + c) for c in range(3)], h=h)
        others, _ = scenes([(c, 90 + k) for k in range(12) for c in (0,)], h=h)
        crops = rearrange(others, "k c (r h) (n w) -> k (r n) c h w", r=2, h=H, w=H)
        # grid cell (r, n) from scene k = 6r + n: the top row of each window from a different scene
        pick = torch.stack([crops[6 * r + n, r * 6 + n] for r in range(2) for n in range(6)])
        mosaic = rearrange(pick, "(r n) c h w -> c (r h) (n w)", r=2)[None]
        rows = functools.partial(cm.intra_lpips_from_weights, window_h=H, window_w=H, weights=alex_weights(),
                                 rows_only=True)
        everything = functools.partial(cm.intra_lpips_from_weights, window_h=H, window_w=H, weights=alex_weights())
        assert rows(x[:1]).item() < rows(mosaic).item()
        assert cm.horizon_variance(x[:1]).item() < cm.horizon_variance(mosaic).item()
        assert everything(x[:1]).item() > rows(x[:1]).item()


class TestSeamScore:
    def test_window_edges_of_a_plan(self):
        plan = plan_windows(16, 96, 16, 16, 4, 4)  # latent px: stride 4
        cols, rows = cm.window_edges([plan], 16, 96, scale=4)
        assert cols.nonzero().flatten().tolist() == list(range(16, 384, 16)) and not rows.any()

    def test_wrapped_plan_has_an_edge_at_the_border_column(self):
        cols, _ = cm.window_edges([[cm.Window(0, 20, 4, 8)]], 4, 24)
        assert cols.nonzero().flatten().tolist() == [4, 20]

    def test_about_one_on_rendered_scenes(self):
        """Through the world's latent round trip (bilinear decode), the edges of MultiDiffusion's plan see no seam."""
        from vista.bench.evaluation.world import decode_latent, encode_latent

        x, _ = scenes([(c, s) for c in range(3) for s in range(6)], h=64)
        x = decode_latent(encode_latent(x))
        for stride in (4, 16):  # MultiDiffusion's plan, the independent windows' plan (latent px)
            cols, rows = cm.window_edges([plan_windows(16, 96, 16, 16, stride, stride)], 16, 96, scale=4)
            score = cm.seam_score(x, cols, rows, phase=4)
            assert bool(((score > 0.6) & (score < 1.6)).all()), score

    def test_planted_seam_is_found_at_its_position(self):
        """A brightness step planted at x = 128 px: the score on a plan with an edge there is high; on a plan whose
        edges miss it, about 1."""
        from vista.bench.evaluation.world import decode_latent, encode_latent

        x, _ = scenes([(c, 100 + c) for c in range(3)], h=64)
        x = decode_latent(encode_latent(x))
        planted = x.clone()
        planted[..., 128:] += 0.15
        at = cm.window_edges([[cm.Window(0, 0, 16, 32), cm.Window(0, 32, 16, 64)]], 16, 96, scale=4)
        off = cm.window_edges([[cm.Window(0, 0, 16, 36), cm.Window(0, 36, 16, 60)]], 16, 96, scale=4)
        assert bool((cm.seam_score(planted, *at, phase=4) > 3).all())
        assert bool((cm.seam_score(x, *at, phase=4) < 2).all())
        assert bool((cm.seam_score(planted, *off, phase=4) < 2).all())

    def test_horizontal_edges_of_a_2d_plan(self):
        x, _ = scenes([(0, 110)], h=64, windows=2)
        planted = x.clone()
        planted[..., 32:, :] -= 0.2
        cols, rows = cm.window_edges([[cm.Window(0, 0, 8, 32), cm.Window(8, 0, 8, 32)]], 16, 32, scale=4)
        assert rows.nonzero().flatten().tolist() == [32]
        assert cm.seam_score(planted, cols, rows, phase=4).item() > 3 * cm.seam_score(x, cols, rows, phase=4).item()

    def test_exception_no_other_boundary(self):
        cols, rows = cm.window_edges([[cm.Window(0, 0, 4, 8)]], 4, 8)  # one window: no edge inside the canvas
        with pytest.raises(VistaInputError, match="the plan leaves no window edge or no other boundary"):
            cm.seam_score(torch.zeros(1, 3, 4, 8), cols, rows)


class TestFidelityGuard:
    def test_blur_lowers_the_laplacian_ratio(self):
        """The guard reported beside every coherence number: a blurred panorama's Laplacian energy ÷ the references'
        falls, while its intra-LPIPS falls too (why the guard is needed)."""
        import kornia

        x, _ = scenes([(c, 120 + c) for c in range(3)])
        blurred = kornia.filters.gaussian_blur2d(x, (5, 5), (1.5, 1.5))
        everything = torch.ones(x.shape[-2:], dtype=torch.bool)
        reference = cm.laplacian_energy(x, everything).mean()
        assert bool((cm.laplacian_energy(blurred, everything) / reference < 0.5).all())
        lp = functools.partial(cm.intra_lpips_from_weights, window_h=H, window_w=H, weights=alex_weights())
        assert bool((lp(blurred) < lp(x)).all())


class TestSkyDrift:
    def test_zero_on_rendered_scenes(self):
        x, layouts = scenes([(c, c) for c in range(3)])
        assert bool((cm.sky_drift(x, H, layouts[0]["sky_band"]) < 1e-5).all())

    def test_sky_colours_match_the_layout(self):
        x, layouts = scenes([(c, 40 + c) for c in range(3)])
        colours = cm.sky_colours(x, H, layouts[0]["sky_band"])
        truth = torch.stack([layout["sky_colour"] for layout in layouts])[:, None].expand_as(colours)
        torch.testing.assert_close(colours, truth, atol=1e-5, rtol=0)

    def test_two_skies(self):
        """Three crops of one sky, three of another: the RMS distance to the mean is half their distance."""
        (a, b), (la, lb) = scenes([(0, 1), (1, 2)], windows=3)
        canvas = torch.cat([a, b], dim=-1)[None]
        expected = (la["sky_colour"] - lb["sky_colour"]).norm() / 2
        torch.testing.assert_close(cm.sky_drift(canvas, H, la["sky_band"])[0], expected, atol=1e-5, rtol=0)

    def test_sun_pixels_left_out(self):
        x = torch.full((1, 3, 8, 16), -0.2)
        x[:, :, 0:2, 2:4] = 1.0  # a sun in the band of the first crop
        assert cm.sky_drift(x, 8, 4, sun_margin=0).item() == pytest.approx(0.0, abs=1e-7)

    def test_exception_band(self):
        with pytest.raises(VistaInputError, match=r"band must be in \[1, H = 8\] rows, got 9"):
            cm.sky_colours(torch.zeros(1, 3, 8, 16), 8, 9)

    def test_all_sun_band_keeps_its_pixels(self):
        image = torch.zeros(1, 3, 8, 16)
        image[..., :8] = 1.0  # the first crop's band is all "sun"
        colours = cm.sky_colours(image, 8, 2)
        assert torch.equal(colours[0, 0], torch.ones(3)) and torch.equal(colours[0, 1], torch.zeros(3))


class TestCountSuns:
    def test_one_per_rendered_scene(self):
        x, _ = scenes([(c, s) for c in range(3) for s in range(3)])
        assert cm.count_suns(x).tolist() == [1] * 9

    def test_pasted_panorama_counts_every_sun(self):
        """Three sun-centred crops side by side: three suns; a sunless crop: none."""
        crops = []
        for c in range(3):
            x, (layout,) = scenes([(c, 50 + c)])
            left = min(max(int(layout["suns"][0, 1]) - H // 2, 0), 5 * H)
            crops.append(x[..., left : left + H])
        assert cm.count_suns(torch.cat(crops, dim=-1)).tolist() == [3]
        assert cm.count_suns(torch.full((1, 3, H, H), 0.2)).tolist() == [0]

    def test_min_area_drops_specks(self):
        x = torch.full((1, 3, 16, 16), -0.5)
        x[:, :, 2, 2] = 1.0
        x[:, :, 8:11, 8:11] = 1.0
        assert cm.count_suns(x, min_area=3).tolist() == [1] and cm.count_suns(x, min_area=1).tolist() == [2]

    def test_exception_min_area(self):
        with pytest.raises(VistaInputError, match="min_area must be >= 1 px"):
            cm.count_suns(torch.zeros(1, 3, 8, 8), min_area=0)


class TestFrechet:
    def test_zero_for_identical_sets(self):
        f = noise(40, 8, dtype=torch.float64)
        assert abs(cm.frechet_distance(f, f).item()) < 1e-9

    def test_one_dimensional_closed_form(self):
        """d² = (μ₁ − μ₂)² + (σ₁ − σ₂)² for two 1-D Gaussians."""
        d = cm.frechet_distance_gaussians(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-2.0]), torch.tensor([[9.0]]))
        assert d.item() == pytest.approx(9.0 + 1.0)

    def test_diagonal_closed_form(self):
        a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
        mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
        d = cm.frechet_distance_gaussians(mu1, torch.diag(a), mu2, torch.diag(b))
        assert d.item() == pytest.approx(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())

    def test_general_covariances(self):
        """Non-commuting covariances: tr(Σ₁Σ₂)^½ = Σ √eig(Σ₁Σ₂) (real, non-negative eigenvalues)."""
        g = torch.Generator().manual_seed(1)
        a, b = torch.randn(5, 5, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
        c1, c2 = a @ a.T + 0.1 * torch.eye(5, dtype=torch.float64), b @ b.T
        mu1, mu2 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
        cross = torch.linalg.eigvals(c1 @ c2).real.clamp(min=0).sqrt().sum()
        expected = ((mu1 - mu2) ** 2).sum() + c1.trace() + c2.trace() - 2 * cross
        torch.testing.assert_close(cm.frechet_distance_gaussians(mu1, c1, mu2, c2), expected)

    def test_symmetric_and_estimated_stats(self):
        f1, f2 = noise(30, 4, seed=1, dtype=torch.float64), 2 * noise(50, 4, seed=2, dtype=torch.float64) + 1
        torch.testing.assert_close(cm.frechet_distance(f1, f2), cm.frechet_distance(f2, f1))
        mu, cov = cm.gaussian_stats(f1)
        torch.testing.assert_close(cov, torch.cov(f1.T))
        torch.testing.assert_close(mu, f1.mean(0))

    def test_exception_dims(self):
        with pytest.raises(VistaInputError, match="features must be"):
            cm.frechet_distance(torch.zeros(4, 3), torch.zeros(4, 2))

    def test_exception_one_sample(self):
        with pytest.raises(VistaInputError, match="at least 2 samples"):
            cm.gaussian_stats(torch.zeros(1, 3))


class TestLpipsEmbedding:
    def test_shape_and_scene_separation(self):
        """alex relu5 pooled: 256-d; day crops sit closer to day crops than to night crops."""
        x, _ = scenes([(0, 1), (0, 2), (2, 1)], windows=1)
        e = cm.lpips_embedding(x, alex_weights())
        assert e.shape == (3, 256)
        assert (e[0] - e[1]).norm() < (e[0] - e[2]).norm()


class TestSharpness:
    def test_blurred_image_has_less_laplacian_energy(self):
        import kornia
        x = noise(1, 3, H, H)
        mask = torch.ones(H, H, dtype=torch.bool)
        blurred = kornia.filters.gaussian_blur2d(x, (5, 5), (1.0, 1.0))
        assert cm.laplacian_energy(blurred, mask) < 0.5 * cm.laplacian_energy(x, mask)

    def test_constant_and_linear_images_have_none(self):
        ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16)
        inner = torch.zeros(16, 16, dtype=torch.bool)
        inner[1:-1, 1:-1] = True
        assert cm.laplacian_energy(ramp, inner).item() == pytest.approx(0.0, abs=1e-10)

    def test_overlap_ratio_detects_blur_in_overlaps(self):
        """Two windows of 32 at stride 16 on 32x48: overlap = columns 16..31. Blurring there drops the ratio."""
        import kornia
        windows = plan_windows(32, 48, 32, 32, 32, 16)
        x = noise(1, 3, 32, 48, seed=3)
        ratio = cm.overlap_sharpness(x, windows)
        blurred = x.clone()
        blurred[..., 16:32] = kornia.filters.box_blur(x, (3, 3))[..., 16:32]
        assert 0.7 < ratio.item() < 1.4 and cm.overlap_sharpness(blurred, windows).item() < 0.5 * ratio.item()

    def test_coverage_count_with_wrap_and_scale(self):
        windows = plan_windows(4, 8, 4, 4, 4, 4, wrap_x=True)
        count = cm.coverage_count(windows, 4, 8, scale=2)
        assert count.shape == (8, 16) and bool((count == 1).all())

    def test_exception_window_outside(self):
        with pytest.raises(VistaInputError, match="does not fit the 8x8 canvas"):
            cm.coverage_count(plan_windows(16, 16, 8, 8, 8, 8), 8, 8)

    def test_exception_empty_mask(self):
        with pytest.raises(VistaInputError, match="mask must be a non-empty bool"):
            cm.laplacian_energy(torch.zeros(1, 3, 4, 4), torch.zeros(4, 4, dtype=torch.bool))

    def test_exception_no_single_cover(self):
        windows = plan_windows(8, 8, 8, 8, 8, 4, wrap_x=True)  # two wrapped windows cover every pixel twice
        with pytest.raises(VistaInputError, match="leave no single- or no multi-covered pixel"):
            cm.overlap_sharpness(torch.zeros(1, 3, 8, 8), windows)

    def test_exception_canvas_mismatch(self):
        with pytest.raises(VistaInputError, match=r"leave pixels of the 8x12 px image uncovered"):
            cm.overlap_sharpness(torch.zeros(1, 3, 8, 12), plan_windows(8, 8, 8, 8, 8, 4))


def test_all_exports_exist():
    assert all(hasattr(cm, name) for name in cm.__all__) and math.isfinite(cm.SUN_THRESHOLD)
