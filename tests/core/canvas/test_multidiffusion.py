"""core/canvas/multidiffusion.py: prediction fusion equals the paper's MultiDiffusion."""
import pytest
import torch

from vista.core.checks import VistaInputError
from vista.core.canvas.multidiffusion import chunks, multidiffusion_predict
from vista.core.canvas.windows import Window, plan_windows, window_weights

from denoisers import TinyConvDenoiser, box_smoother, euler


def window_predictor(denoise, sigma):
    return lambda crops, chunk: denoise(crops, sigma.repeat(len(chunk)))  # window-major: n·B + b


def reference_multidiffusion(denoise, x, sigma, windows):
    """MultiDiffusion Eq. 6 (msd) / Eq. 12 (syncdiffusion), written as the authors' loop."""
    value, count = torch.zeros_like(x), torch.zeros_like(x)
    for w in windows:
        crop = x[:, :, w.y : w.y + w.h, w.x : w.x + w.w]
        value[:, :, w.y : w.y + w.h, w.x : w.x + w.w] += denoise(crop, sigma)
        count[:, :, w.y : w.y + w.h, w.x : w.x + w.w] += 1
    return value / count


class TestChunks:
    def test_exception(self):
        with pytest.raises(VistaInputError, match="batch size"):
            chunks([Window(0, 0, 1, 1)], 0)


class TestMultidiffusionPredict:
    def test_window_equals_canvas_is_plain_denoise(self):
        net = TinyConvDenoiser()
        x, sigma = torch.randn(2, 4, 16, 16, dtype=torch.float64), torch.tensor([3.0, 3.0], dtype=torch.float64)
        windows = plan_windows(16, 16, 16, 16, 8, 8)
        out = multidiffusion_predict(window_predictor(net, sigma), x, windows, window_weights(windows, dtype=torch.float64), 4)
        assert torch.equal(out, net(x, sigma))

    @pytest.mark.parametrize("batch_size", [1, 3, 100])
    def test_uniform_equals_reference_multidiffusion(self, batch_size):
        net = TinyConvDenoiser()
        x, sigma = torch.randn(2, 4, 24, 56, dtype=torch.float64), torch.tensor([2.0, 2.0], dtype=torch.float64)
        windows = plan_windows(24, 56, 16, 16, 8, 12)
        weights = window_weights(windows, "uniform", dtype=torch.float64)
        out = multidiffusion_predict(window_predictor(net, sigma), x, windows, weights, batch_size)
        torch.testing.assert_close(out, reference_multidiffusion(net, x, sigma, windows), rtol=1e-12, atol=1e-12)

    def test_sixteen_channels(self):
        net = TinyConvDenoiser(channels=16)
        x, sigma = torch.randn(1, 16, 16, 40, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        out = multidiffusion_predict(window_predictor(net, sigma), x, windows, window_weights(windows, dtype=torch.float64), 2)
        torch.testing.assert_close(out, reference_multidiffusion(net, x, sigma, windows))

    def test_batches_and_hook(self):
        calls = []
        x = torch.randn(1, 4, 8, 40)
        windows = plan_windows(8, 40, 8, 8, 4, 4)
        multidiffusion_predict(lambda c, ch: c, x, windows, window_weights(windows), 4, before_batch=lambda: calls.append(1))
        assert len(calls) == -(-len(windows) // 4)

    @pytest.mark.parametrize("batch_size", [1, 3, 100])
    def test_groups_let_a_model_split_its_batch_by_chunk(self, batch_size):
        """Issue [H] 15: a model that splits its batch into the chunks of cond_or_uncond (NAG, SAG: uncond rows,
        then cond rows) must see each chunk whole in every window batch. With ``groups=2`` the fused result is
        MultiDiffusion of that model, window by window; window-major rows (groups=1) pair the wrong windows."""
        net = TinyConvDenoiser()
        x = torch.randn(4, 4, 16, 48, dtype=torch.float64)  # uncond chunk (2 samples), then cond chunk (2 samples)
        windows = plan_windows(16, 48, 16, 16, 8, 8)

        def chunk_guided(crops, sigma=torch.tensor(2.0, dtype=torch.float64)):
            uncond, cond = net(crops, sigma.expand(crops.shape[0])).chunk(2)
            return torch.cat([uncond, 3 * cond - 2 * uncond])

        weights = window_weights(windows, "uniform", dtype=torch.float64)
        want = reference_multidiffusion(lambda crop, sigma: chunk_guided(crop), x, None, windows)
        got = multidiffusion_predict(lambda crops, chunk: chunk_guided(crops), x, windows, weights, batch_size, groups=2)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        if batch_size > 1:  # the negative control: window-major rows mix windows of both chunks
            wrong = multidiffusion_predict(lambda crops, chunk: chunk_guided(crops), x, windows, weights, batch_size)
            assert (wrong - want).abs().max() > 0.1

    def test_exception_shape(self):
        windows = plan_windows(8, 8, 8, 8, 8, 8)
        with pytest.raises(VistaInputError, match="shape"):
            multidiffusion_predict(lambda c, ch: c, torch.zeros(4, 8, 8), windows, window_weights(windows), 1)

    def test_exception_weights(self):
        windows = plan_windows(8, 16, 8, 8, 8, 8)
        with pytest.raises(VistaInputError, match="weight maps"):
            multidiffusion_predict(lambda c, ch: c, torch.zeros(1, 4, 8, 16), windows, window_weights(windows[:1]), 1)


def seam_ratio(x: torch.Tensor, stride: int) -> float:
    """Mean |Δ| across the right|left seam over the mean |Δ| of interior column pairs at the same
    phase of the window grid (columns j, j-1 with j a multiple of ``stride``: window edges fall there
    too, and the seam is one of them)."""
    seam = (x[..., 0] - x[..., -1]).abs().mean()
    interior = torch.stack([(x[..., j] - x[..., j - 1]).abs().mean() for j in range(stride, x.shape[-1], stride)])
    return float(seam / interior.mean())


class TestHorizontalWrap:
    """Verification 3 of issue [A]: with wrap on, the right|left seam is like interior column pairs.

    Statistic: the mean over 8 seeds of ``seam_ratio``. With wrap it must be <= 1.25 (measured 0.97);
    without wrap, the negative control, >= 2 (measured 6.2), so the test can fail.
    """

    def sample(self, wrap: bool, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        sigmas = torch.linspace(10.0, 0.0, 11, dtype=torch.float64)
        x = torch.randn(1, 4, 16, 96, generator=g, dtype=torch.float64) * sigmas[0]
        windows = plan_windows(16, 96, 16, 32, 8, 8, wrap_x=wrap)
        weights = window_weights(windows, dtype=torch.float64)
        smooth = box_smoother(7)
        fused = lambda x, s: multidiffusion_predict(window_predictor(smooth, s), x, windows, weights, 8)
        return euler(fused, x, sigmas)

    def test_wrap_seam_like_interior(self):
        with_wrap = sum(seam_ratio(self.sample(True, s), 8) for s in range(8)) / 8
        without = sum(seam_ratio(self.sample(False, s), 8) for s in range(8)) / 8
        assert with_wrap <= 1.25, with_wrap
        assert without >= 2.0, without
