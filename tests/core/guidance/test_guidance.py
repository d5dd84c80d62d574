"""core/guidance/gradient.py, core/sampling/schedules.py, core/guidance/syncdiffusion.py, core/guidance/msd.py (issue [D], verification 2 and 3).

Tiny float64 stand-ins for the model and the decoder: a local conv denoiser (TinyConvDenoiser) and a
conv + nearest-upsampling decoder, so every gradient can be checked against finite differences.
Issue [H] items 1, 2, 5: both guidance steps are the papers' steps on the DDPM latent ``x_t = x_σ / s(σ)``
(checked by finite differences in ``x_t`` and, for eps, v and flow models, against closed-form gradients of
a linear toy model: :class:`TestPaperSpace`); SyncDiffusion's sparse guided steps are the official code's.
"""
import functools

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from vista.core.checks import VistaInputError
from vista.core.guidance.gradient import ddpm_scale, gradient_step, paper_space_step
from vista.core.fusion.latent_fusion import LatentFusionOptions, StepContext, sample_latent_fusion
from vista.core.guidance.lpips import LPIPS_ALEX_WEIGHTS, lpips
from vista.core.guidance.msd import MultiScale, MultiScaleState, downsample, level_plans
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


def ctx_for(windows, sigma=2.0, sigma_next=1.0, step=0, n_steps=10, flow_matching=False):
    opts = LatentFusionOptions(tuple(windows), window_weights(windows, dtype=F64), flow_matching=flow_matching)
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
        """[H] item 5: 10 of 50 are the official code's steps 4, 9, …, 49 (was 0, 5, …, 45 before)."""
        assert uniform_steps(50, 50) == frozenset(range(50))
        assert sorted(uniform_steps(10, 50)) == list(range(4, 50, 5))
        assert sorted(uniform_steps(5, 50)) == list(range(9, 50, 10))
        assert uniform_steps(0, 50) == frozenset() and uniform_steps(80, 20) == frozenset(range(20))

    def test_convention_uniform_steps_are_the_official_period(self):
        """Where f divides n, step i is guided iff (i + 1) % (n / f) == 0 (official SyncDiffusion, sync_freq);
        for any f <= n: exactly f steps, spread uniformly, the last step among them."""
        for n in range(1, 61):
            for count in range(1, n + 1):
                steps = uniform_steps(count, n)
                assert len(steps) == count and max(steps) == n - 1
                if n % count == 0:
                    period = n // count
                    assert steps == frozenset(i for i in range(n) if (i + 1) % period == 0)

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


class TestDdpmScale:
    def test_eps_v_is_one_over_sqrt_alpha_bar(self):
        """x_sigma = x_t / sqrt(alpha_bar) with sigma = sqrt((1 - alpha_bar) / alpha_bar) (SD's scaled-linear schedule)."""
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=F64) ** 2
        alpha_bar = torch.cumprod(1 - betas, 0)
        for t in (0, 1, 500, 981, 999):
            sigma = ((1 - alpha_bar[t]) / alpha_bar[t]).sqrt().item()
            assert ddpm_scale(sigma) == pytest.approx(alpha_bar[t].item() ** -0.5, rel=1e-12)

    def test_flow_latent_has_unit_variance(self):
        """x_t = x / s = a x0 + b eps with a² + b² = 1 for the flow latent x = (1 − sigma) x0 + sigma eps."""
        for sigma in (0.0, 0.1, 0.5, 0.9, 1.0):
            s = ddpm_scale(sigma, flow_matching=True)
            assert ((1 - sigma) / s) ** 2 + (sigma / s) ** 2 == pytest.approx(1.0, rel=1e-12)

    @pytest.mark.parametrize("call, match", [(lambda: ddpm_scale(-1.0), "sigma must be >= 0"),
                                             (lambda: paper_space_step(torch.zeros(1, 2), lambda x: x.sum(1), 1.0, 0.0),
                                              "scale must be > 0")])
    def test_exception(self, call, match):
        with pytest.raises(VistaInputError, match=match):
            call()


GAIN = 0.3
PARAMETERISATIONS = {  # name: (flow_matching, sigma, sigma_next)
    "eps": (False, 2.0, 1.0),
    "v": (False, 3.0, 1.5),
    "flow": (True, 0.7, 0.5),
}


def linear_denoiser(param: str):
    """``denoise(x, sigma) -> x0`` of a linear toy network written in the parameterisation's own form (ComfyUI's
    EPS, V_PREDICTION and CONST ``calculate_input``/``calculate_denoised``): the network output is GAIN times its
    input. So x0 = m(sigma) · x with the closed form :func:`linear_gain`."""

    def denoise(x, sigma):
        s = sigma.reshape(-1, 1, 1, 1).to(x)
        if param == "eps":  # eps_hat = GAIN · x / sqrt(1 + s²); x0 = x − s · eps_hat
            return x - s * (GAIN * x / (1 + s**2).sqrt())
        if param == "v":  # v_hat = GAIN · x / sqrt(1 + s²); x0 = x / (1 + s²) − v_hat · s / sqrt(1 + s²)
            return x / (1 + s**2) - (GAIN * x / (1 + s**2).sqrt()) * s / (1 + s**2).sqrt()
        return x - s * (GAIN * x)  # flow: v_hat = GAIN · x; x0 = x − s · v_hat

    return denoise


def linear_gain(param: str, sigma: float) -> float:
    if param == "eps":
        return 1 - sigma * GAIN / (1 + sigma**2) ** 0.5
    if param == "v":
        return (1 - GAIN * sigma) / (1 + sigma**2)
    return 1 - sigma * GAIN


class TestPaperSpace:
    """[H] items 1 and 2: the moved latent, mapped to the paper's x_t, equals x_t − w ∇_{x_t} L with the gradient in
    closed form (a linear toy model, identity decoder, squared-error loss), for eps, v and flow models."""

    def test_paper_space_step_closed_form(self):
        x = torch.randn(3, 4, dtype=F64)
        target = torch.randn(3, 4, dtype=F64)
        s, w = 2.5, 0.2
        moved = paper_space_step(x, lambda x: (x / s - target).square().sum(1), w, s)  # L(x_t) = |x_t − target|²
        torch.testing.assert_close(moved / s, x / s - w * 2 * (x / s - target), rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("param", PARAMETERISATIONS)
    def test_syncdiffusion_step(self, param):
        flow, sigma, sigma_next = PARAMETERISATIONS[param]
        windows, hw = plan_windows(8, 24, 8, 8, 4, 4), (8, 24)
        guidance = SyncDiffusion(linear_denoiser(param), lambda z: z, lambda a, b: (a - b).square().flatten(1).sum(1),
                                 anchor_window(windows, hw), weight=20.0)
        x = torch.randn(1, 4, 8, 24, generator=torch.Generator().manual_seed(3), dtype=F64) * 2
        ctx = ctx_for(windows, sigma, sigma_next, step=3, n_steps=10, flow_matching=flow)
        state = guidance.begin_step(x, ctx)
        x_w = crop_windows(x, windows)
        moved = guidance.guide(x_w, windows, ctx, state)

        s, m, w = ddpm_scale(sigma, flow), linear_gain(param, sigma), 20.0 * 0.95**3
        x_t, anchor_image = x_w / s, m * crop_windows(x, [windows[guidance.anchor]])
        grad_t = 2 * m * s * (m * s * x_t - anchor_image)  # ∇_{x_t} |m s x_t − anchor|²
        expected = x_t - w * grad_t
        expected[guidance.anchor] = x_t[guidance.anchor]  # the anchor does not move
        torch.testing.assert_close(moved / s, expected, rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("param", PARAMETERISATIONS)
    def test_multiscale_step(self, param):
        flow, sigma, sigma_next = PARAMETERISATIONS[param]
        plans = level_plans((16, 32), (8, 8), (4, 4), 2)
        guidance = MultiScale(linear_denoiser(param), plans, weight=10.0, batch_size=3)
        target = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(4), dtype=F64)
        x = torch.randn(1, 4, 16, 32, generator=torch.Generator().manual_seed(5), dtype=F64) * 2
        chunk = plans[0].windows[:3]
        ctx = ctx_for(plans[0].windows, sigma, sigma_next, flow_matching=flow)
        moved = guidance.guide(crop_windows(x, chunk), chunk, ctx, MultiScaleState(target, 7.0))

        s, s_next = ddpm_scale(sigma, flow), ddpm_scale(sigma_next, flow)
        m = linear_gain(param, sigma)
        phi = m + (sigma_next / sigma) * (1 - m)  # the one-step result is phi · x (deterministic step)
        x_t = crop_windows(x, chunk) / s
        targets_t = crop_windows(target, [type(w)(w.y // 2, w.x // 2, w.h // 2, w.w // 2) for w in chunk]) / s_next
        residual = F.avg_pool2d(phi * s * x_t, 2) / s_next - targets_t
        n = residual[0].numel()
        grad_t = (2 / n) * (phi * s / s_next) * residual.repeat_interleave(2, -2).repeat_interleave(2, -1) / 4
        torch.testing.assert_close(moved / s, x_t - 7.0 * grad_t, rtol=1e-10, atol=1e-10)

    def test_multiscale_intermediate_levels_keep_the_noise_form(self):
        """With 3 levels the middle level is guided too; its step is taken with the model's noise form (the
        flow flag reaches the low-resolution steps), so eps and flow targets differ there, not at 2 levels."""
        x = torch.randn(1, 4, 32, 64, generator=torch.Generator().manual_seed(6), dtype=F64)
        targets = {}
        for levels in (2, 3):
            plans = level_plans((32, 64), (8, 8), (4, 4), levels)
            guidance = msd(plans, weight=50.0)
            for flow in (False, True):
                ctx = ctx_for(plans[0].windows, 0.7, 0.5, flow_matching=flow)
                targets[levels, flow] = guidance.begin_step(x, ctx).target
        assert torch.equal(targets[2, False], targets[2, True])
        assert (targets[3, False] - targets[3, True]).abs().max().item() > 1e-3


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

    @pytest.mark.parametrize("flow_matching, sigma", [(False, 2.0), (True, 0.7)])
    def test_gradient_matches_finite_differences(self, flow_matching, sigma):
        """Eq. 14's step (through denoiser, decoder and LPIPS), float64, against central differences of the loss
        as a function of the paper's DDPM latent x_t = x / s(sigma): x_t − moved_t = w ∇_{x_t} L ([H] item 1;
        before, the step was w ∇_{x_sigma} L, i.e. 1/s² of this)."""
        guidance = sync(self.windows, (8, 24))
        x = self.canvas(batch=1)
        ctx = ctx_for(self.windows, sigma=sigma, sigma_next=sigma / 2, flow_matching=flow_matching)
        state = guidance.begin_step(x, ctx)
        chunk = self.windows[:2]  # the anchor (index 2) is not in it
        x_w = crop_windows(x, chunk)
        sigmas = ctx.sigma * x_w.new_ones(x_w.shape[0])
        anchors = state.anchor_image.repeat(2, 1, 1, 1)
        s = ddpm_scale(sigma, flow_matching)
        loss_t = lambda x_t: lpips_distance(guidance.decode(guidance.denoise(s * x_t, sigmas)), anchors)
        moved = guidance.guide(x_w, chunk, ctx, state)
        idx, fd = finite_difference_grad(loss_t, x_w / s)
        torch.testing.assert_close(((x_w - moved) / s / state.weight).flatten()[idx], fd, rtol=1e-5, atol=1e-9)

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
        """[H] item 5: 2 of 10 guided steps are 4 and 9 (the official code's sync_freq 5), weighted w·0.95^i."""
        guidance = sync(self.windows, (8, 24), guided_steps=2)
        x = self.canvas()
        states = [guidance.begin_step(x, ctx_for(self.windows, step=i, n_steps=10)) for i in range(10)]
        assert [s is not None for s in states] == [i in (4, 9) for i in range(10)]
        assert states[4].weight == pytest.approx(20.0 * 0.95**4) and states[9].weight == pytest.approx(20.0 * 0.95**9)

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

    @pytest.mark.parametrize("flow_matching, sigma, sigma_next", [(False, 2.0, 1.0), (True, 0.7, 0.35)])
    def test_gradient_matches_finite_differences(self, flow_matching, sigma, sigma_next):
        """Eq. 9 in the paper's space on both sides ([H] item 2): the one-step result and the target are DDPM
        latents at t − 1 (divided by s(sigma_next)), the step moves x_t = x / s(sigma); central differences."""
        guidance = msd(self.plans)
        x = self.canvas(batch=1)
        ctx = ctx_for(self.plans[0].windows, sigma=sigma, sigma_next=sigma_next, flow_matching=flow_matching)
        state = guidance.begin_step(x, ctx)
        chunk = self.plans[0].windows[:3]
        x_w = crop_windows(x, chunk)
        targets = crop_windows(state.target, [type(w)(w.y // 2, w.x // 2, w.h // 2, w.w // 2) for w in chunk])
        sigmas = ctx.sigma * x_w.new_ones(x_w.shape[0])
        s, s_next = ddpm_scale(sigma, flow_matching), ddpm_scale(sigma_next, flow_matching)

        def loss_t(x_t):
            x = s * x_t
            d = guidance.denoise(x, sigmas)
            phi = d + (sigma_next / sigma) * (x - d)
            return (downsample(phi) / s_next - targets / s_next).square().flatten(1).mean(1)

        moved = guidance.guide(x_w, chunk, ctx, state)
        idx, fd = finite_difference_grad(loss_t, x_w / s)
        torch.testing.assert_close(((x_w - moved) / s / state.weight).flatten()[idx], fd, rtol=1e-6, atol=1e-10)

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
