"""core/conditioning.py: per-window call kwargs (crops at every block scale, repeats)."""
import torch
import torch.nn.functional as F

from vista.core.conditioning import feature_scale, window_call_kwargs
from vista.core.windows import crop_windows, plan_windows


def pyramid(x, levels):
    """A UNet-like feature pyramid: level k is x box-downscaled by 2^k."""
    return [F.avg_pool2d(x, 2**k) if k else x for k in range(levels)]


class TestFeatureScale:
    def test_ceil_grids(self):
        assert [feature_scale(64, h) for h in (64, 32, 16, 8)] == [1, 2, 4, 8]
        assert feature_scale(65, 33) == 2


class TestWindowCallKwargs:
    def test_control_residuals_cropped_per_block(self):
        """Residuals of the canvas, cropped at their block scale, equal the residuals of each
        window's own crop, when offsets are multiples of the deepest scale (plan align=8)."""
        canvas = torch.randn(2, 3, 32, 96)
        windows = plan_windows(32, 96, 32, 32, 8, 8, align=8)
        control = {"input": pyramid(canvas, 4), "middle": [F.avg_pool2d(canvas, 8)], "output": [None]}
        out = window_call_kwargs({"control": control}, (32, 96), windows)
        per_window = crop_windows(canvas, windows)
        for got, want in zip(out["control"]["input"], pyramid(per_window, 4)):
            torch.testing.assert_close(got, want)
        torch.testing.assert_close(out["control"]["middle"][0], F.avg_pool2d(per_window, 8))
        assert out["control"]["output"] == [None]

    def test_wrapped_residual_crop(self):
        canvas = torch.randn(1, 2, 16, 64)
        windows = plan_windows(16, 64, 16, 32, 16, 16, wrap_x=True)
        out = window_call_kwargs({"control": {"input": pyramid(canvas, 3)}}, (16, 64), windows)
        for got, want in zip(out["control"]["input"], pyramid(crop_windows(canvas, windows), 3)):
            torch.testing.assert_close(got, want)

    def test_concat_cropped_and_per_sample_repeated(self):
        c_concat = torch.randn(2, 5, 16, 40)
        crossattn = torch.randn(2, 77, 8)
        options = {"cond_or_uncond": [0, 1]}
        windows = plan_windows(16, 40, 16, 16, 8, 8)
        out = window_call_kwargs({"c_concat": c_concat, "c_crossattn": crossattn, "transformer_options": options},
                                 (16, 40), windows)
        n = len(windows)
        assert torch.equal(out["c_concat"], crop_windows(c_concat, windows))
        assert out["c_crossattn"].shape == (2 * n, 77, 8)
        assert torch.equal(out["c_crossattn"][n], crossattn[1]) and torch.equal(out["c_crossattn"][n - 1], crossattn[0])
        assert out["transformer_options"] is options
