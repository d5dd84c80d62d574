"""core/fusion/latent_fusion.py: per-window steps fused on the canvas; DDIM = prediction fusion; VCF keeps the variance."""

import pytest
import torch

from vista.core.checks import VistaInputError
from vista.core.sampling.flow_matching import rf_step
from vista.core.fusion.latent_fusion import (
    LatentFusionOptions,
    ancestral_mean,
    denoise_windows,
    get_ancestral_step,
    latent_fusion_step,
    sample_latent_fusion,
    window_noise,
)
from vista.core.canvas.multidiffusion import multidiffusion_predict
from vista.core.sampling.noise_streams import step_noise_seed
from vista.core.canvas.windows import Window, crop_windows, plan_windows, total_weight, window_weights

from denoisers import TinyConvDenoiser, euler

F64 = torch.float64


def as_model(denoise):
    """A k-diffusion style model: ``model(x, sigma, **extra_args)``; extra_args (seed, …) are ignored."""
    return lambda x, sigma, **extra: denoise(x, sigma)


def zeros_model(x, sigma, **extra):
    return torch.zeros_like(x)


def run(x, sigmas, windows, weights=None, **kw):
    weights = window_weights(windows, dtype=x.dtype) if weights is None else weights
    model = kw.pop("model", as_model(TinyConvDenoiser()))
    return sample_latent_fusion(model, x, sigmas, kw.pop("extra_args", None), kw.pop("callback", None), True, windows=windows, weights=weights, **kw)


def euler_ancestral(denoise, x, sigmas, eta, seed):
    """k-diffusion's sample_euler_ancestral on the whole canvas, noise from Vista's step stream for ``seed``."""
    g = torch.Generator().manual_seed(step_noise_seed(seed))
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = denoise(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        up = min(s_next, eta * (s_next**2 * (s**2 - s_next**2) / s**2) ** 0.5)
        down = (s_next**2 - up**2) ** 0.5
        x = d + (down / s) * (x - d)
        if up > 0:
            x = x + torch.randn(x.shape, generator=g, dtype=x.dtype) * up
    return x


class TestGetAncestralStep:
    def test_smoke(self):
        down, up = get_ancestral_step(3.0, 2.0, 1.0)
        assert 0 < down < 2.0 and 0 < up < 2.0

    def test_deterministic_when_eta_zero(self):
        assert get_ancestral_step(3.0, 2.0, 0.0) == (2.0, 0.0)

    @pytest.mark.parametrize("eta", [0.3, 1.0, 5.0])
    def test_down_and_up_make_sigma_to(self, eta):
        down, up = get_ancestral_step(3.0, 2.0, eta)
        assert down**2 + up**2 == pytest.approx(4.0)

    def test_to_zero(self):
        assert get_ancestral_step(1.0, 0.0, 1.0) == (0.0, 0.0)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="eta must be >= 0"):
            get_ancestral_step(2.0, 1.0, -0.1)


class TestAncestralMean:
    def test_shape_and_endpoints(self):
        x, d = torch.randn(6, 4, 8, 8), torch.randn(6, 4, 8, 8)
        assert ancestral_mean(x, d, 2.0, 1.0).shape == x.shape
        assert torch.equal(ancestral_mean(x, d, 2.0, 0.0), d)
        torch.testing.assert_close(ancestral_mean(x, d, 2.0, 2.0), x)


class TestWindowNoise:
    def test_shape(self):
        assert window_noise(torch.Generator().manual_seed(0), torch.zeros(6, 4, 2, 3, dtype=F64), 3).dtype == F64

    def test_independent_of_batching(self):
        """Drawing windows 0-1 then 2-3 gives each window the noise a single draw of 0-3 gives it."""
        like = torch.zeros(2 * 4, 1, 2, 2)
        whole = window_noise(torch.Generator().manual_seed(1), like, 4).view(4, 2, 1, 2, 2)  # (window, sample)
        g = torch.Generator().manual_seed(1)
        parts = [window_noise(g, like[:4], 2).view(2, 2, 1, 2, 2) for _ in range(2)]
        assert torch.equal(torch.cat(parts, dim=0), whole)

    def test_exception(self):
        with pytest.raises(VistaInputError, match="multiple of n=4"):
            window_noise(torch.Generator(), torch.zeros(6, 1, 2, 2), 4)


class TestDenoiseWindows:
    def test_shape_and_guide_before_the_model(self):
        seen = []

        def model(x_w, sigma, **kw):
            seen.append(x_w.clone())
            return x_w * 0

        x, chunk = torch.randn(2, 4, 8, 16), plan_windows(8, 16, 8, 8, 8, 8)
        x_w, d_w = denoise_windows(model, x, torch.tensor(2.0), chunk, {}, lambda x_w: x_w + 1)
        assert x_w.shape == d_w.shape == (4, 4, 8, 8) and not d_w.any()
        assert torch.equal(seen[0], crop_windows(x, chunk) + 1) and torch.equal(x_w, seen[0])


class TestLatentFusionStep:
    def test_smoke(self):
        windows = plan_windows(8, 20, 8, 8, 4, 4)
        opts = LatentFusionOptions(windows, window_weights(windows, dtype=F64), eta=1.0)
        x = torch.randn(1, 4, 8, 20, dtype=F64)
        x_next, denoised = latent_fusion_step(zeros_model, x, torch.tensor(2.0), torch.tensor(1.0), {}, opts, torch.Generator())
        assert x_next.shape == denoised.shape == x.shape and x_next.dtype == F64 and not denoised.any()


class TestSampleLatentFusion:
    sigmas = torch.tensor([6.0, 3.0, 1.5, 0.5, 0.0], dtype=F64)

    def canvas(self, seed=0, shape=(1, 4, 16, 40)):
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * 6.0

    def test_smoke_callback(self):
        calls = []
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        out = run(self.canvas(), self.sigmas, windows, callback=calls.append, eta=1.0)
        assert out.shape == (1, 4, 16, 40) and out.dtype == F64
        assert [c["i"] for c in calls] == [0, 1, 2, 3]
        assert all(set(c) == {"x", "i", "sigma", "sigma_hat", "denoised"} and c["denoised"].shape == out.shape for c in calls)
        assert torch.equal(out, calls[-1]["denoised"])  # the last step to sigma 0 returns the fused denoised

    def test_before_batch_per_window_batch(self):
        calls = []
        windows = plan_windows(16, 40, 16, 16, 8, 8)  # 4 windows
        run(self.canvas(), self.sigmas, windows, batch_size=3, before_batch=lambda: calls.append(1))
        assert len(calls) == 2 * (len(self.sigmas) - 1)

    def test_guidance_runs_canvas_work_once_then_moves_every_batch(self):
        """The Guidance protocol: begin_step once per step (canvas level), guide once per window batch before
        the model call; the sampler runs under no_grad (like k-diffusion) and a guidance enables grad itself."""
        calls = []

        class Shrink:
            def begin_step(self, x, ctx):
                calls.append(("begin", ctx.step))
                return 0.01

            def guide(self, x_w, chunk, ctx, state):
                calls.append(("guide", len(chunk)))
                with torch.enable_grad():
                    z = x_w.detach().requires_grad_()
                    (grad,) = torch.autograd.grad((z**2).sum(), z)
                return x_w - state * grad

        windows = plan_windows(16, 40, 16, 16, 8, 8)
        out = run(self.canvas(), self.sigmas, windows, batch_size=2, guidance=Shrink())
        assert out.isfinite().all()
        assert calls[:3] == [("begin", 0), ("guide", 2), ("guide", 2)] and calls.count(("begin", 1)) == 1

    @pytest.mark.parametrize("mode,wrap,batch_size", [("uniform", False, 1), ("guided", False, 3), ("guided", True, 2), ("gaussian", True, 3)])
    def test_deterministic_equals_prediction_fusion(self, mode, wrap, batch_size):
        """Invariant 2: eta = 0 latent fusion = euler on the multidiffusion_predict-fused denoiser."""
        net = TinyConvDenoiser()
        x = self.canvas()
        windows = plan_windows(16, 40, 16, 16, 8, 12, wrap_x=wrap)
        weights = window_weights(windows, mode, dtype=F64)
        out = run(x, self.sigmas, windows, weights, model=as_model(net), batch_size=batch_size)
        fused = lambda x, s: multidiffusion_predict(lambda c, ch: net(c, s[:1].repeat(c.shape[0])), x, windows, weights, batch_size)
        torch.testing.assert_close(out, euler(fused, x, self.sigmas), rtol=1e-10, atol=1e-10)

    @pytest.mark.parametrize("vcf", [False, True])
    def test_one_window_is_plain_ancestral_sampler(self, vcf):
        net = TinyConvDenoiser()
        x = self.canvas(shape=(2, 4, 16, 16))
        out = run(x, self.sigmas, plan_windows(16, 16, 16, 16, 8, 8), model=as_model(net), eta=1.0, variance_corrected=vcf, extra_args={"seed": 7})
        torch.testing.assert_close(out, euler_ancestral(net, x, self.sigmas, 1.0, 7), rtol=1e-10, atol=1e-10)

    def test_disjoint_weighted_vcf_is_plain_step(self):
        """Invariant 4: with one (guided-weight) window per pixel VCF changes nothing."""
        windows = plan_windows(16, 48, 16, 16, 16, 16, wrap_x=True)
        weights = window_weights(windows, "guided", dtype=F64)
        x = self.canvas(shape=(1, 4, 16, 48))
        with_vcf = run(x, self.sigmas, windows, weights, eta=1.0, variance_corrected=True)
        without = run(x, self.sigmas, windows, weights, eta=1.0, variance_corrected=False)
        torch.testing.assert_close(with_vcf, without, rtol=1e-10, atol=1e-10)

    def test_same_seed_same_output_any_batch_size(self):
        windows = plan_windows(16, 40, 16, 16, 8, 8, wrap_x=True)
        x = self.canvas()
        a = run(x, self.sigmas, windows, eta=1.0, extra_args={"seed": 3}, batch_size=1)
        b = run(x, self.sigmas, windows, eta=1.0, extra_args={"seed": 3}, batch_size=4)
        c = run(x, self.sigmas, windows, eta=1.0, extra_args={"seed": 4}, batch_size=4)
        assert torch.equal(a, run(x, self.sigmas, windows, eta=1.0, extra_args={"seed": 3}, batch_size=1))
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(a, c)

    def test_seed_none_is_zero(self):
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        x = self.canvas()
        assert torch.equal(run(x, self.sigmas, windows, eta=1.0, extra_args={"seed": None}), run(x, self.sigmas, windows, eta=1.0))

    @pytest.mark.parametrize("mode", ["uniform", "guided"])
    def test_one_step_variance(self, mode):
        """Invariant 1: one stochastic step of a zero denoiser from a fixed canvas.

        Every window's step is ``x_i' = (sigma_down/sigma) x_i + sigma_up eps_i``. Over B = 4000
        samples, the per-pixel variance is ``sigma_up^2 sum w^2 / W^2`` without VCF
        (``sigma_up^2 / n`` for n uniform windows over the pixel: here n = 1, 2, 4) and ``sigma_up^2``
        with VCF. Tolerance: 12 % relative per pixel (> 5 standard errors of a variance over 4000
        samples, sqrt(2/3999) = 2.2 %); the mean must stay ``(sigma_down/sigma) x`` within
        0.07 (> 5 standard errors sigma_up / sqrt(4000) = 0.014).
        """
        B, sigma, sigma_next = 4000, 2.0, 1.0
        windows = plan_windows(12, 20, 8, 8, 4, 4)
        weights = window_weights(windows, mode, dtype=F64)
        x = torch.randn(1, 1, 12, 20, dtype=F64).repeat(B, 1, 1, 1) * sigma
        down, up = get_ancestral_step(sigma, sigma_next, 1.0)
        W, W2 = total_weight(windows, weights, 12, 20), total_weight(windows, weights**2, 12, 20)
        sigmas = torch.tensor([sigma, sigma_next], dtype=F64)
        if mode == "uniform":
            assert set(W.flatten().tolist()) == {1.0, 2.0, 4.0}
        for vcf, expected in [(False, up**2 * W2 / W**2), (True, torch.full_like(W, up**2))]:
            out = run(x, sigmas, windows, weights, model=zeros_model, eta=1.0, variance_corrected=vcf, batch_size=8)
            torch.testing.assert_close(out.var(0, keepdim=True) / expected, torch.ones_like(W), rtol=0, atol=0.12)
            torch.testing.assert_close(out.mean(0), x[0] * down / sigma, rtol=0, atol=0.07)

    def test_exception_x_shape(self):
        with pytest.raises(VistaInputError, match="x must have shape"):
            run(torch.zeros(4, 16, 16), self.sigmas, plan_windows(16, 16, 16, 16, 8, 8))

    def test_exception_sigmas_shape(self):
        with pytest.raises(VistaInputError, match="1-D schedule"):
            run(self.canvas(), self.sigmas.view(1, -1), plan_windows(16, 40, 16, 16, 8, 8))

    def test_exception_sigma_zero_before_end(self):
        with pytest.raises(VistaInputError, match="> 0 except the last"):
            run(self.canvas(), torch.tensor([2.0, 0.0, 0.0], dtype=F64), plan_windows(16, 40, 16, 16, 8, 8))

    def test_exception_weights(self):
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        with pytest.raises(VistaInputError, match="weight maps"):
            run(self.canvas(), self.sigmas, windows, window_weights(windows[:2], dtype=F64))

    def test_exception_batch_size(self):
        with pytest.raises(VistaInputError, match="batch_size must be >= 1"):
            run(self.canvas(), self.sigmas, plan_windows(16, 40, 16, 16, 8, 8), batch_size=0)

    def test_exception_eta(self):
        with pytest.raises(VistaInputError, match="eta must be >= 0"):
            run(self.canvas(), self.sigmas, plan_windows(16, 40, 16, 16, 8, 8), eta=-1.0)

    def test_exception_s_noise(self):
        with pytest.raises(VistaInputError, match="s_noise must be >= 0"):
            run(self.canvas(), self.sigmas, plan_windows(16, 40, 16, 16, 8, 8), s_noise=-1.0)

    def test_exception_window_off_canvas(self):
        with pytest.raises(VistaInputError, match="must lie on the 16x40 canvas"):
            run(self.canvas(), self.sigmas, (Window(8, 0, 16, 16),) + plan_windows(16, 40, 16, 16, 8, 8))

    def test_exception_uncovered(self):
        with pytest.raises(VistaInputError, match="cover every canvas pixel"):
            run(self.canvas(), self.sigmas, plan_windows(16, 40, 16, 16, 8, 8)[:2])


class TestStepNoiseStream:
    """Issue [R] 9: the step noise must not replay the initial noise that a NOISE object drew from the same seed."""

    def test_first_step_noise_independent_of_initial_noise(self):
        """Zero denoiser, one window = the canvas: after one ancestral step x1 = (s_down/s) x0 + s_up eps, so eps is
        recovered exactly; its correlation with RandomNoise's initial noise (torch.manual_seed(seed), CPU, as
        comfy.sample.prepare_noise draws it) must be ~0 (|r| < 5/sqrt(n)); replaying the seed gives r = 1."""
        seed, shape = 11, (2, 4, 16, 24)
        initial = torch.randn(shape, generator=torch.manual_seed(seed), dtype=F64)
        sigmas = torch.tensor([2.0, 1.0, 0.5], dtype=F64)
        windows = plan_windows(16, 24, 16, 24, 8, 8)
        x1 = sample_latent_fusion(lambda x, s, **kw: torch.zeros_like(x), initial * 2.0, sigmas[:2], {"seed": seed},
                                  disable=True, windows=windows, weights=window_weights(windows, dtype=F64), eta=1.0)
        down, up = get_ancestral_step(2.0, 1.0, 1.0)
        eps = (x1 - (down / 2.0) * initial * 2.0) / up
        r = torch.corrcoef(torch.stack([eps.flatten(), initial.flatten()]))[0, 1].item()
        assert abs(r) < 5 / initial.numel() ** 0.5, r
        assert abs(eps.std().item() - 1) < 0.1


class TestStepSetup:
    def test_per_step_args_and_batch_size(self):
        """step_setup chooses each step's model arguments and window batch size (MAD: all windows, then the user's)."""
        windows = plan_windows(8, 24, 8, 8, 4, 4)
        seen = []

        def model(x, sigma, tag=None):
            seen.append((tag, x.shape[0]))
            return torch.zeros_like(x)

        def setup(i, n_steps, extra_args):
            return ({**extra_args, "tag": i}, len(windows)) if i < 1 else (extra_args, 2)

        sample_latent_fusion(model, torch.zeros(1, 1, 8, 24), torch.tensor([2.0, 1.0, 0.5]), {"tag": "user"},
                             disable=True, windows=windows, weights=window_weights(windows), batch_size=2, step_setup=setup)
        assert seen == [(0, 5), ("user", 2), ("user", 2), ("user", 1)]

    def test_exception(self):
        windows = plan_windows(8, 8, 8, 8, 8, 8)
        with pytest.raises(VistaInputError, match="batch_size 0"):
            sample_latent_fusion(lambda x, s: x, torch.zeros(1, 1, 8, 8), torch.tensor([1.0, 0.0]), disable=True,
                                 windows=windows, weights=window_weights(windows), step_setup=lambda i, n, a: (a, 0))


def euler_ancestral_rf(denoise, x, sigmas, eta, seed, s_noise=1.0):
    """ComfyUI's sample_euler_ancestral_RF, transcribed from its formula (DESIGN.md), on the whole canvas;
    noise from Vista's step stream for ``seed`` (the host draws it from its own noise_sampler)."""
    g = torch.Generator().manual_seed(step_noise_seed(seed))
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        d = denoise(x, torch.full((x.shape[0],), s, dtype=x.dtype))
        if s_next == 0:
            return d
        sigma_down = s_next * (1 + (s_next / s - 1) * eta)
        alpha_ip1, alpha_down = 1 - s_next, 1 - sigma_down
        renoise = (s_next**2 - sigma_down**2 * alpha_ip1**2 / alpha_down**2) ** 0.5
        ratio = sigma_down / s
        x = ratio * x + (1 - ratio) * d
        if eta > 0:
            x = (alpha_ip1 / alpha_down) * x + torch.randn(x.shape, generator=g, dtype=x.dtype) * s_noise * renoise
    return x


def periodic_data(period, shape, seed):
    """A one-point data set {c} whose c repeats every ``period`` latent px, and its exact denoiser.

    With window offsets on multiples of ``period`` every window crop of c is the same tile, so the exact
    denoiser of {c} (x0_hat = c's crop whatever the input) is one tensor for every window batch.
    """
    B, C, H, W = shape
    tile = torch.randn(1, C, period, period, generator=torch.Generator().manual_seed(seed), dtype=F64)
    c = tile.repeat(B, 1, H // period, W // period)
    return c, lambda x_w, sigma, **extra: c[:1, :, : x_w.shape[-2], : x_w.shape[-1]].expand_as(x_w)


class TestFlowMatching:
    """Issue [M]: flow-matching models (SD3, Flux) step with ComfyUI's sample_euler_ancestral_RF; VCF keeps renoise^2."""

    sigmas = torch.tensor([1.0, 0.8, 0.55, 0.3, 0.0], dtype=F64)

    @pytest.mark.parametrize("eta, vcf", [(1.0, True), (1.0, False), (0.5, True)])
    def test_one_window_is_euler_ancestral_rf(self, eta, vcf):
        """One window = canvas with the same noise stream = the host's RF sampler (float64, tolerance 1e-10)."""
        net = TinyConvDenoiser(channels=16)
        x = torch.randn(2, 16, 16, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
        out = run(x, self.sigmas, plan_windows(16, 16, 16, 16, 8, 8), model=as_model(net), eta=eta, variance_corrected=vcf,
                  extra_args={"seed": 5}, flow_matching=True)
        torch.testing.assert_close(out, euler_ancestral_rf(net, x, self.sigmas, eta, 5), rtol=1e-10, atol=1e-10)

    def test_eta0_is_the_same_for_both_forms(self):
        """eta = 0 is the euler step of the flow ODE in either form (exact for flow models already)."""
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        x = torch.randn(1, 4, 16, 40, generator=torch.Generator().manual_seed(2), dtype=F64)
        torch.testing.assert_close(run(x, self.sigmas, windows, flow_matching=True), run(x, self.sigmas, windows),
                                   rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("mode", ["uniform", "guided"])
    def test_one_step_variance(self, mode):
        """One RF step (eta 1) of the exact denoiser of a one-point data set from a fixed canvas, B = 4000 samples.

        Every window's step is ``x_i' = scale (r x_i + (1 - r) c) + renoise eps_i``. Per pixel, the variance is
        ``renoise^2 sum w^2 / W^2`` without VCF (``renoise^2 / n`` for n uniform windows: n = 1, 2, 4 here) and
        ``renoise^2`` with VCF. Tolerance: 12 % relative per pixel (> 5 standard errors of a variance over 4000
        samples, sqrt(2/3999) = 2.2 %); the mean must be the step mean within 0.03 (> 5 standard errors
        renoise / sqrt(4000) = 0.0046 here).
        """
        B, sigma, sigma_next = 4000, 0.8, 0.5
        windows = plan_windows(12, 20, 8, 8, 4, 4)
        weights = window_weights(windows, mode, dtype=F64)
        c, model = periodic_data(4, (1, 1, 12, 20), seed=3)
        noise = torch.randn(1, 1, 12, 20, generator=torch.Generator().manual_seed(4), dtype=F64)
        x = ((1 - sigma) * c + sigma * noise).repeat(B, 1, 1, 1)
        step = rf_step(sigma, sigma_next, 1.0)
        W, W2 = total_weight(windows, weights, 12, 20), total_weight(windows, weights**2, 12, 20)
        sigmas = torch.tensor([sigma, sigma_next], dtype=F64)
        for vcf, expected in [(False, step.noise**2 * W2 / W**2), (True, torch.full_like(W, step.noise**2))]:
            out = run(x, sigmas, windows, weights, model=model, eta=1.0, variance_corrected=vcf, batch_size=8,
                      flow_matching=True)
            torch.testing.assert_close(out.var(0, keepdim=True) / expected, torch.ones_like(W), rtol=0, atol=0.12)
            torch.testing.assert_close(out.mean(0), step.mean(x[0], c[0]), rtol=0, atol=0.03)

    def test_toy_run_ends_on_the_flow_marginal(self):
        """Issue [M]: 8 stochastic steps (eta 1, VCF, 3x5 overlapping windows) from pure noise at sigma 1 to 0.2 with the
        exact denoiser of a one-point data set {c}: the canvas must end at (1 - 0.2) c + 0.2 eps, i.e. the residual
        ``(x - 0.8 c) / 0.2`` has variance 1 (tolerance 0.05; 16 x 4 x 32 x 48 = 98k pixels, standard error 0.5 %).
        The SD-form step on the same flow model (the code before this change) ends far from it."""
        windows = plan_windows(32, 48, 16, 16, 8, 8)
        c, model = periodic_data(8, (16, 4, 32, 48), seed=5)
        x = torch.randn(16, 4, 32, 48, generator=torch.Generator().manual_seed(6), dtype=F64)
        sigmas = torch.linspace(1.0, 0.2, 9, dtype=F64)
        ratios = {}
        for flow in (True, False):
            out = run(x, sigmas, windows, model=model, eta=1.0, extra_args={"seed": 6}, flow_matching=flow, batch_size=15)
            ratios[flow] = ((out - 0.8 * c) / 0.2).var().item()
        print(f"\nresidual variance / sigma_end^2: RF step {ratios[True]:.3f}, SD-form step {ratios[False]:.3f}")
        assert abs(ratios[True] - 1) < 0.05 and abs(ratios[False] - 1) > 0.3

    def test_noise_scale_multiplies_the_step_noise(self):
        """ComfyUI v0.33.0 multiplies s_noise by model_sampling.noise_scale: the fresh noise doubles with noise_scale 2."""
        windows = plan_windows(8, 8, 8, 8, 8, 8)
        x, sigmas = torch.randn(1, 4, 8, 8, dtype=F64), torch.tensor([0.8, 0.5], dtype=F64)
        base = run(x, sigmas, windows, model=zeros_model, eta=1.0, flow_matching=True, variance_corrected=False)
        twice = run(x, sigmas, windows, model=zeros_model, eta=1.0, flow_matching=True, noise_scale=2.0)
        mean = rf_step(0.8, 0.5, 1.0).mean(x, torch.zeros_like(x))
        torch.testing.assert_close(twice - mean, 2 * (base - mean), rtol=1e-10, atol=1e-12)

    def test_exception_noise_scale(self):
        with pytest.raises(VistaInputError, match="noise_scale must be >= 0"):
            run(torch.zeros(1, 4, 8, 8, dtype=F64), self.sigmas, plan_windows(8, 8, 8, 8, 8, 8), flow_matching=True, noise_scale=-1.0)

    def test_exception_sigma_one(self):
        with pytest.raises(VistaInputError, match="sigma_next < 1"):
            run(torch.zeros(1, 4, 8, 8, dtype=F64), torch.tensor([1.0, 1.0, 0.0], dtype=F64), plan_windows(8, 8, 8, 8, 8, 8),
                eta=1.0, flow_matching=True)

