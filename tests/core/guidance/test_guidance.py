"""core/guidance/gradient.py, core/sampling/schedules.py, core/guidance/syncdiffusion.py, core/guidance/msd.py (issue [D], verification 2 and 3).

Tiny float64 stand-ins for the model and the decoder: a local conv denoiser (TinyConvDenoiser) and a
conv + nearest-upsampling decoder, so every gradient can be checked against finite differences.
"""
import functools

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vista.core.checks import VistaInputError
from vista.core.guidance.gradient import gradient_step
from vista.core.fusion.latent_fusion import LatentFusionOptions, StepContext, sample_latent_fusion
from vista.core.guidance.lpips import LPIPS_ALEX_WEIGHTS, lpips
from vista.core.guidance.msd import MultiScale, downsample, level_plans
from vista.core.sampling.schedules import cosine_weight, decayed_weight, steps_in_fraction, uniform_steps
from vista.core.guidance.syncdiffusion import SyncDiffusion, anchor_window
from vista.core.canvas.windows import crop_windows, plan_windows, window_weights

from denoisers import TinyConvDenoiser

F64 = torch.float64


class TinyDecoder(torch.nn.Module):
    """Latents (B, 4, h, w) → RGB (B, 3, 8h, 8w) in [-1, 1]: 3x3 conv, tanh, nearest x8 upsampling."""

    def __init__(self, seed=3, dtype=F64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(3, 4, 3, 3, generator=g, dtype=dtype) * 0.4)

    def forward(self, z):
        return F.interpolate(torch.tanh(F.conv2d(z, self.w.to(z), padding=1)), scale_factor=8, mode="nearest")


@functools.lru_cache(maxsize=None)
def alex_weights():
    return {k: v.to(F64) for k, v in load_file(str(LPIPS_ALEX_WEIGHTS)).items()}


def lpips_distance(images, anchors):
    return lpips(images, anchors, alex_weights())


def as_denoise(net):
    return lambda x, sigma: net(x, sigma)


def run(x, sigmas, windows, guidance=None, net=None, eta=0.0, seed=0, batch_size=3):
    net = net or TinyConvDenoiser()
    return sample_latent_fusion(lambda x, s, **kw: net(x, s), x, sigmas, {"seed": seed}, disable=True, windows=windows,
                                weights=window_weights(windows, dtype=F64), batch_size=batch_size, eta=eta,
                                guidance=guidance)


def ctx_for(windows, sigma=2.0, sigma_next=1.0, step=0, n_steps=10):
    opts = LatentFusionOptions(tuple(windows), window_weights(windows, dtype=F64))
    return StepContext(torch.tensor(sigma, dtype=F64), torch.tensor(sigma_next, dtype=F64), step, n_steps, opts)


def finite_difference_grad(loss, x, eps=1e-6, coords=8, seed=0):
    """Central differences of sum(loss) at ``coords`` random coordinates of x."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.numel(), (coords,), generator=g)
    out = []
    for i in idx.tolist():
        e = torch.zeros_like(x).flatten()
        e[i] = eps
        e = e.view_as(x)
        out.append(((loss(x + e).sum() - loss(x - e).sum()) / (2 * eps)).item())
    return idx, torch.tensor(out, dtype=F64)


class TestSchedules:
    def test_steps_in_fraction_integer_exact(self):
        for hundredths in range(101):
            for n in (1, 7, 25, 50, 99, 150):
                assert steps_in_fraction(hundredths / 100, n) == (hundredths * n + 50) // 100

    def test_uniform_steps(self):
        assert uniform_steps(50, 50) == frozenset(range(50))
        assert sorted(uniform_steps(10, 50)) == list(range(0, 50, 5))
        assert uniform_steps(0, 50) == frozenset() and uniform_steps(80, 20) == frozenset(range(20))

    def test_weights(self):
        assert decayed_weight(20.0, 0.95, 0) == 20.0 and abs(decayed_weight(20.0, 0.95, 2) - 18.05) < 1e-12
        assert cosine_weight(10.0, 0, 50) == 10.0 and abs(cosine_weight(10.0, 50, 50)) < 1e-12

    @pytest.mark.parametrize("call, match", [(lambda: steps_in_fraction(1.5, 10), "fraction"),
                                             (lambda: uniform_steps(-1, 10), "count"),
                                             (lambda: cosine_weight(1.0, 0, 0), "n_steps")])
    def test_exception(self, call, match):
        with pytest.raises(VistaInputError, match=match):
            call()


class TestGradientStep:
    def test_matches_finite_differences(self):
        net = TinyConvDenoiser()
        x = torch.randn(3, 4, 8, 8, dtype=F64)
        loss = lambda x: net(x, torch.full((3,), 1.5, dtype=F64)).square().flatten(1).mean(1)
        moved = gradient_step(x, loss, 0.5)
        idx, fd = finite_difference_grad(loss, x)
        torch.testing.assert_close(((x - moved) / 0.5).flatten()[idx], fd, rtol=1e-6, atol=1e-9)

    def test_per_row_weight_and_inference_tensors(self):
        """Works on inference tensors under inference mode (as inside ComfyUI); weight 0 leaves a row."""
        with torch.inference_mode():
            x = torch.randn(2, 3, dtype=F64)
            moved = gradient_step(x, lambda x: x.square().sum(1), torch.tensor([0.0, 0.5]))
        assert torch.equal(moved[0], x[0]) and torch.allclose(moved[1], x[1] * 0.0)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="one value per row"):
            gradient_step(torch.zeros(2, 3), lambda x: x.sum(), 1.0)
        with pytest.raises(VistaInputError, match="weight"):
            gradient_step(torch.zeros(2, 3), lambda x: x.sum(1), torch.ones(3))


class TestAnchorWindow:
    def test_centre_of_the_paper_panorama(self):
        windows = plan_windows(64, 384, 64, 64, 16, 16)
        assert len(windows) == 21 and anchor_window(windows, (64, 384)) == 10

    def test_2d(self):
        windows = plan_windows(32, 32, 16, 16, 8, 8)
        assert windows[anchor_window(windows, (32, 32))] == windows[4]


def sync(windows, canvas_hw, weight=20.0, **kw):
    return SyncDiffusion(as_denoise(TinyConvDenoiser()), TinyDecoder(), lpips_distance, anchor_window(windows, canvas_hw),
                         weight=weight, **kw)


class TestSyncDiffusion:
    windows = plan_windows(8, 24, 8, 8, 4, 4)
    sigmas = torch.tensor([3.0, 2.0, 1.2, 0.6, 0.0], dtype=F64)

    def canvas(self, seed=0, batch=2):
        return torch.randn(batch, 4, 8, 24, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3.0

    def test_weight_zero_is_exactly_unguided(self):
        x = self.canvas()
        assert torch.equal(run(x, self.sigmas, self.windows, sync(self.windows, (8, 24), weight=0.0)),
                           run(x, self.sigmas, self.windows))

    def test_gradient_matches_finite_differences(self):
        """Eq. 14's gradient (through denoiser, decoder and LPIPS), float64, against central differences."""
        guidance = sync(self.windows, (8, 24))
        x = self.canvas(batch=1)
        ctx = ctx_for(self.windows)
        state = guidance.begin_step(x, ctx)
        chunk = self.windows[:2]  # the anchor (index 2) is not in it
        x_w = crop_windows(x, chunk)
        sigma = ctx.sigma * x_w.new_ones(x_w.shape[0])
        anchors = state.anchor_image.repeat(2, 1, 1, 1)
        loss = lambda x: lpips_distance(guidance.decode(guidance.denoise(x, sigma)), anchors)
        moved = guidance.guide(x_w, chunk, ctx, state)
        idx, fd = finite_difference_grad(loss, x_w)
        torch.testing.assert_close(((x_w - moved) / state.weight).flatten()[idx], fd, rtol=1e-5, atol=1e-9)

    def test_batched_equals_window_by_window_and_anchor_fixed(self):
        guidance = sync(self.windows, (8, 24))
        x = self.canvas()
        ctx = ctx_for(self.windows)
        state = guidance.begin_step(x, ctx)
        together = guidance.guide(crop_windows(x, self.windows), self.windows, ctx, state)
        alone = torch.cat([guidance.guide(crop_windows(x, [w]), [w], ctx, state) for w in self.windows])
        torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)
        a = guidance.anchor
        assert torch.equal(together[2 * a : 2 * a + 2], crop_windows(x, [self.windows[a]]))
        assert not torch.allclose(together[:2], crop_windows(x, self.windows[:1]))

    def test_unguided_steps_and_decay(self):
        guidance = sync(self.windows, (8, 24), guided_steps=2)
        x = self.canvas()
        states = [guidance.begin_step(x, ctx_for(self.windows, step=i, n_steps=10)) for i in range(10)]
        assert [s is not None for s in states] == [i in (0, 5) for i in range(10)]
        assert states[5].weight == pytest.approx(20.0 * 0.95**5)

    def test_lowers_lpips_to_the_anchor_over_a_run(self):
        """Verification 3: mean LPIPS of every window's final decoded image to the anchor's, w = 20 vs w = 0
        (mean over 4 seeds; printed for the closing note)."""
        windows, hw = plan_windows(8, 40, 8, 8, 4, 4), (8, 40)
        sigmas = torch.tensor([4.0, 2.5, 1.5, 0.8, 0.3, 0.0], dtype=F64)
        decoder, a = TinyDecoder(), anchor_window(windows, hw)
        scores = {}
        for w in (0.0, 20.0):
            per_seed = []
            for seed in range(4):
                x = torch.randn(1, 4, 8, 40, generator=torch.Generator().manual_seed(seed), dtype=F64) * 4.0
                out = run(x, sigmas, windows, sync(windows, hw, weight=w))
                images = decoder(crop_windows(out, windows))
                per_seed.append(lpips_distance(images, images[a : a + 1]).sum().item() / (len(windows) - 1))
            scores[w] = sum(per_seed) / len(per_seed)
        print(f"\nSyncDiffusion tiny model: mean LPIPS to the anchor, w=0: {scores[0.0]:.4f}, w=20: {scores[20.0]:.4f}")
        assert scores[20.0] < scores[0.0]


def msd(plans, weight=10.0, **kw):
    return MultiScale(as_denoise(TinyConvDenoiser()), plans, weight=weight, batch_size=3, **kw)


class TestMultiScale:
    plans = level_plans((16, 32), (8, 8), (4, 4), 2, device=None)
    sigmas = torch.tensor([3.0, 2.0, 1.2, 0.6, 0.3, 0.0], dtype=F64)

    def canvas(self, seed=0, batch=2):
        return torch.randn(batch, 4, 16, 32, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3.0

    def test_downsample_is_2x2_average(self):
        z = torch.randn(2, 3, 8, 12, dtype=F64)
        torch.testing.assert_close(downsample(z), F.avg_pool2d(z, 2))

    def test_level_plans(self):
        plans = level_plans((32, 64), (8, 8), (4, 4), 3)
        assert [p.canvas_hw for p in plans] == [(32, 64), (16, 32), (8, 16)]
        assert all(w.x % 2 == 0 and w.y % 2 == 0 for p in plans[:-1] for w in p.windows)
        with pytest.raises(VistaInputError, match="smaller than the 8x8 window"):
            level_plans((16, 64), (8, 8), (4, 4), 3)
        with pytest.raises(VistaInputError, match="divisible by 2"):
            level_plans((18, 66), (8, 8), (4, 4), 3)

    def test_weight_zero_is_exactly_unguided(self):
        x = self.canvas()
        w0 = self.plans[0].windows
        assert torch.equal(run(x, self.sigmas, w0, msd(self.plans, weight=0.0)), run(x, self.sigmas, w0))

    def test_gradient_matches_finite_differences(self):
        guidance = msd(self.plans)
        x = self.canvas(batch=1)
        ctx = ctx_for(self.plans[0].windows)
        state = guidance.begin_step(x, ctx)
        chunk = self.plans[0].windows[:3]
        x_w = crop_windows(x, chunk)
        targets = crop_windows(state.target, [type(w)(w.y // 2, w.x // 2, w.h // 2, w.w // 2) for w in chunk])
        sigma = ctx.sigma * x_w.new_ones(x_w.shape[0])

        def loss(x):
            d = guidance.denoise(x, sigma)
            phi = d + (1.0 / 2.0) * (x - d)
            return (downsample(phi) - targets).square().flatten(1).mean(1)

        moved = guidance.guide(x_w, chunk, ctx, state)
        idx, fd = finite_difference_grad(loss, x_w)
        torch.testing.assert_close(((x_w - moved) / state.weight).flatten()[idx], fd, rtol=1e-6, atol=1e-10)

    def test_batched_equals_window_by_window(self):
        guidance = msd(self.plans)
        x = self.canvas()
        ctx = ctx_for(self.plans[0].windows)
        state = guidance.begin_step(x, ctx)
        windows = self.plans[0].windows
        together = guidance.guide(crop_windows(x, windows), windows, ctx, state)
        alone = torch.cat([guidance.guide(crop_windows(x, [w]), [w], ctx, state) for w in windows])
        torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)

    def test_guided_only_in_the_first_30_percent_with_cosine_weight(self):
        guidance = msd(self.plans)
        x = self.canvas()
        states = [guidance.begin_step(x, ctx_for(self.plans[0].windows, step=i, n_steps=10)) for i in range(10)]
        assert [s is not None for s in states] == [True] * 3 + [False] * 7
        assert states[1].weight == pytest.approx(cosine_weight(10.0, 1, 10))

    def test_three_levels_and_variance_preserving_run(self):
        plans = level_plans((32, 64), (8, 8), (4, 4), 3)
        x = torch.randn(1, 4, 32, 64, generator=torch.Generator().manual_seed(1), dtype=F64) * 3.0
        for vp in (False, True):
            guidance = msd(plans, variance_preserving=vp, generator=torch.Generator().manual_seed(0))
            out = run(x, self.sigmas, plans[0].windows, guidance)
            assert torch.isfinite(out).all()

    def test_exception(self):
        with pytest.raises(VistaInputError, match="at least 2"):
            msd(self.plans[:1])

    def test_lowers_the_multiscale_error_over_a_run(self):
        """Verification 3: MSE between the downsampled final canvas and a MultiDiffusion run of the low-resolution
        level from the downsampled initial noise (the layout MSD pulls toward), omega = 10 (paper) and 200 vs 0,
        all steps guided (fraction 1), mean over 4 seeds; printed for the closing note."""
        plans = level_plans((16, 48), (8, 8), (4, 4), 2)
        sigmas = torch.tensor([4.0, 2.5, 1.5, 0.8, 0.3, 0.0], dtype=F64)
        errors = {}
        for weight in (0.0, 10.0, 200.0):
            per_seed = []
            for seed in range(4):
                x = torch.randn(1, 4, 16, 48, generator=torch.Generator().manual_seed(seed), dtype=F64) * 4.0
                out = run(x, sigmas, plans[0].windows, msd(plans, weight=weight, fraction=1.0))
                low = run(downsample(x), sigmas, plans[1].windows)
                per_seed.append((downsample(out) - low).square().mean().item())
            errors[weight] = sum(per_seed) / len(per_seed)
        print(f"\nMSD tiny model: multi-scale MSE, omega 0: {errors[0.0]:.5f}, 10: {errors[10.0]:.5f}, 200: {errors[200.0]:.5f}")
        assert errors[200.0] < errors[10.0] < errors[0.0]
