"""core/zoom/stack.py + core/zoom/video.py: zoom stack rendering, noise, blending, photo zoom, sampler, video."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from denoisers import TinyConvDenoiser
from peak_bytes import PeakBytes
from vista.core.checks import VistaInputError
from vista.core.sampling.noise_streams import step_noise_seed
from vista.core.zoom.stack import (
    PhotoZoom,
    ZoomSettings,
    aligned_depth,
    ancestral_sigmas,
    area_down,
    blend_stack,
    center_crop,
    check_stack,
    check_zoom_noise,
    paste_center,
    photo_guidance,
    photo_loss,
    render_image,
    render_noise,
    render_stack,
    sample_zoom_stack,
    zoom_noise,
)
from vista.core.zoom.composite import composite_levels
from vista.core.zoom.video import WORKING_FRAMES, frame_count, level_weight, video_bytes, zoom_video_frames

CASES = [(n, p) for p in (2, 4) for n in (1, 2, 3, 4)]


def aligned_size(n, p):
    """Smallest size on which Alg. 1 lines up for n levels: 2·p^(n-1)."""
    return 2 * p ** max(n - 1, 1)


def stack(n, p, c=3, seed=0, width_mult=3):
    h = aligned_size(n, p)
    return torch.randn(n, c, h, h * width_mult, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def alg1_reference(layers, i, p):
    """Paper Alg. 1 literally: paste L_j, area-downscaled by p^(j-i), into the centre, j = i+1 … N-1."""
    x = layers[i].clone()
    for j in range(i + 1, layers.shape[0]):
        s = p ** (j - i)
        inner = area_down(layers[j][None], s)[0]
        h, w = inner.shape[-2:]
        top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        x[:, top : top + h, left : left + w] = inner
    return x


def assert_render_consistent(r, p, atol=1e-10):
    for i in range(r.shape[0] - 1):
        torch.testing.assert_close(area_down(r[i + 1 : i + 2], p)[0], center_crop(r[i], p), atol=atol, rtol=0)


def model_fn(den):
    return lambda x, sigma, **extra: den(x, sigma)


class TestCheckStack:
    def test_accepts_sizes_divisible_by_2p(self):
        check_stack(torch.zeros(3, 4, 8, 24), 2)
        check_stack(torch.zeros(1, 4, 5, 7), 4)  # one level: any size

    @pytest.mark.parametrize("p", [1, 3, 8])
    def test_exception_zoom_factor(self, p):
        with pytest.raises(VistaInputError, match="zoom factor p must be one of"):
            check_stack(torch.zeros(2, 4, 16, 16), p)

    def test_exception_rank(self):
        with pytest.raises(VistaInputError, match=r"stack must have shape \(N, C, H, W\)"):
            check_stack(torch.zeros(4, 16, 16), 2)

    def test_exception_no_levels(self):
        with pytest.raises(VistaInputError, match="at least one zoom level"):
            check_stack(torch.zeros(0, 4, 16, 16), 2)

    @pytest.mark.parametrize("h,w,p", [(6, 8, 2), (8, 10, 2), (12, 16, 4)])
    def test_exception_size(self, h, w, p):
        with pytest.raises(VistaInputError, match=fr"divisible by 2·p = {2 * p} \(latent px\)"):
            check_stack(torch.zeros(2, 4, h, w), p)

    def test_exception_size_names_the_unit(self):
        with pytest.raises(VistaInputError, match=r"images height and width must be divisible by 2·p = 4 \(px\)"):
            check_stack(torch.zeros(2, 3, 6, 8), 2, "images", unit="px")


class TestZoomSettings:
    def test_holds_p_and_levels(self):
        settings = ZoomSettings(4, 3)
        assert (settings.p, settings.levels) == (4, 3)

    def test_frozen(self):
        with pytest.raises(AttributeError):
            ZoomSettings(2, 4).p = 4

    @pytest.mark.parametrize("p", [1, 3, 8])
    def test_exception_zoom_factor(self, p):
        with pytest.raises(VistaInputError, match="zoom factor p must be one of"):
            ZoomSettings(p, 4)

    @pytest.mark.parametrize("levels", [0, -1, 2.0])
    def test_exception_levels(self, levels):
        with pytest.raises(VistaInputError, match="levels must be an integer >= 1"):
            ZoomSettings(2, levels)


class TestAlignedDepth:
    def test_values(self):
        assert aligned_depth(64, 64, 2) == 5
        assert aligned_depth(64, 64, 4) == 2
        assert aligned_depth(128, 96, 2) == 4
        assert aligned_depth(7, 8, 2) == 0

    def test_exception_zoom_factor(self):
        with pytest.raises(VistaInputError, match="zoom factor p"):
            aligned_depth(64, 64, 3)


class TestCenterCrop:
    def test_centre(self):
        x = torch.arange(36.0).reshape(6, 6)
        assert center_crop(x, 3).tolist() == [[14.0, 15.0], [20.0, 21.0]]

    def test_exception_not_whole_pixels(self):
        with pytest.raises(VistaInputError, match="no whole-pixel central 1/2 block"):
            center_crop(torch.zeros(6, 6), 2)


class TestPasteCenter:
    def test_inverse_of_center_crop(self):
        x, inner = torch.zeros(1, 8, 12), torch.randn(1, 4, 6, generator=torch.Generator().manual_seed(0))
        out = paste_center(x, inner)
        assert torch.equal(center_crop(out, 2), inner)
        ring = torch.ones(8, 12, dtype=torch.bool)
        ring[2:6, 3:9] = False
        assert out[:, ring].abs().sum() == 0 and x.abs().sum() == 0  # ring unchanged, input untouched


class TestAreaDown:
    def test_exact_box_mean(self):
        x = torch.randn(1, 2, 8, 12, dtype=torch.float64)
        torch.testing.assert_close(area_down(x, 4)[0, :, 0, 0], x[0, :, :4, :4].mean((-2, -1)))

    @pytest.mark.parametrize("scale", [0, 3])
    def test_exception_scale(self, scale):
        with pytest.raises(VistaInputError, match="scale must be >= 1 and divide the size"):
            area_down(torch.zeros(1, 1, 8, 8), scale)


class TestRenderStack:
    @pytest.mark.parametrize("n,p", CASES)
    def test_levels_agree_on_overlaps(self, n, p):
        assert_render_consistent(render_stack(stack(n, p), p), p)

    @pytest.mark.parametrize("n,p", CASES)
    def test_equals_alg1_on_aligned_sizes(self, n, p):
        layers = stack(n, p, seed=1)
        r = render_stack(layers, p)
        for i in range(n):
            torch.testing.assert_close(r[i], alg1_reference(layers, i, p), atol=1e-12, rtol=0)

    @settings(max_examples=20, deadline=None)
    @given(n=st.integers(1, 7), p=st.sampled_from([2, 4]), kh=st.integers(1, 3), kw=st.integers(1, 3))
    def test_deep_stacks_stay_consistent(self, n, p, kh, kw):
        """Stacks deeper than the size allows for Alg. 1 (sub-pixel footprints) still agree exactly."""
        layers = torch.randn(n, 2, 2 * p * kh, 2 * p * kw, dtype=torch.float64)
        assert_render_consistent(render_stack(layers, p), p)

    def test_deepest_level_unchanged(self):
        layers = stack(3, 2)
        torch.testing.assert_close(render_stack(layers, 2)[-1], layers[-1])

    def test_does_not_modify_input(self):
        layers = stack(3, 2)
        before = layers.clone()
        render_stack(layers, 2)
        assert torch.equal(layers, before)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="divisible by 2·p"):
            render_stack(torch.zeros(2, 4, 12, 12), 4)


class TestRenderImage:
    @pytest.mark.parametrize("n,p", CASES)
    def test_matches_render_stack(self, n, p):
        layers = stack(n, p, seed=2)
        r = render_stack(layers, p)
        for i in range(n):
            torch.testing.assert_close(render_image(layers, i, p), r[i])

    @pytest.mark.parametrize("i", [-1, 3])
    def test_exception_level(self, i):
        with pytest.raises(VistaInputError, match=r"zoom level i must be in \[0, 2\]"):
            render_image(torch.zeros(3, 4, 16, 16), i, 2)


class TestRenderNoise:
    @pytest.mark.parametrize("p,n", [(2, 4), (4, 3)])
    def test_every_level_standard_normal_including_centre(self, p, n):
        """512 channels of i.i.d. draws; tolerances are ~5 standard errors of the sample statistic."""
        h = aligned_size(n, p)
        noise = torch.randn(n, 512, h, h, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        eps = render_noise(noise, p)
        for i in range(n):
            for k in range(n - i):  # the block where level i+k (pasted) lives, measured on its own
                region = center_crop(eps[i], p**k)
                count = region.numel()
                se_mean, se_var = count**-0.5, (2 / count) ** 0.5
                print(f"p={p} level {i} centre 1/{p**k}: mean {region.mean():+.4f} var {region.var():.4f} (n={count})")
                assert abs(region.mean().item()) < 5 * se_mean
                assert abs(region.var().item() - 1) < 5 * se_var

    def test_neighbours_uncorrelated_in_composited_centre(self):
        noise = torch.randn(3, 256, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        centre = center_crop(render_noise(noise, 2)[0], 4)  # level 2 pasted, x4 amplitude
        corr = (centre[..., :-1] * centre[..., 1:]).mean().item()
        assert abs(corr) < 0.05

    def test_without_correction_variance_shrinks(self):
        """The amplitude correction is what keeps the pasted noise at unit variance."""
        noise = torch.randn(2, 256, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        plain = center_crop(render_stack(noise, 2)[0], 2)
        assert abs(plain.var().item() - 0.25) < 0.05

    def test_consistent_across_levels(self):
        noise = torch.randn(3, 2, 16, 16, dtype=torch.float64)
        eps = render_noise(noise, 2)
        torch.testing.assert_close(2 * area_down(eps[1:2], 2)[0], center_crop(eps[0], 2))

    def test_exception(self):
        with pytest.raises(VistaInputError, match="noise_stack must have shape"):
            render_noise(torch.zeros(16, 16), 2)


class TestZoomNoise:
    def test_seeded_and_consistent(self):
        a = zoom_noise((3, 2, 16, 16), 2, torch.Generator().manual_seed(7), dtype=torch.float64)
        b = zoom_noise((3, 2, 16, 16), 2, torch.Generator().manual_seed(7), dtype=torch.float64)
        assert torch.equal(a, b) and a.dtype == torch.float64
        torch.testing.assert_close(2 * area_down(a[1:2], 2)[0], center_crop(a[0], 2), atol=1e-6, rtol=0)

    def test_exception(self):
        with pytest.raises(VistaInputError, match=r"shape must be \(N, C, H, W\)"):
            zoom_noise((2, 16, 16), 2, torch.Generator())


class TestCheckZoomNoise:
    @pytest.mark.parametrize("n,p", CASES)
    def test_accepts_zoom_noise(self, n, p):
        check_zoom_noise(zoom_noise((n, 4, aligned_size(n, p), aligned_size(n, p)), p, torch.Generator().manual_seed(1)), p)

    def test_accepts_float16_and_zero_noise(self):
        check_zoom_noise(zoom_noise((3, 4, 16, 16), 2, torch.Generator().manual_seed(2), dtype=torch.float16), 2)
        check_zoom_noise(torch.zeros(3, 4, 16, 16), 4)

    @pytest.mark.parametrize("drawn,checked", [(2, 4), (4, 2)])
    def test_exception_other_zoom_factor(self, drawn, checked):
        noise = zoom_noise((3, 4, 32, 32), drawn, torch.Generator().manual_seed(3))
        with pytest.raises(VistaInputError, match=f"noise is not zoom-consistent for zoom factor p={checked}"):
            check_zoom_noise(noise, checked)

    def test_exception_iid_noise(self):
        with pytest.raises(VistaInputError, match="not zoom-consistent"):
            check_zoom_noise(torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4)), 2)


class TestBlendStack:
    @pytest.mark.parametrize("n,p", CASES)
    def test_consistent_observations_unchanged(self, n, p):
        x = render_stack(stack(n, p, seed=8), p)
        torch.testing.assert_close(blend_stack(x, p), x, atol=1e-10, rtol=0)

    @settings(max_examples=15, deadline=None)
    @given(n=st.integers(1, 6), p=st.sampled_from([2, 4]), kh=st.integers(1, 4), kw=st.integers(1, 4))
    def test_consistent_observations_unchanged_any_size(self, n, p, kh, kw):
        x = render_stack(torch.randn(n, 2, 2 * p * kh, 2 * p * kw, dtype=torch.float64), p)
        torch.testing.assert_close(blend_stack(x, p), x, atol=1e-10, rtol=0)

    @pytest.mark.parametrize("n,p", [(3, 2), (4, 2), (3, 4)])
    def test_linear(self, n, p):
        x, y = stack(n, p, seed=9), stack(n, p, seed=10)
        a, b = 0.7, -1.3
        torch.testing.assert_close(blend_stack(a * x + b * y, p), a * blend_stack(x, p) + b * blend_stack(y, p),
                                   atol=1e-10, rtol=0)

    def test_output_renders_consistent(self):
        r = render_stack(blend_stack(stack(4, 2, seed=11), 2), 2)
        assert_render_consistent(r, 2)

    def test_level_zero_is_its_own_observation(self):
        x = stack(3, 2, seed=12)
        torch.testing.assert_close(blend_stack(x, 2)[0], x[0])

    def test_keeps_fine_detail_of_zoomed_in_level(self):
        """Octave-0 detail (a checkerboard) comes from x_1 alone: not halved as naive averaging would."""
        x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
        x[1, 0] = (torch.arange(8)[:, None] + torch.arange(8)[None, :]).remainder(2) * 2.0 - 1
        torch.testing.assert_close(blend_stack(x, 2)[1], x[1])

    def test_averages_the_coarse_band(self):
        x = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
        x[1] = 1.0
        torch.testing.assert_close(blend_stack(x, 2)[1], torch.full((1, 8, 8), 0.5, dtype=torch.float64))

    def test_levels_one_is_no_blending(self):
        x = stack(3, 2, seed=13)
        torch.testing.assert_close(blend_stack(x, 2, levels=1), x)

    def test_exception_levels(self):
        with pytest.raises(VistaInputError, match="levels must be None or >= 1, got 0"):
            blend_stack(torch.zeros(2, 1, 8, 8), 2, levels=0)

    def test_exception_stack(self):
        with pytest.raises(VistaInputError, match="x0_hats height and width"):
            blend_stack(torch.zeros(2, 1, 6, 8), 2)


class TestPhotoLoss:
    def test_eq1_by_hand(self):
        x = stack(2, 2, seed=18)
        photo = torch.randn(x.shape[1:], dtype=torch.float64)
        by_hand = (x[0] - photo).square().sum() + (area_down(x[1:2], 2)[0] - center_crop(photo, 2)).square().sum()
        torch.testing.assert_close(photo_loss(x, photo, 2), by_hand)

    def test_exception_photo_shape(self):
        with pytest.raises(VistaInputError, match="photo must have one level's shape"):
            photo_loss(torch.zeros(2, 4, 8, 8), torch.zeros(1, 4, 8, 8), 2)


class TestPhotoGuidance:
    def test_reduces_photo_loss(self):
        x = stack(3, 2, c=4, seed=14).float()
        photo = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(15))
        before = photo_loss(x, photo, 2).item()
        after = photo_loss(photo_guidance(x, photo, 2), photo, 2).item()
        print(f"photo loss {before:.2f} -> {after:.2f}")
        assert after < 0.9 * before

    def test_works_under_inference_mode(self):
        x = stack(2, 2, c=4, seed=16).float()
        photo = torch.randn(x.shape[1:])
        with torch.inference_mode():
            out = photo_guidance(x.clone(), photo.clone(), 2)
        assert not torch.equal(out, x)

    def test_zero_steps_is_identity(self):
        x = stack(2, 2, seed=17)
        torch.testing.assert_close(photo_guidance(x, x[0], 2, steps=0), x)

    def test_exception_photo_shape(self):
        with pytest.raises(VistaInputError, match="photo_latent must have one level's shape"):
            photo_guidance(torch.zeros(2, 4, 8, 8), torch.zeros(4, 4, 4), 2)

    def test_exception_steps(self):
        with pytest.raises(VistaInputError, match="steps must be >= 0, got -1"):
            photo_guidance(torch.zeros(2, 4, 8, 8), torch.zeros(4, 8, 8), 2, steps=-1)

    def test_exception_lr(self):
        with pytest.raises(VistaInputError, match="lr must be > 0, got 0"):
            photo_guidance(torch.zeros(2, 4, 8, 8), torch.zeros(4, 8, 8), 2, lr=0)


class TestPhotoZoom:
    def test_active_until_fraction(self):
        pz = PhotoZoom(torch.zeros(1, 4, 4))
        assert [pz.active(i, 10) for i in range(10)] == [True] * 8 + [False] * 2


class TestAncestralSigmas:
    def test_eta_zero_is_deterministic(self):
        assert ancestral_sigmas(2.0, 1.0, 0.0) == (1.0, 0.0)

    def test_variance_adds_up(self):
        down, up = ancestral_sigmas(2.0, 1.0)
        assert abs(down**2 + up**2 - 1.0) < 1e-12 and 0 < up < 1


def run_sampler(seed=0, photo=None, steps=8, n=3, p=2, callback=None):
    den = TinyConvDenoiser(channels=4, seed=1, dtype=torch.float32)
    sigmas = torch.linspace(3.0, 0.0, steps + 1)
    h = aligned_size(n, p)
    x = zoom_noise((n, 4, h, h), p, torch.Generator().manual_seed(100)) * sigmas[0]
    return sample_zoom_stack(model_fn(den), x, sigmas, {"seed": seed}, callback, True, p=p, photo_guidance=photo)


class TestSampleZoomStack:
    def test_smoke(self):
        out = run_sampler()
        assert out.shape == (3, 4, 8, 8) and torch.isfinite(out).all()

    def test_deterministic(self):
        assert torch.equal(run_sampler(seed=5), run_sampler(seed=5))
        assert not torch.equal(run_sampler(seed=5), run_sampler(seed=6))

    @pytest.mark.parametrize("n,p", [(3, 2), (2, 4)])
    def test_output_render_consistent(self, n, p):
        out = run_sampler(n=n, p=p)
        assert_render_consistent(out.double(), p, atol=1e-5)

    def test_callback_once_per_step(self):
        calls = []
        run_sampler(steps=5, callback=calls.append)
        assert [c["i"] for c in calls] == list(range(5))
        assert set(calls[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}

    def test_photo_guidance_pulls_level0_to_photo(self):
        photo = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(21))
        free = (run_sampler()[0] - photo).norm().item()
        with torch.inference_mode():
            guided = (run_sampler(photo=PhotoZoom(photo))[0] - photo).norm().item()
        print(f"|level0 - photo|: without guidance {free:.3f}, with guidance {guided:.3f}")
        assert guided < 0.8 * free

    def test_before_step_once_per_step(self):
        calls = []
        den = TinyConvDenoiser(channels=4, seed=1, dtype=torch.float32)
        x = zoom_noise((2, 4, 8, 8), 2, torch.Generator().manual_seed(0)) * 3.0
        sample_zoom_stack(model_fn(den), x, torch.linspace(3.0, 0.0, 5), {}, None, True, p=2,
                          before_step=lambda: calls.append(1))
        assert len(calls) == 4

    def test_exception_sigmas(self):
        with pytest.raises(VistaInputError, match="sigmas must be a 1-D schedule"):
            sample_zoom_stack(lambda x, s: x, torch.zeros(2, 4, 8, 8), torch.zeros(2, 2), p=2)

    def test_exception_eta(self):
        with pytest.raises(VistaInputError, match="eta must be >= 0, got -1"):
            sample_zoom_stack(lambda x, s: x, torch.zeros(2, 4, 8, 8), torch.ones(2), p=2, eta=-1)

    def test_exception_photo_shape(self):
        with pytest.raises(VistaInputError, match="photo latent must have one level's shape"):
            sample_zoom_stack(lambda x, s: x, torch.zeros(2, 4, 8, 8), torch.ones(2), p=2,
                              photo_guidance=PhotoZoom(torch.zeros(4, 4, 4)))

    @pytest.mark.parametrize("kw,msg", [({"steps": -1}, "steps must be >= 0"), ({"lr": 0.0}, "lr must be > 0")])
    def test_exception_photo_settings(self, kw, msg):
        with pytest.raises(VistaInputError, match=msg):
            sample_zoom_stack(lambda x, s: x, torch.zeros(2, 4, 8, 8), torch.ones(2), p=2,
                              photo_guidance=PhotoZoom(torch.zeros(4, 8, 8), **kw))

    def test_photo_guidance_keeps_dtype(self):
        out = photo_guidance(torch.zeros(2, 4, 8, 8, dtype=torch.float16), torch.ones(4, 8, 8), 2)
        assert out.dtype == torch.float16

    def test_exception_photo_until(self):
        with pytest.raises(VistaInputError, match=r"photo until must be in \[0.0, 1.0\], got 1.5"):
            sample_zoom_stack(lambda x, s: x, torch.zeros(2, 4, 8, 8), torch.ones(2), p=2,
                              photo_guidance=PhotoZoom(torch.zeros(4, 8, 8), until=1.5))


class TestStepNoiseStream:
    """Issue [R] 9: the step noise must not replay the initial noise drawn from the same seed."""

    @pytest.mark.parametrize("seed", [0, 7, 123456789])
    def test_first_step_noise_independent_of_initial_noise(self, seed):
        n, p, h = 4, 2, 32
        initial = zoom_noise((n, 4, h, h), p, torch.Generator().manual_seed(seed), dtype=torch.float64)
        sigma, sigma_next = 2.0, 1.0
        zero = lambda x, s, **extra: torch.zeros_like(x)  # denoised = 0: the step is (σ_down/σ) x + σ_up ε
        x1 = sample_zoom_stack(zero, initial * sigma, torch.tensor([sigma, sigma_next], dtype=torch.float64),
                               {"seed": seed}, None, True, p=p)
        down, up = ancestral_sigmas(sigma, sigma_next)
        step_noise = (x1 - (down / sigma) * initial * sigma) / up
        corr = torch.corrcoef(torch.stack([step_noise.flatten(), initial.flatten()]))[0, 1].item()
        # Each level's outer ring (3/4 of it at p = 2) is i.i.d., so at least 3/4 of the values are independent.
        se = (0.75 * initial.numel()) ** -0.5
        print(f"seed {seed}: corr(step-1 noise, initial noise) = {corr:+.4f} (standard error {se:.4f})")
        assert abs(corr) < 5 * se

    def test_step_noise_still_seeded(self):
        zero = lambda x, s, **extra: torch.zeros_like(x)
        x = torch.zeros(2, 4, 8, 8)
        run = lambda seed: sample_zoom_stack(zero, x, torch.tensor([2.0, 1.0]), {"seed": seed}, None, True, p=2)
        assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


class TestFlowMatching:
    """Issue [M]: with flow_matching the zoom sampler takes ComfyUI's sample_euler_ancestral_RF step."""

    def test_one_level_is_euler_ancestral_rf(self):
        """One level (no blending, no pasting) = the host's RF sampler with the same noise stream (float32, 1e-5)."""
        den = TinyConvDenoiser(channels=4, seed=1, dtype=torch.float32)
        sigmas, seed = torch.tensor([1.0, 0.8, 0.55, 0.3, 0.0]), 9
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
        out = sample_zoom_stack(model_fn(den), x, sigmas, {"seed": seed}, None, True, p=2, eta=1.0, flow_matching=True)
        g, ref = torch.Generator().manual_seed(step_noise_seed(seed)), x
        for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):  # sample_euler_ancestral_RF, transcribed
            d = den(ref, torch.full((1,), s))
            if s_next == 0:
                ref = d
                break
            sigma_down = s_next * (1 + (s_next / s - 1))
            renoise = (s_next**2 - sigma_down**2 * (1 - s_next) ** 2 / (1 - sigma_down) ** 2) ** 0.5
            ref = (sigma_down / s) * ref + (1 - sigma_down / s) * d
            ref = (1 - s_next) / (1 - sigma_down) * ref + torch.randn(ref.shape, generator=g) * renoise
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    def test_stack_run_ends_on_the_flow_marginal(self):
        """8 RF steps (eta 1) of a 2-level stack from pure zoom noise at sigma 1 to 0.2 with the exact denoiser of a
        one-point data set {c} (c a rendered stack, so blending keeps it): the residual (x - 0.8 c) / 0.2 has
        variance 1 within 0.05 (32k values, 3/4 of them independent: standard error ~1 %); the SD-form step misses."""
        p, g = 2, torch.Generator().manual_seed(3)
        c = render_stack(torch.randn(2, 4, 64, 64, generator=g), p)
        x = zoom_noise((2, 4, 64, 64), p, g)
        sigmas = torch.linspace(1.0, 0.2, 9)
        ratios = {}
        for flow in (True, False):
            out = sample_zoom_stack(lambda x, s, **kw: c, x, sigmas, {"seed": 4}, None, True, p=p, eta=1.0,
                                    flow_matching=flow)
            ratios[flow] = ((out - 0.8 * c) / 0.2).var().item()
        print(f"\nzoom stack residual variance / sigma_end^2: RF step {ratios[True]:.3f}, SD-form step {ratios[False]:.3f}")
        assert abs(ratios[True] - 1) < 0.05 and abs(ratios[False] - 1) > 0.3

    def test_exception_noise_scale(self):
        with pytest.raises(VistaInputError, match="noise_scale must be >= 0"):
            sample_zoom_stack(lambda x, s: x, torch.zeros(2, 4, 8, 8), torch.ones(2), p=2, noise_scale=-1.0)


class TestZoomVideoFrames:
    def renders(self, n=3, p=2, h=16):
        layers = torch.rand(n, 3, h, h, generator=torch.Generator().manual_seed(30), dtype=torch.float64)
        return render_stack(layers, p).permute(0, 2, 3, 1)

    @pytest.mark.parametrize("n,fpl", [(1, 4), (3, 1), (3, 5)])
    def test_frame_count(self, n, fpl):
        frames = zoom_video_frames(self.renders(n), 2, fpl)
        assert frames.shape == (frame_count(n, fpl), 16, 16, 3) == ((n - 1) * fpl + 1, 16, 16, 3)

    @pytest.mark.parametrize("p,h", [(2, 16), (4, 32)])
    def test_integer_frames_are_the_renders(self, p, h):
        images = self.renders(3, p, h)
        frames = zoom_video_frames(images, p, 3)
        for k in range(3):
            torch.testing.assert_close(frames[3 * k], images[k], atol=1e-6, rtol=0)

    def test_centre_uses_deeper_level(self):
        images = torch.zeros(2, 16, 16, 1, dtype=torch.float64)
        images[1] = 1.0  # deliberately inconsistent: level 1 is white, level 0 black
        half = zoom_video_frames(images, 2, 2)[1, ..., 0]  # z = 0.5: level 1 spans 16/sqrt(2) ≈ 11 px
        assert half[8, 8] == 1 and half[7, 7] == 1 and half[0, 0] == 0 and half[1, 8] == 0

    @pytest.mark.parametrize("p,h", [(2, 32), (4, 64)])
    def test_feathered_integer_frames_are_the_renders(self, p, h):
        images = self.renders(3, p, h)
        frames = zoom_video_frames(images, p, 3, feather=h / (4 * p))
        for k in range(3):
            torch.testing.assert_close(frames[3 * k], images[k], atol=1e-6, rtol=0)

    @pytest.mark.parametrize("p", [2, 4])
    def test_feather_zero_is_the_hard_edge_video(self, p):
        """feather 0 (the previous behaviour): every pixel from the deepest level containing it."""
        n, h, fpl = 3, 32, 4
        images = torch.arange(n, dtype=torch.float64)[:, None, None, None].expand(n, h, h, 1).contiguous()
        frames = zoom_video_frames(images, p, fpl, feather=0)[..., 0]
        u = ((torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1).abs()
        radius = torch.maximum(u[:, None], u[None, :])  # |u|_inf of each pixel centre
        for f in range(frames.shape[0]):
            z = f / fpl
            inside = torch.stack([radius * p ** (k - z) <= 1 for k in range(n)])  # level k contains the pixel
            deepest = torch.where(inside, torch.arange(n)[:, None, None], -1).amax(0).clamp(min=int(z))
            torch.testing.assert_close(frames[f], deepest.double(), atol=1e-9, rtol=0)

    def test_feather_removes_the_hard_edge(self):
        """Level 1 white on black level 0: no jump larger than one ramp step at level 1's edge."""
        images = torch.zeros(2, 64, 64, 1, dtype=torch.float64)
        images[1] = 1.0
        for feather, max_step in ((0, 1.0), (8, 0.25)):
            frame = zoom_video_frames(images, 2, 4, feather=feather)[1, ..., 0]  # z = 0.25
            step = (frame[:, 1:] - frame[:, :-1]).abs().amax().item()
            assert step == pytest.approx(max_step, abs=0.1) if feather == 0 else step <= max_step

    def test_hand_over_without_jump(self):
        """As z approaches the next level, the frame approaches that level's render (no jump at the switch)."""
        images = torch.zeros(2, 64, 64, 1, dtype=torch.float64)
        images[1] = 1.0
        frames = zoom_video_frames(images, 2, 64, feather=8)
        assert (frames[-2] - frames[-1]).abs().mean() < 0.05
        assert (frames[-2] - frames[-1]).abs().mean() < 0.5 * (frames[1] - frames[0]).abs().mean() + 0.05

    def test_exception_feather(self):
        with pytest.raises(VistaInputError, match=r"feather=9 px must be in \[0, 8\] px for 64x64 px levels"):
            zoom_video_frames(torch.zeros(2, 64, 64, 3), 2, 2, feather=9)

    def test_exception_p(self):
        with pytest.raises(VistaInputError, match="zoom factor p"):
            zoom_video_frames(torch.zeros(2, 8, 8, 3), 3, 2)

    def test_exception_rank(self):
        with pytest.raises(VistaInputError, match=r"images must have shape \(N, H, W, C\)"):
            zoom_video_frames(torch.zeros(8, 8, 3), 2, 2)

    def test_exception_empty(self):
        with pytest.raises(VistaInputError, match="at least one level"):
            zoom_video_frames(torch.zeros(0, 8, 8, 3), 2, 2)

    def test_exception_frames_per_level(self):
        with pytest.raises(VistaInputError, match="frames_per_level must be >= 1, got 0"):
            zoom_video_frames(torch.zeros(2, 8, 8, 3), 2, 0)


class TestVideoBytes:
    def test_smoke(self):
        assert video_bytes(2, 3, 16, 8, 3) == (frame_count(2, 3) + WORKING_FRAMES) * 16 * 8 * 3 * 4

    def test_the_issue_example(self):
        """32 levels x 1000 frames of 512 px (issue [H] 9): 31,001 frames, 91 GiB in float32."""
        assert video_bytes(32, 1000, 512, 512, 3) == (31_001 + WORKING_FRAMES) * 512 * 512 * 3 * 4
        assert round(video_bytes(32, 1000, 512, 512, 3) / 2**30) == 91

    @pytest.mark.parametrize("n,fpl,h,w,feather,p", [(1, 5, 16, 16, 0, 2), (2, 3, 16, 16, 2, 2), (3, 4, 32, 32, 4, 2),
                                                    (4, 8, 64, 48, 6, 2), (3, 2, 64, 64, 4, 4)])
    def test_bounds_the_measured_peak(self, n, fpl, h, w, feather, p):
        """Every byte the renderer allocates is counted: the output plus at most WORKING_FRAMES frames, and the
        output is not made twice (a list of frames, then a stack of them, would be)."""
        images = torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(3))
        with PeakBytes() as meter:
            frames = zoom_video_frames(images, p, fpl, feather)
        frame = h * w * 3 * 4
        assert frames.nbytes + frame <= meter.peak <= video_bytes(n, fpl, h, w, 3) == frames.nbytes + WORKING_FRAMES * frame

    def test_exception(self):
        with pytest.raises(VistaInputError, match=r"must be >= 1, got \(2, 0, 16, 16, 3, 4\)"):
            video_bytes(2, 0, 16, 16, 3)


class TestLevelWeight:
    def test_hard_edge_at_zero_ramp(self):
        coords = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.01, 0.5], [0.5, -1.2]])
        assert level_weight(coords, 16, 16, 2, 0.0).tolist() == [1.0, 1.0, 0.0, 0.0]

    def test_ramp_in_parent_pixels(self):
        """d = (1 − |x|)·W/2 level px = that / p parent px; weight d / ramp."""
        coords = torch.tensor([[1 - 2 * 2 * 1 / 32, 0.0], [1 - 2 * 2 * 3 / 32, 0.0]])  # d = 1 and 3 parent px
        torch.testing.assert_close(level_weight(coords, 32, 32, 2, 4.0), torch.tensor([0.25, 0.75]))

    def test_matches_the_composite_ramp(self):
        """At a whole level, the video's weight of the next level is the composite's feather ramp."""
        images = torch.stack([torch.zeros(1, 32, 32), torch.ones(1, 32, 32)]).double()
        composite = composite_levels(images, 2, 4)  # level 0's centre = the ramp itself
        frame = zoom_video_frames(images.permute(0, 2, 3, 1), 2, 1, feather=4)[0, ..., 0]
        torch.testing.assert_close(frame, composite[0, 0])
