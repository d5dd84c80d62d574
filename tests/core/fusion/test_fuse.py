"""core/fusion/fuse.py: weighted average and Variance-Corrected Fusion (GVCF eq. 13, 14), chunked and wrapped."""
import pytest
import torch

from vista.core.checks import VistaInputError
from vista.core.sampling.flow_matching import rf_step
from vista.core.fusion.fuse import (
    FusionSums,
    accumulate_fusion,
    check_on_canvas,
    finish_average,
    finish_variance_corrected,
    fuse_average,
    fuse_variance_corrected,
    fusion_sums,
)
from vista.core.canvas.multidiffusion import chunks
from vista.core.canvas.windows import Window, crop_windows, plan_windows, total_weight, window_weights

F64 = torch.float64


def reference_vcf(x_windows, mu_windows, windows, weights, height, width):
    """GVCF eq. 14 written pixel by pixel, straight from the paper."""
    n = len(windows)
    B, C = x_windows.shape[0] // n, x_windows.shape[1]
    out = torch.zeros(B, C, height, width, dtype=F64)
    for py in range(height):
        for px in range(width):
            sx = smu = sw = sw2 = 0
            for i, win in enumerate(windows):
                cols = win.columns(width)
                if win.y <= py < win.y + win.h and px in cols:
                    wy, wx = py - win.y, cols.index(px)
                    w = weights[i, 0, wy, wx]
                    sx = sx + w * x_windows[i * B : (i + 1) * B, :, wy, wx]  # window-major rows of window i
                    smu = smu + w * mu_windows[i * B : (i + 1) * B, :, wy, wx]
                    sw, sw2 = sw + w, sw2 + w * w
            out[:, :, py, px] = sx / sw2**0.5 + (1 - sw / sw2**0.5) * smu / sw
    return out


class TestFuseAverage:
    def test_smoke_and_shape(self):
        windows = plan_windows(8, 20, 8, 8, 4, 4)
        weights = window_weights(windows, "guided", dtype=F64)
        values = torch.randn(2 * len(windows), 3, 8, 8, dtype=F64)
        out = fuse_average(values, windows, weights, total_weight(windows, weights, 8, 20))
        assert out.shape == (2, 3, 8, 20)

    def test_constant_is_kept(self):
        windows = plan_windows(8, 20, 8, 8, 4, 4, wrap_x=True)
        weights = window_weights(windows, "guided", dtype=F64)
        out = fuse_average(torch.full((len(windows), 1, 8, 8), 2.5, dtype=F64), windows, weights, total_weight(windows, weights, 8, 20))
        torch.testing.assert_close(out, torch.full_like(out, 2.5))

    def test_exception(self):
        windows = plan_windows(8, 16, 8, 8, 8, 8)
        weights = window_weights(windows)
        with pytest.raises(VistaInputError, match="multiple"):
            fuse_average(torch.zeros(3, 1, 8, 8), windows, weights, total_weight(windows, weights, 8, 16))


class TestFusionSums:
    def test_shape(self):
        sums = fusion_sums(2, 4, 8, 16, with_mean=True, dtype=torch.float16)
        assert isinstance(sums, FusionSums)
        assert sums.wx.shape == sums.wmu.shape == (2, 4, 8, 16) and sums.w.shape == sums.w2.shape == (1, 1, 8, 16)
        assert sums.wx.dtype == torch.float32  # fp16 is promoted for accumulation

    def test_without_mean(self):
        assert fusion_sums(1, 1, 2, 2).wmu is None

    def test_exception(self):
        with pytest.raises(VistaInputError, match="must be >= 1"):
            fusion_sums(1, 4, 0, 8)


class TestAccumulateFusion:
    def setup_method(self):
        self.windows = plan_windows(8, 16, 8, 8, 8, 8)
        self.weights = window_weights(self.windows)
        self.sums = fusion_sums(1, 4, 8, 16, with_mean=True)
        self.x = torch.zeros(2, 4, 8, 8)

    def test_smoke(self):
        accumulate_fusion(self.sums, self.x + 1, self.windows, self.weights, self.x)
        assert float(self.sums.wx.sum()) == 4 * 8 * 16 and float(self.sums.w2.sum()) == 8 * 16

    def test_exception_shape(self):
        with pytest.raises(VistaInputError, match="x_windows must have shape"):
            accumulate_fusion(self.sums, torch.zeros(2, 8, 8), self.windows, self.weights, self.x)

    def test_exception_weights(self):
        with pytest.raises(VistaInputError, match="maps for 2 windows"):
            accumulate_fusion(self.sums, self.x, self.windows, self.weights[:1], self.x)

    def test_exception_batch(self):
        with pytest.raises(VistaInputError, match="n·B"):
            accumulate_fusion(self.sums, torch.zeros(4, 4, 8, 8), self.windows, self.weights, torch.zeros(4, 4, 8, 8))

    def test_exception_mean_missing(self):
        with pytest.raises(VistaInputError, match="mu_windows must be given"):
            accumulate_fusion(self.sums, self.x, self.windows, self.weights)

    def test_exception_mean_shape(self):
        with pytest.raises(VistaInputError, match="mu_windows shape"):
            accumulate_fusion(self.sums, self.x, self.windows, self.weights, torch.zeros(2, 4, 8, 4))

    def test_exception_weight_size(self):
        with pytest.raises(VistaInputError, match="weights size"):
            accumulate_fusion(self.sums, self.x, self.windows, window_weights((Window(0, 0, 4, 4),) * 2), self.x)

    def test_exception_window_off_canvas(self):
        with pytest.raises(VistaInputError, match="must lie on the 8x16 canvas"):
            accumulate_fusion(self.sums, self.x, (Window(0, 0, 8, 8), Window(4, 0, 8, 8)), self.weights, self.x)

    @pytest.mark.parametrize("batch_size", [1, 2, 5, 100])
    def test_chunked_equals_one_shot(self, batch_size):
        windows = plan_windows(12, 28, 8, 8, 4, 4, wrap_x=True)
        weights = window_weights(windows, "guided", dtype=F64)
        n = len(windows)
        x, mu = torch.randn(2 * n, 3, 8, 8, dtype=F64), torch.randn(2 * n, 3, 8, 8, dtype=F64)
        sums = fusion_sums(2, 3, 12, 28, with_mean=True, dtype=F64)
        for start, chunk in zip(range(0, n, batch_size), chunks(windows, batch_size)):
            k = len(chunk)
            sel = torch.tensor([(start + j) * 2 + b for j in range(k) for b in range(2)])  # window-major chunk rows
            accumulate_fusion(sums, x[sel], chunk, weights[start : start + k], mu[sel])
        torch.testing.assert_close(finish_variance_corrected(sums), fuse_variance_corrected(x, mu, windows, weights, 12, 28), rtol=1e-12, atol=1e-12)


class TestFinishAverage:
    def test_exception_uncovered(self):
        sums = fusion_sums(1, 1, 8, 16)
        accumulate_fusion(sums, torch.ones(1, 1, 8, 8), (Window(0, 0, 8, 8),), window_weights((Window(0, 0, 8, 8),)))
        with pytest.raises(VistaInputError, match="64 pixels have total weight 0"):
            finish_average(sums)

    def test_equals_fuse_average(self):
        windows = plan_windows(8, 20, 8, 8, 4, 4, wrap_x=True)
        weights = window_weights(windows, "gaussian", dtype=F64)
        values = torch.randn(len(windows), 2, 8, 8, dtype=F64)
        sums = fusion_sums(1, 2, 8, 20, dtype=F64)
        accumulate_fusion(sums, values, windows, weights)
        torch.testing.assert_close(finish_average(sums), fuse_average(values, windows, weights, total_weight(windows, weights, 8, 20)))


class TestFinishVarianceCorrected:
    def test_exception_no_mean(self):
        with pytest.raises(VistaInputError, match="with_mean=True"):
            finish_variance_corrected(fusion_sums(1, 1, 2, 2))

    def test_exception_uncovered(self):
        with pytest.raises(VistaInputError, match="total weight 0"):
            finish_variance_corrected(fusion_sums(1, 1, 2, 2, with_mean=True))


class TestFuseVarianceCorrected:
    @pytest.mark.parametrize("mode", ["uniform", "guided"])
    @pytest.mark.parametrize("wrap", [False, True])
    def test_equals_paper_eq14(self, mode, wrap):
        windows = plan_windows(10, 14, 6, 6, 4, 4, wrap_x=wrap)
        weights = window_weights(windows, mode, dtype=F64)
        n = len(windows)
        x, mu = torch.randn(2 * n, 2, 6, 6, dtype=F64), torch.randn(2 * n, 2, 6, 6, dtype=F64)
        out = fuse_variance_corrected(x, mu, windows, weights, 10, 14)
        assert out.shape == (2, 2, 10, 14)
        torch.testing.assert_close(out, reference_vcf(x, mu, windows, weights, 10, 14), rtol=1e-12, atol=1e-12)

    def test_uniform_is_eq13(self):
        """Two windows over one pixel, equal weights: sum x / sqrt(2) + (1 - sqrt(2)) mean(mu) (GVCF eq. 12/13)."""
        windows = (Window(0, 0, 1, 1), Window(0, 0, 1, 1))
        x, mu = torch.tensor([1.0, 3.0], dtype=F64).view(2, 1, 1, 1), torch.tensor([0.5, 1.5], dtype=F64).view(2, 1, 1, 1)
        out = fuse_variance_corrected(x, mu, windows, window_weights(windows, dtype=F64), 1, 1)
        assert out.item() == pytest.approx(4 / 2**0.5 + (1 - 2**0.5) * 1.0, abs=1e-12)

    def test_one_window_per_pixel_is_the_window(self):
        """Invariant 4: where a single window covers a pixel, weighted VCF returns that window's latent."""
        windows = plan_windows(8, 24, 8, 8, 8, 8, wrap_x=True)
        weights = window_weights(windows, "guided", dtype=F64)
        x, mu = torch.randn(3 * len(windows), 4, 8, 8, dtype=F64), torch.randn(3 * len(windows), 4, 8, 8, dtype=F64)
        out = fuse_variance_corrected(x, mu, windows, weights, 8, 24)
        torch.testing.assert_close(crop_windows(out, windows), x, rtol=1e-12, atol=1e-12)

    def test_mean_preserved_when_noise_free(self):
        windows = plan_windows(8, 20, 8, 8, 4, 4)
        weights = window_weights(windows, "guided", dtype=F64)
        mu = torch.randn(len(windows), 2, 8, 8, dtype=F64)
        out = fuse_variance_corrected(mu, mu, windows, weights, 8, 20)
        torch.testing.assert_close(out, fuse_average(mu, windows, weights, total_weight(windows, weights, 8, 20)))

    def test_variance_restored(self):
        """Fused noise of x_i = mu_i + eps_i has unit variance with VCF, sum w^2 / W^2 without.

        Statistic: per-pixel variance over 4000 samples; its relative standard error is
        sqrt(2/3999) = 2.2 %, so the 12 % tolerance is > 5 standard errors at each of the 160 pixels.
        """
        windows = plan_windows(8, 20, 8, 8, 4, 4)
        weights = window_weights(windows, "guided", dtype=F64)
        n, B = len(windows), 4000
        g = torch.Generator().manual_seed(0)
        mu = torch.randn(n, 1, 8, 8, generator=g, dtype=F64).repeat_interleave(B, 0)  # window-major
        x = mu + torch.randn(B * n, 1, 8, 8, generator=g, dtype=F64)
        vcf_var = fuse_variance_corrected(x, mu, windows, weights, 8, 20).var(0)
        avg_var = fuse_average(x, windows, weights, total_weight(windows, weights, 8, 20)).var(0)
        sums = fusion_sums(1, 1, 8, 20, dtype=F64)
        accumulate_fusion(sums, torch.zeros(n, 1, 8, 8, dtype=F64), windows, weights)
        torch.testing.assert_close(vcf_var, torch.ones_like(vcf_var), rtol=0, atol=0.12)
        torch.testing.assert_close(avg_var / (sums.w2 / sums.w**2)[0], torch.ones_like(avg_var), rtol=0, atol=0.12)

    @pytest.mark.parametrize("vcf", [True, False])
    def test_flow_step_keeps_the_flow_marginal(self, vcf):
        """Issue [M] (derivation in finish_variance_corrected): windows of a canvas x = (1 - s) c + s eps each take the
        rectified-flow step (ComfyUI sample_euler_ancestral_RF, eta 1, exact denoiser c) with their own noise. With
        VCF every fused pixel is (1 - s') c + s' eps' again: the residual's per-pixel variance over 4000 samples is
        s'^2 within 12 % (> 5 standard errors, 2.2 %). Plain averaging loses fresh noise where windows overlap
        (down to renoise^2 sum w^2 / W^2 + the carried part), checked against that prediction."""
        windows = plan_windows(8, 20, 8, 8, 4, 4)
        weights = window_weights(windows, "guided", dtype=F64)
        B, sigma, sigma_next = 4000, 0.7, 0.4
        step = rf_step(sigma, sigma_next, 1.0)
        g = torch.Generator().manual_seed(1)
        c = torch.randn(1, 1, 8, 20, generator=g, dtype=F64)
        x = (1 - sigma) * c + sigma * torch.randn(B, 1, 8, 20, generator=g, dtype=F64)
        mu = step.mean(crop_windows(x, windows), crop_windows(c.expand(B, -1, -1, -1), windows))
        x_windows = mu + step.noise * torch.randn(mu.shape, generator=g, dtype=F64)
        W, W2 = total_weight(windows, weights, 8, 20), total_weight(windows, weights**2, 8, 20)
        if vcf:
            fused, expected = fuse_variance_corrected(x_windows, mu, windows, weights, 8, 20), sigma_next**2
        else:
            fused = fuse_average(x_windows, windows, weights, W)
            expected = (step.scale * step.sigma_down) ** 2 + step.noise**2 * W2 / W**2
        residual_var = (fused - (1 - sigma_next) * c).var(0, keepdim=True)
        torch.testing.assert_close(residual_var / expected, torch.ones_like(residual_var), rtol=0, atol=0.12)
        assert vcf or (W2 / W**2).min() < 0.6  # the overlaps are really different without VCF


class TestCheckOnCanvas:
    def test_wrap_allowed(self):
        check_on_canvas([Window(0, 6, 4, 4)], 4, 8)

    @pytest.mark.parametrize("win", [Window(1, 0, 4, 4), Window(0, 8, 4, 4), Window(0, 0, 4, 9), Window(-1, 0, 4, 4)])
    def test_exception(self, win):
        with pytest.raises(VistaInputError, match="must lie on the 4x8 canvas"):
            check_on_canvas([win], 4, 8)
