"""Issue [R] 3 and 4: half-precision latents and devices without float64 (Apple MPS).

Weights and their totals stay float32 whatever the latent's dtype; only fused results are cast
back. Nothing creates float64 tensors on the latent's device: the ``meta`` device stands in for a
device without float64, and a dispatch mode fails on any op that produces a float64 tensor there.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vista.core.mad.attention_merge import MadLayout, mad_attention_patch
from vista.core.fusion.fuse import accumulate_fusion, finish_variance_corrected, fusion_sums
from vista.core.canvas.multidiffusion import multidiffusion_predict
from vista.core.canvas.windows import WEIGHT_MODES, crop_windows, plan_windows, total_weight, weight_map, window_weights

HALF = [torch.float16, torch.bfloat16]


class TestHalfPrecisionFusion:
    @pytest.mark.parametrize("dtype", HALF)
    @pytest.mark.parametrize("mode", WEIGHT_MODES)
    def test_constant_fuses_to_itself(self, dtype, mode):
        """A constant prediction fuses back to the same constant everywhere, corners included (no 0/0 NaN,
        no bias from rounded weights): exact up to one rounding of the output dtype."""
        windows = plan_windows(24, 64, 16, 16, 8, 8)
        x = torch.full((2, 4, 24, 64), 0.7, dtype=dtype)
        out = multidiffusion_predict(lambda crops, chunk: crops, x, windows, window_weights(windows, mode), 3)
        assert out.dtype == dtype and torch.isfinite(out).all()
        assert (out.float() - x.float()).abs().max().item() <= torch.finfo(dtype).eps

    @pytest.mark.parametrize("dtype", HALF)
    def test_gaussian_corner_weight_positive_in_float32(self, dtype):
        """exp(-25) ≈ 1e-11 underflows to 0 in float16: the weights stay float32 and positive."""
        w = window_weights(plan_windows(64, 64, 64, 64, 64, 64), "gaussian")
        assert w.dtype == torch.float32 and w.min().item() > 0
        assert weight_map(64, 64, "gaussian").to(torch.float16).min().item() == 0  # why: half underflows

    @pytest.mark.parametrize("dtype", HALF)
    @pytest.mark.parametrize("mode", WEIGHT_MODES)
    def test_variance_corrected_half(self, dtype, mode):
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        x = torch.full((len(windows), 4, 16, 16), 0.5, dtype=dtype)
        sums = fusion_sums(1, 4, 16, 40, with_mean=True, dtype=dtype)
        accumulate_fusion(sums, x, windows, window_weights(windows, mode), x)
        out = finish_variance_corrected(sums)
        assert sums.w.dtype == torch.float32 and torch.isfinite(out).all()
        assert (out - 0.5).abs().max().item() < 1e-5

    @pytest.mark.parametrize("mode", WEIGHT_MODES)
    def test_total_weight_float32(self, mode):
        """16-bit weights are summed in float32 (gaussian in bfloat16: float16 refuses its underflowing corners)."""
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        dtype = torch.bfloat16 if mode == "gaussian" else torch.float16
        assert total_weight(windows, window_weights(windows, mode, dtype=dtype), 16, 40).dtype == torch.float32


class NoFloat64On(TorchDispatchMode):
    """Fails when an op produces a float64 tensor on ``device`` (a device without float64, e.g. MPS)."""

    def __init__(self, device):
        super().__init__()
        self.device = torch.device(device)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64 and t.device == self.device:
                raise AssertionError(f"aten.{func.__name__} made a float64 tensor on {self.device}")
        return out


class TestNoFloat64OnDevice:
    @pytest.mark.parametrize("mode", WEIGHT_MODES)
    def test_tiled_diffusion_path(self, mode):
        windows = plan_windows(16, 48, 16, 16, 8, 8, wrap_x=True)
        x = torch.empty(2, 4, 16, 48, device="meta")
        with NoFloat64On("meta"):
            weights = window_weights(windows, mode, device="meta")
            out = multidiffusion_predict(lambda crops, chunk: crops * 2, x, windows, weights, 2)
        assert out.shape == x.shape and weights.dtype == torch.float32

    def test_mad_patch(self):
        windows = plan_windows(8, 24, 8, 8, 4, 4)
        n = len(windows)
        layout = MadLayout(windows, (8, 24), batch=2)
        extra = {"n_heads": 1, "activations_shape": [2 * n, 4, 8, 8], "vista_mad": layout}
        q = torch.empty(2 * n, 64, 4, device="meta")

        def attention(q, k, v, heads, attn_precision=None, transformer_options=None):
            return torch.softmax(q @ k.transpose(1, 2), -1) @ v

        with NoFloat64On("meta"):
            for cross in (False, True):
                out = mad_attention_patch(cross, attention)(q, q, q, extra)
                assert out.shape == q.shape

    def test_crop_wrapped_windows(self):
        with NoFloat64On("meta"):
            crops = crop_windows(torch.empty(1, 4, 8, 24, device="meta"), plan_windows(8, 24, 8, 8, 4, 4, wrap_x=True))
        assert crops.shape[0] == 6
